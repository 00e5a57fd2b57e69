"""Run a pipeline YAML in-process, feed it data, collect what its exporters got.

    pipeline = PipelineHarness("pipeline.yaml")            # or YAML text
    result = pipeline.run("tests/fixtures/http_api")       # fixtures, requests, dicts, batches
    errors = result["otlp/backend"].spans(attributes={"error": True})

Exporters named in `sinks` (all of them by default) are swapped for `MemorySink`s, so nothing
leaves the process. Data is pushed straight into the pipelines (receivers are not started
unless `receivers=True`), then the service shuts down, which flushes every processor and
queue; `run` returns once everything has drained. `async with` / `arun` for async tests.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from otelflow.component import Component, Factory, Kind, PermanentError
from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.config.types import EmptyConfig
from otelflow.fileformat import signal_of_json
from otelflow.otlp_json import decode
from otelflow.pdata import Batch, Request, Signal
from otelflow.pipeline.fanout import FanOut
from otelflow.pipeline.service import Service
from otelflow.receivers.replay import ReplayConfig, ReplayReceiver, push, read_batches, resolve_files
from otelflow.registry import Registry
from otelflow.replay import without_metrics_port
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.telemetry.summary import sample
from otelflow.testing.sink import MemorySink
from otelflow.timestamps import newest_timestamp, shift_timestamps

FEED_RECEIVER = "otelflow_feed"
"""The placeholder receiver the harness adds to pipelines that list none."""

_FEED_FACTORY = Factory(Kind.RECEIVER, FEED_RECEIVER, EmptyConfig, lambda s, c, consumers: Component(),
                        description="placeholder for data fed by otelflow.testing")

Data = Batch | Request | Mapping | str | Path | Iterable[Any]
"""What `feed` accepts: batches, OTLP request protobufs, OTLP/JSON dicts, fixture files,
directories or globs (.jsonl/.json: OTLP/JSON lines; .pb/.binpb: proto, signal from the
file name), or iterables of those."""


class PipelineResult:
    """What each sink got, plus the service's self-metrics and alerts after the run."""

    def __init__(self, sinks: Mapping[str, MemorySink], metrics: SelfMetrics, alerts: list[dict],
                 refused: list[tuple[Batch, BaseException]], skipped: dict[Signal, int]):
        self.sinks = dict(sinks)
        self.metrics = metrics
        self.alerts = alerts
        self.refused = refused  # (batch, PermanentError) the pipelines refused
        self.skipped = skipped  # items per signal that no pipeline took

    def __getitem__(self, exporter_id: str) -> MemorySink:
        try:
            return self.sinks[exporter_id]
        except KeyError:
            raise KeyError(f"no sink for exporter {exporter_id!r}; sinks: {sorted(self.sinks)}") from None

    def metric(self, name: str, **labels: str) -> float:
        """A self-metric sample, e.g. `metric("otelcol_exporter_sent_spans", exporter="otlp")`
        or `metric("otelflow_dropped_items", component=..., otel_signal=..., reason=...)`."""
        return sample(self.metrics, name, **labels)


class PipelineHarness:
    """A pipeline built from YAML (a path, or text containing a newline), run in-process.

    `sinks`: exporter ids to replace with `MemorySink`s (default: every exporter).
    `receivers`: also start the config's receivers (e.g. an OTLP port for a real SDK, or
    `replay` receivers, which are waited for before stopping). `env` adds `${env:VAR}` values.
    """

    def __init__(self, config: str | Path, *, sinks: Iterable[str] | None = None,
                 receivers: bool = False, env: Mapping[str, str] | None = None):
        text = config if isinstance(config, str) and "\n" in config else None
        raw, source = load_config(None if text else [config], env={**os.environ, **(env or {})},
                                  text=text)
        _with_feed_receiver(raw)
        without_metrics_port(raw)
        registry = Registry()
        registry.add(_FEED_FACTORY)
        self.config = parse_config(raw, source, registry)
        exporters = {e for p in self.config.pipelines.values() for e in p.exporters}
        self.sink_ids = sorted(exporters if sinks is None else sinks)
        unknown = sorted(set(self.sink_ids) - exporters)
        if unknown:
            raise ValueError(f"sinks {unknown} are not exporters of any pipeline; "
                             f"exporters: {sorted(exporters)}")
        self.start_receivers = receivers
        self.service: Service | None = None
        self.sinks: dict[str, MemorySink] = {}
        self._refused: list[tuple[Batch, BaseException]] = []
        self._skipped: dict[Signal, int] = {}
        self._final_alerts: list[dict] = []
        self._entries: dict[Signal, dict[str, Any]] = {}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> PipelineHarness:
        """Build a fresh service with fresh sinks and start it."""
        if self.service is not None and self.service.state in ("starting", "running"):
            raise RuntimeError("the pipeline is already running")
        self.sinks = {eid: MemorySink(eid) for eid in self.sink_ids}
        self._refused, self._skipped = [], {}
        self.service = Service(self.config, exporter_overrides=self.sinks)
        if not self.start_receivers:
            self.service.receivers.clear()
        self._entries = {}
        for pid, pipe in self.config.pipelines.items():
            self._entries.setdefault(pipe.signal, {})[pid] = self.service.pipeline_entries[pid]
        await self.service.start()
        return self

    async def stop(self, timeout: float = 60.0) -> PipelineResult:
        """Wait for replay receivers, shut down (flushing processors and queues), collect."""
        service = self._running()
        replays = [r for r in service.receivers.values()
                   if isinstance(r, ReplayReceiver) and not r.config.loop]
        try:
            if replays:
                await asyncio.wait_for(asyncio.gather(*(r.wait_finished() for r in replays)), timeout)
        finally:
            self._final_alerts = service.alerts()  # alert logs empty themselves at shutdown
            await service.shutdown()
        return self.result()

    async def __aenter__(self) -> PipelineHarness:
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self.stop()
        elif self.service is not None:  # failing test: do not wait for replays, just stop
            await self.service.shutdown()

    def result(self) -> PipelineResult:
        service = self._running(started=False)
        alerts = service.alerts() if service.state == "running" else self._final_alerts
        return PipelineResult(self.sinks, service.metrics, alerts, list(self._refused),
                              dict(self._skipped))

    def sink(self, exporter_id: str) -> MemorySink:
        """The live sink of an exporter (also readable while the pipeline runs)."""
        return self.result()[exporter_id]

    def _running(self, started: bool = True) -> Service:
        if self.service is None or (started and self.service.state != "running"):
            raise RuntimeError("the pipeline is not running: use `async with harness:` or run()")
        return self.service

    # -- feeding ------------------------------------------------------------------------

    async def feed(self, *data: Data, pipelines: Iterable[str] | None = None,
                   rebase_timestamps: bool = False) -> int:
        """Push data into every pipeline of its signal (or only `pipelines`); returns the items
        pushed. Data of a signal no chosen pipeline takes is skipped (`result.skipped`).

        Backpressure is waited out; data a pipeline refuses (`PermanentError`) is recorded in
        `result.refused`; other exceptions (bugs) propagate.
        """
        self._running()
        batches = list(to_batches(data))
        if rebase_timestamps:
            rebase(batches)
        chosen = set(pipelines) if pipelines is not None else None
        if chosen is not None and (unknown := chosen - set(self.config.pipelines)):
            raise ValueError(f"unknown pipelines {sorted(unknown)}; "
                             f"pipelines: {sorted(self.config.pipelines)}")
        items = 0
        for batch in batches:
            entries = [e for pid, e in self._entries.get(batch.signal, {}).items()
                       if chosen is None or pid in chosen]
            if not entries:  # as the replay receiver: data no pipeline takes is skipped
                self._skipped[batch.signal] = self._skipped.get(batch.signal, 0) + batch.item_count()
                continue
            items += batch.item_count()
            try:
                await push(FanOut(entries), batch)
            except PermanentError as exc:
                self._refused.append((batch, exc))
        return items

    async def arun(self, *data: Data, pipelines: Iterable[str] | None = None,
                   rebase_timestamps: bool = False) -> PipelineResult:
        """Start, feed `data`, stop (everything flushed) and return what the sinks got."""
        await self.start()
        try:
            await self.feed(*data, pipelines=pipelines, rebase_timestamps=rebase_timestamps)
        finally:
            result = await self.stop()
        return result

    def run(self, *data: Data, pipelines: Iterable[str] | None = None,
            rebase_timestamps: bool = False) -> PipelineResult:
        """`arun` for synchronous tests (runs its own event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(*data, pipelines=pipelines,
                                         rebase_timestamps=rebase_timestamps))
        raise RuntimeError("run() cannot be used inside a running event loop; "
                           "use `await harness.arun(...)` or `async with harness:`")


def to_batches(data: Iterable[Any]) -> Iterable[Batch]:
    """Batches from the kinds of data `feed` accepts (see `Data`)."""
    for item in data:
        if isinstance(item, Batch):
            yield item
        elif isinstance(item, Signal.TRACES.request_type | Signal.METRICS.request_type
                        | Signal.LOGS.request_type):
            yield Batch.of(item)
        elif isinstance(item, Mapping):
            signal = signal_of_json(item)  # decode() rewrites ids in place: give it a copy
            yield Batch(signal, message=decode(signal, copy.deepcopy(dict(item))))
        elif isinstance(item, str | Path):
            yield from load_fixture(item)
        elif isinstance(item, Iterable):
            yield from to_batches(item)
        else:
            raise TypeError(f"cannot feed {type(item).__name__}: give batches, OTLP requests, "
                            "OTLP/JSON dicts or fixture paths")


def load_fixture(path: str | Path) -> list[Batch]:
    """The batches of a fixture file, directory or glob (format from the file extension)."""
    fmt = "proto" if Path(path).suffix in (".pb", ".binpb") else "json"
    config = ReplayConfig(path=str(path), format=fmt)
    return [b for file, signal in resolve_files(config) for b in read_batches(file, fmt, signal)]


def rebase(batches: list[Batch], now_ns: int | None = None) -> None:
    """Shift all timestamps by one offset so that the newest item is `now_ns` (default now)."""
    newest = max((newest_timestamp(b.signal, b.message) for b in batches), default=0)
    if not newest:
        return
    delta = (now_ns if now_ns is not None else time.time_ns()) - newest
    for batch in batches:
        shift_timestamps(batch.signal, batch.mutable(), delta)


def _with_feed_receiver(raw: dict[str, Any]) -> None:
    """Give pipelines that list no receivers the placeholder receiver (data is fed directly)."""
    service = raw.get("service")
    pipelines = service.get("pipelines") if isinstance(service, dict) else None
    if not isinstance(pipelines, dict):
        return
    bare = [body for body in pipelines.values() if isinstance(body, dict) and not body.get("receivers")]
    for body in bare:
        body["receivers"] = [FEED_RECEIVER]
    if bare and isinstance(raw.get("receivers") or {}, dict):
        raw["receivers"] = {**(raw.get("receivers") or {}), FEED_RECEIVER: {}}

