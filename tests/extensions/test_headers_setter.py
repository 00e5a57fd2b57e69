"""`headers_setter`: actions on an exporter's outgoing headers from fixed values or the
batch's request metadata, and its config errors. End to end (receiver metadata -> batch
`metadata_keys` -> exporters): tests/pipeline/test_e2e_client_metadata.py."""

from __future__ import annotations

import pytest

from otelflow.component import PermanentError
from otelflow.extensions.headers_setter import HeadersSetter, HeadersSetterConfig
from otelflow.pdata import Metadata
from otelflow.testing.configs import config_error


def setter(*headers: dict) -> HeadersSetter:
    return HeadersSetter(HeadersSetterConfig.model_validate({"headers": list(headers)}))


def apply(ext: HeadersSetter, headers: dict, metadata: Metadata | None) -> dict:
    headers = dict(headers)
    ext.set_request_headers(headers, metadata)
    return headers


TENANT = Metadata({"x-tenant": ["acme"]})


def test_actions_on_present_and_absent_headers():
    base = {"Content-Type": "application/x-protobuf", "X-Present": "old"}
    ext = setter({"key": "x-present", "action": "insert", "value": "new"},   # present: kept
                 {"key": "X-Absent", "action": "update", "value": "new"},    # absent: not added
                 {"key": "X-Added", "action": "INSERT", "value": "v"},
                 {"key": "x-added", "action": "update", "value": "updated"},
                 {"key": "Content-Type", "action": "delete"},
                 {"key": "X-Scope-OrgID", "from_context": "X-Tenant"})     # upsert by default
    assert apply(ext, base, TENANT) == {"X-Present": "old", "X-Added": "updated",
                                        "X-Scope-OrgID": "acme"}
    ext = setter({"key": "x-present", "action": "upsert", "value": "new"})
    assert apply(ext, base, None)["X-Present"] == "new"  # matched case-insensitively


def test_from_context_falls_back_to_default_value_else_leaves_the_header_alone():
    ext = setter({"key": "X-Scope-OrgID", "from_context": "x-tenant", "default_value": "anon"})
    assert apply(ext, {}, TENANT) == {"X-Scope-OrgID": "acme"}
    assert apply(ext, {}, Metadata({"other": ["x"]})) == {"X-Scope-OrgID": "anon"}
    assert apply(ext, {}, None) == {"X-Scope-OrgID": "anon"}
    bare = setter({"key": "X-Scope-OrgID", "from_context": "x-tenant"})
    assert apply(bare, {"a": "b"}, None) == {"a": "b"}


def test_several_values_in_the_metadata_are_a_permanent_error():
    ext = setter({"key": "X-Scope-OrgID", "from_context": "x-tenant"})
    with pytest.raises(PermanentError, match="2 values of 'x-tenant'"):
        apply(ext, {}, Metadata({"x-tenant": ["a", "b"]}))


def test_values_are_secret_in_reprs():
    ext = setter({"key": "Authorization", "value": "Bearer s3cr3t"})
    assert "s3cr3t" not in repr(ext) and "s3cr3t" not in repr(ext.config)


@pytest.mark.parametrize(("header", "message"), [
    ({"key": "X", "action": "replace", "value": "v"},
     "'insert', 'update', 'upsert' or 'delete'"),
    ({"key": "X"}, "header 'X': set one of value or from_context"),
    ({"key": "X", "value": "v", "from_context": "x"}, "mutually exclusive"),
    ({"value": "v"}, "extensions.headers_setter.headers[0].key"),
    ({"key": "X", "value": "v", "from_attribute": "a"}, "unknown key 'from_attribute'"),
])
def test_config_errors(header, message):
    error = config_error(extensions={"headers_setter": {"headers": [header]}})
    assert message in error, error
    assert "extensions.headers_setter.headers[0]" in error


def test_headers_are_required():
    assert "extensions.headers_setter.headers" in config_error(
        extensions={"headers_setter": {"headers": []}})
