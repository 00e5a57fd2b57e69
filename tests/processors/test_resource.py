"""The `resource` processor: actions on resource attributes, once per resource group."""

from __future__ import annotations

import hashlib

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelflow.pdata import Batch, Metadata, Signal
from otelflow.testing.configs import config_error
from tests.processors.helpers import as_dict, build, put


def logs_request(*resources: dict) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for attrs in resources:
        rl = req.resource_logs.add()
        put(rl.resource.attributes, attrs)
        for i in range(3):
            put(rl.scope_logs.add().log_records.add().attributes, {"i": i})
    return req


def test_actions_apply_to_every_resource_and_not_to_items():
    req = logs_request({"service.name": "a", "host.ip": "10.0.0.1", "cloud.zone": "z1"},
                       {"service.name": "b"})
    batch = Batch.from_bytes(Signal.LOGS, req.SerializeToString())
    build("resource", {"attributes": [
        {"key": "deployment.environment", "value": "prod", "action": "upsert"},
        {"key": "host.ip", "action": "hash"},
        {"key": "cloud.region", "from_attribute": "cloud.zone", "action": "insert"},
        {"key": "cloud.zone", "action": "delete"},
    ]}, Signal.LOGS).process(batch)
    first, second = (as_dict(r.resource.attributes) for r in batch.message.resource_logs)
    assert first == {"service.name": "a", "host.ip": hashlib.sha256(b"10.0.0.1").hexdigest(),
                     "deployment.environment": "prod", "cloud.region": "z1"}
    assert second == {"service.name": "b", "deployment.environment": "prod"}
    records = [as_dict(r.attributes) for rl in batch.message.resource_logs
               for sl in rl.scope_logs for r in sl.log_records]
    assert records == [{"i": 0}, {"i": 1}, {"i": 2}] * 2


def test_no_change_keeps_the_bytes():
    req = logs_request({"service.name": "a"})
    batch = Batch.from_bytes(Signal.LOGS, req.SerializeToString())
    build("resource", {"attributes": [{"key": "x", "action": "delete"}]},
          Signal.LOGS).process(batch)
    assert batch.unchanged_bytes == req.SerializeToString()


def test_config_error():
    assert "processors.resource.attributes" in config_error({"resource": {}})
    message = config_error({"resource": {"attributes": [{"key": "a", "action": "insert"}]}})
    assert "processors.resource.attributes[0]" in message
    assert 'insert needs one of "value"' in message


def test_from_context_reads_the_batch_metadata():
    batch = Batch.from_bytes(Signal.LOGS, logs_request({"service.name": "a"}).SerializeToString())
    batch.metadata = Metadata({"x-tenant": ["acme"]})
    build("resource", {"attributes": [
        {"key": "tenant", "from_context": "metadata.x-tenant", "action": "upsert"},
    ]}, Signal.LOGS).process(batch)
    assert as_dict(batch.message.resource_logs[0].resource.attributes) == {
        "service.name": "a", "tenant": "acme"}
