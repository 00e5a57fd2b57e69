"""`redaction` processor: removes attributes that are not allowed and masks sensitive values.

Keys and semantics follow the Go collector's redaction processor (`allow_all_keys`,
`allowed_keys` failing closed when empty, `ignored_keys`, `blocked_key_patterns`,
`blocked_values`, `allowed_values`, `hash_function`, `summary`, ...), applied to every place a
value can hide: resource and scope attributes; span attributes, event names and attributes,
link attributes, status messages and (opt-in) span names; log attributes and bodies; metric
data point and exemplar attributes. Nested kvlist/array values are walked with the same rules.
`value_patterns` names built-in patterns (see `redaction_patterns.LIBRARY`).

Speed: every value pattern, blocked key pattern and ignored key is relaxed into one RE2
alternation that runs once over the serialized request. Nothing matched and every key
allowed: the batch passes untouched, its received bytes reusable. Otherwise a walk of the
protobuf framing finds the resources, scopes, items and item fields the matches fall in, and
only those are visited from Python; `batch.mutable()` is called on the first actual change,
and when a few items changed they are re-encoded and spliced into the received bytes.
Allow-list mode (`allow_all_keys: false`) visits every key; `redact_all_types` and the URL
sanitizer on span names / log bodies check every value (no byte pattern can announce them).
When the first prefilter matches come thick enough to flag a quarter of the items or more,
the request takes the dense path instead (`redaction_dense`): exact matches over the whole
request, one RE2 call per match, mapped to the string values they fall in.

Logs and spans go first to the native masker (`otelflow._redact`, C++ over RE2) unless the
config needs an allow-list, the URL sanitizer or `redact_all_types`: it does the walk above
over the request bytes and hands back, by index, the items, resources and scopes it leaves
to the Python walk. The paths above stay the reference: the tests hold it to their output.
"""

from __future__ import annotations

import hashlib
import hmac
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

import re2
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import Field, SecretStr, field_validator, model_validator

from otelflow.component import Consumer, CreateSettings, Factory, Kind, Processor
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch, Signal, metric_points
from otelflow.processors.redaction_dense import DenseScanner, ItemId, Leaf, Plan, item_layouts
from otelflow.processors.redaction_patterns import (
    GROUPS,
    LIBRARY,
    NATIVE_REFINES,
    PatternSet,
    Regex,
    ValuePattern,
    any_of,
    check_re2,
    expand,
    relax,
    sanitize_url,
)
from otelflow.wire import field_at, read_varint, varint

try:
    from otelflow._redact import Redactor
except ImportError:  # built without RE2's headers (see setup.py): the Python paths do it all
    Redactor = None

PatternName = Literal[tuple(sorted(LIBRARY)) + tuple(GROUPS)]  # type: ignore[valid-type]
HashFunction = Literal["", "md5", "sha1", "sha3", "hmac-sha256", "hmac-sha512"]
_HMAC_MIN_KEY = {"hmac-sha256": 32, "hmac-sha512": 64}


class URLSanitizerConfig(ConfigModel):
    enabled: bool = False
    attributes: list[str] = Field(default_factory=list)
    sanitize_span_name: bool = True
    sanitize_log_body: bool = False


class RedactionConfig(ConfigModel):
    allow_all_keys: bool = False
    allowed_keys: list[str] = Field(default_factory=list)
    ignored_keys: list[str] = Field(default_factory=list)
    ignored_key_patterns: list[str] = Field(default_factory=list)
    blocked_key_patterns: list[str] = Field(default_factory=list)
    blocked_values: list[str] = Field(default_factory=list)
    allowed_values: list[str] = Field(default_factory=list)
    value_patterns: list[PatternName] = Field(default_factory=list)
    redact_all_types: bool = False
    redact_span_names: bool = False
    hash_function: HashFunction = ""
    hmac_key: SecretStr = SecretStr("")
    summary: Literal["debug", "info", "silent"] = "silent"
    url_sanitizer: URLSanitizerConfig = Field(default_factory=URLSanitizerConfig)

    @field_validator("ignored_key_patterns", "blocked_key_patterns", "blocked_values",
                     "allowed_values")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                check_re2(pattern)
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _hmac(self) -> RedactionConfig:
        key = self.hmac_key.get_secret_value()
        minimum = _HMAC_MIN_KEY.get(self.hash_function)
        if minimum is not None and len(key.encode()) < minimum:
            raise ValueError(f"hash_function {self.hash_function} needs hmac_key of at least "
                             f"{minimum} bytes (got {len(key.encode())})")
        if minimum is None and key:
            raise ValueError("hmac_key is set but hash_function is not hmac-sha256 or "
                             "hmac-sha512")
        return self


def create(settings: CreateSettings, config: RedactionConfig,
           next_consumer: Consumer) -> RedactionProcessor:
    return RedactionProcessor(settings, config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "redaction", RedactionConfig, create,
                  description="Remove disallowed attributes and mask sensitive values")

# -- rules: what to do with one key or one string -----------------------------------------

CHECK, IGNORE, REDACT, MASK, SUMMARY = range(5)
MASK_TEXT = "****"
_ATTR_SUMMARY = ("redaction.redacted.keys", "redaction.redacted.count",
                 "redaction.masked.keys", "redaction.masked.count",
                 "redaction.allowed.keys", "redaction.allowed.count", "redaction.ignored.count")
_BODY_SUMMARY = tuple(k.replace("redaction.", "redaction.body.") for k in _ATTR_SUMMARY)
SUMMARY_KEYS = frozenset(_ATTR_SUMMARY + _BODY_SUMMARY)
_KEY_CACHE_MAX = 65536
# The dense path takes a request when its first DENSE_AFTER prefilter matches, spread at that
# pace over the whole request, would flag at least DENSE_SHARE of its items.
DENSE_AFTER = 16
DENSE_SHARE = 0.25
_URL_SPAN_KINDS = (2, 3)  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
_NATIVE_SIGNALS = (Signal.LOGS, Signal.TRACES)


def _relaxed(patterns: list[str]) -> str | None:
    """One alternation of the relaxed `patterns` (None for none)."""
    return "|".join(f"(?:{relax(p)})" for p in patterns) or None


def _masker(config: RedactionConfig) -> Callable[[str], str]:
    """Replace a matched string: `****`, or the hex digest of the configured hash function."""
    name = config.hash_function
    if not name:
        return lambda _text: MASK_TEXT
    if name.startswith("hmac-"):
        key = config.hmac_key.get_secret_value().encode()
        digest = hashlib.sha256 if name == "hmac-sha256" else hashlib.sha512
        return lambda text: hmac.new(key, text.encode(), digest).hexdigest()
    algorithm = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha3": hashlib.sha3_256}[name]
    return lambda text: algorithm(text.encode()).hexdigest()


class Rules:
    """Key decisions (cached per key) and value masking, compiled once from the config."""

    def __init__(self, config: RedactionConfig):
        self.allow_all = config.allow_all_keys
        self.allowed = frozenset(config.allowed_keys)
        self.ignored = frozenset(config.ignored_keys)
        self.ignored_rx = any_of(config.ignored_key_patterns)
        self.blocked_key_rx = any_of(config.blocked_key_patterns)
        custom = [ValuePattern(f"blocked_values[{i}]", p, "user pattern")
                  for i, p in enumerate(config.blocked_values)]
        self.patterns = [(p, Regex(p.regex, longest=True, groups=p.group > 0))
                         for p in expand(list(config.value_patterns)) + custom]
        self.value_set = PatternSet([p.regex for p, _ in self.patterns]) if self.patterns else None
        self.allowed_rxs = [Regex(p, longest=True) for p in config.allowed_values]
        self.all_types = config.redact_all_types
        self.mask = _masker(config)
        self.fixed_mask = None if config.hash_function else MASK_TEXT
        self._keys: dict[str, int] = {}

    def key_action(self, key: str) -> int:
        action = self._keys.get(key)
        if action is None:
            action = self._decide(key)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key] = action
        return action

    def _decide(self, key: str) -> int:
        if key in self.ignored or (self.ignored_rx and self.ignored_rx.search(key)):
            return IGNORE
        if key in SUMMARY_KEYS:
            return SUMMARY
        if not self.allow_all and key not in self.allowed:
            return REDACT
        if self.blocked_key_rx and self.blocked_key_rx.search(key):
            return MASK
        return CHECK

    def mask_text(self, text: str) -> tuple[str, bool]:
        """(`text` with every blocked match masked, whether allowed_values exempted a match)."""
        if not text or self.value_set is None:
            return text, False
        which = self.value_set.match(text)
        if not which:
            return text, False
        patterns = self.patterns
        return self.apply(text, [s for i in which for s in patterns[i][0].spans(patterns[i][1], text)])

    def apply(self, text: str, spans: list[tuple[int, int]]) -> tuple[str, bool]:
        """`mask_text` for the (unsorted, possibly overlapping) spans of `text` to mask."""
        if len(spans) > 1:
            spans = sorted(spans)
            if len(spans) > 2 or spans[1][0] <= spans[0][1]:
                spans = _merge(spans)
        exempted = False
        if spans and self.allowed_rxs:
            allowed = self._allowed_spans(text)
            kept = [s for s in spans if not any(a <= s[0] and s[1] <= b for a, b in allowed)]
            exempted = len(kept) < len(spans)
            spans = kept
        if not spans:
            return text, exempted
        if self.fixed_mask is not None and len(spans) <= 2:  # the usual case, spelled out
            (a, b), fixed = spans[0], self.fixed_mask
            if len(spans) == 1:
                return text[:a] + fixed + text[b:], exempted
            c, d = spans[1]
            return text[:a] + fixed + text[b:c] + fixed + text[d:], exempted
        mask, parts, pos = self.mask, [], 0
        for start, end in spans:
            parts += (text[pos:start], mask(text[start:end]))
            pos = end
        parts.append(text[pos:])
        return "".join(parts), exempted

    def allows_whole(self, text: str) -> bool:
        """True when an allowed_values match covers all of `text` (a blocked key is kept)."""
        return any(a == 0 and b == len(text) for a, b in self._allowed_spans(text))

    def _allowed_spans(self, text: str) -> list[tuple[int, int]]:
        return [span for rx in self.allowed_rxs for span in rx.spans(text)]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _as_string(value: Any, kind: str) -> str:
    """Go's AsString for scalars (bools lower-case)."""
    raw = getattr(value, kind)
    if kind == "bool_value":
        return "true" if raw else "false"
    return str(raw)


# -- locating prefilter hits in the serialized request -------------------------------------


Bounds = tuple[int, int, int]  # (field header start, value start, value end)


@dataclass
class ScopeHits:
    bounds: Bounds
    scope: bool = False
    items: dict[int, Bounds] = field(default_factory=dict)  # item index -> bounds


@dataclass
class ResourceHits:
    bounds: Bounds
    resource: bool = False
    scopes: dict[int, ScopeHits] = field(default_factory=dict)


def _len_fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, Bounds]]:
    """(field number, bounds) of each length-delimited field in buf[start:end]."""
    i = start
    while i < end:
        h = i
        number, wire, a, i = field_at(buf, i)
        if wire == 2:
            yield number, (h, a, i)


class _Overlap:
    """Answers "does any match touch buf[a:b]?" for sorted, non-overlapping matches."""

    def __init__(self, spans: list[tuple[int, int]]):
        self.starts = [s for s, _ in spans]
        self.ends = [max(e, s + 1) for s, e in spans]

    def __call__(self, a: int, b: int) -> bool:
        k = bisect_right(self.ends, a)
        return k < len(self.starts) and self.starts[k] < b


@dataclass
class Located:
    """Where in a serialized request the prefilter matched."""

    blob: bytes
    hit: _Overlap
    resources: dict[int, ResourceHits]

    def children(self, bounds: Bounds) -> dict[int, set[int]]:
        """For one item record: field number -> indices (per field) of the hit child fields."""
        return {number: set(hit) for number, hit in
                _hit_fields(self.blob, bounds[1], bounds[2], self.hit).items()}


def locate(blob: bytes, spans: list[tuple[int, int]]) -> Located:
    """Which resources, scopes and items (by index) the match spans fall in.

    The three OTLP requests share one layout: request.1 = resource_X, resource_X.1 = resource,
    resource_X.2 = scope_X, scope_X.1 = scope, scope_X.2 = items.
    """
    hit = _Overlap(spans)
    out: dict[int, ResourceHits] = {}
    ri = -1
    for number, bounds in _len_fields(blob, 0, len(blob)):
        if number != 1:
            continue
        ri += 1
        if not hit(bounds[1], bounds[2]):
            continue
        res = out[ri] = ResourceHits(bounds)
        si = -1
        for inner, (h, c, d) in _len_fields(blob, bounds[1], bounds[2]):
            if inner == 1:
                res.resource = res.resource or hit(c, d)
            elif inner == 2:
                si += 1
                if hit(c, d):
                    fields = _hit_fields(blob, c, d, hit)
                    res.scopes[si] = ScopeHits((h, c, d), 1 in fields, fields.get(2, {}))
    return Located(blob, hit, out)


def _hit_fields(buf: bytes, start: int, end: int, hit: _Overlap) -> dict[int, dict[int, Bounds]]:
    """The length-delimited fields of buf[start:end] that a match touches: field number ->
    {occurrence index: bounds}. This is the hot loop of `locate` (it steps over every item
    record up to the last match), hence the inlined one-byte tags and one- or two-byte
    lengths, the pointer walk over the sorted matches and the stop after the last match."""
    starts, ends = hit.starts, hit.ends
    j = bisect_right(ends, start)  # the first match ending after `start`
    last = bisect_right(starts, end - 1) - 1
    if j > last:
        return {}
    limit = min(end, ends[last])  # no field from here on is touched
    next_start = starts[j]
    seen: dict[int, int] = {}
    out: dict[int, dict[int, Bounds]] = {}
    i = start
    while i < limit:
        h, tag = i, buf[i]
        if tag < 0x80 and tag & 7 == 2:
            n = buf[i + 1]
            if n < 0x80:
                a = i + 2
            elif buf[i + 2] < 0x80:
                n, a = (n & 0x7F) | (buf[i + 2] << 7), i + 3
            else:
                n, a = read_varint(buf, i + 1)
            i = a + n
            number = tag >> 3
        else:
            number, wire, a, i = field_at(buf, i)
            if wire != 2:
                continue
        index = seen[number] = seen.get(number, -1) + 1
        if next_start >= i:
            continue
        while ends[j] <= a and j < last:
            j += 1
        next_start = starts[j]
        if ends[j] > a and next_start < i:
            out.setdefault(number, {})[index] = (h, a, i)
    return out


def _splice(blob: bytes, record: Bounds, edits: list[tuple[Bounds, int, bytes]]) -> bytes:
    """The value of `record` with each (field bounds, field number, new value) edit applied,
    in order; each edited field gets a fresh tag and length."""
    parts, pos = [], record[1]
    for (h, _a, b), number, value in edits:
        parts += (blob[pos:h], varint(number << 3 | 2), varint(len(value)), value)
        pos = b
    parts.append(blob[pos : record[2]])
    return b"".join(parts)


# -- the processor -------------------------------------------------------------------------


class RedactionProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: RedactionConfig,
                 next_consumer: Consumer):
        super().__init__(next_consumer)
        self.config = config
        self.signal = settings.signal
        self.log = settings.logger
        self.rules = Rules(config)
        self.url_keys = frozenset(config.url_sanitizer.attributes
                                  if config.url_sanitizer.enabled else ())
        self.prefilter, self.check_all = self._prefilter(config)
        self.silent = config.summary == "silent"
        self.dense = self._dense(config)
        self.dense_after, self.dense_share = DENSE_AFTER, DENSE_SHARE
        self.native = self._native(config)
        if self.check_all:
            self.log.info("redaction checks every value of every item (redact_all_types, the "
                          "URL sanitizer on names/bodies, or a pattern that can match empty "
                          "text): expect lower throughput")

    def _prefilter(self, config: RedactionConfig) -> tuple[Any, bool]:
        """(relaxed alternation of everything that makes a change, whether to skip it)."""
        url = config.url_sanitizer
        names = url.sanitize_span_name and self.signal in (Signal.TRACES, None)
        bodies = url.sanitize_log_body and self.signal in (Signal.LOGS, None)
        if config.redact_all_types or (url.enabled and (names or bodies)):
            return None, True  # changes that no byte pattern can announce
        parts = [p.scan for p, _ in self.rules.patterns] + config.blocked_key_patterns
        parts += [re2.escape(k) for k in self.url_keys]
        if config.summary != "silent":
            parts += [re2.escape(k) for k in config.ignored_keys] + config.ignored_key_patterns
            parts.append(re2.escape("redaction."))  # existing summary keys get visited too
        if not parts:
            return None, False
        relaxed = [relax(p) for p in parts]
        try:
            compiled = [Regex(p) for p in relaxed]
        except re2.error:
            return None, True
        if any(rx.search("") for rx in compiled):
            return None, True  # a pattern matching the empty string would hit everywhere
        return any_of(relaxed), False

    def _dense(self, config: RedactionConfig) -> DenseScanner | None:
        """The dense path, when every change it has to find is a value pattern match (of a
        pattern without zero-width assertions) or a key the key patterns flag."""
        if (self.check_all or self.prefilter is None or not config.allow_all_keys
                or self.url_keys or not self.rules.patterns
                or any(relax(p.regex) != p.regex for p, _ in self.rules.patterns)):
            return None
        return DenseScanner(self.rules.patterns, _relaxed(self._flagged_keys(config)),
                            config.redact_span_names, self._decide)

    def _flagged_keys(self, config: RedactionConfig) -> list[str]:
        """Patterns of the keys whose items need the per-value walk."""
        keys = list(config.blocked_key_patterns)
        if not self.silent:  # these keys change the summary counts
            keys += [re2.escape(k) for k in config.ignored_keys] + config.ignored_key_patterns
            keys.append(re2.escape("redaction."))
        return keys

    def _native(self, config: RedactionConfig) -> Any:
        """The C++ masker (`otelflow._redact`) for logs and spans, when every change comes
        from a value pattern or a key the key patterns flag (left to the Python walk)."""
        patterns = self.rules.patterns
        if (Redactor is None or self.check_all or self.prefilter is None or self.url_keys
                or not config.allow_all_keys or not patterns
                or any(p.refine not in NATIVE_REFINES for p, _ in patterns)):
            return None
        layouts = item_layouts(config.redact_span_names)
        keys = self._flagged_keys(config)
        try:
            return Redactor(
                patterns=[(p.regex, p.group, NATIVE_REFINES[p.refine]) for p, _ in patterns],
                scan=_relaxed([p.scan for p, _ in patterns] + keys), keys=_relaxed(keys),
                ignored=config.ignored_keys,
                ignored_re=self.rules.ignored_rx.pattern if self.rules.ignored_rx else None,
                mask=MASK_TEXT, hasher=self.rules.mask if config.hash_function else None,
                allowed=config.allowed_values,
                summary=("silent", "info", "debug").index(config.summary),
                **{signal.value: (layout.attributes, layout.body, tuple(layout.walk))
                   for signal, layout in layouts.items()})
        except ValueError as exc:  # a pattern the system's RE2 does not take
            self.log.info("redaction masks values in Python: %s", exc)
            return None

    def _decide(self, key: str | None, text: str,
                spans: list[tuple[int, int]]) -> tuple[str, bool] | None:
        """(masked text, exempted) for a value the dense path located (`key` None: a log
        body); None when its key needs the per-value walk."""
        if key is not None:
            action = self.rules.key_action(key)
            if action == IGNORE and self.silent:
                return text, False
            if action != CHECK and not (action == SUMMARY and self.silent):
                return None
        return self.rules.apply(text, spans)

    async def consume(self, batch: Batch) -> None:
        await self.next_consumer.consume(self.redact(batch))

    def redact(self, batch: Batch) -> Batch:
        """Redact `batch` in place (calling `batch.mutable()` only if something changes) and
        return the batch to pass on: when only some items changed, a batch whose bytes are the
        received ones with those items spliced in, so nothing else is re-encoded."""
        if self.native is not None and batch.signal in _NATIVE_SIGNALS:
            redacted = self._redact_native(batch)
            if redacted is not None:
                return redacted
        hits = self._hits(batch)
        if isinstance(hits, bytes):
            self._redact_dense(batch, hits)
            return batch
        if hits is not None and not hits.resources and self.rules.allow_all:
            return batch
        walk = _Walk(self, batch)
        if hits is None or not self.rules.allow_all:
            walk.everything(hits)
            return batch
        spliced = walk.only(hits)
        if spliced is None:
            return batch
        return Batch(batch.signal, message=batch.message, raw=spliced, metadata=batch.metadata)

    def _redact_native(self, batch: Batch) -> Batch | None:
        """The native masker's pass, then the Python walk of what it leaves; None when it
        does not follow the request's framing."""
        blob = batch.to_bytes()
        result = self.native.redact(blob, batch.signal is Signal.TRACES)
        if result is None:
            return None
        out, items, resources, scopes = result
        if out is not blob:
            batch = Batch(batch.signal, raw=out, items=batch.item_count(),
                          metadata=batch.metadata)
        if items or resources or scopes:
            _Walk(self, batch).listed(items, resources, scopes)
        return batch

    def _hits(self, batch: Batch) -> Located | bytes | None:
        """Places the prefilter flags; None means "check every value", bytes (the request's)
        "take the dense path"."""
        if self.check_all:
            return None
        blob = batch.to_bytes() if self.prefilter is not None else b""
        spans: list[tuple[int, int]] = []
        if self.prefilter is not None:
            found = self.prefilter.spans(blob)
            spans = list(islice(found, self.dense_after))
            if self._is_dense(batch, blob, spans):
                return blob
            spans += found
        if not spans:
            return Located(blob, _Overlap([]), {})
        try:
            return locate(blob, spans)
        except (ValueError, IndexError):  # framing we cannot follow: check everything
            return None

    def _is_dense(self, batch: Batch, blob: bytes, spans: list[tuple[int, int]]) -> bool:
        """Whether the first prefilter `spans`, at their pace, flag a large share of items
        with values (key hits do not count: the dense path walks their items as the sparse
        path does, after a scan of its own)."""
        dense = self.dense
        if dense is None or batch.signal not in dense.layouts or len(spans) < self.dense_after:
            return False
        if not spans:
            return True
        keys = dense.keys
        values = len(spans) if keys is None else sum(not keys.search(blob[s:e]) for s, e in spans)
        return values * len(blob) >= spans[-1][1] * batch.item_count() * self.dense_share

    def _redact_dense(self, batch: Batch, blob: bytes) -> None:
        walk = _Walk(self, batch)
        try:
            plan = self.dense.plan(batch.signal, blob)  # type: ignore[union-attr]
        except (ValueError, IndexError):  # framing we cannot follow: check everything
            walk.everything(None)
            return
        walk.dense(plan, blob)


class _Report:
    """What one attribute map (or one log body) had done to it."""

    __slots__ = ("allowed", "has_summary", "ignored", "masked", "redacted")

    def __init__(self) -> None:
        self.redacted: list[str] = []
        self.masked: list[str] = []
        self.allowed: list[str] = []
        self.ignored = 0
        self.has_summary = False  # the map already holds summary keys (from upstream)


Children = dict[int, set[int]] | None


def _fields(descriptor: Any) -> Any:
    """Field numbers by name, as attributes (`_SPAN.attributes` -> 9)."""
    return type("Fields", (), {f.name: f.number for f in descriptor.fields})


_SPAN = _fields(Span.DESCRIPTOR)
_LOG = _fields(LogRecord.DESCRIPTOR)


def _has(child: Children, number: int) -> bool:
    return child is None or number in child


def _only(child: Children, number: int) -> set[int] | None:
    return None if child is None else child.get(number, set())


def _indices(child: Children, number: int, repeated: Any) -> Any:
    return range(len(repeated)) if child is None else sorted(child.get(number, ()))


class _Walk:
    """One batch's pass: applies the rules where needed, calling `mutable()` on first change."""

    def __init__(self, proc: RedactionProcessor, batch: Batch):
        self.rules = proc.rules
        self.config = proc.config
        self.url_keys = proc.url_keys
        self.batch = batch
        self.signal = batch.signal
        self.dirty = False
        self.changes = 0
        self.silent = proc.silent
        self.item = {Signal.TRACES: self.span, Signal.LOGS: self.log,
                     Signal.METRICS: self.metric}[batch.signal]

    def touch(self) -> None:
        """Called before every write."""
        self.changes += 1
        if not self.dirty:
            self.batch.mutable()
            self.dirty = True

    # -- traversal ------------------------------------------------------------------------

    def everything(self, hits: Located | None) -> None:
        """Visit every item (allow-list mode needs every key); check values where flagged."""
        sig = self.signal
        for ri, rx in enumerate(getattr(self.batch.message, sig.resource_field)):
            rh = hits.resources.get(ri) if hits is not None else None
            self.resource(rx.resource, hits is None or bool(rh and rh.resource))
            for si, sx in enumerate(getattr(rx, sig.scope_field)):
                sh = rh.scopes.get(si) if rh else None
                self.scope(sx.scope, hits is None or bool(sh and sh.scope))
                for k, item in enumerate(getattr(sx, sig.item_field)):
                    self.item(item, hits is None or bool(sh and k in sh.items))

    def only(self, hits: Located) -> bytes | None:
        """Visit just the flagged resources, scopes, items and (within items) fields.

        Returns the received bytes with the changed items re-encoded in place (their scope and
        resource records re-framed), or None when nothing changed or a resource or scope
        changed (a singular field: the whole request is re-encoded then)."""
        sig = self.signal
        resources = getattr(self.batch.message, sig.resource_field)
        spliceable, top = True, []
        for ri, rh in hits.resources.items():
            rx = resources[ri]
            if rh.resource:
                spliceable &= not self.changed(self.resource, rx.resource, True)
            resource_edits = []
            scopes = getattr(rx, sig.scope_field)
            for si, sh in rh.scopes.items():
                sx = scopes[si]
                if sh.scope:
                    spliceable &= not self.changed(self.scope, sx.scope, True)
                items = getattr(sx, sig.item_field)
                changed = [k for k in sorted(sh.items)
                           if self.changed(self.item, items[k], True, hits.children(sh.items[k]))]
                # re-encoding many items one by one costs more than re-encoding the request
                spliceable &= len(changed) <= max(len(items) // 4, 8)
                if changed and spliceable:
                    edits = [(sh.items[k], 2, items[k].SerializeToString()) for k in changed]
                    resource_edits.append((sh.bounds, 2, _splice(hits.blob, sh.bounds, edits)))
            if resource_edits:
                top.append((rh.bounds, 1, _splice(hits.blob, rh.bounds, resource_edits)))
        if not self.dirty or not spliceable:
            return None
        return _splice(hits.blob, (0, 0, len(hits.blob)), top)

    def dense(self, plan: Plan, blob: bytes) -> None:
        """Apply a dense-path plan: visit the flagged resources and scopes, mask the located
        values, and give the items it could not follow the per-value walk of the fields its
        matches touch (as the sparse path walks the fields the prefilter flags)."""
        sig = self.signal
        located = None
        resources = getattr(self.batch.message, sig.resource_field)
        for ri in sorted(plan.resources):
            self.resource(resources[ri].resource, True)
        for ri, si in sorted(plan.scopes):
            self.scope(getattr(resources[ri], sig.scope_field)[si].scope, True)
        scope, items = None, None
        for (ri, si, k), leaves in [*plan.leaves.items(), *((i, []) for i in sorted(plan.walk))]:
            if scope is None or scope[0] != ri or scope[1] != si:
                scope = ri, si
                items = getattr(getattr(resources[ri], sig.scope_field)[si], sig.item_field)
            item = items[k]
            if not (leaves and self.leaves(item, leaves)):
                if located is None:
                    located = Located(blob, _Overlap(_merge([m[:2] for m in plan.matches])), {})
                self.item(item, True, located.children(plan.bounds[ri, si, k]))

    def listed(self, items: list[ItemId], resources: list[int],
               scopes: list[tuple[int, int]]) -> None:
        """Check every value of the listed items, resources and scopes (by index)."""
        sig = self.signal
        top = getattr(self.batch.message, sig.resource_field)
        for ri in resources:
            self.resource(top[ri].resource, True)
        for ri, si in scopes:
            self.scope(getattr(top[ri], sig.scope_field)[si].scope, True)
        for ri, si, k in items:
            self.item(getattr(getattr(top[ri], sig.scope_field)[si], sig.item_field)[k], True)

    def leaves(self, item: Any, leaves: list[Leaf]) -> bool:
        """Write the masked values the dense path located in one item; False (nothing
        written) when the parsed item does not hold them as located."""
        values = []
        for index, key, text, _masked, _exempted in leaves:
            if key is None:
                value = item.body
            else:
                kv = item.attributes[index]
                if kv.key != key:
                    return False
                value = kv.value
            if value.string_value != text:
                return False
            values.append(value)
        for value, (_index, _key, text, masked, _exempted) in zip(values, leaves, strict=True):
            if masked != text:
                self.touch()
                value.string_value = masked
        if not self.silent:
            self.summarize_leaves(item, leaves)
        return True

    def summarize_leaves(self, item: Any, leaves: list[Leaf]) -> None:
        report, body = _Report(), _Report()
        for _index, key, text, masked, exempted in leaves:
            into, path = (body, "body") if key is None else (report, key)
            if exempted:
                into.allowed.append(path)
            if masked != text:
                into.masked.append(path)
        self.summarize(item.attributes, report)
        self.summarize(item.attributes, body, _BODY_SUMMARY)

    def changed(self, visit: Callable[..., None], *args: Any) -> bool:
        """Run `visit(*args)`; True when it wrote anything."""
        before = self.changes
        visit(*args)
        return self.changes != before

    def resource(self, resource: Any, check: bool) -> None:
        self.attributes(resource.attributes, check)

    def scope(self, scope: Any, check: bool) -> None:
        self.attributes(scope.attributes, check)

    def span(self, span: Any, check: bool, child: Children = None) -> None:
        """A span; `child` (field number -> hit indices) narrows the work to the hit fields."""
        report = _Report()
        self.attrs(span.attributes, check, report, only=_only(child, _SPAN.attributes))
        if check:
            if self.config.redact_span_names and _has(child, _SPAN.name):
                self.text_field(span, "name", "span.name", report)
            if span.HasField("status") and _has(child, _SPAN.status):
                self.text_field(span.status, "message", "status.message", report)
        self.sanitize_span_name(span)
        self.summarize(span.attributes, report)
        for i in _indices(child, _SPAN.events, span.events):
            event = span.events[i]
            event_report = _Report()
            self.attrs(event.attributes, check, event_report)
            if check:
                self.text_field(event, "name", "event.name", event_report)
            self.summarize(event.attributes, event_report)
        for i in _indices(child, _SPAN.links, span.links):
            self.attributes(span.links[i].attributes, check)

    def log(self, record: Any, check: bool, child: Children = None) -> None:
        report, body = _Report(), _Report()
        self.attrs(record.attributes, check, report, only=_only(child, _LOG.attributes))
        if record.HasField("body") and _has(child, _LOG.body):
            self.body(record.body, check, body)
        body.has_summary = report.has_summary  # the body summary goes to the attributes too
        self.summarize(record.attributes, report)
        self.summarize(record.attributes, body, _BODY_SUMMARY)

    def metric(self, metric: Any, check: bool, _child: Children = None) -> None:
        for point in metric_points(metric):
            self.attributes(point.attributes, check)
            for exemplar in getattr(point, "exemplars", ()):
                self.attributes(exemplar.filtered_attributes, check)

    # -- attribute maps and values -------------------------------------------------------

    def attributes(self, kvs: Any, check: bool) -> None:
        report = _Report()
        self.attrs(kvs, check, report)
        self.summarize(kvs, report)

    def attrs(self, kvs: Any, check: bool, report: _Report, prefix: str = "",
              only: set[int] | None = None) -> None:
        """Key rules for every entry, or the `only` ones (values too when `check`); redacted
        entries are removed."""
        rules = self.rules
        doomed = []
        entries = enumerate(kvs) if only is None else ((i, kvs[i]) for i in sorted(only))
        for i, kv in entries:
            key = kv.key
            action = rules.key_action(key)
            if action in (CHECK, SUMMARY):
                report.has_summary |= action == SUMMARY
                if key in self.url_keys:
                    self.sanitize_url_value(kv.value)
                if check or not rules.allow_all:
                    self.value(kv.value, prefix + key, check, report)
            elif action == IGNORE:
                report.ignored += 1
            elif action == REDACT:
                doomed.append(i)
                report.redacted.append(prefix + key)
            elif action == MASK:
                self.mask_whole(kv.value, prefix + key, report)
        if doomed:
            self.touch()
            for i in reversed(doomed):
                del kvs[i]

    def value(self, value: Any, path: str, check: bool, report: _Report) -> None:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            if check:
                self.text(value, value.string_value, path, report)
        elif kind == "kvlist_value":
            self.attrs(value.kvlist_value.values, check, report, f"{path}." if path else "")
        elif kind == "array_value":
            for i, item in enumerate(value.array_value.values):
                self.value(item, f"{path}.[{i}]" if path else f"[{i}]", check, report)
        elif not check:
            return
        elif kind == "bytes_value":
            try:
                text = value.bytes_value.decode()
            except UnicodeDecodeError:
                return
            self.text(value, text, path, report)
        elif kind is not None and self.rules.all_types:
            self.text(value, _as_string(value, kind), path, report)

    def body(self, body: Any, check: bool, report: _Report) -> None:
        kind = body.WhichOneof("value")
        if kind == "string_value" and self.config.url_sanitizer.sanitize_log_body:
            self.sanitize_url_value(body)
        if kind in ("string_value", "bytes_value") or (kind and self.rules.all_types):
            self.value(body, "body", check, report)
        elif kind is not None:
            self.value(body, "", check, report)

    def text(self, value: Any, text: str, path: str, report: _Report) -> None:
        masked, exempted = self.rules.mask_text(text)
        if exempted:
            report.allowed.append(path)
        if masked != text:
            self.touch()
            value.string_value = masked
            report.masked.append(path)

    def text_field(self, message: Any, name: str, path: str, report: _Report) -> None:
        text = getattr(message, name)
        masked, exempted = self.rules.mask_text(text)
        if exempted:
            report.allowed.append(path)
        if masked != text:
            self.touch()
            setattr(message, name, masked)
            report.masked.append(path)

    def mask_whole(self, value: Any, path: str, report: _Report) -> None:
        """A blocked key: its whole value (of any type) becomes the mask or hash."""
        kind = value.WhichOneof("value")
        if kind == "bytes_value":
            text = value.bytes_value.decode(errors="replace")
        elif kind in (None, "kvlist_value", "array_value"):
            text = ""  # as the Go processor: composite values mask as an empty string
        else:
            text = _as_string(value, kind)
        if self.rules.allowed_rxs and text and self.rules.allows_whole(text):
            report.allowed.append(path)
            return
        self.touch()
        value.string_value = self.rules.mask(text)
        report.masked.append(path)

    # -- URL sanitizer ------------------------------------------------------------------

    def sanitize_url_value(self, value: Any) -> None:
        if value.WhichOneof("value") != "string_value":
            return
        clean = sanitize_url(value.string_value)
        if clean != value.string_value:
            self.touch()
            value.string_value = clean

    def sanitize_span_name(self, span: Any) -> None:
        url = self.config.url_sanitizer
        if not (url.enabled and url.sanitize_span_name) or "/" not in span.name:
            return
        if span.kind not in _URL_SPAN_KINDS:
            return
        clean = sanitize_url(span.name)
        if clean != span.name:
            self.touch()
            span.name = clean

    # -- summary attributes ---------------------------------------------------------------

    def summarize(self, kvs: Any, report: _Report, names: tuple[str, ...] = _ATTR_SUMMARY) -> None:
        level = self.config.summary
        if level == "silent" or not (report.redacted or report.masked or report.allowed
                                     or report.ignored):
            return
        self.touch()
        merge = report.has_summary  # add to what an upstream processor wrote
        for keys, (keys_name, count_name) in zip(
                (report.redacted, report.masked, report.allowed),
                (names[0:2], names[2:4], names[4:6]), strict=True):
            if keys:
                if level == "debug":
                    _put_keys(kvs, keys_name, keys, merge)
                _add_count(kvs, count_name, len(keys), merge)
        if report.ignored:
            _add_count(kvs, names[6], report.ignored, merge)


def _entry(kvs: Any, key: str, merge: bool) -> Any:
    """The value of `key` in `kvs` (searched only when `merge`), added when missing."""
    if merge:
        for kv in kvs:
            if kv.key == key:
                return kv.value
    return kvs.add(key=key).value


def _put_keys(kvs: Any, key: str, keys: list[str], merge: bool) -> None:
    value = _entry(kvs, key, merge)
    if value.string_value:
        keys = keys + value.string_value.split(",")
    value.string_value = ",".join(sorted(keys))


def _add_count(kvs: Any, key: str, n: int, merge: bool) -> None:
    value = _entry(kvs, key, merge)
    value.int_value = value.int_value + n
