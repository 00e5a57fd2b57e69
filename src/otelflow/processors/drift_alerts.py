"""Alerts of the `drift` processor: the alert model, the bounded alert log, Alertmanager.

`AlertBook` turns per-window detector verdicts into alerts: a condition must hold for
`consecutive` windows to fire, it is de-duplicated while it holds (the firing alert is
updated in place) and resolves on the first window where it clears. Every alert ever fired
stays in a bounded log (newest last) until pushed out.

`AlertmanagerSender` POSTs alerts to Alertmanager's `/api/v2/alerts` from a background task:
new and resolved alerts at once, every firing alert again each `resend_interval`, resolved
ones with `endsAt`. Failed posts are retried with backoff; the hot path never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from pydantic import Field, field_validator

from otelflow.config.types import ConfigModel, Duration

TEMPLATE_FIELDS = ("alertname", "processor", "pipeline", "feature", "group", "detector",
                   "severity", "value", "threshold", "message")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Alert:
    """One alert; updated in place while it fires, then resolved."""

    alertname: str
    processor: str
    pipeline: str
    feature: str
    group: dict[str, str]
    detector: str
    severity: str
    value: float
    threshold: float
    message: str
    starts_at: float
    updated_at: float
    ends_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.processor, self.pipeline, self.feature, tuple(self.group.items()),
                self.detector)

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    @property
    def group_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.group.items())

    def template_fields(self) -> dict[str, Any]:
        return {"alertname": self.alertname, "processor": self.processor,
                "pipeline": self.pipeline, "feature": self.feature, "group": self.group_text,
                "detector": self.detector, "severity": self.severity,
                "value": self.value, "threshold": self.threshold, "message": self.message}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served at health_check `/alerts`."""
        return {
            "alertname": self.alertname, "status": "firing" if self.firing else "resolved",
            "severity": self.severity, "processor": self.processor, "pipeline": self.pipeline,
            "feature": self.feature, "group": dict(self.group), "detector": self.detector,
            "value": json_float(self.value), "threshold": self.threshold, "message": self.message,
            "starts_at": _iso(self.starts_at), "updated_at": _iso(self.updated_at),
            "ends_at": _iso(self.ends_at), "details": self.details,
        }


def json_float(value: float) -> float | str:
    """JSON has no infinities: render them as strings."""
    return value if math.isfinite(value) else str(value)


class AlertBook:
    """Streak counting, de-duplication and the bounded log of one processor's alerts."""

    def __init__(self, log_size: int):
        self.log: deque[Alert] = deque(maxlen=log_size)
        self.active: dict[tuple, Alert] = {}
        self._streaks: dict[tuple, int] = {}

    def observe(self, key: tuple, breached: bool, needed: int,
                build: Callable[[], Alert]) -> tuple[str, Alert] | None:
        """Record one window's verdict for `key`; return ("firing"|"resolved", alert) on change.

        `build` makes the alert (called on every breach so a firing alert tracks the latest
        value).
        """
        if not breached:
            self._streaks.pop(key, None)
            alert = self.active.pop(key, None)
            if alert is None:
                return None
            alert.ends_at = alert.updated_at = time.time()
            return "resolved", alert
        streak = self._streaks.get(key, 0) + 1
        self._streaks[key] = streak
        current = self.active.get(key)
        if current is not None:
            fresh = build()
            current.value, current.message, current.details = (fresh.value, fresh.message,
                                                                fresh.details)
            current.updated_at = fresh.updated_at
            return None
        if streak < needed:
            return None
        alert = build()
        self.active[key] = alert
        self.log.append(alert)
        return "firing", alert

    def resolve_all(self) -> list[Alert]:
        now = time.time()
        resolved = list(self.active.values())
        for alert in resolved:
            alert.ends_at = alert.updated_at = now
        self.active.clear()
        self._streaks.clear()
        return resolved

    def clear(self) -> None:
        """Empty the history (config reload): resolve what fires, forget everything."""
        self.resolve_all()
        self.log.clear()

    def snapshot(self) -> list[dict]:
        """The alert log as JSON dicts, oldest first; firing alerts pushed out are kept."""
        logged = {id(a) for a in self.log}
        extra = [a for a in self.active.values() if id(a) not in logged]
        return [a.to_dict() for a in (*extra, *self.log)]


# -- Alertmanager --------------------------------------------------------------------------


class AlertmanagerConfig(ConfigModel):
    """Where and how to send alerts to Alertmanager (the `alertmanager` key of `drift`)."""

    endpoint: str = Field(description="Alertmanager base URL, e.g. http://localhost:9093")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=lambda: {
        "summary": "{alertname}: {feature} ({detector}) {group}",
        "description": "{message}",
    })
    headers: dict[str, str] = Field(default_factory=dict)
    resend_interval: Duration = 60.0
    timeout: Duration = 5.0

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"endpoint {value!r} must be an http:// or https:// URL, "
                             "e.g. http://localhost:9093")
        return value.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"label name {name!r} is invalid: use letters, digits and _ "
                                 "(not starting with a digit)")
        return _check_templates(value)

    @field_validator("annotations")
    @classmethod
    def _check_annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_templates(value)

    @field_validator("resend_interval")
    @classmethod
    def _check_resend(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("resend_interval must be positive, e.g. 1m")
        return value

    @property
    def url(self) -> str:
        base = self.endpoint
        return base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"


def _check_templates(templates: dict[str, str]) -> dict[str, str]:
    sample: dict[str, Any] = dict.fromkeys(TEMPLATE_FIELDS, "x") | {"value": 1.5,
                                                                    "threshold": 1.0}
    for name, text in templates.items():
        try:
            text.format_map(sample)
        except KeyError as exc:
            raise ValueError(f"template {name!r} uses unknown field {{{exc.args[0]}}}; valid "
                             f"fields: {', '.join(TEMPLATE_FIELDS)}") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"template {name!r} is not a valid format string: {exc}") from None
    return templates


def sanitize_label(name: str) -> str:
    """Attribute names such as `model.version` become label names (`model_version`)."""
    clean = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return clean if _LABEL_NAME.match(clean) else "_" + clean


def alertmanager_payload(alert: Alert, config: AlertmanagerConfig, now: float) -> dict:
    """One postableAlert. Firing alerts carry endsAt = now + 4 resend intervals (as Prometheus
    does), so Alertmanager resolves them itself if otelflow goes away."""
    fields = alert.template_fields()
    labels = {"alertname": alert.alertname, "severity": alert.severity,
              "feature": alert.feature, "detector": alert.detector,
              "processor": alert.processor, "pipeline": alert.pipeline}
    labels |= {sanitize_label(k): v for k, v in alert.group.items()}
    labels |= {k: _render(v, fields) for k, v in config.labels.items()}
    ends = alert.ends_at if alert.ends_at is not None else now + 4 * config.resend_interval
    return {
        "labels": labels,
        "annotations": {k: _render(v, fields) for k, v in config.annotations.items()},
        "startsAt": _iso(alert.starts_at),
        "endsAt": _iso(ends),
    }


def _render(template: str, fields: dict[str, Any]) -> str:
    """Fill a validated template; a value that does not fit its format spec (e.g. a string
    in `{value:.2f}`) leaves the template text as is rather than losing the alert."""
    try:
        return template.format_map(fields)
    except (KeyError, ValueError, IndexError, TypeError):
        return template


class AlertmanagerSender:
    """Background delivery to Alertmanager; `notify` never blocks."""

    def __init__(self, config: AlertmanagerConfig, active: Callable[[], Iterable[Alert]],
                 logger: structlog.typing.FilteringBoundLogger):
        self.config = config
        self._active = active
        self.log = logger
        self._pending: dict[tuple, Alert] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0  # alerts accepted by Alertmanager (tests, debugging)

    def notify(self, alert: Alert) -> None:
        """Queue a new or resolved alert for the next post."""
        self._pending[alert.key] = alert
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout), headers=self.config.headers)
        self._task = asyncio.create_task(self._run(), name="drift-alertmanager")

    async def shutdown(self) -> None:
        """Send what is pending (resolved alerts included) once, then close."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._pending:
            await self._post(list(self._pending.values()))
        assert self._session is not None
        await self._session.close()

    async def _run(self) -> None:
        interval = self.config.resend_interval
        next_resend = time.monotonic() + interval
        backoff = 0.5
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_resend - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            batch = dict(self._pending)
            if time.monotonic() >= next_resend:
                batch |= {a.key: a for a in self._active()}
                next_resend = time.monotonic() + interval
            if not batch:
                continue
            if await self._post(list(batch.values())):
                for key, alert in batch.items():
                    if self._pending.get(key) is alert:
                        del self._pending[key]
                backoff = 0.5
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, interval)
                self._wake.set()

    async def _post(self, alerts: list[Alert]) -> bool:
        assert self._session is not None
        now = time.time()
        body = [alertmanager_payload(a, self.config, now) for a in alerts]
        try:
            async with self._session.post(self.config.url, json=body) as resp:
                if resp.status // 100 == 2:
                    self.sent += len(body)
                    return True
                text = (await resp.content.read(4096)).decode(errors="replace")
                permanent = resp.status // 100 == 4 and resp.status != 429
                self.log.error("alertmanager rejected alerts", status=resp.status, response=text,
                               alerts=len(body), retry=not permanent)
                return permanent  # a 4xx will not get better: drop instead of retrying
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.log.warning("cannot reach alertmanager", url=self.config.url,
                             error=str(exc) or type(exc).__name__, alerts=len(body))
        return False


# -- alerts as OTLP log records ------------------------------------------------------------


def alert_log_request(alerts: Iterable[Alert]) -> ExportLogsServiceRequest:
    """Alerts as log records (WARN firing warning, ERROR firing critical, INFO resolved)."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    _set(rl.resource.attributes.add(), "service.name", "otelflow")
    sl = rl.scope_logs.add()
    sl.scope.name = "otelflow.drift"
    now = time.time_ns()
    for alert in alerts:
        record = sl.log_records.add()
        record.time_unix_nano = int(alert.updated_at * 1e9)
        record.observed_time_unix_nano = now
        number, text = (_SEVERITY[alert.severity] if alert.firing
                        else (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO"))
        record.severity_number, record.severity_text = number, text
        record.event_name = "otelflow.drift.alert"
        record.body.string_value = alert.message
        fields = {"alert.name": alert.alertname,
                  "alert.status": "firing" if alert.firing else "resolved",
                  "alert.severity": alert.severity, "alert.processor": alert.processor,
                  "alert.pipeline": alert.pipeline, "alert.feature": alert.feature,
                  "alert.detector": alert.detector, "alert.value": alert.value,
                  "alert.threshold": alert.threshold, "alert.starts_at": _iso(alert.starts_at),
                  "alert.ends_at": _iso(alert.ends_at)}
        fields |= {f"alert.group.{k}": v for k, v in alert.group.items()}
        for key, value in fields.items():
            if value is not None:
                _set(record.attributes.add(), key, value)
    return request


_SEVERITY = {"warning": (SeverityNumber.SEVERITY_NUMBER_WARN, "WARN"),
             "critical": (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR")}


def _set(kv: Any, key: str, value: str | float) -> None:
    kv.key = key
    if isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = str(value)
