"""The drift processor: statistical behaviour, pass-through, group_by, alerts, reload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from otelflow.pdata import Batch, Signal
from tests.processors.drift_support import FakeHost, make_processor, metric_value, spans_request

FEATURE = {"name": "score", "span": {"attribute": "score"}}


def feed_windows(proc, values: np.ndarray, chunk: int = 500) -> None:
    watch = proc.watches[0]
    for start in range(0, len(values), chunk):
        proc.feed(watch, (), values[start:start + chunk].tolist())


def firing(proc, **match) -> list[dict]:
    return [a for a in proc.alerts()
            if a["status"] == "firing" and all(a[k] == v for k, v in match.items())]


def test_stationary_stream_has_no_alert_and_false_positive_rate_below_level():
    """100,000 unchanged samples: no alert; per-window breach counts consistent with the
    configured levels (one-sided binomial test at 99.9%)."""
    config = {"features": [FEATURE], "window": 200, "warmup": 1000, "zscore_threshold": 4.0,
              "ks_pvalue": 0.001, "psi_threshold": 0.25, "consecutive": 2}
    proc, _ = make_processor(config)
    rng = np.random.default_rng(20261128)
    feed_windows(proc, rng.normal(100.0, 15.0, 100_000))

    assert proc.alerts() == []
    windows = metric_value(proc.metrics, "otelflow_drift_windows_total", detector="ks")
    assert windows == (100_000 - 1000) // 200
    levels = {"zscore": math.erfc(4.0 / math.sqrt(2)), "ks": 0.001,
              "psi": 0.01}  # psi: the ceiling the config validation allows
    for detector, level in levels.items():
        breaches = metric_value(proc.metrics, "otelflow_drift_windows_total",
                                detector=detector, breached="true")
        # the alert-level false positive rate is 0 < level; the raw breach rate must not be
        # significantly above the level either
        assert stats.binom.sf(breaches - 1, windows, level) > 0.001, (detector, breaches)


def test_one_sigma_mean_shift_alerts_within_two_windows():
    config = {"features": [FEATURE], "window": 200, "warmup": 1000}
    proc, _ = make_processor(config)
    rng = np.random.default_rng(7)
    feed_windows(proc, rng.normal(0.0, 1.0, 1000 + 5 * 200))  # baseline + 5 quiet windows
    assert proc.alerts() == []
    shifted = rng.normal(1.0, 1.0, 10 * 200)
    for n in range(0, len(shifted), 50):
        feed_windows(proc, shifted[n:n + 50])
        if firing(proc, detector="zscore"):
            break
    assert firing(proc, detector="zscore"), "mean shift never alerted"
    assert n + 50 <= 2 * 200, f"alert after {n + 50} shifted samples, more than 2 windows"
    alert = firing(proc, detector="zscore")[0]
    assert alert["alertname"] == "FeatureDrift" and alert["severity"] == "warning"
    assert alert["value"] > 4.0 and alert["details"]["window"]["mean"] > 0.7


def test_variance_only_change_is_caught_by_ks_not_zscore():
    config = {"features": [FEATURE], "window": 500, "warmup": 2000, "psi_threshold": None}
    proc, _ = make_processor(config)
    rng = np.random.default_rng(11)
    feed_windows(proc, rng.normal(50.0, 5.0, 2000 + 2 * 500))
    feed_windows(proc, rng.normal(50.0, 10.0, 10 * 500))  # same mean, doubled spread

    assert firing(proc, detector="ks"), proc.alerts()
    assert not [a for a in proc.alerts() if a["detector"] == "zscore"]
    z_breaches = metric_value(proc.metrics, "otelflow_drift_windows_total", detector="zscore",
                              breached="true")
    assert z_breaches == 0


async def test_latency_regression_raises_one_critical_alert_that_resolves():
    """30% slower spans for 5 windows -> one critical alert (consecutive: 5), resolved after."""
    config = {"window": 100, "warmup": 1000, "features": [{
        "name": "latency", "span": {"service": "inference", "name": "predict"},
        "performance": {"direction": "higher_is_worse", "tolerance": 0.2, "consecutive": 5,
                        "severity": "critical"}}]}
    proc, sink = make_processor(config)
    host = FakeHost()
    await proc.start(host)
    rng = np.random.default_rng(3)

    async def send(n: int, factor: float) -> None:
        durations = rng.lognormal(math.log(100.0), 0.25, n) * factor
        await proc.consume(Batch.of(spans_request(durations)))
        # spans of other services / names are not watched
        await proc.consume(Batch.of(spans_request(durations * 10, service="other")))
        await proc.consume(Batch.of(spans_request(durations * 10, name="load")))

    await send(1000 + 3 * 100, 1.0)
    critical = lambda: [a for a in host.alerts() if a["severity"] == "critical"]  # noqa: E731
    for window in range(5):
        assert critical() == [], f"critical alert before window {window + 1}"
        await send(100, 1.3)
    assert [a["status"] for a in critical()] == ["firing"]
    assert critical()[0]["alertname"] == "PerformanceRegression"
    assert 0.2 < critical()[0]["value"] < 0.45
    firing_gauge = lambda: metric_value(proc.metrics, "otelflow_drift_alerts_firing",  # noqa: E731
                                        severity="critical")
    assert firing_gauge() == 1
    assert metric_value(proc.metrics, "otelflow_drift_score", feature="latency",
                        detector="performance") == pytest.approx(critical()[0]["value"])
    await send(300, 1.0)
    assert firing_gauge() == 0
    assert [a["status"] for a in critical()] == ["resolved"]
    assert critical()[0]["ends_at"] is not None
    json.dumps(host.alerts(), allow_nan=False)  # what health_check serves at /alerts
    assert len(sink.batches) == 3 * 7  # every batch passed on
    assert metric_value(proc.metrics, "otelflow_drift_alerts_total",
                        severity="critical") == 1
    await proc.shutdown()


async def test_group_by_keeps_model_versions_apart():
    config = {"window": 100, "warmup": 500, "psi_threshold": None, "features": [{
        "name": "latency", "span": {"name": "predict"}, "group_by": ["model.version"],
        "performance": {"direction": "higher_is_worse", "tolerance": 0.2, "consecutive": 2}}]}
    proc, _ = make_processor(config)
    await proc.start(FakeHost())
    rng = np.random.default_rng(5)

    async def send(n: int, v2_factor: float) -> None:
        request = spans_request(rng.normal(100, 10, n), resource_attrs={"model.version": "v1"})
        extra = spans_request(rng.normal(300, 30, n) * v2_factor,
                              resource_attrs={"model.version": "v2"})
        request.resource_spans.extend(extra.resource_spans)
        await proc.consume(Batch.of(request))

    await send(500 + 300, 1.0)  # v1 ~100 ms and v2 ~300 ms: no alert with separate baselines
    assert proc.alerts() == []
    assert {g for _, g in proc.streams} == {("v1",), ("v2",)}
    await send(400, 1.5)  # v2 only gets slower
    groups = {tuple(a["group"].items()) for a in firing(proc)}
    assert (("model.version", "v2"),) in groups
    assert (("model.version", "v1"),) not in groups
    perf = firing(proc, detector="performance")[0]
    assert perf["group"] == {"model.version": "v2"} and perf["severity"] == "critical"
    await proc.shutdown()


async def test_span_attribute_and_item_level_group_by():
    config = {"window": 50, "warmup": 100, "psi_threshold": None, "features": [{
        "name": "score", "span": {"attribute": "prediction.score"}, "group_by": ["tenant"]}]}
    proc, _ = make_processor(config)
    for tenant in ("a", "b"):
        request = spans_request([1.0] * 150, span_attrs={"prediction.score": 0.5,
                                                         "tenant": tenant})
        await proc.consume(Batch.of(request))
    # spans without the attribute, or with a non-numeric one, are skipped
    await proc.consume(Batch.of(spans_request([1.0] * 10)))
    await proc.consume(Batch.of(spans_request([1.0] * 10, span_attrs={"prediction.score": "x"})))
    assert sorted(g for _, g in proc.streams) == [("a",), ("b",)]
    assert all(s.samples == 150 for s in proc.streams.values())


async def test_data_passes_through_unchanged():
    proc, sink = make_processor({"features": [FEATURE]})
    batch = Batch.from_bytes(Signal.TRACES, spans_request([5.0] * 10,
                                                          span_attrs={"score": 1.5})
                             .SerializeToString())
    raw = batch.unchanged_bytes
    await proc.consume(batch)
    assert sink.batches == [batch] and batch.unchanged_bytes is raw
    assert not proc.mutates_data


async def test_max_groups_caps_tracked_groups():
    config = {"max_groups": 2, "features": [{**FEATURE, "group_by": ["g"]}]}
    proc, sink = make_processor(config)
    for g in "abc":
        await proc.consume(Batch.of(spans_request([1.0] * 5, span_attrs={"score": 1.0, "g": g})))
    assert sorted(k[1] for k in proc.streams) == [("a",), ("b",)]
    assert len(sink.batches) == 3


async def test_reload_with_changed_config_starts_new_baseline_and_empties_history():
    from otelflow.processors.drift import DriftConfig

    config = {"features": [FEATURE], "window": 100, "warmup": 200, "consecutive": 1,
              "psi_threshold": None}
    proc, _ = make_processor(config)
    await proc.start(FakeHost())
    rng = np.random.default_rng(1)
    feed_windows(proc, rng.normal(0, 1, 300))
    feed_windows(proc, rng.normal(5, 1, 100))
    assert firing(proc)
    assert await proc.reload(DriftConfig.model_validate(config)) is False  # unchanged: kept
    assert firing(proc)

    changed = DriftConfig.model_validate({**config, "zscore_threshold": 6.0})
    assert await proc.reload(changed) is True
    assert proc.alerts() == [] and proc.streams == {}
    assert metric_value(proc.metrics, "otelflow_drift_alerts_firing") == 0
    assert not [s for f in proc.metrics.registry.collect() for s in f.samples
                if s.name == "otelflow_drift_score"]
    assert proc.watches[0].settings.zscore_threshold == 6.0
    feed_windows(proc, rng.normal(5, 1, 300))  # the new baseline is the shifted data
    assert proc.alerts() == []
    assert proc.streams[(0, ())].baseline.mean == pytest.approx(5, abs=0.2)
    await proc.shutdown()
    assert proc.alerts() == []


async def test_alerts_pipeline_gets_log_records():
    from tests.processors.drift_support import Sink

    config = {"features": [FEATURE], "window": 100, "warmup": 200, "consecutive": 1,
              "psi_threshold": None,
              "alerts_pipeline": "logs/alerts"}
    proc, _ = make_processor(config)
    host = FakeHost()
    logs = Sink()
    host.pipeline_entries = {"traces": object(), "logs/alerts": logs}
    await proc.start(host)
    rng = np.random.default_rng(2)
    feed_windows(proc, rng.normal(0, 1, 300))
    feed_windows(proc, rng.normal(5, 1, 100))
    feed_windows(proc, rng.normal(0, 1, 100))
    await proc.shutdown()  # flushes
    records = [r for b in logs.batches for rl in b.message.resource_logs
               for sl in rl.scope_logs for r in sl.log_records]
    statuses = [next(kv.value.string_value for kv in r.attributes if kv.key == "alert.status")
                for r in records]
    assert "firing" in statuses and statuses[-1] == "resolved"
    assert records[0].severity_text == "WARN" and "score" in records[0].body.string_value


async def test_alerts_pipeline_must_be_a_logs_pipeline():
    proc, _ = make_processor({"features": [FEATURE], "alerts_pipeline": "traces"})
    host = FakeHost()
    host.pipeline_entries = {"traces": object(), "logs": object()}
    with pytest.raises(ValueError, match="'traces' is not a logs pipeline; logs pipelines: logs"):
        await proc.start(host)
