"""drift config: a full testdata config loads; every invalid case names its key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelflow.component import Component, Exporter, Factory, Kind
from otelflow.config.errors import ConfigErrors
from otelflow.config.loader import load_config
from otelflow.config.service import parse_config
from otelflow.config.types import EmptyConfig
from otelflow.pdata import Signal
from otelflow.processors.drift import DriftConfig
from otelflow.registry import BUILTIN, Registry

TESTDATA = Path(__file__).parent / "testdata" / "drift"
INVALID = yaml.safe_load((TESTDATA / "invalid.yaml").read_text())


def registry() -> Registry:
    reg = Registry(plugins=False)
    reg.add(Factory(Kind.RECEIVER, "push", EmptyConfig, lambda s, c, consumers: Component()))
    reg.add(Factory(Kind.EXPORTER, "capture", EmptyConfig, lambda s, c: Exporter()))
    return reg


def test_drift_is_registered():
    assert BUILTIN[Kind.PROCESSOR]["drift"] == "otelflow.processors.drift"


def test_testdata_config_loads_with_defaults_and_overrides():
    raw, source = load_config([TESTDATA / "config.yaml"])
    config = parse_config(raw, source, registry())
    default = config.component(Kind.PROCESSOR, "drift").config
    assert isinstance(default, DriftConfig)
    assert (default.window, default.warmup, default.zscore_threshold, default.ks_pvalue,
            default.psi_threshold, default.consecutive) == (200, 1000, 4.0, 0.001, 0.25, 2)
    assert default.alertmanager is None and default.alert_log_size == 1000

    custom = config.component(Kind.PROCESSOR, "drift/custom").config
    loss, p99, reward = custom.features
    assert loss.signal is Signal.METRICS and reward.signal is Signal.LOGS
    s = custom.detector_settings(loss)
    assert (s.window, s.warmup, s.zscore_threshold, s.ks_pvalue, s.psi_threshold) == (
        20, 100, 5.0, None, None)
    assert s.performance.severity == "warning" and s.performance.consecutive == 2
    p = custom.detector_settings(p99)
    assert (p.window, p.warmup, p.ks_pvalue, p.performance) == (500, 5000, 0.0001, None)
    assert custom.detector_settings(reward).performance.severity == "critical"
    assert custom.alertmanager.resend_interval == 30.0
    assert custom.alertmanager.url == "http://localhost:9093/api/v2/alerts"


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_config(case: str):
    body = {"receivers": {"push": {}}, "exporters": {"capture": {}},
            "processors": {"drift": INVALID[case]["config"]},
            "service": {"pipelines": {"traces": {"receivers": ["push"], "processors": ["drift"],
                                                 "exporters": ["capture"]}}}}
    with pytest.raises(ConfigErrors) as info:
        parse_config(body, "drift.yaml", registry())
    assert INVALID[case]["error"] in str(info.value)
    assert "drift.yaml: processors.drift" in str(info.value)
