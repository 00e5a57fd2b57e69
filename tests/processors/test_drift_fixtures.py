"""The drift processor on the recorded HTTP API fixture, through the pytest plugin: the
recording replayed as it was raises nothing; replayed with its database latency tripled it
raises one critical performance regression."""

from __future__ import annotations

from pathlib import Path

from otelflow.pdata import Batch
from otelflow.testing import load_fixture

TRACES = Path(__file__).parents[1] / "fixtures" / "http_api" / "traces.jsonl"

PIPELINE = """
processors:
  drift:
    window: 120          # one window per replay of the recording
    warmup: 120
    zscore_threshold: null
    ks_pvalue: null
    psi_threshold: null
    features:
      - name: db_latency
        span: {service: checkout-api, name: SELECT shop.orders}
        performance: {direction: higher_is_worse, tolerance: 1.0, consecutive: 2,
                      severity: critical}
exporters:
  otlp/backend: {endpoint: "backend:4317"}
service:
  pipelines:
    traces: {processors: [drift], exporters: [otlp/backend]}
"""


def slowed(batches: list[Batch], factor: float) -> list[Batch]:
    """Copies of the recording whose span durations are `factor` times longer."""
    out = []
    for batch in batches:
        copy = batch.copy()
        for rs in copy.mutable().resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    duration = span.end_time_unix_nano - span.start_time_unix_nano
                    span.end_time_unix_nano = span.start_time_unix_nano + int(duration * factor)
        out.append(copy)
    return out


def test_recorded_traffic_is_quiet_and_a_latency_regression_alerts(otelflow_pipeline):
    recording = load_fixture(TRACES)
    baseline_and_control = otelflow_pipeline(PIPELINE).run(recording, recording, recording)
    assert baseline_and_control.alerts == []
    assert len(baseline_and_control["otlp/backend"].spans()) == 3 * 263  # passed through

    regressed = otelflow_pipeline(PIPELINE).run(recording, slowed(recording, 3.0),
                                                slowed(recording, 3.0))
    critical = [a for a in regressed.alerts if a.get("severity") == "critical"]
    assert len(critical) == 1, regressed.alerts
    assert "db_latency" in str(critical[0])
