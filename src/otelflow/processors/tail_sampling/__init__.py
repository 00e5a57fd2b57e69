"""`tail_sampling` processor: decide per whole trace, after its spans arrived, which to keep.

Config keys, defaults and decision semantics follow the Go collector's `tail_sampling`
processor. Spans are grouped by trace id across requests and resources at the wire level
(`wire.py`: a pending trace is a few byte strings, not parsed protobufs); a timer task decides
each trace `decision_wait` after its first span (or `decision_wait_after_root_received` after
its root span), parsing it once for the policies, and releases a sampled trace's spans
downstream together in one batch. Later spans of a decided trace follow the decision
(decision caches, else a memory of the last `num_traces` decisions, like Go's trace buffer).
When `num_traces` traces are pending, the oldest is decided early on the spans it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, defaultdict, deque
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import Field, model_validator

from otelflow.component import CreateSettings, Factory, Kind, PermanentError, Processor
from otelflow.config.types import ByteSize, ConfigModel, Duration
from otelflow.pdata import Batch, Signal
from otelflow.processors.tail_sampling.cache import LRU
from otelflow.processors.tail_sampling.policies import (
    DECISION_LABELS,
    DROPPED,
    NOT_SAMPLED,
    SAMPLED,
    Composite,
    Evaluator,
    PolicyCfg,
    build_evaluator,
    final_decision,
)
from otelflow.processors.tail_sampling.wire import Fragment, split_by_trace
from otelflow.wire import WireError

# -- config -------------------------------------------------------------------------------


class DecisionCacheCfg(ConfigModel):
    sampled_cache_size: int = Field(0, ge=0)
    non_sampled_cache_size: int = Field(0, ge=0)


class TailSamplingConfig(ConfigModel):
    decision_wait: Duration = 30.0
    decision_wait_after_root_received: Duration = 0.0
    num_traces: int = Field(50000, gt=0)
    expected_new_traces_per_sec: int = Field(0, ge=0)  # accepted; Python dicts size themselves
    decision_cache: DecisionCacheCfg = Field(default_factory=DecisionCacheCfg)
    sample_on_first_match: bool = False
    block_on_overflow: bool = False
    maximum_trace_size_bytes: ByteSize = 0
    drop_pending_traces_on_shutdown: bool = False
    record_policy: bool = False  # Go: the processor.tailsamplingprocessor.recordpolicy gate
    policies: list[PolicyCfg] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> TailSamplingConfig:
        if self.decision_wait <= 0:
            raise ValueError("decision_wait must be greater than 0")
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.name in seen:
                raise ValueError(f"policies[{i}]: duplicate policy name {policy.name!r}")
            seen.add(policy.name)
        return self


def create(settings: CreateSettings, config: TailSamplingConfig, next_consumer: Any) -> Processor:
    return TailSamplingProcessor(settings, config, next_consumer)


FACTORY = Factory(
    kind=Kind.PROCESSOR,
    type="tail_sampling",
    config=TailSamplingConfig,
    create=create,
    signals=frozenset({Signal.TRACES}),
    description="Samples whole traces by policies after their spans have arrived",
)

# -- processor ----------------------------------------------------------------------------

POLICY_ATTR = "tailsampling.policy"
COMPOSITE_ATTR = "tailsampling.composite_policy"
CACHED_ATTR = "tailsampling.cached_decision"
CHUNK = 1000  # traces decided between two yields to the event loop
Release = tuple[bytes, int]  # encoded ExportTraceServiceRequest fragment(s), span count


class _Trace:
    """A pending trace: its encoded fragments and what the decision needs to know."""

    __slots__ = ("arrival", "decided", "fragments", "size", "span_count", "trace_id")

    def __init__(self, trace_id: bytes, arrival: float):
        self.trace_id = trace_id
        self.arrival = arrival
        self.span_count = 0
        self.size = 0
        self.fragments: list[bytes] = []
        self.decided = False


class _View:
    """A trace parsed for the policies (`policies.TraceView`); owns its message."""

    __slots__ = ("fragments", "message", "span_count", "trace_id", "wire_size")

    def __init__(self, trace: _Trace, data: bytes):
        self.trace_id = trace.trace_id
        self.span_count = trace.span_count
        self.wire_size = len(data)
        self.message = ExportTraceServiceRequest.FromString(data)
        self.fragments = [(rs, [(ss, list(ss.spans)) for ss in rs.scope_spans])
                          for rs in self.message.resource_spans]


class _Policy:
    __slots__ = ("evaluator", "is_composite", "is_drop", "label", "name")

    def __init__(self, cfg: PolicyCfg, component_name: str):
        self.name = cfg.name
        self.evaluator: Evaluator = build_evaluator(cfg)
        self.is_drop = cfg.type == "drop"
        self.is_composite = isinstance(self.evaluator, Composite)
        self.label = f"{component_name}.{cfg.name}" if component_name else cfg.name


class TailSamplingProcessor(Processor):
    """Groups spans by trace id, decides on a timer, releases sampled traces whole."""

    mutates_data = False
    needs_trace_affinity = True  # with service.workers > 1, a trace's spans meet in one worker

    def __init__(self, settings: CreateSettings, config: TailSamplingConfig, next_consumer: Any):
        super().__init__(next_consumer)
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        policies = [_Policy(p, settings.id.name) for p in config.policies]
        # drop policies first: their decision wins, so they may end evaluation early (as Go)
        self._policies = [p for p in policies if p.is_drop] + [p for p in policies if not p.is_drop]
        self._metrics = _Metrics(settings, self.id, len(self._policies))
        self._pending: dict[bytes, _Trace] = {}
        self._queue: deque[_Trace] = deque()  # arrival order: decision_wait deadlines
        self._roots: deque[tuple[float, _Trace]] = deque()  # root-span deadlines (monotone)
        cache = config.decision_cache
        self._sampled_cache: LRU[str] = LRU(cache.sampled_cache_size)
        self._not_sampled_cache: LRU[str] = LRU(cache.non_sampled_cache_size)
        # Without a cache, Go keeps decided traces in its num_traces buffer: remember as many.
        self._decided: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()
        waits = [w for w in (config.decision_wait, config.decision_wait_after_root_received) if w]
        self._tick = min(1.0, max(0.01, min(waits) / 4))  # Go ticks every second
        self._space = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, host: Any) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"{self.id} decisions")
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("decision task failed", error=repr(task.exception()))

    async def shutdown(self) -> None:
        """Stop the timer, then decide every pending trace (or drop them, if configured)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._space.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.config.drop_pending_traces_on_shutdown:
            dropped = sum(t.span_count for t in self._pending.values())
            if dropped:
                self._metrics.dropped(dropped, "pending_on_shutdown")
            self._pending.clear()
            self._queue.clear()
            self._roots.clear()
        else:
            await self._decide_due(time.monotonic(), everything=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._tick)
            if not self._stop.is_set():
                try:
                    await self._decide_due(time.monotonic())
                except Exception as exc:  # keep deciding on later ticks
                    self.log.error("sampling decision run failed", error=repr(exc))

    # -- ingestion --------------------------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        raw = batch.unchanged_bytes
        if raw is None:
            raw = batch.to_bytes()
        now = time.monotonic()
        release: list[Release] = []
        received = 0
        pending, limit = self._pending, self.config.num_traces
        block = self.config.block_on_overflow
        try:
            for fragment in split_by_trace(raw, self._find_roots):
                received += fragment[3]
                if block and fragment[0] not in pending and len(pending) >= limit:
                    await self._wait_for_space()
                self._ingest(fragment, now, release)
        except WireError as exc:
            raise PermanentError(f"malformed trace data: {exc}") from exc
        finally:
            self._metrics.incoming(received)
        if release:
            await self._send(release)

    @property
    def _find_roots(self) -> bool:
        return bool(self.config.decision_wait_after_root_received)

    def _ingest(self, fragment: Fragment, now: float, release: list[Release]) -> None:
        tid, data, body_size, count, root = fragment
        trace = self._pending.get(tid)
        if trace is None:
            if self._late(tid, data, count, now, release):
                return
            if len(self._pending) >= self.config.num_traces:
                self._evict_oldest(now, release)
            trace = _Trace(tid, now)
            self._pending[tid] = trace
            self._queue.append(trace)
            self._metrics.new_traces += 1
        trace.fragments.append(data)
        trace.span_count += count
        if root:
            self._roots.append((now + self.config.decision_wait_after_root_received, trace))
        limit = self.config.maximum_trace_size_bytes
        if limit:
            trace.size += body_size
            if trace.size > limit:
                self._metrics.too_large += 1
                self._settle(trace, NOT_SAMPLED, None, now, counted=False)
                trace.fragments = []

    def _late(self, tid: bytes, data: bytes, count: int, now: float,
              release: list[Release]) -> bool:
        """Spans of an already decided trace follow its decision. True when handled."""
        policy = self._sampled_cache.get(tid)
        if policy is not None:
            self._metrics.early_release(True, count)
            if self.config.record_policy:
                data = _with_attrs(ExportTraceServiceRequest.FromString(data),
                                   _record_attrs(policy, None, cached=True))
            release.append((data, count))
            return True
        if self._not_sampled_cache.get(tid) is not None:
            self._metrics.early_release(False, count)
            return True
        decided = self._decided.get(tid)
        if decided is None:
            return False
        sampled, when = decided
        self._metrics.late_span_age.observe(int(now - when))
        if sampled:
            release.append((data, count))
        return True

    def _evict_oldest(self, now: float, release: list[Release]) -> None:
        """Memory is full: decide the oldest pending trace now, on the spans it has."""
        while self._queue:
            oldest = self._queue.popleft()
            if not oldest.decided:
                self._metrics.dropped_too_early += 1
                self._decide(oldest, now, release)
                return

    async def _wait_for_space(self) -> None:
        while len(self._pending) >= self.config.num_traces and not self._stopped:
            self._space.clear()
            await self._space.wait()

    # -- decisions --------------------------------------------------------------------

    async def _decide_due(self, now: float, everything: bool = False) -> None:
        """Decide the traces whose wait is over (all of them on shutdown), in chunks."""
        started = time.perf_counter()
        due: list[_Trace] = []
        deadline = now - self.config.decision_wait
        queue, roots = self._queue, self._roots
        while queue and (everything or queue[0].arrival <= deadline):
            due.append(queue.popleft())
        while roots and (everything or roots[0][0] <= now):
            due.append(roots.popleft()[1])
        for start in range(0, len(due), CHUNK):
            release: list[Release] = []
            for trace in due[start:start + CHUNK]:
                if not trace.decided:
                    self._decide(trace, now, release)
            self._metrics.flush_policies(self._policies)
            if release:
                await self._send(release)
            else:
                await asyncio.sleep(0)
        self._space.set()
        self._metrics.tick(time.perf_counter() - started, len(self._pending))

    def _decide(self, trace: _Trace, now: float, release: list[Release]) -> None:
        """Evaluate, settle and (when sampled) queue the trace's spans for release."""
        data = b"".join(trace.fragments)
        trace.fragments = []
        try:
            view = _View(trace, data)
        except DecodeError as exc:  # cannot happen for bytes split from a parsed request
            self.log.error("cannot decode buffered trace", error=str(exc))
            self._settle(trace, NOT_SAMPLED, None, now)
            self._metrics.dropped(trace.span_count, "decode_error")
            return
        decision, policy, composite = self._evaluate(view)
        self._settle(trace, decision, policy, now)
        if decision == SAMPLED:
            if self.config.record_policy:
                data = _with_attrs(view.message, _record_attrs(policy, composite, cached=False))
            release.append((data, trace.span_count))

    def _evaluate(self, trace: _View) -> tuple[int, str | None, str | None]:
        """Run the policies as Go does: (final decision, deciding policy, composite sub-policy)."""
        first: dict[int, str] = {}
        composite: dict[str, str | None] = {}
        on_first_match = self.config.sample_on_first_match
        counts, spent = self._metrics.policy_counts, self._metrics.policy_time
        n = trace.span_count
        clock = time.perf_counter
        for i, policy in enumerate(self._policies):
            began = clock()
            try:
                decision = policy.evaluator.evaluate(trace)
            except Exception as exc:
                self._metrics.evaluation_errors += 1
                self._metrics.policy_errors[i] += 1
                self.log.debug("sampling policy error", policy=policy.name, error=repr(exc))
                continue
            finally:
                spent[i] += clock() - began
            row = counts[i]
            row[decision] += 1
            row[decision + 8] += n
            if decision not in first:
                first[decision] = policy.name
                if policy.is_composite:
                    composite[policy.name] = policy.evaluator.tag
            if decision == DROPPED or (on_first_match and decision == SAMPLED):
                break
        decision, policy_name = final_decision(first)
        return decision, policy_name, composite.get(policy_name) if policy_name else None

    def _settle(self, trace: _Trace, decision: int, policy: str | None, now: float,
                counted: bool = True) -> None:
        """Record a final decision and forget the trace (the caller releases its spans)."""
        trace.decided = True
        self._pending.pop(trace.trace_id, None)
        if counted:  # in the global count of policy decisions
            self._metrics.global_decisions[decision] += 1
        sampled = decision == SAMPLED
        cache = self._sampled_cache if sampled else self._not_sampled_cache
        if cache.size > 0:
            cache.put(trace.trace_id, policy or "")
        else:
            self._decided[trace.trace_id] = (sampled, now)
            if len(self._decided) > self.config.num_traces:
                self._decided.popitem(last=False)

    # -- release ----------------------------------------------------------------------

    async def _send(self, release: list[Release]) -> None:
        """Pass released traces on as one request (whole traces, never split)."""
        spans = sum(n for _data, n in release)
        batch = Batch(Signal.TRACES, raw=b"".join(data for data, _n in release), items=spans)
        self._metrics.outgoing(spans)
        try:
            await self.next_consumer.consume(batch)
        except Exception as exc:
            self._metrics.dropped(spans, "downstream_error")
            self.log.warning("error sending spans to destination", error=str(exc))


def _record_attrs(policy: str | None, composite: str | None,
                  cached: bool) -> list[tuple[str, str | bool]]:
    """The scope attributes `record_policy` adds (Go's recordpolicy feature gate)."""
    attrs: list[tuple[str, str | bool]] = []
    if policy:
        attrs.append((POLICY_ATTR, policy))
    if composite:
        attrs.append((COMPOSITE_ATTR, composite))
    if cached:
        attrs.append((CACHED_ATTR, True))
    return attrs


def _with_attrs(message: ExportTraceServiceRequest, attrs: list[tuple[str, str | bool]]) -> bytes:
    """Set the attributes on every scope of `message` (owned by the caller); encoded."""
    for rs in message.resource_spans:
        for ss in rs.scope_spans:
            for key, value in attrs:
                _put_attr(ss.scope.attributes, key, value)
    return message.SerializeToString()


def _put_attr(attributes: Any, key: str, value: str | bool) -> None:
    """Set (replace) a string or bool attribute in a repeated KeyValue."""
    for kv in attributes:
        if kv.key == key:
            break
    else:
        kv = attributes.add()
        kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    else:
        kv.value.string_value = value


class _Metrics:
    """The Go processor's self-metrics, aggregated per tick where they are per trace."""

    def __init__(self, settings: CreateSettings, component: str, policies: int):
        m = self.m = settings.metrics
        self.component = component
        p = "otelcol_processor_tail_sampling_"
        lbl = ("processor",)
        self._traces = m.counter(p + "count_traces_sampled", "Count of traces that were sampled "
                                 "or not per sampling policy", (*lbl, "policy", "sampled",
                                                                 "decision"))
        self._spans = m.counter(p + "count_spans_sampled", "Count of spans that were sampled or "
                                "not per sampling policy", (*lbl, "policy", "sampled",
                                                            "decision"))
        self._global = m.counter(p + "global_count_traces_sampled", "Global count of traces "
                                 "that were sampled or not by at least one policy",
                                 (*lbl, "sampled", "decision"))
        self._early = m.counter(p + "early_releases_from_cache_decision", "Number of spans that "
                                "were able to be immediately released due to a decision cache "
                                "hit.", (*lbl, "sampled"))
        self._new = m.counter(p + "new_trace_id_received", "Counts the arrival of new traces",
                              lbl).labels(component)
        self._errors = m.counter(p + "sampling_policy_evaluation_error", "Count of sampling "
                                 "policy evaluation errors", lbl).labels(component)
        self._early_drop = m.counter(p + "sampling_trace_dropped_too_early", "Count of traces "
                                     "that needed to be dropped before the configured wait "
                                     "time", lbl).labels(component)
        self._too_large = m.counter(p + "traces_dropped_too_large", "Count of traces dropped "
                                    "because they exceeded maximum_trace_size_bytes",
                                    lbl).labels(component)
        self._exec_sum = m.counter(p + "sampling_policy_execution_time_sum", "Total time (in "
                                   "microseconds) spent executing a sampling policy",
                                   (*lbl, "policy"))
        self._exec_count = m.counter(p + "sampling_policy_execution_count", "Number of times a "
                                     "sampling policy was executed", (*lbl, "policy"))
        self._timer = m.histogram(p + "sampling_decision_timer_latency", "Latency (in "
                                  "milliseconds) of each run of the sampling decision timer",
                                  lbl, buckets=(1, 2, 5, 10, 25, 50, 75, 100, 150, 200, 300,
                                                400, 500, 750, 1000, 2000, 3000, 4000, 5000,
                                                10000, 20000, 30000, 50000)).labels(component)
        self.late_span_age = m.histogram(p + "sampling_late_span_age", "Time (in seconds) from "
                                         "the sampling decision was taken and the arrival of a "
                                         "late span", lbl, buckets=(1, 2, 5, 10, 30, 60, 300,
                                                                    600, 1800, 3600)
                                         ).labels(component)
        self._memory = m.gauge(p + "sampling_traces_on_memory", "Tracks the number of traces "
                               "current on memory", lbl).labels(component)
        self.new_traces = 0
        self.evaluation_errors = 0
        self.dropped_too_early = 0
        self.too_large = 0
        # per policy: traces by decision in [0:8], their spans in [8:16]; seconds spent
        self.policy_counts = [[0] * 16 for _ in range(policies)]
        self.policy_time = [0.0] * policies
        self.policy_errors = [0] * policies
        self.global_decisions: defaultdict[int, int] = defaultdict(int)

    def incoming(self, spans: int) -> None:
        self.m.processor_items(self.component, Signal.TRACES, spans, 0)
        self._flush_counts()

    def outgoing(self, spans: int) -> None:
        self.m.processor_items(self.component, Signal.TRACES, 0, spans)

    def dropped(self, spans: int, reason: str) -> None:
        self.m.dropped(self.component, Signal.TRACES, reason, spans)

    def early_release(self, sampled: bool, spans: int) -> None:
        self._early.labels(self.component, "true" if sampled else "false").inc(spans)

    def flush_policies(self, policies: list[_Policy]) -> None:
        for i, row in enumerate(self.policy_counts):
            label = policies[i].label
            for decision, traces in enumerate(row[:8]):
                if traces:
                    labels = (self.component, label, *DECISION_LABELS[decision])
                    self._traces.labels(*labels).inc(traces)
                    self._spans.labels(*labels).inc(row[decision + 8])
            runs = sum(row[:8]) + self.policy_errors[i]
            if runs:
                self._exec_sum.labels(self.component, label).inc(int(self.policy_time[i] * 1e6))
                self._exec_count.labels(self.component, label).inc(runs)
            row[:] = [0] * 16
        self.policy_time = [0.0] * len(self.policy_time)
        self.policy_errors = [0] * len(self.policy_errors)
        for decision, n in self.global_decisions.items():
            self._global.labels(self.component, *DECISION_LABELS[decision]).inc(n)
        self.global_decisions.clear()

    def _flush_counts(self) -> None:
        for attr, counter in (("new_traces", self._new), ("evaluation_errors", self._errors),
                              ("dropped_too_early", self._early_drop),
                              ("too_large", self._too_large)):
            value = getattr(self, attr)
            if value:
                counter.inc(value)
                setattr(self, attr, 0)

    def tick(self, seconds: float, in_memory: int) -> None:
        self._timer.observe(int(seconds * 1000))
        self._memory.set(in_memory)
        self._flush_counts()
