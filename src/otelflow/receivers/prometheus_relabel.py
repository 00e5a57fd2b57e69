"""Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`), Prometheus semantics:
regexes are fully anchored, `$1`/`${name}` in replacements, actions replace/keep/drop/labelmap/
labeldrop/labelkeep/hashmod/lowercase/uppercase/keepequal/dropequal."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from otelflow.config.types import ConfigModel

Action = Literal["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod",
                 "lowercase", "uppercase", "keepequal", "dropequal"]
_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class RelabelConfig(ConfigModel):
    source_labels: list[str] = Field(default_factory=list)
    separator: str = ";"
    regex: str = "(.*)"
    target_label: str | None = None
    replacement: str = "$1"
    modulus: int | None = None
    action: Action = "replace"
    _pattern: re.Pattern = PrivateAttr()
    _template: str = PrivateAttr()
    _target: str = PrivateAttr()

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _compile(self) -> RelabelConfig:
        needs_target = {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
        if self.action in needs_target and not self.target_label:
            raise ValueError(f"relabel action {self.action!r} needs target_label")
        if self.action == "hashmod" and not self.modulus:
            raise ValueError("relabel action 'hashmod' needs modulus")
        self._pattern = re.compile(f"^(?:{self.regex})$")
        self._template = _expansion_template(self.replacement)
        self._target = _expansion_template(self.target_label or "")
        return self


def _expansion_template(text: str) -> str:
    """Prometheus `$1` / `${name}` references as a `Match.expand` template."""
    escaped = text.replace("\\", "\\\\")
    return _GROUP_REF.sub(lambda m: f"\\g<{m.group(1) or m.group(2)}>", escaped)


def relabel(labels: dict[str, str], rules: list[RelabelConfig]) -> dict[str, str] | None:
    """Apply `rules` in order; None when a keep/drop rule removes the target or sample."""
    labels = dict(labels)
    for rule in rules:
        value = rule.separator.join(labels.get(name, "") for name in rule.source_labels)
        if not _apply(rule, labels, value):
            return None
    return labels


def _apply(rule: RelabelConfig, labels: dict[str, str], value: str) -> bool:
    action, pattern = rule.action, rule._pattern
    if action == "keep":
        return bool(pattern.match(value))
    if action == "drop":
        return not pattern.match(value)
    if action in ("keepequal", "dropequal"):
        equal = labels.get(rule.target_label or "", "") == value
        return equal if action == "keepequal" else not equal
    if action == "replace":
        match = pattern.match(value)
        if match:
            target = match.expand(rule._target)
            result = match.expand(rule._template)
            if result:
                labels[target] = result
            else:
                labels.pop(target, None)
    elif action in ("lowercase", "uppercase"):
        labels[rule.target_label or ""] = value.lower() if action == "lowercase" else value.upper()
    elif action == "hashmod":
        digest = int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big")
        labels[rule.target_label or ""] = str(digest % (rule.modulus or 1))
    elif action == "labelmap":
        for name, val in list(labels.items()):
            match = pattern.match(name)
            if match:
                labels[match.expand(rule._template)] = val
    elif action in ("labeldrop", "labelkeep"):
        for name in list(labels):
            if bool(pattern.match(name)) == (action == "labeldrop"):
                del labels[name]
    return True
