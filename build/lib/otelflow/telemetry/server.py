"""Serve the self-metrics registry at `/metrics` (prometheus_client's threaded HTTP server)."""

from __future__ import annotations

from prometheus_client import start_http_server

from otelflow.telemetry.metrics import SelfMetrics


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    def __init__(self, metrics: SelfMetrics, address: str):
        self.metrics = metrics
        self.address = address
        self._server = None
        self.port: int | None = None

    def start(self) -> None:
        host, port = split_address(self.address)
        self._server, _thread = start_http_server(port, host, registry=self.metrics.registry)
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
