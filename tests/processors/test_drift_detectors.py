"""drift_detectors against scipy, plus reading samples out of metrics and logs."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from scipy import stats

from otelflow.pdata import Batch, Signal
from otelflow.processors.drift_detectors import (
    Baseline,
    DetectorSettings,
    FeatureStream,
    ks_pvalue,
    ks_statistic,
    psi,
    psi_null_exceedance,
    welch_z,
)
from otelflow.processors.drift_features import bucket_quantile
from tests.processors.drift_support import make_processor


@pytest.mark.parametrize(("n0", "n1", "shift"), [(1000, 100, 0.0), (1000, 100, 0.4),
                                                  (2000, 500, 0.15), (300, 60, 0.6)])
def test_ks_matches_scipy(n0: int, n1: int, shift: float):
    rng = np.random.default_rng(n0 + n1)
    a, b = rng.normal(size=n0), rng.normal(shift, size=n1)
    d = ks_statistic(np.sort(a), np.sort(b))
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert ks_pvalue(d, n0, n1) == pytest.approx(ref.pvalue, rel=0.2, abs=1e-6)


def test_ks_statistic_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 400).astype(float), rng.integers(1, 6, 80).astype(float)
    assert ks_statistic(np.sort(a), np.sort(b)) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_welch_z_matches_scipy_welch_t():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 1000), rng.normal(0.3, 3, 200)
    base = Baseline.of(a, 10)
    z = welch_z(base, b.mean(), b.var(ddof=1), len(b))
    assert z == pytest.approx(stats.ttest_ind(b, a, equal_var=False).statistic, rel=1e-9)


def test_psi_chance_estimate_matches_simulation():
    rng = np.random.default_rng(2)
    base = Baseline.of(rng.normal(size=1000), 10)
    scores = np.array([psi(base, rng.normal(size=100)) for _ in range(4000)])
    simulated = (scores > 0.2).mean()
    estimate = psi_null_exceedance(0.2, 100, 1000, 10)
    assert 0.5 * simulated <= estimate <= 2 * simulated, (estimate, simulated)
    assert psi(base, rng.normal(1.0, size=100)) > 0.25  # a 1-sigma shift is a big PSI


def test_stream_warms_up_then_evaluates_whole_windows():
    stream = FeatureStream(DetectorSettings(10, 30, 4.0, 0.001, None, 10))
    assert stream.add(np.arange(25.0)) == [] and stream.baseline is None
    assert stream.add(np.arange(10.0)) == [] and stream.baseline.n == 30
    results = stream.add(np.full(17, 100.0))
    assert [r.index for r in results] == [0, 1] and results[1].breaches["zscore"]
    assert stream.samples == 52


def test_bucket_quantile_interpolates_like_histogram_quantile():
    buckets = [(0.0, 10.0, 50), (10.0, 20.0, 30), (20.0, 40.0, 20)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(10.0)
    assert bucket_quantile(0.9, buckets) == pytest.approx(30.0)
    assert bucket_quantile(0.5, [(0.0, 1.0, 0)]) is None


def _metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "trainer"
    sm = rm.scope_metrics.add()
    gauge = sm.metrics.add(name="loss")
    for i, value in enumerate((0.5, 0.25)):
        point = gauge.gauge.data_points.add(as_double=value)
        attr = point.attributes.add(key="model.version")
        attr.value.string_value = f"v{i}"
    sum_metric = sm.metrics.add(name="tokens")
    sum_metric.sum.data_points.add(as_int=7)
    hist = sm.metrics.add(name="latency")
    hist.histogram.data_points.add(count=10, sum=250.0, explicit_bounds=[10, 20, 40],
                                   bucket_counts=[0, 5, 5, 0])
    summary = sm.metrics.add(name="rt")
    point = summary.summary.data_points.add(count=4, sum=8.0)
    point.quantile_values.add(quantile=0.99, value=3.5)
    exp = sm.metrics.add(name="size")
    point = exp.exponential_histogram.data_points.add(count=4, sum=10.0, scale=0, zero_count=0)
    point.positive.offset = 1  # buckets (2, 4] and (4, 8]
    point.positive.bucket_counts.extend([2, 2])
    return req


async def test_metric_features_read_values_means_and_quantiles():
    features = [
        {"name": "loss", "metric": {"name": "loss"}, "group_by": ["model.version"]},
        {"name": "tokens", "metric": {"name": "tokens", "service": "trainer"}},
        {"name": "tokens_elsewhere", "metric": {"name": "tokens", "service": "other"}},
        {"name": "latency_mean", "metric": {"name": "latency"}},
        {"name": "latency_p50", "metric": {"name": "latency", "quantile": 0.5}},
        {"name": "rt_p99", "metric": {"name": "rt", "quantile": 0.99}},
        {"name": "rt_mean", "metric": {"name": "rt"}},
        {"name": "size_p50", "metric": {"name": "size", "quantile": 0.5}},
    ]
    proc, sink = make_processor({"features": features, "psi_threshold": None},
                                signal=Signal.METRICS)
    got = {(proc.watches[i].feature.name, g): v
           for (i, g), v in proc._collector.collect(_metrics_request()).items()}
    assert got == {("loss", ("v0",)): [0.5], ("loss", ("v1",)): [0.25],
                   ("tokens", ()): [7.0], ("latency_mean", ()): [25.0],
                   ("latency_p50", ()): [20.0], ("rt_p99", ()): [3.5], ("rt_mean", ()): [2.0],
                   ("size_p50", ()): [4.0]}
    await proc.consume(Batch.of(_metrics_request()))
    assert len(sink.batches) == 1


async def test_log_features_read_numeric_attributes():
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "agent"
    records = rl.scope_logs.add()
    for reward, env in ((1.5, "a"), (2, "b"), ("x", "a")):
        record = records.log_records.add()
        attr = record.attributes.add(key="reward")
        if isinstance(reward, str):
            attr.value.string_value = reward
        elif isinstance(reward, int):
            attr.value.int_value = reward
        else:
            attr.value.double_value = reward
        record.attributes.add(key="env").value.string_value = env
    features = [{"name": "reward", "log": {"attribute": "reward", "service": "agent"},
                 "group_by": ["env"]},
                {"name": "other", "log": {"attribute": "reward", "service": "nope"}}]
    proc, _ = make_processor({"features": features}, signal=Signal.LOGS)
    got = dict(proc._collector.collect(req))
    assert got == {(0, ("a",)): [1.5], (0, ("b",)): [2.0]}
