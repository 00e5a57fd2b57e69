"""A controllable OTLP backend (gRPC and HTTP/protobuf) for fault tests: accept, refuse,
hang, go down, come back.

Runs its own event loop on a background thread, so synchronous tests (driving a collector
subprocess and the OTel SDK) can switch its behaviour while data flows:

    with FakeBackend() as backend:            # gRPC on backend.port, HTTP on backend.http_port
        backend.mode = "unavailable"          # UNAVAILABLE + RetryInfo / 503 + Retry-After
        backend.mode = "invalid"              # INVALID_ARGUMENT / 400
        backend.stop(); backend.start()       # outage: the port refuses connections meanwhile
        backend.span_counts()                 # span id -> times received
        backend.requests                      # (batch, headers) of each accepted request
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

import grpc
from aiohttp import web

from otelflow.pdata import Batch, Signal, iter_scopes
from otelflow.receivers.otlp import GRPC_SERVICES, retry_info_metadata
from otelflow.testing.process import free_port

Mode = Literal["ok", "unavailable", "invalid", "hang"]
HTTP_PATHS = {Signal.TRACES: "/v1/traces", Signal.METRICS: "/v1/metrics",
              Signal.LOGS: "/v1/logs"}


class FakeBackend:
    """OTLP gRPC + HTTP server whose answers a test controls; records what it accepted."""

    def __init__(self, port: int | None = None, delay: float = 0.0,
                 record: Callable[[Batch], None] | None = None, http_port: int | None = None):
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.record = record  # called with each accepted batch instead of keeping it
        self.mode: Mode = "ok"
        self.retry_after: float | None = None  # RetryInfo sent with UNAVAILABLE
        self.delay = delay  # seconds spent on every accepted request (a slow backend)
        self.attempts: list[float] = []  # monotonic time of every request received
        self._scripted: list[Mode] = []  # answers for the next requests, before `mode`
        # each accepted request with its gRPC metadata / HTTP headers (keys lower-cased)
        self.requests: list[tuple[Batch, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None

    # -- lifecycle (called from the test's thread) ----------------------------------------

    def start(self) -> FakeBackend:
        self._call(self._start())
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop listening; requests in progress get `grace` seconds to finish."""
        self._call(self._stop(grace))

    def close(self) -> None:
        self.stop(grace=0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = [grpc.method_handlers_generic_handler(service, {
            "Export": grpc.unary_unary_rpc_method_handler(self._handler(signal))})
            for signal, service in GRPC_SERVICES.items()]
        server.add_generic_rpc_handlers(handlers)
        if not server.add_insecure_port(f"127.0.0.1:{self.port}"):
            raise OSError(f"fake backend cannot listen on port {self.port}")
        await server.start()
        self._server = server
        app = web.Application(client_max_size=64 * 2**20)
        for signal, path in HTTP_PATHS.items():
            app.router.add_post(path, self._http_handler(signal))
        self._http = web.AppRunner(app, shutdown_timeout=0.5)
        await self._http.setup()
        await web.TCPSite(self._http, "127.0.0.1", self.http_port).start()

    async def _stop(self, grace: float) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
        if self._http is not None:
            runner, self._http = self._http, None
            await runner.cleanup()

    # -- behaviour --------------------------------------------------------------------------

    async def _decide(self) -> Mode:
        """Log the attempt and pick this request's answer (a hung request never returns)."""
        with self._lock:
            self.attempts.append(time.monotonic())
            mode = self._scripted.pop(0) if self._scripted else self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        return mode

    async def _accept(self, signal: Signal, body: bytes, headers: dict[str, str]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        batch = Batch.from_bytes(signal, body)
        with self._lock:
            if self.record is not None:
                self.record(batch)
            else:
                self.requests.append((batch, headers))

    def _handler(self, signal: Signal):
        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            mode = await self._decide()
            if mode == "unavailable":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "backend unavailable",
                                    trailing_metadata=retry_info_metadata("backend unavailable",
                                                                          self.retry_after))
            if mode == "invalid":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad data")
            await self._accept(signal, request, {k: v for k, v in context.invocation_metadata()
                                                 or () if isinstance(v, str)})
            return b""

        return export

    def _http_handler(self, signal: Signal):
        async def export(request: web.Request) -> web.Response:
            body = await request.read()
            mode = await self._decide()
            if mode == "unavailable":
                headers = ({"Retry-After": str(round(self.retry_after))}
                           if self.retry_after is not None else {})
                return web.Response(status=503, text="backend unavailable", headers=headers)
            if mode == "invalid":
                return web.Response(status=400, text="bad data")
            await self._accept(signal, body, {k.lower(): v for k, v in request.headers.items()})
            return web.Response(body=b"", content_type="application/x-protobuf")

        return export

    def fail_next(self, n: int, mode: Mode = "unavailable") -> None:
        """Answer the next `n` requests with `mode`, then behave as `self.mode` again."""
        with self._lock:
            self._scripted = [mode] * n

    # -- what arrived -----------------------------------------------------------------------

    @property
    def accepted(self) -> list[Batch]:
        """The accepted batches, in order (a copy)."""
        with self._lock:
            return [batch for batch, _headers in self.requests]

    def span_counts(self) -> Counter[bytes]:
        """Span id -> number of times the backend accepted it."""
        return Counter(span.span_id for b in self.accepted if b.signal is Signal.TRACES
                       for _r, scope in iter_scopes(Signal.TRACES, b.message)
                       for span in scope.spans)

    def items(self) -> int:
        return sum(b.item_count() for b in self.accepted)

    def wait_for_items(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (got := self.items()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return got
