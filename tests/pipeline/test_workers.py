"""`service.workers: 2` end to end: a supervisor and two worker processes sharing the OTLP
port (SO_REUSEPORT), fed by the real OpenTelemetry SDK over many separate connections, export
to a fake OTLP backend. Tail sampling must see whole traces although a trace's spans arrive
over connections that land on different workers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from otelflow.pipeline.workers import RESTART_LIMIT, merge_expositions
from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port

CONNECTIONS = 12  # SDK exporters, each on its own TCP connection
TAIL = """
processors:
  tail_sampling:
    decision_wait: {wait}
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: none, type: probabilistic, probabilistic: {{sampling_percentage: 0}}}}
"""


def collector_yaml(port: int, metrics: int, backend: int, processors: str = "",
                   wait: str = "1s", http: int = 0) -> str:
    chain = "[tail_sampling]" if processors else "[]"
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{port}}}
      {f"http: {{endpoint: 127.0.0.1:{http}}}" if http else ""}
{TAIL.format(wait=wait) if processors else ""}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms}}
service:
  workers: 2
  shutdown_timeout: 10s
  telemetry: {{metrics: {{address: 127.0.0.1:{metrics}}}, logs: {{level: warn}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: {chain}, exporters: [otlp]}}
"""


@pytest.fixture
def backend():
    with FakeBackend() as fake:
        yield fake


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def collector_on(yaml: str, metrics_port: int) -> CollectorProcess:
    """Started by `with` (or `.start()`): ready once the supervisor's /metrics listens, which
    it does when every worker is ready."""
    return CollectorProcess(yaml, wait_port=metrics_port)


def providers(port: int) -> list[TracerProvider]:
    out = []
    for i in range(CONNECTIONS):
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                                    channel_options=(("grpc.use_local_subchannel_pool", 1),))
        provider = TracerProvider(resource=Resource.create({"service.name": f"client-{i}"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        out.append(provider)
    return out


def send_traces(port: int, traces: int, error_every: int = 0) -> dict[int, tuple[bool, set[int]]]:
    """Traces of 4 spans, each span from another connection. trace id -> (error?, span ids)."""
    tps = providers(port)
    sent: dict[int, tuple[bool, set[int]]] = {}
    try:
        for t in range(traces):
            error = bool(error_every) and t % error_every == 0
            ids: set[int] = set()
            with tps[t % CONNECTIONS].get_tracer("w").start_as_current_span(f"root-{t}") as root:
                for j in range(3):
                    tracer = tps[(t + 1 + j * 5) % CONNECTIONS].get_tracer("w")
                    with tracer.start_as_current_span(f"child-{j}") as child:
                        if error and j == 2:
                            child.set_status(Status(StatusCode.ERROR, "boom"))
                        ids.add(child.get_span_context().span_id)
                ids.add(root.get_span_context().span_id)
            sent[root.get_span_context().trace_id] = (error, ids)
    finally:
        for tp in tps:
            tp.shutdown()
    return sent


def received(backend: FakeBackend) -> dict[int, list[int]]:
    """trace id -> span ids the backend accepted (duplicates kept)."""
    out: dict[int, list[int]] = {}
    for batch in backend.accepted:
        for rs in batch.message.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.setdefault(int.from_bytes(span.trace_id, "big"), []).append(
                        int.from_bytes(span.span_id, "big"))
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def total(text: str, sample: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == sample and all(s.labels.get(k, "").startswith(v)
                                           for k, v in labels.items()))


def worker_metric_ports(collector: CollectorProcess, *otlp_ports: int) -> list[int]:
    """The workers' internal /metrics ports (their only other TCP listeners)."""
    assert collector.proc is not None
    return [c.laddr.port for child in psutil.Process(collector.proc.pid).children()
            for c in child.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port not in otlp_ports]


def all_workers_serve(collector: CollectorProcess, otlp_port: int, family: str) -> bool:
    """Both workers' own /metrics show `family` (False while one is reloading)."""
    ports = worker_metric_ports(collector, otlp_port)
    try:
        return len(ports) == 2 and all(family in scrape(p) for p in ports)
    except OSError:
        return False


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def post_spans(http_port: int, n: int) -> dict[int, tuple[bool, set[int]]]:
    """`n` one-span traces over OTLP/HTTP, a new connection each."""
    sent = {}
    for i in range(n):
        req = ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add()
        trace_id, span_id = 0xABC0000 + i, 0xDEF000 + i
        span.trace_id, span.span_id = trace_id.to_bytes(16, "big"), span_id.to_bytes(8, "big")
        span.name = f"http-{i}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/traces", data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        sent[trace_id] = (False, {span_id})
    return sent


def test_every_span_arrives_once_and_metrics_sum_the_workers(backend, ports):
    port, metrics = ports
    http = free_port()
    with collector_on(collector_yaml(port, metrics, backend.port, http=http),
                      metrics) as collector:
        sent = send_traces(port, 60) | post_spans(http, 10)
        n = sum(len(ids) for _e, ids in sent.values())
        backend.wait_for_items(n, timeout=10)
        per_worker = [total(scrape(p), "otelcol_receiver_accepted_spans_total", receiver="otlp")
                      for p in worker_metric_ports(collector, port, http)]
        summed = total(scrape(metrics), "otelcol_receiver_accepted_spans_total", receiver="otlp")
    got = received(backend)
    assert {t: sorted(ids) for t, ids in got.items()} == {
        t: sorted(ids) for t, (_e, ids) in sent.items()}
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker), per_worker  # SO_REUSEPORT
    assert summed == sum(per_worker) == n
    assert collector.returncode == 0, collector.logs()


def test_tail_sampling_keeps_whole_error_traces_across_workers(backend, ports):
    port, metrics = ports
    with collector_on(collector_yaml(port, metrics, backend.port, "tail"), metrics) as collector:
        sent = send_traces(port, 48, error_every=3)
        errors = {t: ids for t, (error, ids) in sent.items() if error}
        backend.wait_for_items(sum(len(ids) for ids in errors.values()), timeout=10)
        time.sleep(1.5)  # a decision_wait more: nothing else may arrive
        text = scrape(metrics)
    got = received(backend)
    assert {t: sorted(ids) for t, ids in got.items()} == {
        t: sorted(ids) for t, ids in errors.items()}
    assert total(text, "otelcol_exporter_sent_spans_total", exporter="otlp/forward-worker") > 0
    assert total(text, "otelcol_receiver_accepted_spans_total", receiver="otlp") == sum(
        len(ids) for _e, ids in sent.values())
    assert collector.returncode == 0, collector.logs()


def test_sigterm_drains_forwarded_spans_and_flushes_pending_traces(backend, ports):
    port, metrics = ports
    collector = collector_on(collector_yaml(port, metrics, backend.port, "tail", wait="60s"),
                             metrics).start()
    try:
        sent = send_traces(port, 30, error_every=2)
        assert backend.items() == 0  # undecided: decision_wait is 60s
    finally:
        code = collector.stop(timeout=20)
    errors = {t: sorted(ids) for t, (error, ids) in sent.items() if error}
    assert {t: sorted(ids) for t, ids in received(backend).items()} == errors
    assert code == 0, collector.logs()


def test_workers_die_with_the_supervisor(backend, ports):
    port, metrics = ports
    collector = collector_on(collector_yaml(port, metrics, backend.port), metrics).start()
    try:
        assert collector.proc is not None
        children = psutil.Process(collector.proc.pid).children()
        assert len(children) == 2
        collector.proc.kill()
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive
    finally:
        collector.stop()


def test_a_killed_worker_is_started_again(backend, ports):
    port, metrics = ports
    with collector_on(collector_yaml(port, metrics, backend.port), metrics) as collector:
        assert collector.proc is not None
        supervisor = psutil.Process(collector.proc.pid)
        first = {child.pid for child in supervisor.children()}
        victim = psutil.Process(max(first))
        victim.kill()
        victim.wait(timeout=10)
        wait_until(lambda: all_workers_serve(collector, port, "otelcol_process_uptime"),
                   timeout=20)
        now = {child.pid for child in supervisor.children()}
        sent = send_traces(port, 30)
        backend.wait_for_items(sum(len(ids) for _e, ids in sent.values()), timeout=10)
        assert collector.proc.poll() is None, collector.logs()
        logs = collector.logs()
    assert "worker exited; starting it again" in logs
    assert len(now) == 2 and victim.pid not in now and now - first, (first, now)
    assert {t: sorted(ids) for t, ids in received(backend).items()} == {
        t: sorted(ids) for t, (_e, ids) in sent.items()}


def test_a_worker_that_keeps_exiting_stops_the_collector(backend, ports):
    port, metrics = ports
    collector = collector_on(collector_yaml(port, metrics, backend.port), metrics).start()
    try:
        assert collector.proc is not None
        supervisor = psutil.Process(collector.proc.pid)
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while collector.proc.poll() is None and time.monotonic() < deadline:
            for child in supervisor.children():  # kill whichever worker 1 is now
                if child.pid != min(c.pid for c in supervisor.children()) and \
                        child.pid not in killed:
                    killed.add(child.pid)
                    child.kill()
            time.sleep(0.05)
        assert collector.proc.wait(timeout=30) == 1
    finally:
        collector.stop()
    assert len(killed) == RESTART_LIMIT + 1, killed
    assert "worker keeps exiting; stopping the others" in collector.logs()


def test_a_worker_failing_to_start_fails_the_collector(backend, ports, tmp_path):
    port, metrics = ports
    config = tmp_path / "c.yaml"
    config.write_text(collector_yaml(port, metrics, backend.port))
    with socket.create_server(("127.0.0.1", port)):  # no SO_REUSEPORT: the port is taken
        proc = subprocess.run(
            [sys.executable, "-m", "otelflow", "run", "--config", str(config)],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "worker 0 failed to start" in proc.stderr or "worker 1 failed to start" in proc.stderr


@pytest.mark.parametrize(("yaml_workers", "flag", "message"), [
    ("0", (), "greater than or equal to 1"),
    ("2", ("--workers", "0"), "greater than or equal to 1"),
    ("two", (), "integer"),
])
def test_bad_workers_is_a_config_error(tmp_path, yaml_workers, flag, message):
    config = tmp_path / "c.yaml"
    config.write_text(collector_yaml(free_port(), free_port(), free_port()).replace(
        "workers: 2", f"workers: {yaml_workers}"))
    proc = subprocess.run([sys.executable, "-m", "otelflow", "run", "--config", str(config),
                           *flag], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "service.workers" in proc.stderr and message in proc.stderr, proc.stderr


def test_unshareable_components_are_refused_with_workers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(collector_yaml(free_port(), free_port(), free_port()).replace(
        "exporters:\n  otlp:", f"exporters:\n  file: {{path: {tmp_path}/out.json}}\n  otlp:")
        .replace("exporters: [otlp]", "exporters: [otlp, file]"))
    proc = subprocess.run([sys.executable, "-m", "otelflow", "validate", "--config",
                           str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "exporters.file" in proc.stderr and "cannot be shared" in proc.stderr, proc.stderr


def test_sighup_is_forwarded_to_the_workers(backend, ports):
    """Reload from passthrough to tail sampling: both workers rebuild, routing included."""
    port, metrics = ports
    collector = collector_on(collector_yaml(port, metrics, backend.port), metrics).start()
    try:
        collector.config_path.write_text(collector_yaml(port, metrics, backend.port, "tail"))
        assert collector.proc is not None
        collector.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: all_workers_serve(collector, port, "tail_sampling"))
        sent = send_traces(port, 20, error_every=4)
        errors = {t: sorted(ids) for t, (error, ids) in sent.items() if error}
        backend.wait_for_items(sum(len(ids) for ids in errors.values()), timeout=10)
        time.sleep(1.5)
    finally:
        code = collector.stop()
    assert {t: sorted(ids) for t, ids in received(backend).items()} == errors
    assert code == 0, collector.logs()


def test_merged_exposition_sums_identical_series():
    worker = """# HELP otelcol_receiver_accepted_spans Spans accepted.
# TYPE otelcol_receiver_accepted_spans counter
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} %s
otelcol_receiver_accepted_spans_created{receiver="otlp",transport="grpc"} %s
# HELP otelcol_process_uptime Uptime.
# TYPE otelcol_process_uptime counter
otelcol_process_uptime_total %s
# HELP otelcol_exporter_queue_size Queue size.
# TYPE otelcol_exporter_queue_size gauge
otelcol_exporter_queue_size{exporter="otlp/forward-worker%s-traces"} 3.0
"""
    merged = merge_expositions([worker % (10, 100.0, 5.0, 1), worker % (32, 90.0, 7.0, 0)])
    assert total(merged, "otelcol_receiver_accepted_spans_total", receiver="otlp") == 42
    assert total(merged, "otelcol_receiver_accepted_spans_created") == 90.0
    assert total(merged, "otelcol_process_uptime_total") == 7.0
    queues = [s for f in text_string_to_metric_families(merged) for s in f.samples
              if s.name == "otelcol_exporter_queue_size"]
    assert sorted(s.labels["exporter"] for s in queues) == [
        "otlp/forward-worker0-traces", "otlp/forward-worker1-traces"]
    assert "# TYPE otelcol_receiver_accepted_spans counter" in merged
