"""Tail-sampling policies: their config models (the Go keys) and their evaluators.

Each evaluator looks at one whole trace (`TraceView`) and returns a decision constant. The
decisions and their precedence follow the Go `tail_sampling` processor: attribute policies with
`invert_match` return the (deprecated) inverted decisions, `drop` returns DROPPED, and the
processor folds all policy decisions into one final decision (`final_decision`).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from otelflow.config.types import ConfigModel

# -- decisions ----------------------------------------------------------------------------

SAMPLED = 2
NOT_SAMPLED = 3
DROPPED = 4
INVERT_SAMPLED = 6
INVERT_NOT_SAMPLED = 7

DECISION_LABELS = {  # decision -> (sampled, decision) metric labels, as Go reports them
    SAMPLED: ("true", "sampled"),
    NOT_SAMPLED: ("false", "not_sampled"),
    INVERT_SAMPLED: ("true", "sampled"),
    INVERT_NOT_SAMPLED: ("false", "not_sampled"),
    DROPPED: ("false", "dropped"),
}

STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}


class TraceView(Protocol):
    """What a policy sees of a trace: its id, span count, encoded size and spans as received.

    `fragments` is a list of `(resource_spans, [(scope_spans, [span, ...]), ...])`, one entry
    per received request and resource. `wire_size` is the size of the trace encoded as one
    export request (Go's TracesSize).
    """

    trace_id: bytes
    span_count: int
    wire_size: int
    fragments: list[tuple[Any, list[tuple[Any, list[Any]]]]]


class Evaluator(Protocol):
    def evaluate(self, trace: TraceView) -> int: ...


# -- config models ------------------------------------------------------------------------

LEAF_TYPES = ("always_sample", "latency", "numeric_attribute", "probabilistic", "status_code",
              "string_attribute", "rate_limiting", "bytes_limiting", "span_count", "trace_state",
              "trace_flags", "boolean_attribute")
PolicyType = Literal["always_sample", "latency", "numeric_attribute", "probabilistic",
                     "status_code", "string_attribute", "rate_limiting", "bytes_limiting",
                     "span_count", "trace_state", "trace_flags", "boolean_attribute", "and",
                     "not", "drop", "composite"]
NO_SETTINGS = ("always_sample", "trace_flags")


class LatencyCfg(ConfigModel):
    threshold_ms: int = 0
    upper_threshold_ms: int = 0


class NumericAttributeCfg(ConfigModel):
    key: str = ""
    min_value: int = 0
    max_value: int = 0
    invert_match: bool = False


class ProbabilisticCfg(ConfigModel):
    hash_salt: str = ""
    sampling_percentage: float = 0.0


class StatusCodeCfg(ConfigModel):
    status_codes: list[Literal["OK", "ERROR", "UNSET"]] = Field(default_factory=list)


class StringAttributeCfg(ConfigModel):
    key: str = ""
    values: list[str] = Field(default_factory=list)
    enabled_regex_matching: bool = False
    cache_max_size: int = 0
    invert_match: bool = False

    @model_validator(mode="after")
    def _regexes_compile(self) -> StringAttributeCfg:
        if self.enabled_regex_matching:
            for i, value in enumerate(self.values):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValueError(f"values[{i}]: invalid regular expression {value!r}: "
                                     f"{exc}") from None
        return self


class RateLimitingCfg(ConfigModel):
    spans_per_second: int = Field(0, ge=0)
    burst_capacity: int = Field(0, ge=0)


class BytesLimitingCfg(ConfigModel):
    bytes_per_second: int = Field(0, ge=0)
    burst_capacity: int = Field(0, ge=0)


class SpanCountCfg(ConfigModel):
    min_spans: int = 0
    max_spans: int = 0


class TraceStateCfg(ConfigModel):
    key: str = ""
    values: list[str] = Field(default_factory=list)


class BooleanAttributeCfg(ConfigModel):
    key: str = ""
    value: bool = False
    invert_match: bool = False


class AndCfg(ConfigModel):
    and_sub_policy: list[PolicyCfg] = Field(default_factory=list)


class NotCfg(ConfigModel):
    not_sub_policy: PolicyCfg | None = None


class DropCfg(ConfigModel):
    drop_sub_policy: list[PolicyCfg] = Field(default_factory=list)


class RateAllocationCfg(ConfigModel):
    policy: str
    percent: int = 0


class CompositeCfg(ConfigModel):
    max_total_spans_per_second: int = Field(0, ge=0)
    policy_order: list[str] = Field(default_factory=list)
    composite_sub_policy: list[PolicyCfg] = Field(default_factory=list)
    rate_allocation: list[RateAllocationCfg] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_known(self) -> CompositeCfg:
        names = [p.name for p in self.composite_sub_policy]
        for field, listed in (("policy_order", self.policy_order),
                              ("rate_allocation", [r.policy for r in self.rate_allocation])):
            for i, name in enumerate(listed):
                if name not in names:
                    raise ValueError(f"{field}[{i}]: {name!r} is not a composite_sub_policy "
                                     f"name (known: {', '.join(names) or 'none'})")
        total = sum(r.percent for r in self.rate_allocation)
        if total > 100:
            raise ValueError(f"rate_allocation percents add up to {total}, more than 100")
        return self


_SUB_CONTEXTS = {  # where a policy sits -> the types allowed there
    "and_sub_policy": (*LEAF_TYPES, "not"),
    "drop_sub_policy": (*LEAF_TYPES, "not"),
    "not_sub_policy": LEAF_TYPES,
    "composite_sub_policy": (*LEAF_TYPES, "and", "not"),
}


class PolicyCfg(ConfigModel):
    """One policy: `name`, `type` and the settings block named like the type."""

    name: str
    type: PolicyType
    latency: LatencyCfg | None = None
    numeric_attribute: NumericAttributeCfg | None = None
    probabilistic: ProbabilisticCfg | None = None
    status_code: StatusCodeCfg | None = None
    string_attribute: StringAttributeCfg | None = None
    rate_limiting: RateLimitingCfg | None = None
    bytes_limiting: BytesLimitingCfg | None = None
    span_count: SpanCountCfg | None = None
    trace_state: TraceStateCfg | None = None
    boolean_attribute: BooleanAttributeCfg | None = None
    and_: AndCfg | None = Field(None, alias="and")
    not_: NotCfg | None = Field(None, alias="not")
    drop: DropCfg | None = None
    composite: CompositeCfg | None = None

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("policy name cannot be empty")
        return name

    @model_validator(mode="after")
    def _check(self) -> PolicyCfg:
        blocks = [k for k in _BLOCK_FIELDS if getattr(self, _BLOCK_FIELDS[k]) is not None]
        stray = [k for k in blocks if k != self.type]
        if stray:
            wanted = "takes no settings" if self.type in NO_SETTINGS else f"uses {self.type!r}"
            raise ValueError(f"policy {self.name!r} of type {self.type!r} has settings "
                             f"{', '.join(repr(s) for s in stray)} that do not apply "
                             f"(type {self.type!r} {wanted})")
        self._check_type_settings()
        for ctx, subs in self.sub_policies().items():
            for i, sub in enumerate(subs):
                if sub.type not in _SUB_CONTEXTS[ctx]:
                    raise ValueError(f"{ctx}[{i}] ({sub.name!r}): type {sub.type!r} is not "
                                     f"allowed inside {self.type!r}; allowed: "
                                     f"{', '.join(_SUB_CONTEXTS[ctx])}")
        return self

    def _check_type_settings(self) -> None:
        cfg = self.settings()
        if self.type == "status_code" and not cfg.status_codes:
            raise ValueError(f"policy {self.name!r}: status_code.status_codes needs at least "
                             "one of OK, ERROR, UNSET")
        if self.type in ("numeric_attribute", "string_attribute", "boolean_attribute",
                         "trace_state") and not cfg.key:
            raise ValueError(f"policy {self.name!r}: {self.type}.key is required")
        if self.type == "numeric_attribute" and cfg.min_value == 0 and cfg.max_value == 0:
            raise ValueError(f"policy {self.name!r}: numeric_attribute needs min_value and/or "
                             "max_value (0 means unset)")
        if self.type == "and" and not cfg.and_sub_policy:
            raise ValueError(f"policy {self.name!r}: and.and_sub_policy needs at least one policy")
        if self.type == "drop" and not cfg.drop_sub_policy:
            raise ValueError(f"policy {self.name!r}: drop.drop_sub_policy needs at least one "
                             "policy")
        if self.type == "not" and cfg.not_sub_policy is None:
            raise ValueError(f"policy {self.name!r}: not.not_sub_policy is required")
        if self.type == "composite" and not cfg.composite_sub_policy:
            raise ValueError(f"policy {self.name!r}: composite.composite_sub_policy needs at "
                             "least one policy")

    def settings(self) -> Any:
        """This policy's settings block, defaults filled in when it was left out."""
        if self.type in NO_SETTINGS:
            return None
        field = _BLOCK_FIELDS[self.type]
        value = getattr(self, field)
        return value if value is not None else _BLOCK_MODELS[self.type]()

    def sub_policies(self) -> dict[str, list[PolicyCfg]]:
        cfg = self.settings()
        if self.type == "and":
            return {"and_sub_policy": cfg.and_sub_policy}
        if self.type == "drop":
            return {"drop_sub_policy": cfg.drop_sub_policy}
        if self.type == "not":
            return {"not_sub_policy": [cfg.not_sub_policy] if cfg.not_sub_policy else []}
        if self.type == "composite":
            return {"composite_sub_policy": cfg.composite_sub_policy}
        return {}


_BLOCK_FIELDS = {t: t for t in LEAF_TYPES if t not in NO_SETTINGS}
_BLOCK_FIELDS.update({"and": "and_", "not": "not_", "drop": "drop", "composite": "composite"})
_BLOCK_MODELS = {
    "latency": LatencyCfg, "numeric_attribute": NumericAttributeCfg,
    "probabilistic": ProbabilisticCfg, "status_code": StatusCodeCfg,
    "string_attribute": StringAttributeCfg, "rate_limiting": RateLimitingCfg,
    "bytes_limiting": BytesLimitingCfg, "span_count": SpanCountCfg,
    "trace_state": TraceStateCfg, "boolean_attribute": BooleanAttributeCfg,
    "and": AndCfg, "not": NotCfg, "drop": DropCfg, "composite": CompositeCfg,
}
for _model in (AndCfg, NotCfg, DropCfg, CompositeCfg):
    _model.model_rebuild()


# -- attribute helpers --------------------------------------------------------------------

def _find(attributes: Iterable[Any], key: str) -> Any:
    """The AnyValue under `key` in a repeated KeyValue, or None."""
    for kv in attributes:
        if kv.key == key:
            return kv.value
    return None


def _has(trace: TraceView, key: str, check: Callable[[Any, bool], bool]) -> bool:
    """True when a resource, scope or span carries `key` with a value `check` accepts.

    `check(value, on_span)` gets the AnyValue; Go skips empty strings on spans only.
    """
    for rs, scopes in trace.fragments:
        value = _find(rs.resource.attributes, key)
        if value is not None and check(value, False):
            return True
        for ss, spans in scopes:
            value = _find(ss.scope.attributes, key)
            if value is not None and check(value, False):
                return True
            for span in spans:
                value = _find(span.attributes, key)
                if value is not None and check(value, True):
                    return True
    return False


def _attribute_decision(trace: TraceView, key: str, check: Callable[[Any, bool], bool],
                        invert: bool) -> int:
    """Go's plain / inverted attribute matching over resource, scope and span attributes."""
    if invert:
        return INVERT_NOT_SAMPLED if _has(trace, key, check) else INVERT_SAMPLED
    return SAMPLED if _has(trace, key, check) else NOT_SAMPLED


# -- leaf evaluators ----------------------------------------------------------------------

class AlwaysSample:
    __slots__ = ()

    def evaluate(self, trace: TraceView) -> int:
        return SAMPLED


class Latency:
    """Duration from the earliest start to the latest end, checked as spans are walked (Go).

    Without an upper bound the running duration only grows, so checking once at the end gives
    the same answer; with one, an early prefix of the spans may already match, as in Go.
    """

    __slots__ = ("lower", "upper")

    def __init__(self, cfg: LatencyCfg):
        self.lower, self.upper = cfg.threshold_ms, cfg.upper_threshold_ms

    def evaluate(self, trace: TraceView) -> int:
        lower, upper = self.lower, self.upper
        lo = hi = 0
        for _rs, scopes in trace.fragments:
            for _ss, spans in scopes:
                for span in spans:
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    if lo == 0 or start < lo:
                        lo = start
                    if hi == 0 or end > hi:
                        hi = end
                    if upper and lower < _millis(hi - lo) <= upper:
                        return SAMPLED
        if not upper and trace.span_count and _millis(hi - lo) >= lower:
            return SAMPLED
        return NOT_SAMPLED


def _millis(nanos: int) -> int:
    """Whole milliseconds, truncated toward zero (Go's Duration.Milliseconds)."""
    return nanos // 1_000_000 if nanos >= 0 else -(-nanos // 1_000_000)


class NumericAttribute:
    __slots__ = ("check", "invert", "key")

    def __init__(self, cfg: NumericAttributeCfg):
        self.key, self.invert = cfg.key, cfg.invert_match
        lo = cfg.min_value or None  # Go treats 0 as "not set"
        hi = cfg.max_value or None

        def check(value: Any, _on_span: bool) -> bool:
            number = value.int_value  # Go's Value.Int(): 0 for non-int values
            return (lo is None or number >= lo) and (hi is None or number <= hi)

        self.check = check

    def evaluate(self, trace: TraceView) -> int:
        return _attribute_decision(trace, self.key, self.check, self.invert)


FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
MAX_UINT64 = (1 << 64) - 1
DEFAULT_HASH_SALT = "default-hash-seed"


def fnv1a_64(data: bytes, h: int = FNV64_OFFSET) -> int:
    """64-bit FNV-1a (continuing from state `h`)."""
    for byte in data:
        h = ((h ^ byte) * FNV64_PRIME) & MAX_UINT64
    return h


def probabilistic_threshold(percentage: float) -> int:
    """MaxUint64 x ratio as Go computes it: a 64-bit-mantissa product, truncated to uint64."""
    ratio = percentage / 100
    if ratio <= 0:
        return 0
    num, den = ratio.as_integer_ratio()  # den is a power of two
    product = MAX_UINT64 * num
    extra = product.bit_length() - 64
    if extra > 0:  # round to 64 significant bits, ties to even
        q, r = divmod(product, 1 << extra)
        half = 1 << (extra - 1)
        if r > half or (r == half and q & 1):
            q += 1
        product = q << extra
    return min(product // den, MAX_UINT64)


class Probabilistic:
    """Samples when FNV-1a(salt + trace id) <= threshold: the same decision as Go everywhere."""

    __slots__ = ("salted", "threshold")

    def __init__(self, cfg: ProbabilisticCfg):
        self.salted = fnv1a_64((cfg.hash_salt or DEFAULT_HASH_SALT).encode())
        self.threshold = probabilistic_threshold(cfg.sampling_percentage)

    def evaluate(self, trace: TraceView) -> int:
        h = self.salted
        for byte in trace.trace_id:
            h = ((h ^ byte) * FNV64_PRIME) & MAX_UINT64
        return SAMPLED if h <= self.threshold else NOT_SAMPLED


class StatusCode:
    __slots__ = ("codes",)

    def __init__(self, cfg: StatusCodeCfg):
        self.codes = frozenset(STATUS_CODES[c] for c in cfg.status_codes)

    def evaluate(self, trace: TraceView) -> int:
        codes = self.codes
        for _rs, scopes in trace.fragments:
            for _ss, spans in scopes:
                for span in spans:
                    if span.status.code in codes:
                        return SAMPLED
        return NOT_SAMPLED


class StringAttribute:
    """Exact values, or regexes (searched, as Go's MatchString) with an LRU of results."""

    __slots__ = ("cache", "cache_size", "invert", "key", "pattern", "values")

    def __init__(self, cfg: StringAttributeCfg):
        self.key, self.invert = cfg.key, cfg.invert_match
        self.values = frozenset(v for v in cfg.values if v)
        self.pattern = (re.compile("|".join(f"(?:{v})" for v in cfg.values))
                        if cfg.enabled_regex_matching and cfg.values else None)
        self.cache: OrderedDict[str, bool] = OrderedDict()
        self.cache_size = cfg.cache_max_size if cfg.cache_max_size > 0 else 128

    def _matches(self, text: str) -> bool:
        if self.pattern is None:
            return text in self.values
        hit = self.cache.get(text)
        if hit is not None:
            self.cache.move_to_end(text)
            return hit
        hit = self.pattern.search(text) is not None
        self.cache[text] = hit
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return hit

    def _check(self, value: Any, on_span: bool) -> bool:
        text = value.string_value  # Go's Value.Str(): "" for non-string values
        if on_span and not text:
            return False
        return self._matches(text)

    def evaluate(self, trace: TraceView) -> int:
        return _attribute_decision(trace, self.key, self._check, self.invert)


class TokenBucket:
    """golang.org/x/time/rate semantics for AllowN: starts full, refills continuously."""

    __slots__ = ("burst", "clock", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = float(rate), burst, clock
        self.tokens = float(burst)
        self.last = clock()

    def allow(self, n: int) -> bool:
        now = self.clock()
        if now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
        if n > self.burst or self.tokens < n:
            return False
        self.tokens -= n
        return True


class RateLimiting:
    __slots__ = ("bucket",)

    def __init__(self, cfg: RateLimitingCfg, clock: Callable[[], float] = time.monotonic):
        burst = cfg.burst_capacity or cfg.spans_per_second * 2
        self.bucket = TokenBucket(cfg.spans_per_second, burst, clock)

    def evaluate(self, trace: TraceView) -> int:
        return SAMPLED if self.bucket.allow(trace.span_count) else NOT_SAMPLED


class BytesLimiting:
    __slots__ = ("bucket",)

    def __init__(self, cfg: BytesLimitingCfg, clock: Callable[[], float] = time.monotonic):
        burst = cfg.burst_capacity or cfg.bytes_per_second * 2
        self.bucket = TokenBucket(cfg.bytes_per_second, burst, clock)

    def evaluate(self, trace: TraceView) -> int:
        return SAMPLED if self.bucket.allow(trace.wire_size) else NOT_SAMPLED


class SpanCount:
    __slots__ = ("high", "low")

    def __init__(self, cfg: SpanCountCfg):
        self.low, self.high = cfg.min_spans, cfg.max_spans

    def evaluate(self, trace: TraceView) -> int:
        n = trace.span_count
        if n >= self.low and (self.high == 0 or n <= self.high):
            return SAMPLED
        return NOT_SAMPLED


_TS_KEY = re.compile(r"^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@"
                     r"[a-z][a-z0-9_\-*/]{0,13})$")
_TS_VALUE = re.compile(r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$")


def parse_trace_state(text: str) -> dict[str, str] | None:
    """W3C tracestate members as a dict; None when the header is invalid."""
    members: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip(" \t")
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not _TS_KEY.match(key) or not _TS_VALUE.match(value) or key in members:
            return None
        members[key] = value
    return members if len(members) <= 32 else None


class TraceState:
    __slots__ = ("key", "values")

    def __init__(self, cfg: TraceStateCfg):
        self.key = cfg.key
        self.values = frozenset(v for v in cfg.values if v and len(cfg.key) + len(v) < 256)

    def evaluate(self, trace: TraceView) -> int:
        for _rs, scopes in trace.fragments:
            for _ss, spans in scopes:
                for span in spans:
                    if not span.trace_state:
                        continue
                    members = parse_trace_state(span.trace_state)
                    if members and members.get(self.key) in self.values:
                        return SAMPLED
        return NOT_SAMPLED


class TraceFlags:
    """Sampled when any span has the W3C sampled flag in the low byte of `flags`."""

    __slots__ = ()

    def evaluate(self, trace: TraceView) -> int:
        for _rs, scopes in trace.fragments:
            for _ss, spans in scopes:
                for span in spans:
                    if span.flags & 0x01:
                        return SAMPLED
        return NOT_SAMPLED


class BooleanAttribute:
    __slots__ = ("check", "invert", "key")

    def __init__(self, cfg: BooleanAttributeCfg):
        self.key, self.invert = cfg.key, cfg.invert_match
        wanted = cfg.value
        self.check = lambda value, _on_span: value.bool_value == wanted

    def evaluate(self, trace: TraceView) -> int:
        return _attribute_decision(trace, self.key, self.check, self.invert)


# -- combining evaluators -----------------------------------------------------------------

class And:
    """Sampled when no sub-policy says not-sampled (inverted not-sampled counts as not)."""

    __slots__ = ("subs",)
    matched = SAMPLED  # the decision when every sub-policy matches

    def __init__(self, subs: list[Evaluator]):
        self.subs = subs

    def evaluate(self, trace: TraceView) -> int:
        for sub in self.subs:
            if sub.evaluate(trace) in (NOT_SAMPLED, INVERT_NOT_SAMPLED):
                return NOT_SAMPLED
        return self.matched


class Not:
    """Swaps sampled and not-sampled; other decisions pass through (as Go)."""

    __slots__ = ("sub",)

    def __init__(self, sub: Evaluator):
        self.sub = sub

    def evaluate(self, trace: TraceView) -> int:
        decision = self.sub.evaluate(trace)
        if decision == SAMPLED:
            return NOT_SAMPLED
        if decision == NOT_SAMPLED:
            return SAMPLED
        return decision


class Drop(And):
    """DROPPED when every sub-policy matches; a dropped decision beats every other one."""

    __slots__ = ()
    matched = DROPPED


class Composite:
    """Per-sub-policy span budgets within each wall-clock second, as Go's composite policy.

    Sub-policies are tried in `composite_sub_policy` order; the first that matches decides: it
    samples when its own count this second plus the trace's spans stays within both its
    allocation and `max_total_spans_per_second`, else the trace is not sampled.
    """

    __slots__ = ("clock", "max_total", "second", "subs", "tag")

    def __init__(self, max_total: int, subs: list[tuple[str, Evaluator, int]],
                 clock: Callable[[], float] = time.time):
        self.max_total = max_total
        self.subs = [[name, evaluator, allocated, 0] for name, evaluator, allocated in subs]
        self.clock = clock
        self.second = -1
        self.tag: str | None = None  # name of the sub-policy that sampled the last trace

    def evaluate(self, trace: TraceView) -> int:
        now = int(self.clock())
        if now != self.second:
            self.second = now
            for sub in self.subs:
                sub[3] = 0
        self.tag = None
        for sub in self.subs:
            name, evaluator, allocated, used = sub
            if evaluator.evaluate(trace) in (SAMPLED, INVERT_SAMPLED):
                if_sampled = used + trace.span_count
                if if_sampled <= allocated and if_sampled <= self.max_total:
                    sub[3] = if_sampled
                    self.tag = name
                    return SAMPLED
                return NOT_SAMPLED
        return NOT_SAMPLED


def rate_allocations(cfg: CompositeCfg) -> dict[str, int]:
    """Spans/s per sub-policy name: percent of the total, or an equal share for percent <= 0.

    A sub-policy without a rate_allocation entry gets no budget, exactly as in Go.
    """
    total = float(cfg.max_total_spans_per_second)
    default = total / len(cfg.composite_sub_policy)
    return {r.policy: int((r.percent / 100) * total if r.percent > 0 else default)
            for r in cfg.rate_allocation}


# -- building ----------------------------------------------------------------------------

_LEAVES: dict[str, Callable[[Any], Evaluator]] = {
    "latency": Latency, "numeric_attribute": NumericAttribute,
    "probabilistic": Probabilistic, "status_code": StatusCode,
    "string_attribute": StringAttribute, "rate_limiting": RateLimiting,
    "bytes_limiting": BytesLimiting, "span_count": SpanCount, "trace_state": TraceState,
    "boolean_attribute": BooleanAttribute,
}


def build_evaluator(cfg: PolicyCfg) -> Evaluator:
    """The evaluator for a validated policy config (recursively for and/not/drop/composite)."""
    settings = cfg.settings()
    if cfg.type == "always_sample":
        return AlwaysSample()
    if cfg.type == "trace_flags":
        return TraceFlags()
    if cfg.type == "and":
        return And([build_evaluator(sub) for sub in settings.and_sub_policy])
    if cfg.type == "drop":
        return Drop([build_evaluator(sub) for sub in settings.drop_sub_policy])
    if cfg.type == "not":
        return Not(build_evaluator(settings.not_sub_policy))
    if cfg.type == "composite":
        allocated = rate_allocations(settings)
        subs = [(sub.name, build_evaluator(sub), allocated.get(sub.name, 0))
                for sub in settings.composite_sub_policy]
        return Composite(settings.max_total_spans_per_second, subs)
    return _LEAVES[cfg.type](settings)


def final_decision(decisions: dict[int, str]) -> tuple[int, str | None]:
    """Fold per-policy decisions (decision -> first policy name) into (final, deciding policy).

    Precedence as in Go: dropped, then inverted-not-sampled, then sampled, then inverted-sampled
    when nothing said not-sampled; everything else is not sampled.
    """
    if DROPPED in decisions:
        return DROPPED, decisions[DROPPED]
    if INVERT_NOT_SAMPLED in decisions:
        return NOT_SAMPLED, None
    if SAMPLED in decisions:
        return SAMPLED, decisions[SAMPLED]
    if INVERT_SAMPLED in decisions and NOT_SAMPLED not in decisions:
        return SAMPLED, decisions[INVERT_SAMPLED]
    return NOT_SAMPLED, None
