"""prometheus receiver: scrape a real prometheus_client app, compare values, types, labels."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.pdata import Batch, metric_points
from otelflow.pipeline.service import Service
from otelflow.receivers.prometheus_convert import NO_RECORDED_VALUE
from otelflow.testing.process import free_port, wait_for_port
from otelflow.testing.sink import MemorySink

APP = Path(__file__).with_name("promapp.py")


def config(port: int, extra: str = "") -> str:
    return f"""
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: ml-service
          scrape_interval: 300ms
          static_configs:
            - targets: ["127.0.0.1:{port}"]
              labels: {{team: vision}}
{extra}
exporters:
  file: {{path: /dev/null}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [file]}}
"""


@pytest.fixture
def app():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(APP), str(port)])
    try:
        wait_for_port(port)
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


def points(batch: Batch) -> dict:
    """{(metric name, attrs): (kind, point)} for one scrape."""
    out = {}
    for rm in batch.message.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in metric_points(m):
                    attrs = tuple(sorted((a.key, a.value.string_value) for a in p.attributes))
                    out[(m.name, attrs)] = (m.WhichOneof("data"), p, m)
    return out


async def run_until(service: Service, sink: MemorySink, predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(predicate(b) for b in sink.batches):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return next(b for b in sink.batches if predicate(b))


async def test_scrape_matches_app_values_types_labels(app):
    port, proc = app
    sink = MemorySink()
    service = Service(parse_config(*load_config(text=config(port))),
                      exporter_overrides={"file": sink})
    await service.start()
    try:
        batch = await run_until(service, sink, lambda b: b.item_count() > 0)
        got = points(batch)
        resource = {a.key: a.value.string_value
                    for a in batch.message.resource_metrics[0].resource.attributes}
        assert resource["service.name"] == "ml-service"
        assert resource["service.instance.id"] == f"127.0.0.1:{port}"
        team = ("team", "vision")

        kind, p, m = got[("http_requests_total", (("code", "200"), ("route", "/predict"), team))]
        assert kind == "sum" and m.sum.is_monotonic and m.sum.aggregation_temporality == 2
        assert p.as_double == 41 and p.start_time_unix_nano > 0
        assert got[("http_requests_total", (("code", "500"), ("route", "/predict"), team))][1].as_double == 2

        kind, p, m = got[("training_loss", (("model_version", "v3"), team))]
        assert kind == "gauge" and p.as_double == 0.25
        assert got[("gpu_memory_bytes", (team,))][1].as_double == 2.5e9

        kind, p, m = got[("inference_duration_seconds", (("model", "resnet"), team))]
        assert kind == "histogram"
        assert list(p.explicit_bounds) == [0.01, 0.05, 0.1, 0.5]
        assert list(p.bucket_counts) == [1, 2, 0, 1, 1]
        assert p.count == 5 and p.sum == pytest.approx(0.954)

        kind, p, m = got[("payload_size_bytes", (team,))]
        assert kind == "summary" and p.count == 2 and p.sum == 400

        assert got[("up", ())][1].as_double == 1.0
        assert ("scrape_duration_seconds", ()) in got
        assert ("http_requests_created", (("code", "200"), ("route", "/predict"), team)) not in got

        # the app goes away: up drops to 0 and every series gets a staleness marker
        proc.kill()
        proc.wait()
        down = await run_until(service, sink, lambda b: points(b).get(("up", ()), (0, None))[1]
                               is not None and points(b)[("up", ())][1].as_double == 0.0)
        stale = {key for key, (_k, p, _m) in points(down).items() if p.flags & NO_RECORDED_VALUE}
        assert ("training_loss", (("model_version", "v3"), team)) in stale
        assert ("inference_duration_seconds", (("model", "resnet"), team)) in stale
        assert ("http_requests_total", (("code", "200"), ("route", "/predict"), team)) in stale
    finally:
        await service.shutdown()


async def test_metric_relabel_drops_and_target_relabel_renames(app):
    port, _proc = app
    extra = """
          relabel_configs:
            - {source_labels: [team], target_label: squad}
            - {action: labeldrop, regex: team}
          metric_relabel_configs:
            - {source_labels: [__name__], regex: "gpu_.*", action: drop}
"""
    text = config(port).replace("              labels: {team: vision}\n",
                                "              labels: {team: vision}\n" + extra)
    sink = MemorySink()
    service = Service(parse_config(*load_config(text=text)), exporter_overrides={"file": sink})
    await service.start()
    try:
        batch = await run_until(service, sink, lambda b: b.item_count() > 0)
        got = points(batch)
        assert not any(name == "gpu_memory_bytes" for name, _ in got)
        assert got[("training_loss", (("model_version", "v3"), ("squad", "vision")))][1].as_double == 0.25
    finally:
        await service.shutdown()


async def test_scraped_training_loss_drives_a_drift_alert(tmp_path):
    port = free_port()
    shift = tmp_path / "shift"
    app = subprocess.Popen([sys.executable, str(Path(__file__).with_name("lossapp.py")),
                            str(port), str(shift)])
    text = f"""
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: trainer
          scrape_interval: 50ms
          static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
processors:
  drift:
    window: 10
    warmup: 30
    consecutive: 1
    psi_threshold: null
    features:
      - name: loss
        metric: {{name: training_loss}}
        performance: {{direction: higher_is_worse, tolerance: 0.3, consecutive: 2, severity: critical}}
exporters:
  file: {{path: /dev/null}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [drift], exporters: [file]}}
"""
    try:
        wait_for_port(port)
        service = Service(parse_config(*load_config(text=text)),
                          exporter_overrides={"file": MemorySink()})
        await service.start()
        try:
            await asyncio.sleep(2.5)  # baseline around 0.25
            assert service.alerts() == []
            shift.touch()
            deadline = asyncio.get_running_loop().time() + 10
            while not any(a.get("severity") == "critical" for a in service.alerts()):
                assert asyncio.get_running_loop().time() < deadline, service.alerts()
                await asyncio.sleep(0.1)
            critical = next(a for a in service.alerts() if a.get("severity") == "critical")
            assert "loss" in str(critical)
        finally:
            await service.shutdown()
    finally:
        app.kill()
        app.wait()
