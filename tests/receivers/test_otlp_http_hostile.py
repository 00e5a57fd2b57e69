"""Hostile input against a collector subprocess: every request gets a clear status and the
collector keeps serving (each test ends with a well-formed request that must succeed)."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
import zlib

import cramjam
import grpc
import psutil
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelflow import otlp_json
from otelflow.pdata import Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.process import CollectorProcess, free_port

PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
LIMIT = 20 * 1024 * 1024  # the default max_request_body_size
HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    http, grpc_port = free_port(), free_port()
    out = tmp_path_factory.mktemp("hostile") / "out.jsonl"
    yaml = f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http:
        endpoint: "127.0.0.1:{http}"
        read_header_timeout: {HEADER_TIMEOUT}s
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    logs: {{receivers: [otlp], exporters: [file]}}
"""
    with CollectorProcess(yaml, wait_port=http) as proc:
        proc.url = f"http://127.0.0.1:{http}"
        proc.grpc_port = grpc_port
        yield proc


def post(collector, body: bytes, headers=PROTO, path="/v1/traces") -> requests.Response:
    return requests.post(collector.url + path, data=body, headers=headers, timeout=30)


def assert_still_serving(collector) -> None:
    response = post(collector, sample_request(Signal.TRACES, 2).SerializeToString())
    assert response.status_code == 200, response.content
    assert collector.proc.poll() is None


def message_of(response: requests.Response) -> str:
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()["message"]
    from google.rpc import status_pb2
    return status_pb2.Status.FromString(response.content).message


def span_request(**span_fields):
    request = sample_request(Signal.TRACES, 1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for key, value in span_fields.items():
        setattr(span, key, value)
    return request


@pytest.mark.parametrize("body", [
    sample_request(Signal.TRACES, 50).SerializeToString()[:-7],  # truncated
    b"\xde\xad\xbe\xef" * 100,  # garbage
], ids=["truncated", "garbage"])
def test_malformed_protobuf(collector, body):
    response = post(collector, body)
    assert response.status_code == 400
    assert "malformed OTLP protobuf" in message_of(response)
    assert_still_serving(collector)


@pytest.mark.parametrize("doc", [
    {"resourceSpans": {"not": "a list"}},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 7, "startTimeUnixNano": "soon"}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedAttributesCount": "many"}]}]}]},
    ["not", "an", "object"],
], ids=["list-is-object", "wrong-scalars", "string-for-int", "top-level-list"])
def test_json_with_wrong_types(collector, doc):
    response = post(collector, json.dumps(doc).encode(), JSON)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert "malformed OTLP/JSON" in message_of(response)
    assert_still_serving(collector)


@pytest.mark.parametrize("field,value,message", [
    ("traceId", "abcd" * 5, "traceId must be 16 bytes (32 hex digits), got 10"),
    ("traceId", "ab" * 17, "got 17"),
    ("spanId", "abc", "is not hex"),
    ("parentSpanId", "00" * 16, "parentSpanId must be 8 bytes"),
])
def test_ids_of_the_wrong_length(collector, field, value, message):
    doc = json.loads(otlp_json.dumps(span_request()))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = value
    response = post(collector, json.dumps(doc).encode(), JSON)
    assert response.status_code == 400
    assert message in message_of(response)
    assert_still_serving(collector)


def gzip_bomb(mib: int) -> bytes:
    """A valid gzip member inflating to `mib` MiB of zeros (about 1 KiB per MiB), built from
    one full-flushed deflate block repeated, so the test need not compress a GiB."""
    chunk = b"\0" * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first + again * (mib - 1)
            + deflate.flush() + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF))


def zstd_bomb(mib: int) -> bytes:
    compressor = cramjam.zstd.Compressor(3)
    chunk = b"\0" * (1 << 20)
    for _ in range(mib):
        compressor.compress(chunk)
    return bytes(compressor.finish())


def test_gzip_bomb_helper_is_a_real_bomb():
    assert len(gzip.decompress(gzip_bomb(8))) == 8 << 20


def rss(collector) -> int:
    return psutil.Process(collector.proc.pid).memory_info().rss


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compression_bomb_refused_without_inflating_it(collector, encoding):
    assert_still_serving(collector)
    bomb = gzip_bomb(1024) if encoding == "gzip" else zstd_bomb(1024)  # 1 GiB inflated
    assert len(bomb) < 1100 * 1024
    before = rss(collector)
    started = time.monotonic()
    response = post(collector, bomb, {**PROTO, "Content-Encoding": encoding})
    assert response.status_code == 413
    assert "once decompressed" in message_of(response)
    assert time.monotonic() - started < 5  # inflating 1 GiB would take far longer here
    assert rss(collector) - before < 50 * 1024 * 1024
    assert_still_serving(collector)


def test_body_over_the_limit(collector):
    response = post(collector, b"\0" * (LIMIT + 1))
    assert response.status_code == 413
    assert "max_request_body_size" in message_of(response)
    assert_still_serving(collector)


def test_ten_thousand_attributes_on_one_span(collector):
    request = span_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for i in range(10_000):
        attr = span.attributes.add()
        attr.key, attr.value.int_value = f"attr.{i}", i
    assert post(collector, request.SerializeToString()).status_code == 200
    assert post(collector, otlp_json.dumps(request).encode(), JSON).status_code == 200
    assert_still_serving(collector)


def nested_kvlist(depth: int):
    request = span_request()
    value = request.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    value.key = "deep"
    any_value = value.value
    for _ in range(depth):
        kv = any_value.kvlist_value.values.add()
        kv.key = "k"
        any_value = kv.value
    any_value.string_value = "bottom"
    return request


def test_deeply_nested_anyvalue(collector):
    # the protobuf runtime refuses to build more than 100 levels, so craft the wire bytes
    leaf = b"\x0a\x06bottom"  # AnyValue{string_value}
    for _ in range(10_000):
        kv = b"\x0a\x01k" + b"\x12" + _varint(len(leaf)) + leaf  # KeyValue{key, value}
        kvlist = b"\x0a" + _varint(len(kv)) + kv  # KeyValueList{values}
        leaf = b"\x32" + _varint(len(kvlist)) + kvlist  # AnyValue{kvlist_value}
    attribute = b"\x0a\x04deep\x12" + _varint(len(leaf)) + leaf
    span = span_request().resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    span += b"\x4a" + _varint(len(attribute)) + attribute  # Span.attributes = 9
    scope_spans = b"\x12" + _varint(len(span)) + span
    resource_spans = b"\x12" + _varint(len(scope_spans)) + scope_spans
    body = b"\x0a" + _varint(len(resource_spans)) + resource_spans
    response = post(collector, body)
    assert response.status_code == 400
    value = {"stringValue": "bottom"}
    for _ in range(10_000):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    doc = json.loads(otlp_json.dumps(span_request()))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "deep", "value": value}]
    text = _dumps_deep(doc)
    response = post(collector, text.encode(), JSON)
    assert response.status_code == 400
    assert "nested too deeply" in message_of(response) or "malformed" in message_of(response)
    # within the protobuf runtime's 100 levels the request is fine
    assert post(collector, nested_kvlist(30).SerializeToString()).status_code == 200
    assert_still_serving(collector)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _dumps_deep(doc) -> str:
    """json.dumps recurses; build the deep document's text iteratively instead."""
    value = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][0]["value"]
    depth = 0
    while "kvlistValue" in value:
        value = value["kvlistValue"]["values"][0]["value"]
        depth += 1
    inner = json.dumps(value)
    for _ in range(depth):
        inner = '{"kvlistValue":{"values":[{"key":"k","value":' + inner + "}]}}"
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][0]["value"] = "@@"
    return json.dumps(doc).replace('"@@"', inner)


def test_invalid_utf8_in_strings(collector):
    raw = span_request(name="NAME").SerializeToString().replace(b"NAME", b"N\xffM\xfe")
    response = post(collector, raw)
    assert response.status_code == 400
    doc = otlp_json.dumps(span_request(name="NAME")).encode()
    assert post(collector, doc.replace(b"NAME", b"N\xffM\xfe"), JSON).status_code == 400
    assert post(collector, doc.replace(b"NAME", b"N\\ud800M"), JSON).status_code == 400
    assert_still_serving(collector)


def test_thousand_slow_clients_do_not_starve_a_good_one(collector):
    host, port = collector.url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(1000):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
            slow.append(sock)
        started = time.monotonic()
        assert_still_serving(collector)
        assert time.monotonic() - started < 2.0
        # the header deadline frees every slow connection
        deadline = time.monotonic() + HEADER_TIMEOUT + 10
        for sock in slow:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1024) == b""
    finally:
        for sock in slow:
            sock.close()
    assert_still_serving(collector)


def test_broken_framing_and_abandoned_bodies(collector):
    host, port = collector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.0 400")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                     b"\r\nContent-Length: 100000\r\n\r\npartial")
    assert_still_serving(collector)


# -- fuzzing: protobuf and JSON decoders behind the server, then the server still answers ----

def _mutations(seed: bytes):
    return st.lists(st.tuples(st.integers(0, max(0, len(seed) - 1)), st.integers(0, 255)),
                    max_size=8).map(lambda edits: _apply(seed, edits))


def _apply(seed: bytes, edits) -> bytes:
    data = bytearray(seed)
    for pos, byte in edits:
        data[pos] = byte
    return bytes(data)


SEED_PROTO = sample_request(Signal.TRACES, 3).SerializeToString()
SEED_JSON = otlp_json.dumps(sample_request(Signal.LOGS, 2)).encode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceSpans", "resourceLogs", "scopeLogs", "logRecords", "body",
                         "traceId", "spanId", "attributes", "key", "value", "stringValue",
                         "kvlistValue", "values", "timeUnixNano", "severityNumber"]),
        children, max_size=4),
    max_leaves=30)


@settings(max_examples=150, deadline=5000, suppress_health_check=list(HealthCheck))
@given(case=st.one_of(
    st.binary(max_size=300).map(lambda b: ("proto", b)),
    _mutations(SEED_PROTO).map(lambda b: ("proto", b)),
    _mutations(SEED_JSON).map(lambda b: ("json", b)),
    json_values.map(lambda v: ("json", json.dumps({"resourceLogs": [v]}).encode())),
    st.binary(max_size=300).map(lambda b: ("gzip", b)),
))
def test_fuzz_http_decoders(collector, case):
    kind, body = case
    path = "/v1/logs" if kind == "json" else "/v1/traces"
    headers = {"proto": PROTO, "json": JSON, "gzip": {**PROTO, "Content-Encoding": "gzip"}}[kind]
    if kind == "gzip":
        body = zlib.compress(body)[:-3] if len(body) % 2 else gzip.compress(body)
    response = post(collector, body, headers, path)
    assert response.status_code in (200, 400), response.content


@settings(max_examples=100, deadline=5000, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=300), _mutations(SEED_PROTO)))
def test_fuzz_grpc_decoder(collector, body):
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        call = channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        try:
            call(body, timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc


def test_still_serving_after_everything_without_tracebacks(collector):
    assert_still_serving(collector)
    assert "Traceback" not in collector.logs()
