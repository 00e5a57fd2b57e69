"""`bearertokenauth` on both receiver protocols (401 / UNAUTHENTICATED without the token) and
on both exporters (adds the header), in-process."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from otelflow.pdata import Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service

TOKEN = "s3cr3t-t0ken-value"
PROTO = {"Content-Type": "application/x-protobuf"}


def server_yaml(grpc_port: int, http_port: int) -> str:
    return f"""
extensions:
  bearertokenauth: {{token: "{TOKEN}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}", auth: {{authenticator: bearertokenauth}}}}
      http: {{endpoint: "127.0.0.1:{http_port}", auth: {{authenticator: bearertokenauth}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [bearertokenauth]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""


@pytest.fixture
async def server():
    grpc_port, http_port = free_port(), free_port()
    capture = CaptureExporter()
    async with running_service(server_yaml(grpc_port, http_port), {"debug": capture}):
        yield grpc_port, http_port, capture


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
async def test_http_without_the_token_gets_401(server, authorization):
    _, http_port, capture = server
    headers = dict(PROTO)
    if authorization:
        headers["Authorization"] = authorization
    body = sample_request(Signal.TRACES, 1).SerializeToString()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{http_port}/v1/traces", data=body,
                                headers=headers) as response:
            assert response.status == 401
            assert TOKEN not in await response.text()
        async with session.post(f"http://127.0.0.1:{http_port}/v1/traces", data=body,
                                headers={**PROTO, "Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
    assert capture.items() == 1


async def test_grpc_without_the_token_is_unauthenticated(server):
    grpc_port, _, capture = server
    body = sample_request(Signal.TRACES, 2).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        export = channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        for metadata in ((), (("authorization", "Bearer nope"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(body, metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await export(body, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)
    assert capture.items() == 2


async def test_both_exporters_add_the_token(server):
    grpc_port, http_port, capture = server
    front = free_port()
    yaml = f"""
extensions:
  bearertokenauth/out: {{token: "{TOKEN}"}}
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{front}"}}}}}}}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{grpc_port}", tls: {{insecure: true}},
         auth: {{authenticator: bearertokenauth/out}}}}
  otlphttp: {{endpoint: "http://127.0.0.1:{http_port}", auth: {{authenticator: bearertokenauth/out}}}}
service:
  extensions: [bearertokenauth/out]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}}}
"""
    async with running_service(yaml), aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{front}/v1/traces", headers=PROTO,
                                data=sample_request(Signal.TRACES, 3).SerializeToString()) as r:
            assert r.status == 200
        await capture.wait_items(6)


async def test_tokens_list_file_and_custom_header(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    ext = BearerTokenAuth(BearerTokenAuthConfig(filename=str(path)))
    await ext.start(None)
    assert ext.client_headers() == {"Authorization": "Bearer from-file"}
    assert ext.authenticate({"authorization": "Bearer from-file"})
    many = BearerTokenAuth(BearerTokenAuthConfig(tokens=["a", "b"], scheme="", header="X-Key"))
    await many.start(None)
    assert many.authenticate({"x-key": "b"}) and not many.authenticate({"x-key": "c"})
    assert "from-file" not in repr(ext) and "from-file" not in repr(ext.config)


@pytest.mark.parametrize("body,message", [
    ("{}", "set exactly one of token, tokens or filename"),
    ('{token: a, filename: /x}', "(got token, filename)"),
    ("{token: 12345678}", "<redacted>"),
])
def test_invalid_configs_never_echo_tokens(body, message):
    raw, source = load_config(text=f"""
extensions:
  bearertokenauth: {body}
receivers: {{otlp: {{}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [bearertokenauth]
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
""")
    with pytest.raises(ConfigErrors) as err:
        parse_config(raw, source)
    assert message in str(err.value)
    assert "12345678" not in str(err.value)


async def test_unknown_or_wrong_authenticator_is_a_start_error():
    port = free_port()
    yaml = f"""
extensions:
  health_check: {{endpoint: "127.0.0.1:{free_port()}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}", auth: {{authenticator: health_check}}}}}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""
    with pytest.raises(RuntimeError, match="cannot authenticate incoming requests"):
        async with running_service(yaml, {"debug": CaptureExporter()}):
            pass
