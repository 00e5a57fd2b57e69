from __future__ import annotations

import pytest

from otelflow.component import PermanentError, RetryableError
from otelflow.pdata import Batch
from otelflow.pipeline.fanout import FanOut
from tests.builders import traces


class Recorder:
    def __init__(self, mutates: bool, error: Exception | None = None):
        self.mutates_data = mutates
        self.error = error
        self.got: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.got.append(batch)
        if self.mutates_data:
            batch.mutable().resource_spans[0].scope_spans[0].spans[0].name = "changed"
        if self.error:
            raise self.error


async def test_mutating_consumer_gets_a_copy_others_share():
    readers = [Recorder(False), Recorder(False)]
    writer = Recorder(True)
    batch = traces("a", 2)
    await FanOut([readers[0], writer, readers[1]]).consume(batch)
    assert readers[0].got[0] is batch and readers[1].got[0] is batch
    assert writer.got[0] is not batch
    assert batch.message.resource_spans[0].scope_spans[0].spans[0].name == "a-0"


async def test_single_mutating_consumer_gets_the_original():
    writer = Recorder(True)
    batch = traces("a", 1)
    await FanOut([writer]).consume(batch)
    assert writer.got[0] is batch


async def test_all_consumers_tried_and_retryable_wins():
    a = Recorder(False, PermanentError("bad"))
    b = Recorder(False, RetryableError("later", 2.0))
    c = Recorder(False)
    with pytest.raises(RetryableError) as info:
        await FanOut([a, b, c]).consume(traces("a", 1))
    assert info.value.retry_after == 2.0
    assert len(c.got) == 1
