"""loadbalancing exporter: hash ring, config errors, and routing to real OTLP gRPC backends
(in-process collectors) where each trace lands complete on exactly one backend."""

from __future__ import annotations

import asyncio
import os

import pytest
from pydantic import ValidationError

from otelflow.component import Kind
from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.exporters.loadbalancing import HashRing, LoadBalancingConfig, create_exporter
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.service import Service
from otelflow.testing.process import free_port
from otelflow.testing.sink import MemorySink
from tests.kafka_support import settings, traces


def backend_config(port: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  debug:
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
    logs: {{receivers: [otlp], exporters: [debug]}}
"""


async def start_backends(n: int) -> tuple[list[int], list[MemorySink], list[Service]]:
    ports, sinks, services = [], [], []
    for _ in range(n):
        port, sink = free_port(), MemorySink()
        service = Service(parse_config(*load_config(text=backend_config(port))),
                          exporter_overrides={"debug": sink})
        await service.start()
        ports.append(port)
        sinks.append(sink)
        services.append(service)
    return ports, sinks, services


def lb_config(**overrides) -> LoadBalancingConfig:
    return LoadBalancingConfig.model_validate(
        {"protocol": {"otlp": {"tls": {"insecure": True}, "timeout": "2s",
                               "retry_on_failure": {"initial_interval": "100ms"}}},
         **overrides})


# -- ring and config --------------------------------------------------------------------


def test_ring_is_balanced_and_moves_few_routes():
    keys = [os.urandom(16) for _ in range(20_000)]
    four = HashRing([f"10.0.0.{i}:4317" for i in range(4)])
    owners = [four.endpoint_for(k) for k in keys]
    shares = [owners.count(ep) / len(keys) for ep in four.endpoints]
    assert all(0.15 < s < 0.35 for s in shares), shares
    five = HashRing([*four.endpoints, "10.0.0.9:4317"])
    moved = sum(a != five.endpoint_for(k) for a, k in zip(owners, keys, strict=True))
    assert moved / len(keys) < 0.35  # ~1/5 move; a modulo hash would move ~4/5
    assert all(b == "10.0.0.9:4317" for a, k in zip(owners, keys, strict=True)
               if a != (b := five.endpoint_for(k)))


@pytest.mark.parametrize(("body", "message"), [
    ({"resolver": {}}, "set exactly one resolver"),
    ({"resolver": {"static": {"hostnames": ["a:1"]}, "dns": {"hostname": "x"}}},
     "set exactly one resolver"),
    ({"resolver": {"static": {"hostnames": ["a:1"]}},
      "protocol": {"otlp": {"endpoint": "x:1"}}}, "must not be set"),
    ({"resolver": {"static": {"hostnames": ["a:1"]}},
      "protocol": {"otlp": {"compresion": "gzip"}}}, "invalid otlp template at compresion"),
    ({"resolver": {"static": {"hostnames": ["a:1"]}}, "routing_key": "traceId"}, "traceID"),
])
def test_invalid_config(body, message):
    with pytest.raises(ValidationError, match=message):
        LoadBalancingConfig.model_validate(body)


def test_defaults_from_yaml():
    raw, source = load_config(text="""
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}
exporters:
  loadbalancing:
    resolver: {dns: {hostname: collectors.example}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [loadbalancing]}}}
""")
    cfg = parse_config(raw, source).component(Kind.EXPORTER, "loadbalancing").config
    assert cfg.routing_key == "traceID"
    assert cfg.resolver.dns.port == 4317 and cfg.resolver.dns.interval == 5.0
    assert not cfg.sending_queue.enabled


# -- against real OTLP backends ---------------------------------------------------------


async def test_each_trace_lands_complete_on_one_backend():
    ports, sinks, services = await start_backends(3)
    lb = create_exporter(settings(Kind.EXPORTER, "loadbalancing"), lb_config(
        resolver={"static": {"hostnames": [f"127.0.0.1:{p}" for p in ports]}}))
    await lb.start(None)
    sent = 0
    try:
        for _ in range(10):  # every trace's spans are spread over several batches
            req = traces(n_traces=30, spans=1, services=2)
            for _ in range(3):
                sent += 30
                await lb.export(Batch.of(req))
        for _ in range(200):
            if sum(s.item_count() for s in sinks) >= sent:
                break
            await asyncio.sleep(0.05)
    finally:
        await lb.shutdown()
        for service in services:
            await service.shutdown()
    owner: dict[bytes, set[int]] = {}
    for i, sink in enumerate(sinks):
        for batch in sink.batches:
            for rs in batch.message.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        owner.setdefault(span.trace_id, set()).add(i)
    assert sum(s.item_count() for s in sinks) == sent
    assert len(owner) == 300 and all(len(o) == 1 for o in owner.values())
    assert all(sink.batches for sink in sinks), "some backend got nothing"


async def test_service_routing_and_dns_resolver():
    ports, sinks, services = await start_backends(1)
    lb = create_exporter(settings(Kind.EXPORTER, "loadbalancing"), lb_config(
        routing_key="service",
        resolver={"dns": {"hostname": "127.0.0.1", "port": ports[0], "interval": "100ms"}}))
    await lb.start(None)
    try:
        assert list(lb.backends) == [f"127.0.0.1:{ports[0]}"]
        await lb.export(Batch.of(traces(5, 2, services=3)))
        await sinks[0].wait_items(10, timeout=20)
        with pytest.raises(Exception, match="traceID cannot route metrics"):
            bad = create_exporter(settings(Kind.EXPORTER), lb_config(
                resolver={"static": {"hostnames": ["127.0.0.1:1"]}}))
            bad.route(Batch(Signal.METRICS))
    finally:
        await lb.shutdown()
        for service in services:
            await service.shutdown()
