"""Fan-out to several consumers, copying only for those that mutate data."""

from __future__ import annotations

from collections.abc import Sequence

from otelflow.component import Consumer, PermanentError, PipelineError, RetryableError
from otelflow.pdata import Batch


class FanOut:
    """Delivers each batch to every consumer in order.

    When more than one consumer follows and some mutate, each mutating consumer gets its own
    copy; the read-only ones share the original. All consumers are tried even if one fails;
    the error reported is retryable if any was (the caller may retry), else permanent.
    """

    __slots__ = ("_plan", "consumers", "mutates_data")

    def __init__(self, consumers: Sequence[Consumer]):
        self.consumers = list(consumers)
        self.mutates_data = False  # copies are made here, so callers need not copy
        multi = len(self.consumers) > 1
        self._plan = [(c, multi and bool(getattr(c, "mutates_data", False))) for c in self.consumers]

    async def consume(self, batch: Batch) -> None:
        if len(self._plan) == 1:
            await self._plan[0][0].consume(batch)
            return
        # copy before anyone runs: a consumer may change the original once it has it
        deliveries = [(c, batch.copy() if copy else batch) for c, copy in self._plan]
        errors: list[BaseException] = []
        for consumer, item in deliveries:
            try:
                await consumer.consume(item)
            except PipelineError as exc:
                errors.append(exc)
        if errors:
            raise _combine(errors)


def _combine(errors: list[BaseException]) -> BaseException:
    if len(errors) == 1:
        return errors[0]
    retryable = [e for e in errors if isinstance(e, RetryableError)]
    message = "; ".join(str(e) for e in errors)
    if retryable:
        delays = [e.retry_after for e in retryable if e.retry_after is not None]
        return RetryableError(message, max(delays) if delays else None)
    return PermanentError(message)
