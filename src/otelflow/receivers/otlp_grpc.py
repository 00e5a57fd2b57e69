"""The OTLP receiver's gRPC server: unary calls over HTTP/2 sessions in C (`otelflow._h2`, on
nghttp2), one asyncio protocol per connection and one task per call.

grpc.aio pays for every call in several hops between the event loop and gRPC's poller thread;
here a call costs one `feed()` that hands over the complete request and one write that carries
the answer. The receiver uses grpc.aio only when the extension was not built (`AVAILABLE`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import grpc

from otelflow.receivers import decompress

try:
    from otelflow._h2 import ProtocolError, Session
except ImportError:  # built without nghttp2 (setup.py): the receiver keeps grpc.aio
    Session = None
AVAILABLE = Session is not None

Metadata = Sequence[tuple[str, str | bytes]]


class Reply(NamedTuple):
    """A call's outcome: the status and, for OK, the serialized response message."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    response: bytes = b""
    trailing: tuple[tuple[str, bytes], ...] = ()


Route = Callable[[bytes, Metadata], Awaitable[Reply]]

_ENCODINGS = ("gzip", "deflate", "zstd", "snappy")  # what Go's clients send; snappy framed
ACCEPTED_ENCODINGS = b"identity," + ",".join(_ENCODINGS).encode()
_HEADERS_OK = [(b":status", b"200"), (b"content-type", b"application/grpc"),
               (b"grpc-accept-encoding", ACCEPTED_ENCODINGS)]
_TRAILERS_OK = [(b"grpc-status", b"0")]
_STATUS = {code.value[0]: code for code in grpc.StatusCode}


def percent_encoded(message: str) -> bytes:
    """`grpc-message`'s encoding: bytes outside printable ASCII, and '%', as %XX."""
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
                    for b in message.encode())


def call_metadata(headers: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    """A call's metadata as grpc.aio's `invocation_metadata()` gives it: without the headers
    gRPC itself uses, `-bin` values decoded from base64."""
    metadata: list[tuple[str, str | bytes]] = []
    for key, value in headers:
        if key.startswith("grpc-") or key in ("content-type", "te"):
            continue
        if key.endswith("-bin"):
            try:
                metadata.append((key, base64.b64decode(value + "=" * (-len(value) % 4), validate=True)))
            except binascii.Error:
                continue
        else:
            metadata.append((key, value))
    return metadata


def _error_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    headers = [(b":status", b"200"), (b"content-type", b"application/grpc"),
               (b"grpc-status", b"%d" % reply.code.value[0])]
    if reply.message:
        headers.append((b"grpc-message", percent_encoded(reply.message)))
    for key, value in reply.trailing:
        encoded = base64.b64encode(value) if key.endswith("-bin") else value
        headers.append((key.encode(), encoded if isinstance(encoded, bytes) else encoded.encode()))
    return headers


class _Connection(asyncio.Protocol):
    """One client connection: bytes in through the session, complete calls out to the server."""

    def __init__(self, server: GrpcServer):
        self.server = server
        self.session = Session(server.max_message, server.max_concurrent_streams or 0)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0  # calls being served
        self.idle_since = time.monotonic()
        keepalive = server.cfg.keepalive
        self.keepalive = _Keepalive(self, keepalive) if keepalive is not None else None
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        if self.keepalive is not None:
            self.keepalive.start()
        self.flush()  # the server's SETTINGS

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self.keepalive is not None:
            self.keepalive.stop()

    def data_received(self, data: bytes) -> None:
        try:
            calls = self.session.feed(data)
        except ProtocolError as exc:
            self.server.log.debug("closing a gRPC connection", reason=str(exc))
            self.close()
            return
        if self.keepalive is not None:
            self.keepalive.received(self.session.pings())
        for call in calls:
            self.server.dispatch(self, *call)
        self.flush()

    def call_ended(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle_since = time.monotonic()

    def answer(self, stream_id: int, reply: Reply) -> None:
        if self.transport is None:
            return
        if self.keepalive is not None:
            self.keepalive.strikes = 0  # grpc-go forgives pings once it has sent an answer
        if reply.code is grpc.StatusCode.OK:
            self.session.respond(stream_id, _HEADERS_OK, reply.response, _TRAILERS_OK)
        else:
            self.session.respond(stream_id, _error_headers(reply))
        if not self._flush_scheduled:  # answers finished in the same loop turn share a write
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is None:
            return
        out = self.session.send()
        if out:
            self.transport.write(out)
        if not self.session.open():
            self.transport.close()

    def goaway(self, error_code: int = 0, debug: bytes = b"") -> None:
        if self.transport is not None:
            self.session.goaway(error_code, debug)
            self.flush()

    def close(self) -> None:
        """Write what the session still has (a GOAWAY), then close."""
        self.flush()
        if self.transport is not None:
            self.transport.close()


ENHANCE_YOUR_CALM = 0xB  # HTTP/2's error code for a client pinging too often
MAX_PING_STRIKES = 2  # grpc-go's and grpc-core's
DEFAULT_PING_TIME = 2 * 3600.0  # grpc-go's `time` and `timeout` when unset
DEFAULT_PING_TIMEOUT = 20.0
PING_GAP_WITHOUT_CALLS = 2 * 3600.0  # grpc-go: the gap allowed without permit_without_stream


class _Keepalive:
    """grpc-go's server keepalive for one connection (`keepalive.server_parameters` and
    `enforcement_policy`): GOAWAY after `max_connection_idle` without calls and after
    `max_connection_age` (+/-10%), closing `max_connection_age_grace` later; a PING after
    `time` without reads, closing when nothing is read within `timeout`; GOAWAY
    ENHANCE_YOUR_CALM "too_many_pings" for a client pinging more often than the policy allows
    more than twice."""

    def __init__(self, connection: _Connection, cfg):
        self.connection = connection
        params = cfg.server_parameters
        self.idle = params.max_connection_idle if params else None
        self.age = params.max_connection_age if params else None
        self.grace = params.max_connection_age_grace if params else None
        self.time = max(1.0, (params.time if params else None) or DEFAULT_PING_TIME)
        self.timeout = (params.timeout if params else None) or DEFAULT_PING_TIMEOUT
        self.policy = cfg.enforcement_policy
        self.strikes = 0
        self.last_read = time.monotonic()
        self.last_ping = 0.0  # the client's last PING
        self.pinged_at = 0.0  # the server's last PING
        self._timers: dict[str, asyncio.TimerHandle] = {}  # one per check

    def start(self) -> None:
        if self.idle:
            self._later(self.idle, self._check_idle)
        if self.age:
            self._later(self.age * random.uniform(0.9, 1.1), self._expire)
        self._later(self.time, self._check_reads)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _later(self, delay: float, callback) -> None:
        self._timers[callback.__name__] = asyncio.get_running_loop().call_later(delay, callback)

    def _check_idle(self) -> None:
        connection = self.connection
        idle_for = time.monotonic() - connection.idle_since
        if not connection.in_flight and idle_for >= self.idle:
            connection.goaway()
        else:
            self._later(max(self.idle - idle_for, 0.01), self._check_idle)

    def _expire(self) -> None:
        self.connection.goaway()
        if self.grace is not None:
            self._later(self.grace, self.connection.close)

    def _check_reads(self) -> None:
        quiet_for = time.monotonic() - self.last_read
        if quiet_for < self.time:
            self._later(self.time - quiet_for, self._check_reads)
            return
        self.connection.session.ping()
        self.connection.flush()
        self.pinged_at = time.monotonic()
        self._later(self.timeout, self._check_answer)

    def _check_answer(self) -> None:
        if self.last_read < self.pinged_at:
            self.connection.close()  # nothing read since the PING
        else:
            self._check_reads()

    def received(self, pings: int) -> None:
        """The client sent bytes, `pings` PINGs among them: note the read, and count the PINGs
        against the enforcement policy as grpc-go does."""
        now = self.last_read = time.monotonic()
        if not pings or self.policy is None:
            return
        allowed = self.policy.min_time or 0.0
        if not self.connection.in_flight and not self.policy.permit_without_stream:
            allowed = PING_GAP_WITHOUT_CALLS
        for _ in range(pings):
            if now - self.last_ping < allowed:
                self.strikes += 1
            self.last_ping = now
        if self.strikes > MAX_PING_STRIKES:
            self.connection.goaway(ENHANCE_YOUR_CALM, b"too_many_pings")
            self.connection.close()


class GrpcServer:
    """Serves `routes` ({"/package.Service/Method": route}) on `cfg`'s endpoint
    (`GrpcSettings`)."""

    def __init__(self, cfg, routes: dict[str, Route], log, reuse_port: bool = False):
        self.cfg = cfg
        self.routes = routes
        self.log = log
        self.reuse_port = reuse_port
        self.max_message = cfg.max_recv_msg_size_mib * 1024 * 1024
        self.max_concurrent_streams = cfg.max_concurrent_streams
        self.connections: set[_Connection] = set()
        self.port: int | None = None
        self._calls: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = None
        if self.cfg.tls is not None:
            context = self.cfg.tls.server_context()
            context.set_alpn_protocols(["h2"])
        factory = lambda: _Connection(self)  # noqa: E731
        try:
            if self.cfg.transport == "unix":
                self._server = await loop.create_unix_server(factory, self.cfg.endpoint,
                                                             ssl=context)
                return
            host, _, port = self.cfg.endpoint.rpartition(":")
            self._server = await loop.create_server(
                factory, host.strip("[]") or None, int(port), ssl=context, reuse_address=True,
                reuse_port=self.reuse_port or None, backlog=4096)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.cfg.endpoint} (gRPC): "
                          f"{exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting; answer the calls in flight for up to `grace` seconds, then close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections):
            connection.goaway()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=grace)
        for call in list(self._calls):
            call.cancel()
        for connection in list(self.connections):
            connection.flush()
            if connection.transport is not None:
                connection.transport.close()

    def dispatch(self, connection: _Connection, stream_id: int, path: str | None,
                 content_type: str | None, encoding: str | None, headers: list,
                 compressed: int, message: bytes | None, status: int, error: str | None) -> None:
        """Start one complete call, or answer it at once when it cannot be served."""
        if status:
            return connection.answer(stream_id, Reply(_STATUS[status], error or ""))
        if content_type is None or not content_type.startswith("application/grpc"):
            connection.session.respond(stream_id, [(b":status", b"415")])
            return
        route = self.routes.get(path or "")
        if route is None:
            return connection.answer(stream_id, Reply(grpc.StatusCode.UNIMPLEMENTED,
                                                      f"unknown method {path}"))
        if compressed:
            message, refusal = self._decompressed(message, encoding)
            if refusal is not None:
                return connection.answer(stream_id, refusal)
        connection.in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._serve(connection, stream_id, route, message, headers))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _serve(self, connection: _Connection, stream_id: int, route: Route,
                     message: bytes, headers: list) -> None:
        try:
            reply = await route(message, call_metadata(headers))
        except Exception as exc:  # a bug in a route must not leave the call unanswered
            self.log.exception("gRPC call failed")
            reply = Reply(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        finally:
            connection.call_ended()
        connection.answer(stream_id, reply)

    def _decompressed(self, message: bytes, encoding: str | None) -> tuple[bytes, Reply | None]:
        """The message decompressed, or the reply refusing it: UNIMPLEMENTED for an encoding
        not in ACCEPTED_ENCODINGS (as grpc-go), RESOURCE_EXHAUSTED over the limit, INTERNAL
        when it does not decompress."""
        inflater = decompress.decoder(encoding, self.max_message, "message",
                                      "max_recv_msg_size_mib") if encoding in _ENCODINGS else None
        if inflater is None:
            return b"", Reply(grpc.StatusCode.UNIMPLEMENTED,
                              f"grpc-encoding {encoding!r} is not supported; "
                              f"use one of {ACCEPTED_ENCODINGS.decode()}")
        try:
            inflater.feed(message)
            return inflater.finish(), None
        except decompress.TooLarge as exc:
            return b"", Reply(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except decompress.Corrupt as exc:
            return b"", Reply(grpc.StatusCode.INTERNAL, str(exc))


# -- grpc.aio, when the extension was not built ----------------------------------------------


async def start_aio_server(cfg, routes: dict[str, Route],
                           reuse_port: bool = False) -> tuple[grpc.aio.Server, int]:
    """grpc.aio's server for the same routes and settings; (server, port)."""
    limit = cfg.max_recv_msg_size_mib * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", int(reuse_port))]
    if cfg.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", cfg.max_concurrent_streams))
    if cfg.keepalive is not None:
        options += cfg.keepalive.channel_options()
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers([_AioRoutes(routes)])
    try:
        port = _add_aio_port(server, cfg)
    except RuntimeError:  # grpc raises instead of returning 0 in recent versions
        port = 0
    if not port:
        raise OSError(f"cannot listen on {cfg.endpoint} (gRPC): address in use or invalid")
    await server.start()
    return server, port


def _add_aio_port(server: grpc.aio.Server, cfg) -> int:
    if cfg.tls is None:
        return server.add_insecure_port(cfg.address)
    cert, key, client_ca = cfg.tls.read_files()
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
    return server.add_secure_port(cfg.address, credentials)


class _AioRoutes(grpc.GenericRpcHandler):
    """The routes as grpc.aio handlers: raw bytes in and out, a failed reply aborts the call."""

    def __init__(self, routes: dict[str, Route]):
        self._handlers = {path: grpc.unary_unary_rpc_method_handler(self._handler(route))
                          for path, route in routes.items()}

    def service(self, handler_call_details):
        return self._handlers.get(handler_call_details.method)

    @staticmethod
    def _handler(route: Route):
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            reply = await route(request, context.invocation_metadata() or ())
            if reply.code is not grpc.StatusCode.OK:
                await context.abort(reply.code, reply.message, trailing_metadata=reply.trailing)
            return reply.response

        return handle
