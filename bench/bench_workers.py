"""`service.workers`: spans/s of the same scenario with 1 and with N worker processes.

Both runs share one constraint: the collector (supervisor + workers) may use cores 0-1, the
load generator (8 connections, so SO_REUSEPORT spreads them) and the sink stay on core 0, as
in `run.py`. Prints items/s (median of --repeat runs), the ratio N/1, and collector CPU
seconds per million items (supervisor and workers summed).

    python bench/bench_workers.py                        # passthrough, workers 1 vs 2
    python bench/bench_workers.py tail_sampling --workers 2 --repeat 5 --duration 10
    python bench/bench_workers.py passthrough tail_sampling --write   # bench/results/workers.md
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
from pathlib import Path

import psutil
from run import (
    SCENARIOS,
    Scenario,
    collector_config,
    drained_at,
    scrape,
    start_sink,
)

from otelflow.pdata import Signal
from otelflow.testing.process import free_port, wait_for_port

HERE = Path(__file__).resolve().parent
CONNECTIONS = 8
RESULTS = HERE / "results" / "workers.md"
HEADER = """# service.workers: measured figures

`python bench/bench_workers.py {args}` on this machine ({cores} cores, shared with other
sessions). Each scenario runs the collector with 1 worker and with N workers, interleaved, in the
same invocation; items/s are medians of the runs. The collector (supervisor + workers) may use
every core; the load generator (8 gRPC connections) and the sink are pinned to core 0, so with
2 cores the N-worker run shares core 0 with them: the ratio is a floor of what N free cores give.
tail_sampling adds the forwarding hop (about (N-1)/N of the spans go to another worker over a
unix socket), so its ratio shows the routing cost against the gain.

"""


def cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU of the collector and its worker processes."""
    total = 0.0
    for proc in [root, *root.children()]:
        with contextlib.suppress(psutil.Error):
            total += sum(proc.cpu_times()[:2])
    return total


def load(s: Scenario, port: int, duration: float) -> dict:
    cmd = ["taskset", "-c", "0", sys.executable, str(HERE / "loadgen.py"), "--endpoint",
           f"127.0.0.1:{port}", "--signal", s.signal, "--items", str(s.items), "--attrs",
           str(s.attrs), "--shape", s.shape, "--duration", str(duration),
           "--connections", str(CONNECTIONS), "--concurrency", str(2 * CONNECTIONS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_run(s: Scenario, workers: int, duration: float, tmp: str, i: int) -> tuple[float, float]:
    """(items/s, CPU s per million items) of one collector run."""
    port, sink_port, mport = free_port(), free_port(), free_port()
    sink, sink_address = start_sink(s.exporter, sink_port, f"{tmp}/sink{workers}-{i}.json")
    cfg = Path(tmp) / f"c{workers}-{i}.yaml"
    cfg.write_text(collector_config(s, port, sink_address, mport))
    coll = subprocess.Popen(["taskset", "-c", "0,1", sys.executable, "-m", "otelflow", "run",
                             "--config", str(cfg), "--workers", str(workers)],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(mport, 30)  # with workers: served once every worker is ready
        signal = Signal(s.signal)
        root = psutil.Process(coll.pid)
        cpu0, acc0 = cpu_seconds(root), scrape(mport, signal)
        started = load(s, port, duration)["started_at"]  # not counting loadgen's start-up
        elapsed = drained_at(mport, signal) - started
        cpu, acc = cpu_seconds(root) - cpu0, scrape(mport, signal) - acc0
        return acc / elapsed, cpu / (acc / 1e6) if acc else float("nan")
    finally:
        coll.terminate()
        coll.wait(60)
        sink.terminate()
        sink.wait(10)


def compare(s: Scenario, workers: int, duration: float, repeat: int) -> dict:
    rates: dict[int, list[float]] = {1: [], workers: []}
    cpu: dict[int, list[float]] = {1: [], workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):  # interleaved, so drifting machine load hits both alike
            for w in (1, workers):
                rate, per_m = one_run(s, w, duration, tmp, i)
                rates[w].append(rate)
                cpu[w].append(per_m)
    one, many = statistics.median(rates[1]), statistics.median(rates[workers])
    return {"scenario": s.name, "workers": workers, "items_per_s_1": one,
            "items_per_s_n": many, "ratio": many / one,
            "runs_1": [round(r) for r in rates[1]], "runs_n": [round(r) for r in rates[workers]],
            "cpu_s_per_million_1": statistics.median(cpu[1]),
            "cpu_s_per_million_n": statistics.median(cpu[workers])}


def markdown(results: list[dict]) -> str:
    lines = ["| scenario | workers | items/s, 1 worker | items/s, N workers | ratio N/1 "
             "| runs (1 / N) | CPU s / M items (1 / N) |", "|" + "---|" * 7]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['workers']} | {r['items_per_s_1']:,.0f} "
                     f"| {r['items_per_s_n']:,.0f} | {r['ratio']:.2f} "
                     f"| {r['runs_1']} / {r['runs_n']} "
                     f"| {r['cpu_s_per_million_1']:.2f} / {r['cpu_s_per_million_n']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenarios", nargs="*", default=["passthrough"],
                   help="run.py scenario names with an otlp exporter (default: passthrough)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = p.parse_args()
    chosen = [s for s in SCENARIOS if s.name in args.scenarios and s.exporter == "otlp"]
    results = []
    for s in chosen:
        print(f"running {s.name}: 1 vs {args.workers} workers ...", file=sys.stderr)
        results.append(compare(s, args.workers, args.duration, args.repeat))
        print(json.dumps(results[-1]), file=sys.stderr)
    table = markdown(results)
    print(table)
    if args.write:
        shown = " ".join(sys.argv[1:]).replace("--write", "").strip()
        RESULTS.write_text(HEADER.format(args=shown, cores=os.cpu_count()) + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
