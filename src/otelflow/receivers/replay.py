"""`replay` receiver: feeds recorded OTLP files (the `file` exporter's formats) into pipelines.

`speed: max` sends as fast as the pipeline takes the data; `realtime` (or a factor such as
`10`, ten times faster) keeps the recorded gaps between requests, ordered by their newest
timestamp across all files. `rebase_timestamps` shifts every timestamp so that the newest item
of the fixture set is "now" when a pass starts. Without `loop` the receiver finishes after one
pass: `wait_finished()` returns and `otelflow replay` shuts the service down.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    RetryableError,
)
from otelflow.config.types import ConfigModel
from otelflow.fileformat import Format, read_proto_frames, read_records
from otelflow.pdata import Batch, Signal
from otelflow.timestamps import newest_timestamp, shift_timestamps

EXTENSIONS: dict[str, tuple[str, ...]] = {"json": (".jsonl", ".json"), "proto": (".pb", ".binpb")}


class ReplayConfig(ConfigModel):
    path: str | list[str]
    format: Format = "json"
    signal: Literal["traces", "metrics", "logs"] | None = None
    speed: Literal["realtime", "max"] | float = "realtime"
    loop: bool = False
    rebase_timestamps: bool = False

    @field_validator("path")
    @classmethod
    def _some_path(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, list) and not all(value)):
            raise ValueError("give a file, directory or glob pattern (or a list of them)")
        return value

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text in ("realtime", "max"):
            return text
        try:
            factor = float(text.removesuffix("x"))
        except ValueError:
            raise ValueError(f"invalid speed {value!r}: use realtime, max or a positive factor "
                             "such as 10 (ten times faster) or 0.5") from None
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"speed factor must be positive and finite, got {value!r}")
        return factor

    @property
    def factor(self) -> float | None:
        """How many times faster than recorded (None: as fast as possible)."""
        if self.speed == "max":
            return None
        return 1.0 if self.speed == "realtime" else float(self.speed)

    @property
    def patterns(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


def create(settings: CreateSettings, config: ReplayConfig,
           consumers: Mapping[Signal, Consumer]) -> ReplayReceiver:
    return ReplayReceiver(settings, config, consumers)


FACTORY = Factory(Kind.RECEIVER, "replay", ReplayConfig, create,
                  description="Replay recorded OTLP files (file exporter formats)",
                  workers="first")


class ReplayReceiver(Component):
    """Replays files once (or forever with `loop`) into the consumers of their signals."""

    def __init__(self, settings: CreateSettings, config: ReplayConfig,
                 consumers: Mapping[Signal, Consumer]):
        self.id = str(settings.id)
        self.config = config
        self.consumers = dict(consumers)
        self.log = settings.logger
        self.metrics = settings.metrics
        self.files: list[tuple[Path, Signal | None]] = []
        self.replayed = 0  # items accepted by the pipeline
        self.error: BaseException | None = None
        self._task: asyncio.Task | None = None
        self._finished: asyncio.Event | None = None
        self._skipped: set[Signal] = set()
        self._stopping = False

    async def start(self, host: Host) -> None:
        self.files = resolve_files(self.config)
        self._finished = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"{self.id}-replay")
        self._task.add_done_callback(lambda task: self._on_done(task, host))

    def _on_done(self, task: asyncio.Task, host: Host) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            host.report_fatal(RuntimeError(f"receiver {self.id!r}: {self.error}"))
        assert self._finished is not None
        self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished is not None and self._finished.is_set()

    async def wait_finished(self) -> None:
        """Return once every file has been replayed (never with `loop`); raise its error."""
        assert self._finished is not None, "receiver not started"
        await self._finished.wait()
        if self.error is not None:
            raise self.error

    async def shutdown(self) -> None:
        self._stopping = True  # asyncio.wait_for downstream may swallow a cancellation (3.11)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        started = time.monotonic()
        for _ in itertools.count() if self.config.loop else range(1):
            await self._pass()
            if self._stopping:
                return
        self.log.info("replay finished", items=self.replayed,
                      seconds=round(time.monotonic() - started, 3))

    async def _pass(self) -> None:
        delta = 0
        if self.config.rebase_timestamps:
            newest = max((newest_timestamp(b.signal, b.message) for b in self._batches()), default=0)
            delta = time.time_ns() - newest if newest else 0
        factor = self.config.factor
        async for batch in self._unpaced() if factor is None else self._paced(factor):
            if self._stopping:
                return
            if delta:
                shift_timestamps(batch.signal, batch.mutable(), delta)
            await self._deliver(batch)

    def _batches(self) -> Iterator[Batch]:
        for path, signal in self.files:
            yield from read_batches(path, self.config.format, signal)

    async def _unpaced(self) -> AsyncIterator[Batch]:
        for batch in self._batches():
            yield batch
            await asyncio.sleep(0)  # let exporter queues and timers run

    async def _paced(self, factor: float) -> AsyncIterator[Batch]:
        """Batches in timestamp order, each sent when its recorded gap (/factor) has passed."""
        streams = [((newest_timestamp(b.signal, b.message), b)
                    for b in read_batches(path, self.config.format, signal))
                   for path, signal in self.files]
        origin: tuple[float, int] | None = None
        for stamp, batch in heapq.merge(*streams, key=lambda pair: pair[0]):
            if origin is None:
                origin = (time.monotonic(), stamp)
            due = origin[0] + (stamp - origin[1]) / 1e9 / factor
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield batch

    async def _deliver(self, batch: Batch) -> None:
        consumer = self.consumers.get(batch.signal)
        if consumer is None:
            if batch.signal not in self._skipped:
                self._skipped.add(batch.signal)
                self.log.warning("no pipeline takes this signal from the receiver; skipping it",
                                 signal=batch.signal.value)
            return
        n = batch.item_count()
        try:
            await push(consumer, batch)
        except Exception as exc:
            self.metrics.receiver_refused(self.id, "replay", batch.signal, n)
            self.log.error("pipeline refused replayed data", error=str(exc), items=n)
            return
        self.replayed += n
        self.metrics.receiver_accepted(self.id, "replay", batch.signal, n)


async def push(consumer: Consumer, batch: Batch, max_delay: float = 0.5) -> None:
    """Consume `batch`, waiting and retrying while the pipeline answers `RetryableError`
    (backpressure: a full sending queue). `PermanentError` and bugs propagate."""
    delay = 0.005  # in process, poll the queue rather than wait the SDK-facing retry_after
    while True:
        try:
            await consumer.consume(batch)
            return
        except RetryableError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def read_batches(path: Path, fmt: Format, signal: Signal | None) -> Iterator[Batch]:
    """Batches of one file. JSON lines say their signal (`signal` then filters); proto files
    hold `signal` only and stay as wire bytes until a component reads them."""
    if fmt == "proto":
        assert signal is not None
        for raw in read_proto_frames(path):
            yield Batch(signal, raw=raw)
        return
    for sig, message in read_records(path, "json"):
        if signal is None or sig is signal:
            yield Batch(sig, message=message)


def resolve_files(config: ReplayConfig) -> list[tuple[Path, Signal | None]]:
    """Expand `path` (files, directories, globs) into files, in order, each with the signal
    to read it as. Raises `ValueError` naming the pattern that matched nothing."""
    signal = Signal(config.signal) if config.signal else None
    out: list[tuple[Path, Signal | None]] = []
    for pattern in config.patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        files: list[Path] = []
        for match in map(Path, matches):
            if match.is_dir():
                files += sorted(p for p in match.iterdir()
                                if p.is_file() and p.suffix in EXTENSIONS[config.format])
            elif match.is_file():
                files.append(match)
        if not files:
            raise ValueError(f"path {pattern!r} matches no {config.format} fixture files")
        for file in files:
            if config.format == "proto" and signal is None:
                out.append((file, _signal_of_proto(file)))
            else:
                out.append((file, signal))
    return out


def _signal_of_proto(path: Path) -> Signal:
    stem = path.name.split(".")[0].replace("-", "_").split("_")[0]
    try:
        return Signal(stem)
    except ValueError:
        raise ValueError(f"{path}: cannot tell which signal this proto file holds: set `signal` "
                         "or name it traces.pb, metrics.pb or logs.pb") from None
