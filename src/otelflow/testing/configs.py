"""Config checks for component tests: the errors a whole YAML config produces, and the error
a component's settings produce inside a minimal service (an otlp receiver and a debug
exporter in a traces pipeline)."""

from __future__ import annotations

from typing import Any

from otelflow.config import ConfigErrors, load_config
from otelflow.config.errors import ConfigError
from otelflow.config.service import parse_config
from otelflow.registry import Registry


def yaml_config_errors(text: str, registry: Registry | None = None) -> list[ConfigError]:
    """Every error loading and validating the YAML `text` reports; raises AssertionError when
    the config is valid."""
    try:
        parse_config(*load_config(text=text), registry)
    except ConfigErrors as exc:
        return exc.errors
    raise AssertionError("expected a configuration error, the config is valid")


def config_error(processors: dict[str, Any] | None = None,
                 extensions: dict[str, Any] | None = None) -> str:
    """The error text for these processors / extensions (ids -> settings); raises
    AssertionError when the config is valid."""
    processors, extensions = processors or {}, extensions or {}
    raw = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
           "processors": processors, "exporters": {"debug": {}}, "extensions": extensions,
           "service": {"extensions": list(extensions),
                       "pipelines": {"traces": {"receivers": ["otlp"],
                                                "processors": list(processors),
                                                "exporters": ["debug"]}}}}
    try:
        parse_config(raw, "test.yaml")
    except ConfigErrors as exc:
        return str(exc)
    raise AssertionError("expected a configuration error, the config is valid")
