"""Benchmark the tail_sampling processor in-process (one core): throughput and memory.

Throughput: OTLP requests (1,000 spans of 200 traces; each trace's 10 spans split over two
requests, 5 attributes per span, 5% error traces, 5% slow traces) are parsed from wire bytes
and fed to `tail_sampling` (decision_wait 2s; status_code ERROR + latency 1000ms +
probabilistic 10%): 1,000,000 spans, prepared beforehand, fed as fast as they go, then every
trace is decided (shutdown). Figure: spans per CPU-second of this process
(`time.process_time`), so other load on the machine skews it less. The baseline is a
pass-through processor fed the same requests (parse + feed cost), measured in the same run.

Memory: 50,000 traces x 10 spans held in flight (decision_wait 10 minutes); RSS of the whole
process after ingesting, and the increase over the RSS before.

    PYTHONPATH=src python bench/bench_tail_sampling.py [--spans 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import time

import psutil
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import ComponentID, CreateSettings, Kind, Processor
from otelflow.pdata import Batch, Signal
from otelflow.processors.tail_sampling import FACTORY, TailSamplingConfig
from otelflow.telemetry.metrics import SelfMetrics

TRACES_PER_PAIR = 200
SPANS_PER_TRACE = 10
POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "ten-percent", "type": "probabilistic",
     "probabilistic": {"sampling_percentage": 10}},
]


class Traffic:
    """Two template requests holding halves of the same 200 traces; each `pair()` patches in
    fresh random trace ids at their byte offsets (cheap, so feeding costs little)."""

    def __init__(self, seed: int = 1):
        self.rng = random.Random(seed)
        placeholders = [self.rng.randbytes(16) for _ in range(TRACES_PER_PAIR)]
        first, second = self._templates(placeholders)
        self.templates = []
        for raw in (first, second):
            offsets = [[] for _ in placeholders]
            for i, ph in enumerate(placeholders):
                pos = raw.find(ph)
                while pos >= 0:
                    offsets[i].append(pos)
                    pos = raw.find(ph, pos + 1)
            self.templates.append((raw, offsets))

    def _templates(self, ids: list[bytes]) -> tuple[bytes, bytes]:
        halves = (ExportTraceServiceRequest(), ExportTraceServiceRequest())
        base = 1_700_000_000_000_000_000
        for half, req in enumerate(halves):
            rs = req.resource_spans.add()
            for key, value in (("service.name", "checkout"), ("host.name", "node-1"),
                               ("telemetry.sdk.language", "python")):
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = key, value
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.flask", "0.48b0"
            for n in range(SPANS_PER_TRACE // 2):
                for t, trace_id in enumerate(ids):
                    index = half * (SPANS_PER_TRACE // 2) + n
                    span = ss.spans.add()
                    span.trace_id = trace_id
                    span.span_id = self.rng.randbytes(8)
                    if index:
                        span.parent_span_id = b"\x01" * 8
                    span.name = f"GET /api/items/{index}"
                    span.kind = 2
                    slow = t % 20 == 1 and index == 0
                    span.start_time_unix_nano = base + index * 1_000_000
                    span.end_time_unix_nano = span.start_time_unix_nano + (
                        1_500_000_000 if slow else 20_000_000)
                    span.status.code = 2 if (t % 20 == 0 and index == 7) else 0
                    for key, value in (("http.method", "GET"), ("http.route", "/api/items"),
                                       ("net.peer.name", "10.0.0.7"),
                                       ("user_agent.original", "python-requests/2.32")):
                        kv = span.attributes.add()
                        kv.key, kv.value.string_value = key, value
                    kv = span.attributes.add()
                    kv.key, kv.value.int_value = "http.status_code", 200
        return tuple(h.SerializeToString() for h in halves)

    def pair(self) -> tuple[bytes, bytes]:
        fresh = [self.rng.randbytes(16) for _ in range(TRACES_PER_PAIR)]
        out = []
        for raw, offsets in self.templates:
            buf = bytearray(raw)
            for new, positions in zip(fresh, offsets, strict=True):
                for pos in positions:
                    buf[pos:pos + 16] = new
            out.append(bytes(buf))
        return out[0], out[1]


class NullSink:
    mutates_data = False

    def __init__(self) -> None:
        self.spans = 0

    async def consume(self, batch: Batch) -> None:
        self.spans += batch.item_count()


def settings(metrics: SelfMetrics) -> CreateSettings:
    return CreateSettings(id=ComponentID("tail_sampling"), kind=Kind.PROCESSOR,
                          logger=structlog.get_logger(), metrics=metrics, signal=Signal.TRACES)


def tail_sampling(sink: NullSink, **overrides) -> Processor:
    cfg = TailSamplingConfig.model_validate({"decision_wait": "2s", "policies": POLICIES,
                                             **overrides})
    return FACTORY.create(settings(SelfMetrics()), cfg, sink)


async def feed(processor: Processor, requests: list[bytes]) -> float:
    """Feed every request, then shut down (deciding everything): CPU seconds spent."""
    await processor.start(None)
    cpu = time.process_time()
    for raw in requests:
        await processor.consume(Batch.from_bytes(Signal.TRACES, raw))
        await asyncio.sleep(0)  # a receiver yields between requests too
    await processor.shutdown()
    return time.process_time() - cpu


async def throughput(requests: list[bytes]) -> dict:
    spans = len(requests) * TRACES_PER_PAIR * SPANS_PER_TRACE // 2
    sink = NullSink()
    cpu = await feed(tail_sampling(sink, num_traces=200_000), requests)
    base_cpu = await feed(Processor(NullSink()), requests)
    return {"spans": spans, "kept": sink.spans, "rate": spans / cpu,
            "baseline": spans / base_cpu}


async def memory(traces: int) -> dict:
    traffic = Traffic(seed=2)
    gc.collect()
    proc = psutil.Process(os.getpid())
    before = proc.memory_info().rss
    processor = tail_sampling(NullSink(), decision_wait="10m", num_traces=traces,
                              drop_pending_traces_on_shutdown=True)
    await processor.start(None)
    for _ in range(traces // TRACES_PER_PAIR):
        for raw in traffic.pair():
            await processor.consume(Batch.from_bytes(Signal.TRACES, raw))
    gc.collect()
    after = proc.memory_info().rss
    in_flight = len(processor._pending)
    started = time.process_time()
    await processor._decide_due(time.monotonic(), everything=True)
    decide_cpu = time.process_time() - started
    await processor.shutdown()
    return {"in_flight": in_flight, "rss": after, "delta": after - before,
            "decide_rate": in_flight / decide_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--traces", type=int, default=50_000)
    args = parser.parse_args()
    mem = asyncio.run(memory(args.traces))
    print(f"memory: {mem['in_flight']:,} traces x {SPANS_PER_TRACE} spans in flight: "
          f"RSS {mem['rss'] / 2**20:.0f} MiB total (+{mem['delta'] / 2**20:.0f} MiB); "
          f"deciding them all: {mem['decide_rate']:,.0f} traces/CPU-s")
    traffic = Traffic()
    pairs = int(args.spans / (TRACES_PER_PAIR * SPANS_PER_TRACE))
    requests = [raw for _ in range(pairs) for raw in traffic.pair()]  # fresh trace ids
    runs = []
    for i in range(args.runs):
        result = asyncio.run(throughput(requests))
        runs.append(result)
        print(f"run {i + 1}: tail_sampling {result['rate']:,.0f} spans/CPU-s "
              f"({result['spans']:,} spans, {result['kept']:,} kept); pass-through baseline "
              f"{result['baseline']:,.0f} spans/CPU-s; ratio {result['rate'] / result['baseline']:.2f}")
    rate = statistics.median(r["rate"] for r in runs)
    base = statistics.median(r["baseline"] for r in runs)
    kept = statistics.median(r["kept"] / r["spans"] for r in runs)
    print(f"median: tail_sampling {rate:,.0f} spans/s on one core; baseline {base:,.0f}; "
          f"ratio {rate / base:.2f}; kept {kept:.1%} of spans")


if __name__ == "__main__":
    main()
