"""The `redaction` processor's dense path (exact matches over the whole request) gives the
sparse path's output byte for byte, and is taken only where it applies."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelflow.pdata import Batch, Signal
from otelflow.processors.redaction import RedactionProcessor
from tests.processors.helpers import as_dict, build, put

BENCH = {"allow_all_keys": True, "summary": "silent",
         "blocked_key_patterns": ["password", "token", "secret", "api[_-]?key", "authorization",
                                  "cookie"],
         "value_patterns": ["email", "credit_card", "us_ssn", "jwt", "bearer_token",
                            "aws_access_key", "ipv4", "iban"]}
ALL = {"allow_all_keys": True, "value_patterns": ["all"], "summary": "debug",
       "blocked_values": ["SECRET-[0-9]{6}"], "blocked_key_patterns": ["password"],
       "ignored_keys": ["safe"], "redact_span_names": True}
CONFIGS = {
    "bench": BENCH,
    "all_debug": ALL,
    "info_allowed": {**BENCH, "summary": "info", "allowed_values": [r"[a-z]+@example\.org"]},
    "hashed": {**BENCH, "hash_function": "sha1", "ignored_keys": ["safe"]},
}
SECRETS = ["alice@example.com", "bob@example.org", "4111 1111 1111 1111", "4111111111111112",
           "123-45-6789", "10.1.2.3", "DE89370400440532013000", "AKIAIOSFODNN7EXAMPLE",
           "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "SECRET-123456", "ff02::1",
           "+14155552671", "2001:db8::1"]


def pair(config: dict, signal: Signal) -> tuple[RedactionProcessor, RedactionProcessor]:
    """(a processor forced onto the dense path, one that never takes it)."""
    dense, sparse = build("redaction", config, signal), build("redaction", config, signal)
    assert dense.dense is not None
    dense.native = sparse.native = None  # tests/processors/test_redaction_native.py
    dense.dense_after = 0
    sparse.dense = None
    return dense, sparse


def same_output(config: dict, signal: Signal, raw: bytes) -> bytes:
    """Both paths' bytes for `raw`; asserts they are identical and encode the message."""
    dense, sparse = pair(config, signal)
    out_dense = dense.redact(Batch.from_bytes(signal, raw))
    out_sparse = sparse.redact(Batch.from_bytes(signal, raw))
    assert out_dense.to_bytes() == out_sparse.to_bytes()
    assert signal.request_type.FromString(out_dense.to_bytes()) == out_dense.message
    return out_dense.to_bytes()


def logs_request(n: int, body: str = "user alice{i}@example.com paid with "
                 "4111 1111 1111 1111 #{i}") -> ExportLogsServiceRequest:
    """The bench shape: every body with PII, ten benign attributes."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    put(rl.resource.attributes, {"service.name": "bench", "host.name": "h"})
    records = rl.scope_logs.add().log_records
    for i in range(n):
        record = records.add(time_unix_nano=1_700_000_000_000_000_000 + i, severity_number=9,
                             severity_text="INFO")
        record.body.string_value = body.format(i=i)
        put(record.attributes, {f"attr.{a}": f"value-{a}-{i * 7 % 1000}" for a in range(10)})
    return req


def traces_request(values: list[dict], **extra) -> bytes:
    """One span per mapping of attributes; `extra` plants in names, events, links, status."""
    req = Signal.TRACES.request_type()
    rs = req.resource_spans.add()
    put(rs.resource.attributes, extra.get("resource", {"service.name": "shop"}))
    ss = rs.scope_spans.add()
    put(ss.scope.attributes, extra.get("scope", {}))
    for i, attrs in enumerate(values):
        span = ss.spans.add(name=extra.get("name", "GET /x"), kind=2, trace_id=bytes(16),
                            span_id=bytes([i % 256]) * 8)
        put(span.attributes, attrs)
        if "event" in extra:
            put(span.events.add(name=extra.get("event_name", "ev")).attributes, extra["event"])
        if "link" in extra:
            put(span.links.add(span_id=b"\x01" * 8).attributes, extra["link"])
        if "status" in extra:
            span.status.message = extra["status"]
    return req.SerializeToString()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_dense_logs_match_the_sparse_path(config):
    out = same_output(CONFIGS[config], Signal.LOGS, logs_request(50).SerializeToString())
    record = ExportLogsServiceRequest.FromString(out).resource_logs[0].scope_logs[0].log_records[7]
    if config != "hashed":
        assert record.body.string_value == "user **** paid with **** #7"
    else:
        assert "alice7@example.com" not in record.body.string_value


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("where", ["end", "middle", "alone", "digit_after"])
def test_dense_spans_match_the_sparse_path(config, where):
    """Secrets at the end of a value sit against the next attribute's tag byte (`J`): the
    whole-request matches cross the value's end and are matched again within the value."""
    values = []
    for i, secret in enumerate(SECRETS * 3):
        text = {"end": f"x {secret}", "middle": f"x {secret} y", "alone": secret,
                "digit_after": f"{secret}{i}"}[where]
        values.append({"http.route": "/a", f"k{i % 4}": text, "safe": secret, "z": "tail"})
    out = same_output(CONFIGS[config], Signal.TRACES, traces_request(values))
    spans = Signal.TRACES.request_type().FromString(out).resource_spans[0].scope_spans[0].spans
    assert all("alice@example.com" not in kv.value.string_value
               for span in spans for kv in span.attributes if kv.key != "safe")


@pytest.mark.parametrize("extra", [
    {"event": {"e": "mail alice@example.com"}}, {"link": {"l": "card 4111111111111111"}},
    {"status": "failed for alice@example.com"}, {"name": "alice@example.com"},
    {"event": {"e": "x"}, "event_name": "to alice@example.com"},
    {"resource": {"owner": "alice@example.com"}}, {"scope": {"owner": "alice@example.com"}},
], ids=["event", "link", "status", "span_name", "event_name", "resource", "scope"])
def test_places_the_dense_path_does_not_follow_are_walked(extra):
    values = [{"a": f"id {i}", "b": "alice@example.com"} for i in range(20)]
    out = same_output(ALL, Signal.TRACES, traces_request(values, **extra))
    assert b"alice@example.com" not in out


@pytest.mark.parametrize("value", [
    {"nested": {"inner": "alice@example.com"}}, ["x", "alice@example.com"],
    b"bytes alice@example.com",
], ids=["kvlist", "array", "bytes"])
def test_nested_and_bytes_values_are_walked(value):
    out = same_output(ALL, Signal.TRACES, traces_request([{"v": value, "w": "ok"}] * 5))
    assert b"alice@example.com" not in out


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_non_ascii_values_mask_by_characters(config):
    values = [{"v": f"caf\u00e9 \u00e0 {secret} \u2603 fin", "w": f"\u00fc{secret}"}
              for secret in SECRETS]
    out = same_output(CONFIGS[config], Signal.TRACES, traces_request(values))
    span = Signal.TRACES.request_type().FromString(out).resource_spans[0].scope_spans[0].spans[0]
    if config != "hashed":
        assert as_dict(span.attributes)["v"] == "caf\u00e9 \u00e0 **** \u2603 fin"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_blocked_ignored_and_summary_keys(config):
    values = [{"password": "p4ss", "safe": "alice@example.com", "user": "bob@example.com",
               "redaction.masked.count": 3, "api-key": 7}] * 4
    same_output(CONFIGS[config], Signal.TRACES, traces_request(values))


def _framed(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    size, length = len(payload), bytearray()
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    return bytes([number << 3 | 2]) + bytes(length) + bytes([size]) + payload


def test_a_repeated_body_field_gives_the_sparse_output():
    """A record with its body field twice: the parser merges the two (the last string
    wins), so the body located first is not what the message holds and the item is walked."""
    req = logs_request(2)
    records = req.resource_logs[0].scope_logs[0].log_records
    second = Signal.LOGS.request_type()
    second.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    body = second.resource_logs[0].scope_logs[0].log_records[0].body
    body.string_value = "later bob@example.com here"
    doubled = records[1].SerializeToString() + _framed(5, body.SerializeToString())
    scope = _framed(2, records[0].SerializeToString()) + _framed(2, doubled)
    raw = _framed(1, _framed(2, scope))
    out = same_output(BENCH, Signal.LOGS, raw)
    parsed = Signal.LOGS.request_type().FromString(out)
    assert parsed.resource_logs[0].scope_logs[0].log_records[1].body.string_value == (
        "later **** here")


def test_metrics_and_unsupported_configs_keep_the_sparse_path():
    assert build("redaction", BENCH, Signal.METRICS).dense is not None  # scanner is shared
    raw = Signal.METRICS.request_type().SerializeToString()
    proc = build("redaction", BENCH, Signal.METRICS)
    proc.dense_after = 0
    assert not proc._is_dense(Batch.from_bytes(Signal.METRICS, raw), raw, [])
    for config in ({**BENCH, "blocked_values": ["^card [0-9]+$"]},
                   {**BENCH, "url_sanitizer": {"enabled": True, "attributes": ["url.full"]}},
                   {**BENCH, "allow_all_keys": False, "allowed_keys": ["a"]},
                   {**BENCH, "redact_all_types": True}):
        assert build("redaction", config, Signal.TRACES).dense is None, config


@pytest.mark.parametrize(("every", "dense"), [(1, True), (2, True), (10, False), (0, False)])
def test_density_decides_the_path(every, dense):
    """Every `every`-th record's body holds two matches (0: none): the dense path from a
    projected quarter of the records on."""
    req = logs_request(1000, body="user {i} paid")
    for i, record in enumerate(req.resource_logs[0].scope_logs[0].log_records):
        if every and i % every == 0:
            record.body.string_value = f"user a{i}@example.com paid with 4111 1111 1111 1111"
    proc = build("redaction", BENCH, Signal.LOGS)
    hits = proc._hits(Batch.from_bytes(Signal.LOGS, req.SerializeToString()))
    assert isinstance(hits, bytes) is dense


def test_key_hits_do_not_make_a_request_dense():
    """A blocked key on every record (its value masked whole) keeps the sparse path, which
    walks just the flagged attributes."""
    req = logs_request(200, body="user {i} paid")
    for record in req.resource_logs[0].scope_logs[0].log_records:
        put(record.attributes, {"http.request.header.authorization": "Basic abc"})
    proc = build("redaction", BENCH, Signal.LOGS)
    assert not isinstance(proc._hits(Batch.from_bytes(Signal.LOGS, req.SerializeToString())),
                          bytes)
    out = same_output(BENCH, Signal.LOGS, req.SerializeToString())
    record = ExportLogsServiceRequest.FromString(out).resource_logs[0].scope_logs[0].log_records[0]
    assert as_dict(record.attributes)["http.request.header.authorization"] == "****"


# -- property: dense == sparse on random requests -------------------------------------------

GLUE = st.sampled_from(["", " ", "J", "2", "z", "-", ".", "@", "\n", "x", "9", "Z"])
TEXT = st.text(string.ascii_letters + string.digits + " .-@:\u00e9\u2603", max_size=10)


@st.composite
def values(draw):
    parts = [draw(TEXT)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(GLUE), draw(st.sampled_from(SECRETS)), draw(GLUE), draw(TEXT)]
    return "".join(parts)


@st.composite
def requests(draw):
    signal = draw(st.sampled_from([Signal.LOGS, Signal.TRACES]))
    req = signal.request_type()
    keys = st.sampled_from(["a", "b", "safe", "password", "k.token", "redaction.masked.count"])
    for _ in range(draw(st.integers(1, 2))):
        rx = getattr(req, signal.resource_field).add()
        put(rx.resource.attributes, {"service.name": draw(values())})
        for _ in range(draw(st.integers(1, 2))):
            sx = getattr(rx, signal.scope_field).add()
            put(sx.scope.attributes, draw(st.dictionaries(keys, values(), max_size=1)))
            for _ in range(draw(st.integers(1, 4))):
                item = getattr(sx, signal.item_field).add()
                put(item.attributes, draw(st.dictionaries(keys, values(), max_size=4)))
                if signal is Signal.LOGS:
                    item.body.string_value = draw(values())
                else:
                    item.name = draw(values())
                    if draw(st.booleans()):
                        item.status.message = draw(values())
    return signal, req.SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=requests(), config=st.sampled_from(sorted(CONFIGS)))
def test_dense_equals_sparse_on_random_requests(case, config):
    signal, raw = case
    same_output(CONFIGS[config], signal, raw)


def test_bench_shape_masks_every_body():
    out = same_output(BENCH, Signal.LOGS, logs_request(200).SerializeToString())
    records = ExportLogsServiceRequest.FromString(out).resource_logs[0].scope_logs[0].log_records
    assert all(r.body.string_value == f"user **** paid with **** #{i}"
               for i, r in enumerate(records))
    assert as_dict(records[3].attributes)["attr.0"] == "value-0-21"
