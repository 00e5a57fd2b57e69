"""Property: PII planted anywhere (every location, every signal, nested values, every
pattern) never appears in what the processor hands to the exporter."""

from __future__ import annotations

import asyncio
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otelflow.pdata import Batch, Signal
from otelflow.processors.redaction import SUMMARY_KEYS
from otelflow.processors.redaction_patterns import LIBRARY, luhn_ok
from tests.processors.helpers import Sink, build

CONFIG = {"allow_all_keys": True, "value_patterns": ["all"], "summary": "debug",
          "blocked_values": ["SECRET-[0-9]{6}"], "blocked_key_patterns": ["password"],
          "redact_span_names": True}

ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def _luhn_complete(body: str) -> str:
    return next(body + d for d in string.digits if luhn_ok(body + d))


def _iban(bank: str) -> str:
    rest = "".join(str(int(c, 36)) for c in bank + "DE00")
    return f"DE{98 - int(rest) % 97:02d}{bank}"


digits = st.text(string.digits, min_size=1, max_size=1)
SECRETS = {
    "email": st.builds("{}@{}.{}".format, st.text(ALNUM + "._", min_size=1, max_size=12),
                       st.text(string.ascii_lowercase, min_size=1, max_size=10),
                       st.sampled_from(["com", "org", "io", "travel"])),
    "credit_card": st.builds(_luhn_complete, st.builds(
        "{}{}".format, st.sampled_from(["4", "51", "37", "6011"]),
        st.text(string.digits, min_size=11, max_size=11))),
    "us_ssn": st.from_regex(r"\A[0-9]{3}-[0-9]{2}-[0-9]{4}\Z"),
    "iban": st.builds(_iban, st.text(string.digits, min_size=18, max_size=18)),
    "ipv4": st.builds("{}.{}.{}.{}".format, *[st.integers(0, 255)] * 4),
    "ipv6": st.builds(lambda groups: ":".join(f"{g:x}" for g in groups),
                      st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8)),
    "jwt": st.builds("eyJ{}.eyJ{}.{}".format, *[st.text(B64URL, min_size=4, max_size=20)] * 3),
    "bearer_token": st.text(ALNUM + "-._~+/", min_size=8, max_size=30),
    "aws_access_key": st.builds("AKIA{}".format, st.text(string.ascii_uppercase + string.digits,
                                                         min_size=16, max_size=16)),
    "gcp_api_key": st.builds("AIza{}".format, st.text(B64URL, min_size=35, max_size=35)),
    "github_token": st.builds("ghp_{}".format, st.text(ALNUM, min_size=36, max_size=40)),
    "slack_token": st.builds("xoxb-{}".format, st.text(ALNUM + "-", min_size=10, max_size=30)),
    "private_key_block": st.builds(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----".format,
        st.text(ALNUM + "+/", min_size=20, max_size=60)),
    "phone_e164": st.builds("+{}{}".format, st.integers(1, 9),
                            st.text(string.digits, min_size=9, max_size=12)),
    "custom": st.builds("SECRET-{}".format, st.text(string.digits, min_size=6, max_size=6)),
    "blocked_key": st.text(ALNUM, min_size=6, max_size=20),
}
assert set(SECRETS) >= set(LIBRARY)
SEP = st.sampled_from([" ", ", ", "; ", "\n", " (", "="])
FILLER = st.text(string.ascii_letters + " ", max_size=12)

FIXED_TEXT = " ".join(["service.name svc http.method GET op ev msg benign INFO password",
                       *(f"k{i} m{i}" for i in range(4)), *SUMMARY_KEYS])

LOCATIONS = {
    Signal.TRACES: ["resource", "scope", "item", "event", "event_name", "link", "span_name",
                    "status"],
    Signal.LOGS: ["resource", "scope", "item", "body", "body_kvlist", "body_array"],
    Signal.METRICS: ["resource", "scope", "item", "exemplar"],
}


@st.composite
def plantings(draw):
    """(signal, [(location, nesting, kind, secret, text)]) for 1-4 secrets."""
    signal = draw(st.sampled_from(list(Signal)))
    planted = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(sorted(SECRETS)))
        secret = draw(SECRETS[kind])
        if kind == "bearer_token":
            text = f"Bearer {secret}"
        elif kind == "blocked_key":
            text = secret
        else:
            text = draw(FILLER) + draw(SEP) + secret + draw(SEP) + draw(FILLER)
        location = draw(st.sampled_from(LOCATIONS[signal]))
        nesting = draw(st.lists(st.sampled_from(["kvlist", "array"]), max_size=3))
        planted.append((location, nesting, kind, secret, text))
    # a secret that also occurs in benign text (a filler word, a fixed name) cannot be judged
    for _loc, _nesting, _kind, secret, _text in planted:
        benign = [t.replace(s, "") for *_, s, t in planted] + [FIXED_TEXT]
        assume(not any(secret in text for text in benign))
    return signal, planted


def _nest(target: AnyValue, nesting: list[str], text: str, key: str) -> None:
    for level in nesting:
        if level == "kvlist":
            target = target.kvlist_value.values.add(key=key).value
        else:
            target.array_value.values.add(string_value="benign")
            target = target.array_value.values.add()
    target.string_value = text


def _attr(kvs, nesting, kind, text, i):
    key = "password" if kind == "blocked_key" else f"k{i}"
    _nest(kvs.add(key=key).value, [] if kind == "blocked_key" else nesting, text, key)


def _request(signal: Signal, planted: list) -> object:
    req = signal.request_type()
    resource = getattr(req, signal.resource_field).add()
    resource.resource.attributes.add(key="service.name").value.string_value = "svc"
    scope = getattr(resource, signal.scope_field).add()
    items = getattr(scope, signal.item_field)
    for i, (location, nesting, kind, _secret, text) in enumerate(planted):
        if location == "resource":
            _attr(resource.resource.attributes, nesting, kind, text, i)
        elif location == "scope":
            _attr(scope.scope.attributes, nesting, kind, text, i)
        elif signal is Signal.TRACES:
            _plant_span(items.add(name="op", span_id=bytes([i + 1]) * 8), location, nesting,
                        kind, text, i)
        elif signal is Signal.LOGS:
            _plant_log(items.add(), location, nesting, kind, text, i)
        else:
            _plant_metric(items.add(name=f"m{i}"), location, nesting, kind, text, i)
    return req


def _plant_span(span, location, nesting, kind, text, i):
    span.attributes.add(key="http.method").value.string_value = "GET"
    if location == "item":
        _attr(span.attributes, nesting, kind, text, i)
    elif location == "event":
        _attr(span.events.add(name="ev").attributes, nesting, kind, text, i)
    elif location == "link":
        _attr(span.links.add(span_id=b"\x09" * 8).attributes, nesting, kind, text, i)
    elif kind == "blocked_key":  # names and messages have no key: plant it as an attribute
        _attr(span.attributes, nesting, kind, text, i)
    elif location == "event_name":
        span.events.add(name=text)
    elif location == "span_name":
        span.name = text
    else:
        span.status.message = text


def _plant_log(record, location, nesting, kind, text, i):
    record.severity_text = "INFO"
    if location == "item" or kind == "blocked_key":
        _attr(record.attributes, nesting, kind, text, i)
    elif location == "body":
        _nest(record.body, nesting, text, "msg")
    elif location == "body_kvlist":
        _nest(record.body, ["kvlist", *nesting], text, "msg")
    else:
        _nest(record.body, ["array", *nesting], text, "msg")


def _plant_metric(metric, location, nesting, kind, text, i):
    point = metric.histogram.data_points.add(count=1)
    if location == "item":
        _attr(point.attributes, nesting, kind, text, i)
    else:
        _attr(point.exemplars.add(as_int=1).filtered_attributes, nesting, kind, text, i)


@pytest.fixture(scope="module")
def pipeline():
    """consume(signal, batch) -> the batch the exporter side receives (one loop, one
    processor per signal, built once: compiling the patterns is the slow part)."""
    loop = asyncio.new_event_loop()
    sinks = {signal: Sink() for signal in Signal}
    procs = {signal: build("redaction", CONFIG, signal, sinks[signal]) for signal in Signal}

    def consume(signal: Signal, batch: Batch) -> Batch:
        loop.run_until_complete(procs[signal].consume(batch))
        return sinks[signal].batches.pop()

    yield consume
    loop.close()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=plantings(), as_wire_bytes=st.booleans())
def test_no_planted_secret_reaches_the_exporter(pipeline, case, as_wire_bytes):
    signal, planted = case
    req = _request(signal, planted)
    raw = req.SerializeToString()
    for _loc, _nesting, _kind, secret, _text in planted:
        assert secret.encode() in raw  # planted for real
    batch = Batch.from_bytes(signal, raw) if as_wire_bytes else Batch(signal, message=req)
    passed = pipeline(signal, batch)
    out = passed.to_bytes()
    assert signal.request_type.FromString(out) == passed.message  # (spliced) bytes are right
    for location, nesting, kind, secret, _text in planted:
        assert secret.encode() not in out, (kind, location, nesting, secret)
