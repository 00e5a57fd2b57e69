"""file exporter: records as the Go file exporter writes them; proto reuses the wire bytes."""

from __future__ import annotations

import pytest

from otelflow.exporters.file import FileExporter, FileExporterConfig
from otelflow.fileformat import read_records
from otelflow.pdata import Batch, Signal
from tests.builders import traces


async def export_all(path, fmt: str, batches: list[Batch]) -> None:
    exporter = FileExporter(None, FileExporterConfig(path=str(path), format=fmt,
                                                     flush_interval=0))
    await exporter.start(None)
    for batch in batches:
        await exporter.export(batch)
    await exporter.shutdown()


@pytest.mark.asyncio
async def test_proto_writes_unchanged_bytes_without_parsing(tmp_path):
    raw = traces("a", 3).to_bytes() + traces("b", 2).to_bytes()  # a merged batch, as batch makes
    lazy = Batch(Signal.TRACES, raw=raw, items=5)
    await export_all(tmp_path / "out.binpb", "proto", [lazy])
    assert lazy._message is None  # never parsed
    data = (tmp_path / "out.binpb").read_bytes()
    assert data == len(raw).to_bytes(4, "big") + raw
    [(_, message)] = read_records(tmp_path / "out.binpb", "proto", Signal.TRACES)
    assert [rs.resource.attributes[0].value.string_value for rs in message.resource_spans] == [
        "a", "b"]


@pytest.mark.asyncio
async def test_changed_batches_are_serialized(tmp_path):
    batch = traces("a", 3)
    batch.mutable().resource_spans[0].scope_spans[0].spans.pop()
    await export_all(tmp_path / "out.binpb", "proto", [batch])
    await export_all(tmp_path / "out.jsonl", "json", [batch])
    for path, fmt in ((tmp_path / "out.binpb", "proto"), (tmp_path / "out.jsonl", "json")):
        [(_, message)] = read_records(path, fmt, Signal.TRACES)
        assert message == batch.message
        assert len(message.resource_spans[0].scope_spans[0].spans) == 2
