"""`otelflow replay --config F [FIXTURE...]`: run a pipeline on recorded fixtures until every
component has flushed, then print what each exporter took in, sent and dropped.

With FIXTURE arguments, every pipeline's receivers are replaced by `replay` receivers reading
them (JSON lines, or .pb/.binpb proto files), so a production YAML can be tested as it is.
Without, the config's own `replay` receivers run. The service shuts down (draining batches,
sampling decisions and sending queues) once every replay receiver has finished (receivers
with `loop: true` never finish: stop those with Ctrl-C / SIGTERM). Exit status 0 unless a
component failed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import ServiceConfig, parse_config
from otelflow.receivers.replay import EXTENSIONS, ReplayReceiver
from otelflow.telemetry.summary import exporter_totals, format_totals

FIXTURE_RECEIVER = "replay/fixtures"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="run a pipeline on recorded fixtures and exit when flushed",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", metavar="FILE", required=True,
                   help="pipeline YAML; repeat to merge (later wins)")
    p.add_argument("fixtures", nargs="*", metavar="FIXTURE",
                   help="fixture files, directories or globs (default: the config's replay receivers)")
    p.add_argument("--speed", default="max",
                   help="max (default), realtime, or a factor such as 10 (ten times faster)")
    p.add_argument("--rebase-timestamps", action="store_true",
                   help="shift timestamps so that the newest item is now")
    p.add_argument("--signal", choices=("traces", "metrics", "logs"),
                   help="the signal of proto fixtures not named traces.*, metrics.* or logs.*")


def main(args: argparse.Namespace) -> int:
    try:
        raw, source = load_config(args.config)
        if args.fixtures:
            with_fixtures(raw, args.fixtures, speed=args.speed, rebase=args.rebase_timestamps,
                          signal=args.signal)
        without_metrics_port(raw)
        config = parse_config(raw, source)
    except ConfigErrors as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return 1
    if not _replay_receivers(config):
        print("otelflow replay: nothing to replay: give FIXTURE files or use a config whose "
              "pipelines have a replay receiver", file=sys.stderr)
        return 1
    from otelflow.telemetry.logs import configure_logging

    configure_logging(config.telemetry.logs.level, config.telemetry.logs.encoding)
    return asyncio.run(_replay(config))


def with_fixtures(raw: dict[str, Any], fixtures: list[str], *, speed: str = "max",
                  rebase: bool = False, signal: str | None = None) -> None:
    """Make every pipeline receive from replay receivers reading `fixtures` (one receiver per
    file format found), in place of the config's receivers."""
    by_format: dict[str, list[str]] = {}
    for fixture in fixtures:
        for fmt in _formats_of(Path(fixture)):
            by_format.setdefault(fmt, []).append(fixture)
    receivers = {}
    for fmt, paths in by_format.items():
        rid = FIXTURE_RECEIVER if fmt == "json" else f"{FIXTURE_RECEIVER}_{fmt}"
        body: dict[str, Any] = {"path": paths, "format": fmt, "speed": speed,
                                "rebase_timestamps": rebase}
        if signal and fmt == "proto":
            body["signal"] = signal
        receivers[rid] = body
    raw["receivers"] = receivers
    service = raw.get("service")
    pipelines = service.get("pipelines") if isinstance(service, dict) else None
    if isinstance(pipelines, dict):
        for body in pipelines.values():
            if isinstance(body, dict):
                body["receivers"] = list(receivers)


def _formats_of(path: Path) -> list[str]:
    """The fixture formats a path holds: from its extension, or from a directory's files."""
    if path.is_dir():
        suffixes = {p.suffix for p in path.iterdir()}
        return [fmt for fmt, exts in EXTENSIONS.items() if suffixes & set(exts)] or ["json"]
    return ["proto" if path.suffix in EXTENSIONS["proto"] else "json"]


def without_metrics_port(raw: dict[str, Any]) -> None:
    """Serve no /metrics port (a run to completion needs none; self-metrics still count)."""
    service = raw.get("service")
    if not isinstance(service, dict):
        return
    telemetry = service.get("telemetry") or {}
    if isinstance(telemetry, dict):
        metrics = telemetry.get("metrics") or {}
        if isinstance(metrics, dict):
            service["telemetry"] = {**telemetry, "metrics": {**metrics, "level": "none"}}


def _replay_receivers(config: ServiceConfig) -> list[str]:
    used = {r for p in config.pipelines.values() for r in p.receivers}
    return [rid for rid in sorted(used)
            if config.component(Kind.RECEIVER, rid).factory.type == "replay"]


async def run_service(service, until: list[Callable[[], Awaitable[Any]]]) -> bool:
    """Start `service`, wait until any of `until` (called once started) returns, or
    SIGTERM/SIGINT, or a fatal component error; then shut down, draining everything.
    Returns True when it ended without a fatal error."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except Exception as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return False
    fatal = asyncio.ensure_future(service.wait_fatal())
    waiters = [asyncio.ensure_future(stop.wait()), *(asyncio.ensure_future(f()) for f in until)]
    await asyncio.wait([fatal, *waiters], return_when=asyncio.FIRST_COMPLETED)
    await service.shutdown()
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    if fatal.done():
        print(f"otelflow: {fatal.result()}", file=sys.stderr)
        return False
    fatal.cancel()
    return True


async def _replay(config: ServiceConfig) -> int:
    from otelflow.pipeline.service import Service

    service = Service(config)
    started = time.monotonic()
    finished = asyncio.Event()

    async def all_finished() -> None:
        replays = [r for r in service.receivers.values() if isinstance(r, ReplayReceiver)]
        await asyncio.gather(*(r.wait_finished() for r in replays))
        finished.set()

    ok = await run_service(service, [all_finished])
    replays = [r for r in service.receivers.values() if isinstance(r, ReplayReceiver)]
    files = sum(len(r.files) for r in replays)
    items = sum(r.replayed for r in replays)
    seconds = time.monotonic() - started
    state = "replayed" if finished.is_set() else "stopped (signal) after replaying"
    print(f"{state} {items} items from {files} files in {seconds:.2f}s "
          f"({items / max(seconds, 1e-9):,.0f} items/s)")
    print(format_totals(exporter_totals(service)))
    return 0 if ok else 1
