"""`otelflow run`: serve a config until SIGTERM/SIGINT; reload it on SIGHUP or, with `--watch`,
when a config file changes. A reload applies processor settings in place where the processor
supports it (drift), otherwise drains the running service and starts the new one.

As a worker of `pipeline.workers`, it also reports readiness to the supervisor and shuts down
when told to (or when the supervisor is gone)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import structlog

from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import ServiceConfig, parse_config, with_workers
from otelflow.pipeline.service import Service
from otelflow.pipeline.workers import WorkerLink

WATCH_INTERVAL = 1.0


async def serve(config: ServiceConfig, paths: Sequence[str] | None, watch: bool,
                workers: int | None = None) -> int:
    """`workers`: the `--workers` flag, applied again to every reloaded config."""
    log = structlog.get_logger("otelflow")
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    link = WorkerLink.from_env()
    if link is not None:
        structlog.contextvars.bind_contextvars(worker=link.slot.index)
        await link.start()
    # a worker told to stop by its supervisor waits, before it stops, for its peers
    drain = link.draining if link is not None else asyncio.Event()
    watcher = asyncio.create_task(_watch(paths, reload)) if watch and paths else None
    service = Service(config, worker=link.slot if link else None)
    try:
        await service.start()
    except Exception as exc:
        who = f"worker {link.slot.index}: " if link is not None else ""
        print(f"otelflow: {who}{exc}", file=sys.stderr)
        return 1
    _ready(service, link)
    try:
        while True:
            fatal = asyncio.ensure_future(service.wait_fatal())
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, reload, drain)]
            await asyncio.wait([fatal, *waits], return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if fatal.done() or stop.is_set() or drain.is_set():
                log.info("shutting down")
                coordinated = link is not None and drain.is_set() and not fatal.done()
                await service.shutdown(link.barrier if coordinated else None)
                return 1 if fatal.done() else 0
            fatal.cancel()
            reload.clear()
            service = await _reload(service, paths, log, workers)
            _ready(service, link)
    finally:
        if watcher is not None:
            watcher.cancel()
        if link is not None:
            link.close()


def _ready(service: Service, link: WorkerLink | None) -> None:
    """Tell the supervisor (if any) this worker serves, and where its self-metrics are."""
    if link is not None:
        link.ready(service.metrics_server.port if service.metrics_server else None)


async def _reload(service: Service, paths: Sequence[str] | None, log,
                  workers: int | None = None) -> Service:
    try:
        raw, source = load_config(paths)
        new = parse_config(with_workers(raw, workers), source)
    except ConfigErrors as exc:
        log.error("reload refused: the new configuration is invalid", error=str(exc))
        return service
    if new.raw == service.config.raw or await service.reload(new):
        return service
    log.info("reloading: draining the running pipelines, then starting the new ones")
    await service.shutdown()
    replacement = Service(new, worker=service.worker)
    await replacement.start()
    return replacement


async def _watch(paths: Sequence[str], reload: asyncio.Event) -> None:
    def stamps() -> list[float]:
        return [os.stat(p).st_mtime if os.path.exists(p) else 0.0 for p in paths]

    seen = stamps()
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        current = stamps()
        if current != seen:
            seen = current
            reload.set()
