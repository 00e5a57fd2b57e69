"""OTLP load generator: sends pre-built requests over gRPC or HTTP as fast as allowed.

Runs in its own process. Prints one JSON line: requests/items sent, accepted, refused, elapsed.

    python bench/loadgen.py --endpoint 127.0.0.1:4317 --signal traces --items 1000 \
        --attrs 10 --duration 10 [--rate 200000] [--protocol http] [--shape testbed]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}


def _attr(target, key: str, value) -> None:
    kv = target.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value


def _resource(group, service: str) -> None:
    _attr(group.resource.attributes, "service.name", service)
    _attr(group.resource.attributes, "host.name", "bench-host")


def build_traces(n: int, attrs: int, seed: int, error_share: float, slow_share: float,
                 shape: str, spans_per_trace: int) -> ExportTraceServiceRequest:
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _resource(rs, "bench-service")
    ss = rs.scope_spans.add()
    ss.scope.name = "loadgen"
    now = time.time_ns()
    trace_id = b""
    for i in range(n):
        if i % spans_per_trace == 0:
            trace_id = rnd.randbytes(16)
            kind = rnd.random()
        span = ss.spans.add()
        span.trace_id = trace_id
        span.span_id = rnd.randbytes(8)
        span.start_time_unix_nano = now
        slow = kind < slow_share
        span.end_time_unix_nano = now + (2_000_000_000 if slow else 5_000_000)
        if kind > 1 - error_share:
            span.status.code = 2
        if shape == "testbed":
            span.name = "load-generator-span"
            span.kind = 3  # CLIENT
            _attr(span.attributes, "load_generator.span_seq_num", i)
            _attr(span.attributes, "load_generator.trace_seq_num", seed)
        else:
            span.name = f"GET /api/v1/items/{i % 50}"
            span.kind = 2
            for a in range(attrs):
                _attr(span.attributes, f"attr.{a}", f"value-{a}-{rnd.randrange(1000)}")
    return req


def build_metrics(n: int, attrs: int, seed: int) -> ExportMetricsServiceRequest:
    rnd = random.Random(seed)
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _resource(rm, "bench-service")
    sm = rm.scope_metrics.add()
    now = time.time_ns()
    per_metric = 10
    for m in range(max(1, n // per_metric)):
        metric = sm.metrics.add()
        metric.name = f"bench.metric.{m}"
        metric.unit = "1"
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = 2
        for p in range(per_metric):
            point = metric.sum.data_points.add()
            point.start_time_unix_nano = now - 10_000_000_000
            point.time_unix_nano = now
            point.as_double = rnd.random() * 100
            for a in range(min(attrs, 3)):
                _attr(point.attributes, f"label{a}", f"v{p}-{a}")
    return req


def build_logs(n: int, attrs: int, seed: int, shape: str) -> ExportLogsServiceRequest:
    rnd = random.Random(seed)
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _resource(rl, "bench-service")
    sl = rl.scope_logs.add()
    now = time.time_ns()
    count = 6 if shape == "testbed" else attrs
    for i in range(n):
        rec = sl.log_records.add()
        rec.time_unix_nano = now
        rec.severity_number = 9
        rec.severity_text = "INFO"
        rec.body.string_value = (f"Load Generator Counter {i}" if shape == "testbed" else
                                 f"user alice{i}@example.com paid with 4111 1111 1111 1111 #{i}")
        for a in range(count):
            _attr(rec.attributes, f"attr.{a}", f"value-{a}-{rnd.randrange(1000)}")
    return req


def build_pool(args) -> list[bytes]:
    pool = []
    for seed in range(args.pool):
        if args.signal == "traces":
            msg = build_traces(args.items, args.attrs, seed, args.error_share, args.slow_share,
                               args.shape, args.spans_per_trace)
        elif args.signal == "metrics":
            msg = build_metrics(args.items, args.attrs, seed)
        else:
            msg = build_logs(args.items, args.attrs, seed, args.shape)
        pool.append(msg.SerializeToString())
    return pool


async def run_grpc(args, pool: list[bytes]) -> dict:
    """Requests go round robin over `--connections` channels, each its own TCP connection
    (so a collector's SO_REUSEPORT workers all get some)."""
    options = [("grpc.use_local_subchannel_pool", 1)] if args.connections > 1 else []
    channels = [grpc.aio.insecure_channel(args.endpoint, options)
                for _ in range(args.connections)]
    calls = itertools.cycle([c.unary_unary(f"/{SERVICES[args.signal]}/Export") for c in channels])
    return await _drive(args, pool, lambda body: next(calls)(body, timeout=30),
                        grpc.aio.AioRpcError)


async def run_http(args, pool: list[bytes]) -> dict:
    import aiohttp

    url = f"http://{args.endpoint}{HTTP_PATHS[args.signal]}"
    session = aiohttp.ClientSession(headers={"Content-Type": "application/x-protobuf"})

    async def send(body: bytes):
        async with session.post(url, data=body) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(resp.status)

    try:
        return await _drive(args, pool, send, RuntimeError)
    finally:
        await session.close()


async def _drive(args, pool, send, error_type) -> dict:
    stats = {"requests": 0, "accepted_items": 0, "refused_items": 0, "errors": {}}
    deadline = time.monotonic() + args.duration
    interval = args.items / args.rate if args.rate else 0.0
    total = args.requests or 0

    async def worker(wid: int):
        i = wid
        next_at = time.monotonic() + wid * interval  # staggered: a steady stream, not bursts
        while time.monotonic() < deadline and (not total or stats["requests"] < total):
            if interval:
                next_at += interval * args.concurrency
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            stats["requests"] += 1
            try:
                await send(pool[i % len(pool)])
                stats["accepted_items"] += args.items
            except error_type as exc:
                code = str(exc.code() if hasattr(exc, "code") else exc)
                stats["errors"][code] = stats["errors"].get(code, 0) + 1
                stats["refused_items"] += args.items
                if args.backoff:  # as an SDK would, instead of hammering a full collector
                    await asyncio.sleep(args.backoff)
            i += args.concurrency

    start = time.monotonic()
    stats["started_at"] = time.time()  # wall clock, for a caller in another process
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    stats["elapsed"] = time.monotonic() - start
    stats["items_per_s"] = stats["accepted_items"] / stats["elapsed"]
    return stats


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="127.0.0.1:4317")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--signal", choices=list(SERVICES), default="traces")
    p.add_argument("--items", type=int, default=1000, help="items per request")
    p.add_argument("--attrs", type=int, default=10, help="string attributes per item")
    p.add_argument("--shape", choices=["default", "testbed"], default="default")
    p.add_argument("--spans-per-trace", type=int, default=10)
    p.add_argument("--error-share", type=float, default=0.01)
    p.add_argument("--slow-share", type=float, default=0.01)
    p.add_argument("--rate", type=float, default=0, help="items/s target (0 = max)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--requests", type=int, default=0, help="stop after this many requests")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--backoff", type=float, default=0.05,
                   help="seconds a worker waits after a refused request (0: none)")
    p.add_argument("--connections", type=int, default=1, help="gRPC connections (round robin)")
    p.add_argument("--pool", type=int, default=16, help="distinct pre-built requests")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    pool = build_pool(args)
    runner = run_grpc if args.protocol == "grpc" else run_http
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    stats = asyncio.run(runner(args, pool))
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
