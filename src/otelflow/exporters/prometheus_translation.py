"""OTLP metrics -> Prometheus series, with the Go collector's translator rules.

Shared by the `prometheusremotewrite` (push) and `prometheus` (pull) exporters:
- names: `build_name` (full normalisation: unit suffixes, `_total`, `_ratio`, namespace) and
  `normalize_label` (label names), as the Go `pkg/translator/prometheus` package does;
- labels: data point attributes (+ resource attributes when asked) + `job`/`instance` from
  `service.namespace`/`service.name`/`service.instance.id` + external labels;
- `SeriesBuilder`: walks an `ExportMetricsServiceRequest` once and hands every sample to a
  sink. `RemoteWriteEncoder` is the sink that writes remote-write 1.0 protobuf bytes directly
  (no per-sample message objects), grouping samples by series in timestamp order.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from itertools import accumulate
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2

from otelflow._native import known_points, number_entries
from otelflow.exporters.prompb import types_pb2
from otelflow.wire import (
    WireError,
    field_at,
    fields,
    length_delimited,
    read_varint,
    tag_length,
    varint,
)

# -- names ----------------------------------------------------------------------------------

UNIT_MAP = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes", "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes",
    "TB": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent", "$": "dollars",
}
PER_UNIT_MAP = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week",
                "mo": "month", "y": "year"}

_ALNUM_RUN = re.compile(r"[^\W_]+")
_NOT_ALNUM = re.compile(r"\W")
_FORBIDDEN_RUN = re.compile(r"[^\w:]+")

GAUGE, COUNTER, UPDOWN = "gauge", "counter", "updowncounter"
HISTOGRAM, SUMMARY, EXP_HISTOGRAM = "histogram", "summary", "exponential_histogram"
PROM_TYPE = {GAUGE: "gauge", COUNTER: "counter", UPDOWN: "gauge", HISTOGRAM: "histogram",
             SUMMARY: "summary", EXP_HISTOGRAM: "histogram"}
"""The Prometheus metric type of each OTLP kind."""

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""Prometheus' staleness marker: a NaN with a specific bit pattern."""
STALE_BYTES = struct.pack("<Q", 0x7FF0000000000002)
STANDARD_SAMPLE_FIELD = 18
"""Bytes of a TimeSeries' `samples` field holding a double and a millisecond timestamp
between 1971 and 2109 (a 6-byte varint): tag, length, 9 + 7."""


def clean_up_string(text: str) -> str:
    """Alphanumeric runs joined by `_` (`hello, world!` -> `hello_world`)."""
    return "_".join(_ALNUM_RUN.findall(text))


def normalize_label(label: str) -> str:
    """A Prometheus label name: non-alphanumerics -> `_`; `key_` before a leading digit,
    `key` before a single leading underscore (`__` prefixes are kept)."""
    if not label:
        return label
    label = _NOT_ALNUM.sub("_", label)
    if label[0].isdigit():
        return "key_" + label
    if label.startswith("_") and not label.startswith("__"):
        return "key" + label
    return label


def build_name(name: str, unit: str, kind: str | None, namespace: str = "",
               add_suffixes: bool = True) -> str:
    """The Prometheus metric name for an OTLP metric (Go `BuildCompliantName`)."""
    if not add_suffixes:
        base = "_".join(t for t in _FORBIDDEN_RUN.split(name) if t)
        if namespace:
            return f"{namespace}_{base}"
        return "_" + base if base[:1].isdigit() else base
    tokens = _ALNUM_RUN.findall(name)
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main and "{" not in main and "}" not in main:
        prom = clean_up_string(UNIT_MAP.get(main, main))
        if prom and prom not in tokens:
            tokens.append(prom)
    if per and "{" not in per and "}" not in per:
        prom = clean_up_string(PER_UNIT_MAP.get(per, per))
        if prom and prom not in tokens:
            tokens += ("per", prom)
    if kind == COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    if namespace:
        tokens.insert(0, namespace)
    result = "_".join(tokens)
    return "_" + result if result[:1].isdigit() else result


def unit_word(unit: str) -> str:
    """The Prometheus unit for metadata (`s` -> `seconds`, `By/s` -> `bytes_per_second`)."""
    main, _, per = unit.partition("/")
    words = clean_up_string(UNIT_MAP.get(main.strip(), main.strip())) if "{" not in main else ""
    if per.strip() and "{" not in per:
        per_word = clean_up_string(PER_UNIT_MAP.get(per.strip(), per.strip()))
        words = f"{words}_per_{per_word}" if words else f"per_{per_word}"
    return words


def format_float(value: float) -> str:
    """Go `strconv.FormatFloat(v, 'f', -1, 64)`: shortest digits, never an exponent."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


# -- attribute values -------------------------------------------------------------------------

def any_value_str(value: Any) -> str:
    """pcommon `Value.AsString()`: strings as is, numbers in Go's format, bytes base64,
    arrays and maps as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format_float(value.double_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind is None:
        return ""
    return json.dumps(_json_value(value), separators=(",", ":"))


def _json_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_json_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _json_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


def attribute_pairs(attributes: Iterable[Any]) -> list[tuple[str, str]]:
    """Raw (key, string value) pairs of a KeyValue list."""
    pairs = []
    for kv in attributes:
        v = kv.value
        pairs.append((kv.key, v.string_value if v.WhichOneof("value") == "string_value"
                      else any_value_str(v)))
    return pairs


def normalize_pairs(pairs: Iterable[tuple[str, str]],
                    cache: dict[str, str] | None = None) -> dict[str, str]:
    """Normalised label -> value; keys colliding after normalisation have their values joined
    with `;` in the order of the original keys (as the Go translator does). `cache` memoises
    `normalize_label` (bounded by the caller's key space)."""
    out: dict[str, str] = {}
    for key, value in sorted(pairs):
        name = cache.get(key) if cache is not None else None
        if name is None:
            name = normalize_label(key)
            if cache is not None and len(cache) < 10_000:
                cache[key] = name
        out[name] = f"{out[name]};{value}" if name in out else value
    return out


IDENTIFYING = ("service.name", "service.namespace", "service.instance.id")


def job_instance(resource_pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`job` (`namespace/name` or `name`) and `instance` from the service resource attributes."""
    attrs = dict(resource_pairs)
    out = {}
    name = attrs.get("service.name")
    if name is not None:
        ns = attrs.get("service.namespace")
        out["job"] = f"{ns}/{name}" if ns else name
    if "service.instance.id" in attrs:
        out["instance"] = attrs["service.instance.id"]
    return out


# -- protobuf wire helpers --------------------------------------------------------------------

def _field_bytes(tag: int, payload: bytes) -> bytes:
    return tag_length(tag, len(payload)) + payload


def encode_label(name: str, value: str) -> bytes:
    """One `Label` as a length-delimited field 1 of its parent (TimeSeries or Exemplar)."""
    body = _field_bytes(0x0A, name.encode()) + _field_bytes(0x12, value.encode())
    return _field_bytes(0x0A, body)


_DOUBLE = struct.Struct("<d").pack
_DOUBLES = struct.Struct("<d").iter_unpack
_U64 = struct.Struct("<Q").unpack
_U64_BYTES = struct.Struct("<Q").pack
_I64 = struct.Struct("<q").unpack_from
NAME_LABEL = "__name__"


# -- series building --------------------------------------------------------------------------

class LabelSet:
    """The sorted, encoded labels of one data point, ready to take `__name__` (+ `le`/`quantile`).

    `encoded(name_enc)` / `encoded(name_enc, "le", le_enc)` return the label bytes of a
    TimeSeries; the parts around the insertion points are joined once per label set.
    """

    __slots__ = ("_cache", "_encs", "_names", "extra")

    def __init__(self, labels: Mapping[str, str], encode: Callable[[str, str], bytes]):
        names = sorted(n for n in labels if n != NAME_LABEL)
        self._names = names
        self._encs = [encode(n, labels[n]) for n in names]
        self._cache: dict[str, tuple[bytes, bytes, bytes]] = {}
        self.extra: dict[Any, Any] = {}  # per-type caches of derived label bytes

    def _split(self, extra: str) -> tuple[bytes, bytes, bytes]:
        """(before __name__, between __name__ and extra, after extra), excluding `extra`."""
        parts = self._cache.get(extra)
        if parts is None:
            names, encs = self._names, self._encs
            i = bisect_left(names, NAME_LABEL)
            if extra:
                j = bisect_left(names, extra)
                k = j + 1 if j < len(names) and names[j] == extra else j
            else:
                j = k = len(names)
            if j < i:  # extra sorts before __name__ (never for le/quantile); keep it simple
                raise ValueError(f"label {extra!r} sorts before {NAME_LABEL}")
            parts = (b"".join(encs[:i]), b"".join(encs[i:j]), b"".join(encs[k:]))
            self._cache[extra] = parts
        return parts

    def encoded(self, name_enc: bytes, extra: str = "", extra_enc: bytes = b"") -> bytes:
        before, mid, after = self._split(extra)
        return before + name_enc + mid + extra_enc + after


class NumberSeries:
    """A gauge/sum series seen before: its encoded labels and, for remote write, the start of
    its one-sample TimeSeries entry (header + labels + sample header)."""

    __slots__ = ("entry_head", "labels", "stale")

    def __init__(self, labels: bytes, stale: bool):
        self.labels = labels
        self.stale = stale
        body = len(labels) + STANDARD_SAMPLE_FIELD
        self.entry_head = b"\x0a" + varint(body) + labels + b"\x12\x10\x09"


def point_parts(dp: Any) -> tuple[bytes, bytes, bytes, Any]:
    """(time as 8 bytes, value as 8 bytes, attributes + flags serialised as on the wire,
    exemplars or None) of a NumberDataPoint message."""
    value = dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int)
    rest = metrics_pb2.NumberDataPoint(attributes=dp.attributes, flags=dp.flags)
    return (_U64_BYTES(dp.time_unix_nano), _DOUBLE(value), rest.SerializeToString(),
            dp.exemplars or None)


def _value_bytes(buf: bytes, o: int, tag: int) -> bytes:
    """The 8-byte double of a point laid out as SDKs write it, its time field at `o` and its
    value's tag `tag` (0x21 as_double, 0x31 as_int) at o + 9."""
    return buf[o + 10:o + 18] if tag == 0x21 else _DOUBLE(float(_I64(buf, o + 10)[0]))


def only_attributes_and_flags(rest: bytes) -> bool:
    """Whether NumberDataPoint bytes hold nothing but attributes (7) and flags (8)."""
    try:
        return all((number, wire_type) in ((7, 2), (8, 0))
                   for number, wire_type, *_ in fields(rest, 0, len(rest)))
    except WireError:
        return False


def number_data(raw: bytes) -> list[bytes | None]:
    """The Gauge or Sum message bytes of each metric of a serialized
    ExportMetricsServiceRequest, in order; None for other kinds (and for a metric carrying
    its data field twice, which a parser merges)."""
    out: list[bytes | None] = []
    for resource in length_delimited(raw, 0, len(raw), 1):  # resource_metrics
        for scope_start, scope_end in length_delimited(raw, *resource, 2):  # scope_metrics
            pos = scope_start
            while pos < scope_end:
                number, wire_type, start, pos = field_at(raw, pos)
                if number != 2 or wire_type != 2:  # not a metric
                    continue
                data, count, i = None, 0, start
                while i < pos:
                    tag = raw[i]
                    if tag < 0x80 and tag & 7 == 2 and raw[i + 1] < 0x80:  # name, unit, ...
                        number, value = tag >> 3, i + 2
                        i = value + raw[i + 1]
                    else:
                        number, wire_type, value, i = field_at(raw, i)
                        if wire_type != 2:
                            continue
                    if number in _DATA_FIELDS:
                        count += 1
                        data = raw[value:i] if number <= 7 else None
                if i > pos or pos > scope_end:
                    raise WireError("field runs past the end of its message")
                out.append(data if count == 1 else None)
    return out


_DATA_FIELDS = frozenset((5, 7, 9, 10, 11))
"""Metric.data: gauge, sum, histogram, exponential_histogram, summary."""


class SampleRun:
    """Gauge/sum samples of one resource on their way to the sink: they go in one call while
    they share a timestamp, whichever metric they belong to."""

    __slots__ = ("series", "sink", "time_bytes", "ts", "values")

    def __init__(self, sink: SeriesSink):
        self.sink = sink
        self.series: list[NumberSeries] = []
        self.values: list[bytes] = []
        self.time_bytes = b""
        self.ts = 0

    def flush(self) -> None:
        if self.series:
            self.sink.number_samples(self.series, self.values, self.ts)
            self.series, self.values = [], []


class SeriesSink:
    """Receives what `SeriesBuilder` produces. Methods take encoded label bytes."""

    def sample(self, labels: bytes, value: float, ts_ms: int) -> None: ...

    def number_samples(self, series: list[NumberSeries], values: list[bytes],
                       ts_ms: int) -> None:
        """Gauge/sum samples sharing one timestamp; values are 8-byte little-endian doubles."""
        for one, (value,) in zip(series, _DOUBLES(b"".join(values)), strict=True):
            self.sample(one.labels, value, ts_ms)

    def samples(self, series: list[bytes], values: list[float], ts_ms: int) -> None:
        """Several series sharing one timestamp (histogram buckets)."""
        for labels, value in zip(series, values, strict=True):
            self.sample(labels, value, ts_ms)

    def exemplar(self, labels: bytes, exemplar: bytes) -> None: ...

    def histogram(self, labels: bytes, histogram: bytes, ts_ms: int) -> None: ...

    def metadata(self, kind: str, family: str, help_text: str, unit: str) -> None: ...


class TranslationSettings:
    """What shapes the translation (set from the exporter config)."""

    __slots__ = ("add_suffixes", "external_labels", "namespace", "resource_to_telemetry",
                 "send_metadata", "target_info")

    def __init__(self, namespace: str = "", external_labels: Mapping[str, str] | None = None,
                 resource_to_telemetry: bool = False, target_info: bool = True,
                 add_suffixes: bool = True, send_metadata: bool = False):
        self.namespace = namespace
        self.external_labels = {normalize_label(k): v for k, v in (external_labels or {}).items()}
        self.resource_to_telemetry = resource_to_telemetry
        self.target_info = target_info
        self.add_suffixes = add_suffixes
        self.send_metadata = send_metadata


class TranslationResult:
    __slots__ = ("dropped", "errors", "points")

    def __init__(self) -> None:
        self.points = 0
        self.dropped = 0
        self.errors: list[str] = []


class SeriesBuilder:
    """Walks OTLP metrics and emits Prometheus samples into a `SeriesSink`.

    Caches (label name normalisation, encoded labels, metric names, le/quantile strings) live
    on the builder and are bounded; build one per exporter and reuse it.
    """

    CACHE_LIMIT = 50_000
    SERIES_CACHE_LIMIT = 200_000
    """Series whose labels are cached (all metrics, all resources); over it, all are dropped
    (checked when a resource's label set is first seen)."""

    def __init__(self, settings: TranslationSettings):
        self.s = settings
        self._label_cache: dict[tuple[str, str], bytes] = {}
        self._name_cache: dict[tuple[str, str, str | None], str] = {}
        self._float_cache: dict[float, str] = {}
        self._set_cache: dict[tuple, LabelSet] = {}
        # resource labels -> metric name -> point bytes after the value -> series
        self._number_cache: dict[tuple, dict[str, dict[bytes, NumberSeries | None]]] = {}
        self._normalized: dict[str, str] = {}
        self._cached_series = 0

    # -- small caches -----------------------------------------------------------------------

    def encode_label(self, name: str, value: str) -> bytes:
        key = (name, value)
        enc = self._label_cache.get(key)
        if enc is None:
            if len(self._label_cache) > self.CACHE_LIMIT:
                self._label_cache.clear()
            enc = self._label_cache[key] = encode_label(name, value)
        return enc

    def name_of(self, metric: Any, kind: str | None) -> str:
        key = (metric.name, metric.unit, kind)
        name = self._name_cache.get(key)
        if name is None:
            if len(self._name_cache) > self.CACHE_LIMIT:
                self._name_cache.clear()
            name = self._name_cache[key] = build_name(metric.name, metric.unit, kind,
                                                      self.s.namespace, self.s.add_suffixes)
        return name

    def float_label(self, value: float) -> str:
        text = self._float_cache.get(value)
        if text is None:
            if len(self._float_cache) > self.CACHE_LIMIT:
                self._float_cache.clear()
            text = self._float_cache[value] = format_float(value)
        return text

    # -- walking ----------------------------------------------------------------------------

    def build(self, request: Any, sink: SeriesSink, raw: bytes | None = None) -> TranslationResult:
        """Translate every resource of an ExportMetricsServiceRequest into `sink`; `raw`, the
        request's wire bytes when at hand, spares re-serialising each gauge/sum."""
        result = TranslationResult()
        try:
            data = iter(number_data(raw) if raw is not None else ())
        except (WireError, IndexError):  # a field kind upb skips but the walk does not know
            data = iter(())
        for rm in request.resource_metrics:
            self._resource(rm, sink, result, data)
        return result

    def _resource_labels(self, rm: Any) -> tuple[dict[str, str], list[tuple[str, str]]]:
        pairs = attribute_pairs(rm.resource.attributes)
        base = normalize_pairs(pairs) if self.s.resource_to_telemetry else {}
        base.update(job_instance(pairs))
        return base, pairs

    def _resource(self, rm: Any, sink: SeriesSink, result: TranslationResult,
                  data: Iterator[bytes | None]) -> None:
        base, resource_pairs = self._resource_labels(rm)
        base_key = tuple(sorted(base.items()))
        numbers = self._number_caches(base_key)
        run = SampleRun(sink)
        latest = 0
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                ts = self._metric(metric, base, base_key, numbers, run, result,
                                  next(data, None))
                if ts > latest:
                    latest = ts
        run.flush()
        if self.s.target_info and latest:
            self._target_info(resource_pairs, latest, sink)

    def _target_info(self, pairs: list[tuple[str, str]], ts_ms: int, sink: SeriesSink) -> None:
        """`target_info` = 1 with the non-identifying resource attributes + job/instance."""
        rest = [(k, v) for k, v in pairs if k not in IDENTIFYING]
        if not rest:
            return
        labels = normalize_pairs(rest)
        labels.update(job_instance(pairs))
        for key, value in self.s.external_labels.items():
            labels.setdefault(key, value)
        name = f"{self.s.namespace}_target_info" if self.s.namespace else "target_info"
        if self.s.send_metadata:
            sink.metadata(GAUGE, name, "Target metadata", "")
        label_set = LabelSet(labels, self.encode_label)
        sink.sample(label_set.encoded(self.encode_label(NAME_LABEL, name)), 1.0, ts_ms)

    def _labels_of(self, pairs: tuple[tuple[str, str], ...], base: dict[str, str]) -> dict:
        """Resource labels, then point attributes, job/instance back on top, then external
        labels where not already set (the Go translator's precedence)."""
        labels = dict(base)
        if pairs:
            labels.update(normalize_pairs(pairs, self._normalized))
            labels.update((k, v) for k, v in base.items() if k in ("job", "instance"))
        for key, value in self.s.external_labels.items():
            labels.setdefault(key, value)
        return labels

    def _point_labels(self, pairs: tuple[tuple[str, str], ...], base: dict[str, str]) -> LabelSet:
        return LabelSet(self._labels_of(pairs, base), self.encode_label)

    def _number_caches(self, base_key: tuple) -> dict[str, dict[bytes, NumberSeries | None]]:
        """The gauge/sum series caches (per metric name) of one resource's label set."""
        caches = self._number_cache.get(base_key)
        if caches is None:
            if self._cached_series > self.SERIES_CACHE_LIMIT:
                self._number_cache.clear()
                self._cached_series = 0
            caches = self._number_cache[base_key] = {}
        return caches

    def _metric(self, metric: Any, base: dict[str, str], base_key: tuple,
                numbers: dict[str, dict[bytes, NumberSeries | None]], run: SampleRun,
                result: TranslationResult, raw_data: bytes | None = None) -> int:
        """Emit one metric's points; returns the latest timestamp (ms) seen, 0 if none.
        `raw_data` is the metric's Gauge/Sum message as received, if known."""
        field = metric.WhichOneof("data")
        if field is None:
            return 0
        data = getattr(metric, field)
        kind = (COUNTER if data.is_monotonic else UPDOWN) if field == "sum" else field
        points = data.data_points
        if kind not in (GAUGE, SUMMARY) and data.aggregation_temporality != CUMULATIVE:
            result.dropped += len(points)
            result.errors.append(f"metric {metric.name!r}: delta temporality is not "
                                 "supported by Prometheus (points dropped)")
            return 0
        name = self.name_of(metric, kind)
        sink = run.sink
        if self.s.send_metadata and points:
            run.flush()  # a family's samples follow its metadata (the pull exporter's store)
            sink.metadata(kind, name, metric.description, unit_word(metric.unit))
        result.points += len(points)
        if kind in (GAUGE, COUNTER, UPDOWN):
            cache = numbers.get(name)
            if cache is None:
                cache = numbers[name] = {}
            return self._number_points(points, raw_data or data.SerializeToString(), cache,
                                       name, base, run)
        emit = getattr(self, "_emit_" + kind)
        latest = 0
        sets = self._set_cache
        for dp in points:
            key = (base_key, *attribute_pairs(dp.attributes))
            label_set = sets.get(key)
            if label_set is None:
                if len(sets) > self.CACHE_LIMIT:
                    sets.clear()
                label_set = sets[key] = self._point_labels(key[1:], base)
            ts = dp.time_unix_nano // 1_000_000
            try:
                emit(dp, name, label_set, ts, sink)
            except ValueError as exc:  # a point Prometheus cannot represent
                result.points -= 1
                result.dropped += 1
                result.errors.append(f"metric {metric.name!r}: {exc}")
                continue
            if ts > latest:
                latest = ts
        return latest

    def _number_points(self, points: Any, buf: bytes, cache: dict[bytes, NumberSeries | None],
                       name: str, base: dict[str, str], run: SampleRun) -> int:
        """The hot path for gauge/sum points, over `buf`, the Gauge/Sum message's bytes;
        `cache` holds the metric's series by the bytes that tell them apart.

        A point laid out as the SDKs write it (start time, time, value, then attributes and
        flags) is read at fixed offsets; its value is passed on as its 8 little-endian bytes
        (also the remote-write encoding) and its series is found by the bytes after the
        value, so attributes are walked only the first time a series is seen. Other points
        (exemplars, missing or reordered fields) are read from the parsed message. Samples go
        to the sink in runs that share a timestamp, across the metrics of a resource.
        Points of known series at the run's timestamp, nearly all of them, are taken in C
        (`_native.known_points`, the same steps); this loop takes each other point.
        """
        series_run, values, last_time, ts = run.series, run.values, run.time_bytes, run.ts
        pos, end, index, latest = 0, len(buf), -1, 0
        last = len(points) - 1  # stop there: the fields after the points are read elsewhere
        while pos < end and index < last:
            pos, index = known_points(buf, pos, end, index, last, cache, last_time, series_run,
                                      values, STALE_BYTES)
            if pos >= end or index >= last:
                break
            if buf[pos] == 0x0A:  # data_points (field 1)
                length = buf[pos + 1]
                if length < 0x80:
                    i = pos + 2
                else:
                    length, i = read_varint(buf, pos + 1)
                pos = i + length
            else:  # another field, or a point behind an over-long tag
                number, wire_type, i, pos = field_at(buf, pos)
                if number != 1 or wire_type != 2:
                    continue
            index += 1
            o = i + 9 if i < pos and buf[i] == 0x11 else i  # past the start time
            tag = buf[o + 9] if o + 18 <= pos and buf[o] == 0x19 else 0
            # a known series' point (None: unseen, or the object is needed)
            if (tag == 0x21 or tag == 0x31) and (series := cache.get(buf[o + 18:pos])):
                time_bytes = buf[o + 1:o + 9]
                value = _value_bytes(buf, o, tag)
                exemplars = None
            else:
                series, time_bytes, value, exemplars = self._other_point(
                    cache, buf, o, tag, pos, points[index], base, name)
            if time_bytes != last_time:
                run.flush()
                series_run, values = run.series, run.values
                last_time = run.time_bytes = time_bytes
                ts = run.ts = _U64(time_bytes)[0] // 1_000_000
                if ts > latest:
                    latest = ts
            series_run.append(series)
            values.append(STALE_BYTES if series.stale else value)
            if exemplars:
                run.flush()
                series_run, values = run.series, run.values
                for ex in exemplars:
                    run.sink.exemplar(series.labels, self.encode_exemplar(ex))
        return ts if index >= 0 and ts > latest else latest

    def _other_point(self, cache: dict[bytes, NumberSeries | None], buf: bytes, o: int,
                     tag: int, end: int, dp: Any, base: dict[str, str], name: str,
                     ) -> tuple[NumberSeries, bytes, bytes, Any]:
        """(series, time, value, exemplars or None) of a point the fast path does not know:
        a new series in the SDK layout (cached), else read from the message `dp`."""
        if tag == 0x21 or tag == 0x31:
            rest = buf[o + 18:end]
            if rest not in cache:
                series = self._new_series(cache, rest, dp, base, name)
                if series is not None:
                    return series, buf[o + 1:o + 9], _value_bytes(buf, o, tag), None
        time_bytes, value, rest, exemplars = point_parts(dp)
        series = cache.get(rest) or self._new_series(cache, rest, dp, base, name)
        assert series is not None  # point_parts' bytes are attributes and flags only
        return series, time_bytes, value, exemplars

    def _new_series(self, cache: dict[bytes, NumberSeries | None], rest: bytes, dp: Any,
                    base: dict[str, str], name: str) -> NumberSeries | None:
        """Cache the series of a point whose bytes after the value are `rest`; None (also
        cached) when `rest` holds more than attributes and flags, so that such points are
        read from the message."""
        if not only_attributes_and_flags(rest):
            cache[rest] = None
            return None
        self._cached_series += 1
        series = cache[rest] = NumberSeries(self._number_labels(dp, base, name),
                                            bool(dp.flags & NO_RECORDED_VALUE))
        return series

    def _number_labels(self, dp: Any, base: dict[str, str], name: str) -> bytes:
        """The encoded, sorted labels of a new gauge/sum series, `__name__` included."""
        labels = self._labels_of(tuple(attribute_pairs(dp.attributes)), base)
        labels[NAME_LABEL] = name
        encode = self.encode_label
        return b"".join([encode(k, labels[k]) for k in sorted(labels)])

    # -- per type ---------------------------------------------------------------------------

    def _emit_histogram(self, dp: Any, name: str, labels: LabelSet, ts: int,
                        sink: SeriesSink) -> None:
        """`_bucket{le}` (cumulative, `+Inf` = count), `_sum` (when set), `_count`; exemplars
        go to the first bucket whose bound holds their value."""
        bounds = tuple(dp.explicit_bounds)
        key = (name, bounds)
        encs = labels.extra.get(key)
        if encs is None:
            encs = labels.extra[key] = self._histogram_labels(labels, name, bounds)
        counts = list(dp.bucket_counts)
        n = min(len(bounds), len(counts))
        if dp.flags & NO_RECORDED_VALUE:
            values = [STALE_NAN] * (n + 3)
        else:
            values = [float(c) for c in accumulate(counts[:n])]
            values += (float(dp.count), dp.sum, float(dp.count))
        series = [*encs[0][:n], *encs[1:]]
        if not dp.HasField("sum"):
            del series[-2], values[-2]
        sink.samples(series, values, ts)
        if dp.exemplars:
            buckets = [*zip(bounds[:n], encs[0][:n], strict=True), (math.inf, encs[1])]
            for ex in dp.exemplars:
                value = ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int)
                enc = next(enc for bound, enc in buckets if value <= bound)
                sink.exemplar(enc, self.encode_exemplar(ex))

    def _histogram_labels(self, labels: LabelSet, name: str,
                          bounds: tuple[float, ...]) -> tuple[list[bytes], bytes, bytes, bytes]:
        """(bucket label bytes per bound, +Inf bucket, _sum, _count)."""
        enc = self.encode_label
        bucket_name = enc(NAME_LABEL, name + "_bucket")
        buckets = [labels.encoded(bucket_name, "le", enc("le", self.float_label(b)))
                   for b in bounds]
        return (buckets, labels.encoded(bucket_name, "le", enc("le", "+Inf")),
                labels.encoded(enc(NAME_LABEL, name + "_sum")),
                labels.encoded(enc(NAME_LABEL, name + "_count")))

    def _emit_summary(self, dp: Any, name: str, labels: LabelSet, ts: int,
                      sink: SeriesSink) -> None:
        stale = bool(dp.flags & NO_RECORDED_VALUE)
        enc_label = self.encode_label
        base = enc_label(NAME_LABEL, name)
        for q in dp.quantile_values:
            enc = labels.encoded(base, "quantile",
                                 enc_label("quantile", self.float_label(q.quantile)))
            sink.sample(enc, STALE_NAN if stale else q.value, ts)
        sink.sample(labels.encoded(enc_label(NAME_LABEL, name + "_sum")),
                    STALE_NAN if stale else dp.sum, ts)
        sink.sample(labels.encoded(enc_label(NAME_LABEL, name + "_count")),
                    STALE_NAN if stale else float(dp.count), ts)

    def _emit_exponential_histogram(self, dp: Any, name: str, labels: LabelSet, ts: int,
                                    sink: SeriesSink) -> None:
        enc = labels.encoded(self.encode_label(NAME_LABEL, name))
        sink.histogram(enc, native_histogram(dp, ts), ts)
        for ex in dp.exemplars:
            sink.exemplar(enc, self.encode_exemplar(ex))

    # -- exemplars --------------------------------------------------------------------------

    def encode_exemplar(self, ex: Any) -> bytes:
        """An `Exemplar` message body: trace_id/span_id (hex) + filtered attributes."""
        pairs = normalize_pairs(attribute_pairs(ex.filtered_attributes))
        if ex.trace_id:
            pairs["trace_id"] = ex.trace_id.hex()
        if ex.span_id:
            pairs["span_id"] = ex.span_id.hex()
        body = b"".join(self.encode_label(k, pairs[k]) for k in sorted(pairs))
        value = ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int)
        body += b"\x11" + _DOUBLE(value)
        ts = ex.time_unix_nano // 1_000_000
        if ts:
            body += b"\x18" + varint(ts)
        return body


# -- native histograms ------------------------------------------------------------------------

MAX_SCHEMA, MIN_SCHEMA = 8, -4


def native_histogram(dp: Any, ts_ms: int) -> bytes:
    """An OTLP exponential histogram point as a Prometheus native histogram (`Histogram`).

    OTLP bucket index i covers (base^i, base^(i+1)]; Prometheus index i covers
    (base^(i-1), base^i], hence the +1 on offsets. Scales above 8 are merged down to 8;
    scales below -4 cannot be represented and raise ValueError.
    """
    scale = dp.scale
    if scale < MIN_SCHEMA:
        raise ValueError(f"exponential histogram scale {scale} is below {MIN_SCHEMA}")
    positive = _downscale(dp.positive.offset, list(dp.positive.bucket_counts), scale - MAX_SCHEMA)
    negative = _downscale(dp.negative.offset, list(dp.negative.bucket_counts), scale - MAX_SCHEMA)
    h = types_pb2.Histogram(schema=min(scale, MAX_SCHEMA), zero_threshold=dp.zero_threshold,
                            timestamp=ts_ms)
    stale = bool(dp.flags & NO_RECORDED_VALUE)
    if stale:
        h.sum = STALE_NAN
        h.count_int = 0
        h.zero_count_int = 0
    else:
        h.count_int = dp.count
        h.sum = dp.sum if dp.HasField("sum") else 0.0
        h.zero_count_int = dp.zero_count
        _fill_buckets(h.positive_spans, h.positive_deltas, *positive)
        _fill_buckets(h.negative_spans, h.negative_deltas, *negative)
    return h.SerializeToString()


def _downscale(offset: int, counts: list[int], by: int) -> tuple[int, list[int]]:
    for _ in range(max(by, 0)):
        merged: dict[int, int] = {}
        for i, c in enumerate(counts):
            idx = (offset + i) >> 1
            merged[idx] = merged.get(idx, 0) + c
        if not merged:
            break
        offset = min(merged)
        counts = [merged.get(offset + i, 0) for i in range(max(merged) - offset + 1)]
    return offset, counts


def _fill_buckets(spans: Any, deltas: Any, offset: int, counts: list[int]) -> None:
    if not counts:
        return
    spans.add(offset=offset + 1, length=len(counts))
    prev = 0
    for c in counts:
        deltas.append(c - prev)
        prev = c


# -- remote-write encoding --------------------------------------------------------------------

_METADATA_TYPE = {"gauge": 2, "counter": 1, "histogram": 3, "summary": 5}


class RemoteWriteEncoder(SeriesSink):
    """Collects samples per series and writes `prometheus.WriteRequest` bytes.

    Samples of one series are sorted by timestamp; requests are cut so each stays under
    `max_bytes` (a single series larger than that goes alone, as in the Go exporter).
    A gauge/sum series with one sample in the export (the common case) is kept as its
    finished TimeSeries entry; a second sample, an exemplar or a histogram moves it to the
    general per-series lists.
    """

    __slots__ = ("_entries", "_exemplars", "_histograms", "_last_ts", "_metadata", "_series")

    def __init__(self) -> None:
        self._entries: dict[bytes, bytes] = {}  # labels -> whole one-sample TimeSeries field
        # labels -> one encoded Sample (bytes), or a list of them once a second one arrives
        self._series: dict[bytes, bytes | list[bytes]] = {}
        self._exemplars: dict[bytes, list[bytes]] = {}
        self._histograms: dict[bytes, list[tuple[int, bytes]]] = {}
        self._metadata: dict[str, bytes] = {}
        self._last_ts: tuple[int, bytes, bytes] = (-1, b"", b"")

    def _sample_parts(self, ts_ms: int) -> tuple[bytes, bytes]:
        """(field header + double tag, timestamp tail) of a Sample at `ts_ms`."""
        last = self._last_ts
        if last[0] != ts_ms:
            tail = b"\x10" + varint(ts_ms) if ts_ms else b""
            last = self._last_ts = (ts_ms, bytes((0x12, 9 + len(tail), 0x09)), tail)
        return last[1], last[2]

    def _general(self, labels: bytes) -> None:
        """Move a one-sample entry of `labels` to the per-series lists."""
        entry = self._entries.pop(labels, None)
        if entry is not None:
            self._add(labels, entry[-STANDARD_SAMPLE_FIELD:])

    def _add(self, labels: bytes, encoded: bytes) -> None:
        store = self._series
        existing = store.get(labels)
        if existing is None:
            store[labels] = encoded
        elif type(existing) is bytes:
            store[labels] = [existing, encoded] if existing else encoded
        else:
            existing.append(encoded)

    def sample(self, labels: bytes, value: float, ts_ms: int) -> None:
        if self._entries:
            self._general(labels)
        head, tail = self._sample_parts(ts_ms)
        self._add(labels, head + _DOUBLE(value) + tail)

    def number_samples(self, series: list[NumberSeries], values: list[bytes],
                       ts_ms: int) -> None:
        head, tail = self._sample_parts(ts_ms)
        if len(tail) + 11 != STANDARD_SAMPLE_FIELD:
            super().number_samples(series, values, ts_ms)
            return
        entries, general = self._entries, self._series
        labels, finished = number_entries(series, values, tail)
        if entries.keys().isdisjoint(labels) and (not general or general.keys().isdisjoint(labels)):
            before = len(entries)
            entries.update(zip(labels, finished, strict=True))
            if len(entries) - before == len(labels):  # no series twice in the run
                return
            for one in labels:  # back out; the one-by-one path groups the repeated series
                entries.pop(one, None)
        for one, value, entry in zip(series, values, finished, strict=True):
            if entries.setdefault(one.labels, entry) is not entry:  # a second sample
                self._general(one.labels)
                self._add(one.labels, head + value + tail)
            elif general and one.labels in general:  # the series is already a list
                del entries[one.labels]
                self._add(one.labels, head + value + tail)

    def samples(self, series: list[bytes], values: list[float], ts_ms: int) -> None:
        if self._entries:
            for labels in series:
                self._general(labels)
        head, tail = self._sample_parts(ts_ms)
        for labels, value in zip(series, values, strict=True):
            self._add(labels, head + _DOUBLE(value) + tail)

    def exemplar(self, labels: bytes, exemplar: bytes) -> None:
        self._general(labels)
        self._exemplars.setdefault(labels, []).append(_field_bytes(0x1A, exemplar))
        self._series.setdefault(labels, b"")

    def histogram(self, labels: bytes, histogram: bytes, ts_ms: int) -> None:
        self._general(labels)
        self._histograms.setdefault(labels, []).append((ts_ms, _field_bytes(0x22, histogram)))
        self._series.setdefault(labels, b"")

    def metadata(self, kind: str, family: str, help_text: str, unit: str) -> None:
        if family in self._metadata:
            return
        body = b"\x08" + varint(_METADATA_TYPE.get(PROM_TYPE.get(kind, ""), 0))
        body += _field_bytes(0x12, family.encode())
        if help_text:
            body += _field_bytes(0x22, help_text.encode())
        if unit:
            body += _field_bytes(0x2A, unit.encode())
        self._metadata[family] = _field_bytes(0x1A, body)

    @property
    def series_count(self) -> int:
        return len(self._entries) + len(self._series)

    def requests(self, max_bytes: int) -> list[bytes]:
        """The WriteRequest payloads (uncompressed), each at most `max_bytes` where possible."""
        out: list[bytes] = []
        parts: list[bytes] = []
        size = 0
        for entry in self._fields():
            if parts and size + len(entry) > max_bytes:
                out.append(b"".join(parts))
                parts, size = [], 0
            parts.append(entry)
            size += len(entry)
        if parts:
            out.append(b"".join(parts))
        return out

    def _fields(self) -> Iterator[bytes]:
        """Every WriteRequest field: one-sample series, the other series, then metadata."""
        yield from self._entries.values()
        exemplars, histograms = self._exemplars, self._histograms
        for labels, samples in self._series.items():
            if type(samples) is bytes:
                body = labels + samples
            else:
                body = labels + b"".join(sorted(samples, key=_sample_ts))
            if exemplars and labels in exemplars:
                body += b"".join(exemplars[labels])
            if histograms and labels in histograms:
                body += b"".join([h for _, h in sorted(histograms[labels], key=_first)])
            yield _field_bytes(0x0A, body)
        yield from self._metadata.values()


def _first(item: tuple[int, bytes]) -> int:
    return item[0]


def _sample_ts(sample: bytes) -> int:
    """The timestamp of an encoded Sample field (tag, len, 0x09 + 8 bytes, 0x10 varint)."""
    ts, shift = 0, 0
    for byte in sample[12:]:
        ts |= (byte & 0x7F) << shift
        shift += 7
    return ts
