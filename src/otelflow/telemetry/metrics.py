"""Self-metrics with the Go collector's names, on a registry owned by one service instance."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from otelflow.pdata import Signal


class SelfMetrics:
    """Get-or-create access to metrics plus the standard receiver/processor/exporter counters.

    Components of the same type share metric families (labelled by component id), so creation
    is idempotent by name.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._families: dict[str, object] = {}
        self._children: dict[tuple, Counter] = {}  # the standard counters' labelled children
        self._process_collector = None

    def add_process_metrics(self) -> None:
        """Serve the process RSS / CPU / uptime gauges too (idempotent)."""
        if self._process_collector is None:
            from otelflow.telemetry.process import ProcessCollector

            self._process_collector = ProcessCollector()
            self.registry.register(self._process_collector)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (), buckets=None) -> Histogram:
        kwargs = {"buckets": buckets} if buckets else {}
        return self._get(Histogram, name, doc, labels, **kwargs)

    def _get(self, cls, name: str, doc: str, labels: Sequence[str], **kwargs):
        family = self._families.get(name)
        if family is None:
            family = cls(name, doc, list(labels), registry=self.registry, **kwargs)
            self._families[name] = family
        return family

    # -- the standard component counters -------------------------------------------------

    def receiver_accepted(self, receiver: str, transport: str, signal: Signal, n: int) -> None:
        self._standard("receiver_accepted", signal, receiver, transport).inc(n)

    def receiver_refused(self, receiver: str, transport: str, signal: Signal, n: int) -> None:
        self._standard("receiver_refused", signal, receiver, transport).inc(n)

    def _standard(self, kind: str, signal: Signal, *values: str) -> Counter:
        """The labelled child of a standard counter, cached: a request on the hot path costs a
        dict lookup, not a family lookup plus `.labels()` (which validates and locks)."""
        key = (kind, signal, *values)
        child = self._children.get(key)
        if child is None:
            doc, labels = _STANDARD[kind]
            family = self.counter(f"otelcol_{kind}_{signal.item_unit}",
                                  doc.format(unit=signal.item_unit), labels)
            child = self._children[key] = family.labels(*values)
        return child

    def processor_counters(self, processor: str, signal: Signal) -> tuple[Counter, Counter]:
        """(incoming, outgoing) item counter children for one processor in one pipeline."""
        labels = ("processor", "otel_signal")
        incoming = self.counter("otelcol_processor_incoming_items", "Items passed to the processor.",
                                labels)
        outgoing = self.counter("otelcol_processor_outgoing_items", "Items emitted by the processor.",
                                labels)
        return incoming.labels(processor, signal.value), outgoing.labels(processor, signal.value)

    def processor_items(self, processor: str, signal: Signal, incoming: int, outgoing: int) -> None:
        inc, out = self.processor_counters(processor, signal)
        inc.inc(incoming)
        out.inc(outgoing)

    def exporter_sent(self, exporter: str, signal: Signal, n: int) -> None:
        self._standard("exporter_sent", signal, exporter).inc(n)

    def exporter_send_failed(self, exporter: str, signal: Signal, n: int) -> None:
        self._standard("exporter_send_failed", signal, exporter).inc(n)

    def exporter_enqueue_failed(self, exporter: str, signal: Signal, n: int) -> None:
        self._standard("exporter_enqueue_failed", signal, exporter).inc(n)

    def dropped(self, component: str, signal: Signal, reason: str, n: int) -> None:
        """Every drop anywhere, with why (permanent error, retries exhausted, queue full...)."""
        self.counter("otelflow_dropped_items", "Items dropped by a component, by reason.",
                     ("component", "otel_signal", "reason")).labels(
            component, signal.value, reason).inc(n)

    def queue_gauges(self, exporter: str, signal: Signal | None = None) -> tuple[Gauge, Gauge]:
        """(queue_size, queue_capacity) children for an exporter's sending queue."""
        labels = ("exporter", "data_type")
        data_type = signal.value if signal else "all"
        size = self.gauge("otelcol_exporter_queue_size", "Current size of the retry queue.", labels)
        cap = self.gauge("otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue.",
                         labels)
        return size.labels(exporter, data_type), cap.labels(exporter, data_type)


_STANDARD = {  # kind -> (help, label names) of otelcol_<kind>_<unit>
    "receiver_accepted": ("Number of {unit} successfully pushed into the pipeline.",
                          ("receiver", "transport")),
    "receiver_refused": ("Number of {unit} that could not be pushed into the pipeline.",
                         ("receiver", "transport")),
    "exporter_sent": ("Number of {unit} successfully sent to destination.", ("exporter",)),
    "exporter_send_failed": ("Number of {unit} in failed attempts to send to destination.",
                             ("exporter",)),
    "exporter_enqueue_failed": ("Number of {unit} failed to be added to the sending queue.",
                                ("exporter",)),
}
