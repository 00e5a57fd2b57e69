"""`health_check` extension: `path` (default `/`) and `/health` (liveness), `/ready`
(readiness: 200 only while every pipeline runs), `/alerts` (the host's alert sources, JSON)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from aiohttp import web
from pydantic import field_validator

from otelflow.component import Component, CreateSettings, Factory, Host, Kind
from otelflow.config.tls import TLSServerSettings
from otelflow.config.types import ConfigModel


class ResponseBody(ConfigModel):
    healthy: str = ""
    unhealthy: str = ""


class HealthCheckConfig(ConfigModel):
    endpoint: str = "localhost:13133"
    path: str = "/"
    response_body: ResponseBody | None = None
    tls: TLSServerSettings | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = value.strip() or "/"
        return value if value.startswith("/") else "/" + value

    def listen_endpoints(self):
        yield "endpoint", self.endpoint


def create(settings: CreateSettings, config: HealthCheckConfig) -> HealthCheck:
    return HealthCheck(settings, config)


FACTORY = Factory(Kind.EXTENSION, "health_check", HealthCheckConfig, create,
                  description="Liveness /health, readiness /ready, alerts /alerts over HTTP",
                  workers="first")


class HealthCheck(Component):
    def __init__(self, settings: CreateSettings, config: HealthCheckConfig):
        self.config = config
        self.log = settings.logger
        self.port: int | None = None
        self._host: Host | None = None
        self._runner: web.AppRunner | None = None
        self._started = time.time()

    async def start(self, host: Host) -> None:
        self._host, self._started = host, time.time()
        app = web.Application()
        app.router.add_get(self.config.path, self._status)
        for path, handler in (("/health", self._health), ("/ready", self._ready),
                              ("/alerts", self._alerts)):
            if path != self.config.path:
                app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host_part, _, port = self.config.endpoint.rpartition(":")
        ssl = self.config.tls.server_context() if self.config.tls else None
        site = web.TCPSite(runner, host_part.strip("[]") or None, int(port), ssl_context=ssl)
        await site.start()
        self._runner = runner
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.log.info("health_check listening", endpoint=self.config.endpoint, port=self.port)

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _is_ready(self) -> bool:
        return self._host is not None and bool(self._host.ready)

    async def _status(self, request: web.Request) -> web.Response:
        """The Go extension's main endpoint: 200 when ready, else 503, with a status body."""
        ready = self._is_ready()
        custom = self.config.response_body
        if custom is not None:
            return web.Response(status=200 if ready else 503,
                                text=custom.healthy if ready else custom.unhealthy)
        body = {"status": "Server available" if ready else "Server not available",
                "upSince": datetime.fromtimestamp(self._started, UTC).isoformat(),
                "uptime": f"{time.time() - self._started:.3f}s"}
        return web.json_response(body, status=200 if ready else 503)

    async def _health(self, request: web.Request) -> web.Response:
        """Liveness: the process answers."""
        return web.json_response({"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self._is_ready()
        return web.json_response({"status": "ready" if ready else "not ready"},
                                 status=200 if ready else 503)

    async def _alerts(self, request: web.Request) -> web.Response:
        alerts = self._host.alerts() if self._host is not None else []
        return web.Response(text=json.dumps(alerts, default=str), content_type="application/json")
