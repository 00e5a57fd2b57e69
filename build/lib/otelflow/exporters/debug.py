"""`debug` exporter: logs what passes, at `basic`, `normal` or `detailed` verbosity."""

from __future__ import annotations

from typing import Literal

from google.protobuf import text_format
from pydantic import Field

from otelflow.component import CreateSettings, Exporter, Factory, Kind
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch, Signal, iter_scopes, metric_points


class DebugExporterConfig(ConfigModel):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sampling_initial: int = Field(2, ge=0)
    sampling_thereafter: int = Field(1, ge=1)


def create(settings: CreateSettings, config: DebugExporterConfig) -> DebugExporter:
    return DebugExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "debug", DebugExporterConfig, create,
                  description="Log what passes (for troubleshooting)")


class DebugExporter(Exporter):
    def __init__(self, settings: CreateSettings, config: DebugExporterConfig):
        self.config = config
        self.log = settings.logger
        self._seen = 0

    def _sampled(self) -> bool:
        self._seen += 1
        c = self.config
        return self._seen <= c.sampling_initial or (
            (self._seen - c.sampling_initial) % c.sampling_thereafter == 0)

    async def export(self, batch: Batch) -> None:
        if not self._sampled():
            return
        resources = len(getattr(batch.message, batch.signal.resource_field))
        self.log.info(f"{batch.signal.value} received", resources=resources,
                      **{batch.signal.item_unit: batch.item_count()})
        if self.config.verbosity == "normal":
            for line in summary_lines(batch):
                self.log.info(line)
        elif self.config.verbosity == "detailed":
            self.log.info(text_format.MessageToString(batch.message, as_utf8=True))


def summary_lines(batch: Batch) -> list[str]:
    """One short line per span, data point series or log record."""
    lines = []
    for _resource, scope in iter_scopes(batch.signal, batch.message):
        if batch.signal is Signal.TRACES:
            lines += [f"{s.name} trace_id={s.trace_id.hex()} span_id={s.span_id.hex()}"
                      for s in scope.spans]
        elif batch.signal is Signal.METRICS:
            lines += [f"{m.name} {m.WhichOneof('data')} points={len(metric_points(m))}"
                      for m in scope.metrics]
        else:
            lines += [f"{r.severity_text or r.severity_number} {r.body.string_value}"
                      for r in scope.log_records]
    return lines
