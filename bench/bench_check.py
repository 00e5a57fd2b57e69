"""The receivers' request check (`otelflow.otlp_check`, one C walk) against a upb parse of the
same requests, per request, in process.

    PYTHONPATH=src taskset -c 1 python bench/bench_check.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen

from otelflow.otlp_check import checked_batch
from otelflow.pdata import Signal


def best_us(call: Callable[[], object], calls: int = 200, runs: int = 5) -> float:
    """The best of `runs` averages over `calls` calls, in microseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


def main() -> None:
    cases = {
        "1,000 spans x 10 string attrs": (Signal.TRACES, loadgen.build_traces(
            1000, 10, 1, 0.01, 0.01, "default", 10)),
        "100 testbed spans": (Signal.TRACES, loadgen.build_traces(
            100, 2, 1, 0.01, 0.01, "testbed", 10)),
        "100 metric points (3 attrs)": (Signal.METRICS, loadgen.build_metrics(100, 3, 1)),
        "1,000 log records x 10 attrs": (Signal.LOGS, loadgen.build_logs(1000, 10, 1, "default")),
    }
    print("| request | bytes | upb parse | C check |\n|---|---:|---:|---:|")
    for name, (signal, request) in cases.items():
        raw = request.SerializeToString()
        parse = best_us(lambda s=signal, r=raw: s.request_type.FromString(r))
        check = best_us(lambda s=signal, r=raw: checked_batch(s, r))
        print(f"| {name} | {len(raw):,} | {parse:,.1f} µs | {check:,.1f} µs ({check / parse:.0%}) |")


if __name__ == "__main__":
    main()
