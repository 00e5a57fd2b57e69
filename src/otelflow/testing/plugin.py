"""The `otelflow` pytest plugin (entry point `pytest11`): fixtures for testing pipelines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from otelflow.testing.process import CollectorProcess, free_port


@pytest.fixture
def otelflow_free_port():
    """A function returning a free loopback TCP port."""
    return free_port


@pytest.fixture
def otelflow_collector():
    """Start collectors from YAML text: `otelflow_collector(yaml, wait_port=...)`; all are
    stopped at the end of the test."""
    started: list[CollectorProcess] = []

    def start(config_yaml: str, wait_port: int | None = None, **kwargs) -> CollectorProcess:
        proc = CollectorProcess(config_yaml, wait_port=wait_port, **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def otelflow_pipeline():
    """Build in-process pipelines: `otelflow_pipeline(yaml_path_or_text, sinks=None,
    receivers=False, env=None)` returns a `PipelineHarness`; `.run(*data)` (or
    `await .arun(*data)`, or `async with`) feeds fixtures/requests and returns what each
    exporter's `MemorySink` got. Harnesses still running at the end of the test are stopped."""
    from otelflow.testing.harness import PipelineHarness

    made: list[PipelineHarness] = []

    def build(config: str | Path, *, sinks: Iterable[str] | None = None, receivers: bool = False,
              env: Mapping[str, str] | None = None) -> PipelineHarness:
        harness = PipelineHarness(config, sinks=sinks, receivers=receivers, env=env)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        if harness.service is not None and harness.service.state == "running":
            raise RuntimeError("a pipeline was left running: leave its `async with` block or "
                               "call `await harness.stop()`")
