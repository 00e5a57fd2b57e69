"""Build the component graph from a `ServiceConfig` and run its lifecycle.

receivers (shared across pipelines) -> per-pipeline processor chain -> fan-out -> exporters
(shared, each behind its queue/retry chain). Start: extensions, exporters, processors (last
first), receivers. Stop in the reverse order so every stage can drain into the next.

As one of several worker processes (`worker`, see `pipeline.workers`), the service serves its
self-metrics on an internal port, skips components that run in worker 0 only, and routes
traces pipelines that need trace affinity through `pipeline.affinity`.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from otelflow.component import Component, ComponentID, Consumer, CreateSettings, Kind
from otelflow.config.service import ServiceConfig
from otelflow.pdata import Signal
from otelflow.pipeline.counting import CountingConsumer
from otelflow.pipeline.exporterhelper import ExporterChain, ExporterSettings
from otelflow.pipeline.fanout import FanOut
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.telemetry.server import MetricsServer

if TYPE_CHECKING:
    from otelflow.pipeline.affinity import Affinity, WorkerSlot

INTERNAL_METRICS_ADDRESS = "127.0.0.1:0"  # a worker's own /metrics, scraped by the supervisor


class Service:
    """A running collector: one instance per config. Also the `Host` components see."""

    def __init__(self, config: ServiceConfig, *, metrics: SelfMetrics | None = None,
                 exporter_overrides: Mapping[str, Any] | None = None,
                 worker: WorkerSlot | None = None):
        self.config = config
        self.worker = worker
        self.metrics = metrics or SelfMetrics()
        self.log = structlog.get_logger("otelflow").bind(kind="service")
        self.extensions: dict[str, Component] = {}
        self.exporters: dict[str, ExporterChain] = {}
        self.processors: dict[str, list[Component]] = {}  # pipeline id -> chain, first to last
        self.receivers: dict[str, Component] = {}
        self.pipeline_entries: dict[str, Consumer] = {}
        self._overrides = dict(exporter_overrides or {})
        self._state = "built"
        self._fatal: asyncio.Future | None = None
        self._alert_sources: list[Callable[[], list[dict]]] = []
        self.affinity: Affinity | None = None
        telemetry = config.telemetry.metrics
        address = telemetry.address if worker is None else INTERNAL_METRICS_ADDRESS
        self.metrics_server = (MetricsServer(self.metrics, address)
                               if telemetry.level != "none" else None)
        self._count_items = telemetry.level != "none"  # processor incoming/outgoing items
        if self.metrics_server is not None:
            self.metrics.add_process_metrics()
        self._build()

    # -- Host ---------------------------------------------------------------------------

    def extension(self, component_id: str) -> Any:
        try:
            return self.extensions[component_id]
        except KeyError:
            known = ", ".join(sorted(self.extensions)) or "none"
            raise KeyError(f"extension {component_id!r} is not enabled in service.extensions "
                           f"(enabled: {known})") from None

    def report_fatal(self, error: BaseException) -> None:
        self.log.error("component reported a fatal error", error=str(error))
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(error)

    def register_alert_source(self, source: Callable[[], list[dict]]) -> None:
        """Components that raise alerts (drift) register their alert log here."""
        self._alert_sources.append(source)

    def alerts(self) -> list[dict]:
        """Every registered alert log, newest last (served as JSON at health_check `/alerts`)."""
        return [alert for source in self._alert_sources for alert in source()]

    @property
    def state(self) -> str:
        """built | starting | running | stopping | stopped (health_check reads this)."""
        return self._state

    @property
    def ready(self) -> bool:
        return self._state == "running"

    # -- build --------------------------------------------------------------------------

    def _settings(self, kind: Kind, cid: str, **extra) -> CreateSettings:
        return CreateSettings(
            id=ComponentID.parse(cid), kind=kind, metrics=self.metrics,
            logger=component_logger(kind.value, cid, **{k: v for k, v in extra.items() if v}),
            signal=extra.get("signal"), pipeline=extra.get("pipeline"),
            workers=self.worker.count if self.worker else 1)

    def _skipped(self, kind: Kind, cid: str) -> bool:
        """Components that run in worker 0 only are not built in the other workers."""
        return (self.worker is not None and self.worker.index != 0
                and self.config.component(kind, cid).factory.workers == "first")

    def _route(self, pid: str, chain: list[Component], entry: Consumer) -> Consumer:
        """Put a trace router before a chain that needs every span of a trace in one worker."""
        if (self.worker is None or self.worker.count < 2
                or self.config.pipelines[pid].signal is not Signal.TRACES
                or not any(getattr(p, "needs_trace_affinity", False) for p in chain)):
            return entry
        if self.affinity is None:
            from otelflow.pipeline.affinity import Affinity

            self.affinity = Affinity(self.worker, self.metrics)
        return self.affinity.route(pid, entry)

    def _build(self) -> None:
        cfg = self.config
        for eid in cfg.extensions:
            if self._skipped(Kind.EXTENSION, eid):
                continue
            comp = cfg.component(Kind.EXTENSION, eid)
            self.extensions[eid] = comp.factory.create(self._settings(Kind.EXTENSION, eid), comp.config)
        used_exporters = {e for p in cfg.pipelines.values() for e in p.exporters}
        for eid in sorted(used_exporters):
            self.exporters[eid] = self._build_exporter(eid)
        receiver_targets: dict[str, dict[Signal, list[Consumer]]] = defaultdict(lambda: defaultdict(list))
        for pid, pipe in cfg.pipelines.items():
            entry: Consumer = FanOut([self.exporters[e] for e in pipe.exporters])
            chain: list[Component] = []
            for proc_id in reversed(pipe.processors):
                comp = cfg.component(Kind.PROCESSOR, proc_id)
                settings = self._settings(Kind.PROCESSOR, proc_id, signal=pipe.signal, pipeline=pid)
                if self._count_items:
                    incoming, outgoing = self.metrics.processor_counters(proc_id, pipe.signal)
                    proc = comp.factory.create(settings, comp.config, CountingConsumer(entry, outgoing))
                    entry = CountingConsumer(proc, incoming)
                else:
                    proc = entry = comp.factory.create(settings, comp.config, entry)
                chain.insert(0, proc)
            self.processors[pid] = chain
            self.pipeline_entries[pid] = entry = self._route(pid, chain, entry)
            for rid in pipe.receivers:
                if self._skipped(Kind.RECEIVER, rid):
                    continue
                receiver_targets[rid][pipe.signal].append(entry)
        for rid, targets in receiver_targets.items():
            comp = cfg.component(Kind.RECEIVER, rid)
            consumers = {sig: FanOut(cs) for sig, cs in targets.items()}
            self.receivers[rid] = comp.factory.create(self._settings(Kind.RECEIVER, rid), comp.config,
                                                      consumers)

    def _build_exporter(self, eid: str) -> ExporterChain:
        comp = self.config.component(Kind.EXPORTER, eid)
        settings = self._settings(Kind.EXPORTER, eid)
        exporter = self._overrides.get(eid) or comp.factory.create(settings, comp.config)
        helper = comp.config if isinstance(comp.config, ExporterSettings) else None
        if eid in self._overrides:
            helper = ExporterSettings.model_validate({"sending_queue": {"enabled": False},
                                                      "retry_on_failure": {"enabled": False}})
        return ExporterChain(exporter, helper, eid, self.metrics, settings.logger)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._state = "starting"
        self._fatal = asyncio.get_running_loop().create_future()
        if self.metrics_server is not None:
            self.metrics_server.start()
        for group in self._start_order():
            for name, comp in group:
                try:
                    await comp.start(self)
                except Exception as exc:
                    self.log.error("component failed to start", component=name, error=str(exc))
                    await self.shutdown()
                    raise RuntimeError(f"{name}: failed to start: {exc}") from exc
        self._state = "running"
        self.log.info("everything is ready", pipelines=sorted(self.config.pipelines))

    def _start_order(self) -> list[list[tuple[str, Any]]]:
        procs = [(f"processor {c!r}", p) for pid in self.processors
                 for c, p in reversed(list(zip(self.config.pipelines[pid].processors,
                                               self.processors[pid], strict=True)))]
        routing = [("trace routing", self.affinity)] if self.affinity is not None else []
        return [
            [(f"extension {k!r}", v) for k, v in self.extensions.items()],
            [(f"exporter {k!r}", v) for k, v in self.exporters.items()],
            procs,
            routing,
            [(f"receiver {k!r}", v) for k, v in self.receivers.items()],
        ]

    async def shutdown(self, barrier: Callable[[], Awaitable[None]] | None = None) -> None:
        """Receivers first, then processors (flushing downstream), exporters, extensions.

        A worker routing traces also drains what it queued for its peers, then awaits
        `barrier` (every peer has drained too) before it stops accepting forwarded data.
        """
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        deadline = time.monotonic() + self.config.shutdown_timeout
        for name, comp in reversed(self._start_order()[-1]):
            await self._stop(name, comp.shutdown())
        if self.affinity is not None:
            await self._stop("trace routing", self.affinity.drain(deadline))
        if barrier is not None:
            await self._stop("worker shutdown barrier", asyncio.wait_for(
                barrier(), max(0.0, deadline - time.monotonic())))
        if self.affinity is not None:
            await self._stop("trace routing", self.affinity.shutdown())
        for pid, chain in self.processors.items():
            for proc in chain:
                await self._stop(f"processor in {pid}", proc.shutdown())
        # exporters drain side by side: a dead backend must not eat the others' deadline
        await asyncio.gather(*(self._stop(f"exporter {eid!r}", exporter.shutdown(deadline))
                               for eid, exporter in self.exporters.items()))
        for eid, ext in reversed(list(self.extensions.items())):
            await self._stop(f"extension {eid!r}", ext.shutdown())
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self._state = "stopped"

    async def _stop(self, name: str, coro) -> None:
        try:
            await coro
        except Exception as exc:
            self.log.error("component failed to shut down cleanly", component=name, error=str(exc))

    async def reload(self, new: ServiceConfig) -> bool:
        """Apply `new` in place when it differs only in the settings of processors that can
        reload themselves (drift: new baseline, empty alert history). False: rebuild needed."""
        if _without_processor_settings(new.raw) != _without_processor_settings(self.config.raw):
            return False
        old_procs = self.config.raw.get("processors") or {}
        new_procs = new.raw.get("processors") or {}
        changed = {pid for pid in new_procs if new_procs[pid] != old_procs.get(pid)}
        targets = [(proc, new.component(Kind.PROCESSOR, proc_id).config)
                   for pid, chain in self.processors.items()
                   for proc_id, proc in zip(self.config.pipelines[pid].processors, chain, strict=True)
                   if proc_id in changed]
        if not all(hasattr(proc, "reload") for proc, _cfg in targets):
            return False
        for proc, cfg in targets:
            await proc.reload(cfg)
        self.config = new
        self.log.info("configuration reloaded in place", processors=sorted(changed))
        return True

    async def wait_fatal(self) -> BaseException:
        assert self._fatal is not None
        return await asyncio.shield(self._fatal)  # waiters come and go; the future stays


def _without_processor_settings(raw: dict) -> dict:
    """The config with each processor's settings blanked (its id and position kept)."""
    return {**raw, "processors": dict.fromkeys(raw.get("processors") or {})}
