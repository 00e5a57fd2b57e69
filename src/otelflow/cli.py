"""`otelflow run | validate | replay | record | components`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from otelflow import record, replay
from otelflow.component import Kind
from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config, with_workers
from otelflow.registry import Registry, UnknownComponentType


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the collector"), ("validate", "check a config and exit")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", action="append", metavar="FILE",
                       help="pipeline YAML; repeat to merge (later wins). "
                            "Default: the embedded config/default.yaml")
        if name == "run":
            p.add_argument("--watch", action="store_true",
                           help="reload when a config file changes (SIGHUP always reloads)")
            p.add_argument("--workers", type=int, metavar="N",
                           help="worker processes sharing the ports (overrides service.workers)")
    sub.add_parser("components", help="list every component type and its signals")
    replay.add_parser(sub)
    record.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "components":
        return list_components(Registry())
    if args.command in ("replay", "record"):
        return (replay if args.command == "replay" else record).main(args)
    try:
        raw, source = load_config(args.config)
        config = parse_config(with_workers(raw, getattr(args, "workers", None)), source)
    except ConfigErrors as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return 1
    if args.command == "validate":
        print(f"{source}: configuration is valid ({len(config.pipelines)} pipelines)")
        return 0
    return run(config, args.config, args.watch, args.workers)


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


def run(config, paths=None, watch: bool = False, workers: int | None = None) -> int:
    """Serve `config`; with workers > 1 (and not a worker already) supervise worker processes."""
    from otelflow.pipeline.affinity import WorkerSlot
    from otelflow.telemetry.logs import configure_logging

    logs = config.telemetry.logs
    configure_logging(logs.level, logs.encoding)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from otelflow.pipeline.runner import serve

    if config.workers > 1 and WorkerSlot.from_env() is None:
        from otelflow.pipeline.workers import supervise

        args = [a for path in paths or () for a in ("--config", path)]
        args += ["--workers", str(config.workers)] + (["--watch"] if watch else [])
        try:
            return supervise(config, args)
        except KeyboardInterrupt:
            return 0
    try:
        return asyncio.run(serve(config, paths, watch, workers))
    except KeyboardInterrupt:
        return 0
