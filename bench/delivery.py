"""What durability costs: collector throughput per sending-queue kind, same run, same load.

loadgen (subprocess, max rate) -> collector (otlp receiver -> otlp exporter) -> sink
(subprocess, never parses). For each queue kind prints accepted items/s (median of --repeat
runs), collector CPU seconds per million items and peak RSS, and the ratio to the in-memory
queue measured in the same run.

    python bench/delivery.py [--repeat 3] [--duration 8] [--items 500]
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
from pathlib import Path

import psutil
import yaml

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from otelflow.testing.process import CollectorProcess, free_port, wait_for_port  # noqa: E402

QUEUES = {
    "no queue": {"enabled": False},
    "memory queue": {},
    "persistent queue": {"storage": "file_storage"},
    "persistent, fsync": {"storage": "file_storage/fsync"},
}


def config(port: int, sink_port: int, queue: dict, storage_dir: str) -> str:
    return yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"otlp": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True},
                               "compression": "none", "sending_queue": queue}},
        "extensions": {"file_storage": {"directory": storage_dir},
                       "file_storage/fsync": {"directory": storage_dir, "fsync": True}},
        "service": {"extensions": ["file_storage", "file_storage/fsync"],
                    "telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}},
    })


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)


def loadgen(port: int, args, rate: float = 0) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--endpoint",
                          f"127.0.0.1:{port}", "--items", str(args.items), "--duration",
                          str(args.duration), "--rate", str(rate)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_once(queue: dict, args) -> dict:
    port, sink_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sink = subprocess.Popen([sys.executable, str(HERE / "sink.py"), "--port", str(sink_port),
                                 "--stats", f"{tmp}/sink.json"])
        try:
            wait_for_port(sink_port)
            with CollectorProcess(config(port, sink_port, queue, tmp), wait_port=port) as col:
                proc = psutil.Process(col.proc.pid)
                sampler = Sampler(col.proc.pid)
                sampler.start()
                cpu0 = sum(proc.cpu_times()[:2])
                stats = loadgen(port, args)
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                sampler.done.set()
                col.stop()
        finally:
            sink.terminate()
            sink.wait()
        received = json.loads(Path(f"{tmp}/sink.json").read_text())["requests"] * args.items
    return {"items_per_s": stats["items_per_s"], "accepted": stats["accepted_items"],
            "received": received, "cpu_s_per_M": cpu / max(stats["accepted_items"], 1) * 1e6,
            "peak_rss_mib": sampler.peak / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--items", type=int, default=500)
    args = p.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in QUEUES}
    for _ in range(args.repeat):  # interleaved, so machine noise hits every kind alike
        for name, queue in QUEUES.items():
            results[name].append(run_once(queue, args))
            time.sleep(0.5)
    base = statistics.median(r["items_per_s"] for r in results["memory queue"])
    print(f"{'queue':<20} {'items/s':>10} {'vs memory':>10} {'CPU s/M items':>14} "
          f"{'peak RSS MiB':>13} {'lost':>6}")
    for name, runs in results.items():
        rate = statistics.median(r["items_per_s"] for r in runs)
        cpu = statistics.median(r["cpu_s_per_M"] for r in runs)
        rss = max(r["peak_rss_mib"] for r in runs)
        lost = sum(max(0, r["accepted"] - r["received"]) for r in runs)
        print(f"{name:<20} {rate:>10,.0f} {rate / base:>10.2f} {cpu:>14.2f} {rss:>13.0f} "
              f"{lost:>6}")


if __name__ == "__main__":
    main()
