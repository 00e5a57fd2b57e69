"""Throughput of the `redaction` processor, per core, with and without it in the pipeline.

Shape (issue 4): spans with 10 string attributes, 6 blocked key patterns, the 8 common value
patterns; 1,000-span requests; a share of spans carrying one planted PII value (0%, 1%, 10%,
100%). `logs` (issue 12): bench/run.py's `logs_redaction` scenario in process: 1,000-record
requests from bench/loadgen.py (every body holds an e-mail address and a card number, ten
benign attributes), bench/run.py's `REDACTION` config.

Two measurements, each the median of several runs, in CPU seconds of the measured process
(the machine is shared, so wall time is noisy):

- `inprocess`: one thread, no network. Baseline pipeline = what a receiver and an exporter do
  with a request (`Batch.from_bytes` then `to_bytes`, which reuses the received bytes when
  nothing changed them); with redaction = the same with `redact()` between. Also the
  processor alone (spans/s through `redact()` of already-parsed batches) and its cost per
  item including the re-encoding of changed requests (with - without, per item).
- `collector`: `otelflow run` subprocesses (otlp gRPC receiver -> [redaction] -> file exporter
  writing length-prefixed protobuf to /dev/null) fed by a gRPC load generator in this
  process; spans per CPU-second of the collector process.

Usage: PYTHONPATH=src python bench/bench_redaction.py [inprocess|logs|collector|all] [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

import grpc
import psutil
import structlog
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.pdata import Batch, Signal
from otelflow.processors.redaction import RedactionConfig, RedactionProcessor
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.process import CollectorProcess, free_port

SPANS_PER_REQUEST = 1000
REQUESTS = 20
PII_RATES = (0.0, 0.01, 0.10, 1.0)
CONFIG = {
    "allow_all_keys": True,
    "value_patterns": ["common"],  # the 8 common patterns
    "blocked_key_patterns": ["(?i)api[_.-]?key", "(?i)user[_.-]?email",
                             "(?i)(^|[._-])([a-z]+_)?token$", "(?i)passw(or)?d",
                             "(?i)authorization", "(?i)cookie"],
    "summary": "info",
}
KEYS = ["http.request.method", "url.full", "http.route", "user_agent.original", "server.address",
        "db.query.text", "enduser.id", "thread.name", "code.function", "request.id"]
PII = ["jane.doe{}@example.com", "card 4111 1111 1111 1111 ref {}",
       "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ7fSJ9.c2ln{}"]


def make_request(pii_rate: float, seed: int) -> bytes:
    """A 1,000-span request: realistic-looking values, some ids unique per span."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in (("service.name", "checkout"), ("host.name", "node-7")):
        rs.resource.attributes.add(key=key).value.string_value = value
    spans = rs.scope_spans.add().spans
    for i in range(SPANS_PER_REQUEST):
        span = spans.add(name="GET /api/cart", kind=2, trace_id=rnd.randbytes(16),
                         span_id=rnd.randbytes(8), start_time_unix_nano=1_700_000_000 * 10**9 + i,
                         end_time_unix_nano=1_700_000_000 * 10**9 + i + 5_000_000)
        values = ["GET", f"https://shop.example/api/cart/{rnd.randrange(10**6)}?lang=en",
                  "/api/cart/{id}", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                  "cart.internal", "SELECT * FROM carts WHERE id = ?", f"u{rnd.randrange(10**5)}",
                  "worker-3", "CartController.get", f"{rnd.getrandbits(64):016x}"]
        if rnd.random() < pii_rate:
            values[rnd.randrange(len(values))] = rnd.choice(PII).format(i)
        for key, value in zip(KEYS, values, strict=True):
            span.attributes.add(key=key).value.string_value = value
    return req.SerializeToString()


def processor(config: dict = CONFIG, signal: Signal = Signal.TRACES) -> RedactionProcessor:
    settings = CreateSettings(id=ComponentID("redaction"), kind=Kind.PROCESSOR,
                              logger=structlog.get_logger(), metrics=SelfMetrics(),
                              signal=signal)
    return RedactionProcessor(settings, RedactionConfig.model_validate(config), None)


def per_cpu_second(n: int, fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return n / (time.process_time() - start)


def baseline(signal: Signal, payloads: list[bytes]) -> None:
    """What a receiver and an exporter do with each request when nothing changes it."""
    for raw in payloads:
        Batch.from_bytes(signal, raw).to_bytes()


def with_redaction(proc: RedactionProcessor, signal: Signal, payloads: list[bytes]) -> None:
    for raw in payloads:
        proc.redact(Batch.from_bytes(signal, raw)).to_bytes()


def processor_alone(proc: RedactionProcessor, signal: Signal, payloads: list[bytes]) -> float:
    """Items per CPU-second through `redact()` alone (requests parsed beforehand)."""
    batches = [Batch.from_bytes(signal, raw) for raw in payloads]
    for batch in batches:
        batch.message  # noqa: B018  (parse now, outside the timing)
    return per_cpu_second(len(payloads) * SPANS_PER_REQUEST,
                          lambda: [proc.redact(b) for b in batches])


HEADER = ("| {unit} | processor alone ({items}/s) | processor incl. re-encoding (us/{item}) | "
          "pipeline without ({items}/s) | pipeline with ({items}/s) | "
          "ratio with/without |\n|---|---|---|---|---|---|")


def measure(label: str, proc: RedactionProcessor, signal: Signal, payloads: list[bytes],
            runs: int) -> None:
    """One table row: medians of `runs` runs; with/without alternated, ratios of pairs."""
    n = len(payloads) * SPANS_PER_REQUEST
    only = statistics.median(processor_alone(proc, signal, payloads) for _ in range(runs))
    pairs = [(per_cpu_second(n, partial(baseline, signal, payloads)),
              per_cpu_second(n, partial(with_redaction, proc, signal, payloads)))
             for _ in range(runs)]  # alternated, so load drift hits both alike
    without = statistics.median(p[0] for p in pairs)
    with_ = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    cost = statistics.median(1e6 / p[1] - 1e6 / p[0] for p in pairs)
    print(f"| {label} | {only:,.0f} | {cost:.1f} | {without:,.0f} | {with_:,.0f} | "
          f"{ratio:.2f} |", flush=True)


def inprocess(runs: int) -> None:
    proc = processor()
    print(HEADER.format(unit="PII spans", items="spans", item="span"), flush=True)
    for rate in PII_RATES:
        payloads = [make_request(rate, seed) for seed in range(REQUESTS)]
        measure(f"{rate:.0%}", proc, Signal.TRACES, payloads, runs)


def logs(runs: int) -> None:
    """bench/run.py's logs_redaction scenario (every record masked), in process."""
    from loadgen import build_logs  # bench/ is on the path when this runs as a script
    from run import REDACTION

    config = yaml.safe_load(REDACTION)["redaction"]
    proc = processor(config, Signal.LOGS)
    payloads = [build_logs(SPANS_PER_REQUEST, 10, seed, "default").SerializeToString()
                for seed in range(REQUESTS)]
    print(HEADER.format(unit="requests", items="records", item="record"), flush=True)
    measure("logs_redaction (100% PII)", proc, Signal.LOGS, payloads, runs)


def collector(runs: int) -> None:
    print("| PII spans | collector without (spans/CPU-s) | collector with (spans/CPU-s) | "
          "ratio with/without (median of pairs) |\n|---|---|---|---|", flush=True)
    for rate in PII_RATES:
        payloads = [make_request(rate, seed) for seed in range(REQUESTS)]
        pairs = [(measure_collector(payloads, None), measure_collector(payloads, CONFIG))
                 for _ in range(runs)]  # alternated, so load drift hits both alike
        without = statistics.median(p[0] for p in pairs)
        with_ = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[1] / p[0] for p in pairs)
        print(f"| {rate:.0%} | {without:,.0f} | {with_:,.0f} | {ratio:.2f} |", flush=True)


def measure_collector(payloads: list[bytes], redaction: dict | None, rounds: int = 8) -> float:
    """Spans per CPU-second of an `otelflow run` process receiving `payloads` `rounds` times."""
    port = free_port()
    pipeline = {"receivers": ["otlp"], "exporters": ["file"],
                "processors": ["redaction"] if redaction else []}
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {"redaction": redaction} if redaction else {},
        "exporters": {"file": {"path": "/dev/null", "format": "proto", "flush_interval": "1s"}},
        "service": {"telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"traces": pipeline}},
    }
    with CollectorProcess(yaml.safe_dump(config), wait_port=port) as proc:
        process = psutil.Process(proc.proc.pid)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            export(payloads[0], timeout=30)  # warm up
            before = sum(process.cpu_times()[:2])
            pending: list = []
            for _ in range(rounds):
                for raw in payloads:
                    pending.append(export.future(raw, timeout=60))
                    if len(pending) >= 4:
                        pending.pop(0).result()
            for future in pending:
                future.result()
            used = sum(process.cpu_times()[:2]) - before
    return rounds * len(payloads) * SPANS_PER_REQUEST / used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="all",
                        choices=["inprocess", "logs", "collector", "all"])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.mode in ("inprocess", "all"):
        print("## in-process pipeline, 1,000-span requests (median of", args.runs, "runs)")
        inprocess(args.runs)
    if args.mode in ("logs", "all"):
        print("\n## in-process pipeline, bench/run.py logs_redaction requests (median of",
              args.runs, "runs)")
        logs(args.runs)
    if args.mode in ("collector", "all"):
        runs = max(3, args.runs // 2)
        print(f"\n## otelflow run: OTLP gRPC in, file (proto) out (median of {runs} runs)")
        collector(runs)


if __name__ == "__main__":
    main()
