"""The OTLP receiver's own gRPC server (`otlp_grpc` over `otelflow._h2`): what real gRPC
clients send (compression, large and concurrent calls, TLS is in test_otlp_tls), and what they
would not (raw HTTP/2 from the `h2` library): each bad call gets its gRPC status, and the
connection and the other calls keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import struct
import zlib

import cramjam
import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelflow import _h2
from otelflow.component import PermanentError
from otelflow.pdata import Signal
from otelflow.receivers import otlp_grpc
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service

EXPORT = f"/{GRPC_SERVICES[Signal.TRACES]}/Export"
CONFIG = """
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"{extra}}}}}}}}}
exporters: {{debug: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""


def traces(spans: int) -> bytes:
    return sample_request(Signal.TRACES, spans).SerializeToString()


def serving(sink: CaptureExporter, port: int, extra: str = ""):
    return running_service(CONFIG.format(port=port, extra=extra), {"debug": sink})


async def export(port: int, body: bytes, method: str = EXPORT, **kwargs) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await channel.unary_unary(method)(body, timeout=10, **kwargs)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_calls_are_decoded(compression):
    port, sink = free_port(), CaptureExporter()
    async with serving(sink, port):
        assert await export(port, traces(50), compression=compression) == grpc.StatusCode.OK
    assert sink.items() == 50


async def test_large_and_concurrent_calls_on_one_connection():
    """A 3 MiB call spans many DATA frames and flow-control windows; 200 calls at once share
    one connection; every item arrives once."""
    port, sink = free_port(), CaptureExporter()
    big = traces(55_000)
    assert 3 << 20 < len(big) < 4 << 20
    async with serving(sink, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(EXPORT)
        await call(big, timeout=10)
        await asyncio.gather(*(call(traces(3), timeout=10) for _ in range(200)))
    assert sink.items() == 55_000 + 600


async def test_unknown_methods_are_unimplemented():
    port, sink = free_port(), CaptureExporter()
    async with serving(sink, port):
        assert await export(port, traces(1), "/x.Y/Z") == grpc.StatusCode.UNIMPLEMENTED
        metrics = f"/{GRPC_SERVICES[Signal.METRICS]}/Export"  # no metrics pipeline
        assert await export(port, traces(1), metrics) == grpc.StatusCode.UNIMPLEMENTED
        assert await export(port, traces(1)) == grpc.StatusCode.OK
    assert sink.items() == 1


async def test_messages_over_the_limit_are_resource_exhausted():
    """`max_recv_msg_size_mib` bounds the message as sent and as decompressed."""
    port, sink = free_port(), CaptureExporter()
    async with serving(sink, port, ", max_recv_msg_size_mib: 1"):
        too_big = traces(20_000)
        assert len(too_big) > 1 << 20
        assert await export(port, too_big) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await export(port, too_big, compression=grpc.Compression.Gzip) == \
            grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await export(port, traces(5)) == grpc.StatusCode.OK
    assert sink.items() == 5


async def test_error_messages_keep_their_text():
    """`grpc-message` is percent-encoded on the wire; the client reads back the same text."""
    port = free_port()
    sink = CaptureExporter(fail=lambda _batch: PermanentError("naïve, 100%41 refused\n"))
    async with serving(sink, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(EXPORT)(traces(1), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "naïve, 100%41 refused\n"


async def test_shutdown_answers_the_calls_in_flight():
    port = free_port()
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(CaptureExporter):
        async def export(self, batch):
            entered.set()
            await release.wait()
            await super().export(batch)

    sink = Slow()
    async with serving(sink, port) as service, \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = asyncio.ensure_future(channel.unary_unary(EXPORT)(traces(4), timeout=10))
        await asyncio.wait_for(entered.wait(), 5)
        stopping = asyncio.ensure_future(service.receivers["otlp"].shutdown())
        await asyncio.sleep(0.2)
        assert not call.done() and not stopping.done()
        release.set()
        await call
        await stopping
    assert sink.items() == 4


# -- what a gRPC client would not send: raw HTTP/2 from the h2 library -------------------------


def grpc_frame(message: bytes, compressed: bool = False, declared: int | None = None) -> bytes:
    return struct.pack(">BI", int(compressed), len(message) if declared is None else declared) \
        + message


def zstd(message: bytes) -> bytes:
    return grpc_frame(bytes(cramjam.zstd.compress(message)), compressed=True)


class RawClient:
    """An HTTP/2 client connection sending whatever a test asks, reading every stream's
    response headers, trailers and resets."""

    def __init__(self, port: int):
        self.port = port
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
        self.responses: dict[int, dict] = {}
        self.closed = False
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.pings = 0  # PINGs from the server (h2 answers them)

    async def __aenter__(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.h2.initiate_connection()
        self.flush()
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def call(self, body: bytes, path: str = EXPORT, content_type: str = "application/grpc",
             headers: tuple = (), end: bool = True) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                      (":authority", "test"), ("content-type", content_type),
                                      ("te", "trailers"), *headers])
        self.h2.send_data(stream, body, end_stream=end)
        self.flush()
        return stream

    async def outcome(self, stream: int, timeout: float = 5) -> dict:
        """{"headers", "trailers", "data", "reset"} once the stream has ended."""
        async with asyncio.timeout(timeout):
            while not self.responses.get(stream, {}).get("ended") and not self.closed:
                await self.read()
        return self.responses.get(stream, {})

    async def read(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            response = self.responses.setdefault(getattr(event, "stream_id", 0) or 0, {})
            if isinstance(event, h2.events.ResponseReceived):
                response["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.TrailersReceived):
                response["trailers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                response["data"] = response.get("data", b"") + event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                response["ended"] = True
                response["reset"] = isinstance(event, h2.events.StreamReset)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
            elif isinstance(event, h2.events.PingReceived):
                self.pings += 1
        self.flush()

    async def read_for(self, seconds: float) -> None:
        """Read (and answer PINGs) for `seconds`, or until the server closes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self.closed:
                    await self.read()


def grpc_status(outcome: dict) -> int:
    fields = outcome.get("trailers") or outcome.get("headers") or {}
    return int(fields["grpc-status"])


async def test_calls_grpc_would_not_send_get_their_status_and_the_connection_lives_on():
    port, sink = free_port(), CaptureExporter()
    request = traces(2)
    async with serving(sink, port), RawClient(port) as client:
        cases = {
            "unknown encoding": (client.call(grpc_frame(b"xx", compressed=True),
                                             headers=[("grpc-encoding", "br")]), 12),
            "bad gzip": (client.call(grpc_frame(b"not gzip", compressed=True),
                                     headers=[("grpc-encoding", "gzip")]), 13),
            "truncated": (client.call(grpc_frame(request[:10], declared=len(request))), 13),
            "two messages": (client.call(grpc_frame(request) * 2), 13),
            "no message": (client.call(b""), 13),
            "malformed OTLP": (client.call(grpc_frame(b"\x0a\xff\xff\xff")), 3),
            "gzip": (client.call(grpc_frame(gzip.compress(request), compressed=True),
                                 headers=[("grpc-encoding", "gzip")]), 0),
            "deflate": (client.call(grpc_frame(zlib.compress(request), compressed=True),
                                    headers=[("grpc-encoding", "deflate")]), 0),
            "zstd": (client.call(zstd(request), headers=[("grpc-encoding", "zstd")]), 0),
            "snappy": (client.call(grpc_frame(bytes(cramjam.snappy.compress(request)), True),
                                   headers=[("grpc-encoding", "snappy")]), 0),
            "bad zstd": (client.call(grpc_frame(b"not zstd", compressed=True),
                                     headers=[("grpc-encoding", "zstd")]), 13),
            "zstd bomb": (client.call(zstd(bytes(5 << 20)), headers=[("grpc-encoding", "zstd")]),
                          8),
            "plain": (client.call(grpc_frame(request)), 0),
        }
        wrong_type = client.call(grpc_frame(request), content_type="application/json")
        statuses = {name: grpc_status(await client.outcome(stream))
                    for name, (stream, _) in cases.items()}
        assert (await client.outcome(wrong_type))["headers"][":status"] == "415"
        ok = await client.outcome(cases["plain"][0])
    assert statuses == {name: status for name, (_, status) in cases.items()}
    assert ok["headers"]["content-type"] == "application/grpc"
    assert ok["data"] == grpc_frame(b"")  # an empty Export*ServiceResponse
    assert sink.items() == 10


async def test_cancelled_and_oversized_header_streams_leave_the_connection_serving():
    port, sink = free_port(), CaptureExporter()
    request = traces(2)
    async with serving(sink, port), RawClient(port) as client:
        half = client.call(grpc_frame(request)[:20], end=False)
        client.h2.reset_stream(half)  # cancelled mid-message
        huge = client.call(grpc_frame(request), headers=[("x-big", "v" * 20000)])
        client.flush()
        assert (await client.outcome(huge))["reset"]
        assert grpc_status(await client.outcome(client.call(grpc_frame(request)))) == 0
        assert not client.closed
    assert sink.items() == 2


async def test_a_connection_speaking_garbage_is_closed_and_others_are_served():
    port, sink = free_port(), CaptureExporter()
    async with serving(sink, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass  # the server's SETTINGS, then its GOAWAY, then EOF
        writer.close()
        assert await export(port, traces(3)) == grpc.StatusCode.OK
    assert sink.items() == 3


# -- keepalive (the grpc-go semantics of `keepalive.server_parameters`/`enforcement_policy`) --


async def test_keepalive_idle_connections_get_a_goaway():
    port, sink = free_port(), CaptureExporter()
    extra = ", keepalive: {server_parameters: {max_connection_idle: 300ms}}"
    async with serving(sink, port, extra) as service, RawClient(port) as client:
        assert isinstance(service.receivers["otlp"]._grpc_server, otlp_grpc.GrpcServer)
        assert grpc_status(await client.outcome(client.call(grpc_frame(traces(1))))) == 0
        await client.read_for(0.15)
        assert client.goaway is None  # idle for less than 300 ms
        await client.read_for(2)
    assert client.goaway is not None and client.goaway.error_code == 0
    assert client.closed


async def test_keepalive_pings_quiet_clients_and_closes_silent_ones():
    port, sink = free_port(), CaptureExporter()
    extra = ", keepalive: {server_parameters: {time: 1s, timeout: 300ms}}"
    async with serving(sink, port, extra), RawClient(port) as answering:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        await answering.read_for(3.5)
        async with asyncio.timeout(1):  # the silent client: closed ~1.3 s after its last bytes
            while await reader.read(65536):
                pass
        writer.close()
        assert answering.pings >= 2 and not answering.closed
        assert grpc_status(await answering.outcome(answering.call(grpc_frame(traces(1))))) == 0


@pytest.mark.parametrize(("policy", "too_many"), [
    ("{min_time: 10s, permit_without_stream: true}", True),
    ("{min_time: 10ms}", True),  # no calls open, and pings without calls are not permitted
    ("{min_time: 10ms, permit_without_stream: true}", False),
])
async def test_keepalive_enforcement_policy(policy, too_many):
    port, sink = free_port(), CaptureExporter()
    extra = f", keepalive: {{enforcement_policy: {policy}}}"
    async with serving(sink, port, extra), RawClient(port) as client:
        for n in range(5):
            if client.goaway is not None:
                break
            client.h2.ping(b"%08d" % n)
            client.flush()
            await client.read_for(0.05)
        if too_many:
            assert client.goaway is not None and client.goaway.error_code == 0xB
            assert client.goaway.additional_data == b"too_many_pings"
        else:
            assert client.goaway is None
            assert grpc_status(await client.outcome(client.call(grpc_frame(traces(1))))) == 0


def test_call_metadata_matches_grpc_aio():
    headers = [("user-agent", "sdk"), ("x-tenant", "acme"), ("grpc-timeout", "5S"),
               ("te", "trailers"), ("content-type", "application/grpc"),
               ("trace-bin", "AAE"), ("bad-bin", "*")]
    assert otlp_grpc.call_metadata(headers) == [
        ("user-agent", "sdk"), ("x-tenant", "acme"), ("trace-bin", b"\x00\x01")]


# -- the C session alone: any bytes after the preface raise ProtocolError or are served -----


def valid_connection_bytes() -> bytes:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    stream = client.get_next_available_stream_id()
    client.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", EXPORT),
                                 (":authority", "t"), ("content-type", "application/grpc")])
    client.send_data(stream, grpc_frame(traces(2)), end_stream=True)
    return client.data_to_send()


VALID = valid_connection_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)),
                max_size=4), st.integers(1, 64))
def test_mutated_connections_never_crash_the_session(edits, chunk):
    data = bytearray(VALID)
    for at, replacement in edits:
        data[at:at + len(replacement)] = replacement
    session = _h2.Session(1 << 20)
    session.send()
    try:
        for start in range(0, len(data), chunk):
            for call in session.feed(bytes(data[start:start + chunk])):
                stream_id, *_rest, message, status, error = call
                assert (message is None) == (status != 0) == (error is not None)
                session.respond(stream_id, [(b":status", b"200")], b"", [(b"grpc-status", b"0")])
            session.send()
    except _h2.ProtocolError:
        return
    if not edits:
        assert session.open()
