"""The `redaction` processor: Go keys and semantics, every location, the pattern library."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import Kind
from otelflow.config.loader import load_config
from otelflow.config.service import parse_config
from otelflow.pdata import Batch, Signal
from otelflow.processors.redaction_patterns import LIBRARY, luhn_ok, relax, sanitize_url
from otelflow.testing.configs import config_error
from tests.processors.helpers import as_dict, build, get_value, put

EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"
ALL_ON = {"allow_all_keys": True, "value_patterns": ["all"], "summary": "debug"}
TESTDATA = Path(__file__).parent / "testdata"


def trace_request(span_attrs: dict, **extra) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    put(rs.resource.attributes, extra.get("resource", {"service.name": "shop"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    put(ss.scope.attributes, extra.get("scope", {}))
    span = ss.spans.add(name=extra.get("name", "GET /items"), kind=extra.get("kind", 2))
    span.trace_id, span.span_id = b"\x01" * 16, b"\x02" * 8
    put(span.attributes, span_attrs)
    if "event" in extra:
        event = span.events.add(name=extra.get("event_name", "ev"))
        put(event.attributes, extra["event"])
    if "link" in extra:
        link = span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
        put(link.attributes, extra["link"])
    return req


def run(config: dict, message, signal: Signal = Signal.TRACES, raw: bool = True) -> Batch:
    """Redact one request (received as wire bytes unless `raw` is False)."""
    proc = build("redaction", config, signal)
    batch = (Batch.from_bytes(signal, message.SerializeToString()) if raw
             else Batch(signal, message=message))
    out = proc.redact(batch)
    if out.unchanged_bytes is not None:  # spliced bytes must encode the redacted message
        assert signal.request_type.FromString(out.unchanged_bytes) == out.message
    return out


def span_of(batch: Batch):
    return batch.message.resource_spans[0].scope_spans[0].spans[0]


# -- config -----------------------------------------------------------------------------


def test_default_config_is_the_go_default():
    proc = build("redaction", {})
    cfg = proc.config
    assert (cfg.allow_all_keys, cfg.allowed_keys, cfg.summary, cfg.hash_function) == (
        False, [], "silent", "")
    assert proc.mutates_data is True


@pytest.mark.parametrize("case", sorted(yaml.safe_load(
    (TESTDATA / "redaction_invalid.yaml").read_text())))
def test_invalid_configs_name_key_and_problem(case):
    cases = yaml.safe_load((TESTDATA / "redaction_invalid.yaml").read_text())
    body, expected = cases[case]["config"], cases[case]["error"]
    message = config_error({"redaction": body})
    assert expected in message, message


# -- allowed / ignored / blocked keys ----------------------------------------------------


def test_empty_allowed_keys_fails_closed_everywhere():
    req = trace_request({"a": "1", "b": "2"}, resource={"service.name": "shop"},
                        event={"e": "x"})
    batch = run({"summary": "debug"}, req)
    span = span_of(batch)
    assert as_dict(span.attributes) == {"redaction.redacted.keys": "a,b",
                                        "redaction.redacted.count": 2}
    resource = batch.message.resource_spans[0].resource
    assert as_dict(resource.attributes)["redaction.redacted.keys"] == "service.name"
    assert "e" not in as_dict(span.events[0].attributes)


def test_allowed_keys_keep_only_listed_keys_nested_too():
    req = trace_request({"id": "7", "name": "n", "secret": "s",
                         "group": {"id": "1", "secret": "x"}})
    batch = run({"allowed_keys": ["id", "name", "group"], "summary": "info"}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs == {"id": "7", "name": "n", "group": {"id": "1"},
                     "redaction.redacted.count": 2}


def test_ignored_keys_are_untouched_and_counted():
    req = trace_request({"safe": f"mail {EMAIL}", "other": f"mail {EMAIL}"})
    batch = run({**ALL_ON, "ignored_keys": ["safe"]}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs["safe"] == f"mail {EMAIL}"
    assert attrs["other"] == "mail ****"
    assert attrs["redaction.ignored.count"] == 1


def test_ignored_key_patterns_pass_even_without_allow_list_entry():
    req = trace_request({"internal.debug": EMAIL, "x": "y"})
    batch = run({"ignored_key_patterns": ["^internal\\."], "value_patterns": ["email"]}, req)
    assert as_dict(span_of(batch).attributes) == {"internal.debug": EMAIL}


def test_blocked_key_patterns_mask_the_whole_value_of_any_type():
    req = trace_request({"api_key": "abc123", "user.password": 12345,
                         "tokens": {"a": "b"}, "plain": "keep"})
    batch = run({"allow_all_keys": True, "blocked_key_patterns": ["api_key", "password",
                                                                  "token"]}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs == {"api_key": "****", "user.password": "****", "tokens": "****",
                     "plain": "keep"}


# -- values ------------------------------------------------------------------------------


def test_blocked_values_mask_only_the_matched_part():
    req = trace_request({"note": "order 42 paid with 4111111111111111 today"})
    batch = run({"allow_all_keys": True, "blocked_values": ["4[0-9]{15}"],
                 "summary": "debug"}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs["note"] == "order 42 paid with **** today"
    assert attrs["redaction.masked.keys"] == "note"
    assert attrs["redaction.masked.count"] == 1


def test_allowed_values_exempt_matches():
    req = trace_request({"to": f"support@mycompany.com and {EMAIL}"})
    batch = run({**ALL_ON, "allowed_values": ["[a-z]+@mycompany\\.com"]}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs["to"] == "support@mycompany.com and ****"
    assert attrs["redaction.allowed.keys"] == "to"


def test_allowed_values_keep_a_blocked_key_only_when_they_cover_it():
    req = trace_request({"user_email": "bob@mycompany.com",
                         "user_email2": "bob@mycompany.com.evil.io"})
    batch = run({"allow_all_keys": True, "blocked_key_patterns": ["user_email"],
                 "allowed_values": [".+@mycompany\\.com"]}, req)
    attrs = as_dict(span_of(batch).attributes)
    assert attrs == {"user_email": "bob@mycompany.com", "user_email2": "****"}


@pytest.mark.parametrize("number", ["1234567890123456", "4111111111111112",
                                    "1000000000000009", "9999 8888 7777 6666"])
def test_luhn_check_leaves_16_digit_ids_alone(number):
    req = trace_request({"order.id": number, "note": f"order {number} shipped"})
    batch = run({"allow_all_keys": True, "value_patterns": ["credit_card"]}, req)
    assert as_dict(span_of(batch).attributes) == {"order.id": number,
                                                  "note": f"order {number} shipped"}
    assert batch.unchanged_bytes is not None


@pytest.mark.parametrize("card", ["4111111111111111", "4111-1111-1111-1111", CARD,
                                  "5500 0000 0000 0004", "378282246310005",
                                  "6011111111111117"])
def test_luhn_valid_cards_are_masked(card):
    assert luhn_ok(card.replace(" ", "").replace("-", ""))
    req = trace_request({"note": f"paid:{card}, ref 77"})
    batch = run({"allow_all_keys": True, "value_patterns": ["credit_card"]}, req)
    assert as_dict(span_of(batch).attributes) == {"note": "paid:****, ref 77"}


@pytest.mark.parametrize(("text", "masked"), [
    ("4111111111111111 1234", "**** 1234"),
    ("19 4111 1111 1111 1111", "19 ****"),  # the digit run starts with a non-card digit
    ("ref 1234-4111-1111-1111-1111 end", "ref 1234-**** end"),
])
def test_card_inside_a_longer_digit_run_is_still_found(text, masked):
    req = trace_request({"note": text})
    batch = run({"allow_all_keys": True, "value_patterns": ["credit_card"]}, req)
    assert as_dict(span_of(batch).attributes) == {"note": masked}


def test_redact_all_types_checks_numbers():
    req = trace_request({"card": 4111111111111111, "n": 42})
    plain = run({"allow_all_keys": True, "value_patterns": ["credit_card"]}, req)
    assert as_dict(span_of(plain).attributes)["card"] == 4111111111111111
    batch = run({"allow_all_keys": True, "value_patterns": ["credit_card"],
                 "redact_all_types": True}, req)
    assert as_dict(span_of(batch).attributes) == {"card": "****", "n": 42}


@pytest.mark.parametrize("function", ["md5", "sha1", "sha3", "hmac-sha256", "hmac-sha512"])
def test_hashing_is_deterministic(function):
    key = "k" * 64
    config = {"allow_all_keys": True, "value_patterns": ["email"], "hash_function": function,
              **({"hmac_key": key} if function.startswith("hmac") else {})}
    req = trace_request({"a": f"from {EMAIL}", "b": EMAIL, "c": "bob@example.com"})
    first = as_dict(span_of(run(config, req)).attributes)
    second = as_dict(span_of(run(config, req, raw=False)).attributes)
    assert first == second
    digest = {"md5": hashlib.md5(EMAIL.encode()).hexdigest(),
              "sha1": hashlib.sha1(EMAIL.encode()).hexdigest(),
              "sha3": hashlib.sha3_256(EMAIL.encode()).hexdigest(),
              "hmac-sha256": hmac.new(key.encode(), EMAIL.encode(), "sha256").hexdigest(),
              "hmac-sha512": hmac.new(key.encode(), EMAIL.encode(), "sha512").hexdigest(),
              }[function]
    assert first["a"] == f"from {digest}"
    assert first["b"] == digest
    assert first["c"] != digest


# -- every location ----------------------------------------------------------------------


def test_every_trace_location_is_checked():
    req = trace_request({"s": EMAIL}, resource={"r": EMAIL}, scope={"sc": EMAIL},
                        event={"e": {"nested": [EMAIL]}}, event_name=f"sent {EMAIL}",
                        link={"l": EMAIL}, name=f"mail {EMAIL}")
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.status.message = f"failed for {EMAIL}"
    default = run({**ALL_ON}, req)
    assert span_of(default).name == f"mail {EMAIL}"  # span names are opt-in
    batch = run({**ALL_ON, "redact_span_names": True}, req)
    out = batch.to_bytes()
    assert EMAIL.encode() not in out
    span = span_of(batch)
    assert span.name == "mail ****"
    assert span.events[0].name == "sent ****"
    assert as_dict(span.events[0].attributes)["e"] == {"nested": ["****"]}
    assert as_dict(span.attributes)["redaction.masked.keys"] == "s,span.name,status.message"
    assert as_dict(span.events[0].attributes)["redaction.masked.keys"] == "e.nested.[0],event.name"


def test_log_bodies_and_attributes_are_checked():
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    string_body = records.add()
    string_body.body.string_value = f"user {EMAIL} logged in"
    map_body = records.add()
    put(map_body.attributes, {"who": EMAIL})
    map_body.body.kvlist_value.SetInParent()
    put(map_body.body.kvlist_value.values, {"user": {"mail": EMAIL, "cards": [CARD, "x"]}})
    batch = run(ALL_ON, req, Signal.LOGS)
    assert EMAIL.encode() not in batch.to_bytes()
    first, second = batch.message.resource_logs[0].scope_logs[0].log_records
    assert first.body.string_value == "user **** logged in"
    assert as_dict(first.attributes) == {"redaction.body.masked.keys": "body",
                                         "redaction.body.masked.count": 1}
    assert get_value(second.body) == {"user": {"mail": "****", "cards": ["****", "x"]}}
    attrs = as_dict(second.attributes)
    assert attrs["who"] == "****"
    assert attrs["redaction.body.masked.keys"] == "user.cards.[0],user.mail"


def test_metric_point_and_exemplar_attributes_are_checked():
    req = ExportMetricsServiceRequest()
    metrics = req.resource_metrics.add().scope_metrics.add().metrics
    gauge = metrics.add(name="g").gauge.data_points.add(as_int=1)
    put(gauge.attributes, {"user": EMAIL})
    hist = metrics.add(name="h").histogram.data_points.add(count=1)
    put(hist.exemplars.add(as_double=1.0).filtered_attributes, {"user": EMAIL})
    metrics.add(name="s").summary.data_points.add(count=1)
    batch = run(ALL_ON, req, Signal.METRICS)
    assert EMAIL.encode() not in batch.to_bytes()
    g, h, _s = batch.message.resource_metrics[0].scope_metrics[0].metrics
    assert as_dict(g.gauge.data_points[0].attributes)["user"] == "****"
    assert as_dict(h.histogram.data_points[0].exemplars[0].filtered_attributes)["user"] == "****"


# -- speed-related behaviour ---------------------------------------------------------------


def test_clean_batches_keep_their_received_bytes():
    req = trace_request({"http.method": "GET", "note": "nothing to see"})
    batch = run({**ALL_ON, "blocked_key_patterns": ["token"]}, req)
    assert batch.unchanged_bytes == req.SerializeToString()


def test_only_flagged_items_change_in_a_big_batch():
    req = trace_request({"i": "0"})
    spans = req.resource_spans[0].scope_spans[0].spans
    for i in range(1, 300):
        put(spans.add(name="s", span_id=bytes([i % 256]) * 8).attributes,
            {"i": str(i), "mail": EMAIL if i % 97 == 0 else "none"})
    batch = run({"allow_all_keys": True, "value_patterns": ["email"]}, req)
    got = batch.message.resource_spans[0].scope_spans[0].spans
    masked = [i for i, s in enumerate(got) if as_dict(s.attributes).get("mail") == "****"]
    assert masked == [97, 194, 291]
    assert batch.unchanged_bytes is not None  # the 3 spans were spliced into the bytes
    assert EMAIL.encode() not in batch.to_bytes()


def test_resource_changes_re_encode_the_whole_request():
    req = trace_request({"a": EMAIL}, resource={"owner": EMAIL})
    batch = run({"allow_all_keys": True, "value_patterns": ["email"]}, req)
    assert batch.unchanged_bytes is None
    assert EMAIL.encode() not in batch.to_bytes()


def test_concatenated_requests_are_followed():
    """The batch processor merges requests by concatenating their bytes."""
    a = trace_request({"x": "clean"}).SerializeToString()
    b = trace_request({"x": EMAIL}).SerializeToString()
    batch = Batch.from_bytes(Signal.TRACES, a + b)
    batch = build("redaction", {"allow_all_keys": True, "value_patterns": ["email"]}).redact(batch)
    assert Batch.from_bytes(Signal.TRACES, batch.to_bytes()).message == batch.message
    assert EMAIL.encode() not in batch.to_bytes()
    assert len(batch.message.resource_spans) == 2


def test_anchored_user_patterns_still_match_inside_the_request():
    # `^` and `\b` cannot hold inside the serialized request; the prefilter drops them
    value = "4111111111111111" + "x" * 49  # length 65: its length byte is "A", a word char
    req = trace_request({"whole": "secret", "card": value})
    batch = run({"allow_all_keys": True, "blocked_values": ["^secret$", "\\b4[0-9]{15}"]},
                req)
    assert as_dict(span_of(batch).attributes) == {"whole": "****", "card": "****" + "x" * 49}


def test_relax_drops_only_assertions():
    assert relax(r"^\bab[$^\b]c$\z") == r"(?:)(?:)ab[$^\b]c(?:)(?:)"
    assert relax(r"\Q^$\E\$") == r"\Q^$\E\$"


def test_summary_levels():
    req = trace_request({"a": EMAIL})
    for level, keys in (("debug", {"a", "redaction.masked.keys", "redaction.masked.count"}),
                        ("info", {"a", "redaction.masked.count"}), ("silent", {"a"})):
        batch = run({**ALL_ON, "summary": level}, req)
        assert set(as_dict(span_of(batch).attributes)) == keys


def test_url_sanitizer_attributes_and_span_names():
    req = trace_request({"http.url": "https://shop.example/api/users/123?token=x",
                         "other": "/api/users/123"}, name="GET /api/users/42", kind=3)
    batch = run({"allow_all_keys": True,
                 "url_sanitizer": {"enabled": True, "attributes": ["http.url"]}}, req)
    span = span_of(batch)
    assert as_dict(span.attributes) == {"http.url": "https://shop.example/api/users/*",
                                        "other": "/api/users/123"}
    assert span.name == "GET /api/users/*"


@pytest.mark.parametrize(("url", "clean"), [
    ("/api/users/123e4567-e89b-12d3-a456-426614174000", "/api/users/*"),
    ("/api/users/123/posts/456", "/api/users/*/posts/*"),
    ("/api/v2/users?id=123&name=john", "/api/v2/users"),
    ("", ""),
])
def test_sanitize_url(url, clean):
    assert sanitize_url(url) == clean


@pytest.mark.parametrize(("name", "sample", "masked"), [
    ("email", "to a.b+c@mail.example.org now", "to **** now"),
    ("us_ssn", "ssn 123-45-6789.", "ssn ****."),
    ("iban", "iban DE89 3704 0044 0532 0130 00 ok", "iban **** ok"),
    ("ipv4", "from 10.1.2.3:80", "from ****:80"),
    ("ipv6", "from 2001:db8::1 and fe80::1ff:fe23:4567:890a", "from **** and ****"),
    ("jwt", "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "t=****"),
    ("bearer_token", "Authorization: Bearer abc.DEF-123=", "Authorization: Bearer ****"),
    ("aws_access_key", "key AKIAIOSFODNN7EXAMPLE", "key ****"),
    ("gcp_api_key", "k=AIza" + "A" * 35, "k=****"),
    ("github_token", "gh ghp_" + "a1" * 18, "gh ****"),
    ("slack_token", "xoxb-123456789012-abcdef", "****"),
    ("private_key_block",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- loaded",
     "**** loaded"),
    ("phone_e164", "call +14155552671.", "call ****."),
])
def test_library_patterns(name, sample, masked):
    assert name in LIBRARY
    req = trace_request({"v": sample})
    batch = run({"allow_all_keys": True, "value_patterns": [name]}, req)
    assert as_dict(span_of(batch).attributes) == {"v": masked}


@pytest.mark.parametrize(("name", "sample"), [
    ("us_ssn", "id 1123-45-67890"), ("iban", "DE00 1234 5678 9012 3456 78"),
    ("ipv4", "version v1.2.3.4"), ("ipv6", "std::vector at 12:30:45"),
    ("phone_e164", "+1234"),
])
def test_library_patterns_avoid_look_alikes(name, sample):
    req = trace_request({"v": sample})
    batch = run({"allow_all_keys": True, "value_patterns": [name]}, req)
    assert as_dict(span_of(batch).attributes) == {"v": sample}


async def test_consume_passes_the_redacted_batch_on():
    proc = build("redaction", {"allow_all_keys": True, "value_patterns": ["common"]})
    req = trace_request({"a": EMAIL})
    await proc.consume(Batch.from_bytes(Signal.TRACES, req.SerializeToString()))
    (out,) = proc.next_consumer.batches
    assert as_dict(span_of(out).attributes) == {"a": "****"}


def test_testdata_config_loads():
    raw, source = load_config([str(TESTDATA / "config.yaml")])
    config = parse_config(raw, source)
    full = config.component(Kind.PROCESSOR, "redaction/full").config
    assert full.allowed_keys == ["description", "group", "id", "name"]
    assert full.hash_function == "hmac-sha256" and full.summary == "debug"
    assert full.url_sanitizer.attributes == ["http.url", "url"]
    assert config.component(Kind.PROCESSOR, "redaction").config.allow_all_keys is False
    actions = config.component(Kind.PROCESSOR, "attributes/example").config.actions
    assert [a.action for a in actions][:4] == ["delete", "upsert", "update", "insert"]
    assert config.pipelines["traces"].processors[-1] == "redaction"


def test_summary_adds_to_what_an_upstream_processor_wrote():
    req = trace_request({"http.method": "GET", "a": EMAIL, "redaction.masked.keys": "x",
                         "redaction.masked.count": 1})
    for raw in (True, False):
        span = span_of(run(ALL_ON, req, raw=raw))
        attrs = as_dict(span.attributes)
        assert attrs["redaction.masked.keys"] == "a,x"
        assert attrs["redaction.masked.count"] == 2
        assert [kv.key for kv in span.attributes].count("redaction.masked.count") == 1
