"""Read pipeline YAML files: syntax errors with line numbers, `${env:VAR}` expansion, merging."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from otelflow.config.errors import ConfigError, ConfigErrors

_ENV = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_CONFIG = "default.yaml"


def default_config_text() -> str:
    """The embedded default pipeline (a copy of config/default.yaml shipped in the package)."""
    return resources.files("otelflow").joinpath(DEFAULT_CONFIG).read_text()


def load_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        error = ConfigError("", f"YAML syntax error at {line}{problem}", source)
        raise ConfigErrors([error]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "the top level must be a mapping", source)])
    return data


def expand_env(value: Any, env: Mapping[str, str], path: list[str | int], errors: list) -> Any:
    """Expand `${env:VAR}`, `${env:VAR:-default}` and `${VAR}` in every string; `$$` is `$`.

    A string that is exactly one reference takes the YAML type of the value (ports stay ints).
    """
    if isinstance(value, dict):
        return {k: expand_env(v, env, [*path, k], errors) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, [*path, i], errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append((path, f"environment variable {name!r} is not set and has no default"))
        return ""

    expanded = _ENV.sub(substitute, value)
    whole = _ENV.fullmatch(value)
    if whole and whole.group(0) != "$$" and expanded.strip():
        try:
            typed = yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
        if isinstance(typed, int | float | bool):
            return typed
    return expanded


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge maps, later wins; lists and scalars are replaced (as the Go collector)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(
    paths: Sequence[str | Path] | None = None,
    env: Mapping[str, str] | None = None,
    text: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Load, merge and env-expand config files (or `text`, or the embedded default).

    Returns the raw merged mapping and a name for error messages.
    """
    env = os.environ if env is None else env
    if text is not None:
        sources = [("<config>", text)]
    elif paths:
        sources = []
        for p in paths:
            try:
                sources.append((str(p), Path(p).read_text()))
            except OSError as exc:
                error = ConfigError("", f"cannot read config: {exc.strerror}", str(p))
                raise ConfigErrors([error]) from None
    else:
        sources = [(f"<embedded {DEFAULT_CONFIG}>", default_config_text())]
    merged: dict[str, Any] = {}
    for source, body in sources:
        merged = merge(merged, load_yaml(body, source))
    name = ", ".join(s for s, _ in sources)
    problems: list = []
    expanded = expand_env(merged, env, [], problems)
    if problems:
        raise ConfigErrors([ConfigError(p, m, name) for p, m in problems])
    return expanded, name
