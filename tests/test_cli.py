"""`otelflow run | validate | components` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from otelflow.testing.process import CollectorProcess, free_port, wait_for_port

OTELFLOW = [sys.executable, "-m", "otelflow"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*OTELFLOW, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_default_config_starts_fast_and_exits_zero_on_sigterm():
    grpc_port, metrics_port, http_port, health_port = (free_port() for _ in range(4))
    env = {"OTELFLOW_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
           "OTELFLOW_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
           "OTELFLOW_HEALTH_ENDPOINT": f"127.0.0.1:{health_port}",
           "OTELFLOW_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    started = time.monotonic()
    proc = subprocess.Popen([*OTELFLOW, "run"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(grpc_port, timeout=10)
        elapsed = time.monotonic() - started
        wait_for_port(metrics_port, timeout=2)
        wait_for_port(http_port, timeout=2)
        ready = urllib.request.urlopen(f"http://127.0.0.1:{health_port}/ready", timeout=5)
        assert ready.status == 200
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    finally:
        proc.kill()
    assert elapsed < 2.0, f"took {elapsed:.2f}s to listen"
    assert proc.returncode == 0, output
    assert "everything is ready" in output and "shutting down" in output


def test_validate_ok_and_bad(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("receivers: {otlp: {}}\nexporters: {debug: {}}\n"
                    "service: {pipelines: {logs: {receivers: [otlp], exporters: [debug]}}}\n")
    result = run_cli("validate", "--config", str(good))
    assert result.returncode == 0
    assert "configuration is valid (1 pipelines)" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: {otlp: {}}\nexporters: {debug: {verbosity: chatty}}\n"
                   "service: {pipelines: {logs: {receivers: [otlp], exporters: [debug]}}}\n")
    result = run_cli("validate", "--config", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"otelflow: invalid configuration: {bad}: exporters.debug.verbosity: invalid value "
        "'chatty'; valid choices: 'basic', 'normal' or 'detailed'"]


def test_run_with_bad_config_exits_one_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: {otlp: {}}\nservice: {pipelines: {traces: {receivers: [otlp]}}}\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 1
    assert "a pipeline needs at least one exporter" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_port_in_use_fails_clearly(tmp_path):
    port = free_port()
    config = (f"receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:{port}'}}}}}}}}\n"
              "exporters: {debug: {}}\n"
              "service:\n  telemetry: {metrics: {level: none}}\n"
              "  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}\n")
    with CollectorProcess(config, wait_port=port):
        path = tmp_path / "c.yaml"
        path.write_text(config)
        result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_components_lists_types_with_signals():
    result = run_cli("components")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "receivers:" in lines and "exporters:" in lines
    otlp = next(line for line in lines if line.strip().startswith("otlp ") and "gRPC" in line)
    assert "logs,metrics,traces" in otlp
    assert any(line.strip().startswith("batch ") for line in lines)
