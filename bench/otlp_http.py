"""OTLP/HTTP vs OTLP/gRPC ingest, same collector, same requests, same run.

A collector (pinned to core 1) receives on both protocols and forwards to the OTLP gRPC sink
(core 0, with the load generator). Prints spans/s (median of --repeat runs), collector CPU
seconds per million spans, and HTTP/gRPC ratios; plus in-process micro-costs of processor item
counting and of a (rejected) protobuf id-length pass, against parse+serialize.

    python bench/otlp_http.py [--duration 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from loadgen import build_pool  # noqa: E402
from loadgen import parse_args as loadgen_args  # noqa: E402
from run import scrape, start_sink  # noqa: E402

from otelflow.pdata import Batch, Signal  # noqa: E402
from otelflow.testing.process import free_port, wait_for_port  # noqa: E402


def config(grpc_port: int, http_port: int, sink_port: int, metrics_port: int, batch: bool) -> str:
    processors = "processors: {batch: {send_batch_size: 8192, timeout: 200ms}}" if batch else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}", max_recv_msg_size_mib: 64}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
{processors}
exporters:
  otlp: {{endpoint: "127.0.0.1:{sink_port}", tls: {{insecure: true}}, compression: none}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    traces: {{receivers: [otlp], {"processors: [batch], " if batch else ""}exporters: [otlp]}}
"""


def one_run(protocol: str, duration: float, batch: bool, tmp: str, i: int) -> tuple[float, float]:
    grpc_port, http_port, sink_port, mport = free_port(), free_port(), free_port(), free_port()
    sink, _address = start_sink("otlp", sink_port, f"{tmp}/sink-{protocol}-{i}.json")
    path = Path(tmp) / f"c-{protocol}-{i}.yaml"
    path.write_text(config(grpc_port, http_port, sink_port, mport, batch))
    collector = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "otelflow", "run",
                                  "--config", str(path)], stderr=subprocess.DEVNULL)
    try:
        for port in (http_port, grpc_port, mport):
            wait_for_port(port, 15)
        if collector.poll() is not None:
            raise RuntimeError(f"collector exited with {collector.returncode}")
        proc = psutil.Process(collector.pid)
        cpu0, acc0, t0 = sum(proc.cpu_times()[:2]), scrape(mport, Signal.TRACES), time.monotonic()
        port = grpc_port if protocol == "grpc" else http_port
        subprocess.run(["taskset", "-c", "0", sys.executable, str(HERE / "loadgen.py"),
                        "--endpoint", f"127.0.0.1:{port}", "--protocol", protocol,
                        "--items", "1000", "--attrs", "10", "--duration", str(duration)],
                       capture_output=True, check=True)
        elapsed = time.monotonic() - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        accepted = scrape(mport, Signal.TRACES) - acc0
        return accepted / elapsed, cpu / (accepted / 1e6)
    finally:
        collector.terminate()
        collector.wait(30)
        sink.terminate()
        sink.wait(10)


def id_length_pass(batch: Batch) -> bool:
    """What refusing wrong-length ids in protobuf requests would cost (not done: see results)."""
    for resource in batch.message.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                if (len(span.trace_id) & ~16) | (len(span.span_id) & ~8) | (
                        len(span.parent_span_id) & ~8):
                    return False
    return True


def micro() -> dict[str, float]:
    """Microseconds per 1,000-span request: parse, parse+serialize, an id-length pass over the
    parsed spans, and a processor-counting wrapper's consume vs the bare consumer."""
    from otelflow.pipeline.counting import CountingConsumer
    from otelflow.telemetry.metrics import SelfMetrics

    pool = build_pool(loadgen_args(["--items", "1000", "--attrs", "10", "--pool", "4"]))
    parsed = [Batch.from_bytes(Signal.TRACES, raw) for raw in pool]
    counter = SelfMetrics().processor_counters("bench", Signal.TRACES)[0]

    class Nop:
        async def consume(self, batch):
            return None

    def timed(fn, items, n=40, rounds=7) -> float:
        """Median over `rounds` of the mean time per call (this machine is shared and noisy)."""
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for k in range(n):
                fn(items[k % len(items)])
            samples.append((time.perf_counter() - start) / n * 1e6)
        return statistics.median(samples)

    async def consume_many(consumer, n=2000) -> float:
        start = time.perf_counter()
        for k in range(n):  # fresh Batch objects: the item count is not cached yet
            await consumer.consume(Batch(Signal.TRACES, message=parsed[k % len(parsed)].message))
        return (time.perf_counter() - start) / n * 1e6

    def consume_cost(consumer) -> float:
        return statistics.median(asyncio.run(consume_many(consumer)) for _ in range(7))

    return {
        "parse": timed(lambda raw: Signal.TRACES.request_type.FromString(raw), pool),
        "parse+serialize": timed(
            lambda raw: Signal.TRACES.request_type.FromString(raw).SerializeToString(), pool),
        "id length pass (parsed)": timed(id_length_pass, parsed),
        "bare consume": consume_cost(Nop()),
        "counting consume": consume_cost(CountingConsumer(Nop(), counter)),
    }


def print_micro() -> None:
    print("\n| micro-cost per 1,000-span request | µs (median of 7) |\n|---|---|")
    for name, us in micro().items():
        print(f"| {name} | {us:,.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--micro-only", action="store_true")
    args = p.parse_args()
    if args.micro_only:
        print_micro()
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (False, True):
            for protocol in ("grpc", "http"):
                runs = [one_run(protocol, args.duration, batch, tmp, i) for i in range(args.repeat)]
                key = f"{protocol}{' + batch' if batch else ''}"
                results[key] = {"spans_per_s": statistics.median(r[0] for r in runs),
                                "runs": [round(r[0]) for r in runs],
                                "cpu_s_per_million": statistics.median(r[1] for r in runs)}
    print("| ingest (1,000-span requests, 10 attrs) | spans/s (median) | runs | CPU s / M spans |")
    print("|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['spans_per_s']:,.0f} | {r['runs']} | {r['cpu_s_per_million']:.2f} |")
    for suffix in ("", " + batch"):
        ratio = results[f"http{suffix}"]["spans_per_s"] / results[f"grpc{suffix}"]["spans_per_s"]
        print(f"\nHTTP / gRPC{suffix}: {ratio:.2f}")
    print_micro()
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
