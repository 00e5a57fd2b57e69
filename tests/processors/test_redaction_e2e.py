"""The real OTel SDK -> `otelflow run` (otlp receiver -> redaction -> file exporter): an email
in a log body, a bearer token in `http.request.header.authorization` and a card number in a
span event come out masked, with the summary attributes, using the proposed default block."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelflow.config.loader import default_config_text
from otelflow.fileformat import read_records
from otelflow.pdata import Signal, iter_scopes
from otelflow.testing.process import CollectorProcess, free_port
from tests.processors.helpers import as_dict

EMAIL = "jane.doe@example.com"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"
CARD = "4111 1111 1111 1111"
ORDER_ID = "1234567890123456"  # 16 digits, fails Luhn: must survive


def collector_config(port: int, out: Path) -> str:
    redaction = yaml.safe_load(default_config_text())["processors"]["redaction"]  # the shipped default
    redaction["summary"] = "debug"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {"redaction": redaction},
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
        "service": {"telemetry": {"metrics": {"level": "none"}}, "pipelines": {
            signal: {"receivers": ["otlp"], "processors": ["redaction"], "exporters": ["file"]}
            for signal in ("traces", "logs")}},
    }
    return yaml.safe_dump(config)


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    port = free_port()
    out = tmp_path_factory.mktemp("redaction") / "out.jsonl"
    with CollectorProcess(collector_config(port, out), wait_port=port) as proc:
        yield port, out
        assert proc.stop() == 0, proc.logs()


def wait_for(path: Path, signal: Signal, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            got = [m for s, m in read_records(path) if s is signal]
            if got:
                return got
        time.sleep(0.1)
    raise AssertionError(f"no {signal.value} in {path}")


def test_spans_and_logs_come_out_masked(collector):
    port, out = collector
    resource = Resource.create({"service.name": "checkout"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    with tracer_provider.get_tracer("shop").start_as_current_span("POST /pay") as span:
        span.set_attribute("http.request.header.authorization", f"Bearer {TOKEN}")
        span.set_attribute("order.id", ORDER_ID)
        span.add_event("charge", {"payment.card": f"card {CARD} charged", "amount": 12})
    tracer_provider.shutdown()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    logger_provider.get_logger("shop").emit(body=f"receipt sent to {EMAIL}",
                                            attributes={"order.id": ORDER_ID})
    logger_provider.shutdown()

    (traces,) = wait_for(out, Signal.TRACES)
    (logs,) = wait_for(out, Signal.LOGS)
    raw = out.read_text()
    for secret in (EMAIL, TOKEN, CARD, CARD.replace(" ", "")):
        assert secret not in raw

    (span,) = [s for _r, sc in iter_scopes(Signal.TRACES, traces) for s in sc.spans]
    attrs = as_dict(span.attributes)
    assert attrs["http.request.header.authorization"] == "****"
    assert attrs["order.id"] == ORDER_ID
    assert attrs["redaction.masked.keys"] == "http.request.header.authorization"
    assert attrs["redaction.masked.count"] == 1
    event = as_dict(span.events[0].attributes)
    assert event["payment.card"] == "card **** charged"
    assert event["amount"] == 12
    assert event["redaction.masked.count"] == 1

    (record,) = [r for _r, sc in iter_scopes(Signal.LOGS, logs) for r in sc.log_records]
    assert record.body.string_value == "receipt sent to ****"
    log_attrs = as_dict(record.attributes)
    assert log_attrs["order.id"] == ORDER_ID
    assert log_attrs["redaction.body.masked.keys"] == "body"
    assert log_attrs["redaction.body.masked.count"] == 1
