"""End to end through Kafka (librdkafka's mock cluster), collectors as subprocesses (gateways
get `subprocess_env`, which orders SyncGroup requests the way the mock needs):

the OTel SDK -> agent (otlp -> batch -> kafka exporter) -> mock cluster -> gateway
(kafka receiver -> file exporter), for every signal and both OTLP encodings, item for item;
and the gateway killed mid-stream and restarted with `message_marking.after`: every message
is delivered at least once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow.fileformat import read_records
from otelflow.pdata import Signal, iter_scopes, metric_points
from otelflow.testing.kafka_mock import MockKafkaCluster, subprocess_env
from otelflow.testing.output import item_bytes, read_output
from otelflow.testing.process import CollectorProcess, free_port

RESOURCE = Resource.create({"service.name": "kafka-e2e", "host.id": 7})
FAST_GROUP = """
    session_timeout: 3s
    heartbeat_interval: 500ms
    autocommit: {interval: 200ms}"""


def agent_yaml(port: int, brokers: str, encoding: str, prefix: str) -> str:
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{port}}}}}}}
processors:
  batch: {{send_batch_size: 500, timeout: 100ms}}
exporters:
  kafka:
    brokers: {brokers}
    encoding: {encoding}
    partition_traces_by_id: true
    traces: {{topic: {prefix}spans}}
    metrics: {{topic: {prefix}metrics}}
    logs: {{topic: {prefix}logs}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [kafka]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [kafka]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [kafka]}}
"""


def gateway_yaml(brokers: str, encoding: str, prefix: str, out: Path, group: str,
                 extra: str = "") -> str:
    return f"""
receivers:
  kafka:
    brokers: {brokers}
    encoding: {encoding}
    group_id: {group}
    initial_offset: earliest
    traces: {{topic: {prefix}spans}}
    metrics: {{topic: {prefix}metrics}}
    logs: {{topic: {prefix}logs}}{FAST_GROUP}{extra}
exporters:
  file: {{path: {out}, flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [kafka], exporters: [file]}}
    metrics: {{receivers: [kafka], exporters: [file]}}
    logs: {{receivers: [kafka], exporters: [file]}}
"""


def assignments(proc: CollectorProcess) -> list[list[str]]:
    """Every 'partitions assigned' list the collector logged (JSON logs), oldest first."""
    out = []
    for line in proc.logs().splitlines():
        if '"partitions assigned"' in line:
            out.append(json.loads(line)["partitions"])
    return out


def wait_assigned(proc: CollectorProcess, partitions: int, timeout: float = 20.0) -> None:
    """Until the collector's last assignment holds `partitions` partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = assignments(proc)
        if found and len(found[-1]) == partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no assignment of {partitions} partitions:\n{proc.logs()[-3000:]}")


@pytest.fixture(scope="module")
def cluster():
    with MockKafkaCluster(brokers=3) as c:
        for prefix in ("otlp_proto-", "otlp_json-", "replay-"):
            for kind in ("spans", "metrics", "logs"):
                c.create_topic(prefix + kind, 6)
        yield c


@pytest.fixture(scope="module", params=["otlp_proto", "otlp_json"])
def chain(request, cluster, tmp_path_factory):
    encoding, port = request.param, free_port()
    prefix = f"{encoding}-"
    out = tmp_path_factory.mktemp(encoding) / "out.jsonl"
    brokers = cluster.bootstrap_servers
    env = subprocess_env(tmp_path_factory.mktemp("env"))
    with CollectorProcess(gateway_yaml(brokers, encoding, prefix, out, f"gw-{encoding}"),
                          env=env) as gw, \
            CollectorProcess(agent_yaml(port, brokers, encoding, prefix), wait_port=port) as agent:
        wait_assigned(gw, 18)
        yield port, out
        assert agent.stop() == 0, agent.logs()
        assert gw.stop() == 0, gw.logs()


def test_traces_round_trip(chain):
    port, out = chain
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True), max_export_batch_size=200))
    tracer = provider.get_tracer("e2e", "1.0")
    for i in range(300):
        with tracer.start_as_current_span(f"op-{i % 5}", attributes={"i": i, "r": i / 7}) as s:
            s.add_event("step", {"n": i})
            with tracer.start_as_current_span("child", attributes={"tags": ["a", "b"]}):
                pass
    provider.shutdown()
    sent = encode_spans(memory.get_finished_spans())
    expected = {s.span_id: (r.resource, sc.scope, s)
                for r, sc in iter_scopes(Signal.TRACES, sent) for s in sc.spans}
    got = {s.span_id: (r.resource, sc.scope, s) for msg in read_output(out, Signal.TRACES, 600)
           for r, sc in iter_scopes(Signal.TRACES, msg) for s in sc.spans}
    assert len(expected) == 600
    assert got == expected


def test_metrics_round_trip(chain):
    port, out = chain
    memory = InMemoryMetricReader()
    exporting = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
        export_interval_millis=60_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[memory, exporting])
    meter = provider.get_meter("e2e")
    counter, histogram = meter.create_counter("requests"), meter.create_histogram("latency")
    for i in range(40):
        counter.add(i, {"route": f"/r{i % 4}"})
        histogram.record(i * 2.5, {"route": f"/r{i % 4}"})
    expected = _points(_as_proto(memory))
    provider.shutdown()
    got = [p for msg in read_output(out, Signal.METRICS, len(expected)) for p in _points(msg)]
    assert len(expected) == 8
    assert sorted(got) == sorted(expected)


def _as_proto(reader: InMemoryMetricReader):
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics

    return encode_metrics(reader.get_metrics_data())


def _points(message) -> list[tuple]:
    """Each data point with its metric name, resource and scope, timestamps cleared (each SDK
    reader has its own start time and collects at its own instant)."""
    out = []
    for resource, scope in iter_scopes(Signal.METRICS, message):
        for metric in scope.metrics:
            for point in metric_points(metric):
                point = type(point).FromString(point.SerializeToString())
                point.time_unix_nano = point.start_time_unix_nano = 0
                out.append((metric.name, str(point), str(resource.resource), str(scope.scope)))
    return out


def test_logs_round_trip(chain):
    port, out = chain
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    logger = provider.get_logger("e2e")
    for i in range(200):
        logger.emit(severity_number=SeverityNumber.INFO, body=f"line {i}", attributes={"n": i})
    provider.shutdown()
    sent = encode_logs(memory.get_finished_logs())
    expected = item_bytes(Signal.LOGS, [sent])
    got = item_bytes(Signal.LOGS, read_output(out, Signal.LOGS, 200))
    assert len(expected) == 200
    assert got == expected


# -- fault: the gateway process is killed mid-stream ------------------------------------


def produce_in_thread(brokers: str, topic: str, count: int, seconds: float) -> tuple:
    """Send `count` one-span trace requests over about `seconds` from a background thread;
    returns (thread, span ids sent)."""
    import asyncio
    import os
    import threading

    from aiokafka import AIOKafkaProducer
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    span_ids = [os.urandom(8) for _ in range(count)]

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all")
        await producer.start()
        try:
            for i, sid in enumerate(span_ids):
                req = ExportTraceServiceRequest()
                req.resource_spans.add().scope_spans.add().spans.add(
                    trace_id=os.urandom(16), span_id=sid, name=f"msg-{i}")
                await producer.send(topic, req.SerializeToString())
                if i % 50 == 0:
                    await asyncio.sleep(seconds * 50 / count)
            await producer.flush()
        finally:
            await producer.stop()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread, span_ids


def span_ids_in(*paths: Path) -> list[bytes]:
    out = []
    for path in paths:
        for msg in read_output(path, Signal.TRACES, 0, timeout=0):
            out += [s.span_id for _r, sc in iter_scopes(Signal.TRACES, msg) for s in sc.spans]
    return out


def test_gateway_killed_mid_stream_loses_nothing(cluster, tmp_path):
    """With message_marking.after the offset is committed only once the pipeline took the
    message: SIGKILL the gateway halfway, start it again, every message arrives (at least
    once)."""
    brokers, prefix = cluster.bootstrap_servers, "replay-"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    marking = "\n    message_marking: {after: true}"
    env = subprocess_env(tmp_path)
    gateway = CollectorProcess(gateway_yaml(brokers, "otlp_proto", prefix, first, "replay",
                                            marking), env=env).start()
    try:
        wait_assigned(gateway, 18)
        thread, sent = produce_in_thread(brokers, f"{prefix}spans", 3000, seconds=3.0)
        deadline = time.monotonic() + 20
        while len(span_ids_in(first)) < 800 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.kill()
    finally:
        gateway.stop()
    before = set(span_ids_in(first))
    assert 0 < len(before) < len(sent), "the kill did not land mid-stream"
    with CollectorProcess(gateway_yaml(brokers, "otlp_proto", prefix, second, "replay",
                                       marking), env=env) as restarted:
        thread.join(30)
        deadline = time.monotonic() + 30
        while not set(sent) <= before | set(span_ids_in(second)):
            assert time.monotonic() < deadline, restarted.logs()[-3000:]
            time.sleep(0.2)
        assert restarted.stop() == 0
    assert set(sent) <= before | set(span_ids_in(second))


# -- scale-out: an agent and two gateways in one consumer group ---------------------------


def stop_together(*procs: CollectorProcess) -> None:
    """SIGTERM several collectors at once (members leaving a group one by one rebalance)."""
    import threading

    threads = [threading.Thread(target=p.stop) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def scale_gateway_yaml(brokers: str, out: Path) -> str:
    return f"""
receivers:
  kafka:
    brokers: {brokers}
    group_id: gateways
    initial_offset: earliest
    traces: {{topic: scale-spans}}{FAST_GROUP}
    message_marking: {{after: true}}
processors:
  tail_sampling:
    decision_wait: 2s
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
exporters:
  file: {{path: {out}, format: proto, flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [kafka], processors: [tail_sampling], exporters: [file]}}
"""


def send_5000_traces(port: int) -> tuple[set[bytes], set[bytes]]:
    """5,000 traces of 2 spans, every 10th with an error child; (trace ids, error trace ids)."""
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
        max_queue_size=20_000, max_export_batch_size=1000, schedule_delay_millis=100))
    tracer = provider.get_tracer("scale")
    traces, errors = set(), set()
    for i in range(5000):
        root = tracer.start_span("checkout")
        child = tracer.start_span("pay", context=set_span_in_context(root))
        if i % 10 == 0:
            child.set_status(Status(StatusCode.ERROR, "declined"))
        child.end()
        root.end()
        tid = root.get_span_context().trace_id.to_bytes(16, "big")
        traces.add(tid)
        if i % 10 == 0:
            errors.add(tid)
    provider.shutdown()
    return traces, errors


def spans_by_trace(path: Path) -> dict[bytes, list[bytes]]:
    """trace id -> span ids in a proto-format file exporter output."""
    out: dict[bytes, list[bytes]] = {}
    messages: list = []
    for _ in range(50):
        try:
            messages = [m for _s, m in read_records(path, "proto", Signal.TRACES)] \
                if path.exists() else []
            break
        except ValueError:  # a record being written: read again
            time.sleep(0.05)
    for msg in messages:
        for _r, sc in iter_scopes(Signal.TRACES, msg):
            for s in sc.spans:
                out.setdefault(s.trace_id, []).append(s.span_id)
    return out


def test_scale_out_each_trace_on_exactly_one_gateway(cluster, tmp_path):
    """agent (partition_traces_by_id) -> 6 partitions -> two gateways in one group, each
    tail sampling (keep errors): no trace reaches both gateways, every error trace is kept
    exactly once and complete, nothing else is kept."""
    cluster.create_topic("scale-spans", 6)
    brokers, port = cluster.bootstrap_servers, free_port()
    outs = [tmp_path / "gw1.jsonl", tmp_path / "gw2.jsonl"]
    agent = agent_yaml(port, brokers, "otlp_proto", "scale-")
    env = subprocess_env(tmp_path)
    with CollectorProcess(scale_gateway_yaml(brokers, outs[0]), env=env) as g1, \
            CollectorProcess(scale_gateway_yaml(brokers, outs[1]), env=env) as g2, \
            CollectorProcess(agent, wait_port=port):
        deadline = time.monotonic() + 30
        while True:  # a settled group: both members hold a disjoint share of the 6
            a, b = (set((assignments(g) or [[]])[-1]) for g in (g1, g2))
            if a and b and not a & b and len(a | b) == 6:
                break
            assert time.monotonic() < deadline, g1.logs()[-2000:] + g2.logs()[-2000:]
            time.sleep(0.1)
        traces, errors = send_5000_traces(port)
        deadline = time.monotonic() + 40
        while True:
            seen = [spans_by_trace(o) for o in outs]
            if errors <= set(seen[0]) | set(seen[1]) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        time.sleep(2.5)  # a late duplicate or a wrongly kept trace would be decided by now
        seen = [spans_by_trace(o) for o in outs]
        stop_together(g1, g2)
    assert seen[0] and seen[1], "one gateway got nothing"
    assert not set(seen[0]) & set(seen[1]), "a trace was decided by both gateways"
    kept = {**seen[0], **seen[1]}
    assert len(errors) == 500 and len(traces) == 5000
    for tid in errors:
        assert tid in kept, "an error trace was lost"
        assert len(kept[tid]) == 2 == len(set(kept[tid])), "a trace is incomplete or doubled"
    assert set(kept) == errors, "tail sampling kept traces without errors"
