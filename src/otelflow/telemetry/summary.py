"""Per-exporter totals read back from `SelfMetrics` (the `otelflow replay` / `record` summary)."""

from __future__ import annotations

from dataclasses import dataclass

from otelflow.pdata import Signal
from otelflow.pipeline.service import Service
from otelflow.telemetry.metrics import SelfMetrics


def sample(metrics: SelfMetrics, name: str, **labels: str) -> float:
    """The current value of a self-metric sample (counters may be named with or without
    `_total`); 0 when it was never set."""
    registry = metrics.registry
    for candidate in (name, f"{name}_total"):
        value = registry.get_sample_value(candidate, labels)
        if value is not None:
            return value
    return 0.0


@dataclass(frozen=True)
class ExporterTotals:
    exporter: str
    signal: Signal
    sent: int
    dropped: int

    @property
    def received(self) -> int:
        """Items the exporter took in: after a drained shutdown each was sent or dropped."""
        return self.sent + self.dropped


def exporter_totals(service: Service) -> list[ExporterTotals]:
    """One row per (exporter, signal) used by the service's pipelines."""
    rows = []
    pairs = sorted({(e, p.signal) for p in service.config.pipelines.values() for e in p.exporters})
    for eid, signal in pairs:
        sent = sample(service.metrics, f"otelcol_exporter_sent_{signal.item_unit}", exporter=eid)
        dropped = sum(
            s.value for metric in service.metrics.registry.collect()
            if metric.name == "otelflow_dropped_items" for s in metric.samples
            if s.name.endswith("_total") and s.labels.get("component") == eid
            and s.labels.get("otel_signal") == signal.value)
        rows.append(ExporterTotals(eid, signal, int(sent), int(dropped)))
    return rows


def format_totals(rows: list[ExporterTotals]) -> str:
    """A small aligned table: exporter, signal, in, out, dropped."""
    table = [("exporter", "signal", "in", "out", "dropped")]
    table += [(r.exporter, r.signal.value, str(r.received), str(r.sent), str(r.dropped)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in table)
