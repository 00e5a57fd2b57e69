"""Unit tests: relabeling, discovery (file_sd, kubernetes pods via a fake API server),
conversion details (resets, OpenMetrics _created, honor_labels)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from pydantic import ValidationError

from otelflow.receivers.prometheus import PrometheusConfig, ScrapeConfig, target_labels
from otelflow.receivers.prometheus_convert import SeriesState, families_to_metrics
from otelflow.receivers.prometheus_discovery import (
    FileSDConfig,
    KubernetesSDConfig,
    file_targets,
    kubernetes_targets,
)
from otelflow.receivers.prometheus_relabel import RelabelConfig, relabel


@pytest.mark.parametrize(("rule", "labels", "expected"), [
    ({"source_labels": ["a"], "regex": "x", "action": "keep"}, {"a": "x"}, {"a": "x"}),
    ({"source_labels": ["a"], "regex": "x", "action": "keep"}, {"a": "xy"}, None),  # anchored
    ({"source_labels": ["a"], "regex": "x.*", "action": "drop"}, {"a": "xy"}, None),
    ({"source_labels": ["a", "b"], "regex": "(.*);(.*)", "replacement": "$2-${1}",
      "target_label": "c"}, {"a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "2-1"}),
    ({"source_labels": ["a"], "regex": "nomatch", "target_label": "c"}, {"a": "1"}, {"a": "1"}),
    ({"action": "labelmap", "regex": "__meta_(.+)"}, {"__meta_app": "x"},
     {"__meta_app": "x", "app": "x"}),
    ({"action": "labeldrop", "regex": "tmp_.*"}, {"tmp_a": "1", "b": "2"}, {"b": "2"}),
    ({"action": "labelkeep", "regex": "b|c"}, {"a": "1", "b": "2"}, {"b": "2"}),
    ({"source_labels": ["a"], "action": "lowercase", "target_label": "a"}, {"a": "XY"}, {"a": "xy"}),
    ({"source_labels": ["a"], "action": "hashmod", "modulus": 4, "target_label": "h"},
     {"a": "x"}, None),  # value checked below
])
def test_relabel_actions(rule, labels, expected):
    result = relabel(labels, [RelabelConfig(**rule)])
    if rule.get("action") == "hashmod":
        assert result is not None and result["h"] in {"0", "1", "2", "3"}
        assert relabel(labels, [RelabelConfig(**rule)]) == result  # deterministic
    else:
        assert result == expected


@pytest.mark.parametrize("bad", [{"action": "replace"}, {"action": "hashmod", "target_label": "x"},
                                 {"regex": "(", "target_label": "x"}, {"action": "explode"}])
def test_bad_relabel_configs(bad):
    with pytest.raises(ValidationError):
        RelabelConfig(**bad)


def test_duplicate_job_and_interval_defaults():
    with pytest.raises(ValidationError, match="duplicate job_name: a"):
        PrometheusConfig.model_validate({"scrape_configs": [{"job_name": "a"}, {"job_name": "a"}]})
    cfg = PrometheusConfig.model_validate({"global": {"scrape_interval": "15s"},
                                           "scrape_configs": [{"job_name": "a"}]})
    assert cfg.scrape_configs[0].scrape_interval == 15 and cfg.scrape_configs[0].scrape_timeout == 10


def test_target_labels_url_and_instance():
    job = ScrapeConfig(job_name="j", scrape_interval=10, scrape_timeout=5, metrics_path="/m",
                       params={"format": ["prometheus"]})
    labels = target_labels(job, {"__address__": "h:9"})
    assert labels["__url__"] == "http://h:9/m?format=prometheus"
    assert labels["instance"] == "h:9" and labels["job"] == "j"


def test_file_sd(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"targets": ["h1:1", "h2:2"],
                                                  "labels": {"env": "prod"}}]))
    (tmp_path / "b.yaml").write_text("- targets: ['h3:3']\n")
    (tmp_path / "broken.json").write_text("{")
    targets = file_targets(FileSDConfig(files=[str(tmp_path / "*")]))
    assert sorted(t["__address__"] for t in targets) == ["h1:1", "h2:2", "h3:3"]
    assert next(t for t in targets if t["__address__"] == "h1:1")["env"] == "prod"


POD = {
    "metadata": {"name": "trainer-0", "namespace": "ml", "uid": "u1",
                 "labels": {"app.kubernetes.io/name": "trainer"},
                 "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}},
    "spec": {"nodeName": "node-a", "containers": [
        {"name": "main", "ports": [{"containerPort": 8080, "name": "http"}]}]},
    "status": {"podIP": "10.1.2.3", "phase": "Running",
               "conditions": [{"type": "Ready", "status": "True"}]},
}


async def test_kubernetes_pod_discovery_with_annotation_pattern(aiohttp_server_factory):
    seen = {}

    async def pods(request):
        seen["auth"] = request.headers.get("Authorization")
        seen["field"] = request.query.get("fieldSelector")
        other = {**POD, "metadata": {**POD["metadata"], "name": "web", "annotations": {}}}
        return web.json_response({"items": [POD, other]})

    base = await aiohttp_server_factory({"/api/v1/namespaces/ml/pods": pods})
    token = __import__("tempfile").NamedTemporaryFile("w", delete=False)
    token.write("s3cret\n")
    token.close()
    sd = KubernetesSDConfig(role="pod", api_server=base, namespaces={"names": ["ml"]},
                            bearer_token_file=token.name,
                            selectors=[{"role": "pod", "field": "spec.nodeName=node-a"}])
    import aiohttp

    async with aiohttp.ClientSession() as session:
        discovered = await kubernetes_targets(sd, session)
    assert seen == {"auth": "Bearer s3cret", "field": "spec.nodeName=node-a"}
    job = ScrapeConfig(job_name="pods", scrape_interval=10, scrape_timeout=5, relabel_configs=[
        {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
         "action": "keep", "regex": "true"},
        {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
         "action": "replace", "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2",
         "target_label": "__address__"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}])
    targets = [t for t in (target_labels(job, d) for d in discovered) if t]
    assert len(targets) == 1
    assert targets[0]["__url__"] == "http://10.1.2.3:9100/metrics"
    assert (targets[0]["pod"], targets[0]["namespace"]) == ("trainer-0", "ml")


@pytest.fixture
async def aiohttp_server_factory():
    runners = []

    async def make(routes: dict) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield make
    for runner in runners:
        await runner.cleanup()


def convert(text: str, state: SeriesState, now: int, om: bool = False) -> dict:
    scope = metrics_pb2.ScopeMetrics()
    families_to_metrics((parse_om if om else parse_text)(text), now, state, scope)
    return {m.name: m for m in scope.metrics}


def test_counter_start_time_kept_then_reset():
    state = SeriesState()
    first = convert("# TYPE c_total counter\nc_total 5\n", state, 1_000)
    assert first["c_total"].sum.data_points[0].start_time_unix_nano == 1_000
    later = convert("# TYPE c_total counter\nc_total 9\n", state, 2_000)
    assert later["c_total"].sum.data_points[0].start_time_unix_nano == 1_000
    reset = convert("# TYPE c_total counter\nc_total 1\n", state, 3_000)
    assert reset["c_total"].sum.data_points[0].start_time_unix_nano == 3_000


def test_text_format_created_series_set_each_series_start_time():
    """prometheus_client's text format exposes `<name>_created` as a gauge family per counter,
    histogram and summary; each series takes the creation time of its own label set (labels
    in any order), and a series without one falls back to the first scrape."""
    n = 300
    text = ("# TYPE req_total counter\n"
            + "".join(f'req_total{{route="/r{i}",code="200"}} {i}\n' for i in range(n))
            + "req_total{route=\"/new\",code=\"200\"} 1\n"
            + "# TYPE req_created gauge\n"
            + "".join(f'req_created{{code="200",route="/r{i}"}} {1_700_000_000 + i}\n'
                      for i in reversed(range(n)))
            + "# TYPE lat histogram\nlat_bucket{le=\"+Inf\",m=\"a\"} 2\nlat_count{m=\"a\"} 2\n"
            + "lat_sum{m=\"a\"} 0.5\n# TYPE lat_created gauge\nlat_created{m=\"a\"} 1.6e9\n")
    got = convert(text, SeriesState(), 7)
    starts = {attrs["route"]: p.start_time_unix_nano
              for p in got["req_total"].sum.data_points
              for attrs in [{a.key: a.value.string_value for a in p.attributes}]}
    assert starts == {**{f"/r{i}": (1_700_000_000 + i) * 10**9 for i in range(n)}, "/new": 7}
    assert got["lat"].histogram.data_points[0].start_time_unix_nano == 1_600_000_000 * 10**9
    assert "req_created" not in got  # folded into the counter


def test_openmetrics_created_sets_start_time_and_unit():
    text = ("# TYPE c_seconds counter\n# UNIT c_seconds seconds\nc_seconds_total 5\n"
            "c_seconds_created 1700000000.5\n# TYPE g gauge\ng 1\n# EOF\n")
    got = convert(text, SeriesState(), 5, om=True)
    point = got["c_seconds_total"].sum.data_points[0]
    assert point.start_time_unix_nano == 1_700_000_000_500_000_000
    assert got["c_seconds_total"].unit == "seconds"
    assert "c_seconds_created" not in got
