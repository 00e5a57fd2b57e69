"""`otlphttp` exporter: against a recording aiohttp server (encoding, compression, headers,
spec statuses, Retry-After, response cap) and end to end into the OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import json
import time
from email.utils import formatdate

import aiohttp
import cramjam
import pytest
import structlog
from aiohttp import web
from google.rpc import status_pb2

from otelflow import otlp_json
from otelflow.component import ComponentID, CreateSettings, Kind, PermanentError, RetryableError
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.exporters.httpclient import MAX_RESPONSE_BODY, read_capped, retry_after
from otelflow.exporters.otlphttp import FACTORY, OTLPHTTPExporterConfig
from otelflow.pdata import Batch, Signal
from otelflow.registry import Registry
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service


class FakeHost:
    ready = True

    def __init__(self, extensions=None):
        self.extensions = extensions or {}

    def extension(self, cid):
        return self.extensions[cid]


class Backend:
    """Records requests; `reply` decides the response for each."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.reply = lambda request: web.Response(body=b"", content_type="application/x-protobuf")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        return self.reply(request)


@pytest.fixture
async def backend():
    backend = Backend()
    app = web.Application()
    app.router.add_post("/{tail:.*}", backend.handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    backend.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield backend
    await runner.cleanup()


@pytest.fixture
async def make_exporter():
    started = []

    async def make(host=None, **config):
        settings = CreateSettings(ComponentID("otlphttp"), Kind.EXPORTER,
                                  structlog.get_logger("test"), SelfMetrics())
        exporter = FACTORY.create(settings, OTLPHTTPExporterConfig.model_validate(config))
        await exporter.start(host or FakeHost())
        started.append(exporter)
        return exporter

    yield make
    for exporter in started:
        await exporter.shutdown()


def batch(signal=Signal.TRACES, n=3) -> Batch:
    return Batch.of(sample_request(signal, n))


@pytest.mark.parametrize("signal", list(Signal))
async def test_proto_gzip_default_paths_and_headers(backend, make_exporter, signal):
    exporter = await make_exporter(endpoint=backend.url + "/prefix/",
                                   headers={"X-Tenant": "acme"})
    sent = batch(signal)
    await exporter.export(sent)
    path, headers, body = backend.requests[0]
    assert path == f"/prefix/v1/{signal.value}"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["X-Tenant"] == "acme"
    assert headers["User-Agent"].startswith("otelflow/")
    assert gzip.decompress(body) == sent.to_bytes()


async def test_proxy_url_carries_every_request(backend, make_exporter):
    """`proxy_url`: the request for an unresolvable backend reaches the proxy (here the test
    server, which records it) with the backend as its Host."""
    exporter = await make_exporter(endpoint="http://collector.invalid:4318",
                                   proxy_url=backend.url, compression="none")
    sent = batch()
    await exporter.export(sent)
    path, headers, body = backend.requests[0]
    assert (path, headers["Host"], body) == ("/v1/traces", "collector.invalid:4318",
                                             sent.to_bytes())


async def test_json_zstd_and_per_signal_endpoint(backend, make_exporter):
    exporter = await make_exporter(endpoint="http://127.0.0.1:1", encoding="json",
                                   compression="zstd", logs_endpoint=backend.url + "/custom/logs")
    sent = batch(Signal.LOGS)
    await exporter.export(sent)
    path, headers, body = backend.requests[0]
    assert path == "/custom/logs"
    assert headers["Content-Type"] == "application/json"
    assert otlp_json.loads(Signal.LOGS, bytes(cramjam.zstd.decompress(body))) == sent.message


async def test_no_compression(backend, make_exporter):
    exporter = await make_exporter(endpoint=backend.url, compression="none")
    await exporter.export(batch())
    _, headers, body = backend.requests[0]
    assert "Content-Encoding" not in headers
    assert body == batch().to_bytes()


def status_body(message: str) -> bytes:
    return status_pb2.Status(code=3, message=message).SerializeToString()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_honour_retry_after(backend, make_exporter, status):
    backend.reply = lambda r: web.Response(status=status, headers={"Retry-After": "7"},
                                           body=status_body("slow down"),
                                           content_type="application/x-protobuf")
    exporter = await make_exporter(endpoint=backend.url)
    with pytest.raises(RetryableError) as err:
        await exporter.export(batch())
    assert err.value.retry_after == 7.0
    assert f"HTTP {status}: slow down" in str(err.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500])
async def test_other_statuses_are_permanent(backend, make_exporter, status):
    backend.reply = lambda r: web.json_response({"code": 3, "message": "bad span"}, status=status)
    exporter = await make_exporter(endpoint=backend.url, encoding="json")
    with pytest.raises(PermanentError, match=f"HTTP {status}: bad span"):
        await exporter.export(batch())


async def test_connection_refused_is_retryable_and_hides_url_credentials(make_exporter):
    exporter = await make_exporter(endpoint=f"http://user:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError, match="failed") as err:
        await exporter.export(batch())
    assert "hunter2" not in str(err.value) and "<redacted>@127.0.0.1" in str(err.value)


def test_retry_after_parsing():
    assert retry_after("12") == 12.0
    assert 50 < retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60
    assert retry_after("tomorrow-ish") is None
    assert retry_after(None) is None


async def test_partial_success_is_logged_not_failed(backend, make_exporter):
    reply = Signal.TRACES.response_type()
    reply.partial_success.rejected_spans = 2
    reply.partial_success.error_message = "too old"
    backend.reply = lambda r: web.Response(body=reply.SerializeToString(),
                                           content_type="application/x-protobuf")
    exporter = await make_exporter(endpoint=backend.url)
    with structlog.testing.capture_logs() as logs:
        await exporter.export(batch())
    assert any(e.get("rejected") == 2 and e.get("message") == "too old" for e in logs)


async def test_response_body_read_is_capped(backend):
    huge = b"x" * (MAX_RESPONSE_BODY * 3)
    backend.reply = lambda r: web.Response(status=400, body=huge, content_type="text/plain")
    async with aiohttp.ClientSession() as session, session.post(backend.url, data=b"") as response:
        content = await read_capped(response)
    assert len(content) == MAX_RESPONSE_BODY


async def test_huge_error_body_gives_a_short_message(backend, make_exporter):
    backend.reply = lambda r: web.Response(status=400, body=b"y" * (MAX_RESPONSE_BODY * 2),
                                           content_type="text/plain")
    exporter = await make_exporter(endpoint=backend.url)
    with pytest.raises(PermanentError) as err:
        await exporter.export(batch())
    assert len(str(err.value)) < 600


@pytest.mark.parametrize("body,message", [
    ({}, "set endpoint"),
    ({"endpoint": "localhost:4318"}, "must be an http:// or https:// URL"),
    ({"endpoint": "http://x", "encoding": "protobuf"}, "valid choices: 'proto' or 'json'"),
    ({"endpoint": "http://x", "compression": "lz5"}, "valid choices"),
])
def test_invalid_configs(body, message):
    yaml = f"""
receivers: {{otlp: {{}}}}
exporters:
  otlphttp: {json.dumps(body)}
service:
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlphttp]}}}}
"""
    raw, source = load_config(text=yaml)
    with pytest.raises(ConfigErrors) as err:
        parse_config(raw, source)
    assert "exporters.otlphttp" in str(err.value) and message in str(err.value)


def test_registered_under_both_names():
    registry = Registry()
    assert registry.get(Kind.EXPORTER, "otlphttp") is registry.get(Kind.EXPORTER, "otlp_http")
    assert OTLPHTTPExporterConfig(endpoint="http://x").timeout == 30.0


async def test_collector_to_collector_over_http():
    """Service A (gRPC in, otlphttp out, json) -> Service B (HTTP in): data arrives intact."""
    port_a, port_b = free_port(), free_port()
    b_yaml = f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port_b}"}}}}}}}}
exporters: {{debug: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
    logs: {{receivers: [otlp], exporters: [debug]}}
"""
    a_yaml = f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port_a}"}}}}}}}}
exporters:
  otlp_http/b:
    endpoint: http://127.0.0.1:{port_b}
    encoding: json
    retry_on_failure: {{enabled: false}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp_http/b]}}
    logs: {{receivers: [otlp], exporters: [otlp_http/b]}}
"""
    capture = CaptureExporter()
    async with running_service(b_yaml, {"debug": capture}), running_service(a_yaml), \
            aiohttp.ClientSession() as session:
        for signal in (Signal.TRACES, Signal.LOGS):
            async with session.post(f"http://127.0.0.1:{port_a}/v1/{signal.value}",
                                    data=sample_request(signal, 5).SerializeToString(),
                                    headers={"Content-Type": "application/x-protobuf"}) as r:
                assert r.status == 200
        await capture.wait_items(10)
    assert [b.message for b in capture.batches] == [sample_request(Signal.TRACES, 5),
                                                    sample_request(Signal.LOGS, 5)]
