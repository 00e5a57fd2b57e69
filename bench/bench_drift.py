"""Cost of the drift processor per watched sample.

Feeds pre-built OTLP trace requests (SPANS spans each, two model versions as resources)
through `DriftProcessor.consume` and through a plain pass-through processor, and prints the
extra time per watched sample (median of RUNS runs) for three feature set-ups:

- duration: span duration, grouped by a resource attribute (the common case)
- attribute: a numeric span attribute, grouped by a span attribute (reads span attributes)
- detectors: `FeatureStream.add` alone (numpy windows, no OTLP reading)

Run: PYTHONPATH=src python bench/bench_drift.py [--spans 512] [--requests 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from otelflow.component import ComponentID, CreateSettings, Kind, Processor
from otelflow.pdata import Batch, Signal
from otelflow.processors.drift import DriftConfig, DriftProcessor
from otelflow.processors.drift_detectors import FeatureStream
from otelflow.telemetry.metrics import SelfMetrics

FEATURES = {
    "duration": {"name": "latency", "span": {"name": "predict"}, "group_by": ["model.version"],
                 "performance": {"direction": "higher_is_worse", "tolerance": 0.2}},
    "attribute": {"name": "score", "span": {"attribute": "prediction.score"},
                  "group_by": ["tenant"]},
}


class Null:
    mutates_data = False

    async def consume(self, batch: Batch) -> None:
        return None


def make_requests(n: int, spans: int, seed: int = 1) -> list[ExportTraceServiceRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        req = ExportTraceServiceRequest()
        for version in ("v1", "v2"):
            rs = req.resource_spans.add()
            for key, value in (("service.name", "inference"), ("model.version", version)):
                kv = rs.resource.attributes.add(key=key)
                kv.value.string_value = value
            ss = rs.scope_spans.add()
            for i, d in enumerate(rng.lognormal(4.6, 0.3, spans // 2)):
                span = ss.spans.add(name="predict", trace_id=rng.bytes(16), span_id=rng.bytes(8),
                                    start_time_unix_nano=1_700_000_000_000_000_000)
                span.end_time_unix_nano = span.start_time_unix_nano + int(d * 1e6)
                for k in range(8):  # realistic attribute load
                    span.attributes.add(key=f"attr.{k}").value.string_value = "x" * 8
                span.attributes.add(key="tenant").value.string_value = f"t{i % 4}"
                span.attributes.add(key="prediction.score").value.double_value = float(d)
        out.append(req)
    return out


def processor(feature: dict | None) -> Processor:
    if feature is None:
        return Processor(Null())
    settings = CreateSettings(ComponentID.parse("drift"), Kind.PROCESSOR,
                              logger=structlog.get_logger("bench"), metrics=SelfMetrics(),
                              signal=Signal.TRACES, pipeline="traces")
    return DriftProcessor(settings, DriftConfig.model_validate({"features": [feature]}), Null())


async def time_consume(proc: Processor, batches: list[Batch]) -> float:
    start = time.process_time()
    for batch in batches:
        await proc.consume(batch)
    return time.process_time() - start


def time_floor(requests: list[ExportTraceServiceRequest]) -> float:
    """The least any Python processor pays to look at spans: read name, start and end."""
    start = time.process_time()
    for req in requests:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    _ = (span.name, span.end_time_unix_nano - span.start_time_unix_nano)
    return time.process_time() - start


def time_detectors(samples: int, chunk: int) -> float:
    stream = FeatureStream(DriftConfig.model_validate(
        {"features": [FEATURES["duration"]]}).detector_settings(
        DriftConfig.model_validate({"features": [FEATURES["duration"]]}).features[0]))
    values = np.random.default_rng(2).lognormal(4.6, 0.3, samples)
    chunks = [values[i:i + chunk].tolist() for i in range(0, samples, chunk)]
    start = time.process_time()
    for c in chunks:
        stream.add(np.asarray(c, dtype=np.float64))
    return (time.process_time() - start) / samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    requests = make_requests(args.requests, args.spans)
    samples = args.requests * (args.spans // 2) * 2
    print(f"{args.requests} requests x {args.spans} spans (10 attributes each), "
          f"{args.runs} runs, median")
    results: dict[str, list[float]] = {"passthrough": [], **{k: [] for k in FEATURES}}
    for _ in range(args.runs):
        for name in results:
            batches = [Batch.of(r) for r in requests]
            proc = processor(FEATURES.get(name))
            results[name].append(await time_consume(proc, batches))
    base = statistics.median(results.pop("passthrough"))
    floor = statistics.median(time_floor(requests) for _ in range(args.runs)) / samples
    print(f"{'pass-through processor':<28}{base / samples * 1e6:8.3f} us/span")
    print(f"{'python floor':<28}{floor * 1e6:8.3f} us/span (a loop reading name + times)")
    for name, times in results.items():
        med = statistics.median(times)
        extra = (med - base) / samples * 1e6
        print(f"{'drift ' + name:<28}{extra:8.3f} us per watched sample "
              f"({extra / (floor * 1e6):4.1f}x the floor, {samples / med:,.0f} samples/s)")
    det = statistics.median(time_detectors(samples, args.spans // 2) for _ in range(args.runs))
    print(f"{'detectors only':<28}{det * 1e6:8.3f} us per sample")


if __name__ == "__main__":
    asyncio.run(main())
