"""`health_check`: `/`, `/health`, `/ready` follow the host's lifecycle; `/alerts` serves the
registered alert sources; config defaults and errors."""

from __future__ import annotations

import aiohttp
import pytest
import structlog

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.extensions.health_check import HealthCheck, HealthCheckConfig
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service


class FakeHost:
    def __init__(self):
        self.ready = False
        self.sources = []

    def alerts(self):
        return [a for source in self.sources for a in source()]


def settings() -> CreateSettings:
    return CreateSettings(ComponentID("health_check"), Kind.EXTENSION,
                          structlog.get_logger("test"), SelfMetrics())


@pytest.fixture
async def extension():
    host = FakeHost()

    async def start(**config):
        ext = HealthCheck(settings(), HealthCheckConfig(endpoint="127.0.0.1:0", **config))
        await ext.start(host)
        started.append(ext)
        return ext, f"http://127.0.0.1:{ext.port}"

    started: list[HealthCheck] = []
    async with aiohttp.ClientSession() as session:
        yield start, host, session
    for ext in started:
        await ext.shutdown()


async def get(session, url):
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def test_readiness_follows_the_host(extension):
    start, host, session = extension
    _, url = await start()
    assert (await get(session, url + "/ready"))[0] == 503
    status, body = await get(session, url + "/")
    assert status == 503 and body["status"] == "Server not available"
    assert await get(session, url + "/health") == (200, {"status": "alive"})
    host.ready = True
    assert await get(session, url + "/ready") == (200, {"status": "ready"})
    status, body = await get(session, url + "/")
    assert status == 200 and body["status"] == "Server available" and "upSince" in body
    host.ready = False  # shutting down
    assert (await get(session, url + "/ready"))[0] == 503


async def test_custom_path_and_response_body(extension):
    start, host, session = extension
    _, url = await start(path="status", response_body={"healthy": "up", "unhealthy": "down"})
    async with session.get(url + "/status") as response:
        assert (response.status, await response.text()) == (503, "down")
    host.ready = True
    async with session.get(url + "/status") as response:
        assert (response.status, await response.text()) == (200, "up")
    async with session.get(url + "/") as response:
        assert response.status == 404


async def test_alerts_endpoint_serves_registered_sources(extension):
    start, host, session = extension
    _, url = await start()
    assert await get(session, url + "/alerts") == (200, [])
    host.sources.append(lambda: [{"alertname": "Drift", "labels": {"service": "checkout"}}])
    host.sources.append(lambda: [{"alertname": "Other"}])
    status, alerts = await get(session, url + "/alerts")
    assert status == 200
    assert [a["alertname"] for a in alerts] == ["Drift", "Other"]


async def test_in_a_service_ready_only_while_running():
    port, otlp = free_port(), free_port()
    yaml = f"""
extensions:
  health_check: {{endpoint: "127.0.0.1:{port}"}}
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{otlp}"}}}}}}}}
exporters: {{debug: {{}}}}
service:
  extensions: [health_check]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""
    async with aiohttp.ClientSession() as session:
        async with running_service(yaml, {"debug": CaptureExporter()}) as service:
            service.register_alert_source(lambda: [{"alertname": "X"}])
            assert await get(session, f"http://127.0.0.1:{port}/ready") == (200, {"status": "ready"})
            assert (await get(session, f"http://127.0.0.1:{port}/alerts"))[1] == [{"alertname": "X"}]
            service._state = "stopping"  # what shutdown sets before stopping anything
            assert (await get(session, f"http://127.0.0.1:{port}/ready"))[0] == 503
            service._state = "running"
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(session, f"http://127.0.0.1:{port}/health")


def test_defaults_and_port_conflicts():
    assert HealthCheckConfig().endpoint == "localhost:13133"
    assert HealthCheckConfig().path == "/"
    raw, source = load_config(text="""
extensions:
  health_check: {endpoint: "localhost:4318"}
receivers: {otlp: {protocols: {http: {}}}}
exporters: {debug: {}}
service:
  extensions: [health_check]
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
""")
    with pytest.raises(ConfigErrors, match="port 4318 is already used"):
        parse_config(raw, source)
