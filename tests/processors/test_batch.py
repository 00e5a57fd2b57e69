from __future__ import annotations

import asyncio

import pytest

from otelflow.component import ComponentID, CreateSettings, Kind, PermanentError, RetryableError
from otelflow.pdata import Batch, Metadata, Signal
from otelflow.processors.batch import BatchConfig, BatchProcessor
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.configs import config_error
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


# -- metadata_keys -------------------------------------------------------------------------


def tenant(batch: Batch, **metadata) -> Batch:
    batch.metadata = Metadata({k.replace("_", "-"): v if isinstance(v, list) else [v]
                               for k, v in metadata.items()})
    return batch


async def test_metadata_keys_batch_each_combination_apart_and_pass_it_on():
    sink = Sink()
    proc = make(sink, send_batch_size=100, timeout="10s", metadata_keys=["X-Tenant"])
    await proc.consume(tenant(traces("a", 2), x_tenant="acme", x_other="dropped"))
    await proc.consume(tenant(traces("b", 3), x_tenant="globex"))
    await proc.consume(tenant(traces("c", 4), x_tenant="acme", x_other="also dropped"))
    await proc.shutdown()
    out = {b.metadata["x-tenant"]: names(b) for b in sink.batches}
    assert out == {("acme",): ["a-0", "a-1"] + [f"c-{i}" for i in range(4)],
                   ("globex",): ["b-0", "b-1", "b-2"]}
    # only the listed keys go on with the batch (Go: the batcher's own metadata)
    assert [dict(b.metadata) for b in sink.batches] == [{"x-tenant": ("acme",)},
                                                        {"x-tenant": ("globex",)}]


async def test_missing_empty_and_multiple_values_are_distinct_combinations():
    sink = Sink()
    proc = make(sink, send_batch_size=100, timeout="10s", metadata_keys=["k"])
    await proc.consume(traces("none", 1))  # no metadata at all
    await proc.consume(tenant(traces("other", 1), unrelated="x"))  # lacks k: same as none
    await proc.consume(tenant(traces("empty", 1), k=""))
    await proc.consume(tenant(traces("ab", 1), k=["a", "b"]))
    await proc.consume(tenant(traces("ba", 1), k=["b", "a"]))
    await proc.consume(tenant(traces("a", 1), k="a"))
    await proc.shutdown()
    groups = sorted(tuple(names(b)) for b in sink.batches)
    assert groups == [("a-0",), ("ab-0",), ("ba-0",), ("empty-0",), ("none-0", "other-0")]
    by_name = {names(b)[0]: b.metadata for b in sink.batches}
    assert by_name["none-0"] is None
    assert by_name["empty-0"] == Metadata({"k": [""]})
    assert by_name["ab-0"] == Metadata({"k": ["a", "b"]})


async def test_size_trigger_and_split_keep_the_combination():
    sink = Sink()
    proc = make(sink, send_batch_size=4, send_batch_max_size=4, timeout="10s",
                metadata_keys=["x-tenant"])
    await proc.consume(tenant(traces("a", 3), x_tenant="acme"))
    await proc.consume(tenant(traces("b", 3), x_tenant="globex"))
    assert sink.batches == []  # 3 + 3 items, but in two combinations: neither is full
    await proc.consume(tenant(traces("c", 6), x_tenant="acme"))
    assert [(b.item_count(), b.metadata["x-tenant"]) for b in sink.batches] == [
        (4, ("acme",)), (4, ("acme",)), (1, ("acme",))]


async def test_cardinality_limit_refuses_new_combinations_permanently():
    sink = Sink()
    proc = make(sink, send_batch_size=100, timeout="10s", metadata_keys=["x-tenant"],
                metadata_cardinality_limit=2)
    await proc.consume(tenant(traces("a", 1), x_tenant="acme"))
    await proc.consume(tenant(traces("b", 1), x_tenant="globex"))
    with pytest.raises(PermanentError, match="too many batcher metadata-value combinations"):
        await proc.consume(tenant(traces("c", 1), x_tenant="initech"))
    await proc.consume(tenant(traces("d", 1), x_tenant="acme"))  # a known one still goes in
    await proc.shutdown()
    assert sorted(names(b) for b in sink.batches) == [["a-0", "d-0"], ["b-0"]]
    gauge = proc.metrics.registry.get_sample_value(
        "otelcol_processor_batch_metadata_cardinality", {"processor": "batch"})
    assert gauge == 2


async def test_without_metadata_keys_batches_carry_no_metadata():
    sink = Sink()
    proc = make(sink, send_batch_size=100, timeout="10s")
    single = tenant(traces("a", 1), x_tenant="acme")
    await proc.consume(single)
    await proc.shutdown()
    assert [b.metadata for b in sink.batches] == [None]
    assert single.metadata is not None  # the incoming batch (maybe shared) is left alone
    sink.batches.clear()
    proc = make(sink, send_batch_size=100, timeout="10s")
    await proc.consume(tenant(traces("a", 1), x_tenant="acme"))
    await proc.consume(tenant(traces("b", 1), x_tenant="globex"))
    await proc.shutdown()
    assert [(b.item_count(), b.metadata) for b in sink.batches] == [(2, None)]


@pytest.mark.parametrize(("settings", "message"), [
    ({"metadata_keys": ["X-Tenant", "x-tenant"]},
     "duplicate entry in metadata_keys: 'x-tenant' (case-insensitive)"),
    ({"metadata_cardinality_limit": -1}, "processors.batch.metadata_cardinality_limit"),
    ({"metadata_key": ["x"]}, 'did you mean "metadata_keys"'),
])
def test_metadata_config_errors(settings, message):
    assert message in config_error({"batch": settings})
