"""Scraped Prometheus metric families -> OTLP metrics, as the Go prometheus receiver maps them.

counter -> monotonic cumulative Sum (start time from `<name>_created`, else the first scrape
that saw the series, reset when the value drops); gauge/unknown -> Gauge; histogram ->
Histogram with per-bucket counts; summary -> Summary. Series that disappear, or every series
of a target that fails, get a point flagged NO_RECORDED_VALUE (the OTLP staleness marker).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from opentelemetry.proto.metrics.v1 import metrics_pb2

SCOPE_NAME = "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def _set_attrs(point, labels: dict[str, str]) -> None:
    attributes = point.attributes
    for key, value in labels.items():
        attributes.add(key=key).value.string_value = value


class SeriesState:
    """Per-target memory across scrapes: start times of cumulative series, what was seen."""

    def __init__(self):
        self.starts: dict[SeriesKey, tuple[int, float]] = {}  # key -> (start ns, last value)
        self.seen: dict[SeriesKey, tuple[str, str]] = {}  # key -> (metric name, kind)

    def start_time(self, key: SeriesKey, now_ns: int, value: float) -> int:
        start, last = self.starts.get(key, (now_ns, value))
        if value < last:  # counter reset
            start = now_ns
        self.starts[key] = (start, value)
        return start


def families_to_metrics(families: Iterable, now_ns: int, state: SeriesState,
                        scope: metrics_pb2.ScopeMetrics) -> set[SeriesKey]:
    """Append one OTLP metric per family to `scope`; return the series keys written."""
    families = list(families)
    created = {f.name[: -len("_created")]: _created_index(f.samples) for f in families
               if f.name.endswith("_created") and f.type in ("gauge", "unknown")}
    counters = {f.name for f in families if f.type == "counter"}
    written: set[SeriesKey] = set()
    for family in families:
        if not family.samples or (family.name.endswith("_created")
                                  and family.name[: -len("_created")] in counters):
            continue  # empty, or folded into the counter's start time
        convert = _CONVERTERS.get(family.type, _gauge)
        written |= convert(family, scope.metrics.add(), now_ns, state, created.get(family.name))
    return written


def _metric(family, metric: metrics_pb2.Metric, name: str) -> None:
    metric.name = name
    metric.description = family.documentation or ""
    metric.unit = getattr(family, "unit", "") or ""


def _timestamp(sample, now_ns: int) -> int:
    return int(sample.timestamp * 1e9) if sample.timestamp is not None else now_ns


def _key(name: str, labels: dict[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


Created = dict[tuple[tuple[str, str], ...], int]  # sorted labels -> creation time (ns)


def _created_index(samples: Iterable) -> Created:
    """`<name>_created` samples by label set, looked up once per series (not scanned)."""
    return {tuple(sorted(s.labels.items())): int(s.value * 1e9) for s in samples}


def _counter(family, metric, now_ns, state, created: Created | None) -> set[SeriesKey]:
    samples = [s for s in family.samples if s.name.endswith("_total") or s.name == family.name]
    name = samples[0].name if samples else family.name
    _metric(family, metric, name)
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = CUMULATIVE
    # OpenMetrics puts `<name>_created` inside the counter family
    own_created = _created_index(s for s in family.samples if s.name.endswith("_created"))
    created = created or {}
    keys = set()
    for sample in samples:
        key = _key(name, sample.labels)
        point = metric.sum.data_points.add()
        _set_attrs(point, sample.labels)
        point.time_unix_nano = _timestamp(sample, now_ns)
        start = created.get(key[1]) or own_created.get(key[1])
        point.start_time_unix_nano = start or state.start_time(key, point.time_unix_nano,
                                                                sample.value)
        point.as_double = sample.value
        keys.add(key)
        state.seen[key] = (name, "sum")
    return keys


def _gauge(family, metric, now_ns, state, _created) -> set[SeriesKey]:
    _metric(family, metric, family.name)
    keys = set()
    for sample in family.samples:
        point = metric.gauge.data_points.add()
        _set_attrs(point, sample.labels)
        point.time_unix_nano = _timestamp(sample, now_ns)
        point.as_double = sample.value
        key = _key(sample.name, sample.labels)
        keys.add(key)
        state.seen[key] = (sample.name, "gauge")
    return keys


def _group(family, drop: str) -> dict[tuple[tuple[str, str], ...], list]:
    groups: dict[tuple[tuple[str, str], ...], list] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != drop}
        groups.setdefault(tuple(sorted(labels.items())), []).append(sample)
    return groups


def _histogram(family, metric, now_ns, state, created: Created | None) -> set[SeriesKey]:
    _metric(family, metric, family.name)
    metric.histogram.aggregation_temporality = CUMULATIVE
    keys = set()
    for label_items, samples in _group(family, "le").items():
        labels = dict(label_items)
        buckets = sorted(((float(s.labels["le"]), s.value) for s in samples
                          if s.name.endswith("_bucket")), key=lambda b: b[0])
        total = next((s.value for s in samples if s.name.endswith("_count")), None)
        point = metric.histogram.data_points.add()
        _set_attrs(point, labels)
        point.time_unix_nano = _timestamp(samples[0], now_ns)
        point.sum = next((s.value for s in samples if s.name.endswith("_sum")), 0.0)
        previous = 0.0
        for bound, cumulative in buckets:
            if not math.isinf(bound):
                point.explicit_bounds.append(bound)
            point.bucket_counts.append(int(cumulative - previous))
            previous = cumulative
        point.count = int(total if total is not None else previous)
        key = _key(family.name, labels)
        start = created.get(label_items) if created else None
        point.start_time_unix_nano = start or state.start_time(key, point.time_unix_nano,
                                                                point.count)
        keys.add(key)
        state.seen[key] = (family.name, "histogram")
    return keys


def _summary(family, metric, now_ns, state, created: Created | None) -> set[SeriesKey]:
    _metric(family, metric, family.name)
    keys = set()
    for label_items, samples in _group(family, "quantile").items():
        labels = dict(label_items)
        point = metric.summary.data_points.add()
        _set_attrs(point, labels)
        point.time_unix_nano = _timestamp(samples[0], now_ns)
        for sample in samples:
            if "quantile" in sample.labels:
                q = point.quantile_values.add()
                q.quantile, q.value = float(sample.labels["quantile"]), sample.value
            elif sample.name.endswith("_sum"):
                point.sum = sample.value
            elif sample.name.endswith("_count"):
                point.count = int(sample.value)
        key = _key(family.name, labels)
        start = created.get(label_items) if created else None
        point.start_time_unix_nano = start or state.start_time(key, point.time_unix_nano,
                                                                point.count)
        keys.add(key)
        state.seen[key] = (family.name, "summary")
    return keys


_CONVERTERS = {"counter": _counter, "gauge": _gauge, "histogram": _histogram,
               "summary": _summary, "unknown": _gauge, "untyped": _gauge}


def stale_markers(keys: Iterable[SeriesKey], state: SeriesState, now_ns: int,
                  scope: metrics_pb2.ScopeMetrics) -> None:
    """One NO_RECORDED_VALUE point per series that stopped being reported."""
    for key in sorted(keys):
        name, kind = state.seen.pop(key)
        state.starts.pop(key, None)
        metric = scope.metrics.add()
        metric.name = name
        if kind == "sum":
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = CUMULATIVE
        elif kind in ("histogram",):
            metric.histogram.aggregation_temporality = CUMULATIVE
        container = getattr(metric, kind)
        point = container.data_points.add()
        _set_attrs(point, dict(key[1]))
        point.time_unix_nano = now_ns
        point.flags = NO_RECORDED_VALUE
