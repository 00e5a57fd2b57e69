"""Kafka exporter throughput: spans/s into librdkafka's mock cluster, per core.

The mock cluster runs in its own process, so the CPU seconds measured here are the exporter's
alone (the exporter is asyncio: one core). Batches arrive as OTLP wire bytes (as from the OTLP
receiver) and go through the exporter's queue/retry chain (10 senders), acked by the brokers
(acks=all, idempotent producer). Scenarios, each against a baseline measured in the same run:

  baseline    raw aiokafka producer sending the same pre-serialized payloads (client floor)
  otlp_proto  kafka exporter, default settings (forwards the received bytes)
  by_trace_id kafka exporter, partition_traces_by_id (one message per trace)
  otlp_json   kafka exporter, encoding otlp_json

    python bench/bench_kafka.py                 # median of 5 runs, 200 batches x 1000 spans
    python bench/bench_kafka.py --runs 3 --batches 100 --spans 1000 --per-trace 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import structlog  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from otelflow.component import ComponentID, CreateSettings, Kind  # noqa: E402
from otelflow.exporters.kafka import KafkaExporterConfig, create_exporter  # noqa: E402
from otelflow.pdata import Batch, Signal  # noqa: E402
from otelflow.pipeline.exporterhelper import ExporterChain  # noqa: E402
from otelflow.telemetry.metrics import SelfMetrics  # noqa: E402

CLUSTER = """
import sys, time
from otelflow.testing.kafka_mock import MockKafkaCluster
with MockKafkaCluster(brokers=3) as c:
    for t in sys.argv[1:]:
        c.create_topic(t, 6)
    print(c.bootstrap_servers, flush=True)
    sys.stdin.read()
"""
TOPICS = ["baseline", "otlp_proto", "by_trace_id", "otlp_json"]


def payloads(batches: int, spans: int, per_trace: int) -> list[bytes]:
    """OTLP trace requests as wire bytes: 10 attributes per span, `per_trace` spans/trace."""
    out = []
    for _ in range(batches):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        trace_id = b""
        for i in range(spans):
            if i % per_trace == 0:
                trace_id = os.urandom(16)
            span = ss.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"op-{i % 17}",
                                start_time_unix_nano=1_700_000_000_000_000_000 + i,
                                end_time_unix_nano=1_700_000_000_000_500_000 + i)
            for a in range(10):
                span.attributes.add(key=f"attr.{a}").value.string_value = f"value-{a}-{i % 50}"
        out.append(req.SerializeToString())
    return out


async def run_baseline(brokers: str, data: list[bytes]) -> tuple[float, float]:
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", enable_idempotence=True,
                                linger_ms=10, max_batch_size=1 << 20,
                                max_request_size=2_000_000)
    await producer.start()
    wall, cpu = time.perf_counter(), time.process_time()
    futures = [await producer.send("baseline", value) for value in data]
    await asyncio.gather(*futures)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await producer.stop()
    return wall, cpu


async def run_exporter(brokers: str, data: list[bytes], topic: str, **extra) -> tuple[float, float]:
    config = KafkaExporterConfig.model_validate(
        {"brokers": brokers, "traces": {"topic": topic, **extra.pop("traces", {})}, **extra})
    metrics = SelfMetrics()
    settings = CreateSettings(ComponentID("kafka"), Kind.EXPORTER,
                              structlog.get_logger(), metrics)
    chain = ExporterChain(create_exporter(settings, config), config, "kafka", metrics)
    await chain.start(None)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter(), time.process_time()
    for value in data:
        await chain.consume(Batch.from_bytes(Signal.TRACES, value))
    await chain.shutdown(time.monotonic() + 120)  # drains: every batch acked
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sent = metrics.registry.get_sample_value("otelcol_exporter_sent_spans_total",
                                             {"exporter": "kafka"})
    assert sent == sum(Batch.from_bytes(Signal.TRACES, v).item_count() for v in data), sent
    return wall, cpu


SCENARIOS = {
    "baseline": lambda b, d: run_baseline(b, d),
    "otlp_proto": lambda b, d: run_exporter(b, d, "otlp_proto"),
    "by_trace_id": lambda b, d: run_exporter(b, d, "by_trace_id", partition_traces_by_id=True),
    "otlp_json": lambda b, d: run_exporter(b, d, "otlp_json",
                                           traces={"encoding": "otlp_json"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--spans", type=int, default=1000, help="spans per batch")
    parser.add_argument("--per-trace", type=int, default=10, help="spans per trace")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER, *TOPICS], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})
    try:
        brokers = cluster.stdout.readline().strip()
        data = payloads(args.batches, args.spans, args.per_trace)
        total = args.batches * args.spans
        results: dict[str, list[tuple[float, float]]] = {s: [] for s in args.scenarios}
        for _ in range(args.runs):
            for name in args.scenarios:
                results[name].append(asyncio.run(SCENARIOS[name](brokers, data)))
        report(results, total, args)
    finally:
        cluster.stdin.close()
        cluster.wait(10)


def report(results: dict[str, list[tuple[float, float]]], total: int, args) -> None:
    print(f"{args.batches} batches x {args.spans} spans ({args.per_trace} spans/trace, "
          f"10 attributes), median of {args.runs} runs; mock cluster in its own process")
    print(f"{'scenario':<12} {'spans/s wall':>13} {'spans/s/core':>13} {'vs baseline':>12}")
    base = statistics.median(total / cpu for _w, cpu in results.get("baseline", [(1, 1)]))
    for name, runs in results.items():
        wall = statistics.median(total / w for w, _c in runs)
        per_core = statistics.median(total / c for _w, c in runs)
        print(f"{name:<12} {wall:>13,.0f} {per_core:>13,.0f} {per_core / base:>11.2f}x")


if __name__ == "__main__":
    main()
