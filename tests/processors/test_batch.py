from __future__ import annotations

import asyncio

import pytest

from otelflow.component import ComponentID, CreateSettings, Kind, RetryableError
from otelflow.pdata import Batch, Signal
from otelflow.processors.batch import BatchConfig, BatchProcessor
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from tests.builders import traces


class Sink:
    mutates_data = False

    def __init__(self, fail: bool = False):
        self.batches: list[Batch] = []
        self.fail = fail

    async def consume(self, batch: Batch) -> None:
        if self.fail:
            raise RetryableError("full")
        self.batches.append(batch)


def make(sink, **cfg) -> BatchProcessor:
    settings = CreateSettings(ComponentID("batch"), Kind.PROCESSOR, component_logger("p", "batch"),
                              SelfMetrics(), signal=Signal.TRACES, pipeline="traces")
    return BatchProcessor(settings, BatchConfig(**cfg), sink)


def names(batch: Batch) -> list[str]:
    return [s.name for rs in batch.message.resource_spans for ss in rs.scope_spans for s in ss.spans]


async def test_flushes_at_size_keeping_resource_grouping():
    sink = Sink()
    proc = make(sink, send_batch_size=10, timeout="10s")
    await proc.consume(traces("a", 4))
    await proc.consume(traces("b", 7))
    assert len(sink.batches) == 1
    out = sink.batches[0]
    assert out.item_count() == 11
    services = [rs.resource.attributes[0].value.string_value for rs in out.message.resource_spans]
    assert services == ["a", "b"]
    assert names(out) == [f"a-{i}" for i in range(4)] + [f"b-{i}" for i in range(7)]


async def test_flushes_on_timeout_and_keeps_bytes_of_single_request():
    sink = Sink()
    proc = make(sink, send_batch_size=1000, timeout="50ms")
    original = traces("a", 3)
    raw = original.unchanged_bytes
    await proc.consume(original)
    assert sink.batches == []
    await asyncio.sleep(0.2)
    assert len(sink.batches) == 1
    assert sink.batches[0].unchanged_bytes is raw


async def test_splits_above_max_size():
    sink = Sink()
    proc = make(sink, send_batch_size=5, send_batch_max_size=5, timeout="10s")
    await proc.consume(traces("a", 12))
    assert [b.item_count() for b in sink.batches] == [5, 5, 2]
    assert [n for b in sink.batches for n in names(b)] == [f"a-{i}" for i in range(12)]
    for b in sink.batches:
        rs = b.message.resource_spans[0]
        assert rs.resource.attributes[0].value.string_value == "a"
        assert rs.scope_spans[0].scope.name == "lib"


async def test_shutdown_flushes_pending():
    sink = Sink()
    proc = make(sink, send_batch_size=100, timeout="10s")
    await proc.consume(traces("a", 3))
    await proc.shutdown()
    assert [b.item_count() for b in sink.batches] == [3]


async def test_downstream_refusal_is_counted_as_drop():
    proc = make(Sink(fail=True), send_batch_size=2, timeout="10s")
    await proc.consume(traces("a", 3))
    dropped = proc.metrics.registry.get_sample_value(
        "otelflow_dropped_items_total",
        {"component": "batch", "otel_signal": "traces", "reason": "downstream_error"})
    assert dropped == 3


@pytest.mark.parametrize("bad", [{"send_batch_size": -1}, {"timeout": "x"},
                                 {"send_batch_size": 10, "send_batch_max_size": 5}])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        BatchConfig(**bad)
