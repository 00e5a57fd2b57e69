"""Trace-id routing between worker processes (`service.workers > 1`).

A traces pipeline holding a processor with `needs_trace_affinity` (tail_sampling) must see
every span of a trace in one process. Each worker therefore puts a `TraceRouter` in front of
that pipeline's first processor: it splits each request on the wire bytes by owner
(crc32(trace id) mod workers, the same in every worker), passes its own share on and queues the
other shares for their owners. Forwarding is OTLP/gRPC over a unix socket per (worker,
pipeline) in the supervisor's temp dir, through an `otlp` exporter behind the usual
queue + retry chain, so a slow peer fills its queue instead of stalling the receiver. A
worker's internal receiver hands forwarded data, unparsed (it was checked where it entered the
collector), straight to the pipeline's first processor:
forwarded data is never routed again. A batch's request metadata (`include_metadata`) travels
with it in one binary gRPC header that only these internal receivers read, so `batch`
`metadata_keys`, `from_context` and `headers_setter` work the same in the owner worker.

Internal receivers report to a private metrics registry, so `otelcol_receiver_accepted_*`
counts each span once, where it entered the collector. The forwarding chains are ordinary
exporters in the served metrics (`otlp/forward-worker<N>-<pipeline>`: sent, queue size,
dropped), so a slow or failing hop shows.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from dataclasses import dataclass

from otelflow.component import Component, ComponentID, Consumer, CreateSettings, Host, Kind
from otelflow.exporters.otlp import OTLPExporter, OTLPExporterConfig
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.exporterhelper import ExporterChain
from otelflow.pipeline.split import split_wire_by_trace_id
from otelflow.receivers.otlp import OTLPReceiver, OTLPReceiverConfig
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics

ENV_SLOT = "OTELFLOW_WORKER"  # "index/count"
ENV_DIR = "OTELFLOW_WORKER_DIR"  # where the forwarding sockets live
FORWARD_QUEUE = {"enabled": True, "num_consumers": 4, "queue_size": 1000}
FORWARD_RETRY = {"enabled": True, "initial_interval": "50ms", "max_interval": "1s",
                 "max_elapsed_time": "60s"}


@dataclass(frozen=True)
class WorkerSlot:
    """Which of `count` workers this process is, and the directory of their sockets."""

    index: int
    count: int
    directory: str

    @classmethod
    def from_env(cls) -> WorkerSlot | None:
        """The slot the supervisor gave this process, or None when not a worker."""
        value = os.environ.get(ENV_SLOT)
        if not value:
            return None
        index, _, count = value.partition("/")
        return cls(int(index), int(count), os.environ[ENV_DIR])

    def env(self) -> dict[str, str]:
        return {ENV_SLOT: f"{self.index}/{self.count}", ENV_DIR: self.directory}

    def socket(self, worker: int, route: int) -> str:
        """The unix socket where `worker` receives forwarded data for routed pipeline `route`."""
        return os.path.join(self.directory, f"w{worker}-p{route}.sock")

    def owner(self, trace_id: bytes) -> int:
        """The worker owning a trace: stable across processes (unlike `hash`)."""
        return zlib.crc32(trace_id) % self.count


class TraceRouter:
    """Pipeline entry: keeps this worker's traces, queues the others for their owners."""

    mutates_data = False

    def __init__(self, slot: WorkerSlot, local: Consumer, peers: dict[int, ExporterChain]):
        self.slot = slot
        self.local = local
        self.peers = peers

    async def consume(self, batch: Batch) -> None:
        parts = split_wire_by_trace_id(batch.signal, batch.to_bytes(), self.slot.owner)
        if len(parts) == 1 and parts[0][0] == self.slot.index:
            await self.local.consume(batch)
            return
        mine = None
        # remote shares first: a full peer queue refuses the request before anything is kept
        for owner, raw in parts:
            if owner == self.slot.index:
                mine = Batch(batch.signal, raw=raw, metadata=batch.metadata)
                continue
            await self.peers[owner].consume(batch if len(parts) == 1 else
                                            Batch(batch.signal, raw=raw, metadata=batch.metadata))
        if mine is not None:
            await self.local.consume(mine)


class Affinity(Component):
    """The routers, internal receivers and forwarding chains of one worker's Service."""

    def __init__(self, slot: WorkerSlot, metrics: SelfMetrics):
        self.slot = slot
        self.metrics = metrics
        self._private = SelfMetrics()  # internal receivers: not counted as accepted twice
        self.receivers: list[OTLPReceiver] = []
        self.chains: list[ExporterChain] = []

    def route(self, pipeline: str, entry: Consumer) -> TraceRouter:
        """Wrap a traces pipeline's entry; its internal receiver feeds `entry` directly."""
        route = len(self.receivers)
        cid = f"otlp/worker{self.slot.index}-{pipeline.replace('/', '-')}"
        config = OTLPReceiverConfig.model_validate({"protocols": {"grpc": {
            "endpoint": self.slot.socket(self.slot.index, route), "transport": "unix",
            "max_recv_msg_size_mib": 64}}})
        self.receivers.append(OTLPReceiver(self._settings(Kind.RECEIVER, cid, self._private),
                                           config, {Signal.TRACES: entry}, trusted=True))
        peers = {w: self._chain(pipeline, w, route) for w in range(self.slot.count)
                 if w != self.slot.index}
        self.chains.extend(peers.values())
        return TraceRouter(self.slot, entry, peers)

    def _settings(self, kind: Kind, cid: str, metrics: SelfMetrics) -> CreateSettings:
        return CreateSettings(id=ComponentID.parse(cid), kind=kind, metrics=metrics,
                              logger=component_logger(kind.value, cid))

    def _chain(self, pipeline: str, worker: int, route: int) -> ExporterChain:
        cid = f"otlp/forward-worker{worker}-{pipeline.replace('/', '-')}"
        config = OTLPExporterConfig.model_validate({
            "endpoint": f"unix:{self.slot.socket(worker, route)}", "tls": {"insecure": True},
            "compression": "none", "timeout": "10s",
            "sending_queue": FORWARD_QUEUE, "retry_on_failure": FORWARD_RETRY})
        settings = self._settings(Kind.EXPORTER, cid, self.metrics)
        return ExporterChain(OTLPExporter(settings, config, forward_metadata=True), config, cid,
                             self.metrics, settings.logger)

    async def start(self, host: Host) -> None:
        for chain in self.chains:
            await chain.start(host)
        for receiver in self.receivers:
            await receiver.start(host)

    async def drain(self, deadline: float) -> None:
        """Send everything queued for peers (until `deadline`, monotonic), then close."""
        await asyncio.gather(*(chain.shutdown(deadline) for chain in self.chains))

    async def shutdown(self) -> None:
        """Stop accepting forwarded data (after every peer has drained towards us)."""
        for receiver in self.receivers:
            await receiver.shutdown()
