"""`filelog` receiver: tails files matched by `include` globs into OTLP log records.

Files are tracked by fingerprint (their first `fingerprint_size` bytes), not by name, so a
rotated file (renamed, or a new file at the old path) is neither re-read nor lost. Offsets
advance only after the pipeline accepted the records, and are checkpointed through a
`file_storage` extension (`storage:`), so a restart resumes with no duplicates and no gaps.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from pydantic import Field, model_validator

from otelflow.anyvalue import set_any, set_attributes
from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PipelineError,
)
from otelflow.config.types import ByteSize, ConfigModel, Duration
from otelflow.pdata import Batch, Signal
from otelflow.receivers.filelog_operators import CRI_ENTRY_END, ContainerParser, Entry, Operator

CHECKPOINT_KEY = "file_input.knownFiles"
MAX_READ_PER_POLL = 4 << 20
MAX_KNOWN_FILES = 1024


class MultilineConfig(ConfigModel):
    line_start_pattern: str | None = None
    line_end_pattern: str | None = None

    @model_validator(mode="after")
    def _one(self) -> MultilineConfig:
        if bool(self.line_start_pattern) == bool(self.line_end_pattern):
            raise ValueError("set exactly one of line_start_pattern, line_end_pattern")
        re.compile(self.line_start_pattern or self.line_end_pattern or "")
        return self


class FileLogConfig(ConfigModel):
    include: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    start_at: Literal["beginning", "end"] = "end"
    poll_interval: Duration = 0.2
    fingerprint_size: ByteSize = 1000
    max_log_size: ByteSize = 1 << 20
    encoding: Literal["utf-8", "utf8", "ascii"] = "utf-8"
    include_file_name: bool = True
    include_file_path: bool = False
    multiline: MultilineConfig | None = None
    force_flush_period: Duration = 0.5
    storage: str | None = None
    operators: list[Operator] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    resource: dict[str, str] = Field(default_factory=dict)


def create(settings: CreateSettings, config: FileLogConfig,
           consumers: Mapping[Signal, Consumer]) -> FileLogReceiver:
    return FileLogReceiver(settings, config, consumers[Signal.LOGS])


FACTORY = Factory(Kind.RECEIVER, "filelog", FileLogConfig, create,
                  signals=frozenset({Signal.LOGS}), description="Tail log files",
                  workers="first")


@dataclass
class Reader:
    """One tracked file: its fingerprint and how far it has been delivered."""

    fingerprint: bytes
    offset: int
    path: str
    handle: BinaryIO | None = None
    size_seen: int = -1
    changed_at: float = 0.0


class FileLogReceiver(Component):
    def __init__(self, settings: CreateSettings, config: FileLogConfig, consumer: Consumer):
        self.id = str(settings.id)
        self.config = config
        self.consumer = consumer
        self.log = settings.logger
        self.metrics = settings.metrics
        self.readers: list[Reader] = []
        self._storage = None
        self._task: asyncio.Task | None = None
        self._first_poll = True
        ml = config.multiline
        self._start = re.compile(ml.line_start_pattern) if ml and ml.line_start_pattern else None
        self._end = re.compile(ml.line_end_pattern) if ml and ml.line_end_pattern else None
        if ml is None and any(isinstance(op, ContainerParser) and op.format != "docker"
                              for op in config.operators):
            self._end = CRI_ENTRY_END  # partial CRI lines wait for the line that ends them

    async def start(self, host: Host) -> None:
        if self.config.storage:
            self._storage = await host.extension(self.config.storage).client(Kind.RECEIVER, self.id)
            await self._load_checkpoints()
        self._task = asyncio.create_task(self._run(), name=f"{self.id} poller")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for reader in self.readers:
            self._close(reader)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception:
                self.log.exception("filelog poll failed")
            await asyncio.sleep(max(0.0, self.config.poll_interval - (time.monotonic() - started)))

    # -- discovery and fingerprints ------------------------------------------------------

    def _matched_paths(self) -> list[str]:
        paths = {p for pattern in self.config.include for p in glob.glob(pattern)}
        excluded = {p for pattern in self.config.exclude for p in glob.glob(pattern)}
        return sorted(p for p in paths - excluded if os.path.isfile(p))

    def _find(self, fingerprint: bytes) -> Reader | None:
        for reader in self.readers:
            known = reader.fingerprint
            if fingerprint.startswith(known) or known.startswith(fingerprint):
                return reader
        return None

    def _open_matched(self) -> list[Reader]:
        active = []
        for path in self._matched_paths():
            try:
                handle = open(path, "rb")  # noqa: SIM115 - kept open across polls
                fingerprint = handle.read(self.config.fingerprint_size)
            except OSError:
                continue
            if not fingerprint:
                handle.close()
                continue
            reader = self._find(fingerprint)
            if reader is None:
                at_end = self.config.start_at == "end" and self._first_poll
                size = os.fstat(handle.fileno()).st_size
                reader = Reader(fingerprint, size if at_end else 0, path)
                self.readers.append(reader)
            if reader in active:  # a copy of a file already read this poll
                handle.close()
                continue
            if len(fingerprint) > len(reader.fingerprint):
                reader.fingerprint = fingerprint
            self._close(reader)
            reader.handle, reader.path = handle, path
            active.append(reader)
        self._first_poll = False
        return active

    @staticmethod
    def _close(reader: Reader) -> None:
        if reader.handle is not None:
            reader.handle.close()
            reader.handle = None

    # -- reading -----------------------------------------------------------------------------

    async def poll(self) -> None:
        """Read what is new in every matched file (and the rest of files rotated away)."""
        previous = [r for r in self.readers if r.handle is not None]
        active = self._open_matched()
        rotated_away = [r for r in previous if r not in active]
        for reader in [*rotated_away, *active]:
            await self._read(reader, final=reader in rotated_away)
        for reader in rotated_away:
            self._close(reader)
        del self.readers[:-MAX_KNOWN_FILES]

    async def _read(self, reader: Reader, final: bool) -> None:
        handle = reader.handle
        if handle is None:
            return
        size = os.fstat(handle.fileno()).st_size
        now = time.monotonic()
        if size != reader.size_seen:
            reader.size_seen, reader.changed_at = size, now
        if size < reader.offset:  # truncated in place: start over
            reader.offset = 0
        if size == reader.offset:
            return
        handle.seek(reader.offset)
        data = handle.read(MAX_READ_PER_POLL)
        at_eof = reader.offset + len(data) >= size
        flush_tail = at_eof and (final or now - reader.changed_at >= self.config.force_flush_period)
        entries, consumed = self._split(data, flush_tail)
        if not entries:
            return
        if await self._deliver(reader, entries):
            reader.offset += consumed
            await self._save_checkpoints()

    def _split(self, data: bytes, flush_tail: bool) -> tuple[list[str], int]:
        """Complete entries in `data` and how many bytes they span. The bytes after the last
        newline, and a multiline entry that may still grow, wait unless `flush_tail`."""
        lines = [(line, len(line) + 1) for line in data.split(b"\n")]
        tail, tail_size = lines.pop()
        if tail and (flush_tail or tail_size > self.config.max_log_size):
            lines.append((tail, tail_size - 1))
        entries: list[tuple[list[bytes], int]] = []
        for line, size in lines:
            if entries and self._continues(entries[-1][0], line):
                entries[-1][0].append(line)
                entries[-1] = (entries[-1][0], entries[-1][1] + size)
            else:
                entries.append(([line], size))
        if entries and not (flush_tail or self._multiline_done(entries[-1][0])):
            entries.pop()
        consumed = sum(size for _lines, size in entries)
        return [self._decode(b"\n".join(lines_)) for lines_, _ in entries], consumed

    def _continues(self, entry: list[bytes], line: bytes) -> bool:
        """Whether `line` belongs to the multiline entry made of `entry` so far."""
        if self._start is not None:
            return not self._start.search(self._decode(line))
        if self._end is not None:
            return not self._end.search(self._decode(entry[-1]))
        return False

    def _multiline_done(self, lines: list[bytes]) -> bool:
        """Whether the last entry is known to be complete without waiting for more lines."""
        if self._start is not None:
            return False  # the next start line (or the flush period) completes it
        if self._end is not None:
            return bool(self._end.search(self._decode(lines[-1])))
        return True

    def _decode(self, raw: bytes) -> str:
        return raw.decode(self.config.encoding, errors="replace").rstrip("\r")

    # -- records --------------------------------------------------------------------------

    async def _deliver(self, reader: Reader, lines: list[str]) -> bool:
        request = self._request(reader.path, lines)
        batch = Batch.of(request)
        n = batch.item_count()
        if n == 0:
            return True
        try:
            await self.consumer.consume(batch)
        except PipelineError as exc:
            self.metrics.receiver_refused(self.id, "", Signal.LOGS, n)
            self.log.warning("pipeline refused log lines; will read them again", error=str(exc),
                             path=reader.path)
            return False
        self.metrics.receiver_accepted(self.id, "", Signal.LOGS, n)
        return True

    def _request(self, path: str, lines: list[str]) -> ExportLogsServiceRequest:
        request = ExportLogsServiceRequest()
        groups: dict[tuple, Any] = {}
        observed = time.time_ns()
        base_attrs = dict(self.config.attributes)
        if self.config.include_file_name:
            base_attrs["log.file.name"] = os.path.basename(path)
        if self.config.include_file_path:
            base_attrs["log.file.path"] = path
        operators = self.config.operators
        for line in lines:
            entry = Entry(body=line, path=path, attributes=dict(base_attrs),
                          resource=dict(self.config.resource))
            if operators and not all(op.apply(entry) for op in operators):
                continue
            key = tuple(entry.resource.items())
            scope = groups.get(key)
            if scope is None:
                rl = request.resource_logs.add()
                set_attributes(rl.resource.attributes, entry.resource)
                scope = groups[key] = rl.scope_logs.add()
            record = scope.log_records.add(
                observed_time_unix_nano=observed, time_unix_nano=entry.timestamp_ns,
                severity_number=entry.severity_number, severity_text=entry.severity_text)
            set_any(record.body, entry.body)
            set_attributes(record.attributes, entry.attributes)
        return request

    # -- checkpoints -------------------------------------------------------------------------

    async def _load_checkpoints(self) -> None:
        raw = await self._storage.get(CHECKPOINT_KEY)
        if not raw:
            return
        for item in json.loads(raw):
            self.readers.append(Reader(bytes.fromhex(item["fingerprint"]), item["offset"],
                                       item["path"]))
        self._first_poll = False  # known files resume; new ones are read from the start

    async def _save_checkpoints(self) -> None:
        if self._storage is None:
            return
        state = [{"fingerprint": r.fingerprint.hex(), "offset": r.offset, "path": r.path}
                 for r in self.readers]
        await self._storage.set(CHECKPOINT_KEY, json.dumps(state).encode())
