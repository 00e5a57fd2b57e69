"""`service.workers: N` (or `otelflow run --workers N`): one supervisor, N worker processes.

The supervisor starts N copies of `python -m otelflow run` with the same arguments, each told
its slot (`OTELFLOW_WORKER=index/count`) and the temp dir of the forwarding sockets; every
worker runs the normal `Service`. The rules:

- Listening receivers (otlp gRPC and HTTP) bind with SO_REUSEPORT in every worker, so the
  kernel spreads connections over them (one connection stays on one worker).
- Traces pipelines with a processor that `needs_trace_affinity` (tail_sampling) route every
  trace to one owner worker first (`pipeline.affinity`), so sampling sees whole traces.
- Components whose factory says `workers="first"` run in worker 0 only: pull-based or
  resource-owning receivers (prometheus, filelog, hostmetrics, replay) and the health_check
  extension, whose `/ready` is worker 0's.
- Components that cannot be shared (`workers="none"`: file and prometheus exporters,
  file_storage) are config errors with workers > 1.
- Self-telemetry: each worker serves its own `/metrics` on 127.0.0.1:0 and reports the port;
  the supervisor serves `service.telemetry.metrics.address`, scraping every worker and summing
  series with identical labels (process uptime: the maximum; `_created`: the minimum).
  Per-process limits (memory_limiter) apply per worker.

Lifecycle: a worker reports `ready` (and its metrics address) on an inherited pipe, and takes
commands on its stdin. SIGTERM/SIGINT to the supervisor: every worker stops its receivers and
drains what it queued for its peers (`drain`), reports `drained`; once all have, they finish
shutting down (`stop`): processors flush, exporters drain, as with one process. SIGHUP is
forwarded (each worker reloads). A worker that fails to start stops the others, and the
supervisor exits 1. A worker that exits later (killed, crashed) is started again in its slot
(its peers queue and retry what they forward to it meanwhile; what it held itself is lost, as
with a single process); one that exits RESTART_LIMIT times within RESTART_WINDOW seconds stops
the collector with exit code 1, for Kubernetes to take over. Its self-metrics start again from
zero, which the summed counters show as a reset. Workers run in their own session (a
terminal's Ctrl-C reaches only the supervisor) and shut down by themselves when their stdin
closes (the supervisor died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from otelflow.config.service import ServiceConfig
from otelflow.pipeline.affinity import WorkerSlot
from otelflow.telemetry.server import split_address

ENV_REPORT_FD = "OTELFLOW_WORKER_FD"
STOP_GRACE = 5.0  # seconds past shutdown_timeout before a worker is killed
RESTART_LIMIT = 5  # restarts of one worker within RESTART_WINDOW seconds before giving up
RESTART_WINDOW = 60.0
SCRAPE_TIMEOUT = 5.0


# -- the worker's end --------------------------------------------------------------------


class WorkerLink:
    """A worker's line to its supervisor: reports out on a pipe, commands in on stdin."""

    def __init__(self, slot: WorkerSlot, report_fd: int):
        self.slot = slot
        self._fd = report_fd
        self.draining = asyncio.Event()  # the supervisor asked to shut down (or is gone)
        self._stop = asyncio.Event()  # every worker has drained: finish shutting down
        self.orphaned = False  # stdin closed without `stop`: the supervisor died
        self._task: asyncio.Task | None = None

    @classmethod
    def from_env(cls) -> WorkerLink | None:
        slot = WorkerSlot.from_env()
        return None if slot is None else cls(slot, int(os.environ[ENV_REPORT_FD]))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._task = asyncio.create_task(self._commands(reader), name="supervisor commands")

    async def _commands(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            command = line.strip()
            if command == b"drain":
                self.draining.set()
            elif command == b"stop":
                self._stop.set()
        self.orphaned = not self._stop.is_set()
        self.draining.set()  # stdin closed: the supervisor is gone, shut down alone
        self._stop.set()

    def report(self, event: str, **fields: Any) -> None:
        with contextlib.suppress(OSError):  # the supervisor may be gone
            os.write(self._fd, json.dumps({"event": event, **fields}).encode() + b"\n")

    def ready(self, metrics_port: int | None) -> None:
        self.report("ready", metrics=None if metrics_port is None else f"127.0.0.1:{metrics_port}")

    def close(self) -> None:
        """Orphaned workers remove the socket dir the dead supervisor left (the last one
        to exit succeeds: it must be empty)."""
        if self.orphaned:
            with contextlib.suppress(OSError):
                os.rmdir(self.slot.directory)

    async def barrier(self) -> None:
        """Between draining towards peers and stopping: wait until every worker has drained."""
        self.report("drained")
        await self._stop.wait()


# -- the supervisor ------------------------------------------------------------------------


class WorkerProcess:
    """One child `otelflow run` and what it reported."""

    def __init__(self, slot: WorkerSlot, proc: asyncio.subprocess.Process, reports: Any):
        self.slot = slot
        self.proc = proc
        self.metrics: str | None = None
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.exited = asyncio.ensure_future(proc.wait())
        self._reader = asyncio.ensure_future(self._read(reports))

    @classmethod
    async def spawn(cls, slot: WorkerSlot, args: Sequence[str]) -> WorkerProcess:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **slot.env(), ENV_REPORT_FD: str(write_fd)}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "otelflow", "run", *args, stdin=asyncio.subprocess.PIPE,
                env=env, pass_fds=(write_fd,), start_new_session=True)
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(read_fd, "rb"))
        return cls(slot, proc, reader)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "ready":
                    self.metrics = event.get("metrics")
                    self.ready.set()
                elif event.get("event") == "drained":
                    self.drained.set()

    def command(self, text: str, close: bool = False) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return
        with contextlib.suppress(OSError):
            stdin.write(text.encode() + b"\n")
            if close:
                stdin.close()

    def send_signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class Supervisor:
    """Starts the workers, serves the summed /metrics, forwards signals, stops them all."""

    def __init__(self, config: ServiceConfig, args: Sequence[str]):
        self.config = config
        self.args = list(args)
        self.count = config.workers
        self.log = structlog.get_logger("otelflow").bind(kind="supervisor")
        self.workers: list[WorkerProcess] = []
        self._restarts: list[list[float]] = [[] for _ in range(self.count)]  # monotonic times
        self._stop = asyncio.Event()
        self._metrics: web.AppRunner | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        directory = tempfile.mkdtemp(prefix="otelflow-workers-")
        try:
            return await self._supervise(directory)
        finally:
            await self._stop_workers()
            if self._metrics is not None:
                await self._metrics.cleanup()
            shutil.rmtree(directory, ignore_errors=True)

    async def _supervise(self, directory: str) -> int:
        for index in range(self.count):
            slot = WorkerSlot(index, self.count, directory)
            self.workers.append(await WorkerProcess.spawn(slot, self.args))
        if not await self._all_ready():
            return 0 if self._stop.is_set() else 1
        try:
            await self._serve_metrics()
        except OSError as exc:
            print(f"otelflow: service.telemetry.metrics.address: {exc}", file=sys.stderr)
            return 1
        self.log.info("all workers are ready", workers=self.count,
                      pids=[w.proc.pid for w in self.workers])
        return await self._watch()

    async def _watch(self) -> int:
        """Restart each worker that exits, until a stop (0) or one that keeps exiting (1)."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not stop.done():
                await self._first([stop, *(w.exited for w in self.workers)])
                for worker in list(self.workers):
                    if worker.exited.done() and not stop.done() and not await self._restart(worker):
                        return 1
            return 0
        finally:
            stop.cancel()

    async def _restart(self, worker: WorkerProcess) -> bool:
        """Start `worker`'s slot again; False when it exited too often lately."""
        index, now = worker.slot.index, time.monotonic()
        recent = [t for t in self._restarts[index] if now - t < RESTART_WINDOW]
        if len(recent) >= RESTART_LIMIT:
            self.log.error("worker keeps exiting; stopping the others", worker=index,
                           code=worker.proc.returncode, restarts=len(recent),
                           window_s=RESTART_WINDOW)
            return False
        self._restarts[index] = [*recent, now]
        self.log.error("worker exited; starting it again", worker=index,
                       code=worker.proc.returncode)
        self.workers[index] = await WorkerProcess.spawn(worker.slot, self.args)
        return True

    async def _all_ready(self) -> bool:
        """Wait for every worker's `ready`; False if one exits first (or a stop comes)."""
        ready = asyncio.ensure_future(asyncio.gather(*(w.ready.wait() for w in self.workers)))
        stop = asyncio.ensure_future(self._stop.wait())
        done = await self._first([ready, stop, *(w.exited for w in self.workers)])
        ready.cancel()
        stop.cancel()
        await asyncio.gather(ready, stop, return_exceptions=True)
        for worker in self.workers:
            if worker.exited is done or (worker.exited.done() and not worker.ready.is_set()):
                print(f"otelflow: worker {worker.slot.index} failed to start (exit code "
                      f"{worker.proc.returncode}); stopping the others", file=sys.stderr)
                return False
        return done is ready

    @staticmethod
    async def _first(futures: list[asyncio.Future]) -> asyncio.Future:
        """The first of `futures` to finish (the others keep running)."""
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        return next(f for f in futures if f in done)

    def _forward(self, sig: int) -> None:
        self.log.info("forwarding signal to the workers", signal=signal.Signals(sig).name)
        for worker in self.workers:
            worker.send_signal(sig)

    async def _stop_workers(self) -> None:
        """drain -> every worker drained (or gone) -> stop -> every worker exited (or killed)."""
        alive = [w for w in self.workers if not w.exited.done()]
        if not alive:
            return
        timeout = self.config.shutdown_timeout
        for worker in alive:
            worker.command("drain")
        await asyncio.wait([asyncio.ensure_future(self._drained(w)) for w in alive],
                           timeout=timeout)
        for worker in alive:
            worker.command("stop", close=True)
        await asyncio.wait([w.exited for w in alive], timeout=timeout + STOP_GRACE)
        for worker in alive:
            if not worker.exited.done():
                self.log.error("worker did not stop in time; killing it", worker=worker.slot.index)
                worker.send_signal(signal.SIGKILL)
        await asyncio.gather(*(w.exited for w in alive))

    @staticmethod
    async def _drained(worker: WorkerProcess) -> None:
        await asyncio.wait([asyncio.ensure_future(worker.drained.wait()), worker.exited],
                           return_when=asyncio.FIRST_COMPLETED)

    # -- /metrics ---------------------------------------------------------------------------

    async def _serve_metrics(self) -> None:
        telemetry = self.config.telemetry.metrics
        if telemetry.level == "none":
            return
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = split_address(telemetry.address)
        await web.TCPSite(runner, host, port).start()
        self._metrics = runner

    async def _scrape(self, _request: web.Request) -> web.Response:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                texts = await asyncio.gather(*(self._fetch(session, w.metrics)
                                               for w in self.workers if w.metrics))
            except (aiohttp.ClientError, TimeoutError) as exc:
                return web.Response(status=503, text=f"a worker did not answer: {exc!r}\n")
        return web.Response(text=merge_expositions(texts),
                            content_type="text/plain", charset="utf-8")

    @staticmethod
    async def _fetch(session: aiohttp.ClientSession, address: str) -> str:
        async with session.get(f"http://{address}/metrics") as response:
            response.raise_for_status()
            return await response.text()


def supervise(config: ServiceConfig, args: Sequence[str]) -> int:
    """Run `config` as `config.workers` worker processes started with `otelflow run ARGS`."""
    return asyncio.run(Supervisor(config, args).run())


# -- merging the workers' expositions -----------------------------------------------------


def _combine(sample: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    if sample.endswith("_created"):
        return min(old, new)
    if sample.startswith("otelcol_process_uptime"):
        return max(old, new)
    return old + new


def merge_expositions(texts: Iterable[str]) -> str:
    """One Prometheus text exposition: samples with the same name and labels combined."""
    families: dict[str, tuple[str, str, dict[tuple, float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _doc, _type, samples = families.setdefault(
                family.name, (family.documentation, family.type, {}))
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = _combine(s.name, samples.get(key), s.value)
    lines = []
    for name, (doc, kind, samples) in families.items():
        lines.append(f"# HELP {name} {_escape(doc, help_text=True)}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample, labels), value in samples.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{label_text}}} {floatToGoString(value)}" if labels
                         else f"{sample} {floatToGoString(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str, help_text: bool = False) -> str:
    value = value.replace("\\", r"\\").replace("\n", r"\n")
    return value if help_text else value.replace('"', r"\"")
