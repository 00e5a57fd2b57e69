"""The collector's own telemetry, from a subprocess: `/metrics` carries the Go collector's names
(receiver, processor, exporter, queue, process) and secrets never reach logs, `/metrics` or
`otelflow validate` output."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from otelflow.pdata import Signal
from otelflow.testing.data import sample_request
from otelflow.testing.process import CollectorProcess, free_port

EXT_SECRET = "ext-secret-0xDEADBEEF"
HEADER_SECRET = "header-secret-0xFEEDFACE"


def config(http: int, grpc: int, metrics: int, out) -> str:
    return f"""
extensions:
  bearertokenauth: {{token: "{EXT_SECRET}"}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http}"}}
      grpc: {{endpoint: "127.0.0.1:{grpc}", auth: {{authenticator: bearertokenauth}}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
  otlphttp/dead:
    endpoint: http://127.0.0.1:{free_port()}
    headers: {{Authorization: "Bearer {HEADER_SECRET}"}}
    retry_on_failure: {{enabled: false}}
service:
  extensions: [bearertokenauth]
  telemetry:
    metrics: {{address: "127.0.0.1:{metrics}"}}
    logs: {{level: debug, encoding: json}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file, otlphttp/dead]}}
    logs: {{receivers: [otlp], exporters: [file]}}
"""


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    http, grpc, metrics = free_port(), free_port(), free_port()
    out = tmp_path_factory.mktemp("telemetry") / "out.jsonl"
    with CollectorProcess(config(http, grpc, metrics, out), wait_port=http) as proc:
        proc.http, proc.metrics_url = http, f"http://127.0.0.1:{metrics}/metrics"
        proc.config_text = proc.config_path.read_text()
        for n in (3, 4):
            response = requests.post(f"http://127.0.0.1:{http}/v1/traces", timeout=10,
                                     data=sample_request(Signal.TRACES, n).SerializeToString(),
                                     headers={"Content-Type": "application/x-protobuf"})
            assert response.status_code == 200
        requests.post(f"http://127.0.0.1:{http}/v1/logs", data=b"junk", timeout=10,
                      headers={"Content-Type": "application/x-protobuf"})
        yield proc


def scrape(collector, until=lambda samples: True, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        text = requests.get(collector.metrics_url, timeout=5).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        if until(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_go_named_counters_with_component_labels(collector):
    def done(samples):
        return value(samples, "otelcol_exporter_send_failed_spans_total", exporter="otlphttp/dead") == 7

    samples = scrape(collector, done)
    recv = {"receiver": "otlp", "transport": "http"}
    assert value(samples, "otelcol_receiver_accepted_spans_total", **recv) == 7
    assert value(samples, "otelcol_processor_incoming_items_total", processor="batch",
                 otel_signal="traces") == 7
    assert value(samples, "otelcol_processor_outgoing_items_total", processor="batch",
                 otel_signal="traces") == 7
    assert value(samples, "otelcol_exporter_sent_spans_total", exporter="file") == 7
    assert value(samples, "otelcol_exporter_send_failed_spans_total", exporter="otlphttp/dead") == 7
    queue = {"exporter": "file", "data_type": "all"}
    assert value(samples, "otelcol_exporter_queue_capacity", **queue) == 1000
    assert value(samples, "otelcol_exporter_queue_size", **queue) == 0


def test_process_metrics(collector):
    samples = scrape(collector)
    assert value(samples, "otelcol_process_memory_rss") > 10 * 1024 * 1024
    assert value(samples, "otelcol_process_cpu_seconds_total") > 0
    assert value(samples, "otelcol_process_uptime_total") > 0


def test_logs_are_json_at_debug_and_carry_no_secrets(collector):
    scrape(collector, lambda s: value(s, "otelcol_exporter_send_failed_spans_total",
                                      exporter="otlphttp/dead") == 7)
    text = collector.logs()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all("event" in line and "level" in line for line in lines)
    assert any(line["level"] == "error" and line.get("name") == "otlphttp/dead" for line in lines)
    for secret in (EXT_SECRET, HEADER_SECRET):
        assert secret not in text
        assert secret not in requests.get(collector.metrics_url, timeout=5).text


def test_validate_output_redacts_secrets(collector, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(collector.config_text)
    bad = tmp_path / "bad.yaml"
    bad.write_text(collector.config_text.replace(f'token: "{EXT_SECRET}"',
                                                 f"token: {{nested: {EXT_SECRET}}}")
                   .replace('"Bearer', "[Bearer").replace(f'{HEADER_SECRET}"', f"{HEADER_SECRET}]"))
    for path, code in ((good, 0), (bad, 1)):
        result = subprocess.run([sys.executable, "-m", "otelflow", "validate", "--config", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == code, result.stderr
        output = result.stdout + result.stderr
        assert EXT_SECRET not in output and HEADER_SECRET not in output
    assert "extensions.bearertokenauth.token" in output and "<redacted>" in output
    assert "exporters.otlphttp/dead.headers.Authorization" in output
