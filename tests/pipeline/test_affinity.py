"""`TraceRouter`: each span goes to the worker owning its trace, exactly once, with its
resource and scope; a request owned by one worker passes through untouched."""

from __future__ import annotations

import zlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import RetryableError
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.affinity import TraceRouter, WorkerSlot
from otelflow.testing.sink import MemorySink


def request(services: int = 2, traces: int = 30, spans_per_trace: int = 3) -> Batch:
    req = ExportTraceServiceRequest()
    for s in range(services):
        rs = req.resource_spans.add()
        attr = rs.resource.attributes.add()
        attr.key, attr.value.string_value = "service.name", f"svc-{s}"
        ss = rs.scope_spans.add()
        ss.scope.name = f"lib-{s}"
        for t in range(traces):
            for i in range(spans_per_trace):
                span = ss.spans.add()
                span.trace_id = (t * 7919 + 1).to_bytes(16, "big")
                span.span_id = (s * 100000 + t * 100 + i + 1).to_bytes(8, "big")
                span.name = f"svc-{s}-{t}-{i}"
    return Batch.from_bytes(Signal.TRACES, req.SerializeToString())


def router(index: int, count: int = 3) -> tuple[TraceRouter, dict[int, MemorySink]]:
    sinks = {w: MemorySink(f"worker{w}") for w in range(count)}
    slot = WorkerSlot(index, count, "/nonexistent")
    peers = {w: sink for w, sink in sinks.items() if w != index}
    return TraceRouter(slot, sinks[index], peers), sinks  # type: ignore[arg-type]


def test_owner_is_crc32_of_the_trace_id_mod_workers():
    slot = WorkerSlot(0, 3, "/d")
    tid = bytes(range(16))
    assert slot.owner(tid) == zlib.crc32(tid) % 3
    assert WorkerSlot(2, 3, "/d").owner(tid) == slot.owner(tid)  # the same in every worker


async def test_every_span_reaches_its_owner_once_with_resource_and_scope():
    batch = request()
    expected = {span.name: (rs.resource.attributes[0].value.string_value, ss.scope.name,
                            zlib.crc32(span.trace_id) % 3)
                for rs in batch.message.resource_spans for ss in rs.scope_spans
                for span in ss.spans}
    route, sinks = router(1)
    await route.consume(batch)
    got = {}
    for worker, sink in sinks.items():
        for found in sink.spans():
            assert found.name not in got
            got[found.name] = (found.resource_attributes["service.name"], found.scope.scope.name,
                               worker)
    assert got == expected
    assert all(sink.item_count() for sink in sinks.values())  # 30 traces: all three own some


async def test_a_request_of_one_owner_passes_through_untouched():
    batch = request(services=1, traces=1)
    owner = zlib.crc32(batch.message.resource_spans[0].scope_spans[0].spans[0].trace_id) % 3
    for index in range(3):
        route, sinks = router(index)
        await route.consume(batch)
        assert sinks[owner].batches == [batch]
        assert sum(len(s.batches) for s in sinks.values()) == 1


async def test_a_full_peer_refuses_before_the_local_share_is_kept():
    route, sinks = router(0)
    sinks[2].fail_with = RetryableError("queue full")
    with pytest.raises(RetryableError):
        await route.consume(request())
    assert sinks[0].item_count() == 0
