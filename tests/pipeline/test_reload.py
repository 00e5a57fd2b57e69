"""Config reload: drift settings apply in place (new baseline, empty alert history); other
changes drain the running service and start the new one; SIGHUP and --watch trigger it."""

from __future__ import annotations

import signal
import time

import grpc
import numpy as np

from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.fileformat import read_records
from otelflow.pdata import Batch
from otelflow.pipeline.service import Service
from otelflow.testing import MemorySink, build
from otelflow.testing.process import CollectorProcess, free_port

DRIFT = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  drift:
    window: 50
    warmup: 100
    consecutive: 1
    psi_threshold: null
    zscore_threshold: {threshold}
    features:
      - name: loss
        metric: {{name: train.loss}}
exporters:
  debug: {{verbosity: {verbosity}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [drift], exporters: [debug]}}
"""


def config(threshold: float = 4, verbosity: str = "basic"):
    return parse_config(*load_config(text=DRIFT.format(threshold=threshold, verbosity=verbosity)))


async def feed(service: Service, values) -> None:
    entry = service.pipeline_entries["metrics"]
    for value in values:
        await entry.consume(Batch.of(build.metrics(build.gauge("train.loss", float(value)))))


async def test_drift_settings_reload_in_place_and_reset_alerts():
    service = Service(config(), exporter_overrides={"debug": MemorySink()})
    await service.start()
    try:
        rng = np.random.default_rng(7)
        await feed(service, rng.normal(1.0, 0.05, 150))
        await feed(service, rng.normal(2.0, 0.05, 50))
        assert service.alerts(), "a 20-sigma shift must alert"
        drift = service.processors["metrics"][0]
        assert await service.reload(config(threshold=5)) is True
        assert service.alerts() == []
        assert service.processors["metrics"][0] is drift  # same object, new settings
        await feed(service, rng.normal(2.0, 0.05, 200))  # the new baseline is the new level
        assert service.alerts() == []
        assert await service.reload(config(threshold=5, verbosity="detailed")) is False
    finally:
        await service.shutdown()


def send_span(port: int, name: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        call(build.traces(build.span(name)).SerializeToString(), timeout=10)


def span_names(path) -> list[str]:
    if not path.exists():
        return []
    return [s.name for _sig, m in read_records(path) for rs in m.resource_spans
            for ss in rs.scope_spans for s in ss.spans if s.name != "probe"]


def file_config(port: int, out) -> str:
    return f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}}}
processors: {{batch: {{timeout: 10s}}}}
exporters: {{file: {{path: "{out}", flush_interval: 0s}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}}}
"""


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sighup_rebuilds_without_dropping_batched_data(tmp_path):
    port = free_port()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    with CollectorProcess(file_config(port, first), wait_port=port) as proc:
        send_span(port, "before-reload")  # held by the 10s batch timeout
        proc.config_path.write_text(file_config(port, second))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: span_names(first) == ["before-reload"])  # drained, not dropped
        wait_for(lambda: _accepts(port))
        send_span(port, "after-reload")
        assert proc.stop() == 0, proc.logs()
        assert "reloading" in proc.logs()
    assert span_names(second) == ["after-reload"]


def test_watch_reloads_when_the_file_changes_and_rejects_a_bad_one(tmp_path):
    port = free_port()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    with CollectorProcess(file_config(port, first), wait_port=port, args=("--watch",)) as proc:
        proc.config_path.write_text("receivers: {otlp: {}\n")  # broken YAML: keep running
        wait_for(lambda: "reload refused" in proc.logs())
        send_span(port, "still-served")
        proc.config_path.write_text(file_config(port, second))
        wait_for(lambda: span_names(first) == ["still-served"])
        wait_for(lambda: _accepts(port))
        send_span(port, "after-watch")
        assert proc.stop() == 0, proc.logs()
    assert span_names(second) == ["after-watch"]


def _accepts(port: int) -> bool:
    try:
        send_span(port, "probe")
    except grpc.RpcError:
        return False
    return True
