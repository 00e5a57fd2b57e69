"""`hostmetrics` receiver: node CPU, memory, disk, filesystem, network, load and per-process
metrics through psutil, with the semantic-convention names the Go receiver uses
(`system.cpu.time`, `system.memory.usage`, ...). Each scraper takes Go's
`metrics: {<name>: {enabled: bool}}` toggles."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping

import psutil
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from pydantic import Field, model_validator

from otelflow.component import Component, Consumer, CreateSettings, Factory, Host, Kind, PipelineError
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, Signal

CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
SCOPE = "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/hostmetricsreceiver"

# scraper -> {metric name: enabled by default}
METRICS: dict[str, dict[str, bool]] = {
    "cpu": {"system.cpu.time": True, "system.cpu.utilization": False},
    "memory": {"system.memory.usage": True, "system.memory.utilization": False},
    "disk": {"system.disk.io": True, "system.disk.operations": True, "system.disk.io_time": True,
             "system.disk.operation_time": True, "system.disk.merged": True},
    "filesystem": {"system.filesystem.usage": True, "system.filesystem.inodes.usage": True,
                   "system.filesystem.utilization": False},
    "network": {"system.network.io": True, "system.network.packets": True,
                "system.network.errors": True, "system.network.dropped": True,
                "system.network.connections": True},
    "load": {"system.cpu.load_average.1m": True, "system.cpu.load_average.5m": True,
             "system.cpu.load_average.15m": True},
    "process": {"process.cpu.time": True, "process.memory.usage": True,
                "process.memory.virtual": True, "process.disk.io": True,
                "process.threads": False},
}


class MetricToggle(ConfigModel):
    enabled: bool


class ProcessMatch(ConfigModel):
    names: list[str] = Field(default_factory=list)
    match_type: str = "regexp"


class ScraperConfig(ConfigModel):
    metrics: dict[str, MetricToggle] = Field(default_factory=dict)
    include: ProcessMatch | None = None  # process scraper only
    exclude: ProcessMatch | None = None  # process scraper only


class HostMetricsConfig(ConfigModel):
    collection_interval: Duration = 60.0
    initial_delay: Duration = 1.0
    root_path: str = ""
    scrapers: dict[str, ScraperConfig | None] = Field(min_length=1)

    @model_validator(mode="after")
    def _known(self) -> HostMetricsConfig:
        for name, scraper in self.scrapers.items():
            if name not in METRICS:
                raise ValueError(f"unknown scraper {name!r}; valid scrapers: "
                                 f"{', '.join(sorted(METRICS))}")
            for metric in (scraper.metrics if scraper else {}):
                if metric not in METRICS[name]:
                    raise ValueError(f"scrapers.{name}.metrics: unknown metric {metric!r}; valid: "
                                     f"{', '.join(sorted(METRICS[name]))}")
        if self.root_path and not os.path.isdir(self.root_path):
            raise ValueError(f"root_path {self.root_path!r} is not a directory")
        return self

    def enabled(self, scraper: str) -> set[str]:
        toggles = (self.scrapers.get(scraper) or ScraperConfig()).metrics
        return {m for m, default in METRICS[scraper].items()
                if (toggles[m].enabled if m in toggles else default)}


def create(settings: CreateSettings, config: HostMetricsConfig,
           consumers: Mapping[Signal, Consumer]) -> HostMetricsReceiver:
    return HostMetricsReceiver(settings, config, consumers[Signal.METRICS])


FACTORY = Factory(Kind.RECEIVER, "hostmetrics", HostMetricsConfig, create,
                  signals=frozenset({Signal.METRICS}), description="Host metrics via psutil",
                  workers="first")


class Builder:
    """Appends semantic-convention metrics to one scope."""

    def __init__(self, scope: metrics_pb2.ScopeMetrics, enabled: set[str], now: int, start: int):
        self.scope, self.enabled, self.now, self.start = scope, enabled, now, start
        self._metrics: dict[str, metrics_pb2.Metric] = {}

    def point(self, name: str, unit: str, value: float, kind: str = "sum", monotonic: bool = True,
              **attrs: str) -> None:
        if name not in self.enabled:
            return
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = self.scope.metrics.add()
            metric.name, metric.unit = name, unit
            if kind == "sum":
                metric.sum.is_monotonic = monotonic
                metric.sum.aggregation_temporality = CUMULATIVE
        point = getattr(metric, kind).data_points.add()
        point.time_unix_nano = self.now
        if kind == "sum":
            point.start_time_unix_nano = self.start
        if isinstance(value, int) and not isinstance(value, bool):
            point.as_int = value
        else:
            point.as_double = float(value)
        for key, val in attrs.items():
            kv = point.attributes.add()
            kv.key, kv.value.string_value = key, str(val)


def scrape_cpu(b: Builder, _cfg: HostMetricsConfig) -> None:
    for i, times in enumerate(psutil.cpu_times(percpu=True)):
        for state, value in times._asdict().items():
            if state in ("guest", "guest_nice"):
                continue
            b.point("system.cpu.time", "s", value, cpu=f"cpu{i}",
                    state="wait" if state == "iowait" else state)
    if "system.cpu.utilization" in b.enabled:
        for i, pct in enumerate(psutil.cpu_times_percent(percpu=True)):
            for state, value in pct._asdict().items():
                b.point("system.cpu.utilization", "1", value / 100, kind="gauge", cpu=f"cpu{i}",
                        state=state)


def scrape_memory(b: Builder, _cfg: HostMetricsConfig) -> None:
    mem = psutil.virtual_memory()
    states = {"used": mem.used, "free": mem.free, "buffered": getattr(mem, "buffers", 0),
              "cached": getattr(mem, "cached", 0),
              "slab_reclaimable": getattr(mem, "slab", 0), "slab_unreclaimable": 0}
    for state, value in states.items():
        b.point("system.memory.usage", "By", int(value), monotonic=False, state=state)
        b.point("system.memory.utilization", "1", value / mem.total, kind="gauge", state=state)


def scrape_disk(b: Builder, _cfg: HostMetricsConfig) -> None:
    for device, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
        for direction in ("read", "write"):
            b.point("system.disk.io", "By", getattr(io, f"{direction}_bytes"), device=device,
                    direction=direction)
            b.point("system.disk.operations", "{operations}", getattr(io, f"{direction}_count"),
                    device=device, direction=direction)
            b.point("system.disk.operation_time", "s", getattr(io, f"{direction}_time") / 1000,
                    device=device, direction=direction)
            b.point("system.disk.merged", "{operations}",
                    getattr(io, f"{direction}_merged_count", 0), device=device, direction=direction)
        b.point("system.disk.io_time", "s", getattr(io, "busy_time", 0) / 1000, device=device)


def scrape_filesystem(b: Builder, cfg: HostMetricsConfig) -> None:
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
            stat = os.statvfs(part.mountpoint)
        except OSError:
            continue
        mountpoint = part.mountpoint
        if cfg.root_path and mountpoint.startswith(cfg.root_path):
            mountpoint = mountpoint[len(cfg.root_path):] or "/"
        mode = "ro" if "ro" in part.opts.split(",") else "rw"
        attrs = {"device": part.device, "mountpoint": mountpoint, "type": part.fstype, "mode": mode}
        reserved = max(0, usage.total - usage.used - usage.free)
        for state, value in (("used", usage.used), ("free", usage.free), ("reserved", reserved)):
            b.point("system.filesystem.usage", "By", int(value), monotonic=False, state=state, **attrs)
        b.point("system.filesystem.inodes.usage", "{inodes}", stat.f_files - stat.f_ffree,
                monotonic=False, state="used", **attrs)
        b.point("system.filesystem.inodes.usage", "{inodes}", stat.f_ffree, monotonic=False,
                state="free", **attrs)
        if usage.total:
            b.point("system.filesystem.utilization", "1", usage.used / usage.total, kind="gauge",
                    **attrs)


def scrape_network(b: Builder, _cfg: HostMetricsConfig) -> None:
    for device, io in psutil.net_io_counters(pernic=True).items():
        for direction, suffix in (("receive", "recv"), ("transmit", "sent")):
            b.point("system.network.io", "By", getattr(io, f"bytes_{suffix}"), device=device,
                    direction=direction)
            b.point("system.network.packets", "{packets}", getattr(io, f"packets_{suffix}"),
                    device=device, direction=direction)
            b.point("system.network.errors", "{errors}",
                    getattr(io, "errin" if suffix == "recv" else "errout"), device=device,
                    direction=direction)
            b.point("system.network.dropped", "{packets}",
                    getattr(io, "dropin" if suffix == "recv" else "dropout"), device=device,
                    direction=direction)
    if "system.network.connections" in b.enabled:
        counts: dict[str, int] = {}
        try:
            for conn in psutil.net_connections(kind="tcp"):
                counts[conn.status] = counts.get(conn.status, 0) + 1
        except psutil.AccessDenied:
            return
        for state, n in sorted(counts.items()):
            b.point("system.network.connections", "{connections}", n, monotonic=False,
                    protocol="tcp", state=state)


def scrape_load(b: Builder, _cfg: HostMetricsConfig) -> None:
    for window, value in zip(("1m", "5m", "15m"), os.getloadavg(), strict=True):
        b.point(f"system.cpu.load_average.{window}", "{thread}", value, kind="gauge")


SCRAPERS: dict[str, Callable[[Builder, HostMetricsConfig], None]] = {
    "cpu": scrape_cpu, "memory": scrape_memory, "disk": scrape_disk,
    "filesystem": scrape_filesystem, "network": scrape_network, "load": scrape_load,
}


def _process_selected(name: str, cfg: ScraperConfig | None) -> bool:
    def matches(m: ProcessMatch) -> bool:
        return any((re.fullmatch(p, name) if m.match_type == "regexp" else p == name)
                   for p in m.names)

    if cfg is None:
        return True
    if cfg.include and not matches(cfg.include):
        return False
    return not (cfg.exclude and matches(cfg.exclude))


def scrape_processes(req: ExportMetricsServiceRequest, cfg: HostMetricsConfig, now: int) -> None:
    """One resource per process (process.pid, process.executable.name, ...), as Go does."""
    scraper_cfg = cfg.scrapers.get("process")
    enabled = cfg.enabled("process")
    attrs = ["pid", "ppid", "name", "exe", "cmdline", "username", "create_time"]
    for proc in psutil.process_iter(attrs):
        info = proc.info
        if not info.get("name") or not _process_selected(info["name"], scraper_cfg):
            continue
        try:
            cpu, mem, threads = proc.cpu_times(), proc.memory_info(), proc.num_threads()
            io = proc.io_counters() if hasattr(proc, "io_counters") else None
        except (psutil.Error, OSError):
            continue
        rm = req.resource_metrics.add()
        resource = {"process.pid": info["pid"], "process.parent_pid": info["ppid"] or 0,
                    "process.executable.name": info["name"], "process.executable.path": info["exe"] or "",
                    "process.command_line": " ".join(info["cmdline"] or []),
                    "process.owner": info["username"] or ""}
        for key, value in resource.items():
            kv = rm.resource.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
        scope = rm.scope_metrics.add()
        scope.scope.name = SCOPE
        b = Builder(scope, enabled, now, int((info["create_time"] or 0) * 1e9))
        for state in ("user", "system"):
            b.point("process.cpu.time", "s", getattr(cpu, state), state=state)
        b.point("process.cpu.time", "s", getattr(cpu, "iowait", 0.0), state="wait")
        b.point("process.memory.usage", "By", mem.rss, monotonic=False)
        b.point("process.memory.virtual", "By", mem.vms, monotonic=False)
        b.point("process.threads", "{threads}", threads, monotonic=False)
        if io is not None:
            b.point("process.disk.io", "By", io.read_bytes, direction="read")
            b.point("process.disk.io", "By", io.write_bytes, direction="write")


class HostMetricsReceiver(Component):
    def __init__(self, settings: CreateSettings, config: HostMetricsConfig, consumer: Consumer):
        self.id = str(settings.id)
        self.config = config
        self.consumer = consumer
        self.log = settings.logger
        self.metrics = settings.metrics
        self._task: asyncio.Task | None = None
        self._boot = int(psutil.boot_time() * 1e9)

    async def start(self, host: Host) -> None:
        if self.config.root_path:
            psutil.PROCFS_PATH = os.path.join(self.config.root_path, "proc")
        self._task = asyncio.create_task(self._run(), name=f"{self.id} scrapes")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.config.initial_delay)
        while True:
            started = time.monotonic()
            request = await asyncio.to_thread(self.collect)
            batch = Batch.of(request)
            try:
                await self.consumer.consume(batch)
                self.metrics.receiver_accepted(self.id, "", Signal.METRICS, batch.item_count())
            except PipelineError as exc:
                self.metrics.receiver_refused(self.id, "", Signal.METRICS, batch.item_count())
                self.log.warning("pipeline refused host metrics", error=str(exc))
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.collection_interval - elapsed))

    def collect(self) -> ExportMetricsServiceRequest:
        """One scrape of every configured scraper (blocking: runs in a thread)."""
        now = time.time_ns()
        req = ExportMetricsServiceRequest()
        system = [name for name in self.config.scrapers if name != "process"]
        if system:
            scope = req.resource_metrics.add().scope_metrics.add()
            scope.scope.name = SCOPE
            for name in system:
                try:
                    SCRAPERS[name](Builder(scope, self.config.enabled(name), now, self._boot),
                                   self.config)
                except (OSError, psutil.Error) as exc:
                    self.log.warning("scraper failed", scraper=name, error=str(exc))
        if "process" in self.config.scrapers:
            scrape_processes(req, self.config, now)
        return req
