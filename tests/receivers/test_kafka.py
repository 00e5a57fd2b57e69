"""kafka receiver: config, round trip, poison messages, at-least-once marking and rebalances
against librdkafka's mock cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition

from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.exporters.kafka import KafkaExporterConfig, create_exporter
from otelflow.pdata import Batch, Signal
from otelflow.receivers.kafka import KafkaReceiverConfig, create_receiver
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.configs import yaml_config_errors
from otelflow.testing.kafka_mock import MockKafkaCluster
from tests.kafka_support import capture, logs, metrics, settings, span_ids, traces

pytest_plugins = ["otelflow.testing.kafka_mock"]
TESTDATA = Path(__file__).parent / "testdata"
INVALID = yaml.safe_load((TESTDATA / "kafka_invalid.yaml").read_text())
FAST_GROUP = {"session_timeout": "3s", "heartbeat_interval": "300ms",
              "autocommit": {"interval": "100ms"}}


def receiver_config(brokers: str, **overrides) -> KafkaReceiverConfig:
    return KafkaReceiverConfig.model_validate({"brokers": brokers, "initial_offset": "earliest",
                                               **FAST_GROUP, **overrides})


async def produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


# -- config -----------------------------------------------------------------------------


def test_config_defaults_and_keys():
    cfg = KafkaReceiverConfig()
    assert cfg.group_id == "otel-collector" and cfg.client_id == "otel-collector"
    assert cfg.initial_offset == "latest" and cfg.autocommit.enable
    assert not cfg.message_marking.after and not cfg.message_marking.on_error
    assert [cfg.topics_for(s) for s in Signal] == [["otlp_spans"], ["otlp_metrics"],
                                                   ["otlp_logs"]]
    legacy = KafkaReceiverConfig.model_validate({"topic": "all", "encoding": "otlp_json",
                                                 "logs": {"topics": ["a", "b"],
                                                          "encoding": "text_latin-1"}})
    assert legacy.topics_for(Signal.TRACES) == ["all"]
    assert legacy.topics_for(Signal.LOGS) == ["a", "b"]
    assert legacy.encoding_for(Signal.METRICS) == "otlp_json"


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config(name):
    case = INVALID[name]
    message = str(ConfigErrors(yaml_config_errors(case["config"])))
    for fragment in case["errors"]:
        assert fragment in message, f"{fragment!r} not in {message}"


def test_one_topic_for_two_signals_is_refused():
    cfg = KafkaReceiverConfig.model_validate({"topic": "shared"})
    with pytest.raises(ValueError, match="configured for both traces and logs"):
        create_receiver(settings(Kind.RECEIVER), cfg,
                        {Signal.TRACES: capture(), Signal.LOGS: capture()})


# -- against the mock cluster -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
async def test_round_trip_all_signals(kafka_cluster: MockKafkaCluster, encoding: str):
    """kafka exporter -> mock cluster -> kafka receiver: every request arrives unchanged."""
    for topic in ("otlp_spans", "otlp_metrics", "otlp_logs"):
        kafka_cluster.create_topic(topic, 6)
    brokers = kafka_cluster.bootstrap_servers
    exporter = create_exporter(settings(Kind.EXPORTER), KafkaExporterConfig.model_validate(
        {"brokers": brokers, "encoding": encoding}))
    sinks = {s: capture() for s in Signal}
    receiver = create_receiver(settings(Kind.RECEIVER), receiver_config(
        brokers, encoding=encoding), sinks)
    await receiver.start(None)
    sent = {Signal.TRACES: [traces(3, 4, services=2) for _ in range(3)],
            Signal.METRICS: [metrics(2, 5) for _ in range(3)],
            Signal.LOGS: [logs(7) for _ in range(3)]}
    try:
        for requests in sent.values():
            for req in requests:
                await exporter.export(Batch.of(req))
        for signal, requests in sent.items():
            await sinks[signal].wait_items(sum(Batch.of(r).item_count() for r in requests), timeout=20)
    finally:
        await exporter.shutdown()
        await receiver.shutdown()
    for signal, requests in sent.items():
        got = sorted(b.message.SerializeToString(deterministic=True) for b in sinks[signal].batches)
        assert got == sorted(r.SerializeToString(deterministic=True) for r in requests), signal


async def test_poison_message_is_skipped_and_counted(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_spans", 1)
    brokers = kafka_cluster.bootstrap_servers
    good = traces(2, 2)
    short_id = traces(1, 1)  # a trace id of 5 bytes: refused as the OTLP receiver refuses it
    short_id.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
    await produce(brokers, "otlp_spans", [b"\xff\xfe not protobuf", good.SerializeToString(),
                                          b"\x0a\x05trunc", short_id.SerializeToString(),
                                          good.SerializeToString()], partition=0)
    metrics_ = SelfMetrics()
    sink = capture()
    receiver = create_receiver(settings(Kind.RECEIVER, metrics=metrics_),
                               receiver_config(brokers, group_id="poison",
                                               message_marking={"after": True}),
                               {Signal.TRACES: sink})
    await receiver.start(None)
    try:
        await sink.wait_items(8, timeout=20)
        await asyncio.sleep(0.3)  # let the periodic commit run
    finally:
        await receiver.shutdown()
    assert metrics_.registry.get_sample_value(
        "otelcol_kafka_receiver_unmarshal_failed_spans_total", {"receiver": "kafka"}) == 3
    assert metrics_.registry.get_sample_value(
        "otelcol_receiver_accepted_spans_total", {"receiver": "kafka", "transport": "kafka"}) == 8
    assert await committed(brokers, "poison", TopicPartition("otlp_spans", 0)) == 5


async def test_after_marking_retries_until_the_pipeline_accepts(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_logs", 2)
    brokers = kafka_cluster.bootstrap_servers
    await produce(brokers, "otlp_logs", [logs(3).SerializeToString() for _ in range(4)],
                  partition=1)
    sink = capture(fail_first=5)
    receiver = create_receiver(settings(Kind.RECEIVER), receiver_config(
        brokers, group_id="retry", message_marking={"after": True}), {Signal.LOGS: sink})
    await receiver.start(None)
    try:
        await sink.wait_items(12, timeout=20)
    finally:
        await receiver.shutdown()
    assert sink.calls == 4 + 5 and len(sink.batches) == 4
    assert await committed(brokers, "retry", TopicPartition("otlp_logs", 1)) == 4


async def test_on_error_marks_and_moves_on(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_logs", 1)
    brokers = kafka_cluster.bootstrap_servers
    await produce(brokers, "otlp_logs", [logs(1).SerializeToString() for _ in range(3)])
    metrics_ = SelfMetrics()
    sink = capture(fail_first=1)
    receiver = create_receiver(settings(Kind.RECEIVER, metrics=metrics_), receiver_config(
        brokers, group_id="onerr", message_marking={"after": True, "on_error": True}),
        {Signal.LOGS: sink})
    await receiver.start(None)
    try:
        await sink.wait_items(2, timeout=20)
    finally:
        await receiver.shutdown()
    assert sink.calls == 3
    assert metrics_.registry.get_sample_value(
        "otelcol_receiver_refused_log_records_total",
        {"receiver": "kafka", "transport": "kafka"}) == 1
    assert await committed(brokers, "onerr", TopicPartition("otlp_logs", 0)) == 3


async def test_rebalance_between_two_receivers_loses_nothing(kafka_cluster: MockKafkaCluster):
    """A second group member joins mid-stream: partitions move after their marks are
    committed, every message is delivered (at least once) and both members take a share."""
    kafka_cluster.create_topic("otlp_spans", 6)
    brokers = kafka_cluster.bootstrap_servers
    cfg = receiver_config(brokers, group_id="pair", message_marking={"after": True})
    sinks = [capture(), capture()]
    receivers = [create_receiver(settings(Kind.RECEIVER, f"kafka/{i}"), cfg,
                                 {Signal.TRACES: sink}) for i, sink in enumerate(sinks)]
    exporter = create_exporter(settings(Kind.EXPORTER), KafkaExporterConfig.model_validate(
        {"brokers": brokers, "partition_traces_by_id": True}))
    sent: list[bytes] = []
    split: tuple[frozenset, frozenset] = (frozenset(), frozenset())

    async def send(n: int) -> None:
        for _ in range(n):
            req = traces(6, 2)
            sent.extend(span_ids(req))
            await exporter.export(Batch.of(req))
            await asyncio.sleep(0.02)

    await receivers[0].start(None)
    try:
        await send(20)
        await receivers[1].start(None)
        await send(40)
        want = set(sent)
        for _ in range(300):
            got = {i for s in sinks for b in s.batches for i in span_ids(b.message)}
            a, b = receivers[0].assigned, receivers[1].assigned
            if want <= got and a and b and not a & b and len(a | b) == 6:
                split = (a, b)
                break
            await asyncio.sleep(0.05)
    finally:
        await exporter.shutdown()
        for r in receivers:
            await r.shutdown()
    got = [i for s in sinks for b in s.batches for i in span_ids(b.message)]
    assert set(sent) <= set(got)
    assert all(split), "the group never settled on a split of the 6 partitions"
    assert all(s.batches for s in sinks)


def test_shipped_agent_and_gateway_configs():
    """config/agent.yaml and config/gateway.yaml: their kafka sections validate (the other
    components are checked with the whole files by `otelflow validate`)."""
    from otelflow.exporters.kafka import KafkaExporterConfig

    root = Path(__file__).parents[2] / "config"
    agent, _ = load_config([root / "agent.yaml"], env={})
    exporter = KafkaExporterConfig.model_validate(agent["exporters"]["kafka"])
    assert exporter.partition_traces_by_id and exporter.producer.required_acks == -1
    assert agent["service"]["pipelines"]["traces"]["exporters"] == ["kafka"]
    gateway, _ = load_config([root / "gateway.yaml"], env={})
    receiver = KafkaReceiverConfig.model_validate(gateway["receivers"]["kafka"])
    assert receiver.message_marking.after and receiver.group_id == "otelflow-gateways"
    assert receiver.topics_for(Signal.TRACES) == exporter.topic_for(Signal.TRACES).split()
    assert "tail_sampling" in gateway["service"]["pipelines"]["traces"]["processors"]


async def test_header_extraction(kafka_cluster: MockKafkaCluster):
    kafka_cluster.create_topic("otlp_logs", 1)
    brokers = kafka_cluster.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=brokers)
    await producer.start()
    await producer.send_and_wait("otlp_logs", logs(2).SerializeToString(),
                                 headers=[("tenant", b"acme"), ("other", b"x")])
    await producer.stop()
    sink = capture()
    receiver = create_receiver(settings(Kind.RECEIVER), receiver_config(
        brokers, group_id="headers",
        header_extraction={"extract_headers": True, "headers": ["tenant"]}), {Signal.LOGS: sink})
    await receiver.start(None)
    try:
        await sink.wait_items(2, timeout=20)
    finally:
        await receiver.shutdown()
    attrs = {kv.key: kv.value.string_value
             for kv in sink.batches[0].message.resource_logs[0].resource.attributes}
    assert attrs == {"kafka.header.tenant": "acme"}
