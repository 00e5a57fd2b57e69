"""The `redaction` processor's native masker (`otelflow._redact`, C++ with RE2) gives the
Python walk's output, leaves to that walk what it does not follow, and is taken only for the
configurations it covers."""

from __future__ import annotations

import hashlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelflow import _redact
from otelflow.otlp_check import InvalidIds, MalformedRequest, checked_batch
from otelflow.pdata import Batch, Signal
from otelflow.processors.redaction import RedactionProcessor
from otelflow.processors.redaction_patterns import LIBRARY, NATIVE_REFINES
from tests.processors.helpers import as_dict, build, put
from tests.processors.test_redaction_dense import (
    BENCH,
    SECRETS,
    _framed,
    logs_request,
    requests,
    traces_request,
)

CONFIGS = {
    "bench": BENCH,
    "all": {"allow_all_keys": True, "value_patterns": ["all"], "summary": "silent",
            "blocked_values": ["SECRET-[0-9]{6}", r"\bcard [0-9]+\b", "^whole$"],
            "blocked_key_patterns": ["password"], "redact_span_names": True,
            "ignored_keys": ["safe"], "ignored_key_patterns": ["^k\\."]},
}
CONFIGS["all_debug"] = {**CONFIGS["all"], "summary": "debug"}
CONFIGS["bench_info"] = {**BENCH, "summary": "info", "ignored_keys": ["safe"]}
CONFIGS["hashed_allowed"] = {**CONFIGS["all"], "summary": "debug", "hash_function": "sha1",
                             "allowed_values": [r"[a-z]+@example\.org", "10\\.1\\.2\\.3"]}
CONFIGS["hmac"] = {**BENCH, "summary": "info", "hash_function": "hmac-sha256",
                   "hmac_key": "k" * 32, "allowed_values": ["4111 1111 1111 1111"]}


def pair(config: dict, signal: Signal) -> tuple[RedactionProcessor, RedactionProcessor]:
    """(a processor with the native masker, one with the Python paths only)."""
    native, python = build("redaction", config, signal), build("redaction", config, signal)
    assert native.native is not None
    python.native = None
    return native, python


def same_output(config: dict, signal: Signal, raw: bytes) -> Batch:
    """The native pass's batch for `raw`, asserted to hold what the Python paths give."""
    native, python = pair(config, signal)
    out = native.redact(Batch.from_bytes(signal, raw))
    expected = python.redact(Batch.from_bytes(signal, raw))
    assert signal.request_type.FromString(out.to_bytes()) == expected.message
    assert out.item_count() == expected.item_count()
    return out


def test_bench_shape_is_masked_without_parsing():
    raw = logs_request(200).SerializeToString()
    out = same_output(BENCH, Signal.LOGS, raw)
    assert out._message is None  # spliced bytes, never parsed
    records = ExportLogsServiceRequest.FromString(out.to_bytes()).resource_logs[0] \
        .scope_logs[0].log_records
    assert [r.body.string_value for r in records] == [
        f"user **** paid with **** #{i}" for i in range(200)]
    assert as_dict(records[3].attributes)["attr.0"] == "value-0-21"


def test_a_request_without_matches_passes_as_received():
    proc = build("redaction", BENCH, Signal.LOGS)
    batch = Batch(Signal.LOGS, raw=logs_request(20, body="user {i} paid").SerializeToString())
    assert proc.redact(batch) is batch and batch._message is None


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_each_secret_in_attributes_and_bodies(config, secret):
    for glue in ("", " ", "x", "9", ":", "."):
        text = f"a{glue}{secret}{glue}b"
        same_output(CONFIGS[config], Signal.LOGS, logs_request(3, body=text).SerializeToString())
        same_output(CONFIGS[config], Signal.TRACES, traces_request([{"v": text, "w": secret}]))


@pytest.mark.parametrize("extra", [
    {"event": {"e": "alice@example.com"}}, {"link": {"l": "10.1.2.3"}},
    {"status": "card 4111 1111 1111 1111"}, {"name": "user alice@example.com"},
    {"resource": {"owner": "alice@example.com"}}, {"scope": {"s": "123-45-6789"}},
])
@pytest.mark.parametrize("config", ["all", "all_debug"])
def test_what_it_does_not_follow_is_walked_in_python(extra, config):
    """Matches in events, links, status, redacted names, resources and scopes: the native
    pass lists them and the Python walk masks them (and counts what it masks: an item it
    lists reaches it as received)."""
    raw = traces_request([{"a": "bob@example.com"}] * 3, **extra)
    native = build("redaction", CONFIGS[config], Signal.TRACES).native
    _out, items, resources, scopes = native.redact(raw, True)
    assert items or resources or scopes
    out = same_output(CONFIGS[config], Signal.TRACES, raw)
    assert "example.com" not in str(out.message) and "10.1.2.3" not in str(out.message)


@pytest.mark.parametrize("value", [
    {"kv": {"inner": "alice@example.com"}}, {"arr": ["alice@example.com"]},
    {"raw": b"alice@example.com"}, {"password": "hunter2"}, {"u": "caf\u00e9 alice@example.com"},
])
def test_values_it_leaves_to_python(value):
    raw = traces_request([value, {"a": "bob@example.com"}])
    native = build("redaction", CONFIGS["all"], Signal.TRACES).native
    _out, items, _resources, _scopes = native.redact(raw, True)
    assert items == [(0, 0, 0)]
    same_output(CONFIGS["all"], Signal.TRACES, raw)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_masked_items_carry_the_summary(level):
    raw = logs_request(3, body="mail alice@example.com").SerializeToString()
    proc = build("redaction", {**BENCH, "summary": level}, Signal.LOGS)
    assert proc.native.redact(raw, False)[1:] == ([], [], [])  # nothing left to Python
    req = Signal.LOGS.request_type()
    record = req.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "to bob@example.com"
    put(record.attributes, {"z": "alice@example.com", "a": "10.1.2.3", "n": "none"})
    out = same_output({**BENCH, "summary": level}, Signal.LOGS, req.SerializeToString())
    assert out._message is None
    attributes = as_dict(Signal.LOGS.request_type().FromString(out.to_bytes())
                         .resource_logs[0].scope_logs[0].log_records[0].attributes)
    expected = {"z": "****", "a": "****", "n": "none", "redaction.masked.count": 2,
                "redaction.body.masked.count": 1}
    if level == "debug":
        expected |= {"redaction.masked.keys": "a,z", "redaction.body.masked.keys": "body"}
    assert attributes == expected


@pytest.mark.parametrize("records", [5, 200])
def test_key_hits_send_their_items_to_python(records):
    """A blocked key on every third record, its value without a match: the scan touches
    the key, its action (decided once for the key) sends the record to the Python walk."""
    req = logs_request(records)
    for i, record in enumerate(req.resource_logs[0].scope_logs[0].log_records):
        if i % 3 == 1:
            put(record.attributes, {"http.request.header.authorization": "Basic abc"})
    native = build("redaction", BENCH, Signal.LOGS).native
    _out, items, _resources, _scopes = native.redact(req.SerializeToString(), False)
    assert items == [(0, 0, i) for i in range(records) if i % 3 == 1]
    out = same_output(BENCH, Signal.LOGS, req.SerializeToString())
    record = out.message.resource_logs[0].scope_logs[0].log_records[1]
    assert as_dict(record.attributes)["http.request.header.authorization"] == "****"


def test_hashes_and_allowed_values_as_in_python():
    raw = traces_request([{"to": "alice@example.com", "cc": "bob@example.org",
                           "ip": "10.1.2.3 and 10.9.9.9"}])
    out = same_output(CONFIGS["hashed_allowed"], Signal.TRACES, raw)
    assert out._message is None
    span = Signal.TRACES.request_type().FromString(out.to_bytes()).resource_spans[0] \
        .scope_spans[0].spans[0]
    attributes = as_dict(span.attributes)
    assert attributes["to"] == hashlib.sha1(b"alice@example.com").hexdigest()
    assert attributes["cc"] == "bob@example.org"
    assert attributes["ip"] == "10.1.2.3 and " + hashlib.sha1(b"10.9.9.9").hexdigest()
    assert attributes["redaction.allowed.keys"] == "cc,ip"
    assert attributes["redaction.masked.keys"] == "ip,to"


def test_a_failing_hasher_raises():
    broken = _redact.Redactor(patterns=[("x+", 0, 0)], scan="x", keys=None, ignored=(),
                              ignored_re=None, mask="*", logs=(6, 5, ()), traces=(9, 0, ()),
                              hasher=lambda _text: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        broken.redact(traces_request([{"a": "xx"}]), True)


def test_ignored_keys_keep_their_values():
    raw = traces_request([{"safe": "alice@example.com", "k.x": "10.1.2.3", "v": "10.1.2.3"}])
    out = same_output(CONFIGS["all"], Signal.TRACES, raw)
    span = out.message.resource_spans[0].scope_spans[0].spans[0]
    assert as_dict(span.attributes) == {"safe": "alice@example.com", "k.x": "10.1.2.3",
                                        "v": "****"}


def test_a_repeated_body_field_is_walked():
    req = logs_request(1)
    body = Signal.LOGS.request_type()
    later = body.resource_logs.add().scope_logs.add().log_records.add().body
    later.string_value = "later bob@example.com here"
    record = req.resource_logs[0].scope_logs[0].log_records[0].SerializeToString()
    raw = _framed(1, _framed(2, _framed(2, record + _framed(5, later.SerializeToString()))))
    out = same_output(BENCH, Signal.LOGS, raw)
    assert out.message.resource_logs[0].scope_logs[0].log_records[0].body.string_value == (
        "later **** here")


def test_framing_it_cannot_follow_gives_none():
    native = build("redaction", BENCH, Signal.LOGS).native
    assert native.redact(b"\x0a\x05\x12\x03", False) is None  # runs past the request
    assert native.redact(b"\x0b\x0c", False) is None  # a group
    assert native.redact(b"", False) == (b"", [], [], [])


def test_configurations_it_covers():
    for config in CONFIGS.values():
        assert build("redaction", config, Signal.LOGS).native is not None
    for config in ({**BENCH, "allow_all_keys": False},
                   {**BENCH, "redact_all_types": True},
                   {**BENCH, "url_sanitizer": {"enabled": True, "attributes": ["u"]}}):
        assert build("redaction", config, Signal.LOGS).native is None, config
    assert all(p.refine in NATIVE_REFINES for p in LIBRARY.values())


def test_a_pattern_the_system_re2_refuses_falls_back(monkeypatch):
    def refuse(**_kwargs):
        raise ValueError("RE2 refuses")
    monkeypatch.setattr("otelflow.processors.redaction.Redactor", refuse)
    proc = build("redaction", BENCH, Signal.LOGS)
    assert proc.native is None
    out = proc.redact(Batch.from_bytes(Signal.LOGS, logs_request(2).SerializeToString()))
    assert "****" in out.message.resource_logs[0].scope_logs[0].log_records[0].body.string_value


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="RE2 refuses"):
        _redact.Redactor(patterns=[("(", 0, 0)], scan="x", keys=None, ignored=(), ignored_re=None,
                 mask="*", logs=(6, 5, ()), traces=(9, 0, ()))
    with pytest.raises(ValueError, match="refine"):
        _redact.Redactor(patterns=[("x", 0, 99)], scan="x", keys=None, ignored=(), ignored_re=None,
                 mask="*", logs=(6, 5, ()), traces=(9, 0, ()))


# -- property: native == Python on random requests -------------------------------------------

CARDS = st.builds(lambda d, sep: sep.join(d[i:i + 4] for i in range(0, len(d), 4)),
                  st.text("0123456789", min_size=12, max_size=22), st.sampled_from(["", " ", "-"]))
NOISE = st.text(string.ascii_letters + string.digits + " .-:@", max_size=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=requests(), config=st.sampled_from(sorted(CONFIGS)))
def test_native_equals_python_on_random_requests(case, config):
    signal, raw = case
    same_output(CONFIGS[config], signal, raw)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(CARDS, NOISE, st.sampled_from(SECRETS)), min_size=1,
                      max_size=6))
def test_refine_steps_agree_with_python(texts):
    """Digit runs (cards: Luhn over every run of groups), IBANs, addresses, near misses."""
    body = " ".join(texts)
    same_output(CONFIGS["all"], Signal.LOGS, logs_request(1, body=body).SerializeToString())


# -- property: mutated requests -------------------------------------------------------------

MUTATED_BASE = [logs_request(4, body="mail {i}x@example.com, card 4111 1111 1111 1111")
                .SerializeToString(),
                traces_request([{"a": "bob@example.com", "b": "10.1.2.3"}] * 3,
                               event={"e": "alice@example.com"})]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 1), edits=st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(["flip", "insert", "delete"]),
              st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_requests_are_masked_as_in_python_or_refused(which, edits):
    """Random byte edits of real requests: the native pass never reads outside the bytes; a
    request the receivers would accept is masked as the Python paths mask it."""
    signal = (Signal.LOGS, Signal.TRACES)[which]
    raw = bytearray(MUTATED_BASE[which])
    for at, kind, byte in edits:
        at %= len(raw) + (kind == "insert")
        if kind == "flip" and at < len(raw):
            raw[at] ^= byte or 1
        elif kind == "insert":
            raw.insert(at, byte)
        elif at < len(raw):
            del raw[at]
    raw = bytes(raw)
    native = build("redaction", CONFIGS["all_debug"], signal).native
    native.redact(raw, signal is Signal.TRACES)  # must not crash on any bytes
    try:
        checked_batch(signal, raw)
    except (MalformedRequest, InvalidIds):
        return  # the receivers refuse it: it never reaches a processor
    same_output(CONFIGS["all_debug"], signal, raw)
