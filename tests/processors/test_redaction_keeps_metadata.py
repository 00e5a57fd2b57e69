"""The batches redaction builds (the splice of changed items into the received bytes, and the
native masker's bytes) keep the request metadata."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.pdata import Batch, Metadata, Signal
from tests.processors.helpers import build, put


@pytest.mark.parametrize("native", [True, False])
def test_a_new_batch_keeps_the_request_metadata(native):
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(5):
        put(scope.spans.add(name=f"s{i}").attributes,
            {"card": "4111111111111111" if i == 2 else "ok"})
    batch = Batch.from_bytes(Signal.TRACES, req.SerializeToString())
    batch.metadata = Metadata({"x-tenant": ["acme"]})
    processor = build("redaction", {"allow_all_keys": True, "blocked_values": ["4[0-9]{15}"]},
                      Signal.TRACES)
    if native:
        assert processor.native is not None
    else:
        processor.native = None
    out = processor.redact(batch)
    assert out is not batch  # a new batch over changed bytes
    assert out.metadata == batch.metadata
