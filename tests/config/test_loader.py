from __future__ import annotations

import pytest

from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.config.types import parse_duration, parse_size

BASE = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:HOST:-localhost}:${env:PORT}
exporters:
  debug: {verbosity: basic}
  file: {path: "$${literal}"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
"""


def test_env_expansion_with_default_and_escape():
    raw, _ = load_config(text=BASE, env={"PORT": "5555"})
    assert raw["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "localhost:5555"
    assert raw["exporters"]["file"]["path"] == "${literal}"


def test_whole_value_reference_keeps_yaml_type():
    raw, _ = load_config(text="a: ${env:N}\nb: ${env:FLAG}\nc: x${env:N}", env={"N": "7", "FLAG": "true"})
    assert raw == {"a": 7, "b": True, "c": "x7"}


def test_several_files_merge_later_wins(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text(BASE)
    second = tmp_path / "b.yaml"
    second.write_text("exporters:\n  debug: {verbosity: detailed}\n"
                      "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [file]}\n")
    raw, source = load_config([first, second], env={"PORT": "1"})
    assert raw["exporters"]["debug"] == {"verbosity": "detailed"}
    assert raw["exporters"]["file"] == {"path": "${literal}"}
    config = parse_config(raw, source)
    assert config.pipelines["traces"].exporters == ["file"]
    assert source == f"{first}, {second}"


def test_embedded_default_is_valid():
    config = parse_config(*load_config(env={}))
    assert set(config.pipelines) == {"traces", "metrics", "logs"}


def test_unreadable_file_is_a_config_error(tmp_path):
    from otelflow.config import ConfigErrors

    with pytest.raises(ConfigErrors, match="cannot read config"):
        load_config([tmp_path / "missing.yaml"])


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("200ms", 0.2), ("1m30s", 90.0), ("1h", 3600.0), ("0", 0.0), (3, 3.0),
    ("1.5s", 1.5), ("100us", 1e-4)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "s", "5 s", "-1s", "1d", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [(10, 10), ("4MiB", 4 << 20), ("1KB", 1000),
                                            ("2kib", 2048), ("1GiB", 1 << 30)])
def test_sizes(text, size):
    assert parse_size(text) == size
