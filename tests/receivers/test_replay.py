"""The replay receiver: config validation, replaying recorded fixtures, pacing, rebasing,
looping, backpressure and errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.component import RetryableError
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.fileformat import encode_record, read_records
from otelflow.pdata import Signal, count_items, iter_scopes
from otelflow.pipeline.service import Service
from otelflow.testing import MemorySink, PipelineHarness

FIXTURES = Path(__file__).parents[1] / "fixtures"
SECOND = 1_000_000_000
OLD = 1_600_000_000 * SECOND  # September 2020


def config(receiver: str, pipelines: str = "traces logs metrics") -> str:
    lines = "\n".join(f"    {p}: {{receivers: [replay], exporters: [debug]}}" for p in pipelines.split())
    return f"""
receivers:
  replay:
{receiver}
exporters:
  debug: {{}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
{lines}
"""


def traces_request(stamps: list[int], name: str = "op"):
    request = Signal.TRACES.request_type()
    scope = request.resource_spans.add().scope_spans.add()
    for i, start in enumerate(stamps):
        scope.spans.add(name=f"{name}-{i}", trace_id=bytes(15) + bytes([i + 1]), span_id=bytes(7) + b"\x01",
                        start_time_unix_nano=start, end_time_unix_nano=start + SECOND // 10,
                        events=[Span.Event(name="e", time_unix_nano=start + 5)])
    return request


def logs_request(stamp: int, body: str = "hello"):
    request = Signal.LOGS.request_type()
    scope = request.resource_logs.add().scope_logs.add()
    record = LogRecord(time_unix_nano=stamp, observed_time_unix_nano=0)
    record.body.string_value = body
    scope.log_records.append(record)
    return request


def write(path: Path, requests, fmt: str = "json") -> Path:
    path.write_bytes(b"".join(encode_record(r, fmt) for r in requests))
    return path


def fixture_items(directory: Path) -> dict[Signal, int]:
    counts = dict.fromkeys(Signal, 0)
    for file in directory.glob("*.jsonl"):
        for signal, message in read_records(file):
            counts[signal] += count_items(signal, message)
    return counts


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(("speed", "factor"), [("max", None), ("realtime", 1.0), (10, 10.0),
                                               ("2.5x", 2.5), ("0.5", 0.5)])
def test_speed_values(speed, factor, tmp_path):
    raw, source = load_config(text=config(f"    path: {tmp_path}\n    speed: {speed}"))
    cfg = parse_config(raw, source).component(__import__("otelflow").component.Kind.RECEIVER, "replay")
    assert cfg.config.factor == factor


@pytest.mark.parametrize(("body", "message"), [
    ("    path: x\n    speed: fast", "invalid speed 'fast': use realtime, max or a positive factor"),
    ("    path: x\n    speed: 0", "speed factor must be positive"),
    ("    path: x\n    format: yaml", "receivers.replay.format"),
    ("    path: ''", "give a file, directory or glob pattern"),
    ("    path: x\n    signal: spans", "receivers.replay.signal"),
    ("    speed: max", "receivers.replay.path"),
])
def test_invalid_config(body, message):
    raw, source = load_config(text=config(body))
    with pytest.raises(ConfigErrors) as info:
        parse_config(raw, source)
    assert message in str(info.value)


# -- replaying recorded fixtures ------------------------------------------------------


def test_replays_every_recorded_item_unchanged():
    harness = PipelineHarness(config(f"    path: {FIXTURES / 'http_api'}\n    speed: max"), receivers=True)
    result = harness.run()
    sink = result["debug"]
    expected = fixture_items(FIXTURES / "http_api")
    assert {s: sink.item_count(s) for s in Signal} == expected
    assert expected[Signal.TRACES] > 100
    sent = sorted(s.SerializeToString(deterministic=True)
                  for _s, m in read_records(FIXTURES / "http_api" / "traces.jsonl")
                  for _r, sc in iter_scopes(Signal.TRACES, m) for s in sc.spans)
    got = sorted(f.item.SerializeToString(deterministic=True) for f in sink.spans())
    assert got == sent
    assert result.metric("otelcol_receiver_accepted_spans", receiver="replay",
                         transport="replay") == expected[Signal.TRACES]


def test_signal_filter_and_glob(tmp_path):
    path = FIXTURES / "*" / "logs.jsonl"
    result = PipelineHarness(config(f"    path: '{path}'\n    speed: max\n    signal: logs"),
                             receivers=True).run()
    sink = result["debug"]
    assert sink.item_count(Signal.TRACES) == 0
    assert sink.item_count(Signal.LOGS) == sum(fixture_items(d)[Signal.LOGS] for d in FIXTURES.iterdir()
                                               if d.is_dir())
    assert sink.logs(body=lambda b: "alice@example.com" in b)


def test_proto_files_keep_their_bytes(tmp_path):
    requests = [traces_request([OLD + i * SECOND]) for i in range(3)]
    write(tmp_path / "traces.binpb", requests, "proto")
    result = PipelineHarness(config(f"    path: {tmp_path}\n    format: proto\n    speed: max"),
                             receivers=True).run()
    got = [b.message for b in result["debug"].batches]
    assert got == requests


def test_proto_signal_must_be_known(tmp_path):
    write(tmp_path / "capture.pb", [traces_request([OLD])], "proto")
    harness = PipelineHarness(config(f"    path: {tmp_path}/capture.pb\n    format: proto"),
                              receivers=True)
    with pytest.raises(RuntimeError, match="cannot tell which signal this proto file holds"):
        harness.run()
    result = PipelineHarness(config(f"    path: {tmp_path}/capture.pb\n    format: proto\n"
                                    "    signal: traces\n    speed: max"), receivers=True).run()
    assert result["debug"].item_count() == 1


def test_missing_files_fail_start(tmp_path):
    harness = PipelineHarness(config(f"    path: {tmp_path}/nothing-*.jsonl"), receivers=True)
    with pytest.raises(RuntimeError, match=r"receiver 'replay': failed to start: path .* matches no json"):
        harness.run()


async def test_malformed_record_is_fatal_with_its_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", [logs_request(OLD)])
    path.write_bytes(path.read_bytes() + b'{"resourceLogs": [{"scopeLogs": 3}]}\n')
    raw, source = load_config(text=config(f"    path: {path}\n    speed: max"))
    service = Service(parse_config(raw, source), exporter_overrides={"debug": MemorySink()})
    await service.start()
    receiver = service.receivers["replay"]
    with pytest.raises(ValueError, match=r"bad.jsonl:2:"):
        await receiver.wait_finished()
    fatal = await asyncio.wait_for(service.wait_fatal(), 1)
    assert "bad.jsonl:2" in str(fatal)
    await service.shutdown()


# -- timestamps ------------------------------------------------------------------------


def test_rebase_makes_newest_item_now_and_keeps_gaps(tmp_path):
    write(tmp_path / "a.jsonl", [traces_request([OLD, OLD + 30 * SECOND]), logs_request(OLD + 60 * SECOND)])
    before = time.time_ns()
    result = PipelineHarness(config(f"    path: {tmp_path}\n    speed: max\n    rebase_timestamps: true"),
                             receivers=True).run()
    after = time.time_ns()
    sink = result["debug"]
    spans = sorted(sink.spans(), key=lambda s: s.start_time_unix_nano)
    (log,) = sink.logs()
    assert before <= log.time_unix_nano <= after  # the newest item is "now"
    assert log.observed_time_unix_nano == 0  # unset stays unset
    delta = log.time_unix_nano - (OLD + 60 * SECOND)
    assert [s.start_time_unix_nano - delta for s in spans] == [OLD, OLD + 30 * SECOND]
    assert [s.end_time_unix_nano - s.start_time_unix_nano for s in spans] == [SECOND // 10] * 2
    assert spans[0].events[0].time_unix_nano == spans[0].start_time_unix_nano + 5


def test_without_rebase_timestamps_are_preserved(tmp_path):
    write(tmp_path / "a.jsonl", [traces_request([OLD])])
    result = PipelineHarness(config(f"    path: {tmp_path}\n    speed: max"), receivers=True).run()
    assert [s.start_time_unix_nano for s in result["debug"].spans()] == [OLD]


# -- pacing ----------------------------------------------------------------------------


class TimedSink(MemorySink):
    def __init__(self):
        super().__init__()
        self.arrivals: list[float] = []

    async def export(self, batch):
        self.arrivals.append(time.monotonic())
        await super().export(batch)


async def replay_timed(tmp_path: Path, speed: str, loop: bool = False) -> tuple[TimedSink, Service]:
    # 5 requests 150 ms apart by their timestamps, spread over two files, out of file order
    write(tmp_path / "a.jsonl", [traces_request([OLD + i * 150_000_000]) for i in (0, 2, 4)])
    write(tmp_path / "b.jsonl", [logs_request(OLD + i * 150_000_000 + SECOND // 10) for i in (1, 3)])
    body = f"    path: {tmp_path}\n    speed: {speed}\n    loop: {str(loop).lower()}"
    raw, source = load_config(text=config(body))
    sink = TimedSink()
    service = Service(parse_config(raw, source), exporter_overrides={"debug": sink})
    await service.start()
    return sink, service


@pytest.mark.parametrize(("speed", "expected"), [("realtime", 0.6), ("3", 0.2)])
async def test_speed_keeps_recorded_gaps_scaled(tmp_path, speed, expected):
    sink, service = await replay_timed(tmp_path, speed)
    await asyncio.wait_for(service.receivers["replay"].wait_finished(), 5)
    await service.shutdown()
    # merged across files in timestamp order (newest item of each request)
    assert [b.signal for b in sink.batches] == [Signal.TRACES, Signal.LOGS] * 2 + [Signal.TRACES]
    # never early (each request waits for its recorded offset / speed), and not much late
    offsets = [t - sink.arrivals[0] for t in sink.arrivals]
    for i, offset in enumerate(offsets):
        assert offset >= i * expected / 4 * 0.9, offsets
    assert offsets[-1] <= expected + 0.25, offsets


async def test_max_speed_does_not_wait(tmp_path):
    sink, service = await replay_timed(tmp_path, "max")
    await asyncio.wait_for(service.receivers["replay"].wait_finished(), 5)
    await service.shutdown()
    assert len(sink.batches) == 5
    assert sink.arrivals[-1] - sink.arrivals[0] < 0.2  # realtime takes 0.6 s


async def test_loop_replays_until_shutdown(tmp_path):
    sink, service = await replay_timed(tmp_path, "max", loop=True)
    receiver = service.receivers["replay"]
    for _ in range(200):
        if len(sink.batches) >= 15:
            break
        await asyncio.sleep(0.01)
    assert not receiver.finished
    await service.shutdown()
    assert len(sink.batches) >= 15
    assert receiver.finished


# -- backpressure ----------------------------------------------------------------------


async def test_backpressure_is_waited_out_not_dropped(tmp_path):
    write(tmp_path / "a.jsonl", [traces_request([OLD + i]) for i in range(4)])
    raw, source = load_config(text=config(f"    path: {tmp_path}\n    speed: max"))
    sink = MemorySink()
    sink.fail_with = RetryableError("queue full", 1.0)
    service = Service(parse_config(raw, source), exporter_overrides={"debug": sink})
    await service.start()
    await asyncio.sleep(0.1)
    assert sink.batches == []
    sink.fail_with = None
    await asyncio.wait_for(service.receivers["replay"].wait_finished(), 5)
    await service.shutdown()
    assert sink.item_count() == 4
