"""Reading the numbers a `drift` feature watches out of OTLP requests, per signal.

A collector turns one request into {(watch index, group values): [samples]} touching only
what it must: resource attributes once per resource, then per item the span name, times, or
the few attributes a feature reads (`_Picker` tries each key where it was found last).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otelflow.pdata import Signal
from otelflow.processors.drift_detectors import DetectorSettings

if TYPE_CHECKING:
    from otelflow.processors.drift import FeatureConfig


@dataclass(frozen=True)
class Watch:
    """A feature compiled for the hot path."""

    index: int
    feature: FeatureConfig
    settings: DetectorSettings
    consecutive: int
    severity: str
    service: str | None
    group_by: tuple[str, ...]



def _number(value: Any) -> float | None:
    """An AnyValue holding an int or double, as float (anything else: None)."""
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return value.double_value
    if kind == "int_value":
        return float(value.int_value)
    return None


def _text(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    return "" if kind is None else str(getattr(value, kind))


def _pick(attributes: Iterable[Any], wanted: frozenset[str]) -> dict[str, Any]:
    """The AnyValues of the `wanted` keys present in a KeyValue list (stops when all found)."""
    found: dict[str, Any] = {}
    for kv in attributes:
        if kv.key in wanted:
            found[kv.key] = kv.value
            if len(found) == len(wanted):
                break
    return found


class _Picker:
    """Reads a few keys from KeyValue lists, trying first where each key was last found.

    Items of one instrumentation keep their attributes in the same order, and indexing one
    KeyValue is far cheaper than iterating the list (each element becomes a Python object).
    """

    __slots__ = ("keys", "positions")

    def __init__(self, keys: Iterable[str]):
        self.keys = tuple(sorted(keys))
        self.positions = [0] * len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def pick(self, attributes: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        size = len(attributes)
        for i, key in enumerate(self.keys):
            pos = self.positions[i]
            if pos < size:
                kv = attributes[pos]
                if kv.key == key:
                    found[key] = kv.value
                    continue
            for pos, kv in enumerate(attributes):
                if kv.key == key:
                    found[key] = kv.value
                    self.positions[i] = pos
                    break
        return found


class _Collector:
    """Collects {(watch index, group values): [samples]} from one request of a signal."""

    def __init__(self, watches: list[Watch]):
        self.watches = watches
        self._res_keys = frozenset({"service.name"} | {k for w in watches for k in w.group_by})
        self._plans: dict[str, Any] = {}

    def collect(self, message: Any) -> dict[tuple, list[float]]:
        raise NotImplementedError

    def _resource(self, resource: Any) -> tuple[str, dict[str, str]]:
        attrs = {k: _text(v) for k, v in _pick(resource.attributes, self._res_keys).items()}
        return attrs.get("service.name", ""), attrs

    def _for_service(self, service: str) -> list[Watch]:
        return [w for w in self.watches if w.service is None or w.service == service]

    @staticmethod
    def _group(watch: Watch, res: dict[str, str], item: dict[str, Any] | None) -> tuple:
        if not watch.group_by:
            return ()
        if item is None:
            return tuple(res.get(k, "") for k in watch.group_by)
        return tuple(res[k] if k in res else _text(item[k]) if k in item else ""
                     for k in watch.group_by)


class _ItemPlan:
    """Per service and resource shape: which watches apply, and what each reads per item."""

    __slots__ = ("any_name", "by_name", "item_keys", "pickers")

    def __init__(self, watches: list[Watch], res: dict[str, str], name_of):
        self.any_name = [w for w in watches if not name_of(w)]
        named: dict[str, list[Watch]] = defaultdict(list)
        for w in watches:
            if name_of(w):
                named[name_of(w)].append(w)
        self.by_name = {name: ws + self.any_name for name, ws in named.items()}
        self.item_keys = {w.index: frozenset(k for k in w.group_by if k not in res)
                          | ({a} if (a := _item_attribute(w)) else frozenset())
                          for w in watches}
        self.pickers = {index: _Picker(keys) for index, keys in self.item_keys.items()}

    def bind(self, out: dict[tuple, list[float]], res: dict[str, str]):
        """Per resource: (by_name, any_name) of (watch, attribute, picker, target).

        The target is the output list when the group comes from the resource alone (the
        per-item loop only appends), else a reader of the group from item attributes."""
        def binding(w: Watch) -> tuple:
            attr = _item_attribute(w)
            if self.item_keys[w.index] - {attr}:
                return w, attr, self.pickers[w.index], _group_reader(w, res)
            return w, attr, self.pickers[w.index], out[(w.index, _Collector._group(w, res, None))]

        bound = {w.index: binding(w) for ws in (*self.by_name.values(), self.any_name)
                 for w in ws}
        return ({name: [bound[w.index] for w in ws] for name, ws in self.by_name.items()},
                [bound[w.index] for w in self.any_name])


def _item_attribute(watch: Watch) -> str | None:
    f = watch.feature
    return f.span.attribute if f.span else f.log.attribute if f.log else None


class _SpanCollector(_Collector):
    def collect(self, message: Any) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = defaultdict(list)
        for rs in message.resource_spans:
            service, res = self._resource(rs.resource)
            plan = self._plan(service, res)
            if plan is None:
                continue
            by_name, any_name = plan.bind(out, res)
            fast = _single_duration(by_name, any_name)
            if fast is not None:
                self._durations(rs, *fast)
                continue
            for ss in rs.scope_spans:
                for span in ss.spans:
                    for w, attr, picker, target in by_name.get(span.name, any_name):
                        if attr is None and type(target) is list:  # the hot case
                            target.append(
                                (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)
                            continue
                        item = picker.pick(span.attributes)
                        if attr is None:
                            value = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                        else:
                            raw = item.get(attr)
                            value = None if raw is None else _number(raw)
                            if value is None:
                                continue
                        if type(target) is not list:  # a group reader: group is per span
                            target = out[(w.index, target(item))]
                        target.append(value)
        return out

    @staticmethod
    def _durations(rs: Any, name: str | None, target: list[float]) -> None:
        """The common case in a tight loop: one duration feature, group from the resource."""
        append = target.append
        for ss in rs.scope_spans:
            for span in ss.spans:
                if name is None or span.name == name:
                    append((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)

    def _plan(self, service: str, res: dict[str, str]) -> _ItemPlan | None:
        key = (service, tuple(sorted(res)))
        if key not in self._plans:
            watches = self._for_service(service)
            self._plans[key] = _ItemPlan(watches, res, lambda w: w.feature.span.name) \
                if watches else None
        return self._plans[key]


def _group_reader(watch: Watch, res: dict[str, str]) -> Callable[[dict[str, Any]], tuple]:
    """item attributes -> group tuple, with the resource's values filled in ahead."""
    parts = [(k, res.get(k)) for k in watch.group_by]
    if len(parts) == 1:
        key = parts[0][0]
        return lambda item: (_text(item[key]) if key in item else "",)
    return lambda item: tuple(v if v is not None else _text(item[k]) if k in item else ""
                              for k, v in parts)


def _single_duration(by_name: dict[str, list[tuple]],
                     any_name: list[tuple]) -> tuple[str | None, list[float]] | None:
    """(span name or None, output list) when one duration feature is all a resource needs."""
    if len(by_name) + len(any_name) != 1:
        return None
    name, bindings = next(iter(by_name.items())) if by_name else (None, any_name)
    if len(bindings) != 1:
        return None
    _, attr, _, target = bindings[0]
    return (name, target) if attr is None and type(target) is list else None


class _LogCollector(_Collector):
    def collect(self, message: Any) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = defaultdict(list)
        for rl in message.resource_logs:
            service, res = self._resource(rl.resource)
            key = (service, tuple(sorted(res)))
            if key not in self._plans:
                watches = self._for_service(service)
                self._plans[key] = _ItemPlan(watches, res, lambda w: None) if watches else None
            plan = self._plans[key]
            if plan is None:
                continue
            _, bound = plan.bind(out, res)
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    for w, attr, picker, target in bound:
                        item = picker.pick(record.attributes)
                        raw = item.get(attr)
                        value = None if raw is None else _number(raw)
                        if value is not None:
                            (target if type(target) is list
                             else out[(w.index, target(item))]).append(value)
        return out


class _MetricCollector(_Collector):
    def __init__(self, watches: list[Watch]):
        super().__init__(watches)
        self.by_name: dict[str, list[Watch]] = defaultdict(list)
        for w in watches:
            self.by_name[w.feature.metric.name].append(w)

    def collect(self, message: Any) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = defaultdict(list)
        by_name = self.by_name
        for rm in message.resource_metrics:
            service, res = self._resource(rm.resource)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    watches = [w for w in by_name.get(metric.name, ())
                               if w.service is None or w.service == service]
                    if watches:
                        self._points(metric, watches, res, out)
        return out

    def _points(self, metric: Any, watches: list[Watch], res: dict[str, str],
                out: dict[tuple, list[float]]) -> None:
        kind = metric.WhichOneof("data")
        if kind is None:
            return
        plan = [(w, w.feature.metric.quantile, frozenset(k for k in w.group_by if k not in res))
                for w in watches]
        for point in getattr(metric, kind).data_points:
            for w, quantile, missing in plan:
                value = point_value(kind, point, quantile)
                if value is None:
                    continue
                item = _pick(point.attributes, missing) if missing else None
                out[(w.index, self._group(w, res, item))].append(value)


COLLECTORS = {Signal.TRACES: _SpanCollector, Signal.LOGS: _LogCollector,
               Signal.METRICS: _MetricCollector}


def point_value(kind: str, point: Any, quantile: float | None) -> float | None:
    """The number a data point contributes: value, mean, or an estimated quantile."""
    if kind in ("gauge", "sum"):
        which = point.WhichOneof("value")
        return None if which is None else float(getattr(point, which))
    if quantile is None:
        return point.sum / point.count if point.count else None
    if kind == "summary":
        for qv in point.quantile_values:
            if math.isclose(qv.quantile, quantile):
                return qv.value
        return None
    if kind == "histogram":
        return bucket_quantile(quantile, _explicit_buckets(point))
    return bucket_quantile(quantile, _exponential_buckets(point))


def _explicit_buckets(point: Any) -> list[tuple[float, float, int]]:
    bounds = list(point.explicit_bounds)
    counts = list(point.bucket_counts)
    if not counts:
        return []
    low = point.min if point.HasField("min") else (bounds[0] if bounds else 0.0)
    high = point.max if point.HasField("max") else (bounds[-1] if bounds else 0.0)
    edges = [min(low, bounds[0]) if bounds else low, *bounds, max(high, bounds[-1]) if bounds
             else high]
    return [(edges[i], edges[i + 1], c) for i, c in enumerate(counts)]


def _exponential_buckets(point: Any) -> list[tuple[float, float, int]]:
    base = 2.0 ** (2.0 ** -point.scale)
    neg = point.negative
    buckets = [(-(base ** (neg.offset + i + 1)), -(base ** (neg.offset + i)), c)
               for i, c in reversed(list(enumerate(neg.bucket_counts)))]
    if point.zero_count:
        buckets.append((0.0, 0.0, point.zero_count))
    pos = point.positive
    buckets += [(base ** (pos.offset + i), base ** (pos.offset + i + 1), c)
                for i, c in enumerate(pos.bucket_counts)]
    return buckets


def bucket_quantile(q: float, buckets: list[tuple[float, float, int]]) -> float | None:
    """Linear interpolation inside the bucket holding rank q * count (as histogram_quantile)."""
    total = sum(c for _, _, c in buckets)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for low, high, count in buckets:
        if count and seen + count >= rank:
            return low + (high - low) * (rank - seen) / count
        seen += count
    return buckets[-1][1]
