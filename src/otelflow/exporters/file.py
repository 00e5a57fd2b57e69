"""`file` exporter: OTLP/JSON lines or length-prefixed protobuf, as the Go file exporter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from otelflow.component import CreateSettings, Exporter, Factory, Host, Kind
from otelflow.config.types import ConfigModel, Duration
from otelflow.fileformat import Format, encode_record
from otelflow.pdata import Batch


class FileExporterConfig(ConfigModel):
    path: str = Field(min_length=1)
    format: Format = "json"
    append: bool = False
    flush_interval: Duration = 1.0


def create(settings: CreateSettings, config: FileExporterConfig) -> FileExporter:
    return FileExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "file", FileExporterConfig, create,
                  description="OTLP/JSON lines or length-prefixed protobuf to a file",
                  workers="none")


class FileExporter(Exporter):
    def __init__(self, settings: CreateSettings, config: FileExporterConfig):
        self.config = config
        self._file = None
        self._flusher: asyncio.Task | None = None

    async def start(self, host: Host) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab" if self.config.append else "wb")
        if self.config.flush_interval:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def export(self, batch: Batch) -> None:
        assert self._file is not None, "file exporter used before start"
        if self.config.format == "proto":  # the wire bytes as they are: no parse when unchanged
            record = encode_record(None, "proto", batch.to_bytes())
        else:
            record = encode_record(batch.message, self.config.format)
        self._file.write(record)
        if not self.config.flush_interval:
            self._file.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if self._file is not None:
                self._file.flush()

    async def shutdown(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._file is not None:
            self._file.close()
            self._file = None
