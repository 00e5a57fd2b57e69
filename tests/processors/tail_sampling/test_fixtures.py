"""tail_sampling on the recorded HTTP API fixture, through the pytest plugin: exactly the error
traces and the slow traces come out, each one complete."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from otelflow.testing import load_fixture

TRACES = Path(__file__).parents[2] / "fixtures" / "http_api" / "traces.jsonl"

PIPELINE = """
processors:
  tail_sampling:
    decision_wait: 100ms
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
exporters:
  otlp/backend: {endpoint: "backend:4317"}
service:
  pipelines:
    traces: {processors: [tail_sampling], exporters: [otlp/backend]}
"""


def spans_by_trace(batches) -> dict[bytes, list]:
    traces = defaultdict(list)
    for batch in batches:
        for rs in batch.message.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    traces[span.trace_id].append(span)
    return traces


def test_error_and_slow_traces_kept_complete_others_dropped(otelflow_pipeline):
    recording = load_fixture(TRACES)
    recorded = spans_by_trace(recording)
    expected = {tid for tid, spans in recorded.items()
                if any(s.status.code == 2 for s in spans)
                or max(s.end_time_unix_nano for s in spans)
                - min(s.start_time_unix_nano for s in spans) >= 1_000_000_000}
    assert 0 < len(expected) < len(recorded) / 2  # the fixture has both kinds

    result = otelflow_pipeline(PIPELINE).run(recording)
    kept = spans_by_trace(result["otlp/backend"].batches)
    assert set(kept) == expected
    for tid in expected:
        assert sorted(s.span_id for s in kept[tid]) == sorted(s.span_id for s in recorded[tid])
