"""Soak: 30 minutes at 50% of the measured max throughput; RSS must stay flat, nothing dropped.

loadgen (subprocess) -> collector (otlp -> memory_limiter -> batch -> otlp exporter with the
sending queue) -> sink (subprocess). First probes the max accepted rate for --probe seconds,
then runs at --load of it for --duration seconds while sampling the collector's RSS every
--every seconds. At the end it compares the collector's own counters (received = sent, no
drops, no refusals) and prints the RSS series and its drift. Not part of CI.

    python bench/soak.py                      # 30 min
    python bench/soak.py --duration 300       # a shorter look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from otelflow.testing.process import CollectorProcess, free_port, wait_for_port  # noqa: E402

MIB = 2**20


def config(port: int, sink_port: int, metrics_port: int) -> str:
    return yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {"memory_limiter": {"check_interval": "1s", "limit_mib": 400},
                       "batch": {"send_batch_size": 8192, "timeout": "200ms"}},
        "exporters": {"otlp": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True},
                               "compression": "none"}},
        "service": {"telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
                    "pipelines": {"traces": {"receivers": ["otlp"],
                                             "processors": ["memory_limiter", "batch"],
                                             "exporters": ["otlp"]}}},
    })


def loadgen(port: int, items: int, duration: float, rate: float = 0) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--endpoint",
                          f"127.0.0.1:{port}", "--items", str(items), "--duration",
                          str(duration), "--rate", str(rate)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def counters(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


class RssSeries(threading.Thread):
    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.every):
            self.samples.append((time.monotonic() - start,
                                 self.process.memory_info().rss / MIB))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=1800.0)
    p.add_argument("--probe", type=float, default=10.0)
    p.add_argument("--load", type=float, default=0.5, help="share of the max rate")
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--every", type=float, default=10.0)
    args = p.parse_args()
    port, sink_port, metrics_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sink = subprocess.Popen([sys.executable, str(HERE / "sink.py"), "--port",
                                 str(sink_port), "--stats", f"{tmp}/sink.json"])
        try:
            wait_for_port(sink_port)
            with CollectorProcess(config(port, sink_port, metrics_port),
                                  wait_port=port) as collector:
                max_rate = loadgen(port, args.items, args.probe)["items_per_s"]
                rate = max_rate * args.load
                print(f"max {max_rate:,.0f} items/s; soaking at {rate:,.0f} items/s for "
                      f"{args.duration:.0f} s", flush=True)
                time.sleep(2)  # the probe's last batches leave before counting starts
                before = counters(metrics_port)
                series = RssSeries(collector.proc.pid, args.every)
                series.start()
                stats = loadgen(port, args.items, args.duration, rate)
                series.done.set()
                time.sleep(2)  # let the batch processor and the queue empty
                after = counters(metrics_port)
                collector.stop()
        finally:
            sink.terminate()
            sink.wait()
    report(stats, before, after, series.samples)


def report(stats: dict, before: dict, after: dict, samples: list[tuple[float, float]]) -> None:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    accepted = delta("otelcol_receiver_accepted_spans_total")
    sent = delta("otelcol_exporter_sent_spans_total")
    print(f"loadgen: {stats['accepted_items']:,} accepted, {stats['refused_items']:,} refused, "
          f"{stats['items_per_s']:,.0f} items/s")
    print(f"collector: accepted {accepted:,.0f}, sent {sent:,.0f}, "
          f"dropped {delta('otelflow_dropped_items_total'):,.0f}, "
          f"send_failed {delta('otelcol_exporter_send_failed_spans_total'):,.0f}, "
          f"refused {delta('otelcol_receiver_refused_spans_total'):,.0f}")
    step = max(1, len(samples) // 15)
    print("RSS MiB over time:", ", ".join(f"{t / 60:.1f}m {rss:.0f}" for t, rss in samples[::step]))
    tenth = max(1, len(samples) // 10)
    early = statistics.median(r for _, r in samples[tenth:2 * tenth])  # after warm-up
    late = statistics.median(r for _, r in samples[-tenth:])
    print(f"RSS median 10-20%: {early:.1f} MiB, last 10%: {late:.1f} MiB, drift "
          f"{late - early:+.1f} MiB ({(late - early) / early:+.1%}); "
          f"max {max(r for _, r in samples):.1f} MiB")


if __name__ == "__main__":
    main()
