"""The `otelflow` pytest plugin (entry point `pytest11`): fixtures for testing pipelines."""

from __future__ import annotations

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
