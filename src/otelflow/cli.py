"""`otelflow run | validate | components`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.registry import Registry, UnknownComponentType


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the collector"), ("validate", "check a config and exit")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", action="append", metavar="FILE",
                       help="pipeline YAML; repeat to merge (later wins). "
                            "Default: the embedded config/default.yaml")
    sub.add_parser("components", help="list every component type and its signals")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "components":
        return list_components(Registry())
    try:
        raw, source = load_config(args.config)
        config = parse_config(raw, source)
    except ConfigErrors as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return 1
    if args.command == "validate":
        print(f"{source}: configuration is valid ({len(config.pipelines)} pipelines)")
        return 0
    return run(config)


def list_components(registry: Registry) -> int:
    for kind in Kind:
        print(f"{kind.section}:")
        for name in registry.types(kind):
            try:
                factory = registry.get(kind, name)
            except (ImportError, UnknownComponentType) as exc:
                print(f"  {name:<24} (unavailable: {exc})")
                continue
            signals = ",".join(sorted(s.value for s in factory.signals)) if kind != Kind.EXTENSION else "-"
            print(f"  {name:<24} {signals:<22} {factory.description}")
    return 0


def run(config) -> int:
    from otelflow.telemetry.logs import configure_logging

    logs = config.telemetry.logs
    configure_logging(logs.level, logs.encoding)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 0


async def _serve(config) -> int:
    import structlog

    from otelflow.pipeline.service import Service

    log = structlog.get_logger("otelflow")
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except Exception as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return 1
    fatal = asyncio.ensure_future(service.wait_fatal())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([fatal, waiter], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await service.shutdown()
    waiter.cancel()
    if fatal.done():
        return 1
    fatal.cancel()
    return 0
