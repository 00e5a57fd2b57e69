"""Test a pipeline YAML like code: otelflow's pytest plugin (README example, run verbatim by
tests/testing/test_plugin.py in a temporary directory next to a copy of tests/fixtures)."""

import re
from pathlib import Path

import pytest

from otelflow.testing import build

FIXTURES = Path(__file__).parent / "fixtures"  # recorded with `otelflow record`

PIPELINE = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
processors:
  batch:
    timeout: 5s
exporters:
  otlp/backend:
    endpoint: backend.example.com:4317
  debug: {}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/backend]
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/backend, debug]
"""


def test_recorded_errors_reach_the_backend(otelflow_pipeline):
    # every exporter is swapped for an in-memory sink; run() feeds the fixtures and returns
    # once the pipeline has flushed (here: the 5s batch timeout is not waited for)
    result = otelflow_pipeline(PIPELINE).run(FIXTURES / "http_api")
    backend = result["otlp/backend"]
    errors = backend.spans(attributes={"http.response.status_code": lambda code: code >= 500})
    assert errors, "the fixture holds failed requests"
    assert all(span.status.code == 2 for span in errors)  # STATUS_CODE_ERROR
    slow = backend.spans(name=re.compile(r"^(GET|POST) "), where=lambda s: s.duration_ms > 1000)
    assert slow
    assert backend.logs(body=re.compile(r" 50[03] "), attributes={"http.route": "/api/orders/{id}"})
    assert result.metric("otelcol_exporter_sent_spans", exporter="otlp/backend") == len(backend.spans())


def test_hand_built_data(otelflow_pipeline):
    pipeline = otelflow_pipeline(PIPELINE, sinks=["otlp/backend"])  # debug stays real
    result = pipeline.run(
        build.traces(build.span("GET /cart", {"http.response.status_code": 200}, kind="server"),
                     resource={"service.name": "cart"}),
        build.logs(build.log("card 4111 1111 1111 1111 declined", severity="WARN")),
    )
    (span,) = result["otlp/backend"].spans(name="GET /cart", resource={"service.name": "cart"})
    assert span.attributes == {"http.response.status_code": 200}
    assert result["otlp/backend"].logs(body=re.compile(r"4111"))[0].severity_text == "WARN"


@pytest.mark.asyncio
async def test_async_api(otelflow_pipeline):
    async with otelflow_pipeline(PIPELINE) as pipeline:
        await pipeline.feed(FIXTURES / "pii_logs" / "logs.jsonl", rebase_timestamps=True)
        await pipeline.feed({"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"body": {"stringValue": "hand-written OTLP/JSON"}}]}]}]})
    # leaving the block shut the pipeline down: every batch has been flushed
    logs = pipeline.sink("otlp/backend").logs(attributes={"user.email": re.compile(r"@example\.")})
    assert logs
    assert pipeline.sink("debug").logs(body="hand-written OTLP/JSON")
