"""The tail_sampling processor: grouping, timing, late spans, memory bound, metrics."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from otelflow.component import PermanentError
from otelflow.pdata import Batch, Signal
from otelflow.processors.tail_sampling.policies import fnv1a_64, probabilistic_threshold
from otelflow.telemetry.metrics import SelfMetrics
from tests.processors.tail_sampling.ts_builders import make, policy, request, span, tid

ERRORS = policy("errors", "status_code", status_codes=["ERROR"])
SLOW = policy("slow", "latency", threshold_ms=1000)


def metric(metrics: SelfMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"otelcol_processor_tail_sampling_{name}",
                                              labels or None)
    return value or 0.0


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_spans_from_many_requests_and_resources_leave_as_one_batch():
    proc, sink = make({"decision_wait": "10s", "policies": [ERRORS]})
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1), span(2, 1), resource={"service.name": "a"})))
    await proc.consume(Batch.of(request(span(1, 2, parent=1, status=2), span(3, 1),
                                        resource={"service.name": "b"})))
    await proc.consume(Batch.of(request(span(1, 3, parent=2), resource={"service.name": "c"})))
    assert sink.batches == []
    await proc.shutdown()
    assert len(sink.batches) == 1
    out = sink.batches[0].message
    by_service = {rs.resource.attributes[0].value.string_value:
                  [int.from_bytes(sp.span_id, "big") for ss in rs.scope_spans for sp in ss.spans]
                  for rs in out.resource_spans}
    assert by_service == {"a": [1], "b": [2], "c": [3]}
    assert sink.trace_ids() == {1}


async def test_decides_on_the_timer_after_decision_wait():
    proc, sink = make({"decision_wait": "300ms", "policies": [ERRORS]})
    await proc.start(None)
    started = time.monotonic()
    await proc.consume(Batch.of(request(span(1, 1, status=2), span(2, 1))))
    await wait_until(lambda: sink.batches)
    assert sink.times[0] - started >= 0.3  # not before decision_wait
    assert sink.trace_ids() == {1}
    await proc.shutdown()
    assert len(sink.batches) == 1


async def test_root_span_brings_the_decision_forward():
    proc, sink = make({"decision_wait": "30s", "decision_wait_after_root_received": "100ms",
                       "policies": [policy("all", "always_sample")]})
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 2, parent=1), span(2, 2, parent=1))))
    await proc.consume(Batch.of(request(span(1, 1))))  # trace 1's root
    await wait_until(lambda: sink.batches, timeout=3)
    assert sink.span_keys() == {(1, 1), (1, 2)}
    await proc.shutdown()
    assert sink.trace_ids() == {1, 2}


async def test_late_spans_follow_the_remembered_decision():
    metrics = SelfMetrics()
    proc, sink = make({"decision_wait": "50ms", "policies": [ERRORS]}, metrics=metrics)
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1, status=2), span(2, 1))))
    await wait_until(lambda: sink.batches)
    await proc.consume(Batch.of(request(span(1, 2, parent=1), span(2, 2, parent=1))))
    assert sink.span_keys() == {(1, 1), (1, 2)}
    assert len(sink.batches) == 2  # the late span went out right away, on its own
    await proc.shutdown()
    assert sink.span_keys() == {(1, 1), (1, 2)}
    assert metric(metrics, "sampling_late_span_age_count", processor="tail_sampling") == 2


async def test_decision_caches_answer_late_spans_and_record_the_policy():
    metrics = SelfMetrics()
    proc, sink = make({"decision_wait": "50ms", "record_policy": True,
                       "decision_cache": {"sampled_cache_size": 10,
                                          "non_sampled_cache_size": 10},
                       "policies": [ERRORS]}, metrics=metrics)
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1, status=2), span(2, 1))))
    await wait_until(lambda: sink.batches)
    await proc.consume(Batch.of(request(span(1, 2, parent=1), span(1, 3, parent=1),
                                        span(2, 2, parent=1))))
    await proc.shutdown()
    assert sink.span_keys() == {(1, 1), (1, 2), (1, 3)}
    first, late = (b.message.resource_spans[0].scope_spans[0].scope for b in sink.batches)
    assert {a.key: a.value.string_value for a in first.attributes} == {
        "tailsampling.policy": "errors"}
    assert {a.key: (a.value.string_value or a.value.bool_value) for a in late.attributes} == {
        "tailsampling.policy": "errors", "tailsampling.cached_decision": True}
    assert metric(metrics, "early_releases_from_cache_decision_total",
                  processor="tail_sampling", sampled="true") == 2
    assert metric(metrics, "early_releases_from_cache_decision_total",
                  processor="tail_sampling", sampled="false") == 1


async def test_memory_is_bounded_and_the_oldest_trace_is_decided_early():
    metrics = SelfMetrics()
    proc, sink = make({"decision_wait": "30s", "num_traces": 100,
                       "policies": [ERRORS]}, metrics=metrics)
    await proc.start(None)
    for i in range(1, 1001):
        await proc.consume(Batch.of(request(span(i, 1, status=2 if i % 10 == 0 else 0))))
        assert len(proc._pending) <= 100
        assert len(proc._decided) <= 100  # the memory of past decisions is bounded too
    # 900 traces were pushed out early; the error ones among them were still kept
    assert sink.trace_ids() == {i for i in range(10, 901, 10)}
    await proc.shutdown()
    assert sink.trace_ids() == {i for i in range(10, 1001, 10)}
    assert metric(metrics, "sampling_trace_dropped_too_early_total",
                  processor="tail_sampling") == 900
    assert metric(metrics, "new_trace_id_received_total", processor="tail_sampling") == 1000


async def test_block_on_overflow_waits_for_a_decision_to_free_space():
    proc, sink = make({"decision_wait": "200ms", "num_traces": 2, "block_on_overflow": True,
                       "policies": [policy("all", "always_sample")]})
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1), span(2, 1))))
    started = time.monotonic()
    await proc.consume(Batch.of(request(span(3, 1))))
    assert time.monotonic() - started >= 0.15  # waited for traces 1 and 2 to be decided
    assert sink.trace_ids() == {1, 2}
    await proc.shutdown()
    assert sink.trace_ids() == {1, 2, 3}


async def test_a_trace_over_maximum_trace_size_bytes_is_not_sampled():
    metrics = SelfMetrics()
    proc, sink = make({"decision_wait": "10s", "maximum_trace_size_bytes": 2000,
                       "policies": [policy("all", "always_sample")]}, metrics=metrics)
    await proc.start(None)
    big = {"blob": "x" * 1500}
    await proc.consume(Batch.of(request(span(1, 1, attributes=big), span(2, 1))))
    await proc.consume(Batch.of(request(span(1, 2, attributes=big))))  # trace 1 now too big
    await proc.consume(Batch.of(request(span(1, 3))))  # late: follows "not sampled"
    await proc.shutdown()
    assert sink.trace_ids() == {2}
    assert metric(metrics, "traces_dropped_too_large_total", processor="tail_sampling") == 1


async def test_shutdown_decides_pending_traces_unless_told_to_drop_them():
    traffic = request(span(1, 1, status=2), span(2, 1))
    proc, sink = make({"decision_wait": "30s", "policies": [ERRORS]})
    await proc.start(None)
    await proc.consume(Batch.of(traffic))
    await proc.shutdown()
    await proc.shutdown()  # idempotent
    assert sink.trace_ids() == {1}

    proc, sink = make({"decision_wait": "30s", "drop_pending_traces_on_shutdown": True,
                       "policies": [ERRORS]})
    await proc.start(None)
    await proc.consume(Batch.of(traffic))
    await proc.shutdown()
    assert sink.batches == []


async def test_policy_metrics_use_the_go_names_and_labels():
    metrics = SelfMetrics()
    proc, _sink = make({"decision_wait": "10s", "policies": [ERRORS, SLOW]}, name="edge",
                       metrics=metrics)
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1, status=2), span(2, 1), span(3, 1),
                                        span(3, 2, dur_ms=2000))))
    await proc.shutdown()
    labels = {"processor": "tail_sampling/edge"}
    assert metric(metrics, "count_traces_sampled_total", **labels, policy="edge.errors",
                  sampled="true", decision="sampled") == 1
    assert metric(metrics, "count_traces_sampled_total", **labels, policy="edge.errors",
                  sampled="false", decision="not_sampled") == 2
    assert metric(metrics, "count_traces_sampled_total", **labels, policy="edge.slow",
                  sampled="true", decision="sampled") == 1
    assert metric(metrics, "count_spans_sampled_total", **labels, policy="edge.slow",
                  sampled="true", decision="sampled") == 2
    assert metric(metrics, "global_count_traces_sampled_total", **labels, sampled="true",
                  decision="sampled") == 2
    assert metric(metrics, "global_count_traces_sampled_total", **labels, sampled="false",
                  decision="not_sampled") == 1
    assert metric(metrics, "sampling_policy_execution_count_total", **labels,
                  policy="edge.slow") == 3
    assert metric(metrics, "sampling_decision_timer_latency_count", **labels) >= 1
    assert metric(metrics, "sampling_traces_on_memory", **labels) == 0


async def test_a_failing_policy_counts_an_error_and_the_others_still_decide():
    metrics = SelfMetrics()
    proc, sink = make({"decision_wait": "10s",
                       "policies": [ERRORS, policy("all", "always_sample")]}, metrics=metrics)

    class Broken:
        def evaluate(self, trace):
            raise RuntimeError("boom")
    proc._policies[0].evaluator = Broken()
    await proc.start(None)
    await proc.consume(Batch.of(request(span(1, 1))))
    await proc.shutdown()
    assert sink.trace_ids() == {1}
    assert metric(metrics, "sampling_policy_evaluation_error_total",
                  processor="tail_sampling") == 1


async def test_ten_thousand_interleaved_traces():
    """Errors and slow traces kept complete, 10% of the rest by trace-id hash, late spans
    following their trace's decision, each kept trace released in one batch."""
    rng = random.Random(20261128)
    salt = "interleaved"
    traces: dict[int, list] = {}
    kind: dict[int, str] = {}
    late: list = []
    for _ in range(10_000):
        trace = rng.getrandbits(128)
        roll = rng.random()
        kind[trace] = "error" if roll < 0.05 else "slow" if roll < 0.10 else "fast"
        n = rng.randint(3, 8)
        spans = []
        for s in range(1, n + 1):
            spans.append((rng.choice(("web", "api", "db")), span(
                trace, s, parent=0 if s == 1 else 1, start_ms=s * 10,
                dur_ms=1500 if kind[trace] == "slow" and s == 1 else 5,
                status=2 if kind[trace] == "error" and s == n else 0)))
        if rng.random() < 0.1 and kind[trace] != "error":  # one span arrives after the decision
            late.append(spans.pop())
        traces[trace] = spans
    stream = [item for spans in traces.values() for item in spans]
    rng.shuffle(stream)

    proc, sink = make({"decision_wait": "1500ms", "num_traces": 20_000, "policies": [
        ERRORS, SLOW, policy("ten", "probabilistic", sampling_percentage=10, hash_salt=salt)]})
    await proc.start(None)
    for start in range(0, len(stream), 150):  # many requests, one resource per service
        chunk = stream[start:start + 150]
        for service in ("web", "api", "db"):
            spans = [sp for svc, sp in chunk if svc == service]
            if spans:
                await proc.consume(Batch.of(request(*spans, resource={"service.name": service})))
    await wait_until(lambda: not proc._pending, timeout=20)
    decided_batches = len(sink.batches)
    for start in range(0, len(late), 40):
        await proc.consume(Batch.of(request(*(sp for _svc, sp in late[start:start + 40]))))
    await proc.shutdown()

    threshold = probabilistic_threshold(10)
    hashed = {t for t in traces if fnv1a_64(salt.encode() + tid(t)) <= threshold}
    expected = {t for t in traces if kind[t] != "fast"} | hashed
    kept = sink.span_keys()
    all_spans = {(t, int.from_bytes(sp.span_id, "big"))
                 for t, spans in traces.items() for _svc, sp in spans}
    all_spans |= {(int.from_bytes(sp.trace_id, "big"), int.from_bytes(sp.span_id, "big"))
                  for _svc, sp in late}
    assert kept == {key for key in all_spans if key[0] in expected}  # complete, nothing else
    fast = [t for t in traces if kind[t] == "fast"]
    share = len([t for t in fast if t in hashed]) / len(fast)
    assert abs(share - 0.10) <= 0.01
    # before the late spans, each kept trace left in exactly one batch
    where: dict[int, set[int]] = {}
    for i, batch in enumerate(sink.batches[:decided_batches]):
        for rs in batch.message.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    where.setdefault(int.from_bytes(sp.trace_id, "big"), set()).add(i)
    assert where.keys() == expected
    assert all(len(batches) == 1 for batches in where.values())


async def test_malformed_bytes_are_a_permanent_error():
    proc, _sink = make({"decision_wait": "10s", "policies": [ERRORS]})
    raw = request(span(1, 1)).SerializeToString()
    with pytest.raises(PermanentError, match="malformed trace data"):
        await proc.consume(Batch(Signal.TRACES, raw=raw[:-5]))
