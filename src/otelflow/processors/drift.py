"""`drift`: watch features of the passing telemetry for drift and performance regressions.

Data passes through unchanged. Each feature takes numbers from a metric stream, a span
(attribute or duration) or a log attribute, keeps one baseline per `group_by` value and is
checked window by window (see `drift_detectors`). Alerts go to a bounded log served at
health_check `/alerts`, self-metrics gauges, structured log lines, optionally Alertmanager
(`alertmanager:`) and optionally a logs pipeline as OTLP log records (`alerts_pipeline:`).

`reload(config)` is the hook for a config reload: a changed config resolves what fires,
empties the alert history and starts new baselines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections import defaultdict
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from otelflow.component import (
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    Processor,
)
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch, Signal
from otelflow.processors.drift_alerts import (
    Alert,
    AlertBook,
    AlertmanagerConfig,
    AlertmanagerSender,
    alert_log_request,
    json_float,
)
from otelflow.processors.drift_detectors import (
    DetectorSettings,
    FeatureStream,
    PerformanceSettings,
    WindowResult,
    psi_null_exceedance,
)
from otelflow.processors.drift_features import COLLECTORS, Watch

Severity = Literal["warning", "critical"]
PSI_MAX_CHANCE = 0.01  # reject configs whose PSI check fires this often on unchanged data


class PerformanceConfig(ConfigModel):
    """A tolerance band around the baseline mean of a directional metric."""

    direction: Literal["higher_is_worse", "lower_is_worse"]
    tolerance: float = Field(gt=0, description="relative, e.g. 0.2 = 20% worse than baseline")
    consecutive: int = Field(3, ge=1, description="windows out of band before alerting")
    severity: Severity = "critical"


class MetricSource(ConfigModel):
    """Gauge/sum point values; histogram/summary mean, or a `quantile` of them."""

    name: str = Field(min_length=1)
    service: str | None = None
    quantile: float | None = Field(None, ge=0, le=1)


class SpanSource(ConfigModel):
    """A numeric span attribute, or the span duration in milliseconds when none is named."""

    service: str | None = None
    name: str | None = None
    attribute: str | None = None


class LogSource(ConfigModel):
    service: str | None = None
    attribute: str = Field(min_length=1)


class FeatureConfig(ConfigModel):
    """One watched feature; detector keys left out take the processor-level value."""

    name: str = Field(min_length=1)
    metric: MetricSource | None = None
    span: SpanSource | None = None
    log: LogSource | None = None
    group_by: list[str] = Field(default_factory=list)
    window: int | None = Field(None, ge=2)
    warmup: int | None = Field(None, ge=2)
    zscore_threshold: float | None = Field(None, gt=0)
    ks_pvalue: float | None = Field(None, gt=0, lt=1)
    psi_threshold: float | None = Field(None, gt=0)
    psi_bins: int | None = Field(None, ge=2, le=100)
    consecutive: int | None = Field(None, ge=1)
    severity: Severity | None = None
    performance: PerformanceConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FeatureConfig:
        given = [k for k in ("metric", "span", "log") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"feature {self.name!r} needs exactly one source of metric, span, "
                             f"log; got {', '.join(given) or 'none'}")
        return self

    @property
    def signal(self) -> Signal:
        if self.metric is not None:
            return Signal.METRICS
        return Signal.TRACES if self.span is not None else Signal.LOGS


class DriftConfig(ConfigModel):
    features: list[FeatureConfig] = Field(min_length=1)
    window: int = Field(200, ge=2, description="samples per evaluated (tumbling) window")
    warmup: int = Field(1000, ge=2, description="samples forming the baseline")
    zscore_threshold: float | None = Field(4.0, gt=0)
    ks_pvalue: float | None = Field(0.001, gt=0, lt=1)
    psi_threshold: float | None = Field(0.25, gt=0)
    psi_bins: int = Field(10, ge=2, le=100)
    consecutive: int = Field(2, ge=1, description="breaching windows before a drift alert")
    severity: Severity = Field("warning", description="severity of drift (not performance) alerts")
    max_groups: int = Field(100, ge=1, description="group_by values tracked per feature")
    alert_log_size: int = Field(1000, ge=1)
    alertmanager: AlertmanagerConfig | None = None
    alerts_pipeline: str | None = Field(None, description="logs pipeline receiving alerts")

    @model_validator(mode="after")
    def _check_features(self) -> DriftConfig:
        seen: set[str] = set()
        for i, feature in enumerate(self.features):
            where = f"features[{i}] ({feature.name})"
            if feature.name in seen:
                raise ValueError(f"{where}: feature name {feature.name!r} is used twice")
            seen.add(feature.name)
            s = self.detector_settings(feature)
            if (s.zscore_threshold is None and s.ks_pvalue is None and s.psi_threshold is None
                    and s.performance is None):
                raise ValueError(f"{where}: every detector is disabled; keep one of "
                                 "zscore_threshold, ks_pvalue, psi_threshold or add performance")
            if s.psi_threshold is not None:
                chance = psi_null_exceedance(s.psi_threshold, s.window, s.warmup, s.psi_bins)
                if chance > PSI_MAX_CHANCE:
                    raise ValueError(
                        f"{where}: psi_threshold {s.psi_threshold} over windows of {s.window} "
                        f"samples in {s.psi_bins} bins would fire on ~{chance:.0%} of windows of "
                        "an unchanged stream; raise window, lower psi_bins, raise psi_threshold "
                        "or set psi_threshold: null")
        return self

    def resolved(self, feature: FeatureConfig, key: str) -> Any:
        """A feature's own value for a detector key when it set one, else the processor's."""
        return getattr(feature if key in feature.model_fields_set else self, key)

    def detector_settings(self, feature: FeatureConfig) -> DetectorSettings:
        perf = feature.performance
        return DetectorSettings(
            window=self.resolved(feature, "window"), warmup=self.resolved(feature, "warmup"),
            zscore_threshold=self.resolved(feature, "zscore_threshold"),
            ks_pvalue=self.resolved(feature, "ks_pvalue"),
            psi_threshold=self.resolved(feature, "psi_threshold"),
            psi_bins=self.resolved(feature, "psi_bins"),
            performance=PerformanceSettings(perf.direction, perf.tolerance, perf.consecutive,
                                            perf.severity) if perf else None)


def create(settings: CreateSettings, config: DriftConfig,
           next_consumer: Consumer) -> DriftProcessor:
    return DriftProcessor(settings, config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "drift", DriftConfig, create,
                  description="drift and performance-regression detection with alerts")


# -- the processor -------------------------------------------------------------------------


class DriftProcessor(Processor):
    """Observes every batch, forwards it untouched, raises and resolves alerts."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: DriftConfig, next_consumer: Consumer):
        super().__init__(next_consumer)
        self.id = str(settings.id)
        self.pipeline = settings.pipeline or ""
        self.signal = settings.signal or Signal.TRACES
        self.log = settings.logger
        self.metrics = settings.metrics
        self._score = settings.metrics.gauge(
            "otelflow_drift_score", "Latest drift score per feature, group and detector "
            "(|z|, KS distance, PSI, relative change for performance).",
            ("processor", "pipeline", "feature", "group", "detector"))
        self._firing = settings.metrics.gauge(
            "otelflow_drift_alerts_firing", "Drift alerts currently firing.",
            ("processor", "pipeline", "severity"))
        self._fired = settings.metrics.counter(
            "otelflow_drift_alerts", "Drift alerts raised.",
            ("processor", "pipeline", "feature", "detector", "severity"))
        self._windows = settings.metrics.counter(
            "otelflow_drift_windows", "Windows evaluated, by detector and verdict.",
            ("processor", "pipeline", "feature", "detector", "breached"))
        self._samples = settings.metrics.counter(
            "otelflow_drift_samples", "Samples taken by drift features.",
            ("processor", "pipeline", "feature"))
        self._host: Host | None = None
        self._sender: AlertmanagerSender | None = None
        self._records: asyncio.Queue[Alert] | None = None
        self._record_task: asyncio.Task | None = None
        self._stopped = False
        self._configure(config)

    def _configure(self, config: DriftConfig) -> None:
        self.config = config
        self.book = AlertBook(config.alert_log_size)
        self.streams: dict[tuple, FeatureStream] = {}
        self._metric_children: dict[tuple, tuple] = {}
        self._groups: dict[int, int] = defaultdict(int)
        self._group_warned: set[int] = set()
        self.watches = [
            Watch(i, f, config.detector_settings(f), config.resolved(f, "consecutive"),
                  config.resolved(f, "severity"), _source(f).service, tuple(f.group_by))
            for i, f in enumerate(config.features) if f.signal is self.signal]
        self._collector = COLLECTORS[self.signal](self.watches)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        self._host = host
        self._stopped = False
        host.register_alert_source(self.alerts)
        if not self.watches:
            self.log.warning("no drift feature reads this pipeline's signal; passing through",
                             signal=self.signal.value)
        await self._start_outputs(host)

    async def _start_outputs(self, host: Host) -> None:
        if self.config.alertmanager is not None:
            self._sender = AlertmanagerSender(self.config.alertmanager,
                                              lambda: list(self.book.active.values()), self.log)
            await self._sender.start()
        if self.config.alerts_pipeline is not None:
            entry = self._alerts_entry(host, self.config.alerts_pipeline)
            self._records = asyncio.Queue()
            self._record_task = asyncio.create_task(self._send_records(entry),
                                                    name=f"{self.id}-alert-records")

    def _alerts_entry(self, host: Host, pipeline_id: str) -> Consumer:
        entries = getattr(host, "pipeline_entries", {})
        logs = sorted(p for p in entries if p.partition("/")[0] == Signal.LOGS.value)
        if pipeline_id not in logs:
            raise ValueError(f"alerts_pipeline {pipeline_id!r} is not a logs pipeline; logs "
                             f"pipelines: {', '.join(logs) or 'none'}")
        if pipeline_id == self.pipeline:
            raise ValueError(f"alerts_pipeline {pipeline_id!r} is this processor's own pipeline")
        return entries[pipeline_id]

    async def shutdown(self) -> None:
        """Flush outputs. Idempotent. Firing alerts are not resolved (their condition was not
        seen to clear): Alertmanager expires them at their endsAt, 4 resend intervals on."""
        if self._stopped:
            return
        self._stopped = True
        await self._stop_outputs()
        self._clear_gauges()

    async def _stop_outputs(self) -> None:
        if self._sender is not None:
            await self._sender.shutdown()
            self._sender = None
        if self._record_task is not None:
            assert self._records is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._records.join()
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
            self._record_task = self._records = None

    async def reload(self, config: DriftConfig) -> bool:
        """Config reload hook: when `config` differs, resolve firing alerts, empty the alert
        history and start new baselines (outputs restart with the new settings).
        Returns whether anything changed."""
        if config == self.config:
            return False
        self.reset()
        await self._stop_outputs()
        self._configure(config)
        if self._host is not None:
            await self._start_outputs(self._host)
        self.log.info("drift config reloaded: new baselines, alert history emptied",
                      features=[w.feature.name for w in self.watches])
        return True

    def reset(self) -> None:
        """New baselines for every feature and an empty alert history."""
        for alert in self.book.resolve_all():
            self._emit("resolved", alert)
        self.book.clear()
        self.streams.clear()
        self._groups.clear()
        self._group_warned.clear()
        self._clear_gauges()

    def _clear_gauges(self) -> None:
        """Drop this processor's score gauges (the families are shared) and zero its firing."""
        for _, _, labels in self._metric_children.values():
            with contextlib.suppress(KeyError):
                self._score.remove(*labels)
        self._metric_children.clear()
        for severity in ("warning", "critical"):
            self._firing.labels(self.id, self.pipeline, severity).set(0)

    def alerts(self) -> list[dict]:
        """The alert log (health_check `/alerts`); empty once shut down."""
        return [] if self._stopped else self.book.snapshot()

    # -- data path ------------------------------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        if self.watches:
            try:
                self.observe(batch)
            except Exception as exc:  # never lose data because a feature could not be read
                self.log.error("drift observation failed", error=repr(exc))
        await self.next_consumer.consume(batch)

    def observe(self, batch: Batch) -> None:
        """Take the watched samples of a batch and run any windows they complete."""
        for (index, group), values in self._collector.collect(batch.message).items():
            self.feed(self.watches[index], group, values)

    def feed(self, watch: Watch, group: tuple[str, ...], values: list[float]) -> None:
        key = (watch.index, group)
        stream = self.streams.get(key)
        if stream is None:
            if self._groups[watch.index] >= self.config.max_groups:
                self._too_many_groups(watch, group)
                return
            self._groups[watch.index] += 1
            stream = self.streams[key] = FeatureStream(watch.settings)
        self._samples.labels(self.id, self.pipeline, watch.feature.name).inc(len(values))
        was_warm = stream.baseline is not None
        for result in stream.add(np.asarray(values, dtype=np.float64)):
            self._on_window(watch, group, stream, result)
        if not was_warm and stream.baseline is not None:
            self.log.info("drift baseline ready", feature=watch.feature.name,
                          group=_group_text(watch, group), samples=stream.baseline.n,
                          mean=stream.baseline.mean, std=math.sqrt(stream.baseline.var))

    def _too_many_groups(self, watch: Watch, group: tuple[str, ...]) -> None:
        if watch.index not in self._group_warned:
            self._group_warned.add(watch.index)
            self.log.warning("drift feature has too many groups; new groups are ignored",
                             feature=watch.feature.name, max_groups=self.config.max_groups,
                             ignored_group=_group_text(watch, group))

    def _on_window(self, watch: Watch, group: tuple[str, ...], stream: FeatureStream,
                   result: WindowResult) -> None:
        gtext = _group_text(watch, group)
        scores = {"zscore": abs(result.zscore), "ks": result.ks_stat, "psi": result.psi,
                  "performance": result.change}
        for detector, breached in result.breaches.items():
            score, verdicts = self._children(watch, group, gtext, detector)
            score.set(scores[detector])
            verdicts[breached].inc()
            perf = detector == "performance"
            needed = watch.settings.performance.consecutive if perf else watch.consecutive
            change = self.book.observe(
                (watch.index, group, detector), breached, needed,
                lambda d=detector: self._build_alert(watch, group, stream, result, d))
            if change is not None:
                self._emit(*change)

    def _children(self, watch: Watch, group: tuple[str, ...], gtext: str, detector: str):
        """The (score gauge, {breached: window counter}) children, looked up once."""
        key = (watch.index, group, detector)
        children = self._metric_children.get(key)
        if children is None:
            name = watch.feature.name
            labels = (self.id, self.pipeline, name, gtext, detector)
            children = self._metric_children[key] = (
                self._score.labels(*labels),
                {b: self._windows.labels(self.id, self.pipeline, name, detector, str(b).lower())
                 for b in (False, True)}, labels)
        return children[:2]

    def _build_alert(self, watch: Watch, group: tuple[str, ...], stream: FeatureStream,
                     r: WindowResult, detector: str) -> Alert:
        s, base = watch.settings, stream.baseline
        assert base is not None
        value, threshold, what = {
            "zscore": (abs(r.zscore), s.zscore_threshold, f"|z| {abs(r.zscore):.2f} >"),
            "ks": (r.ks_p, s.ks_pvalue, f"KS D={r.ks_stat:.3f}, p={r.ks_p:.2g} <"),
            "psi": (r.psi, s.psi_threshold, f"PSI {r.psi:.3f} >"),
            "performance": (r.change, s.performance.tolerance if s.performance else 0.0,
                            f"change {r.change:+.1%} beyond tolerance"),
        }[detector]
        perf = detector == "performance"
        now = time.time()
        name = watch.feature.name
        label = f"{name}{{{_group_text(watch, group)}}}" if group else name
        return Alert(
            alertname="PerformanceRegression" if perf else "FeatureDrift",
            processor=self.id, pipeline=self.pipeline, feature=name,
            group=dict(zip(watch.group_by, group, strict=True)), detector=detector,
            severity=s.performance.severity if perf and s.performance else watch.severity,
            value=float(value), threshold=float(threshold or 0.0),
            message=(f"{label}: window mean {r.mean:.6g} vs baseline {base.mean:.6g} "
                     f"({r.change:+.1%}); {what} {threshold:g}"),
            starts_at=now, updated_at=now,
            details={"baseline": {"mean": base.mean, "std": math.sqrt(base.var),
                                  "samples": base.n},
                     "window": {"index": r.index, "mean": r.mean, "std": r.std,
                                "samples": r.n},
                     "zscore": json_float(r.zscore), "ks_stat": r.ks_stat, "ks_p": r.ks_p,
                     "psi": r.psi, "change": json_float(r.change)})

    def _emit(self, status: str, alert: Alert) -> None:
        """Fan an alert state change out to logs, metrics, Alertmanager and the logs pipeline."""
        fields = alert.to_dict()
        fields.pop("status")
        if status == "firing":
            self.log.warning("drift alert firing", **fields)
            self._fired.labels(self.id, self.pipeline, alert.feature, alert.detector,
                               alert.severity).inc()
        else:
            self.log.info("drift alert resolved", **fields)
        for severity in ("warning", "critical"):
            self._firing.labels(self.id, self.pipeline, severity).set(
                sum(a.severity == severity for a in self.book.active.values()))
        if self._sender is not None:
            self._sender.notify(alert)
        if self._records is not None:
            self._records.put_nowait(dataclasses.replace(alert))  # this state, not a later one

    async def _send_records(self, entry: Consumer) -> None:
        assert self._records is not None
        queue = self._records
        while True:
            alerts = [await queue.get()]
            while not queue.empty():
                alerts.append(queue.get_nowait())
            try:
                await entry.consume(Batch.of(alert_log_request(alerts)))
            except Exception as exc:
                self.log.error("cannot deliver alert log records", error=repr(exc),
                               pipeline=self.config.alerts_pipeline, alerts=len(alerts))
            finally:
                for _ in alerts:
                    queue.task_done()


def _group_text(watch: Watch, group: tuple[str, ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(watch.group_by, group, strict=True))


def _source(feature: FeatureConfig) -> MetricSource | SpanSource | LogSource:
    source = feature.metric or feature.span or feature.log
    assert source is not None
    return source
