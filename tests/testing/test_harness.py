"""PipelineHarness: YAML path or text, sink selection, feeding every kind of data, flushing
on stop, receivers optional, async API, finders on recorded fixtures."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from otelflow.component import PermanentError, RetryableError
from otelflow.config import ConfigErrors
from otelflow.fileformat import encode_record
from otelflow.pdata import Batch, Signal
from otelflow.testing import MemorySink, PipelineHarness, build, load_fixture

FIXTURES = Path(__file__).parents[1] / "fixtures"

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 10s
    send_batch_size: 100000
exporters:
  otlp/backend:
    endpoint: 127.0.0.1:1
    tls: {{insecure: true}}
  file:
    path: {out}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/backend, file]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp/backend]}}
    logs/a: {{receivers: [otlp], exporters: [otlp/backend]}}
    logs/b: {{receivers: [otlp], exporters: [file]}}
"""


@pytest.fixture
def config(tmp_path, port):
    return CONFIG.format(port=port, out=tmp_path / "out.jsonl")


def test_stop_flushes_the_batch_processor(config):
    # the batch timeout (10s) and size are never reached: only the shutdown flush delivers
    result = PipelineHarness(config).run(FIXTURES / "ml_training")
    sink = result["otlp/backend"]
    assert sink.item_count(Signal.TRACES) == sum(b.item_count() for b in load_fixture(
        FIXTURES / "ml_training" / "traces.jsonl"))
    assert len([b for b in sink.batches if b.signal is Signal.TRACES]) == 1  # one flushed batch
    steps = sink.spans(name="train.step", resource={"service.name": "trainer"})
    assert len(steps) == 36
    assert {s.attributes["epoch"] for s in steps} == {0, 1, 2}
    gpu = sink.metrics(name="gpu.memory.used", attributes={"gpu.id": 1})
    assert gpu and all(p.metric.unit == "By" and p.value > 2**30 for p in gpu)
    losses = [p.value for p in sink.metrics(name="train.loss")]
    assert losses == sorted(losses, reverse=True)  # the recorded run's loss went down


def test_yaml_path_and_selected_sinks(config, tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(config)
    harness = PipelineHarness(path, sinks=["otlp/backend"])
    result = harness.run(build.traces(build.span("a")))
    assert list(result.sinks) == ["otlp/backend"]
    assert result["otlp/backend"].spans(name="a")
    assert (tmp_path / "out.jsonl").read_text().count('"name":"a"') == 1  # the real file exporter ran
    with pytest.raises(KeyError, match=r"no sink for exporter 'file'; sinks: \['otlp/backend'\]"):
        result["file"]


def test_unknown_sink_and_bad_yaml_are_reported(config):
    with pytest.raises(ValueError, match=r"sinks \['otlp/nope'\] are not exporters of any pipeline"):
        PipelineHarness(config, sinks=["otlp/nope"])
    with pytest.raises(ConfigErrors, match="send_batch_sizee"):
        PipelineHarness(config.replace("send_batch_size:", "send_batch_sizee:"))


def test_feeds_every_kind_of_data_to_the_pipelines_of_its_signal(config, tmp_path):
    request = build.logs(build.log("one"))
    fixture = tmp_path / "logs.binpb"
    fixture.write_bytes(encode_record(build.logs(build.log("proto")), "proto"))
    data = [request, Batch.of(build.logs(build.log("batch"))),
            {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "json"}}]}]}]},
            [build.logs(build.log("listed"))], fixture]
    result = PipelineHarness(config).run(*data)
    for sink in ("otlp/backend", "file"):  # logs/a and logs/b both got everything
        assert sorted(f.body for f in result[sink].logs()) == ["batch", "json", "listed", "one", "proto"]


def test_pipelines_option_and_skipped_signals(config):
    harness = PipelineHarness(config)
    result = harness.run(build.logs(build.log("only b")), build.traces(build.span("x")),
                         pipelines=["logs/b"])
    assert result["file"].logs(body="only b")
    assert result["otlp/backend"].logs() == []
    assert result.skipped == {Signal.TRACES: 1}
    with pytest.raises(ValueError, match=r"unknown pipelines \['logs/c'\]"):
        harness.run(build.logs(build.log("x")), pipelines=["logs/c"])


def test_pipelines_without_receivers_get_fed_directly(tmp_path):
    result = PipelineHarness("""
exporters:
  debug: {}
service:
  pipelines:
    traces: {exporters: [debug]}
""").run(build.traces(build.span("fed")))
    assert [s.name for s in result["debug"].spans()] == ["fed"]


def test_refused_data_is_recorded_and_bugs_propagate(config):
    harness = PipelineHarness(config)

    async def scenario(error):
        async with harness:
            harness.sinks["otlp/backend"].fail_with = error
            await harness.feed(build.logs(build.log("x")), pipelines=["logs/a"])

    asyncio.run(scenario(PermanentError("bad data")))
    assert [str(e) for _b, e in harness.result().refused] == ["bad data"]
    with pytest.raises(ZeroDivisionError):
        asyncio.run(scenario(ZeroDivisionError()))


async def test_async_api_waits_out_backpressure(config):
    harness = PipelineHarness(config, sinks=["otlp/backend", "file"])
    async with harness:
        sink = harness.sink("otlp/backend")
        sink.fail_with = RetryableError("busy")
        asyncio.get_running_loop().call_later(0.05, setattr, sink, "fail_with", None)
        items = await harness.feed(build.logs(build.log("eventually")), pipelines=["logs/a"])
        assert items == 1
    assert harness.sink("otlp/backend").logs(body="eventually")
    with pytest.raises(RuntimeError, match=r"use `await harness\.arun"):
        harness.run()


async def test_receivers_started_on_request(config, port):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    async with PipelineHarness(config, receivers=True) as harness:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
        await asyncio.to_thread(lambda: (provider.get_tracer("t").start_span("via sdk").end(),
                                         provider.shutdown()))
    assert harness.sink("otlp/backend").spans(name="via sdk")


def test_rebase_and_finders_on_pii_fixture(config):
    result = PipelineHarness(config).run(FIXTURES / "pii_logs", rebase_timestamps=True)
    sink = result["otlp/backend"]
    emails = sink.logs(attributes={"user.email": re.compile(r"@example\.(com|org|net)$")})
    assert len(emails) >= 20
    assert sink.logs(body=re.compile(r"Bearer eyJ"))
    assert sink.logs(body=re.compile(r"\b4111 1111 1111 1111\b"), where=lambda f: f.severity_text == "INFO")
    assert sink.logs(attributes={"user.email": "nobody@example.com"}) == []


def test_memory_sink_is_usable_alone():
    sink = MemorySink()
    assert sink.item_count() == 0
    sink.batches.append(Batch.of(build.traces(build.span("s", {"k": [1, 2]}, status="error"))))
    (found,) = sink.spans(attributes={"k": [1, 2]})
    assert found.status.code == 2 and found.attributes == {"k": [1, 2]}
    assert sink.spans(attributes={"missing": None}) == []


def test_stop_drains_tail_sampling_decisions():
    # decision_wait (30s) is never reached: shutdown decides every pending trace
    result = PipelineHarness("""
processors:
  tail_sampling:
    decision_wait: 30s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
exporters:
  debug: {}
service:
  pipelines:
    traces: {processors: [tail_sampling], exporters: [debug]}
""").run(FIXTURES / "http_api" / "traces.jsonl")
    recorded = load_fixture(FIXTURES / "http_api" / "traces.jsonl")
    sink = MemorySink()
    sink.batches = recorded
    error_traces = {s.trace_id for s in sink.spans(where=lambda s: s.status.code == 2)}
    kept = result["debug"].spans()
    assert error_traces and {s.trace_id for s in kept} == error_traces
    assert len(kept) == len(sink.spans(where=lambda s: s.trace_id in error_traces))
