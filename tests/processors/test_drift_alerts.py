"""Alert book (streaks, de-duplication, bounded log) and the Alertmanager sender."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from aiohttp import web

from otelflow.processors.drift_alerts import (
    Alert,
    AlertBook,
    AlertmanagerConfig,
    AlertmanagerSender,
    alertmanager_payload,
)
from otelflow.testing.process import free_port


def make_alert(feature: str = "latency", value: float = 5.0, severity: str = "warning") -> Alert:
    now = time.time()
    return Alert("FeatureDrift", "drift", "traces", feature, {"model.version": "v2"}, "zscore",
                 severity, value, 4.0, f"{feature} drifted", now, now)


def test_alert_fires_after_consecutive_breaches_dedups_and_resolves():
    book = AlertBook(log_size=10)
    key = ("f", "zscore")
    assert book.observe(key, True, 2, make_alert) is None  # 1 of 2
    status, alert = book.observe(key, True, 2, make_alert)
    assert status == "firing" and alert.firing
    assert book.observe(key, True, 2, lambda: make_alert(value=9.0)) is None  # de-duplicated
    assert alert.value == 9.0 and len(book.log) == 1
    status, same = book.observe(key, False, 2, make_alert)
    assert status == "resolved" and same is alert and alert.ends_at is not None
    assert book.observe(key, False, 2, make_alert) is None
    assert [a["status"] for a in book.snapshot()] == ["resolved"]


def test_a_broken_streak_starts_over():
    book = AlertBook(log_size=10)
    for breached in (True, False, True):
        assert book.observe("k", breached, 2, make_alert) is None
    assert book.observe("k", True, 2, make_alert)[0] == "firing"


def test_alert_log_is_bounded_but_keeps_firing_alerts_visible():
    book = AlertBook(log_size=2)
    for i in range(3):
        book.observe(i, True, 1, lambda i=i: make_alert(feature=f"f{i}"))
    snapshot = book.snapshot()
    assert [a["feature"] for a in snapshot] == ["f0", "f1", "f2"]  # f0 fires, so it stays
    book.observe(0, False, 1, make_alert)
    assert [a["feature"] for a in book.snapshot()] == ["f1", "f2"]


def test_payload_labels_annotations_and_ends_at():
    config = AlertmanagerConfig(endpoint="http://am:9093/", labels={"team": "ml-{feature}"},
                                resend_interval=30)
    alert = make_alert()
    body = alertmanager_payload(alert, config, now=alert.starts_at)
    assert body["labels"] == {"alertname": "FeatureDrift", "severity": "warning",
                              "feature": "latency", "detector": "zscore", "processor": "drift",
                              "pipeline": "traces", "model_version": "v2", "team": "ml-latency"}
    assert body["annotations"]["summary"] == "FeatureDrift: latency (zscore) model.version=v2"
    assert body["annotations"]["description"] == "latency drifted"
    assert config.url == "http://am:9093/api/v2/alerts"
    starts = time.mktime(time.strptime(body["startsAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    ends = time.mktime(time.strptime(body["endsAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 119 <= ends - starts <= 121  # 4 resend intervals while firing
    alert.ends_at = alert.starts_at + 5
    assert alertmanager_payload(alert, config, now=0)["endsAt"] != body["endsAt"]


def test_templates_take_format_specs():
    config = AlertmanagerConfig(endpoint="http://am", annotations={
        "summary": "{feature}: {value:.1f} > {threshold:g}"})
    alert = make_alert(value=5.25)
    assert alertmanager_payload(alert, config, 0)["annotations"]["summary"] == "latency: 5.2 > 4"
    alert.value = float("inf")
    assert alertmanager_payload(alert, config, 0)["annotations"]["summary"] == "latency: inf > 4"


@pytest.mark.parametrize(("config", "message"), [
    ({"endpoint": "localhost:9093"}, "must be an http:// or https:// URL"),
    ({"endpoint": "http://x", "labels": {"bad-name": "x"}}, "label name 'bad-name' is invalid"),
    ({"endpoint": "http://x", "labels": {"t": "{nope}"}}, "unknown field {nope}; valid fields"),
    ({"endpoint": "http://x", "annotations": {"s": "{"}}, "not a valid format string"),
    ({"endpoint": "http://x", "resend_interval": "0s"}, "resend_interval must be positive"),
])
def test_alertmanager_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        AlertmanagerConfig.model_validate(config)


@pytest.fixture
async def fake_alertmanager():
    """Records POSTed alert lists; answers with the statuses queued in `replies` first."""
    posts: list[list[dict]] = []
    replies: list[int] = []

    async def alerts(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(status=replies.pop(0) if replies else 200, text="bad")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", posts, replies
    await runner.cleanup()


async def wait_until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_sender_posts_resends_while_firing_and_sends_ends_at(fake_alertmanager):
    url, posts, _ = fake_alertmanager
    alert = make_alert()
    active = [alert]
    sender = AlertmanagerSender(AlertmanagerConfig(endpoint=url, resend_interval=0.2),
                                lambda: active, structlog.get_logger("test"))
    await sender.start()
    sender.notify(alert)
    await wait_until(lambda: len(posts) >= 3)  # first post, then periodic resends
    assert all(p[0]["labels"]["feature"] == "latency" for p in posts)
    alert.ends_at = time.time()
    active.clear()
    sender.notify(alert)
    await sender.shutdown()
    assert posts[-1][0]["endsAt"].startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    resolved_at = time.mktime(time.strptime(posts[-1][0]["endsAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(resolved_at - time.mktime(time.gmtime(alert.ends_at))) <= 1
    await sender.shutdown()  # idempotent


async def test_sender_retries_unavailable_and_drops_rejected(fake_alertmanager):
    url, posts, replies = fake_alertmanager
    replies.extend([503, 503])
    sender = AlertmanagerSender(AlertmanagerConfig(endpoint=url, resend_interval=60),
                                lambda: [], structlog.get_logger("test"))
    await sender.start()
    sender.notify(make_alert())
    await wait_until(lambda: sender.sent == 1)
    assert len(posts) == 3  # two 503s, then accepted
    replies.append(400)
    sender.notify(make_alert(feature="other"))
    await wait_until(lambda: len(posts) == 4)
    await asyncio.sleep(0.3)
    assert len(posts) == 4 and sender.sent == 1  # a 400 is not retried
    await sender.shutdown()


async def test_sender_survives_unreachable_alertmanager():
    port = free_port()  # nothing listens here
    sender = AlertmanagerSender(
        AlertmanagerConfig(endpoint=f"http://127.0.0.1:{port}", timeout=1), lambda: [],
        structlog.get_logger("test"))
    await sender.start()
    sender.notify(make_alert())
    await asyncio.sleep(0.2)
    assert sender.sent == 0
    await asyncio.wait_for(sender.shutdown(), 5)
