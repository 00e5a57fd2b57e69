"""Config table tests for prometheusremotewrite and prometheus, through the central loader:
testdata/prometheus_config.yaml sets every key; each case in testdata/prometheus_invalid.yaml
fails with one specific error naming its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.testing.configs import yaml_config_errors

TESTDATA = Path(__file__).parent / "testdata"
CASES = yaml.safe_load((TESTDATA / "prometheus_invalid.yaml").read_text())


def test_every_key_parses():
    raw, source = load_config([str(TESTDATA / "prometheus_config.yaml")])
    config = parse_config(raw, source)
    prw = config.component(Kind.EXPORTER, "prometheusremotewrite").config
    assert prw.timeout == 10.0 and prw.namespace == "app"
    assert prw.max_batch_size_bytes == 2 * 1024 * 1024
    assert prw.resource_to_telemetry_conversion.enabled and not prw.target_info.enabled
    assert not prw.add_metric_suffixes and prw.send_metadata
    assert (prw.sending_queue.queue_size, prw.sending_queue.num_consumers) == (2000, 1)
    assert prw.remote_write_queue.num_consumers == 8
    assert prw.retry_on_failure.max_elapsed_time == 120.0
    assert prw.tls.server_name_override == "mimir.internal"
    prom = config.component(Kind.EXPORTER, "prometheus").config
    assert prom.metric_expiration == 600.0 and prom.const_labels == {"env": "prod"}
    assert prom.send_timestamps and prom.enable_open_metrics


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_config(name):
    case = CASES[name]
    text = yaml.safe_dump({
        "receivers": {"otlp": {}}, "exporters": case["exporter"],
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"],
                                              "exporters": list(case["exporter"])}}}})
    errors = yaml_config_errors(text)
    assert len(errors) == 1, f"expected one error, got: {ConfigErrors(errors)}"
    for fragment in case["errors"]:
        assert fragment in str(errors[0]), f"{fragment!r} not in {errors[0]}"
