"""Config errors that name the file, the key path, the problem and the valid choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from pydantic import ValidationError


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean "x"?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def choices_text(choices: Iterable[str]) -> str:
    return ", ".join(sorted(str(c) for c in choices)) or "none"


def format_path(parts: Sequence[str | int]) -> str:
    """('processors', 'x', 'policies', 2, 'type') -> processors.x.policies[2].type"""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class ConfigError(Exception):
    """One problem at one key path."""

    def __init__(self, path: Sequence[str | int] | str, message: str, file: str | None = None):
        self.path = path if isinstance(path, str) else format_path(path)
        self.message = message
        self.file = file
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        at = f"{self.path}: " if self.path else ""
        return f"{where}{at}{self.message}"


class ConfigErrors(Exception):
    """Every problem found in one pass, so a user fixes them all at once."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return f"invalid configuration: {self.errors[0]}"
        lines = "\n".join(f"  - {e}" for e in self.errors)
        return f"invalid configuration ({len(self.errors)} errors):\n{lines}"


def from_validation_error(
    exc: ValidationError, prefix: Sequence[str | int], model: type, file: str | None
) -> list[ConfigError]:
    """Translate pydantic errors into path-named ConfigErrors with choices and did-you-mean."""
    errors = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p))]
        path = [*prefix, *loc]
        etype = err["type"]
        if etype == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            msg = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), valid)}; valid keys: " + (
                choices_text(valid)
            )
        elif etype == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"invalid value {err.get('input')!r}{_dym_literal(err)}; valid choices: {expected}"
        elif etype == "missing":
            msg = "required key is missing"
        elif etype == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tag = ctx.get("tag")
            expected = ctx.get("expected_tags", "")
            dym = did_you_mean(str(tag), [t.strip(" '") for t in str(expected).split(",")])
            msg = f"unknown type {tag!r}{dym}; valid choices: {expected}"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if "input" in err and etype not in ("value_error", "assertion_error"):
                got = "<redacted>" if is_secret_path(loc) else repr(err["input"])
                msg = f"{msg} (got {got})"
        errors.append(ConfigError(path, msg, file))
    return errors


SECRET_KEYS = frozenset({"token", "tokens", "password", "secret", "headers", "api_key",
                         "client_secret", "bearer_token"})


def is_secret_path(loc: Sequence[str | int]) -> bool:
    """True when a key path goes through a key that holds credentials (values never shown)."""
    return any(isinstance(part, str) and part.lower() in SECRET_KEYS for part in loc)


def _is_union_tag(part: str) -> bool:
    # pydantic inserts the tag or function name into loc for tagged unions / validators
    return part.startswith("function-") or "[" in part


def _dym_literal(err: dict) -> str:
    expected = str(err.get("ctx", {}).get("expected", ""))
    choices = [c.strip(" '\"") for c in expected.replace(" or ", ",").split(",")]
    return did_you_mean(str(err.get("input")), choices)


def _fields_at(model: type, loc: Sequence[str | int]) -> list[str]:
    """Field names (and aliases) of the nested model at `loc`, best effort."""
    current = model
    for part in loc:
        if isinstance(part, int) or not hasattr(current, "model_fields"):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        current = _model_of(field.annotation)
    if not hasattr(current, "model_fields"):
        return []
    names = []
    for name, field in current.model_fields.items():
        names.append(field.alias or name)
    return names


def _model_of(annotation: object) -> object:
    """The BaseModel inside Optional[...] / list[...] / dict[str, ...] annotations."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if hasattr(found, "model_fields"):
            return found
    return annotation
