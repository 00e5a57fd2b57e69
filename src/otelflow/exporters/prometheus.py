"""`prometheus` exporter (pull): serves the latest metric values at `/metrics`.

Same naming/label rules as `prometheusremotewrite` (`prometheus_translation`). Exported
points update an in-memory store keyed by series; series not updated for
`metric_expiration` disappear. The text format 0.0.4 is served by default; with
`enable_open_metrics: true` a scraper asking for `application/openmetrics-text` gets
OpenMetrics 1.0. Exponential histograms (native histograms need the protobuf exposition
format) and delta temporality are refused per point and counted as dropped.
"""

from __future__ import annotations

import math
import ssl
import struct
import time

from aiohttp import web
from pydantic import Field, field_validator

from otelflow.component import CreateSettings, Exporter, Factory, Host, Kind
from otelflow.config.tls import TLSServerSettings
from otelflow.config.types import ConfigModel, Duration
from otelflow.exporters.prometheus_translation import (
    COUNTER,
    EXP_HISTOGRAM,
    PROM_TYPE,
    SeriesBuilder,
    SeriesSink,
    TranslationSettings,
)
from otelflow.exporters.prompb import types_pb2
from otelflow.pdata import Batch, Signal

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_STALE_BITS = 0x7FF0000000000002
_BITS = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")


class ResourceToTelemetry(ConfigModel):
    enabled: bool = False


class Config(ConfigModel):
    endpoint: str
    const_labels: dict[str, str] = Field(default_factory=dict)
    namespace: str = ""
    send_timestamps: bool = False
    metric_expiration: Duration = 300.0
    resource_to_telemetry_conversion: ResourceToTelemetry = Field(
        default_factory=ResourceToTelemetry)
    enable_open_metrics: bool = False
    add_metric_suffixes: bool = True
    tls: TLSServerSettings | None = None

    @field_validator("endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"endpoint {value!r} must be host:port (e.g. 0.0.0.0:8889)")
        return value

    @field_validator("metric_expiration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("metric_expiration must be greater than 0")
        return value

    def listen_endpoints(self):
        yield "endpoint", self.endpoint


def create(settings: CreateSettings, config: Config) -> PrometheusExporter:
    return PrometheusExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "prometheus", Config, create,
                  signals=frozenset({Signal.METRICS}),
                  description="Prometheus scrape endpoint (/metrics)", workers="none")


class Family:
    """One metric family: its type/help and its series (label bytes -> value, ts, updated)."""

    __slots__ = ("help", "kind", "series")

    def __init__(self, kind: str, help_text: str):
        self.kind = kind
        self.help = help_text
        self.series: dict[bytes, list] = {}


class MetricStore(SeriesSink):
    """The latest sample of every series, grouped in families; the pull exporter's sink."""

    def __init__(self, expiration: float):
        self.expiration = expiration
        self.families: dict[str, Family] = {}
        self._current: Family | None = None
        self.refused = 0
        self._label_text: dict[bytes, tuple[str, str]] = {}

    def metadata(self, kind: str, family: str, help_text: str, unit: str) -> None:
        fam = self.families.get(family)
        if fam is None:
            fam = self.families[family] = Family(kind, help_text)
        fam.kind, fam.help = kind, help_text or fam.help
        self._current = fam

    def sample(self, labels: bytes, value: float, ts_ms: int) -> None:
        fam = self._current
        if fam is None:
            return
        if math.isnan(value) and _BITS.unpack(_DOUBLE.pack(value))[0] == _STALE_BITS:
            fam.series.pop(labels, None)  # no recorded value: the series is gone
            return
        fam.series[labels] = [value, ts_ms, time.monotonic()]

    def histogram(self, labels: bytes, histogram: bytes, ts_ms: int) -> None:
        self.refused += 1

    def expire(self) -> None:
        cutoff = time.monotonic() - self.expiration
        for name in list(self.families):
            series = self.families[name].series
            for key in [k for k, v in series.items() if v[2] < cutoff]:
                del series[key]
            if not series:
                del self.families[name]

    def _labels(self, labels: bytes) -> tuple[str, str]:
        """(metric name, `{a="b",...}` text) of encoded labels, cached."""
        cached = self._label_text.get(labels)
        if cached is None:
            if len(self._label_text) > 100_000:
                self._label_text.clear()
            name, pairs = "", []
            for label in types_pb2.TimeSeries.FromString(labels).labels:
                if label.name == "__name__":
                    name = label.value
                else:
                    pairs.append(f'{label.name}="{_escape(label.value, quote=True)}"')
            cached = self._label_text[labels] = (name, "{" + ",".join(pairs) + "}"
                                                 if pairs else "")
        return cached

    def render(self, openmetrics: bool, timestamps: bool) -> str:
        self.expire()
        lines: list[str] = []
        for family_name in sorted(self.families):
            fam = self.families[family_name]
            prom_type = PROM_TYPE.get(fam.kind, "untyped")
            name = family_name
            if openmetrics:
                if fam.kind == COUNTER:
                    if name.endswith("_total"):
                        name = name[:-6]
                    else:
                        prom_type = "unknown"  # OpenMetrics counters need the _total suffix
                if family_name.endswith("target_info"):
                    name, prom_type = family_name[: -len("_info")], "info"
            if fam.help:
                lines.append(f"# HELP {name} {_escape(fam.help)}")
            lines.append(f"# TYPE {name} {prom_type}")
            for labels, (value, ts_ms, _) in fam.series.items():
                metric, label_text = self._labels(labels)
                line = f"{metric}{label_text} {_value(value)}"
                if timestamps and ts_ms:
                    line += f" {ts_ms / 1000:.3f}" if openmetrics else f" {ts_ms}"
                lines.append(line)
        if openmetrics:
            lines.append("# EOF")
        return "\n".join(lines) + "\n"


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value) if not value.is_integer() or abs(value) >= 1e15 else str(int(value))


class PrometheusExporter(Exporter):
    """Keeps the latest values and serves them to scrapers."""

    def __init__(self, settings: CreateSettings, config: Config):
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self.metrics = settings.metrics
        self.builder = SeriesBuilder(TranslationSettings(
            namespace=config.namespace, external_labels=config.const_labels,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            add_suffixes=config.add_metric_suffixes, send_metadata=True))
        self.store = MetricStore(config.metric_expiration)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: Host) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host_name, _, port = self.config.endpoint.rpartition(":")
        site = web.TCPSite(self._runner, host_name or "0.0.0.0", int(port),
                           ssl_context=self._ssl_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ctx.load_verify_locations(tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def export(self, batch: Batch) -> None:
        self.store.refused = 0
        result = self.builder.build(batch.message, self.store, batch.to_bytes())
        refused = result.dropped + self.store.refused
        if refused:
            self.metrics.dropped(self.id, Signal.METRICS, "unsupported_metric", refused)
            self.log.warning("metric points not exposed", points=refused,
                             errors=result.errors[:5] or [f"{EXP_HISTOGRAM} needs protobuf"])

    async def _handle(self, request: web.Request) -> web.Response:
        openmetrics = (self.config.enable_open_metrics
                       and "application/openmetrics-text" in request.headers.get("Accept", ""))
        body = self.store.render(openmetrics, self.config.send_timestamps)
        return web.Response(body=body.encode(),
                            headers={"Content-Type": OPENMETRICS_TYPE if openmetrics
                                     else TEXT_TYPE})

