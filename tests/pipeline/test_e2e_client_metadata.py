"""Request metadata end to end, in a collector subprocess: the real OTel SDK sends spans for
two tenants (an `x-tenant` gRPC header) -> otlp receiver (`include_metadata`) -> batch
(`metadata_keys: [x-tenant]`) -> otlp and otlphttp exporters with `headers_setter`
(`from_context: x-tenant`) -> a real backend, which must get each tenant's spans in requests
of their own, carrying that tenant's header. Then the same through `service.workers: 2`, where
spans forwarded between workers must keep their metadata."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelflow.pdata import Signal, iter_scopes
from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port

TENANTS = ("acme", "globex")
SPANS = 20


def gateway_yaml(port: int, backend: FakeBackend) -> str:
    return f"""
extensions:
  headers_setter:
    headers:
      - {{key: X-Tenant, from_context: x-tenant, action: upsert}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", include_metadata: true}}
processors:
  batch: {{metadata_keys: [X-Tenant], send_batch_size: 10000, timeout: 500ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.port}
    tls: {{insecure: true}}
    auth: {{authenticator: headers_setter}}
  otlphttp:
    endpoint: http://127.0.0.1:{backend.http_port}
    auth: {{authenticator: headers_setter}}
service:
  extensions: [headers_setter]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp, otlphttp]}}
"""


def send(port: int, spans: int = SPANS) -> None:
    """Each tenant's SDK sends `spans` spans, one request each, the tenants interleaved (so
    both tenants' data waits in the batch processor at the same time)."""
    providers = {}
    for tenant in TENANTS:
        provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{tenant}"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"127.0.0.1:{port}", insecure=True, headers={"x-tenant": tenant})))
        providers[tenant] = provider
    for i in range(spans):
        for tenant, provider in providers.items():
            with provider.get_tracer("e2e").start_as_current_span(f"{tenant}-{i}"):
                pass
    for provider in providers.values():
        provider.shutdown()


def service(resource_spans) -> str:
    return next(kv.value.string_value for kv in resource_spans.resource.attributes
                if kv.key == "service.name")


def tenants_of(batch) -> set[str]:
    """The tenants whose service sent the spans of a request."""
    return {service(r).removeprefix("svc-") for r, _s in iter_scopes(Signal.TRACES, batch.message)}


@pytest.fixture
def backend():
    with FakeBackend() as fake:
        yield fake


def test_each_tenant_gets_its_own_requests_with_its_own_header(backend):
    port = free_port()
    with CollectorProcess(gateway_yaml(port, backend), wait_port=port) as collector:
        send(port)
        backend.wait_for_items(2 * len(TENANTS) * SPANS, timeout=15)
        time.sleep(0.7)  # a batch timeout more: nothing else may arrive
        assert collector.stop() == 0, collector.logs()
    spans: dict[tuple[str, str], int] = defaultdict(int)
    for batch, headers in backend.requests:
        transport = "grpc" if "grpc" in headers.get("user-agent", "") else "http"
        assert tenants_of(batch) == {headers.get("x-tenant")}, (transport, headers)
        spans[transport, headers["x-tenant"]] += batch.item_count()
    assert dict(spans) == {(t, tenant): SPANS for t in ("grpc", "http") for tenant in TENANTS}
    # batching still happened: far fewer requests than the SDKs sent
    assert len(backend.requests) < len(TENANTS) * SPANS


def workers_yaml(port: int, metrics: int, backend: FakeBackend) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", include_metadata: true}}
processors:
  attributes:
    actions:
      - {{key: tenant, from_context: metadata.x-tenant, action: insert}}
  tail_sampling:
    decision_wait: 300ms
    policies: [{{name: all, type: always_sample}}]
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.port}
    tls: {{insecure: true}}
service:
  workers: 2
  telemetry: {{metrics: {{address: 127.0.0.1:{metrics}}}, logs: {{level: warn}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [attributes, tail_sampling], exporters: [otlp]}}
"""


def test_metadata_survives_the_hop_between_workers(backend):
    """With tail_sampling, spans go to their trace's owner worker before the attributes
    processor runs there: its from_context still finds the sender's tenant."""
    port, metrics = free_port(), free_port()
    with CollectorProcess(workers_yaml(port, metrics, backend), wait_port=metrics) as collector:
        send(port, spans=40)
        backend.wait_for_items(len(TENANTS) * 40, timeout=15)
        assert collector.stop() == 0, collector.logs()
    got = defaultdict(set)
    for batch in backend.accepted:
        for r, scope in iter_scopes(Signal.TRACES, batch.message):
            for span in scope.spans:
                tenant = {kv.key: kv.value.string_value for kv in span.attributes}.get("tenant")
                got[service(r)].add((span.name.split("-")[0], tenant))
    assert dict(got) == {f"svc-{t}": {(t, t)} for t in TENANTS}
