"""Dense PII for the `redaction` processor: exact matches over a whole serialized request.

When most items carry a match, the sparse path (relaxed prefilter over the request, then every
flagged value checked again on its own) costs several RE2 calls per value, and each call into
google-re2 costs about a microsecond whatever the text. Here one RE2 Set pass over the request
names the value patterns present, then each of those runs over the request once, one call per
match, and a walk of the framing maps the matches to the string values they fall in.

Why that is exact: every pattern taken here is free of zero-width assertions, so whether a
substring matches does not depend on the bytes around it, and every match of a value on its
own is a match in the request. A pattern's successive matches over the request then agree,
value by value, with its matches over each value alone, as long as none crosses the value's
bounds; a pattern with a match that does (glued to a framing byte: the tag of the next
attribute is `J` in spans, `2` in logs) is matched again within that value alone. The refine
steps (Luhn, mod-97, digit boundaries) get the value's own text. Whatever this path does not
follow (a match in a nested or bytes value, in events, links, status or a redacted
span name, a key-pattern hit, a match across two items, a value the parsed message does not
hold as located) sends its item to the processor's per-value walk, so the output is the
sparse path's output byte for byte.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.pdata import Signal
from otelflow.processors.redaction_patterns import PatternSet, Regex, ValuePattern
from otelflow.wire import field_at, fields, length_delimited, read_varint

KEY = -1  # pattern index of a key-prefilter hit: its item takes the per-value walk
Match = tuple[int, int, int, int, int]  # (start, end, pattern index or KEY, group start, end)
ItemId = tuple[int, int, int]  # (resource index, scope index, item index)


def _number(descriptor, name: str) -> int:
    return descriptor.fields_by_name[name].number


@dataclass(frozen=True)
class ItemLayout:
    """Where an item keeps what this path handles."""

    attributes: int  # field number of the attributes (KeyValue)
    body: int  # field number of an AnyValue body, 0 for none
    walk: frozenset[int]  # fields whose matches send the item to the per-value walk


Spans = list[tuple[int, int]]
# A located string value that changes: (position among the item's attributes or -1 for the
# log body, key or None for the body, text, masked text, whether allowed_values exempted a
# match).
Leaf = tuple[int, str | None, str, str, bool]
# (key or None for the log body, text, spans to mask) -> (masked text, exempted), or None when
# the key needs more than a value check.
Decide = Callable[[str | None, str, Spans], tuple[str, bool] | None]


def item_layouts(redact_span_names: bool) -> dict[Signal, ItemLayout]:
    """The layouts of log records and spans (span names walked when they are redacted)."""
    span_walk = {_number(Span.DESCRIPTOR, n) for n in ("events", "links", "status")}
    if redact_span_names:
        span_walk.add(_number(Span.DESCRIPTOR, "name"))
    return {
        Signal.LOGS: ItemLayout(_number(LogRecord.DESCRIPTOR, "attributes"),
                                _number(LogRecord.DESCRIPTOR, "body"), frozenset()),
        Signal.TRACES: ItemLayout(_number(Span.DESCRIPTOR, "attributes"), 0,
                                  frozenset(span_walk)),
    }


@dataclass
class Plan:
    """What the processor does to a request: visit, walk or mask where."""

    matches: list[Match]  # every match, sorted by start
    resources: set[int] = field(default_factory=set)
    scopes: set[tuple[int, int]] = field(default_factory=set)
    walk: set[ItemId] = field(default_factory=set)
    leaves: dict[ItemId, list[Leaf]] = field(default_factory=dict)
    # (header start, value start, value end) of the items walked or with leaves
    bounds: dict[ItemId, tuple[int, int, int]] = field(default_factory=dict)


class NeedsWalk(Exception):
    """This item holds a match the dense path does not follow."""


@dataclass
class _Frame:
    """Item records (by header start) and resource/scope records of one request."""

    heads: list[int] = field(default_factory=list)
    bounds: list[tuple[int, int]] = field(default_factory=list)  # item value start, end
    ids: list[ItemId] = field(default_factory=list)
    resources: list[tuple[int, int, int]] = field(default_factory=list)  # start, end, index
    scopes: list[tuple[int, int, int, int]] = field(default_factory=list)


def _frame(blob: bytes) -> _Frame:
    """Walk request -> resource_X -> scope_X -> items (the same layout for every signal)."""
    out = _Frame()
    for ri, (a, b) in enumerate(length_delimited(blob, 0, len(blob), 1)):
        out.resources.append((a, b, ri))
        for si, (c, d) in enumerate(length_delimited(blob, a, b, 2)):
            out.scopes.append((c, d, ri, si))
            k = -1
            i = c
            while i < d:  # _fields inlined for the one-byte tags and short items
                h = i
                tag = blob[i]
                if tag != 0x12:  # not items (field 2, length-delimited) in one byte
                    number3, wire3, e, i = field_at(blob, i)
                    if i > d:
                        raise ValueError("field runs past its scope")
                    if number3 != 2 or wire3 != 2:
                        continue
                    n = i - e
                else:
                    n = blob[i + 1]
                    e = i + 2
                    if n >= 0x80:
                        n, e = read_varint(blob, i + 1)
                    i = e + n
                    if i > d:
                        raise ValueError("item runs past its scope")
                k += 1
                out.heads.append(h)
                out.bounds.append((e, e + n))
                out.ids.append((ri, si, k))
    return out


def _overlapping(records: list, s: int, e: int) -> Iterator:
    """The (start, end, ...) records, sorted by start and nested or disjoint, that overlap
    [s, e)."""
    r = max(bisect_right(records, (s, float("inf"))) - 1, 0)
    while r < len(records) and records[r][0] < e:
        if records[r][1] > s:
            yield records[r]
        r += 1


class DenseScanner:
    """Exact value-pattern matches over a serialized request, mapped to string values."""

    def __init__(self, patterns: list[tuple[ValuePattern, Regex]], keys: str | None,
                 redact_span_names: bool, decide: Decide):
        self.patterns = patterns
        self.decide = decide
        self.refines = [p.refine for p, _ in patterns]
        self.keys = Regex(keys) if keys else None
        self.set = PatternSet([p.regex for p, _ in patterns] + ([keys] if keys else []))
        self.layouts = item_layouts(redact_span_names)

    def matches(self, blob: bytes) -> list[Match]:
        """Every pattern's successive matches over `blob`, sorted by start."""
        out: list[Match] = []
        for i in self.set.match(blob) or ():
            if i == len(self.patterns):
                out += self.keys.all_in(blob, KEY)  # type: ignore[union-attr]
            else:
                pattern, regex = self.patterns[i]
                out += regex.all_in(blob, i, pattern.group)
        out.sort()
        return out

    def plan(self, signal: Signal, blob: bytes) -> Plan:
        """Where the matches fall. Raises ValueError/IndexError on framing it cannot follow."""
        layout = self.layouts[signal]
        frame = _frame(blob)
        plan = Plan(self.matches(blob))
        heads, bounds, ids = frame.heads, frame.bounds, frame.ids
        t, a, b, hits = -1, 0, 0, []
        end = (len(blob), len(blob), KEY, 0, 0)
        for m in [*plan.matches, end]:
            if m[0] >= b:  # past the current item: its hits are all in
                if hits:
                    plan.bounds[ids[t]] = (heads[t], a, b)
                    self._item(blob, bounds[t], ids[t], hits, layout, plan)
                    hits = []
                if m is end:
                    break
                t = bisect_right(heads, m[0]) - 1
                a, b = bounds[t] if t >= 0 else (0, 0)
            if not (a <= m[0] and m[1] <= b):
                self._stray(frame, m[0], m[1], plan)
            elif m[2] != KEY:
                hits.append(m)
            else:  # a key hit inside the item: walk it
                plan.walk.add(ids[t])
                plan.bounds[ids[t]] = (heads[t], a, b)
        for item in plan.walk:
            plan.leaves.pop(item, None)
        return plan

    def _item(self, blob: bytes, bounds: tuple[int, int], item: ItemId, hits: list[Match],
              layout: ItemLayout, plan: Plan) -> None:
        try:
            leaves = self._leaves(blob, bounds, hits, layout)
        except NeedsWalk:
            plan.walk.add(item)
            return
        if leaves:
            plan.leaves[item] = leaves

    @staticmethod
    def _stray(frame: _Frame, s: int, e: int, plan: Plan) -> None:
        """A match not inside one item: walk every item it touches and visit every resource
        and scope it touches."""
        e = max(e, s + 1)
        t = max(bisect_right(frame.heads, s) - 1, 0)
        while t < len(frame.heads) and frame.heads[t] < e:
            if frame.bounds[t][1] > s:
                plan.walk.add(frame.ids[t])
                plan.bounds[frame.ids[t]] = (frame.heads[t], *frame.bounds[t])
            t += 1
        plan.resources.update(ri for _a, _b, ri in _overlapping(frame.resources, s, e))
        plan.scopes.update((ri, si) for _a, _b, ri, si in _overlapping(frame.scopes, s, e))

    def _leaves(self, blob: bytes, bounds: tuple[int, int], hits: list[Match],
                layout: ItemLayout) -> list[Leaf]:
        """The string values of one item that `hits` touch (fields read up to the last)."""
        leaves: list[Leaf] = []
        first = hits[0][0]
        last = hits[0][1] if len(hits) == 1 else max(m[1] for m in hits)
        attributes, body, walk = layout.attributes, layout.body, layout.walk
        attr = -1
        i, end = bounds
        while i < end:
            tag = blob[i]  # the usual fields inlined: one-byte tags, short lengths
            number, wire, a = tag >> 3, tag & 7, i + 1
            if tag >= 0x80 or (wire == 2 and blob[a] >= 0x80) or wire > 2:
                number, wire, a, b = field_at(blob, i)
            elif wire == 2:
                b = a + 1 + blob[a]
                a += 1
            elif wire == 1:
                b = a + 8
            else:  # varint
                b = a
                while blob[b] >= 0x80:
                    b += 1
                b += 1
            i = b
            if number == attributes:
                attr += 1
            if b <= first:
                continue
            if a >= last:
                break
            if a <= first and last <= b:
                touching = hits
            else:
                touching = [m for m in hits if m[0] < b and m[1] > a]
                if not touching:
                    continue
            if number in walk:
                raise NeedsWalk
            leaf = None
            if wire == 2 and number == attributes:
                leaf = self._attribute(blob, a, b, touching, attr)
            elif wire == 2 and number == body:
                leaf = self._string(blob, a, b, touching, -1, None)
            if leaf is not None:
                leaves.append(leaf)
        if i > end:
            raise ValueError("field runs past its record")
        return leaves

    def _attribute(self, blob: bytes, a: int, b: int, hits: list[Match],
                   index: int) -> Leaf | None:
        key = value = None
        c = a + 2 + blob[a + 1] if b - a >= 4 else b  # the usual encoding: short key, value
        if blob[a] == 0x0A and blob[a + 1] < 0x80 and c + 2 <= b and blob[c] == 0x12 \
                and blob[c + 1] < 0x80 and c + 2 + blob[c + 1] == b:
            key, value = (a + 2, c), (c + 2, b)
        else:
            for number, wire, _start, c, d in fields(blob, a, b):
                if wire == 2 and number in (1, 2):
                    if (key if number == 1 else value) is not None:
                        raise NeedsWalk  # a repeated singular field: merged by the parser
                    if number == 1:
                        key = (c, d)
                    else:
                        value = (c, d)
        if key is None or value is None:
            raise NeedsWalk
        hits = [m for m in hits if m[0] < value[1] and m[1] > value[0]]
        if not hits:
            return None  # matches in the key or the framing only: keys are not masked
        try:
            name = blob[key[0]:key[1]].decode()
        except UnicodeDecodeError:
            raise NeedsWalk from None
        return self._string(blob, value[0], value[1], hits, index, name)

    def _string(self, blob: bytes, a: int, b: int, hits: list[Match], index: int,
                key: str | None) -> Leaf | None:
        """The string of the AnyValue in blob[a:b] with the spans to mask in it. A pattern
        with a match crossing the string's bounds (glued to framing bytes) is matched again
        within the string alone."""
        if b - a < 2 or blob[a] != 0x0A:
            raise NeedsWalk  # not a plain string value
        start, n = a + 2, blob[a + 1]
        if n >= 0x80:
            n, start = read_varint(blob, a + 1)
        end = start + n
        if end != b:
            raise NeedsWalk  # not a plain string value (or more fields after it)
        raw = blob[start:end]
        again = None
        for m in hits:
            if m[0] < start or m[1] > end:
                again = {m[2] for m in hits if m[0] < start or m[1] > end}
                break
        if again:
            hits = [m for m in hits if m[2] not in again]
            for i in again:
                pattern, regex = self.patterns[i]
                hits += regex.all_in(blob, i, pattern.group, start, end)
        ascii_ = raw.isascii()
        try:  # byte offsets to character offsets as `Regex.spans` converts them
            text = raw.decode("ascii") if ascii_ else raw.decode()
            spans: Spans = []
            refines = self.refines
            for _s, _e, i, gs, ge in hits:
                if gs < 0 or ge <= gs:
                    continue
                gs, ge = gs - start, ge - start
                if not ascii_:
                    gs, ge = len(raw[:gs].decode()), len(raw[:ge].decode())
                refine = refines[i]
                if refine is None:
                    spans.append((gs, ge))
                else:
                    spans += refine(text, gs, ge)
        except UnicodeDecodeError:
            raise NeedsWalk from None
        if not spans:
            return None
        decided = self.decide(key, text, spans)
        if decided is None:
            raise NeedsWalk
        masked, exempted = decided
        return (index, key, text, masked, exempted) if masked != text or exempted else None
