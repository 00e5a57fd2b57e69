"""A cheap OTLP gRPC sink for benchmarks: answers every export, never parses it.

Latency probes carry MAGIC + send time (ns, 8 bytes big-endian) as their trace id; the sink
finds them with a byte search and records receive - send. Writes JSON stats on SIGTERM.

    python bench/sink.py --port 4417 --stats /tmp/sink.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import grpc

MAGIC = b"\xfeLATPROBE"[:8]
SERVICES = ("opentelemetry.proto.collector.trace.v1.TraceService",
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            "opentelemetry.proto.collector.logs.v1.LogsService")


def probe_trace_id(now_ns: int) -> bytes:
    return MAGIC + now_ns.to_bytes(8, "big")


class Sink:
    def __init__(self):
        self.requests = 0
        self.bytes = 0
        self.latencies_ms: list[float] = []

    async def export(self, body: bytes, context) -> bytes:
        now = time.time_ns()
        self.requests += 1
        self.bytes += len(body)
        pos = body.find(MAGIC)
        while pos != -1:
            sent = int.from_bytes(body[pos + 8:pos + 16], "big")
            self.latencies_ms.append((now - sent) / 1e6)
            pos = body.find(MAGIC, pos + 16)
        return b""


async def serve(port: int, stats_path: str) -> None:
    sink = Sink()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.unary_unary_rpc_method_handler(sink.export)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(s, {"Export": handler})
                                     for s in SERVICES])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(0)
    with open(stats_path, "w") as f:
        json.dump({"requests": sink.requests, "bytes": sink.bytes,
                   "latencies_ms": sink.latencies_ms}, f)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    asyncio.run(serve(args.port, args.stats))


if __name__ == "__main__":
    main()
