"""memory_limiter: Go config rules, limits from cgroups, refusal and GC driven by readings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelflow.component import ComponentID, CreateSettings, Kind, RetryableError
from otelflow.processors.memory_limiter import (
    MIB,
    MemoryLimiter,
    MemoryLimiterConfig,
    cgroup_memory_limit,
    rss_bytes,
    total_memory,
)
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.configs import config_error
from tests.pipeline.delivery_helpers import counter_value, spans_batch

CASES = yaml.safe_load((Path(__file__).parent / "testdata" / "memory_limiter.yaml").read_text())


@pytest.mark.parametrize("name", sorted(CASES["invalid"]))
def test_invalid_configs(name):
    case = CASES["invalid"][name]
    message = config_error({"memory_limiter": case["config"]})
    for fragment in case["errors"]:
        assert fragment in message, f"{fragment!r} not in {message}"


def test_valid_config_with_every_key():
    cfg = MemoryLimiterConfig.model_validate(CASES["valid"])
    assert cfg.min_gc_interval_when_hard_limited == 1.0
    assert cfg.limits(lambda: 0) == (4000 * MIB, 3200 * MIB)  # limit_mib wins over percentages


def test_limits_follow_go_defaults():
    cfg = MemoryLimiterConfig(check_interval="1s", limit_mib=4000, spike_limit_mib=800)
    assert cfg.limits(lambda: 0) == (4000 * MIB, 3200 * MIB)
    cfg = MemoryLimiterConfig(check_interval="1s", limit_mib=1000)
    assert cfg.limits(lambda: 0) == (1000 * MIB, 800 * MIB)  # spike defaults to 20%
    cfg = MemoryLimiterConfig(check_interval="1s", limit_percentage=80, spike_limit_percentage=15)
    assert cfg.limits(lambda: 1000 * MIB) == (800 * MIB, 650 * MIB)


def test_cgroup_v2_and_v1_limits(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    (tmp_path / "kubepods" / "pod1").mkdir(parents=True)
    (tmp_path / "kubepods" / "pod1" / "memory.max").write_text("536870912\n")
    assert cgroup_memory_limit(tmp_path, proc) == 512 * MIB
    (tmp_path / "kubepods" / "pod1" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path, proc) is None

    v1 = tmp_path / "v1"
    proc.write_text("4:memory:/docker/abc\n0::/\n")
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("268435456")
    assert cgroup_memory_limit(v1, proc) == 256 * MIB
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(
        "9223372036854771712")
    assert cgroup_memory_limit(v1, proc) is None


def test_real_readings_are_sane():
    assert 10 * MIB < rss_bytes() < total_memory()


class Sink:
    mutates_data = False

    def __init__(self):
        self.items = 0

    async def consume(self, batch):
        self.items += batch.item_count()


def limiter(readings: list[int], recheck_interval: float = 3600.0,
            **cfg) -> tuple[MemoryLimiter, Sink, SelfMetrics]:
    metrics = SelfMetrics()
    settings = CreateSettings(ComponentID("memory_limiter"), Kind.PROCESSOR,
                              component_logger("processor", "memory_limiter"), metrics)
    config = MemoryLimiterConfig(check_interval="1s", limit_mib=200, spike_limit_mib=40, **cfg)
    sink = Sink()
    ml = MemoryLimiter(settings, config, sink, read_memory=lambda: readings.pop(0),
                       recheck_interval=recheck_interval)
    return ml, sink, metrics


async def test_refuses_above_soft_limit_and_resumes_below():
    readings = [100 * MIB, 170 * MIB, 170 * MIB, 170 * MIB, 120 * MIB]
    ml, sink, metrics = limiter(readings, min_gc_interval_when_soft_limited="0s")
    ml.check()  # 100: fine
    await ml.consume(spans_batch(0, 5))
    ml.check()  # 170 >= 160 soft: trim, GC, still 170 -> refuse
    with pytest.raises(RetryableError, match="high memory usage") as info:
        await ml.consume(spans_batch(5, 7))
    assert info.value.retry_after == 1.0
    ml.check()  # 120: resume
    await ml.consume(spans_batch(12, 3))
    assert sink.items == 8
    assert counter_value(metrics, "otelcol_processor_refused_spans",
                         processor="memory_limiter") == 7


async def test_hard_limit_forces_gc_which_can_lift_the_refusal():
    gcs = []
    readings = [210 * MIB, 210 * MIB, 150 * MIB]
    ml, sink, _ = limiter(readings)
    original = ml._collect

    def counting_collect():
        gcs.append(1)
        return original()
    ml._collect = counting_collect
    ml.check()  # 210 >= 200: trim (still 210), GC -> 150, below soft
    assert gcs == [1]
    assert not ml.refusing
    await ml.consume(spans_batch(0, 1))
    assert sink.items == 1


async def test_consume_rechecks_between_timer_checks_while_accepting():
    readings = [100 * MIB, 150 * MIB, 170 * MIB, 170 * MIB, 170 * MIB]
    ml, sink, _ = limiter(readings, recheck_interval=0.0,
                          min_gc_interval_when_soft_limited="0s")
    ml.check()  # timer: 100
    await ml.consume(spans_batch(0, 2))  # re-reads: 150, accepted
    with pytest.raises(RetryableError):  # re-reads: 170 >= soft (trim, GC: still 170)
        await ml.consume(spans_batch(2, 2))
    with pytest.raises(RetryableError):  # refusing: no reading until the timer checks again
        await ml.consume(spans_batch(4, 2))
    assert sink.items == 2 and not readings
