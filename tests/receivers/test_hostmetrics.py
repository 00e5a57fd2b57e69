from __future__ import annotations

import asyncio
import os

import psutil
import pytest
from pydantic import ValidationError

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.pdata import metric_points
from otelflow.pipeline.service import Service
from otelflow.receivers.hostmetrics import HostMetricsConfig, HostMetricsReceiver
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics

ALL = {"cpu": {}, "memory": {}, "disk": {}, "filesystem": {}, "network": {}, "load": {},
       "process": {"include": {"names": ["python.*"], "match_type": "regexp"}}}


def collect(scrapers: dict) -> list:
    config = HostMetricsConfig(scrapers=scrapers)
    settings = CreateSettings(ComponentID("hostmetrics"), Kind.RECEIVER,
                              component_logger("receiver", "hostmetrics"), SelfMetrics())
    request = HostMetricsReceiver(settings, config, None).collect()
    out = []
    for rm in request.resource_metrics:
        resource = {a.key: a.value for a in rm.resource.attributes}
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.append((resource, m))
    return out


def attrs(point) -> dict[str, str]:
    return {a.key: a.value.string_value for a in point.attributes}


def test_every_scraper_produces_its_semconv_metrics():
    metrics = collect(ALL)
    by_name = {m.name: m for _r, m in metrics}
    expected = {"system.cpu.time": "s", "system.memory.usage": "By", "system.disk.io": "By",
                "system.filesystem.usage": "By", "system.network.io": "By",
                "system.cpu.load_average.1m": "{thread}", "process.cpu.time": "s",
                "process.memory.usage": "By"}
    for name, unit in expected.items():
        assert name in by_name, name
        assert by_name[name].unit == unit, name
    cpu = by_name["system.cpu.time"]
    assert cpu.sum.is_monotonic and cpu.sum.aggregation_temporality == 2
    states = {attrs(p)["state"] for p in cpu.sum.data_points}
    assert {"user", "system", "idle"} <= states
    assert {attrs(p)["cpu"] for p in cpu.sum.data_points} == {f"cpu{i}" for i in
                                                              range(psutil.cpu_count())}
    mem = by_name["system.memory.usage"]
    assert not mem.sum.is_monotonic
    used = next(p.as_int for p in mem.sum.data_points if attrs(p)["state"] == "used")
    assert 0 < used <= psutil.virtual_memory().total
    fs = by_name["system.filesystem.usage"]
    assert {"device", "mountpoint", "type", "mode", "state"} <= set(attrs(fs.sum.data_points[0]))
    assert {attrs(p)["direction"] for p in by_name["system.network.io"].sum.data_points} == {
        "receive", "transmit"}
    assert by_name["system.cpu.load_average.1m"].gauge.data_points[0].as_double == pytest.approx(
        os.getloadavg()[0], abs=2)
    pids = {r["process.pid"].int_value for r, m in metrics if m.name == "process.memory.usage"}
    assert os.getpid() in pids
    assert "system.cpu.utilization" not in by_name  # disabled by default, as in Go


def test_metric_toggles():
    metrics = collect({"memory": {"metrics": {"system.memory.utilization": {"enabled": True},
                                              "system.memory.usage": {"enabled": False}}}})
    names = {m.name for _r, m in metrics}
    assert names == {"system.memory.utilization"}
    for _r, m in metrics:
        assert all(0 <= p.as_double <= 1 for p in metric_points(m))


@pytest.mark.parametrize(("scrapers", "message"), [
    ({"gpu": {}}, "unknown scraper 'gpu'"),
    ({"cpu": {"metrics": {"system.cpu.frequency": {"enabled": True}}}}, "unknown metric"),
])
def test_bad_config(scrapers, message):
    with pytest.raises(ValidationError, match=message):
        HostMetricsConfig(scrapers=scrapers)


async def test_in_a_pipeline_on_interval():
    text = """
receivers:
  hostmetrics:
    collection_interval: 100ms
    initial_delay: 0s
    scrapers: {load: {}, memory: {}}
exporters: {debug: {}}
service:
  telemetry: {metrics: {level: none}}
  pipelines: {metrics: {receivers: [hostmetrics], exporters: [debug]}}
"""
    got = []

    class Sink:
        mutates_data = False

        async def start(self, host): ...

        async def shutdown(self): ...

        async def export(self, batch):
            got.append(batch)

    service = Service(parse_config(*load_config(text=text)), exporter_overrides={"debug": Sink()})
    await service.start()
    await asyncio.sleep(0.45)
    await service.shutdown()
    assert 3 <= len(got) <= 6
    assert all(b.item_count() >= 4 for b in got)
