"""The `otlp` receiver's HTTP protocol in-process: codecs, compression, limits, status codes,
partial success, CORS, config."""

from __future__ import annotations

import gzip
import json
import zlib

import aiohttp
import cramjam
import pytest
from google.rpc import code_pb2, status_pb2

from otelflow.component import Kind, PartiallyRejected, PermanentError, RetryableError
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.pdata import Signal
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service

PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def config(port: int, http_extra: str = "", telemetry: str = "metrics: {level: none}") -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
{http_extra}
exporters:
  debug: {{}}
service:
  telemetry: {{{telemetry}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
    metrics: {{receivers: [otlp], exporters: [debug]}}
    logs: {{receivers: [otlp], exporters: [debug]}}
"""


@pytest.fixture
async def server(request):
    """(base url, capture exporter, service); `request.param` adds http settings / a fail hook."""
    extra, fail = getattr(request, "param", ("", None))
    port = free_port()
    capture = CaptureExporter(fail)
    async with running_service(config(port, extra), {"debug": capture}) as service, \
            aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{port}", capture, service, session


@pytest.mark.parametrize("signal", list(Signal))
async def test_protobuf_each_signal(server, signal):
    url, capture, _, session = server
    request = sample_request(signal, 5)
    async with session.post(f"{url}/v1/{signal.value}", data=request.SerializeToString(),
                            headers=PROTO) as response:
        assert response.status == 200
        assert response.content_type == "application/x-protobuf"
        reply = signal.response_type.FromString(await response.read())
        assert not reply.HasField("partial_success")
    assert capture.items(signal) == 5
    assert capture.batches[0].message == request


async def test_json_with_hex_ids_enum_names_and_string_ints(server):
    url, capture, _, session = server
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "GET /", "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "attributes": [{"key": "n", "value": {"intValue": "42"}}]}]}]}]}
    async with session.post(f"{url}/v1/traces", json=body) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {}
    span = capture.batches[0].message.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.kind == 2 and span.end_time_unix_nano == 1544712661000000000
    assert span.attributes[0].value.int_value == 42


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("zlib", zlib.compress),
    ("zstd", lambda b: bytes(cramjam.zstd.compress(b))),
    ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),  # two gzip members
])
async def test_compressed_bodies(server, encoding, compress):
    url, capture, _, session = server
    request = sample_request(Signal.LOGS, 4)
    async with session.post(f"{url}/v1/logs", data=compress(request.SerializeToString()),
                            headers={**PROTO, "Content-Encoding": encoding}) as response:
        assert response.status == 200, await response.text()
    assert capture.batches[0].message == request


@pytest.mark.parametrize("server", [("        compression_algorithms: [gzip]", None)],
                         indirect=True)
async def test_compression_algorithms_limit_the_accepted_encodings(server):
    url, capture, _, session = server
    payload = sample_request(Signal.LOGS, 2).SerializeToString()
    for encoding, body, status in [("gzip", gzip.compress(payload), 200),
                                   ("zstd", bytes(cramjam.zstd.compress(payload)), 400),
                                   ("", payload, 400)]:
        headers = {**PROTO, **({"Content-Encoding": encoding} if encoding else {})}
        async with session.post(f"{url}/v1/logs", data=body, headers=headers) as response:
            assert response.status == status, (encoding, await response.text())
            if status == 400:
                message = status_of(await response.read(), response.content_type).message
                assert "accepted: gzip" in message
    assert capture.items(Signal.LOGS) == 2


def status_of(body: bytes, content_type: str) -> status_pb2.Status:
    if content_type == "application/json":
        data = json.loads(body)
        return status_pb2.Status(code=data["code"], message=data["message"])
    return status_pb2.Status.FromString(body)


@pytest.mark.parametrize("headers,body,status,text", [
    ({"Content-Type": "text/plain"}, b"x", 415, "unsupported Content-Type"),
    (PROTO, b"\x0a\xff\xff\xff", 400, "malformed OTLP protobuf"),
    (JSON, b'{"resourceSpans": 5}', 400, "malformed OTLP/JSON"),
    (JSON, b'{"resourceSpans": [', 400, "invalid JSON"),
    ({**PROTO, "Content-Encoding": "br"}, b"x", 400, "unsupported Content-Encoding"),
    ({**PROTO, "Content-Encoding": "gzip"}, b"not gzip", 400, "corrupt compressed request body"),
    ({**PROTO, "Content-Encoding": "gzip"}, gzip.compress(b"abc")[:-4], 400, "truncated"),
])
async def test_bad_requests_get_a_status_body(server, headers, body, status, text):
    url, capture, _, session = server
    async with session.post(f"{url}/v1/traces", data=body, headers=headers) as response:
        assert response.status == status
        parsed = status_of(await response.read(), response.content_type)
    assert text in parsed.message
    assert parsed.code == code_pb2.INVALID_ARGUMENT
    assert not capture.batches


async def test_unknown_path_and_method(server):
    url, _, _, session = server
    async with session.post(f"{url}/v1/profiles", data=b"", headers=PROTO) as response:
        assert response.status == 404
    async with session.get(f"{url}/v1/traces") as response:
        assert response.status == 405


@pytest.mark.parametrize("server", [("        max_request_body_size: 1000", None)], indirect=True)
async def test_body_limits_raw_chunked_and_decompressed(server):
    url, capture, _, session = server
    request = sample_request(Signal.TRACES, 1)
    request.resource_spans[0].scope_spans[0].spans[0].name = "x" * 5000
    big = request.SerializeToString()
    async with session.post(f"{url}/v1/traces", data=big, headers=PROTO) as response:
        assert response.status == 413

    async def chunks():
        yield big[:500]
        yield big[500:]

    async with session.post(f"{url}/v1/traces", data=chunks(), headers=PROTO) as response:
        assert response.status == 413  # no Content-Length: counted while reading
    small = gzip.compress(big)
    assert len(small) < 1000
    async with session.post(f"{url}/v1/traces", data=small,
                            headers={**PROTO, "Content-Encoding": "gzip"}) as response:
        assert response.status == 413
        assert "once decompressed" in status_of(await response.read(), response.content_type).message
    async with session.post(f"{url}/v1/traces", data=bytes(cramjam.zstd.compress(big)),
                            headers={**PROTO, "Content-Encoding": "zstd"}) as response:
        assert response.status == 413
    ok = sample_request(Signal.TRACES, 2).SerializeToString()
    async with session.post(f"{url}/v1/traces", data=ok, headers=PROTO) as response:
        assert response.status == 200
    assert capture.items() == 2


def _fail(batch):
    name = batch.message.resource_spans[0].scope_spans[0].spans[0].name
    return {"permanent": PermanentError("bad data downstream"),
            "retry": RetryableError("queue full", 2.5),
            "partial": PartiallyRejected("2 spans dropped: too old", 2)}.get(name)


@pytest.mark.parametrize("server", [("", _fail)], indirect=True)
@pytest.mark.parametrize("headers", [PROTO, JSON])
async def test_pipeline_errors_map_to_spec_statuses(server, headers):
    url, _, _, session = server

    def body(name: str) -> bytes:
        request = sample_request(Signal.TRACES, 3)
        request.resource_spans[0].scope_spans[0].spans[0].name = name
        if headers is JSON:
            from otelflow import otlp_json
            return otlp_json.dumps(request).encode()
        return request.SerializeToString()

    async with session.post(f"{url}/v1/traces", data=body("permanent"), headers=headers) as r:
        assert r.status == 400
        assert r.content_type == headers["Content-Type"]
        assert status_of(await r.read(), r.content_type).message == "bad data downstream"
    async with session.post(f"{url}/v1/traces", data=body("retry"), headers=headers) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "3"
        assert status_of(await r.read(), r.content_type).code == code_pb2.UNAVAILABLE
    async with session.post(f"{url}/v1/traces", data=body("partial"), headers=headers) as r:
        assert r.status == 200
        raw = await r.read()
    if headers is JSON:
        partial = json.loads(raw)["partialSuccess"]
        assert partial == {"rejectedSpans": "2", "errorMessage": "2 spans dropped: too old"}
    else:
        partial = Signal.TRACES.response_type.FromString(raw).partial_success
        assert (partial.rejected_spans, partial.error_message) == (2, "2 spans dropped: too old")


CORS = """        cors:
          allowed_origins: ["https://app.example.com", "https://*.test.dev"]
          allowed_headers: ["X-Custom"]
          max_age: 600"""


@pytest.mark.parametrize("server", [(CORS, None)], indirect=True)
async def test_cors_preflight_and_response_headers(server):
    url, _, _, session = server
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, x-custom"}
    for origin in ("https://app.example.com", "https://a.b.test.dev"):
        async with session.options(f"{url}/v1/traces", headers={**preflight, "Origin": origin}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == origin
            assert r.headers["Access-Control-Allow-Methods"] == "POST"
            assert r.headers["Access-Control-Allow-Headers"] == "content-type, x-custom"
            assert r.headers["Access-Control-Max-Age"] == "600"
    async with session.options(f"{url}/v1/traces",
                               headers={**preflight, "Origin": "https://evil.com"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    async with session.options(f"{url}/v1/traces", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-not-allowed"}) as r:
        assert "Access-Control-Allow-Headers" not in r.headers
    body = sample_request(Signal.TRACES, 1).SerializeToString()
    async with session.post(f"{url}/v1/traces", data=body,
                            headers={**PROTO, "Origin": "https://app.example.com"}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


PATHS = """        traces_url_path: /otlp/t
        metrics_url_path: otlp/m
        response_headers: {X-Served-By: otelflow}"""


@pytest.mark.parametrize("server", [(PATHS, None)], indirect=True)
async def test_configurable_paths(server):
    url, capture, _, session = server
    for path, signal in (("/otlp/t", Signal.TRACES), ("/otlp/m", Signal.METRICS),
                         ("/v1/logs", Signal.LOGS)):
        async with session.post(url + path, data=sample_request(signal, 1).SerializeToString(),
                                headers=PROTO) as r:
            assert r.status == 200
            assert r.headers["X-Served-By"] == "otelflow"
    async with session.post(f"{url}/v1/traces", data=b"", headers=PROTO) as r:
        assert r.status == 404
    assert capture.items() == 3


async def test_accepted_and_refused_counted_per_transport():
    port, mport = free_port(), free_port()
    capture = CaptureExporter(lambda b: PermanentError("no") if b.item_count() == 1 else None)
    yaml = config(port, telemetry=f"metrics: {{address: '127.0.0.1:{mport}'}}")
    async with running_service(yaml, {"debug": capture}) as service, aiohttp.ClientSession() as s:
        for n in (4, 1):
            await s.post(f"http://127.0.0.1:{port}/v1/traces", headers=PROTO,
                         data=sample_request(Signal.TRACES, n).SerializeToString())
        registry = service.metrics.registry
        labels = {"receiver": "otlp", "transport": "http"}
        assert registry.get_sample_value("otelcol_receiver_accepted_spans_total", labels) == 4
        assert registry.get_sample_value("otelcol_receiver_refused_spans_total", labels) == 1


@pytest.mark.parametrize("http,message", [
    ("traces_url_path: /a\n        metrics_url_path: /a", "must differ"),
    ("max_request_body_size: 0", "greater than or equal to 1"),
    ("cors: {allowed_origin: [x]}", "did you mean \"allowed_origins\""),
    ("read_header_timeout: soon", "invalid duration"),
])
def test_invalid_http_settings(http, message):
    raw, source = load_config(text=config(4318, "        " + http))
    with pytest.raises(ConfigErrors) as err:
        parse_config(raw, source)
    assert "receivers.otlp.protocols.http" in str(err.value)
    assert message in str(err.value)


def test_grpc_and_http_on_one_port_is_an_error():
    raw, source = load_config(text="""
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "localhost:4317"}
      http: {endpoint: "localhost:4317"}
exporters: {debug: {}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
""")
    with pytest.raises(ConfigErrors, match="port 4317 is already used"):
        parse_config(raw, source)


def test_defaults_match_the_go_receiver():
    from otelflow.receivers.otlp import HttpSettings, OTLPReceiverConfig

    http = HttpSettings()
    assert http.endpoint == "localhost:4318"
    assert http.max_request_body_size == 20 * 1024 * 1024
    assert (http.traces_url_path, http.metrics_url_path, http.logs_url_path) == (
        "/v1/traces", "/v1/metrics", "/v1/logs")
    assert OTLPReceiverConfig().protocols.http is None  # like grpc-only defaults until enabled


def test_empty_protocol_keys_enable_defaults():
    raw, source = load_config(text="""
receivers:
  otlp:
    protocols:
      grpc:
      http:
exporters: {debug: {}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
""")
    protocols = parse_config(raw, source).component(Kind.RECEIVER, "otlp").config.protocols
    assert protocols.grpc.endpoint == "localhost:4317"
    assert protocols.http.endpoint == "localhost:4318"


async def test_grpc_reports_partial_success_and_maps_errors_like_http():
    import grpc

    from otelflow.receivers.otlp import GRPC_SERVICES

    port = free_port()
    grpc_yaml = f"      grpc: {{endpoint: '127.0.0.1:{port}'}}\n      http:"
    yaml = config(free_port()).replace("      http:", grpc_yaml)

    def body(name: str) -> bytes:
        request = sample_request(Signal.TRACES, 3)
        request.resource_spans[0].scope_spans[0].spans[0].name = name
        return request.SerializeToString()

    async with running_service(yaml, {"debug": CaptureExporter(_fail)}), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        reply = Signal.TRACES.response_type.FromString(await export(body("partial"), timeout=5))
        assert reply.partial_success.rejected_spans == 2
        assert reply.partial_success.error_message == "2 spans dropped: too old"
        for name, code in (("permanent", grpc.StatusCode.INVALID_ARGUMENT),
                           ("retry", grpc.StatusCode.UNAVAILABLE)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(body(name), timeout=5)
            assert err.value.code() == code
