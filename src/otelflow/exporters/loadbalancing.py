"""`loadbalancing` exporter: route each trace (or service) to one backend collector.

Go `loadbalancingexporter` keys: `routing_key` (`traceID` default, `service`, `resource`),
`resolver` (`static.hostnames` or `dns.hostname/port/interval/timeout`) and `protocol.otlp`, an
`otlp` exporter template (every key but `endpoint`). Backends sit on a consistent-hash ring
(100 points each), so adding or removing one of N backends moves about 1/N of the routes.
Each backend is an `otlp` exporter behind its own queue/retry chain, built through the
registry, so a slow backend only fills its own queue.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import socket
import zlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from otelflow.component import (
    ComponentID,
    CreateSettings,
    Exporter,
    Factory,
    Host,
    Kind,
    PermanentError,
    RetryableError,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, Request, Signal
from otelflow.pipeline.exporterhelper import (
    ExporterChain,
    ExporterSettings,
    QueueSettings,
    RetrySettings,
)
from otelflow.pipeline.split import group_items, split_by_resource
from otelflow.registry import Registry

RING_POINTS = 100


class StaticResolver(ConfigModel):
    hostnames: list[str] = Field(min_length=1)


class DNSResolver(ConfigModel):
    hostname: str = Field(min_length=1)
    port: int = Field(4317, ge=1, le=65535)
    interval: Duration = 5.0
    timeout: Duration = 1.0


class ResolverSettings(ConfigModel):
    static: StaticResolver | None = None
    dns: DNSResolver | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ResolverSettings:
        if (self.static is None) == (self.dns is None):
            raise ValueError("set exactly one resolver: static or dns")
        return self


class ProtocolSettings(ConfigModel):
    otlp: dict[str, Any] = Field(default_factory=dict)

    @field_validator("otlp")
    @classmethod
    def _template(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Validate the template as an `otlp` exporter config (the endpoint is ours)."""
        if "endpoint" in value:
            raise ValueError("protocol.otlp.endpoint must not be set: the resolver provides it")
        from otelflow.exporters.otlp import OTLPExporterConfig

        try:
            OTLPExporterConfig.model_validate({**value, "endpoint": "template:4317"})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"invalid otlp template at {where}: {first['msg']}") from None
        return value


class LoadBalancingConfig(ExporterSettings):
    """The backends' own otlp chains queue and retry; these outer ones default to off."""

    sending_queue: QueueSettings = Field(default_factory=lambda: QueueSettings(enabled=False))
    retry_on_failure: RetrySettings = Field(default_factory=lambda: RetrySettings(enabled=False))
    routing_key: Literal["traceID", "service", "resource"] = "traceID"
    resolver: ResolverSettings
    protocol: ProtocolSettings = Field(default_factory=ProtocolSettings)


def create_exporter(settings: CreateSettings, config: LoadBalancingConfig) -> LoadBalancer:
    return LoadBalancer(settings, config)


FACTORY = Factory(Kind.EXPORTER, "loadbalancing", LoadBalancingConfig, create_exporter,
                  description="Routes traces by trace id (or service) to a ring of OTLP backends.")


class HashRing:
    """Consistent hashing: each endpoint owns RING_POINTS points of a crc32 ring."""

    def __init__(self, endpoints: Sequence[str]):
        self.endpoints = sorted(set(endpoints))
        points = sorted((zlib.crc32(f"{ep}-{i}".encode()), ep)
                        for ep in self.endpoints for i in range(RING_POINTS))
        self._hashes = [h for h, _ in points]
        self._owners = [ep for _, ep in points]

    def endpoint_for(self, key: bytes) -> str:
        if not self._owners:
            raise RetryableError("loadbalancing: no backends resolved yet", 1.0)
        i = bisect.bisect(self._hashes, zlib.crc32(key)) % len(self._hashes)
        return self._owners[i]


def _service(resource: Any) -> bytes:
    for kv in resource.resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value.encode()
    return b""


def _resource(resource: Any) -> bytes:
    return b"".join(kv.SerializeToString(deterministic=True)
                    for kv in sorted(resource.resource.attributes, key=lambda kv: kv.key))


class LoadBalancer(Exporter):
    """Splits each batch by backend and hands the parts to the backends' otlp chains."""

    def __init__(self, settings: CreateSettings, config: LoadBalancingConfig):
        self.settings = settings
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self.ring = HashRing([])
        self.backends: dict[str, ExporterChain] = {}
        self._host: Host | None = None
        self._resolver_task: asyncio.Task | None = None
        self._update_lock = asyncio.Lock()
        m = settings.metrics
        self._m_resolutions = m.counter("otelcol_loadbalancer_num_resolutions",
                                        "Resolutions performed, by outcome.",
                                        ("exporter", "resolver", "success"))
        self._m_backends = m.gauge("otelcol_loadbalancer_num_backends",
                                   "Backends currently in use.", ("exporter", "resolver"))
        self._m_updates = m.counter("otelcol_loadbalancer_num_backend_updates",
                                    "Resolutions that changed the backend list.",
                                    ("exporter", "resolver"))

    @property
    def _resolver_name(self) -> str:
        return "static" if self.config.resolver.static else "dns"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        self._host = host
        static = self.config.resolver.static
        if static is not None:
            self._m_resolutions.labels(self.id, "static", "true").inc()
            await self.set_backends(static.hostnames)
            return
        await self._resolve_once()
        self._resolver_task = asyncio.create_task(self._resolve_loop(), name=f"{self.id}-dns")

    async def shutdown(self) -> None:
        if self._resolver_task is not None:
            self._resolver_task.cancel()
            await asyncio.gather(self._resolver_task, return_exceptions=True)
            self._resolver_task = None
        await self.set_backends([])

    # -- backends ------------------------------------------------------------------------

    async def set_backends(self, endpoints: Sequence[str]) -> None:
        """Start chains for new endpoints, rebuild the ring, drain and stop removed ones."""
        async with self._update_lock:
            wanted = sorted(set(endpoints))
            if wanted == self.ring.endpoints and set(wanted) == set(self.backends):
                return
            for endpoint in wanted:
                if endpoint not in self.backends:
                    self.backends[endpoint] = await self._start_backend(endpoint)
            self.ring = HashRing(wanted)
            removed = [ep for ep in self.backends if ep not in wanted]
            for endpoint in removed:
                chain = self.backends.pop(endpoint)
                await chain.shutdown(asyncio.get_running_loop().time() + 5.0)
            self._m_backends.labels(self.id, self._resolver_name).set(len(wanted))
            self._m_updates.labels(self.id, self._resolver_name).inc()
            self.log.info("backends updated", backends=wanted, removed=removed)

    async def _start_backend(self, endpoint: str) -> ExporterChain:
        factory = Registry(plugins=False).get(Kind.EXPORTER, "otlp")
        config = factory.config.model_validate({**self.config.protocol.otlp,
                                                "endpoint": endpoint})
        cid = f"{self.id}/{endpoint}"
        settings = CreateSettings(id=ComponentID.parse(cid), kind=Kind.EXPORTER,
                                  logger=self.log.bind(backend=endpoint),
                                  metrics=self.settings.metrics)
        chain = ExporterChain(factory.create(settings, config), config, cid,
                              self.settings.metrics, settings.logger)
        await chain.start(self._host)  # type: ignore[arg-type]
        return chain

    async def _resolve_once(self) -> None:
        dns = self.config.resolver.dns
        assert dns is not None
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(dns.hostname, dns.port, type=socket.SOCK_STREAM), dns.timeout)
        except (OSError, TimeoutError) as exc:
            self._m_resolutions.labels(self.id, "dns", "false").inc()
            self.log.warning("dns resolution failed", hostname=dns.hostname, error=str(exc))
            return
        self._m_resolutions.labels(self.id, "dns", "true").inc()
        addresses = {info[4][0] for info in infos}
        await self.set_backends([f"[{a}]:{dns.port}" if ":" in a else f"{a}:{dns.port}"
                                 for a in addresses])

    async def _resolve_loop(self) -> None:
        dns = self.config.resolver.dns
        assert dns is not None
        while True:
            await asyncio.sleep(dns.interval)
            with contextlib.suppress(Exception):
                await self._resolve_once()

    # -- routing -------------------------------------------------------------------------

    def route(self, batch: Batch) -> list[tuple[str, Request]]:
        """(backend endpoint, the part of the batch it owns)."""
        signal, key = batch.signal, self.config.routing_key
        ring = self.ring
        if key == "traceID":
            if signal is Signal.METRICS:
                raise PermanentError("loadbalancing: routing_key traceID cannot route metrics; "
                                     "use service or resource")
            parts: list[tuple[Hashable, Request]] = group_items(
                signal, batch.message, _memo(lambda item: ring.endpoint_for(item.trace_id)))
        else:
            attr = _service if key == "service" else _resource
            parts = split_by_resource(signal, batch.message,
                                      lambda resource: ring.endpoint_for(attr(resource)))
        return [(str(endpoint), part) for endpoint, part in parts if endpoint is not None]

    async def export(self, batch: Batch) -> None:
        parts = self.route(batch)
        whole = len(parts) == 1
        results = await asyncio.gather(
            *(self.backends[endpoint].consume(batch if whole else Batch.of(part, batch.metadata))
              for endpoint, part in parts), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            retryable = [e for e in errors if not isinstance(e, PermanentError)]
            raise (RetryableError(str(retryable[0])) if retryable else errors[0])


def _memo(fn: Callable[[Any], str]) -> Callable[[Any], str]:
    """Look each trace id up on the ring once per batch."""
    cache: dict[bytes, str] = {}

    def lookup(item: Any) -> str:
        tid = item.trace_id
        endpoint = cache.get(tid)
        if endpoint is None:
            endpoint = cache[tid] = fn(item)
        return endpoint

    return lookup
