"""Benchmark scenarios: collector pinned to one core, load generator + sink on the other.

For each scenario prints items/s (median of --repeat runs), collector CPU seconds per million
items, peak RSS, p50/p99 added latency at half the measured max rate, and the floor measured in
the same run: upb parse + serialize of the same requests on one core (ratio = pipeline/floor).

    python bench/run.py                       # every scenario whose components exist
    python bench/run.py passthrough agent --repeat 5 --duration 10
    python bench/run.py metrics_remote_write --rate 300000 --no-latency   # sustained?
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from loadgen import build_pool  # noqa: E402
from loadgen import parse_args as loadgen_args  # noqa: E402
from sink import probe_trace_id  # noqa: E402

from otelflow.pdata import Signal  # noqa: E402
from otelflow.registry import Registry  # noqa: E402
from otelflow.testing.process import free_port, wait_for_port  # noqa: E402

REDACTION = """
  redaction:
    allow_all_keys: true
    blocked_key_patterns: ["password", "token", "secret", "api[_-]?key", "authorization", "cookie"]
    blocked_values: []
    value_patterns: [email, credit_card, us_ssn, jwt, bearer_token, aws_access_key, ipv4, iban]
    summary: silent
"""
TAIL = """
  tail_sampling:
    decision_wait: 2s
    num_traces: 100000
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""
BATCH = """
  batch:
    send_batch_size: 8192
    timeout: 200ms
"""


KAFKA_TOPIC = "otlp_spans"
KAFKA_CLUSTER = """
import sys
from otelflow.testing.kafka_mock import MockKafkaCluster
with MockKafkaCluster(brokers=3) as cluster:
    cluster.create_topic(sys.argv[1], 6)
    print(cluster.bootstrap_servers, flush=True)
    sys.stdin.read()
"""


@dataclass
class Scenario:
    name: str
    signal: str = "traces"
    processors: dict[str, str] = field(default_factory=dict)  # id -> YAML body
    exporter: str = "otlp"  # otlp | prometheusremotewrite | kafka
    items: int = 1000
    attrs: int = 10
    shape: str = "default"
    go_figure: str = ""


SCENARIOS = [
    Scenario("passthrough"),
    Scenario("redaction", processors={"redaction": REDACTION}),
    Scenario("tail_sampling", processors={"tail_sampling": TAIL}),
    Scenario("agent", processors={"redaction": REDACTION, "tail_sampling": TAIL, "batch": BATCH}),
    Scenario("metrics_remote_write", signal="metrics", exporter="prometheusremotewrite"),
    Scenario("logs_redaction", signal="logs", processors={"redaction": REDACTION}),
    Scenario("kafka", exporter="kafka"),
    Scenario("testbed_traces", items=100, shape="testbed", processors={"batch": BATCH},
             go_figure="~118,000 spans/s"),
    Scenario("testbed_metrics", signal="metrics", items=100, processors={"batch": BATCH},
             go_figure="~400,000 points/s"),
    Scenario("testbed_logs", signal="logs", items=100, shape="testbed",
             processors={"batch": BATCH}, go_figure="~100,000 records/s"),
]


def collector_config(s: Scenario, port: int, sink: str, metrics_port: int) -> str:
    """The collector's YAML; `sink` is the sink's host:port (the bootstrap list for kafka)."""
    procs = "".join(f"  {body.strip()}\n" if not body.startswith("\n") else body
                    for body in s.processors.values())
    if s.exporter == "otlp":
        exporter = (f"  otlp:\n    endpoint: {sink}\n    tls: {{insecure: true}}\n"
                    "    compression: none\n")
    elif s.exporter == "kafka":
        exporter = (f"  kafka:\n    brokers: [{sink}]\n    traces: {{topic: {KAFKA_TOPIC}}}\n")
    else:
        exporter = f"  prometheusremotewrite:\n    endpoint: http://{sink}/api/v1/write\n"
    proc_list = ", ".join(s.processors)
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
        max_recv_msg_size_mib: 64
processors:
{procs or "  {}"}
exporters:
{exporter}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
  pipelines:
    {s.signal}:
      receivers: [otlp]
      processors: [{proc_list}]
      exporters: [{s.exporter}]
""".replace("processors:\n  {}\n", "")


def available(s: Scenario, registry: Registry) -> str | None:
    from otelflow.component import Kind
    from otelflow.registry import UnknownComponentType

    try:
        for pid in s.processors:
            registry.get(Kind.PROCESSOR, pid)
        registry.get(Kind.EXPORTER, s.exporter)
    except (UnknownComponentType, ImportError) as exc:
        return str(exc)
    return None


def start_sink(kind: str, port: int, stats: str) -> tuple[subprocess.Popen, str]:
    """The sink process on core 0 and the address the collector's exporter sends to."""
    if kind == "kafka":  # librdkafka's mock cluster, in its own process
        cmd = ["taskset", "-c", "0", sys.executable, "-c", KAFKA_CLUSTER, KAFKA_TOPIC]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return proc, proc.stdout.readline().strip()
    script = "sink.py" if kind == "otlp" else "prw_sink.py"
    cmd = ["taskset", "-c", "0", sys.executable, str(HERE / script), "--port", str(port),
           "--stats", stats]
    proc = subprocess.Popen(cmd)
    wait_for_port(port)
    return proc, f"127.0.0.1:{port}"


def scrape_sums(metrics_port: int, *names: str) -> list[float]:
    """The sum of each named self-metric's series, from one read of /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    lines = body.decode().splitlines()
    return [sum(float(line.split()[-1]) for line in lines if line.startswith(name + "{"))
            for name in names]


def scrape(metrics_port: int, signal: Signal) -> float:
    """The items the receivers accepted."""
    return scrape_sums(metrics_port, f"otelcol_receiver_accepted_{signal.item_unit}_total")[0]


def drained_at(metrics_port: int, signal: Signal, timeout: float = 120.0) -> float:
    """Wait until the exporters' queues are empty and nothing more is sent; return the
    wall-clock time of the last send seen, so a rate counts only work the collector finished
    (accepted items still queued would otherwise inflate it)."""
    sent_name = f"otelcol_exporter_sent_{signal.item_unit}_total"
    last_change, last_sent = time.time(), -1.0
    deadline = last_change + timeout
    while time.time() < deadline:
        queued, sent = scrape_sums(metrics_port, "otelcol_exporter_queue_size", sent_name)
        if queued or sent != last_sent:
            last_change, last_sent = time.time(), sent
        elif time.time() - last_change > 0.3:
            break
        time.sleep(0.05)
    return last_change


class RSSWatcher(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)


def run_load(s: Scenario, port: int, duration: float, rate: float = 0) -> dict:
    cmd = ["taskset", "-c", "0", sys.executable, str(HERE / "loadgen.py"), "--endpoint",
           f"127.0.0.1:{port}", "--signal", s.signal, "--items", str(s.items), "--attrs",
           str(s.attrs), "--shape", s.shape, "--duration", str(duration), "--rate", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def send_probes(port: int, signal: str, stop: threading.Event) -> None:
    """One small traces request every 50 ms whose trace id carries its send time."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    if signal != "traces":
        return
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    while not stop.is_set():
        req = ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add()
        now = time.time_ns()
        span.trace_id, span.span_id, span.name = probe_trace_id(now), b"\x01" * 8, "probe"
        span.start_time_unix_nano, span.end_time_unix_nano = now, now + 1000
        span.status.code = 2  # kept by tail sampling's error policy
        with contextlib.suppress(grpc.RpcError):
            call(req.SerializeToString(), timeout=5)
        stop.wait(0.05)
    channel.close()


def floor(s: Scenario) -> float:
    """Items/s for upb parse + serialize of the same requests on this core."""
    args = loadgen_args(["--signal", s.signal, "--items", str(s.items), "--attrs", str(s.attrs),
                         "--shape", s.shape, "--pool", "8"])
    pool = build_pool(args)
    request_type = Signal(s.signal).request_type
    os.sched_setaffinity(0, {1})
    try:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            for raw in pool:
                request_type.FromString(raw).SerializeToString()
            n += len(pool)
        return n * s.items / (time.perf_counter() - start)
    finally:
        os.sched_setaffinity(0, {0, 1})


def run_scenario(s: Scenario, duration: float, repeat: int, latency: bool,
                 offered: float = 0) -> dict:
    """`offered` > 0 paces the load at that many items/s (a sustained-rate run) instead of
    sending as fast as the collector answers."""
    rates, cpu_per_m, peaks, busy, refused, half_rate_rss = [], [], [], [], 0, None
    signal = Signal(s.signal)
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat + (1 if latency else 0)):
            port, sink_port, mport = free_port(), free_port(), free_port()
            stats = f"{tmp}/sink{i}.json"
            sink, sink_address = start_sink(s.exporter, sink_port, stats)
            cfg = Path(tmp) / f"c{i}.yaml"
            cfg.write_text(collector_config(s, port, sink_address, mport))
            coll = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "otelflow", "run",
                                     "--config", str(cfg)], stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port, 15)
                proc = psutil.Process(coll.pid)
                watcher = RSSWatcher(coll.pid)
                watcher.start()
                is_latency_run = latency and i == repeat
                stop = threading.Event()
                prober = threading.Thread(target=send_probes, args=(port, s.signal, stop))
                if is_latency_run:
                    prober.start()
                cpu0, acc0 = sum(proc.cpu_times()[:2]), scrape(mport, signal)
                rate = statistics.median(rates) / 2 if is_latency_run else offered
                load = run_load(s, port, duration, rate)
                refused += load["refused_items"]
                # from the first request sent (not counting the load generator's start-up)
                elapsed = drained_at(mport, signal) - load["started_at"]
                cpu, acc = sum(proc.cpu_times()[:2]) - cpu0, scrape(mport, signal) - acc0
                stop.set()
                if prober.is_alive():
                    prober.join()
                watcher.running = False
                if not is_latency_run:
                    rates.append(acc / elapsed)
                    cpu_per_m.append(cpu / (acc / 1e6) if acc else float("nan"))
                    peaks.append(watcher.peak / 2**20)
                    busy.append(cpu / elapsed)
                else:  # steady state: the queues never fill at half the max rate
                    half_rate_rss = watcher.peak / 2**20
            finally:
                coll.terminate()
                coll.wait(30)
                sink.terminate()
                sink.wait(10)
            if latency and i == repeat and Path(stats).exists():
                lat = json.loads(Path(stats).read_text())["latencies_ms"]
    fl = floor(s)
    med = statistics.median(rates)
    result = {"scenario": s.name, "items_per_s": med, "runs": [round(r) for r in rates],
              "cpu_s_per_million": statistics.median(cpu_per_m), "peak_rss_mib": max(peaks),
              "floor_items_per_s": fl, "ratio_to_floor": med / fl, "go_figure": s.go_figure,
              "collector_cpu_share": statistics.median(busy), "refused_items": refused}
    if offered:
        result["offered_items_per_s"] = offered
    if half_rate_rss is not None:
        result["half_rate_rss_mib"] = half_rate_rss
    if lat:
        q = statistics.quantiles(lat, n=100)
        result.update(p50_ms=statistics.median(lat), p99_ms=q[98], probes=len(lat))
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| scenario | items/s (median) | runs | CPU s / M items | collector CPU | refused "
             "| peak RSS MiB (max / half rate) | p50 / p99 ms | floor items/s | ratio "
             "| Go collector |",
             "|" + "---|" * 11]
    for r in results:
        lat = f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" if "p99_ms" in r else "-"
        lines.append(f"| {r['scenario']} | {r['items_per_s']:,.0f} | {r['runs']} "
                     f"| {r['cpu_s_per_million']:.2f} | {r['collector_cpu_share']:.0%} "
                     f"| {r['refused_items']:,} | {r['peak_rss_mib']:.0f} / "
                     f"{r.get('half_rate_rss_mib', float('nan')):.0f} | {lat} "
                     f"| {r['floor_items_per_s']:,.0f} | {r['ratio_to_floor']:.2f} "
                     f"| {r['go_figure'] or '-'} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenarios", nargs="*", help="names (default: all available)")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--rate", type=float, default=0,
                   help="offered items/s (default: as fast as the collector answers); with a "
                        "rate, a run shows whether the collector sustains it: collector CPU "
                        "share < 1, nothing refused, queues drained")
    args = p.parse_args()
    registry = Registry()
    chosen = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios]
    results = []
    for s in chosen:
        missing = available(s, registry)
        if missing:
            print(f"skipping {s.name}: {missing}", file=sys.stderr)
            continue
        print(f"running {s.name} ...", file=sys.stderr)
        results.append(run_scenario(s, args.duration, args.repeat, not args.no_latency,
                                    args.rate))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
