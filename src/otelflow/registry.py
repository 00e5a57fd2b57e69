"""The explicit table of component types, plus third-party `otelflow.components` entry points.

Modules are imported only when a type is used, so start-up pays only for what a config names.
Each listed module exposes `FACTORY` (a `Factory`); an alias maps to the same module.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from otelflow.component import Factory, Kind
from otelflow.config.errors import choices_text, did_you_mean

BUILTIN: dict[Kind, dict[str, str]] = {
    Kind.RECEIVER: {
        "filelog": "otelflow.receivers.filelog",
        "hostmetrics": "otelflow.receivers.hostmetrics",
        "kafka": "otelflow.receivers.kafka",
        "otlp": "otelflow.receivers.otlp",
        "prometheus": "otelflow.receivers.prometheus",
        "replay": "otelflow.receivers.replay",
    },
    Kind.PROCESSOR: {
        "attributes": "otelflow.processors.attributes",
        "batch": "otelflow.processors.batch",
        "drift": "otelflow.processors.drift",
        "memory_limiter": "otelflow.processors.memory_limiter",
        "redaction": "otelflow.processors.redaction",
        "resource": "otelflow.processors.resource",
        "tail_sampling": "otelflow.processors.tail_sampling",
    },
    Kind.EXPORTER: {
        "debug": "otelflow.exporters.debug",
        "file": "otelflow.exporters.file",
        "kafka": "otelflow.exporters.kafka",
        "loadbalancing": "otelflow.exporters.loadbalancing",
        "otlp": "otelflow.exporters.otlp",
        "otlp_grpc": "otelflow.exporters.otlp",
        "otlp_http": "otelflow.exporters.otlphttp",
        "otlphttp": "otelflow.exporters.otlphttp",
        "prometheus": "otelflow.exporters.prometheus",
        "prometheusremotewrite": "otelflow.exporters.prometheus_remote_write",
    },
    Kind.EXTENSION: {
        "bearertokenauth": "otelflow.extensions.bearertokenauth",
        "file_storage": "otelflow.extensions.file_storage",
        "headers_setter": "otelflow.extensions.headers_setter",
        "health_check": "otelflow.extensions.health_check",
    },
}

ENTRY_POINT_GROUP = "otelflow.components"


class UnknownComponentType(LookupError):
    pass


class Registry:
    """Looks up factories by kind and type name."""

    def __init__(self, modules: dict[Kind, dict[str, str]] | None = None, plugins: bool = True):
        self._modules = {k: dict(v) for k, v in (modules or BUILTIN).items()}
        self._loaded: dict[tuple[Kind, str], Factory] = {}
        if plugins:
            self._add_entry_points()

    def _add_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            factory = ep.load()
            for f in factory if isinstance(factory, list | tuple) else [factory]:
                self.add(f)

    def add(self, factory: Factory) -> None:
        """Register a factory object directly (tests, plugins)."""
        self._loaded[(factory.kind, factory.type)] = factory
        self._modules.setdefault(factory.kind, {}).setdefault(factory.type, "")

    def types(self, kind: Kind) -> list[str]:
        return sorted(self._modules.get(kind, {}))

    def get(self, kind: Kind, type_name: str) -> Factory:
        key = (kind, type_name)
        if key in self._loaded:
            return self._loaded[key]
        module = self._modules.get(kind, {}).get(type_name)
        if module is None:
            known = self.types(kind)
            raise UnknownComponentType(
                f"unknown {kind.value} type {type_name!r}{did_you_mean(type_name, known)}; "
                f"valid types: {choices_text(known)}"
            )
        factory = importlib.import_module(module).FACTORY
        self._loaded[key] = factory
        return factory
