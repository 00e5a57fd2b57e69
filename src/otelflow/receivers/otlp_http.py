"""OTLP/HTTP transport of the `otlp` receiver (aiohttp): body limits applied while inflating,
protobuf and JSON codecs, CORS, and the OTLP/HTTP spec's status codes.

The component and its config live in `otelflow.receivers.otlp`; this module only serves HTTP
and hands decoded batches to the receiver's shared `deliver`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from otelflow import otlp_json
from otelflow.component import PartiallyRejected, PermanentError, RetryableError
from otelflow.config.auth import ServerAuthenticator
from otelflow.otlp_check import InvalidIds, MalformedRequest, checked_batch
from otelflow.pdata import Batch, Metadata, Signal
from otelflow.receivers import decompress

if TYPE_CHECKING:
    from otelflow.receivers.otlp import CORSSettings, HttpSettings

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# what a browser may send without the config listing it (rs/cors defaults plus OTLP's own)
DEFAULT_CORS_HEADERS = frozenset({"accept", "content-type", "content-encoding", "x-requested-with",
                                  "origin"})


class HTTPFailure(Exception):
    """A request the receiver refuses with `status` (and a google.rpc.Status body)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


_RPC_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED,
              413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT,
              503: code_pb2.UNAVAILABLE}


# -- request bodies: size limits enforced on the decompressed bytes, while inflating ---------

# Content-Encoding spellings -> the `compression_algorithms` name they are accepted under
_ENCODING_NAMES = {"": "", "identity": "", "gzip": "gzip", "x-gzip": "gzip", "zlib": "zlib",
                   "deflate": "deflate", "zstd": "zstd"}
SUPPORTED_ENCODINGS = ("", "gzip", "zstd", "zlib", "deflate")


def body_reader(content_encoding: str, limit: int,
                accepted: Collection[str] = SUPPORTED_ENCODINGS) -> decompress.Identity:
    """The decoder for a Content-Encoding listed in `accepted` (else 400, as in Go)."""
    encoding = _ENCODING_NAMES.get(content_encoding.strip().lower())
    if encoding is None or encoding not in accepted:
        names = ", ".join(name or "identity" for name in accepted)
        raise HTTPFailure(400, f"unsupported Content-Encoding {content_encoding!r}; "
                               f"accepted: {names}")
    return decompress.decoder(encoding, limit, "request body", "max_request_body_size")


async def read_body(request: web.Request, limit: int,
                    accepted: Collection[str] = SUPPORTED_ENCODINGS) -> bytes:
    """The request body, decompressed, refusing (413) anything over `limit` at either stage."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPFailure(413, f"request body of {request.content_length} bytes is larger than "
                               f"max_request_body_size ({limit} bytes)")
    reader = body_reader(request.headers.get("Content-Encoding", ""), limit, accepted)
    received = 0
    try:
        async for chunk in request.content.iter_chunked(decompress.READ_CHUNK):
            received += len(chunk)
            if received > limit:
                raise HTTPFailure(413, f"request body larger than max_request_body_size "
                                       f"({limit} bytes)")
            reader.feed(chunk)
        return reader.finish()
    except decompress.TooLarge as exc:
        raise HTTPFailure(413, str(exc)) from None
    except decompress.Corrupt as exc:
        raise HTTPFailure(400, str(exc)) from None


# -- codecs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Codec:
    content_type: str
    decode: Callable[[Signal, bytes], Batch]
    encode: Callable[[object], bytes]


def _decode_proto(signal: Signal, body: bytes) -> Batch:
    try:
        return checked_batch(signal, body)
    except MalformedRequest as exc:
        raise HTTPFailure(400, f"malformed OTLP protobuf: {exc}") from None
    except InvalidIds as exc:
        raise HTTPFailure(400, f"invalid OTLP request: {exc}") from None


def _decode_json(signal: Signal, body: bytes) -> Batch:
    try:
        message = otlp_json.loads(signal, body)
        # the wire form gets the same UTF-8 and nesting checks as protobuf requests
        return checked_batch(signal, message.SerializeToString())
    except otlp_json.OTLPJSONError as exc:
        raise HTTPFailure(400, f"malformed OTLP/JSON: {exc}") from None
    except RecursionError:
        raise HTTPFailure(400, "malformed OTLP/JSON: nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise HTTPFailure(400, f"malformed OTLP/JSON: {exc}") from None


def _encode_json(message) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()


CODECS = {
    PROTOBUF: Codec(PROTOBUF, _decode_proto, lambda m: m.SerializeToString()),
    JSON: Codec(JSON, _decode_json, _encode_json),
}


def codec_for(content_type: str) -> Codec | None:
    return CODECS.get(content_type.partition(";")[0].strip().lower())


# -- the server ------------------------------------------------------------------------------

Deliver = Callable[[Batch, str], Awaitable[None]]


class HttpServer:
    """Serves POST /v1/{traces,metrics,logs} for the given signals."""

    def __init__(self, cfg: HttpSettings, signals: Iterable[Signal], deliver: Deliver, log,
                 authenticator: ServerAuthenticator | None = None, reuse_port: bool = False):
        self.cfg = cfg
        self.reuse_port = reuse_port  # several worker processes share the port
        self.deliver = deliver
        self.log = log
        self.authenticator = authenticator
        self.include_metadata = cfg.include_metadata
        self.cors = _CORS(cfg.cors) if cfg.cors is not None else None
        self._encodings = tuple(dict.fromkeys(cfg.compression_algorithms))
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._deadlines: dict[object, asyncio.TimerHandle] = {}  # connections awaiting headers
        self.app = web.Application()
        paths = {Signal.TRACES: cfg.traces_url_path, Signal.METRICS: cfg.metrics_url_path,
                 Signal.LOGS: cfg.logs_url_path}
        for signal in signals:
            self.app.router.add_post(paths[signal], self._handler(signal))
            if self.cors is not None:
                self.app.router.add_route("OPTIONS", paths[signal], self.cors.preflight)

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, auto_decompress=False,
                               logger=_server_logger(self.log),
                               keepalive_timeout=self.cfg.idle_timeout or 365 * 86400,
                               handle_signals=False)
        await runner.setup()
        host, _, port = self.cfg.endpoint.rpartition(":")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol_factory(runner.server), host.strip("[]") or None, int(port),
            ssl=self._ssl_context(), reuse_address=True, reuse_port=self.reuse_port or None,
            backlog=4096)
        self._runner = runner
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.cfg.tls
        return tls.server_context() if tls is not None else None

    def _protocol_factory(self, server: web.Server):
        """aiohttp has no header timeout: close connections that have not completed their first
        request's headers within `read_header_timeout` (slowloris clients)."""
        loop = asyncio.get_running_loop()
        timeout = self.cfg.read_header_timeout

        def expire(handler) -> None:
            if self._deadlines.pop(handler, None) is not None and handler.transport is not None:
                handler.transport.close()

        def factory():
            handler = server()
            if timeout:
                self._deadlines[handler] = loop.call_later(timeout, expire, handler)
            return handler

        return factory

    def _handler(self, signal: Signal):
        async def handle(request: web.Request) -> web.StreamResponse:
            deadline = self._deadlines.pop(request.protocol, None)
            if deadline is not None:
                deadline.cancel()
            codec = codec_for(request.content_type) or CODECS[JSON]
            headers = dict(self.cfg.response_headers)
            if self.cors is not None:
                headers.update(self.cors.response_headers(request))
            try:
                return await self._export(request, signal, headers)
            except HTTPFailure as exc:
                return self._status_response(codec, exc, headers)
            except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
                # the client went away or broke the body framing: nobody to answer
                self.log.debug("incomplete request body", error=str(exc))
                return self._status_response(codec, HTTPFailure(400, "incomplete body"), headers)

        return handle

    async def _export(self, request: web.Request, signal: Signal, headers: dict) -> web.Response:
        if self.authenticator is not None and not self.authenticator.authenticate(
                {k.lower(): v for k, v in request.headers.items()}):
            raise HTTPFailure(401, "missing or invalid credentials")
        codec = codec_for(request.content_type)
        if codec is None:
            raise HTTPFailure(415, f"unsupported Content-Type {request.content_type!r}; "
                                   f"use {PROTOBUF} or {JSON}")
        body = await read_body(request, self.cfg.max_request_body_size, self._encodings)
        batch = codec.decode(signal, body)
        if self.include_metadata:
            batch.metadata = Metadata(request.headers.items())
        response = signal.response_type()
        try:
            await self.deliver(batch, "http")
        except PartiallyRejected as exc:
            setattr(response.partial_success, signal.rejected_field, exc.rejected)
            response.partial_success.error_message = str(exc)
        except PermanentError as exc:
            raise HTTPFailure(400, str(exc)) from None
        except RetryableError as exc:
            raise HTTPFailure(503, str(exc), exc.retry_after) from None
        return web.Response(body=codec.encode(response), content_type=codec.content_type,
                            headers=headers)

    def _status_response(self, codec: Codec, exc: HTTPFailure, headers: dict) -> web.Response:
        status = status_pb2.Status(code=_RPC_CODES.get(exc.status, code_pb2.UNKNOWN), message=str(exc))
        headers = dict(headers)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if exc.status == 413:
            headers["Connection"] = "close"  # the rest of the body is not read
        return web.Response(status=exc.status, body=codec.encode(status),
                            content_type=codec.content_type, headers=headers)


class _ToStructlog(logging.Handler):
    """aiohttp's server log: malformed HTTP from clients at debug (no tracebacks an attacker
    can flood the log with), anything else as an error."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | ConnectionError) or record.levelno < logging.WARNING:
            self.log.debug("HTTP connection error", message=record.getMessage(), error=str(exc))
        else:
            self.log.error("HTTP server error", message=record.getMessage(), error=repr(exc))


def _server_logger(log) -> logging.Logger:
    logger = logging.Logger("otelflow.receivers.otlp.http")  # not registered globally
    logger.addHandler(_ToStructlog(log))
    return logger


class _CORS:
    """Browser access: `allowed_origins` (with `*` wildcards), `allowed_headers`, `max_age`."""

    def __init__(self, cfg: CORSSettings):
        self.cfg = cfg
        patterns = [re.escape(o).replace(r"\*", ".*") for o in cfg.allowed_origins]
        self._origins = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        self._any_header = "*" in cfg.allowed_headers
        self._headers = DEFAULT_CORS_HEADERS | {h.lower() for h in cfg.allowed_headers}

    def allowed(self, origin: str | None) -> bool:
        return bool(origin and self._origins is not None and self._origins.fullmatch(origin))

    def response_headers(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if not self.allowed(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin or "", "Vary": "Origin"}

    async def preflight(self, request: web.Request) -> web.Response:
        headers = self.response_headers(request)
        method = request.headers.get("Access-Control-Request-Method", "").upper()
        raw = request.headers.get("Access-Control-Request-Headers", "")
        requested = [h.strip().lower() for h in raw.split(",") if h.strip()]
        if headers and method == "POST" and (
                self._any_header or all(h in self._headers for h in requested)):
            headers["Access-Control-Allow-Methods"] = "POST"
            if requested:
                headers["Access-Control-Allow-Headers"] = ", ".join(requested)
            if self.cfg.max_age:
                headers["Access-Control-Max-Age"] = str(self.cfg.max_age)
        else:
            headers = {"Vary": "Origin"}
        return web.Response(status=204, headers=headers)

