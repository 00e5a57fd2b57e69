"""`otelflow record --config F --out DIR`: capture what the config's receivers get, per signal,
as fixtures (DIR/traces.jsonl, metrics.jsonl, logs.jsonl; or .binpb with `--format proto`).

The config's receivers (and extensions) run unchanged; its processors and exporters are
replaced by one `file` exporter per signal, which writes the requests as received, so
timestamps, ids and grouping are preserved. Stops on SIGTERM/SIGINT or after `--duration`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from otelflow.config import ConfigErrors, load_config
from otelflow.config.service import parse_config
from otelflow.config.types import parse_duration
from otelflow.pdata import Signal
from otelflow.replay import run_service
from otelflow.telemetry.summary import exporter_totals

SUFFIX = {"json": ".jsonl", "proto": ".binpb"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("record", help="capture what the receivers get into fixture files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", metavar="FILE", required=True,
                   help="pipeline YAML whose receivers to record; repeat to merge")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for <signal> files")
    p.add_argument("--format", choices=tuple(SUFFIX), default="json",
                   help="json: OTLP/JSON lines (default); proto: length-prefixed protobuf")
    p.add_argument("--duration", type=_duration, default=None,
                   help="stop after this long (e.g. 30s); default: until SIGTERM/SIGINT")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(args: argparse.Namespace) -> int:
    try:
        raw, source = load_config(args.config)
        outputs = recording_config(raw, Path(args.out), args.format)
        config = parse_config(raw, source)
    except (ConfigErrors, ValueError) as exc:
        print(f"otelflow: {exc}", file=sys.stderr)
        return 1
    from otelflow.telemetry.logs import configure_logging

    configure_logging(config.telemetry.logs.level, config.telemetry.logs.encoding)
    return asyncio.run(_record(config, outputs, args.duration))


def recording_config(raw: dict[str, Any], out: Path, fmt: str) -> dict[Signal, Path]:
    """Rewrite `raw` in place: per signal, one pipeline from all of that signal's receivers
    to a file exporter. Returns the file each signal is written to."""
    service = raw.get("service")
    pipelines = service.get("pipelines") if isinstance(service, dict) else None
    if not isinstance(pipelines, dict) or not pipelines:
        raise ValueError("record: the config defines no service.pipelines to take receivers from")
    receivers: dict[Signal, list[str]] = {}
    for pid, body in pipelines.items():
        signal_name = str(pid).partition("/")[0]
        if signal_name in {s.value for s in Signal} and isinstance(body, dict):
            ids = receivers.setdefault(Signal(signal_name), [])
            ids += [r for r in body.get("receivers") or [] if r not in ids]
    outputs = {signal: out / f"{signal.value}{SUFFIX[fmt]}" for signal in receivers}
    raw["processors"] = {}
    raw["exporters"] = {f"file/{s.value}": {"path": str(p), "format": fmt} for s, p in outputs.items()}
    service["pipelines"] = {s.value: {"receivers": ids, "exporters": [f"file/{s.value}"]}
                            for s, ids in receivers.items()}
    return outputs


async def _record(config, outputs: dict[Signal, Path], duration: float | None) -> int:
    from otelflow.pipeline.service import Service

    service = Service(config)
    until = [lambda: asyncio.sleep(duration)] if duration else []
    print(f"otelflow record: recording {', '.join(s.value for s in outputs)} "
          f"(stop with Ctrl-C or SIGTERM)", file=sys.stderr, flush=True)
    ok = await run_service(service, until)
    for row in exporter_totals(service):
        print(f"recorded {row.sent} {row.signal.item_unit} to {outputs[row.signal]}")
    return 0 if ok else 1
