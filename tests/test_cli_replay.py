"""`otelflow replay` and `otelflow record` end to end, as subprocesses: the real OTel SDK is
recorded, the recording replayed through a pipeline, and the summary checked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow.fileformat import read_records
from otelflow.pdata import Signal, count_items, iter_scopes
from otelflow.testing.process import wait_for_port

FIXTURES = Path(__file__).parent / "fixtures"

PIPELINE = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 30s
exporters:
  file:
    path: {out}
    flush_interval: 10s
  otlp/dead:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    timeout: 2s
    retry_on_failure: {{enabled: false}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [file, otlp/dead]}}
"""


def otelflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otelflow", *args], env=os.environ,
                          capture_output=True, text=True, timeout=timeout)


def summary(stdout: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[2].isdigit():
            rows[(parts[0], parts[1])] = tuple(map(int, parts[2:]))
    return rows


def items_in(paths, signal: Signal) -> int:
    return sum(count_items(s, m) for p in paths for s, m in read_records(p) if s is signal)


def write_config(tmp_path: Path, port: int, dead: int) -> tuple[Path, Path]:
    out = tmp_path / "out.jsonl"
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE.format(port=port, out=out, dead=dead))
    return config, out


def test_replay_runs_fixtures_through_the_pipeline_and_summarises(tmp_path, port):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # nothing accepts there: the otlp/dead exporter fails
    config, out = write_config(tmp_path, port, dead.getsockname()[1])
    with socket.socket() as taken:  # the config's own receiver port is busy: it is not used
        taken.bind(("127.0.0.1", port))
        proc = otelflow("replay", "--config", str(config), str(FIXTURES / "http_api"),
                        str(FIXTURES / "pii_logs" / "*.jsonl"))
    dead.close()
    assert proc.returncode == 0, proc.stderr
    files = [*(FIXTURES / "http_api").glob("*.jsonl"), *(FIXTURES / "pii_logs").glob("*.jsonl")]
    spans, logs = items_in(files, Signal.TRACES), items_in(files, Signal.LOGS)
    rows = summary(proc.stdout)
    # the 30s batch timeout and 10s file flush are not waited for: shutdown flushed them
    assert rows[("file", "traces")] == (spans, spans, 0)
    assert rows[("file", "logs")] == (logs, logs, 0)
    assert rows[("otlp/dead", "logs")] == (logs, 0, logs)
    assert items_in([out], Signal.TRACES) == spans
    assert f"replayed {spans + logs} items from 5 files" in proc.stdout


def test_replay_reports_bad_input(tmp_path, port):
    config, _ = write_config(tmp_path, port, 1)
    proc = otelflow("replay", "--config", str(config), str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 1
    assert "path '" in proc.stderr and "missing.jsonl' matches no json fixture files" in proc.stderr
    proc = otelflow("replay", "--config", str(config))
    assert proc.returncode == 1
    assert "nothing to replay: give FIXTURE files" in proc.stderr
    proc = otelflow("replay", "--config", str(config), "--speed", "fast", str(FIXTURES / "pii_logs"))
    assert proc.returncode == 1
    assert "invalid speed 'fast'" in proc.stderr


def test_replay_uses_the_configs_replay_receivers(tmp_path):
    out = tmp_path / "out.jsonl"
    config = tmp_path / "replay.yaml"
    config.write_text(f"""
receivers:
  replay:
    path: {FIXTURES / "ml_training" / "logs.jsonl"}
    speed: 1000
    rebase_timestamps: true
exporters:
  file: {{path: {out}}}
service:
  pipelines:
    logs: {{receivers: [replay], exporters: [file]}}
""")
    proc = otelflow("replay", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    n = items_in([FIXTURES / "ml_training" / "logs.jsonl"], Signal.LOGS)
    assert summary(proc.stdout)[("file", "logs")] == (n, n, 0)


def test_record_captures_the_sdk_exactly_then_replays(tmp_path, port):
    config, _ = write_config(tmp_path, port, 1)
    recording = tmp_path / "recording"
    proc = subprocess.Popen([sys.executable, "-m", "otelflow", "record", "--config", str(config),
                             "--out", str(recording)], env=os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, timeout=20)
        spans, logs = send_with_sdk(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"recorded 20 spans to {recording / 'traces.jsonl'}" in stdout
    assert f"recorded 5 log_records to {recording / 'logs.jsonl'}" in stdout
    # what the receiver got, byte for byte: ids, resource, timestamps
    recorded = {s.span_id: s for _sig, m in read_records(recording / "traces.jsonl")
                for _r, sc in iter_scopes(Signal.TRACES, m) for s in sc.spans}
    sent = {s.span_id: s for _r, sc in iter_scopes(Signal.TRACES, spans) for s in sc.spans}
    assert recorded == sent
    recorded_logs = [r for _s, m in read_records(recording / "logs.jsonl")
                     for _r, sc in iter_scopes(Signal.LOGS, m) for r in sc.log_records]
    assert recorded_logs == [r for _r, sc in iter_scopes(Signal.LOGS, logs) for r in sc.log_records]

    replayed = otelflow("replay", "--config", str(config), str(recording))
    assert replayed.returncode == 0, replayed.stderr
    assert summary(replayed.stdout)[("file", "traces")] == (20, 20, 0)


def send_with_sdk(port: int):
    resource = Resource.create({"service.name": "recorded"})
    memory = InMemorySpanExporter()
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(SimpleSpanProcessor(memory))
    tracing.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    for i in range(20):
        with tracing.get_tracer("rec").start_as_current_span(f"op-{i}", attributes={"i": i}):
            pass
    tracing.shutdown()
    log_memory = InMemoryLogRecordExporter()
    logging = LoggerProvider(resource=resource)
    logging.add_log_record_processor(SimpleLogRecordProcessor(log_memory))
    logging.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    for i in range(5):
        logging.get_logger("rec").emit(severity_number=SeverityNumber.INFO, body=f"line {i}")
    logging.shutdown()
    return encode_spans(memory.get_finished_spans()), encode_logs(log_memory.get_finished_logs())


def test_record_stops_after_duration(tmp_path, port):
    config, _ = write_config(tmp_path, port, 1)
    proc = otelflow("record", "--config", str(config), "--out", str(tmp_path / "rec"),
                    "--duration", "300ms")
    assert proc.returncode == 0, proc.stderr
    assert "recorded 0 spans" in proc.stdout
    bad = otelflow("record", "--config", str(config), "--out", str(tmp_path), "--duration", "soon")
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr
