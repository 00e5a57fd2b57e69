"""tail_sampling config: the full example loads with the Go keys; every bad case has its error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.processors.tail_sampling.policies import Composite, Drop, Latency
from otelflow.testing.configs import yaml_config_errors
from tests.processors.tail_sampling.ts_builders import make

TESTDATA = Path(__file__).parent / "testdata"
CASES = yaml.safe_load((TESTDATA / "invalid.yaml").read_text())
PIPELINE = """
receivers: {otlp: {}}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], processors: [tail_sampling], exporters: [debug]}}}
"""


def test_full_example_loads_with_go_keys():
    cfg = parse_config(*load_config([str(TESTDATA / "config.yaml")]))
    ts = cfg.component(Kind.PROCESSOR, "tail_sampling").config
    assert ts.decision_wait == 10.0
    assert ts.decision_wait_after_root_received == 2.0
    assert ts.maximum_trace_size_bytes == 4 * 1024 * 1024
    assert ts.decision_cache.sampled_cache_size == 100_000
    assert [p.type for p in ts.policies][-4:] == ["and", "not", "drop", "composite"]
    proc, _ = make(ts.model_dump(by_alias=True))
    kinds = [type(p.evaluator) for p in proc._policies]
    assert kinds[0] is Drop  # drop policies are evaluated first, as in Go
    assert Latency in kinds and Composite in kinds


def test_defaults_are_the_go_defaults():
    proc, _ = make({"policies": [{"name": "a", "type": "always_sample"}]})
    c = proc.config
    assert (c.decision_wait, c.num_traces, c.expected_new_traces_per_sec) == (30.0, 50000, 0)
    assert (c.decision_cache.sampled_cache_size, c.decision_cache.non_sampled_cache_size) == (0, 0)
    assert not (c.sample_on_first_match or c.block_on_overflow or c.record_policy
                or c.drop_pending_traces_on_shutdown)
    assert (c.decision_wait_after_root_received, c.maximum_trace_size_bytes) == (0.0, 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_config(name):
    case = CASES[name]
    errors = yaml_config_errors(f"processors: {case['config']}\n{PIPELINE}")
    assert len(errors) == 1, f"expected one error, got: {ConfigErrors(errors)}"
    for fragment in case["errors"]:
        assert fragment in str(errors[0]), f"{fragment!r} not in {errors[0]}"
