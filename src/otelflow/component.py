"""The component model: consumer/component protocols, errors, ids, factories.

Every receiver, processor, exporter and extension module ends up exposing one module-level
`FACTORY` (a `Factory`), listed by type name in `otelflow.registry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from otelflow.pdata import Batch, Signal

if TYPE_CHECKING:
    import structlog

    from otelflow.telemetry.metrics import SelfMetrics

ALL_SIGNALS = frozenset(Signal)


class Kind(StrEnum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        """The config section holding components of this kind (`receivers`, ...)."""
        return self.value + "s"


class PipelineError(Exception):
    """Base of the errors a consumer raises to its caller."""


class PermanentError(PipelineError):
    """Bad data: never retried; counted as refused/dropped."""


class PartiallyRejected(PermanentError):
    """Some items were refused as bad data (`rejected` of them) while the rest went on.

    Receivers answer success with `partial_success` (OTLP spec); nothing is retried.
    """

    def __init__(self, message: str, rejected: int):
        super().__init__(message)
        self.rejected = rejected


class RetryableError(PipelineError):
    """Backpressure or an outage: retry later, after `retry_after` seconds when known."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class Consumer(Protocol):
    """Accepts batches. After `consume` returns the caller must not touch the batch."""

    mutates_data: bool

    async def consume(self, batch: Batch) -> None: ...


class Host(Protocol):
    """What a running component can ask of the service."""

    def extension(self, component_id: str) -> Any:
        """The started extension with that id, or a `KeyError` naming the known ones."""
        ...

    def report_fatal(self, error: BaseException) -> None: ...

    def register_alert_source(self, source: Callable[[], list[dict]]) -> None:
        """Add a callable returning alert dicts, served at health_check `/alerts`."""
        ...

    def alerts(self) -> list[dict]: ...

    @property
    def ready(self) -> bool:
        """True once every pipeline has started and until shutdown begins."""
        ...


class Component:
    """Base for all components: no-op lifecycle hooks to override."""

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        """Drain, flush, close. Must be idempotent."""
        return None


class Processor(Component):
    """A processor passes (possibly changed) batches on to `next_consumer`."""

    mutates_data: ClassVar[bool] = False
    # True: every span of a trace must reach the same instance (tail sampling). With
    # `service.workers > 1`, such a pipeline routes spans to their trace's owner worker first.
    needs_trace_affinity: ClassVar[bool] = False

    def __init__(self, next_consumer: Consumer):
        self.next_consumer = next_consumer

    async def consume(self, batch: Batch) -> None:
        await self.next_consumer.consume(batch)


class Exporter(Component):
    """An exporter sends batches out of the collector. Subclasses implement `export`.

    The service wraps it in the queue -> retry -> timeout chain (`pipeline.exporterhelper`),
    so `export` only sends once and raises `PermanentError` / `RetryableError`.
    """

    mutates_data: ClassVar[bool] = False

    async def export(self, batch: Batch) -> None:
        raise NotImplementedError

    async def consume(self, batch: Batch) -> None:
        await self.export(batch)


@dataclass(frozen=True)
class ComponentID:
    """`type` or `type/name`, as the Go collector writes ids."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        type_, _, name = str(text).partition("/")
        return cls(type_.strip(), name.strip())

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@dataclass
class CreateSettings:
    """Handed to every factory: who the component is and where it reports."""

    id: ComponentID
    kind: Kind
    logger: structlog.typing.FilteringBoundLogger
    metrics: SelfMetrics
    signal: Signal | None = None  # processors: the pipeline's signal
    pipeline: str | None = None  # processors: the pipeline id
    workers: int = 1  # worker processes sharing this config (listeners use SO_REUSEPORT if > 1)
    extra: dict[str, Any] = field(default_factory=dict)


ReceiverCreate = Callable[[CreateSettings, Any, Mapping[Signal, Consumer]], Component]
ProcessorCreate = Callable[[CreateSettings, Any, Consumer], Processor]
ExporterCreate = Callable[[CreateSettings, Any], Exporter]
ExtensionCreate = Callable[[CreateSettings, Any], Component]


@dataclass(frozen=True)
class Factory:
    """A component type: its config model, how to build it and what signals it handles.

    `create` signatures by kind:
      receiver:  create(settings, config, consumers: Mapping[Signal, Consumer]) -> Component
      processor: create(settings, config, next_consumer) -> Processor
      exporter:  create(settings, config) -> Exporter
      extension: create(settings, config) -> Component
    """

    kind: Kind
    type: str
    config: type[BaseModel]
    create: Callable[..., Any]
    signals: frozenset[Signal] = ALL_SIGNALS
    description: str = ""
    # with `service.workers > 1`: "all" runs in every worker; "first" only in worker 0 (pulls,
    # owns a local resource or a single endpoint); "none" is a config error (cannot be shared)
    workers: Literal["all", "first", "none"] = "all"


AsyncCallback = Callable[[], Awaitable[None]]
