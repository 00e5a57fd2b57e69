"""The `attributes` processor: Go actions, include/exclude matching, config errors."""

from __future__ import annotations

import hashlib
import struct

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.pdata import Batch, Metadata, Signal
from otelflow.testing.configs import config_error
from tests.processors.helpers import as_dict, build, put


def spans_request(*spans: dict, service: str = "shop") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    put(rs.resource.attributes, {"service.name": service})
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "lib", "1.0"
    for i, attrs in enumerate(spans):
        span = ss.spans.add(name=f"op{i}", kind=2 if i % 2 == 0 else 3)
        put(span.attributes, attrs)
    return req


def run(config: dict, req, signal: Signal = Signal.TRACES) -> Batch:
    batch = Batch.from_bytes(signal, req.SerializeToString())
    build("attributes", config, signal).process(batch)
    return batch


def span_attrs(batch: Batch) -> list[dict]:
    return [as_dict(s.attributes) for s in batch.message.resource_spans[0].scope_spans[0].spans]


def test_insert_update_upsert_and_value_sources():
    req = spans_request({"a": "1", "src": "from-src"})
    batch = run({"actions": [
        {"key": "a", "value": "new", "action": "insert"},        # exists: untouched
        {"key": "b", "value": 2, "action": "insert"},
        {"key": "a", "from_attribute": "src", "action": "update"},
        {"key": "missing", "value": "x", "action": "update"},    # absent: nothing
        {"key": "c", "value": True, "action": "UPSERT"},
        {"key": "d", "from_attribute": "nope", "default_value": "dflt", "action": "upsert"},
        {"key": "e", "from_context": "metadata.tenant", "default_value": "t0",
         "action": "insert"},
        {"key": "f", "value": [1, "x"], "action": "insert"},
    ]}, req)
    assert span_attrs(batch) == [{"a": "from-src", "src": "from-src", "b": 2, "c": True,
                                  "d": "dflt", "e": "t0", "f": [1, "x"]}]


def test_delete_and_hash_by_key_and_pattern():
    req = spans_request({"password": "p", "db.pass": "q", "email": "a@b.c", "n": 7,
                         "keep": "k"})
    batch = run({"actions": [
        {"key": "password", "action": "delete"},
        {"pattern": "^db\\.", "action": "delete"},
        {"key": "email", "action": "hash"},
        {"pattern": "^n$", "action": "hash"},
    ]}, req)
    assert span_attrs(batch) == [{
        "email": hashlib.sha256(b"a@b.c").hexdigest(),
        "n": hashlib.sha256(struct.pack("<q", 7)).hexdigest(),
        "keep": "k"}]


def test_hash_is_deterministic():
    req = spans_request({"user": "alice"}, {"user": "alice"}, {"user": "bob"})
    first = span_attrs(run({"actions": [{"key": "user", "action": "hash"}]}, req))
    second = span_attrs(run({"actions": [{"key": "user", "action": "hash"}]}, req))
    assert first == second
    assert first[0] == first[1] != first[2]


def test_extract_named_groups():
    req = spans_request({"http.url": "/users/42/orders/7"}, {"http.url": 5})
    batch = run({"actions": [{"key": "http.url", "action": "extract",
                              "pattern": "^/users/(?P<user_id>\\d+)/orders/(?P<order_id>\\d+)"}]},
                req)
    assert span_attrs(batch) == [{"http.url": "/users/42/orders/7", "user_id": "42",
                                  "order_id": "7"}, {"http.url": 5}]


@pytest.mark.parametrize(("value", "to", "expected"), [
    ("42", "int", 42), ("4.5", "int", "4.5"), (3.9, "int", 3), (True, "int", 1),
    ("4.5", "double", 4.5), (7, "double", 7.0), ("x", "double", "x"),
    (7, "string", "7"), (True, "string", "true"), ({"a": 1}, "string", '{"a":1}'),
])
def test_convert(value, to, expected):
    req = spans_request({"v": value})
    batch = run({"actions": [{"key": "v", "action": "convert", "converted_type": to}]}, req)
    assert span_attrs(batch) == [{"v": expected}]


def test_include_and_exclude():
    req = spans_request({"tier": "gold"}, {"tier": "free"}, {"tier": "gold", "skip": "y"})
    batch = run({"actions": [{"key": "seen", "value": 1, "action": "insert"}],
                 "include": {"match_type": "strict", "services": ["shop"],
                             "attributes": [{"key": "tier", "value": "gold"}]},
                 "exclude": {"match_type": "strict", "attributes": [{"key": "skip"}]}}, req)
    assert [a.get("seen") for a in span_attrs(batch)] == [1, None, None]


def test_regexp_matching_names_kinds_and_libraries():
    req = spans_request({}, {}, {})
    batch = run({"actions": [{"key": "seen", "value": 1, "action": "insert"}],
                 "include": {"match_type": "regexp", "span_names": ["^op[01]$"],
                             "span_kinds": ["SPAN_KIND_SERVER"],
                             "libraries": [{"name": "lib"}]}}, req)
    assert [a.get("seen") for a in span_attrs(batch)] == [1, None, None]
    other_service = run({"actions": [{"key": "seen", "value": 1, "action": "insert"}],
                         "include": {"match_type": "regexp", "services": ["^pay"]}}, req)
    assert [a.get("seen") for a in span_attrs(other_service)] == [None, None, None]


def test_logs_by_severity_and_metrics_by_name():
    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(severity_number=9, severity_text="INFO")
    records.add(severity_number=17, severity_text="ERROR")
    records.add()
    batch = run({"actions": [{"key": "hit", "value": True, "action": "insert"}],
                 "include": {"match_type": "strict",
                             "log_severity_number": {"min": "WARN", "match_undefined": True}}},
                logs, Signal.LOGS)
    got = batch.message.resource_logs[0].scope_logs[0].log_records
    assert [as_dict(r.attributes).get("hit") for r in got] == [None, True, True]

    metrics = ExportMetricsServiceRequest()
    ms = metrics.resource_metrics.add().scope_metrics.add().metrics
    ms.add(name="http.requests").sum.data_points.add(as_int=1)
    ms.add(name="cpu").gauge.data_points.add(as_int=1)
    batch = run({"actions": [{"key": "hit", "value": 1, "action": "insert"}],
                 "include": {"match_type": "strict", "metric_names": ["http.requests"]}},
                metrics, Signal.METRICS)
    first, second = batch.message.resource_metrics[0].scope_metrics[0].metrics
    assert as_dict(first.sum.data_points[0].attributes) == {"hit": 1}
    assert as_dict(second.gauge.data_points[0].attributes) == {}


def test_untouched_batches_keep_their_bytes():
    req = spans_request({"a": "1"})
    batch = run({"actions": [{"key": "zzz", "action": "delete"}]}, req)
    assert batch.unchanged_bytes == req.SerializeToString()


def test_match_fields_are_checked_per_signal():
    with pytest.raises(ValueError, match="metric_names cannot be used with traces"):
        build("attributes", {"actions": [{"key": "a", "action": "delete"}],
                             "include": {"match_type": "strict", "metric_names": ["x"]}})
    with pytest.raises(ValueError, match="give at least one of"):
        build("attributes", {"actions": [{"key": "a", "action": "delete"}],
                             "exclude": {"match_type": "strict"}})


@pytest.mark.parametrize(("action", "error"), [
    ({"action": "insert", "value": 1}, 'insert needs "key"'),
    ({"key": "a", "action": "insert"}, 'insert needs one of "value", "from_attribute"'),
    ({"key": "a", "action": "upsert", "value": 1, "from_attribute": "b"},
     "upsert takes one value source, got value, from_attribute"),
    ({"action": "delete"}, 'delete needs "key" and/or "pattern"'),
    ({"key": "a", "action": "hash", "value": 1}, 'hash does not use "value"'),
    ({"key": "a", "action": "extract"}, 'extract needs "pattern"'),
    ({"key": "a", "action": "extract", "pattern": "\\d+"}, "has no named groups"),
    ({"key": "a", "action": "extract", "pattern": "(?P<x>a)(b)"}, "has an unnamed group"),
    ({"key": "a", "action": "convert"}, 'convert needs "converted_type"'),
    ({"key": "a", "action": "convert", "converted_type": "float"}, "invalid value 'float'"),
    ({"key": "a", "action": "rename"}, "invalid value 'rename'"),
    ({"key": "a", "action": "delete", "pattern": "(x"}, "invalid regular expression '(x'"),
])
def test_invalid_actions(action, error):
    message = config_error({"attributes": {"actions": [action]}})
    assert "processors.attributes.actions[0]" in message
    assert error in message, message


def test_actions_are_required():
    assert "processors.attributes.actions" in config_error({"attributes": {}})


def test_exclude_by_service_skips_the_whole_group():
    req = spans_request({"a": "1"}, {"a": "2"}, service="payments")
    config = {"actions": [{"key": "a", "action": "delete"}],
              "exclude": {"match_type": "strict", "services": ["payments"]}}
    assert span_attrs(run(config, req)) == [{"a": "1"}, {"a": "2"}]
    other = spans_request({"a": "1"}, service="shop")
    assert span_attrs(run(config, other)) == [{}]


def test_from_context_reads_the_batch_metadata():
    actions = {"actions": [
        {"key": "tenant", "from_context": "metadata.x-tenant", "action": "insert"},
        {"key": "bare", "from_context": "X-Tenant", "action": "insert"},  # Go: a bare key too
        {"key": "teams", "from_context": "metadata.x-team", "action": "upsert"},
        {"key": "kept", "from_context": "metadata.missing", "action": "update"},
        {"key": "dflt", "from_context": "metadata.missing", "default_value": "d",
         "action": "insert"},
        {"key": "auth", "from_context": "auth.subject", "action": "insert"},  # not recorded
    ]}
    batch = Batch.from_bytes(Signal.TRACES, spans_request({"kept": "k"}, {}).SerializeToString())
    batch.metadata = Metadata({"x-tenant": ["acme"], "x-team": ["a", "b"]})
    build("attributes", actions, Signal.TRACES).process(batch)
    expected = {"tenant": "acme", "bare": "acme", "teams": "a;b", "dflt": "d"}
    assert span_attrs(batch) == [{"kept": "k", **expected}, expected]
    plain = run(actions, spans_request({}))  # no metadata: only the default applies
    assert span_attrs(plain) == [{"dflt": "d"}]
