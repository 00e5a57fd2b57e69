"""Builders and readers for OTLP requests in processor tests."""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otelflow.anyvalue import set_attributes
from otelflow.component import ComponentID, CreateSettings, Kind
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


def put(kvs: Any, mapping: dict) -> None:
    set_attributes(kvs, mapping)


def get_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return as_dict(value.kvlist_value.values)
    if kind == "array_value":
        return [get_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def as_dict(kvs: Any) -> dict:
    return {kv.key: get_value(kv.value) for kv in kvs}
