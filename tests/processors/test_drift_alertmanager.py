"""End to end: a pipeline built from YAML whose drift processor alerts a real Alertmanager.

Alertmanager (Debian `prometheus-alertmanager`) runs on loopback with its own config and
storage, clustering off, and notifies a webhook served by the test, so the test sees both
Alertmanager's API view of the alert and the firing and resolved notifications it sends.
One test runs the pipeline in-process; the other sends spans with the OpenTelemetry SDK over
OTLP/gRPC to `otelflow run` in a subprocess.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from otelflow.component import Component, Exporter, Factory, Kind
from otelflow.config.loader import load_config
from otelflow.config.service import parse_config
from otelflow.config.types import EmptyConfig
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.service import Service
from otelflow.registry import Registry
from otelflow.testing.process import CollectorProcess, free_port
from tests.processors.drift_support import spans_request

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

AM_CONFIG = """
route:
  receiver: hook
  group_by: [alertname, feature]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{hook_port}/hook
        send_resolved: true
"""

PIPELINE = """
receivers:
  push: {{}}
processors:
  drift:
    window: 100
    warmup: 500
    zscore_threshold: null
    ks_pvalue: null
    psi_threshold: null
    features:
      - name: latency
        span: {{service: inference, name: predict}}
        group_by: [model.version]
        performance: {{direction: higher_is_worse, tolerance: 0.2, consecutive: 3}}
    alertmanager:
      endpoint: http://127.0.0.1:{am_port}
      resend_interval: 1s
      labels: {{team: ml}}
      annotations: {{summary: "{{feature}} slower ({{group}})"}}
exporters:
  capture: {{}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [push], processors: [drift], exporters: [capture]}}
"""


class PushReceiver(Component):
    """Hands batches straight to the pipeline (the test plays the SDK)."""

    def __init__(self, consumers):
        self.consumers = consumers


class Capture(Exporter):
    def __init__(self):
        self.items = 0

    async def export(self, batch: Batch) -> None:
        self.items += batch.item_count()


def registry() -> Registry:
    reg = Registry(plugins=False)
    reg.add(Factory(Kind.RECEIVER, "push", EmptyConfig, lambda s, c, consumers:
                    PushReceiver(consumers)))
    reg.add(Factory(Kind.EXPORTER, "capture", EmptyConfig, lambda s, c: Capture()))
    return reg


@pytest.fixture
async def webhook():
    """Collects Alertmanager's notifications."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, received
    await runner.cleanup()


@pytest.fixture
async def alertmanager(webhook, tmp_path: Path):
    assert BINARY, "install the Debian package prometheus-alertmanager (see .ci/run)"
    hook_port, received = webhook
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG.format(hook_port=hook_port))
    proc = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "alertmanager.log").open("w"))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: ready(session, port), 15, "alertmanager did not start")
        yield port, received
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def wait_for(check, timeout: float, message):
    """Poll `check` until truthy; `message` may be a callable, rendered on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(message() if callable(message) else message)


async def test_alert_reaches_alertmanager_and_resolves(alertmanager):
    am_port, notifications = alertmanager
    raw, source = load_config(text=PIPELINE.format(am_port=am_port))
    service = Service(parse_config(raw, source, registry()))
    await service.start()
    rng = np.random.default_rng(17)
    push = service.receivers["push"].consumers[Signal.TRACES]

    async def send(n: int, v2_factor: float) -> None:
        for version, factor in (("v1", 1.0), ("v2", v2_factor)):
            durations = rng.lognormal(math.log(80.0), 0.2, n) * factor
            await push.consume(Batch.of(spans_request(
                durations, resource_attrs={"model.version": version})))

    async def am_alerts(session: aiohttp.ClientSession) -> list[dict]:
        async with session.get(f"http://127.0.0.1:{am_port}/api/v2/alerts") as resp:
            assert resp.status == 200
            return [a for a in await resp.json()
                    if a["labels"].get("alertname") == "PerformanceRegression"]

    def statuses() -> list[str]:
        return [n["status"] for n in notifications
                if n["commonLabels"].get("alertname") == "PerformanceRegression"]

    try:
        await send(500 + 200, 1.0)
        await send(300, 1.4)  # v2 regresses by 40% for 3 windows
        assert [a["group"] for a in service.alerts() if a["status"] == "firing"] == [
            {"model.version": "v2"}]
        async with aiohttp.ClientSession() as session:
            alerts = await wait_for(lambda: am_alerts(session), 10,
                                    "the alert never reached Alertmanager")
            assert len(alerts) == 1
            alert = alerts[0]
            assert alert["status"]["state"] == "active"
            assert alert["labels"] | {"team": "ml"} == alert["labels"]
            assert {k: alert["labels"][k] for k in ("severity", "feature", "model_version",
                                                    "detector")} == {
                "severity": "critical", "feature": "latency", "model_version": "v2",
                "detector": "performance"}
            assert alert["annotations"]["summary"] == "latency slower (model.version=v2)"
            # Alertmanager only notifies a resolve for an alert it notified as firing
            await wait_for(lambda: _has(statuses, "firing"), 10, "no firing notification")

            await send(200, 1.0)  # recovery: the next window is back in band
            assert [a["status"] for a in service.alerts()] == ["resolved"]
            await wait_for(lambda: _no_alert(am_alerts, session), 10,
                           "Alertmanager still lists the alert as active")

        await wait_for(lambda: _has(statuses, "resolved"), 10,
                       lambda: f"no resolved notification: {notifications}")
        assert statuses()[0] == "firing" and statuses()[-1] == "resolved"
        resolved = next(n for n in notifications if n["status"] == "resolved")
        assert resolved["alerts"][0]["labels"]["model_version"] == "v2"
        assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    finally:
        await service.shutdown()


async def _has(statuses, status: str) -> bool:
    return status in statuses()


async def _no_alert(am_alerts, session) -> bool:
    return not [a for a in await am_alerts(session) if a["status"]["state"] == "active"]


COLLECTOR = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  drift:
    window: 50
    warmup: 200
    psi_threshold: null
    features:
      - name: latency
        span: {{service: inference, name: predict}}
        group_by: [model.version]
        performance: {{direction: higher_is_worse, tolerance: 0.25, consecutive: 2}}
    alertmanager:
      endpoint: http://127.0.0.1:{am_port}
      resend_interval: 1s
exporters:
  file:
    path: {out}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], processors: [drift], exporters: [file]}}
"""


def sdk_tracers(otlp_port: int):
    """One SDK TracerProvider per model version, exporting over OTLP/gRPC."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    providers = {}
    for version in ("v1", "v2"):
        provider = TracerProvider(resource=Resource.create(
            {"service.name": "inference", "model.version": version}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"127.0.0.1:{otlp_port}", insecure=True),
            max_export_batch_size=200, schedule_delay_millis=50))
        providers[version] = provider
    return providers


async def test_sdk_spans_through_otelflow_run_alert_alertmanager(alertmanager, tmp_path):
    am_port, notifications = alertmanager
    otlp_port = free_port()
    config = COLLECTOR.format(otlp_port=otlp_port, am_port=am_port, out=tmp_path / "out.json")
    rng = np.random.default_rng(23)
    with CollectorProcess(config, wait_port=otlp_port) as collector:
        providers = sdk_tracers(otlp_port)

        def send(n: int, v2_factor: float) -> None:
            for version, provider in providers.items():
                tracer = provider.get_tracer("model-server")
                factor = v2_factor if version == "v2" else 1.0
                for ms in rng.lognormal(math.log(40.0), 0.2, n) * factor:
                    start = time.time_ns()
                    span = tracer.start_span("predict", start_time=start)
                    span.end(end_time=start + int(ms * 1e6))
                assert provider.force_flush(10_000)

        async def statuses() -> list[str]:
            return [n["status"] for n in notifications
                    if n["commonLabels"].get("model_version") == "v2"
                    and n["commonLabels"].get("alertname") == "PerformanceRegression"]

        try:
            await asyncio.to_thread(send, 200 + 100, 1.0)
            await asyncio.to_thread(send, 100, 1.5)  # v2: 2 windows 50% slower
            await wait_for(statuses, 15, lambda: "no firing notification; collector logs:\n"
                                                 + collector.logs()[-3000:])
            await asyncio.to_thread(send, 50, 1.0)
            await wait_for(lambda: _resolved(statuses), 15, "no resolved notification")
        finally:
            for provider in providers.values():
                provider.shutdown()
        logs = collector.logs()
    assert (await statuses())[0] == "firing"
    firing = next(n for n in notifications if n["status"] == "firing"
                  and n["commonLabels"]["alertname"] == "PerformanceRegression")
    assert firing["alerts"][0]["labels"]["severity"] == "critical"
    assert not [n for n in notifications if n["commonLabels"].get("model_version") == "v1"]
    assert "drift alert firing" in logs and "drift alert resolved" in logs


async def _resolved(statuses) -> bool:
    return "resolved" in await statuses()
