"""TLS and mTLS on both receiver protocols and both exporters, with a PKI generated per run:
a client with the right certificate is served, one without is refused."""

from __future__ import annotations

import ssl

import aiohttp
import grpc
import pytest
import structlog

from otelflow.component import ComponentID, CreateSettings, Kind, RetryableError
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.exporters import otlp as otlp_exporter
from otelflow.exporters import otlphttp
from otelflow.pdata import Batch, Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.certs import make_pki
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("other-pki"), "some other CA")


def receiver_yaml(pki, grpc_port, http_port, mtls: bool) -> str:
    client_ca = f"\n          client_ca_file: {pki.ca}" if mtls else ""
    tls = f"""
        tls:
          cert_file: {pki.server_cert}
          key_file: {pki.server_key}{client_ca}"""
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}{tls}
      http:
        endpoint: 127.0.0.1:{http_port}{tls}
exporters: {{debug: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
async def server(request, pki):
    grpc_port, http_port = free_port(), free_port()
    capture = CaptureExporter()
    async with running_service(receiver_yaml(pki, grpc_port, http_port, request.param),
                               {"debug": capture}):
        yield grpc_port, http_port, capture, request.param


async def make_exporter(module, host=None, **config):
    settings = CreateSettings(ComponentID(module.FACTORY.type), Kind.EXPORTER,
                              structlog.get_logger("test"), SelfMetrics())
    exporter = module.FACTORY.create(settings, module.FACTORY.config.model_validate(config))
    await exporter.start(host)
    return exporter


def client_tls(pki, with_cert: bool) -> dict:
    tls = {"ca_file": str(pki.ca)}
    if with_cert:
        tls |= {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    return tls


async def send_both(pki, grpc_port, http_port, with_cert: bool, **http_tls) -> None:
    batch = Batch.of(sample_request(Signal.TRACES, 2))
    grpc_exp = await make_exporter(otlp_exporter, endpoint=f"127.0.0.1:{grpc_port}",
                                   tls=client_tls(pki, with_cert), timeout=3)
    http_exp = await make_exporter(otlphttp, endpoint=f"https://127.0.0.1:{http_port}",
                                   tls=http_tls or client_tls(pki, with_cert), timeout=3)
    try:
        await grpc_exp.export(batch)
        await http_exp.export(batch)
    finally:
        await grpc_exp.shutdown()
        await http_exp.shutdown()


async def test_exporters_with_the_right_certificates_are_served(server, pki):
    grpc_port, http_port, capture, _ = server
    await send_both(pki, grpc_port, http_port, with_cert=True)
    assert capture.items() == 4


async def test_clients_without_a_certificate(server, pki):
    grpc_port, http_port, capture, mtls = server
    if not mtls:
        await send_both(pki, grpc_port, http_port, with_cert=False)
        assert capture.items() == 4
        return
    batch = Batch.of(sample_request(Signal.TRACES, 2))
    grpc_exp = await make_exporter(otlp_exporter, endpoint=f"127.0.0.1:{grpc_port}",
                                   tls=client_tls(pki, False), timeout=3)
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await grpc_exp.export(batch)
    await grpc_exp.shutdown()
    http_exp = await make_exporter(otlphttp, endpoint=f"https://127.0.0.1:{http_port}",
                                   tls=client_tls(pki, False), timeout=3)
    with pytest.raises(RetryableError):
        await http_exp.export(batch)
    await http_exp.shutdown()
    assert capture.items() == 0
    # a raw client without a certificate cannot even complete the handshake
    context = ssl.create_default_context(cafile=str(pki.ca))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(f"https://127.0.0.1:{http_port}/v1/traces", ssl=context,
                                    data=b"", headers={"Content-Type": "application/x-protobuf"}):
                pass


async def test_a_server_from_another_ca_is_not_trusted(server, other_pki, pki):
    grpc_port, http_port, capture, _ = server
    batch = Batch.of(sample_request(Signal.TRACES, 1))
    http_exp = await make_exporter(otlphttp, endpoint=f"https://127.0.0.1:{http_port}",
                                   tls=client_tls(other_pki, True), timeout=3)
    with pytest.raises(RetryableError, match="certificate verify failed"):
        await http_exp.export(batch)
    await http_exp.shutdown()
    # plaintext to a TLS port
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, pytest.raises(grpc.RpcError):
        channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")(batch.to_bytes(), timeout=3)
    assert capture.items() == 0


async def test_otlphttp_insecure_skip_verify(server, pki):
    _, http_port, capture, mtls = server
    tls = {"insecure_skip_verify": True}
    if mtls:
        tls |= {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    exporter = await make_exporter(otlphttp, endpoint=f"https://127.0.0.1:{http_port}", tls=tls)
    await exporter.export(Batch.of(sample_request(Signal.TRACES, 3)))
    await exporter.shutdown()
    assert capture.items() == 3


def test_grpc_exporter_refuses_insecure_skip_verify_clearly():
    raw, source = load_config(text="""
receivers: {otlp: {}}
exporters:
  otlp: {endpoint: "backend:4317", tls: {insecure_skip_verify: true}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}
""")
    with pytest.raises(ConfigErrors, match="insecure_skip_verify is not supported by the gRPC"):
        parse_config(raw, source)


def test_tls_key_pairs_must_be_complete():
    raw, source = load_config(text="""
receivers:
  otlp: {protocols: {http: {tls: {cert_file: /x.pem}}}}
exporters:
  otlphttp: {endpoint: "https://x", tls: {cert_file: /c.pem}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [otlphttp]}}}
""")
    with pytest.raises(ConfigErrors) as err:
        parse_config(raw, source)
    text = str(err.value)
    assert "receivers.otlp.protocols.http.tls.key_file: required key is missing" in text
    assert "cert_file and key_file must be set together" in text


async def test_sdk_http_exporter_over_https(server, pki, monkeypatch):
    """The OTel SDK's OTLP/HTTP exporter with the CA (and client certificate under mTLS)."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests lets these beat the SDK's CA
        monkeypatch.delenv(name, raising=False)
    import asyncio

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    _, http_port, capture, mtls = server
    client = {"client_certificate_file": str(pki.client_cert),
              "client_key_file": str(pki.client_key)} if mtls else {}
    exporter = OTLPSpanExporter(endpoint=f"https://127.0.0.1:{http_port}/v1/traces",
                                certificate_file=str(pki.ca), timeout=5, **client)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def send() -> None:
        with provider.get_tracer("tls").start_as_current_span("over-https"):
            pass
        provider.shutdown()

    await asyncio.to_thread(send)
    await capture.wait_items(1)
    span = capture.batches[0].message.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "over-https"
