"""kafka exporter: config, splitting, partitioning and faults against librdkafka's mock cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow import otlp_json
from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.exporters.kafka import KafkaExporterConfig, create_exporter, sarama_partition
from otelflow.pdata import Batch, Signal, count_items
from otelflow.pipeline.exporterhelper import ExporterChain
from otelflow.pipeline.split import split_by_resource, split_by_trace_id, split_wire_by_trace_id
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.configs import yaml_config_errors
from otelflow.testing.kafka_mock import ApiKey, KafkaErrorCode, MockKafkaCluster
from tests.kafka_support import logs, metrics, read_topic, settings, span_ids, traces

pytest_plugins = ["otelflow.testing.kafka_mock"]
TESTDATA = Path(__file__).parent / "testdata"
INVALID = yaml.safe_load((TESTDATA / "kafka_invalid.yaml").read_text())


def exporter_config(brokers: str, **overrides) -> KafkaExporterConfig:
    return KafkaExporterConfig.model_validate({"brokers": brokers, **overrides})


# -- config -----------------------------------------------------------------------------


def test_config_defaults_and_legacy_keys():
    raw, source = load_config([TESTDATA / "kafka_config.yaml"])
    cfg = parse_config(raw, source)
    default = cfg.component(Kind.EXPORTER, "kafka").config
    assert default.brokers == ["localhost:9092"]
    assert default.producer.required_acks == -1  # at-least-once by default
    assert default.producer.max_message_bytes == 1_000_000
    assert default.timeout == 5.0 and default.sending_queue.queue_size == 1000
    assert [default.topic_for(s) for s in Signal] == ["otlp_spans", "otlp_metrics", "otlp_logs"]
    assert default.encoding_for(Signal.LOGS) == "otlp_proto"

    legacy = cfg.component(Kind.EXPORTER, "kafka/legacy").config
    assert legacy.topic_for(Signal.TRACES) == "spans"
    assert legacy.topic_for(Signal.LOGS) == "my_logs"
    assert legacy.encoding_for(Signal.METRICS) == "otlp_json"

    full = cfg.component(Kind.EXPORTER, "kafka/full").config
    assert full.brokers == ["k1:9092", "k2:9092"]
    assert full.producer.compression == "zstd" and full.producer.linger == 0.005
    assert full.encoding_for(Signal.LOGS) == "raw"
    kwargs = full.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config(name):
    case = INVALID[name]
    message = str(ConfigErrors(yaml_config_errors(case["config"])))
    for fragment in case["errors"]:
        assert fragment in message, f"{fragment!r} not in {message}"


# -- splitting --------------------------------------------------------------------------


def test_split_by_trace_id_keeps_resources_and_every_span():
    req = traces(n_traces=7, spans=5, services=3)
    parts = split_by_trace_id(Signal.TRACES, req)
    assert len(parts) == 7
    for tid, part in parts:
        assert {s.trace_id for rs in part.resource_spans for ss in rs.scope_spans
                for s in ss.spans} == {tid}
        for rs in part.resource_spans:
            assert rs.resource.attributes[0].key == "service.name"
            assert rs.schema_url and rs.scope_spans[0].scope.name.startswith("lib-")
    assert sorted(i for _, p in parts for i in span_ids(p)) == sorted(span_ids(req))


def test_split_single_trace_is_not_copied():
    req = traces(n_traces=1, spans=4)
    [(tid, part)] = split_by_trace_id(Signal.TRACES, req)
    assert part is req and tid == req.resource_spans[0].scope_spans[0].spans[0].trace_id


def test_split_by_resource():
    parts = split_by_resource(Signal.METRICS, metrics(resources=3, points=2))
    assert len(parts) == 3 and len({key for key, _ in parts}) == 3
    assert all(count_items(Signal.METRICS, part) == 2 for _, part in parts)


def test_sarama_partitioner_matches_go_fnv1a():
    # FNV-1a("a") = 0xe40c292c: as int32 negative -> |h| % n, like sarama's hash partitioner
    h = 0xE40C292C - (1 << 32)
    assert sarama_partition(b"a", [0, 1, 2, 3, 4, 5], []) == abs(h) % 6
    keys = [f"{i:032x}".encode() for i in range(600)]
    spread = {sarama_partition(k, list(range(6)), []) for k in keys}
    assert spread == set(range(6))


# -- against the mock cluster -----------------------------------------------------------


async def test_partition_traces_by_id(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_spans", 6)
    exporter = create_exporter(settings(Kind.EXPORTER),
                               exporter_config(kafka_cluster.bootstrap_servers,
                                               partition_traces_by_id=True))
    await exporter.start(None)
    sent = [traces(n_traces=20, spans=4, services=2) for _ in range(5)]
    for req in sent:
        await exporter.export(Batch.of(req))
    await exporter.shutdown()
    records = await read_topic(kafka_cluster.bootstrap_servers, "otlp_spans",
                               lambda r: len(r) >= 100)
    partition_of: dict[bytes, set[int]] = {}
    spans = 0
    for rec in records:
        msg = ExportTraceServiceRequest.FromString(rec.value)
        tids = {s.trace_id for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert len(tids) == 1, "a message holds exactly one trace"
        tid = tids.pop()
        assert rec.key == tid.hex().encode(), "the message key is the hex trace id"
        assert rec.partition == sarama_partition(rec.key, list(range(6)), [])
        partition_of.setdefault(tid, set()).add(rec.partition)
        spans += len(span_ids(msg))
    assert len(partition_of) == 100
    assert all(len(p) == 1 for p in partition_of.values()), "a trace spans partitions"
    assert len({p for ps in partition_of.values() for p in ps}) > 1
    assert spans == 100 * 4


async def test_oversize_requests_are_split_not_dropped(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("big", 6)
    cfg = exporter_config(kafka_cluster.bootstrap_servers, traces={"topic": "big"},
                          producer={"max_message_bytes": 5_000})
    exporter = create_exporter(settings(Kind.EXPORTER), cfg)
    req = traces(n_traces=40, spans=10, services=3, attrs=5)
    assert req.ByteSize() > 10 * 5_000
    await exporter.export(Batch.of(req))
    await exporter.shutdown()
    records = await read_topic(kafka_cluster.bootstrap_servers, "big",
                               lambda r: sum(len(span_ids(ExportTraceServiceRequest.FromString(
                                   x.value))) for x in r) >= 400)
    assert len(records) > 10 and all(len(r.value) <= 5_000 for r in records)
    got = [i for r in records for i in span_ids(ExportTraceServiceRequest.FromString(r.value))]
    assert sorted(got) == sorted(span_ids(req))


async def test_single_item_over_limit_is_counted_not_silent(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_logs", 6)
    metrics_ = SelfMetrics()
    cfg = exporter_config(kafka_cluster.bootstrap_servers, producer={"max_message_bytes": 2000})
    exporter = create_exporter(settings(Kind.EXPORTER, metrics=metrics_), cfg)
    req = logs(3, body=lambda i: "x" * (5000 if i == 1 else 10))
    await exporter.export(Batch.of(req))
    await exporter.shutdown()
    dropped = metrics_.registry.get_sample_value(
        "otelflow_dropped_items_total",
        {"component": "kafka", "otel_signal": "logs", "reason": "too_large"})
    assert dropped == 1

    def bodies(records):
        return [lr.body.string_value for r in records
                for rl in ExportLogsServiceRequest.FromString(r.value).resource_logs
                for sl in rl.scope_logs for lr in sl.log_records]

    records = await read_topic(kafka_cluster.bootstrap_servers, "otlp_logs",
                               lambda r: len(bodies(r)) >= 2)
    await asyncio.sleep(0.2)
    got = bodies(records)
    assert sorted(got) == ["x" * 10, "x" * 10]


async def test_encodings_json_and_raw(kafka_cluster: MockKafkaCluster):
    for topic in ("j", "raw"):
        kafka_cluster.create_topic(topic, 6)
    cfg = exporter_config(kafka_cluster.bootstrap_servers,
                          traces={"topic": "j", "encoding": "otlp_json"},
                          logs={"topic": "raw", "encoding": "raw"},
                          partition_logs_by_trace_id=True)
    exporter = create_exporter(settings(Kind.EXPORTER), cfg)
    req = traces(3, 2)
    log_req = logs(4, body=lambda i: b"\x00bin" if i == 0 else f"text {i}")
    await exporter.export(Batch.of(req))
    await exporter.export(Batch.of(log_req))
    await exporter.shutdown()
    [record] = await read_topic(kafka_cluster.bootstrap_servers, "j", lambda r: len(r) >= 1)
    assert otlp_json.loads(Signal.TRACES, record.value) == req
    raw = await read_topic(kafka_cluster.bootstrap_servers, "raw", lambda r: len(r) >= 4)
    bodies = {r.key: r.value for r in raw}
    records = log_req.resource_logs[0].scope_logs[0].log_records
    assert bodies[records[0].trace_id.hex().encode()] == b"\x00bin"
    assert bodies[records[2].trace_id.hex().encode()] == b'"text 2"'  # JSON, as in Go


async def test_topic_from_attribute_and_headers(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("tenant-a", 6)
    cfg = exporter_config(kafka_cluster.bootstrap_servers, topic_from_attribute="tenant",
                          record_headers={"origin": "agent-1"})
    exporter = create_exporter(settings(Kind.EXPORTER), cfg)
    req = traces(2, 2)
    req.resource_spans[0].resource.attributes.add(key="tenant").value.string_value = "tenant-a"
    await exporter.export(Batch.of(req))
    await exporter.shutdown()
    [record] = await read_topic(kafka_cluster.bootstrap_servers, "tenant-a",
                                lambda r: len(r) >= 1)
    assert record.headers == (("origin", b"agent-1"),)


async def test_injected_produce_errors_are_retried(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_spans", 6)
    exporter = create_exporter(settings(Kind.EXPORTER),
                               exporter_config(kafka_cluster.bootstrap_servers))
    await exporter.start(None)
    kafka_cluster.push_request_errors(ApiKey.PRODUCE, [KafkaErrorCode.NOT_ENOUGH_REPLICAS] * 3
                                      + [KafkaErrorCode.NOT_LEADER_FOR_PARTITION] * 2)
    req = traces(10, 3)
    await asyncio.wait_for(exporter.export(Batch.of(req)), 20)
    await exporter.shutdown()
    records = await read_topic(kafka_cluster.bootstrap_servers, "otlp_spans",
                               lambda r: len(r) >= 1)
    got = [i for r in records for i in span_ids(ExportTraceServiceRequest.FromString(r.value))]
    assert sorted(got) == sorted(span_ids(req)), "idempotent producer: no loss, no duplicates"


async def test_broker_down_for_10s_loses_nothing(kafka_cluster: MockKafkaCluster):
    """Batches keep flowing through the queue/retry chain while broker 1 (made the leader of
    every partition, so the outage surely bites) is down for 10 s; once it is back every span
    is in Kafka."""
    kafka_cluster.create_topic("otlp_spans", 6)
    for partition in range(6):
        kafka_cluster.set_partition_leader("otlp_spans", partition, 1)
    cfg = exporter_config(kafka_cluster.bootstrap_servers, partition_traces_by_id=True,
                          timeout="2s", retry_on_failure={"initial_interval": "200ms",
                                                          "max_interval": "1s"})
    metrics_ = SelfMetrics()
    exporter = create_exporter(settings(Kind.EXPORTER, metrics=metrics_), cfg)
    chain = ExporterChain(exporter, cfg, "kafka", metrics_)
    await chain.start(None)
    sent: list[bytes] = []

    async def send(rounds: int) -> None:
        for _ in range(rounds):
            req = traces(n_traces=12, spans=2)
            sent.extend(span_ids(req))
            await chain.consume(Batch.of(req))
            await asyncio.sleep(0.1)

    await send(5)
    kafka_cluster.broker_down(1)
    down_at = time.monotonic()
    await send(20)
    await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
    delivered = metrics_.registry.get_sample_value("otelcol_exporter_sent_spans_total",
                                                   {"exporter": "kafka"}) or 0
    assert delivered < len(sent), "the outage did not hold anything back"
    kafka_cluster.broker_up(1)
    await send(5)
    await chain.shutdown(time.monotonic() + 30)
    failed = metrics_.registry.get_sample_value("otelcol_exporter_send_failed_spans_total",
                                                {"exporter": "kafka"})
    dropped = {s.labels["reason"]: s.value for m in metrics_.registry.collect()
               if m.name == "otelflow_dropped_items" for s in m.samples
               if s.name.endswith("_total")}
    assert not failed, f"{failed} spans failed; dropped by reason: {dropped}"
    want = set(sent)
    records = await read_topic(
        kafka_cluster.bootstrap_servers, "otlp_spans",
        lambda r: want <= {i for x in r
                           for i in span_ids(ExportTraceServiceRequest.FromString(x.value))},
        timeout=30)
    assert len(sent) == 30 * 24 and records


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS])
def test_wire_split_matches_message_split(signal):
    req = traces(n_traces=25, spans=3, services=3) if signal is Signal.TRACES else logs(40)
    wire = {tid: signal.request_type.FromString(raw)
            for tid, raw in split_wire_by_trace_id(signal, req.SerializeToString())}
    message = dict(split_by_trace_id(signal, req))
    assert wire.keys() == message.keys()
    for tid, part in wire.items():
        # equal up to empty resource/scope messages, which the message split sets
        for a, b in zip(getattr(part, signal.resource_field),
                        getattr(message[tid], signal.resource_field), strict=True):
            assert a.resource.attributes == b.resource.attributes
            assert a.schema_url == b.schema_url
            for x, y in zip(getattr(a, signal.scope_field), getattr(b, signal.scope_field),
                            strict=True):
                assert (x.scope.name, x.schema_url) == (y.scope.name, y.schema_url)
                assert getattr(x, signal.item_field) == getattr(y, signal.item_field)
    single = traces(1, 5).SerializeToString()
    assert split_wire_by_trace_id(Signal.TRACES, single)[0][1] is single


@pytest.mark.parametrize(("body", "protocol"), [
    ({}, "PLAINTEXT"),
    ({"tls": None}, "SSL"),  # `tls:` with no settings enables TLS, as in Go
    ({"tls": {"insecure": True}}, "PLAINTEXT"),
    ({"auth": {"plain_text": {"username": "u", "password": "p"}}}, "SASL_PLAINTEXT"),
    ({"auth": {"tls": {"insecure_skip_verify": True},
               "sasl": {"username": "u", "password": "p", "mechanism": "SCRAM-SHA-256"}}},
     "SASL_SSL"),
])
def test_security_settings_map_to_aiokafka(body, protocol):
    kwargs = KafkaExporterConfig.model_validate(body).client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert ("ssl_context" in kwargs) == protocol.endswith("SSL")
