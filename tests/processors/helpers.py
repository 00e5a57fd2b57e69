"""Builders and readers for OTLP requests in processor tests."""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.config.service import parse_config
from otelflow.pdata import Batch, Signal
from otelflow.registry import Registry
from otelflow.telemetry.metrics import SelfMetrics


def settings(type_name: str, signal: Signal = Signal.TRACES) -> CreateSettings:
    return CreateSettings(id=ComponentID(type_name), kind=Kind.PROCESSOR,
                          logger=structlog.get_logger(), metrics=SelfMetrics(), signal=signal)


class Sink:
    """A consumer that keeps what it is given."""

    mutates_data = False

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)


def build(type_name: str, config: dict, signal: Signal = Signal.TRACES, sink: Any = None):
    """A processor of `type_name` from a config mapping, as the service would build it."""
    factory = Registry(plugins=False).get(Kind.PROCESSOR, type_name)
    model = factory.config.model_validate(config)
    return factory.create(settings(type_name, signal), model, sink or Sink())


def config_errors(processors: dict) -> str:
    """The error text of a service config holding these processors in a traces pipeline."""
    raw = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
           "processors": processors, "exporters": {"debug": {}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"],
                                                "processors": list(processors),
                                                "exporters": ["debug"]}}}}
    try:
        parse_config(raw, "test.yaml")
    except Exception as exc:  # ConfigErrors
        return str(exc)
    return ""


def set_value(target: AnyValue, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            set_value(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        put(target.kvlist_value.values, value)
    else:
        target.string_value = value


def put(kvs: Any, mapping: dict) -> None:
    for key, value in mapping.items():
        set_value(kvs.add(key=key).value, value)


def get_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return as_dict(value.kvlist_value.values)
    if kind == "array_value":
        return [get_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def as_dict(kvs: Any) -> dict:
    return {kv.key: get_value(kv.value) for kv in kvs}
