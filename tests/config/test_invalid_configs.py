"""Table test: every bad config in testdata/invalid.yaml fails with its specific message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelflow.component import Exporter, Factory, Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.config.types import EmptyConfig
from otelflow.pdata import Signal
from otelflow.registry import Registry
from otelflow.testing.configs import yaml_config_errors

CASES = yaml.safe_load((Path(__file__).parent / "testdata" / "invalid.yaml").read_text())


def registry() -> Registry:
    reg = Registry()
    reg.add(Factory(Kind.EXPORTER, "metricsonly", EmptyConfig, lambda s, c: Exporter(),
                    signals=frozenset({Signal.METRICS})))
    return reg


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_config(name, monkeypatch):
    monkeypatch.delenv("OTELFLOW_TEST_UNSET_VAR", raising=False)
    case = CASES[name]
    errors = yaml_config_errors(case["config"], registry())
    assert len(errors) == 1, f"expected one error, got: {ConfigErrors(errors)}"
    for fragment in case["errors"]:
        assert fragment in str(errors[0]), f"{fragment!r} not in {errors[0]}"


def test_all_errors_reported_in_one_pass():
    text = "\n".join([
        "receivers: {otlp: {protocols: {grpc: {endpont: x}}}}",
        "processors: {batch: {timeout: nope}}",
        "exporters: {debug: {verbosity: loud}}",
        "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug, file]}}}",
    ])
    with pytest.raises(ConfigErrors) as info:
        parse_config(*load_config(text=text))
    paths = [e.path for e in info.value.errors]
    assert paths == ["receivers.otlp.protocols.grpc.endpont", "processors.batch.timeout",
                     "exporters.debug.verbosity", "service.pipelines.traces.exporters[1]"]
