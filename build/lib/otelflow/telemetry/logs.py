"""structlog set-up: JSON lines by default, console rendering when attached to a TTY."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", encoding: str | None = None) -> None:
    """Configure structlog for the process (the CLI calls this once at start)."""
    if encoding is None:
        encoding = "console" if sys.stderr.isatty() else "json"
    renderer = (structlog.dev.ConsoleRenderer() if encoding == "console"
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def component_logger(kind: str, component_id: str, **extra) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("otelflow").bind(kind=kind, name=component_id, **extra)
