"""otlp_ids: the shadow-parse + regex check agrees with a plain walk over every id."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otelflow.otlp_ids import id_length_error
from otelflow.pdata import Signal

# mostly valid lengths, sometimes one off, so both outcomes are common
TRACE_ID = st.sampled_from([0, 16, 16, 16, 15, 17, 8, 1]).map(lambda n: b"\xab" * n)
SPAN_ID = st.sampled_from([0, 8, 8, 8, 7, 9, 16, 1]).map(lambda n: b"\x12" * n)
TEXT = st.text(alphabet="\x0a\x10\x12\x1ca", max_size=20)  # bytes that look like the framing


@st.composite
def traces(draw):
    request = Signal.TRACES.request_type()
    for _ in range(draw(st.integers(1, 2))):
        scope_spans = request.resource_spans.add().scope_spans
        for _ in range(draw(st.integers(0, 2))):
            spans = scope_spans.add().spans
            for _ in range(draw(st.integers(0, 4))):
                span = spans.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID),
                                 parent_span_id=draw(SPAN_ID), name=draw(TEXT))
                span.attributes.add(key=draw(TEXT)).value.string_value = draw(TEXT)
                for _ in range(draw(st.integers(0, 1))):
                    span.links.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID))
    return request


@st.composite
def logs(draw):
    request = Signal.LOGS.request_type()
    records = request.resource_logs.add().scope_logs.add().log_records
    for _ in range(draw(st.integers(0, 6))):
        records.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID),
                    body={"string_value": draw(TEXT)}, severity_text=draw(TEXT))
    return request


def plain_walk_is_valid(signal: Signal, request) -> bool:
    def ok(item, *names):
        return all(len(getattr(item, n)) in (0, 16 if n == "trace_id" else 8) for n in names)

    for resource in getattr(request, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            for item in getattr(scope, signal.item_field):
                if signal is Signal.LOGS and not ok(item, "trace_id", "span_id"):
                    return False
                if signal is Signal.TRACES and not (
                        ok(item, "trace_id", "span_id", "parent_span_id")
                        and all(ok(link, "trace_id", "span_id") for link in item.links)):
                    return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.one_of(traces().map(lambda r: (Signal.TRACES, r)),
                 logs().map(lambda r: (Signal.LOGS, r))))
def test_agrees_with_a_plain_walk(case):
    signal, request = case
    raw = request.SerializeToString()
    error = id_length_error(signal, raw, signal.request_type.FromString(raw))
    assert (error is None) == plain_walk_is_valid(signal, request), error


def test_names_the_first_bad_id():
    request = Signal.TRACES.request_type()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=b"a" * 16, span_id=b"b" * 8)
    spans.add(trace_id=b"a" * 16, span_id=b"b" * 8).links.add(span_id=b"c" * 4)
    raw = request.SerializeToString()
    assert id_length_error(Signal.TRACES, raw, request) == (
        "resource_spans[0].scope_spans[0].spans[1].links[0].span_id must be 8 bytes, got 4")


def test_metrics_are_not_checked():
    request = Signal.METRICS.request_type()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.gauge.data_points.add().exemplars.add(trace_id=b"short")
    assert id_length_error(Signal.METRICS, request.SerializeToString(), request) is None
