"""otlp_json: the direct decoder against google.protobuf.json_format, and its errors."""

from __future__ import annotations

import base64
import json
import math

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelflow import otlp_json
from otelflow.otlp_json import OTLPJSONError
from otelflow.pdata import Signal

ID_LENGTHS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
MAX_DEPTH = 9  # request -> resource -> scope -> span -> event -> attribute -> value -> ...
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
    FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1),
    FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=6)
    if kind == FieldDescriptor.TYPE_BYTES:
        if field.name in ID_LENGTHS:
            size = ID_LENGTHS[field.name]
            return st.binary(min_size=size, max_size=size) | st.just(b"")
        return st.binary(max_size=6)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=False)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(0, 99)
    low, high = INT_RANGES[kind]
    return st.integers(low, high)


@st.composite
def message_kwargs(draw, descriptor, depth: int = 0) -> dict:
    """Random constructor kwargs for `descriptor`, at most one field of each oneof."""
    kwargs = {}
    taken_oneofs = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.name in taken_oneofs:
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if (is_message and depth >= MAX_DEPTH) or not draw(st.booleans()):
            continue
        single = message_kwargs(field.message_type, depth + 1) if is_message else scalar(field)
        kwargs[field.name] = draw(st.lists(single, max_size=2) if field.is_repeated else single)
        if oneof is not None:
            taken_oneofs.add(oneof.name)
    return kwargs


@st.composite
def requests_as_json(draw):
    """(signal, request, its OTLP/JSON) with the JSON spelled any of the allowed ways."""
    signal = draw(st.sampled_from(list(Signal)))
    request = signal.request_type(**draw(message_kwargs(signal.request_type.DESCRIPTOR)))
    data = json_format.MessageToDict(
        request, use_integers_for_enums=draw(st.booleans()),
        preserving_proto_field_name=draw(st.booleans()))
    respell(data, draw(st.booleans()))
    return signal, request, data


def int64_keys() -> set[str]:
    """JSON and proto names of every 64-bit integer field (MessageToDict writes strings)."""
    keys, seen = set(), set()
    todo = [signal.request_type.DESCRIPTOR for signal in Signal]
    while todo:
        descriptor = todo.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                todo.append(field.message_type)
            elif field.type in INT_RANGES and INT_RANGES[field.type][1] >= 1 << 32:
                keys.update((field.name, field.json_name))
    return keys


INT64_KEYS = int64_keys()


def respell(node, ints_as_numbers: bool) -> None:
    """base64 ids -> hex (OTLP/JSON), and 64-bit ints as numbers instead of strings."""
    for key, value in list(node.items()):
        if key in ID_KEYS and isinstance(value, str):
            node[key] = base64.b64decode(value).hex()
        elif ints_as_numbers and key in INT64_KEYS:
            node[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif isinstance(value, dict):
            respell(value, ints_as_numbers)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    respell(item, ints_as_numbers)


def json_format_decode(signal: Signal, data: dict):
    """The reference: ids back to base64, then json_format.ParseDict."""
    data = json.loads(json.dumps(data))
    unhex(data)
    message = signal.request_type()
    json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def unhex(node) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if key in ID_KEYS and isinstance(value, str):
            node[key] = base64.b64encode(bytes.fromhex(value)).decode()
        elif isinstance(value, dict | list):
            unhex(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_as_json())
def test_decoder_agrees_with_json_format(case):
    signal, request, data = case
    decoded = otlp_json.decode(signal, json.loads(json.dumps(data)))
    assert decoded == request
    assert decoded.SerializeToString(deterministic=True) == json_format_decode(
        signal, data).SerializeToString(deterministic=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_as_json())
def test_encoder_agrees_with_json_format_and_round_trips(case):
    signal, request, _ = case
    expected = json_format.MessageToDict(request, use_integers_for_enums=True)
    respell(expected, ints_as_numbers=False)
    assert json.loads(otlp_json.dumps(request)) == json.loads(json.dumps(expected))
    assert otlp_json.loads(signal, otlp_json.dumps(request)) == request


def test_encoder_special_doubles():
    request = Signal.METRICS.request_type()
    points = request.resource_metrics.add().scope_metrics.add().metrics.add().gauge.data_points
    for value in (float("nan"), float("inf"), float("-inf"), 0.5):
        points.add(as_double=value)
    encoded = otlp_json.encode(request)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    assert [p["asDouble"] for p in encoded["gauge"]["dataPoints"]] == [
        "NaN", "Infinity", "-Infinity", 0.5]


SPAN = "resourceSpans[0].scopeSpans[0].spans[0]"


def span_doc(**span) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


@pytest.mark.parametrize("span,message", [
    ({"name": 7}, f"{SPAN}.name must be a string, got 7"),
    ({"startTimeUnixNano": "soon"}, f"{SPAN}.startTimeUnixNano must be an integer, got the "
                                    "string 'soon'"),
    ({"droppedAttributesCount": -1}, f"{SPAN}.droppedAttributesCount -1 is out of range"),
    ({"kind": "SPAN_KIND_SIDEWAYS"}, f"{SPAN}.kind 'SPAN_KIND_SIDEWAYS' is not a SpanKind"),
    ({"traceId": "ab" * 3}, f"{SPAN}.traceId must be 16 bytes (32 hex digits), got 3"),
    ({"spanId": "zz" * 8}, f"{SPAN}.spanId 'zzzzzzzzzzzzzzzz' is not hex"),
    ({"spanId": "00 11 22 33 44 55 66 77"}, "is not hex"),
    ({"attributes": {"key": "a"}}, f"{SPAN}.attributes must be a JSON array, got an object"),
    ({"attributes": [{"key": "a", "value": {"intValue": "x"}}]},
     f"{SPAN}.attributes[0].value.intValue must be an integer"),
    ({"attributes": [{"key": "a", "value": {"intValue": 1, "boolValue": True}}]},
     f"{SPAN}.attributes[0].value sets both int_value and bool_value of oneof 'value'"),
    ({"attributes": [{"key": "a", "value": {"bytesValue": "!!"}}]}, "is not base64"),
    ({"events": [{}, {"name": ["x"]}]}, f"{SPAN}.events[1].name must be a string, got an array"),
    ({"status": "ok"}, f"{SPAN}.status must be a JSON object, got the string 'ok'"),
])
def test_errors_name_the_field(span, message):
    with pytest.raises(OTLPJSONError) as info:
        otlp_json.decode(Signal.TRACES, span_doc(**span))
    assert message in str(info.value)


def test_accepted_spellings():
    doc = span_doc(kind="SPAN_KIND_SERVER", start_time_unix_nano="12", endTimeUnixNano=1e3,
                   traceId="", unknownField={"x": 1}, name=None,
                   attributes=[{"key": "f", "value": {"doubleValue": "-Infinity"}}])
    span = otlp_json.decode(Signal.TRACES, doc).resource_spans[0].scope_spans[0].spans[0]
    assert (span.kind, span.start_time_unix_nano, span.end_time_unix_nano) == (2, 12, 1000)
    assert span.trace_id == b"" and span.name == ""
    assert math.isinf(span.attributes[0].value.double_value)


def test_not_an_object_or_not_json():
    with pytest.raises(OTLPJSONError, match="must be a JSON object"):
        otlp_json.decode(Signal.LOGS, [])
    with pytest.raises(OTLPJSONError, match="invalid JSON"):
        otlp_json.loads(Signal.LOGS, b"{")
    with pytest.raises(OTLPJSONError):
        otlp_json.loads(Signal.LOGS, '{"resourceLogs": [{"scopeLogs": [{"logRecords": '
                                     '[{"severityText": "\\ud800"}]}]}]}')
