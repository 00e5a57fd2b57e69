"""`attributes` processor: insert, update, upsert, delete, hash, extract or convert attributes
of spans, log records and metric data points, as the Go collector's attributes processor.

`actions` run in order on every item that passes `include` / `exclude` (matching by service,
span name/kind, attributes, resource attributes, instrumentation library, log body/severity
or metric name, `match_type: strict|regexp`). The action engine (`ActionKeyValue`,
`AttrActions`) is shared with the `resource` processor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Callable
from typing import Annotated, Any, Literal

import re2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import BeforeValidator, Field, field_validator, model_validator

from otelflow.anyvalue import set_any
from otelflow.component import Consumer, CreateSettings, Factory, Kind, Processor
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch, Metadata, Signal, metric_points
from otelflow.processors.redaction_patterns import check_re2

ActionName = Annotated[
    Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"],
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class ActionKeyValue(ConfigModel):
    """One action, with the Go keys (`key`, `action`, `value`, `pattern`, `from_attribute`,
    `from_context`, `default_value`, `converted_type`)."""

    key: str = ""
    action: ActionName
    value: Any = None
    pattern: str = ""
    from_attribute: str = ""
    from_context: str = ""
    default_value: Any = None
    converted_type: Literal["", "int", "double", "string"] = ""

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, pattern: str) -> str:
        return check_re2(pattern) if pattern else pattern

    @model_validator(mode="after")
    def _fields_fit_action(self) -> ActionKeyValue:
        sources = [n for n in ("value", "from_attribute", "from_context")
                   if getattr(self, n) not in (None, "")]
        act = self.action
        if act in ("delete", "hash"):
            _require(bool(self.key or self.pattern), f'{act} needs "key" and/or "pattern"')
        else:
            _require(bool(self.key), f'{act} needs "key"')
        if act in ("insert", "update", "upsert"):
            _require(bool(sources) or self.default_value is not None,
                     f'{act} needs one of "value", "from_attribute", "from_context" or '
                     '"default_value"')
            _require(len(sources) <= 1, f"{act} takes one value source, got {', '.join(sources)}")
            _forbid(self, act, ("pattern", "converted_type"))
        elif act in ("delete", "hash"):
            _forbid(self, act, ("value", "from_attribute", "from_context", "default_value",
                                "converted_type"))
        elif act == "extract":
            _require(bool(self.pattern), 'extract needs "pattern" (with named groups)')
            _forbid(self, act, ("value", "from_attribute", "from_context", "default_value",
                                "converted_type"))
            compiled = re2.compile(self.pattern)
            names, groups = compiled.groupindex, compiled.groups
            _require(groups > 0, 'extract "pattern" has no named groups')
            _require(len(names) == groups, 'extract "pattern" has an unnamed group: name '
                     "every group, e.g. (?P<user>[a-z]+)")
        else:  # convert
            _require(bool(self.converted_type), 'convert needs "converted_type" '
                     "(int, double or string)")
            _forbid(self, act, ("value", "from_attribute", "from_context", "default_value",
                                "pattern"))
        return self


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _forbid(action: ActionKeyValue, name: str, fields: tuple[str, ...]) -> None:
    for f in fields:
        if getattr(action, f) not in (None, ""):
            raise ValueError(f'{name} does not use "{f}"')


class AttrMatch(ConfigModel):
    key: str = Field(min_length=1)
    value: Any = None


class LibraryMatch(ConfigModel):
    name: str = Field(min_length=1)
    version: str | None = None


class SeverityMatch(ConfigModel):
    min: int | str = 0
    match_undefined: bool = False

    @field_validator("min")
    @classmethod
    def _severity(cls, value: int | str) -> int:
        if isinstance(value, int):
            return value
        number = _SEVERITIES.get(value.upper())
        if number is None:
            raise ValueError(f"unknown severity {value!r}; valid: {', '.join(_SEVERITIES)}")
        return number


_SEVERITIES = {name: 1 + 4 * i for i, name in
               enumerate(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])}


class RegexpOptions(ConfigModel):
    cacheenabled: bool = False
    cachemaxnumentries: int = 0


class MatchProperties(ConfigModel):
    match_type: Literal["strict", "regexp"]
    regexp: RegexpOptions | None = None
    services: list[str] = Field(default_factory=list)
    span_names: list[str] = Field(default_factory=list)
    span_kinds: list[str] = Field(default_factory=list)
    log_bodies: list[str] = Field(default_factory=list)
    log_severity_texts: list[str] = Field(default_factory=list)
    log_severity_number: SeverityMatch | None = None
    metric_names: list[str] = Field(default_factory=list)
    attributes: list[AttrMatch] = Field(default_factory=list)
    resources: list[AttrMatch] = Field(default_factory=list)
    libraries: list[LibraryMatch] = Field(default_factory=list)

    @model_validator(mode="after")
    def _regexes(self) -> MatchProperties:
        if self.match_type == "regexp":
            for name in ("services", "span_names", "span_kinds", "log_bodies",
                         "log_severity_texts", "metric_names"):
                for pattern in getattr(self, name):
                    check_re2(pattern)
        return self


_SIGNAL_FIELDS = {
    Signal.TRACES: {"services", "span_names", "span_kinds", "attributes", "resources",
                    "libraries"},
    Signal.LOGS: {"log_bodies", "log_severity_texts", "log_severity_number", "attributes",
                  "resources", "libraries"},
    Signal.METRICS: {"metric_names", "resources"},
}


class AttributesConfig(ConfigModel):
    actions: list[ActionKeyValue] = Field(min_length=1)
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None


def create(settings: CreateSettings, config: AttributesConfig,
           next_consumer: Consumer) -> AttributesProcessor:
    return AttributesProcessor(settings, config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "attributes", AttributesConfig, create,
                  description="Insert, update, delete, hash, extract or convert attributes")

# -- the action engine (also used by the `resource` processor) ------------------------------


Bound = list[tuple[ActionKeyValue, Any, AnyValue | None, AnyValue | None]]


class AttrActions:
    """Applies a list of actions to attribute maps; `touch` is called before any write.

    `bind(metadata)` resolves the `from_context` sources once per batch, from the request
    metadata it carries; `apply` then runs per attribute map."""

    def __init__(self, actions: list[ActionKeyValue]):
        self.actions: Bound = [(a, re2.compile(a.pattern) if a.pattern else None,
                                _to_any(a.value), _to_any(a.default_value)) for a in actions]
        self._contextual = any(a.from_context for a in actions)

    def bind(self, metadata: Metadata | None) -> Bound:
        """The actions with each `from_context` source's value for a batch carrying
        `metadata` (None where it has none: the action falls back to `default_value`)."""
        if not self._contextual:
            return self.actions
        return [(a, regex, context_value(metadata, a.from_context) if a.from_context else value,
                 default) for a, regex, value, default in self.actions]

    def apply(self, kvs: Any, touch: Callable[[], None], bound: Bound | None = None) -> None:
        for action, regex, value, default in bound if bound is not None else self.actions:
            _APPLY[action.action](kvs, action, regex, value, default, touch)


def context_value(metadata: Metadata | None, key: str) -> AnyValue | None:
    """A `from_context` source as Go's attraction reads it: `metadata.<key>` (or a bare key)
    is that request metadata key, several values joined with `;`. `auth.*` and
    `client.address` are not recorded here, so they are never found."""
    if metadata is None or key == "client.address" or key.startswith("auth."):
        return None
    values = metadata.values_of(key.removeprefix("metadata."))
    return AnyValue(string_value=";".join(values)) if values else None


def _to_any(raw: Any) -> AnyValue | None:
    if raw is None:
        return None
    value = AnyValue()
    set_any(value, raw)
    return value


def _find(kvs: Any, key: str) -> Any:
    for kv in kvs:
        if kv.key == key:
            return kv
    return None


def _source(kvs: Any, action: ActionKeyValue, value: AnyValue | None,
            default: AnyValue | None) -> AnyValue | None:
    """`value` is the configured value, or the bound `from_context` value (see `bind`)."""
    if value is not None:
        return value
    if action.from_attribute:
        found = _find(kvs, action.from_attribute)
        if found is not None:
            return found.value
    return default


def _insert(kvs, action, _regex, value, default, touch) -> None:
    source = _source(kvs, action, value, default)
    if source is not None and _find(kvs, action.key) is None:
        touch()
        kvs.add(key=action.key).value.CopyFrom(source)


def _update(kvs, action, _regex, value, default, touch) -> None:
    source = _source(kvs, action, value, default)
    found = _find(kvs, action.key)
    if source is not None and found is not None:
        touch()
        found.value.CopyFrom(source)


def _upsert(kvs, action, _regex, value, default, touch) -> None:
    source = _source(kvs, action, value, default)
    if source is None:
        return
    touch()
    found = _find(kvs, action.key)
    (found.value if found is not None else kvs.add(key=action.key).value).CopyFrom(source)


def _matching(kvs, action, regex) -> list[int]:
    return [i for i, kv in enumerate(kvs)
            if kv.key == action.key or (regex is not None and regex.search(kv.key))]


def _delete(kvs, action, regex, _value, _default, touch) -> None:
    doomed = _matching(kvs, action, regex)
    if doomed:
        touch()
        for i in reversed(doomed):
            del kvs[i]


def _hash(kvs, action, regex, _value, _default, touch) -> None:
    for i in _matching(kvs, action, regex):
        touch()
        sha256_value(kvs[i].value)


def sha256_value(value: AnyValue) -> None:
    """Go's attraction hasher: SHA-256 hex of the string / 1-byte bool / little-endian int64
    or float64 bits; other types become an empty string."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        data = value.string_value.encode()
    elif kind == "bool_value":
        data = b"\x01" if value.bool_value else b"\x00"
    elif kind == "int_value":
        data = struct.pack("<q", value.int_value)
    elif kind == "double_value":
        data = struct.pack("<d", value.double_value)
    else:
        data = b""
    value.string_value = hashlib.sha256(data).hexdigest() if data else ""


def _extract(kvs, action, regex, _value, _default, touch) -> None:
    found = _find(kvs, action.key)
    if found is None or found.value.WhichOneof("value") != "string_value":
        return
    match = regex.search(found.value.string_value)
    if match is None:
        return
    touch()
    for name, text in match.groupdict().items():
        target = _find(kvs, name)
        (target.value if target is not None else kvs.add(key=name).value).string_value = (
            text or "")


def _convert(kvs, action, _regex, _value, _default, touch) -> None:
    found = _find(kvs, action.key)
    if found is not None:
        converted = convert_value(found.value, action.converted_type)
        if converted is not None:
            touch()
            found.value.CopyFrom(converted)


def convert_value(value: AnyValue, to: str) -> AnyValue | None:
    """The converted value as Go's convertValue does it, or None when it stays as it is."""
    kind = value.WhichOneof("value")
    out = AnyValue()
    if to == "string":
        if kind == "string_value":
            return None
        out.string_value = _as_string(value, kind)
    elif to == "int":
        number = _to_number(value, kind, int)
        if number is None:
            return None
        out.int_value = number
    else:
        number = _to_number(value, kind, float)
        if number is None:
            return None
        out.double_value = number
    return out if out != value else None


def _to_number(value: AnyValue, kind: str | None, cast: type) -> Any:
    if kind == "int_value":
        return cast(value.int_value)
    if kind == "double_value":
        d = value.double_value
        return cast(d) if cast is float or math.isfinite(d) else None
    if kind == "bool_value":
        return cast(1 if value.bool_value else 0)
    if kind == "string_value":
        try:
            return cast(value.string_value.strip())
        except ValueError:
            return None
    return None


def _as_string(value: AnyValue, kind: str | None) -> str:
    """Go's Value.AsString: bools lower-case, bytes base64, maps and slices as JSON."""
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind in ("kvlist_value", "array_value"):
        return json.dumps(_raw(value), separators=(",", ":"))
    return str(getattr(value, kind)) if kind else ""


def _raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


_APPLY = {"insert": _insert, "update": _update, "upsert": _upsert, "delete": _delete,
          "hash": _hash, "extract": _extract, "convert": _convert}

# -- include / exclude -------------------------------------------------------------------------


class Matcher:
    """One `include` or `exclude` block, compiled for a signal."""

    def __init__(self, props: MatchProperties, signal: Signal, where: str):
        allowed = _SIGNAL_FIELDS[signal]
        used = {name for name in MatchProperties.model_fields
                if name not in ("match_type", "regexp") and getattr(props, name)}
        if not used:
            raise ValueError(f"{where}: give at least one of {', '.join(sorted(allowed))}")
        wrong = used - allowed
        if wrong:
            raise ValueError(f"{where}: {', '.join(sorted(wrong))} cannot be used with "
                             f"{signal.value}; valid: {', '.join(sorted(allowed))}")
        self.props = props
        self.regexp = props.match_type == "regexp"
        self._compiled: dict[str, Any] = {}

    def _text(self, patterns: list[str], text: str) -> bool:
        if not self.regexp:
            return text in patterns
        return any(self._rx(p).search(text) for p in patterns)

    def _rx(self, pattern: str) -> Any:
        rx = self._compiled.get(pattern)
        if rx is None:
            rx = self._compiled[pattern] = re2.compile(pattern)
        return rx

    def _attrs(self, kvs: Any, wanted: list[AttrMatch], every: bool) -> bool:
        results = (self._attr(kvs, m) for m in wanted)
        return all(results) if every else any(results)

    def _attr(self, kvs: Any, wanted: AttrMatch) -> bool:
        found = _find(kvs, wanted.key)
        if found is None:
            return False
        if wanted.value is None:
            return True
        if self.regexp:
            return (found.value.WhichOneof("value") == "string_value"
                    and bool(self._rx(str(wanted.value)).search(found.value.string_value)))
        return found.value == _to_any(wanted.value)

    def group_matches(self, resource: Any, scope: Any) -> bool:
        """The resource- and scope-level conditions (checked once per scope group)."""
        p = self.props
        if p.services and not self._text(p.services, _service(resource)):
            return False
        if p.resources and not self._attrs(resource.attributes, p.resources, every=False):
            return False
        return not p.libraries or any(
            scope.name == lib.name and (lib.version is None or scope.version == lib.version)
            for lib in p.libraries)

    def item_matches(self, item: Any, signal: Signal) -> bool:
        """The item-level conditions."""
        p = self.props
        if p.attributes and not self._attrs(item.attributes, p.attributes, every=True):
            return False
        if signal is Signal.TRACES:
            return self._span(item)
        if signal is Signal.LOGS:
            return self._log(item)
        return not p.metric_names or self._text(p.metric_names, item.name)

    def _span(self, span: Any) -> bool:
        p = self.props
        if p.span_names and not self._text(p.span_names, span.name):
            return False
        if p.span_kinds:
            kinds = {_kind_name(k) for k in p.span_kinds}
            return _KINDS[span.kind] in kinds
        return True

    def _log(self, record: Any) -> bool:
        p = self.props
        if p.log_bodies and not (record.body.WhichOneof("value") == "string_value"
                                 and self._text(p.log_bodies, record.body.string_value)):
            return False
        if p.log_severity_texts and not self._text(p.log_severity_texts, record.severity_text):
            return False
        severity = p.log_severity_number
        if severity is not None:
            if record.severity_number == 0:
                return severity.match_undefined
            return record.severity_number >= severity.min
        return True


_KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"]


def _kind_name(kind: str) -> str:
    """SPAN_KIND_SERVER, Server and server all name the same kind."""
    return kind.lower().removeprefix("span_kind_")


def _service(resource: Any) -> str:
    found = _find(resource.attributes, "service.name")
    return found.value.string_value if found is not None else ""


# -- the processor ---------------------------------------------------------------------------


class AttributesProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: AttributesConfig,
                 next_consumer: Consumer):
        super().__init__(next_consumer)
        self.signal = settings.signal or Signal.TRACES
        self.actions = AttrActions(config.actions)
        self.include = Matcher(config.include, self.signal, "include") if config.include else None
        self.exclude = Matcher(config.exclude, self.signal, "exclude") if config.exclude else None

    async def consume(self, batch: Batch) -> None:
        self.process(batch)
        await self.next_consumer.consume(batch)

    def process(self, batch: Batch) -> None:
        sig = batch.signal
        touch = Toucher(batch)
        bound = self.actions.bind(batch.metadata)
        include, exclude = self.include, self.exclude
        for rx in getattr(batch.message, sig.resource_field):
            for sx in getattr(rx, sig.scope_field):
                if include and not include.group_matches(rx.resource, sx.scope):
                    continue
                excluding = exclude is not None and exclude.group_matches(rx.resource, sx.scope)
                for item in getattr(sx, sig.item_field):
                    if include and not include.item_matches(item, sig):
                        continue
                    if excluding and exclude.item_matches(item, sig):
                        continue
                    self._apply(item, sig, touch, bound)

    def _apply(self, item: Any, signal: Signal, touch: Callable[[], None], bound: Bound) -> None:
        if signal is Signal.METRICS:
            for point in metric_points(item):
                self.actions.apply(point.attributes, touch, bound)
        else:
            self.actions.apply(item.attributes, touch, bound)


class Toucher:
    """Calls `batch.mutable()` once, before the first write."""

    __slots__ = ("batch", "done")

    def __init__(self, batch: Batch):
        self.batch = batch
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.batch.mutable()
            self.done = True
