"""`otelflow replay` of 1,000,000 spans at speed max vs the pipeline's own throughput.

    PYTHONPATH=src python bench/bench_replay.py [--spans 1000000] [--runs 3]

Both sides run the same pipeline (batch -> file exporter, proto, to /dev/null):
- baseline: the pipeline in-process, fed by a loop pushing the same requests (already in
  memory, as wire bytes) straight into the pipeline entry; timed from service build to the
  drained shutdown. This is the most the pipeline can do with no receiver at all.
- replay: `otelflow replay --config F fixture.binpb` in a subprocess; its printed time covers
  service build, reading the file, the pipeline, and the drained shutdown. Wall time
  (interpreter start and imports included) is printed too.
Prints the median of `--runs` runs of each and the ratio replay / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.fileformat import encode_record
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.service import Service
from otelflow.telemetry.logs import configure_logging

SPANS_PER_REQUEST = 1000
CONFIG = """
receivers:
  otlp: {}
processors:
  batch: {}
exporters:
  file:
    path: /dev/null
    format: proto
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [file]}
"""


def request_bytes(seed: int) -> bytes:
    """One request of SPANS_PER_REQUEST spans with typical HTTP server attributes."""
    request = Signal.TRACES.request_type()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
    scope = rs.scope_spans.add()
    start = 1_700_000_000_000_000_000 + seed * 1_000_000_000
    for i in range(SPANS_PER_REQUEST):
        scope.spans.append(Span(
            trace_id=(seed * SPANS_PER_REQUEST + i).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
            name=f"GET /api/items/{i % 20}", kind=2, start_time_unix_nano=start + i * 1000,
            end_time_unix_nano=start + i * 1000 + 250_000, attributes=[
                KeyValue(key="http.request.method", value=AnyValue(string_value="GET")),
                KeyValue(key="http.route", value=AnyValue(string_value=f"/api/items/{i % 20}")),
                KeyValue(key="http.response.status_code", value=AnyValue(int_value=200)),
                KeyValue(key="server.address", value=AnyValue(string_value="api.example.com")),
                KeyValue(key="net.peer.port", value=AnyValue(int_value=40000 + i))]))
    return request.SerializeToString()


def write_fixture(path: Path, requests: list[bytes], count: int, fmt: str) -> None:
    records = [encode_record(Signal.TRACES.request_type.FromString(r), fmt, raw=r) for r in requests]
    with path.open("wb") as f:
        for i in range(count):
            f.write(records[i % len(records)])


async def baseline_once(requests: list[bytes], count: int) -> float:
    raw, source = load_config(text=CONFIG)
    started = time.perf_counter()
    service = Service(parse_config(raw, source))
    service.receivers.clear()
    await service.start()
    entry = service.pipeline_entries["traces"]
    for i in range(count):
        await entry.consume(Batch(Signal.TRACES, raw=requests[i % len(requests)]))
        await asyncio.sleep(0)
    await service.shutdown()
    return time.perf_counter() - started


def replay_once(config: Path, fixture: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "otelflow", "replay", "--config", str(config),
                           str(fixture)], env=os.environ, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    match = re.search(r"replayed (\d+) items from \d+ files in ([\d.]+)s", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", choices=("proto", "json"), default="proto",
                        help="fixture format (json: OTLP/JSON lines)")
    args = parser.parse_args()
    configure_logging("warn")
    count = args.spans // SPANS_PER_REQUEST
    requests = [request_bytes(seed) for seed in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        suffix = ".binpb" if args.format == "proto" else ".jsonl"
        fixture, config = Path(tmp) / f"traces{suffix}", Path(tmp) / "pipeline.yaml"
        write_fixture(fixture, requests, count, args.format)
        config.write_text(CONFIG)
        spans = count * SPANS_PER_REQUEST
        print(f"{spans:,} spans, {fixture.stat().st_size / 1e6:.0f} MB {args.format} fixture, "
              f"{args.runs} runs each")
        base, replay, wall = [], [], []
        for _ in range(args.runs):  # interleaved, so machine load hits both alike
            base.append(asyncio.run(baseline_once(requests, count)))
            seconds, total = replay_once(config, fixture)
            replay.append(seconds)
            wall.append(total)
    b, r, w = (statistics.median(x) for x in (base, replay, wall))
    print(f"baseline (in-process pipeline, no receiver): {spans / b:>10,.0f} spans/s  ({b:.2f}s)")
    print(f"otelflow replay, speed max:                  {spans / r:>10,.0f} spans/s  ({r:.2f}s)")
    print(f"  incl. interpreter start-up (wall):         {spans / w:>10,.0f} spans/s  ({w:.2f}s)")
    print(f"ratio replay / baseline: {b / r:.2f}  (wall: {b / w:.2f})")


if __name__ == "__main__":
    main()
