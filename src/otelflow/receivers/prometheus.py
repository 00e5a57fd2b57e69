"""`prometheus` receiver: scrapes targets configured in Prometheus syntax (`config.scrape_configs`)
and turns what it scrapes into OTLP metrics the way the Go prometheus receiver does.

Parsing uses prometheus_client's text-format and OpenMetrics parsers. Each target becomes one
resource (`service.name` = job, `service.instance.id` = instance) and also reports `up` and the
`scrape_*` gauges. A failing or vanished target gets staleness markers for its series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import urlencode

import aiohttp
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from pydantic import Field, model_validator

from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PipelineError,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, Signal
from otelflow.receivers.prometheus_convert import (
    SCOPE_NAME,
    SeriesState,
    families_to_metrics,
    stale_markers,
)
from otelflow.receivers.prometheus_discovery import (
    FileSDConfig,
    KubernetesSDConfig,
    StaticConfig,
    Target,
    file_targets,
    kubernetes_targets,
    static_targets,
)
from otelflow.receivers.prometheus_relabel import RelabelConfig, relabel

ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class GlobalConfig(ConfigModel):
    scrape_interval: Duration = 60.0
    scrape_timeout: Duration = 10.0
    evaluation_interval: Duration = 60.0
    external_labels: dict[str, str] = Field(default_factory=dict)


class ScrapeConfig(ConfigModel):
    job_name: str = Field(min_length=1)
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None
    metrics_path: str = "/metrics"
    scheme: str = "http"
    params: dict[str, list[str]] = Field(default_factory=dict)
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = Field(0, ge=0)
    static_configs: list[StaticConfig] = Field(default_factory=list)
    file_sd_configs: list[FileSDConfig] = Field(default_factory=list)
    kubernetes_sd_configs: list[KubernetesSDConfig] = Field(default_factory=list)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)


class PrometheusConfig(ConfigModel):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    scrape_configs: list[ScrapeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _defaults(self) -> PrometheusConfig:
        names = [s.job_name for s in self.scrape_configs]
        duplicate = {n for n in names if names.count(n) > 1}
        if duplicate:
            raise ValueError(f"duplicate job_name: {', '.join(sorted(duplicate))}")
        for job in self.scrape_configs:
            job.scrape_interval = job.scrape_interval or self.global_.scrape_interval
            job.scrape_timeout = min(job.scrape_timeout or self.global_.scrape_timeout,
                                     job.scrape_interval)
        return self


class PrometheusReceiverConfig(ConfigModel):
    config: PrometheusConfig


def create(settings: CreateSettings, config: PrometheusReceiverConfig,
           consumers: Mapping[Signal, Consumer]) -> PrometheusReceiver:
    return PrometheusReceiver(settings, config, consumers[Signal.METRICS])


FACTORY = Factory(Kind.RECEIVER, "prometheus", PrometheusReceiverConfig, create,
                  signals=frozenset({Signal.METRICS}),
                  description="Scrape Prometheus/OpenMetrics endpoints", workers="first")


class PrometheusReceiver(Component):
    def __init__(self, settings: CreateSettings, config: PrometheusReceiverConfig,
                 consumer: Consumer):
        self.id = str(settings.id)
        self.config = config.config
        self.consumer = consumer
        self.log = settings.logger
        self.metrics = settings.metrics
        self._session: aiohttp.ClientSession | None = None
        self._jobs: list[asyncio.Task] = []
        self._loops: dict[tuple[str, str], TargetLoop] = {}

    async def start(self, host: Host) -> None:
        self._session = aiohttp.ClientSession()
        self._jobs = [asyncio.create_task(self._discover(job), name=f"{self.id}/{job.job_name}")
                      for job in self.config.scrape_configs]

    async def shutdown(self) -> None:
        for task in self._jobs:
            task.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await asyncio.gather(*(loop.stop(stale=False) for loop in self._loops.values()))
        self._jobs, self._loops = [], {}
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _discover(self, job: ScrapeConfig) -> None:
        """Refresh the job's targets; start loops for new ones, stop vanished ones."""
        intervals = [c.refresh_interval for c in (*job.file_sd_configs, *job.kubernetes_sd_configs)]
        while True:
            try:
                targets = await self._targets(job)
            except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError) as exc:
                self.log.warning("target discovery failed", job=job.job_name, error=str(exc))
                targets = None
            if targets is not None:
                await self._sync(job, targets)
            if not intervals:
                return
            await asyncio.sleep(min(intervals))

    async def _targets(self, job: ScrapeConfig) -> dict[str, Target]:
        raw = static_targets(job.static_configs)
        for fsd in job.file_sd_configs:
            raw += file_targets(fsd)
        for ksd in job.kubernetes_sd_configs:
            assert self._session is not None
            raw += await kubernetes_targets(ksd, self._session)
        out = {}
        for labels in raw:
            final = target_labels(job, labels)
            if final is not None:
                out[final["__url__"]] = final
        return out

    async def _sync(self, job: ScrapeConfig, targets: dict[str, Target]) -> None:
        current = {url for (name, url) in self._loops if name == job.job_name}
        for url in current - targets.keys():
            await self._loops.pop((job.job_name, url)).stop(stale=True)
        for url in targets.keys() - current:
            loop = TargetLoop(self, job, targets[url])
            self._loops[(job.job_name, url)] = loop
            loop.start()


def target_labels(job: ScrapeConfig, discovered: Target) -> Target | None:
    """Prometheus' target label pipeline: defaults, relabel_configs, instance, the URL."""
    labels = {"job": job.job_name, "__scheme__": job.scheme, "__metrics_path__": job.metrics_path,
              "__scrape_interval__": f"{job.scrape_interval}s",
              "__scrape_timeout__": f"{job.scrape_timeout}s",
              **{f"__param_{k}": v[0] for k, v in job.params.items() if v}, **discovered}
    labels = relabel(labels, job.relabel_configs)
    if labels is None or not labels.get("__address__"):
        return None
    labels.setdefault("instance", labels["__address__"])
    params = {k[len("__param_"):]: v for k, v in labels.items() if k.startswith("__param_")}
    query = f"?{urlencode(params)}" if params else ""
    labels["__url__"] = (f"{labels['__scheme__']}://{labels['__address__']}"
                         f"{labels['__metrics_path__']}{query}")
    return labels


class TargetLoop:
    """Scrapes one target every scrape_interval and pushes the result downstream."""

    def __init__(self, receiver: PrometheusReceiver, job: ScrapeConfig, labels: Target):
        self.receiver = receiver
        self.job = job
        self.url = labels["__url__"]
        self.labels = {k: v for k, v in labels.items() if not k.startswith("__")}
        self.address = labels["__address__"]
        self.scheme = labels["__scheme__"]
        self.state = SeriesState()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scrape {self.url}")

    async def stop(self, stale: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if stale and self.state.seen:
            await self._push(self._request(time.time_ns(), None, 0.0, up=None))

    async def _run(self) -> None:
        interval = self.job.scrape_interval or 60.0
        next_at = time.monotonic()
        while True:
            await self.scrape_once()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def scrape_once(self) -> None:
        now_ns = time.time_ns()
        started = time.monotonic()
        try:
            families = await self._fetch()
        except Exception as exc:  # any failure: the target is down for this scrape
            self.receiver.log.info("scrape failed", url=self.url, error=str(exc) or repr(exc))
            families = None
        duration = time.monotonic() - started
        await self._push(self._request(now_ns, families, duration, up=families is not None))

    async def _fetch(self) -> list:
        session = self.receiver._session
        assert session is not None
        timeout = aiohttp.ClientTimeout(total=self.job.scrape_timeout)
        async with session.get(self.url, headers={"Accept": ACCEPT}, timeout=timeout) as resp:
            resp.raise_for_status()
            body = await resp.text()
            content_type = resp.headers.get("Content-Type", "")
        parser = parse_openmetrics if "openmetrics" in content_type else parse_text
        families = list(parser(body))
        return self._relabel_samples(families)

    def _relabel_samples(self, families: list) -> list:
        """metric_relabel_configs, sample_limit and target-label merging (honor_labels)."""
        total = 0
        rules = self.job.metric_relabel_configs
        clash = {"job", "instance", *self.labels}
        for family in families:
            kept = []
            for sample in family.samples:
                labels = sample.labels
                if rules:
                    relabeled = relabel({**labels, "__name__": sample.name}, rules)
                    if relabeled is None:
                        continue
                    labels = {k: v for k, v in relabeled.items() if k != "__name__"}
                if labels is not sample.labels or len(self.labels) > 2 or not clash.isdisjoint(labels):
                    sample = sample._replace(labels=self._merge(labels))
                kept.append(sample)
            family.samples = kept
            total += len(kept)
        if self.job.sample_limit and total > self.job.sample_limit:
            raise RuntimeError(f"sample_limit exceeded ({total} > {self.job.sample_limit})")
        if not self.job.honor_timestamps:
            for family in families:
                family.samples = [s._replace(timestamp=None) for s in family.samples]
        return [f for f in families if f.samples]

    def _merge(self, scraped: dict[str, str]) -> dict[str, str]:
        target = {k: v for k, v in self.labels.items() if k not in ("job", "instance")}
        if self.job.honor_labels:
            return {**target, **scraped}
        out = dict(scraped)
        for key in ("job", "instance", *target):
            if key in out:
                out[f"exported_{key}"] = out.pop(key)
        return {**out, **target}

    def _request(self, now_ns: int, families: list | None, duration: float,
                 up: bool | None) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        self._resource(rm.resource)
        scope = rm.scope_metrics.add()
        scope.scope.name = SCOPE_NAME
        written = families_to_metrics(families, now_ns, self.state, scope) if families else set()
        stale_markers(set(self.state.seen) - written, self.state, now_ns, scope)
        if up is not None:
            samples = sum(len(f.samples) for f in families or [])
            for name, value in (("up", float(up)), ("scrape_duration_seconds", duration),
                                ("scrape_samples_scraped", samples),
                                ("scrape_samples_post_metric_relabeling", samples),
                                ("scrape_series_added", len(written))):
                metric = scope.metrics.add()
                metric.name = name
                point = metric.gauge.data_points.add()
                point.time_unix_nano, point.as_double = now_ns, float(value)
        return req

    def _resource(self, resource) -> None:
        host, _, port = self.address.rpartition(":")
        attrs = {"service.name": self.labels.get("job", self.job.job_name),
                 "service.instance.id": self.labels.get("instance", self.address),
                 "server.address": host or self.address, "server.port": port,
                 "url.scheme": self.scheme}
        for key, value in attrs.items():
            kv = resource.attributes.add()
            kv.key, kv.value.string_value = key, value

    async def _push(self, request: ExportMetricsServiceRequest) -> None:
        batch = Batch.of(request)
        receiver = self.receiver
        try:
            await receiver.consumer.consume(batch)
            receiver.metrics.receiver_accepted(receiver.id, "http", Signal.METRICS, batch.item_count())
        except PipelineError as exc:
            receiver.metrics.receiver_refused(receiver.id, "http", Signal.METRICS, batch.item_count())
            receiver.log.warning("pipeline refused scraped metrics", url=self.url, error=str(exc))
