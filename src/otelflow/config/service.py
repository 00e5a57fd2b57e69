"""Validate a merged config mapping into a `ServiceConfig`, collecting every error."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from otelflow.component import ComponentID, Factory, Kind
from otelflow.config.errors import (
    ConfigError,
    ConfigErrors,
    choices_text,
    did_you_mean,
    from_validation_error,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Signal
from otelflow.registry import Registry, UnknownComponentType

TOP_LEVEL = ("receivers", "processors", "exporters", "extensions", "service")
PIPELINE_KEYS = ("receivers", "processors", "exporters")


class MetricsTelemetry(ConfigModel):
    address: str = "localhost:8888"
    level: Literal["none", "basic", "normal", "detailed"] = "normal"


class LogsTelemetry(ConfigModel):
    level: Literal["debug", "info", "warn", "error"] = "info"
    encoding: Literal["json", "console"] | None = None  # None: console on a TTY, else json


class TelemetryConfig(ConfigModel):
    metrics: MetricsTelemetry = Field(default_factory=MetricsTelemetry)
    logs: LogsTelemetry = Field(default_factory=LogsTelemetry)


class ServiceSection(ConfigModel):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, Any] = Field(default_factory=dict)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    shutdown_timeout: Duration = 30.0
    workers: int = Field(1, ge=1)  # processes sharing the listening ports (pipeline.workers)


@dataclass
class ComponentConfig:
    id: ComponentID
    factory: Factory
    config: BaseModel

    @property
    def kind(self) -> Kind:
        return self.factory.kind


@dataclass
class PipelineConfig:
    id: str
    signal: Signal
    receivers: list[str]
    processors: list[str]
    exporters: list[str]


@dataclass
class ServiceConfig:
    source: str
    components: dict[Kind, dict[str, ComponentConfig]]
    pipelines: dict[str, PipelineConfig]
    extensions: list[str]
    telemetry: TelemetryConfig
    shutdown_timeout: float
    workers: int = 1
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def component(self, kind: Kind, component_id: str) -> ComponentConfig:
        return self.components[kind][component_id]


def parse_config(raw: dict[str, Any], source: str, registry: Registry | None = None) -> ServiceConfig:
    """Validate everything, raising one `ConfigErrors` that lists every problem found."""
    registry = registry or Registry()
    errors: list[ConfigError] = []

    def err(path: list[str | int], message: str) -> None:
        errors.append(ConfigError(path, message, source))

    for key in raw:
        if key not in TOP_LEVEL:
            hint = "connectors are not supported yet" if key == "connectors" else ""
            err([key], hint or f"unknown section{did_you_mean(key, TOP_LEVEL)}; valid sections: "
                f"{choices_text(TOP_LEVEL)}")

    broken: set[tuple[Kind, str]] = set()  # defined but invalid: errors already reported
    components = {kind: _parse_section(raw, kind, registry, err, broken) for kind in Kind}
    service = _parse_service(raw.get("service"), err)
    pipelines: dict[str, PipelineConfig] = {}
    if service is not None:
        for ext in service.extensions:
            if ext not in components[Kind.EXTENSION] and (Kind.EXTENSION, ext) not in broken:
                err(["service", "extensions"], _undefined("extension", ext, components[Kind.EXTENSION]))
        pipelines = _parse_pipelines(service.pipelines, components, broken, err)
        _check_ports(components, pipelines, service, err)
        _check_queue_storage(components, pipelines, service, err)
        if service.workers > 1:
            _check_workers(components, pipelines, service, err)
    if errors:
        raise ConfigErrors(errors)
    assert service is not None
    return ServiceConfig(
        source=source,
        components=components,
        pipelines=pipelines,
        extensions=service.extensions,
        telemetry=service.telemetry,
        shutdown_timeout=service.shutdown_timeout,
        workers=service.workers,
        raw=raw,
    )


def with_workers(raw: dict[str, Any], workers: int | None) -> dict[str, Any]:
    """`raw` with `service.workers` set from `otelflow run --workers` (validated like the key)."""
    service = raw.get("service")
    if workers is None or not isinstance(service, dict):
        return raw
    return {**raw, "service": {**service, "workers": workers}}


def _parse_section(raw: dict, kind: Kind, registry: Registry, err,
                   broken: set[tuple[Kind, str]]) -> dict[str, ComponentConfig]:
    section = raw.get(kind.section) or {}
    out: dict[str, ComponentConfig] = {}
    if not isinstance(section, dict):
        err([kind.section], "must be a mapping of component ids to their settings")
        return out
    for key, body in section.items():
        cid = ComponentID.parse(key)
        path: list[str | int] = [kind.section, str(key)]
        broken.add((kind, str(cid)))
        try:
            factory = registry.get(kind, cid.type)
        except UnknownComponentType as exc:
            err(path, str(exc))
            continue
        if body is not None and not isinstance(body, dict):
            err(path, f"settings must be a mapping, got {type(body).__name__}")
            continue
        try:
            config = factory.config.model_validate(body or {})
        except ValidationError as exc:
            for e in from_validation_error(exc, path, factory.config, None):
                err(e.path, e.message)
            continue
        out[str(cid)] = ComponentConfig(cid, factory, config)
        broken.discard((kind, str(cid)))
    return out


def _parse_service(body: Any, err) -> ServiceSection | None:
    if body is None:
        err(["service"], "missing section: define service.pipelines")
        return None
    try:
        return ServiceSection.model_validate(body)
    except ValidationError as exc:
        for e in from_validation_error(exc, ["service"], ServiceSection, None):
            err(e.path, e.message)
        return None


def _parse_pipelines(pipelines: dict, components, broken, err) -> dict[str, PipelineConfig]:
    out: dict[str, PipelineConfig] = {}
    if not pipelines:
        err(["service", "pipelines"], "no pipelines defined: add e.g. service.pipelines.traces")
    for pid, body in pipelines.items():
        path: list[str | int] = ["service", "pipelines", pid]
        signal_name = str(pid).partition("/")[0]
        if signal_name not in {s.value for s in Signal}:
            err(path, f"unknown signal {signal_name!r}{did_you_mean(signal_name, list(Signal))}; "
                f"pipeline ids are traces, metrics or logs, optionally with /name")
            continue
        signal = Signal(signal_name)
        if not isinstance(body, dict):
            err(path, "must be a mapping with receivers, processors and exporters")
            continue
        lists = _pipeline_lists(body, path, err)
        if lists is None:
            continue
        for key in ("receivers", "exporters"):
            if not lists[key]:
                err([*path, key], f"a pipeline needs at least one {key[:-1]}")
        for key, kind in zip(PIPELINE_KEYS, (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER), strict=True):
            seen = set()
            for i, cid in enumerate(lists[key]):
                if cid in seen:
                    err([*path, key, i], f"{kind.value} {cid!r} is listed twice")
                seen.add(cid)
                if (kind, cid) in broken:
                    continue
                _check_reference(components[kind], kind, cid, signal, [*path, key, i], err, broken)
        out[pid] = PipelineConfig(pid, signal, **lists)
    return out


def _pipeline_lists(body: dict, path, err) -> dict[str, list[str]] | None:
    ok = True
    for key in body:
        if key not in PIPELINE_KEYS:
            err([*path, key], f"unknown key{did_you_mean(key, PIPELINE_KEYS)}; valid keys: "
                f"{choices_text(PIPELINE_KEYS)}")
            ok = False
    lists = {}
    for key in PIPELINE_KEYS:
        value = body.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            err([*path, key], "must be a list of component ids")
            ok = False
            continue
        lists[key] = [str(ComponentID.parse(v)) for v in value]
    return lists if ok else None


def _check_reference(defined: dict, kind: Kind, cid: str, signal: Signal, path, err,
                     broken: set[tuple[Kind, str]]) -> None:
    comp = defined.get(cid)
    if comp is None:
        known = set(defined) | {c for k, c in broken if k == kind}
        err(path, _undefined(kind.value, cid, known))
    elif signal not in comp.factory.signals:
        supported = choices_text(s.value for s in comp.factory.signals)
        err(path, f"{kind.value} {cid!r} does not support {signal.value}; it supports: {supported}")


def _undefined(what: str, cid: str, defined) -> str:
    return (f"{what} {cid!r} is not defined in the {what}s section{did_you_mean(cid, defined)}; "
            f"defined: {choices_text(defined)}")


def listen_endpoints(config: BaseModel) -> Iterator[tuple[str, str]]:
    """(key path, host:port) pairs a component will listen on, from its `listen_endpoints()`."""
    method = getattr(config, "listen_endpoints", None)
    if method is not None:
        yield from method()


def _check_ports(components, pipelines: dict[str, PipelineConfig], service: ServiceSection, err) -> None:
    used_receivers = {r for p in pipelines.values() for r in p.receivers}
    owners: dict[int, str] = {}
    candidates: list[tuple[list, str]] = [
        (["service", "telemetry", "metrics", "address"], service.telemetry.metrics.address)
    ] if service.telemetry.metrics.level != "none" else []
    for kind, used in ((Kind.RECEIVER, used_receivers), (Kind.EXTENSION, set(service.extensions))):
        for cid in sorted(used):
            comp = components[kind].get(cid)
            if comp is None:
                continue
            for key, endpoint in listen_endpoints(comp.config):
                candidates.append(([kind.section, cid, *key.split(".")], endpoint))
    for path, endpoint in candidates:
        port = endpoint.rpartition(":")[2]
        if not port.isdigit() or int(port) == 0:
            continue
        where = ".".join(str(p) for p in path)
        if int(port) in owners:
            err(path, f"port {port} is already used by {owners[int(port)]}")
        else:
            owners[int(port)] = where


def _check_queue_storage(components, pipelines: dict[str, PipelineConfig],
                         service: ServiceSection, err) -> None:
    """`sending_queue.storage` must name an extension enabled in service.extensions."""
    used = sorted({e for p in pipelines.values() for e in p.exporters})
    for eid in used:
        comp = components[Kind.EXPORTER].get(eid)
        queue = getattr(comp.config, "sending_queue", None) if comp else None
        storage = getattr(queue, "storage", None)
        if storage and storage not in service.extensions:
            defined = "defined but not enabled" if storage in components[Kind.EXTENSION] \
                else "not defined"
            err(["exporters", eid, "sending_queue", "storage"],
                f"extension {storage!r} is {defined}: add it to extensions and to "
                f"service.extensions (enabled: {choices_text(service.extensions)})")


def _check_workers(components, pipelines: dict[str, PipelineConfig], service: ServiceSection,
                   err) -> None:
    """With several workers, components whose factory says `workers="none"` are refused."""
    used = {Kind.EXTENSION: set(service.extensions)}
    for key, kind in zip(PIPELINE_KEYS, (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER), strict=True):
        used[kind] = {cid for p in pipelines.values() for cid in getattr(p, key)}
    for kind, cids in used.items():
        for cid in sorted(cids):
            comp = components[kind].get(cid)
            if comp is not None and comp.factory.workers == "none":
                err([kind.section, cid], f"{kind.value} {comp.factory.type!r} cannot be shared by "
                    f"{service.workers} worker processes (service.workers or --workers): "
                    f"run it with workers: 1")
