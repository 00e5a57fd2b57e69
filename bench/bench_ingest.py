"""Ingest benchmarks for issue 13, on one core:

- filelog: lines/s through the json_parser (file pre-written, one poll loop, a no-op sink);
- prometheus scrape: CPU share of a core to scrape 100 targets x 1,000 series every 10 s
  (the targets are served by one aiohttp process on the other core).

    python bench/bench_ingest.py [--lines 200000] [--targets 100] [--series 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from otelflow.component import ComponentID, CreateSettings, Kind  # noqa: E402
from otelflow.receivers.filelog import FileLogConfig, FileLogReceiver  # noqa: E402
from otelflow.telemetry.logs import component_logger  # noqa: E402
from otelflow.telemetry.metrics import SelfMetrics  # noqa: E402
from otelflow.testing.process import free_port, wait_for_port  # noqa: E402


class NullSink:
    mutates_data = False

    def __init__(self):
        self.items = 0

    async def consume(self, batch) -> None:
        self.items += batch.item_count()


def settings(name: str) -> CreateSettings:
    return CreateSettings(ComponentID(name), Kind.RECEIVER, component_logger("r", name),
                          SelfMetrics())


async def filelog_once(path: Path, lines: int) -> float:
    sink = NullSink()
    config = FileLogConfig.model_validate({"include": [str(path)], "start_at": "beginning",
                                           "operators": [{"type": "json_parser"}]})
    rcv = FileLogReceiver(settings("filelog"), config, sink)
    start = time.process_time()
    while sink.items < lines:
        await rcv.poll()
    elapsed = time.process_time() - start
    await rcv.shutdown()
    return lines / elapsed


TARGETS_APP = """
import sys
from aiohttp import web
series = int(sys.argv[2])
body = "# TYPE app_requests_total counter\\n" + "".join(
    f'app_requests_total{{route="/r{i}",code="200"}} {i * 3}\\n' for i in range(series))
async def metrics(request):
    return web.Response(text=body, content_type="text/plain")
app = web.Application()
app.router.add_get("/metrics/{n}", metrics)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


async def _until(done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the scrapes did not arrive in time")
        await asyncio.sleep(0.01)


async def scrape_share(targets: int, series: int, rounds: int) -> float:
    """CPU share of a core for steady-state scrapes: `rounds` rounds after the first, each
    round's CPU set against the 10 s interval."""
    from otelflow.receivers.prometheus import PrometheusReceiver, PrometheusReceiverConfig

    port = free_port()
    app = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", TARGETS_APP, str(port),
                            str(series)])
    try:
        wait_for_port(port)
        config = PrometheusReceiverConfig.model_validate({"config": {"scrape_configs": [{
            "job_name": "bench", "scrape_interval": "10s",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            "relabel_configs": [{"source_labels": ["__address__"], "target_label": "__address__",
                                 "replacement": f"127.0.0.1:{port}"}],
        }]}})
        # one target per path: 100 distinct URLs on the same server
        config.config.scrape_configs = [
            config.config.scrape_configs[0].model_copy(update={
                "job_name": f"bench{i}", "metrics_path": f"/metrics/{i}"})
            for i in range(targets)]
        sink = NullSink()
        rcv = PrometheusReceiver(settings("prometheus"), config, sink)
        await rcv.start(None)
        await _until(lambda: sink.items >= targets * series, 60)  # first round: series are new
        per_round = 0
        while per_round != sink.items:  # the round's points incl. up/scrape_* and markers
            per_round = sink.items
            await asyncio.sleep(1.0)
        start_cpu = time.process_time()
        await _until(lambda: sink.items >= (rounds + 1) * per_round, 60 + rounds * 10)
        cpu = time.process_time() - start_cpu
        await rcv.shutdown()
        return cpu / (rounds * 10.0)  # CPU per round over the 10 s scrape interval
    finally:
        app.kill()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--targets", type=int, default=100)
    p.add_argument("--series", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        with path.open("w") as f:
            for i in range(args.lines):
                f.write(json.dumps({"ts": "2024-05-01T12:00:00Z", "level": "INFO",
                                    "msg": f"step {i} done", "loss": 0.1, "user": f"u{i % 97}"})
                        + "\n")
        rates = [asyncio.run(filelog_once(path, args.lines)) for _ in range(args.repeat)]
    print(f"filelog json_parser: median {statistics.median(rates):,.0f} lines/s per core "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    share = asyncio.run(scrape_share(args.targets, args.series, 2))
    print(f"prometheus scrape: {args.targets} targets x {args.series} series every 10 s "
          f"use {share:.1%} of a core")


if __name__ == "__main__":
    main()
