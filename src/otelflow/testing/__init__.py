"""Test helpers for otelflow users and for otelflow's own tests (also a pytest plugin).

`PipelineHarness` runs a pipeline YAML in-process and returns what each exporter got
(`MemorySink`s with finders); the `otelflow_pipeline` fixture creates harnesses and
`build` hand-builds requests. Names are
imported lazily so that loading the pytest plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PipelineHarness": "otelflow.testing.harness",
    "PipelineResult": "otelflow.testing.harness",
    "load_fixture": "otelflow.testing.harness",
    "rebase": "otelflow.testing.harness",
    "Found": "otelflow.testing.sink",
    "MemorySink": "otelflow.testing.sink",
    "build": "otelflow.testing.build",  # the module: build.traces(build.span(...)), ...
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'otelflow.testing' has no attribute {name!r}")
    if module.endswith(f".{name}"):
        return importlib.import_module(module)
    return getattr(importlib.import_module(module), name)
