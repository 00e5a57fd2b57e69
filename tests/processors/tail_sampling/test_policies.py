"""One test per policy type: hand-built traces through the processor, the exact kept set."""

from __future__ import annotations

import random

import pytest

from otelflow.processors.tail_sampling.policies import (
    DROPPED,
    INVERT_NOT_SAMPLED,
    INVERT_SAMPLED,
    NOT_SAMPLED,
    SAMPLED,
    Composite,
    Probabilistic,
    ProbabilisticCfg,
    RateLimiting,
    RateLimitingCfg,
    TokenBucket,
    final_decision,
    fnv1a_64,
    parse_trace_state,
    probabilistic_threshold,
)
from tests.processors.tail_sampling.ts_builders import decide, policy, request, span


def cfg(*policies: dict, **extra) -> dict:
    return {"decision_wait": "10s", "policies": list(policies), **extra}


async def test_always_sample_keeps_every_trace_complete():
    sink = await decide(cfg(policy("all", "always_sample")),
                        request(span(1, 1), span(2, 1)), request(span(1, 2, parent=1)))
    assert sink.span_keys() == {(1, 1), (1, 2), (2, 1)}


async def test_latency_lower_bound_is_inclusive_without_upper():
    sink = await decide(cfg(policy("slow", "latency", threshold_ms=100)),
                        request(span(1, 1, dur_ms=99), span(2, 1, dur_ms=100),
                                # trace 3: two short spans far apart -> 150 ms overall
                                span(3, 1, start_ms=0, dur_ms=10),
                                span(3, 2, start_ms=140, dur_ms=10)))
    assert sink.trace_ids() == {2, 3}


async def test_latency_with_upper_bound_is_exclusive_inclusive():
    sink = await decide(cfg(policy("mid", "latency", threshold_ms=100, upper_threshold_ms=200)),
                        request(span(1, 1, dur_ms=100), span(2, 1, dur_ms=101),
                                span(3, 1, dur_ms=200), span(4, 1, dur_ms=201)))
    assert sink.trace_ids() == {2, 3}


async def test_numeric_attribute_range_on_span_resource_and_scope():
    p = policy("code", "numeric_attribute", key="http.status_code", min_value=500,
               max_value=599)
    sink = await decide(cfg(p),
                        request(span(1, 1, attributes={"http.status_code": 503}),
                                span(2, 1, attributes={"http.status_code": 404}),
                                span(3, 1, attributes={"http.status_code": "503"}),
                                span(4, 1, attributes={"http.status_code": 600})),
                        request(span(5, 1), resource={"http.status_code": 500}),
                        request(span(6, 1), scope={"http.status_code": 599}))
    assert sink.trace_ids() == {1, 5, 6}


async def test_numeric_attribute_min_only():
    p = policy("big", "numeric_attribute", key="n", min_value=10)
    sink = await decide(cfg(p), request(span(1, 1, attributes={"n": 9}),
                                        span(2, 1, attributes={"n": 10**9})))
    assert sink.trace_ids() == {2}


async def test_numeric_attribute_invert_match():
    p = policy("not-5xx", "numeric_attribute", key="code", min_value=500, max_value=599,
               invert_match=True)
    sink = await decide(cfg(p), request(span(1, 1, attributes={"code": 503}),
                                        span(2, 1, attributes={"code": 200}),
                                        span(3, 1),
                                        span(4, 1, attributes={"code": 200}),
                                        span(4, 2, attributes={"code": 500})))
    assert sink.trace_ids() == {2, 3}


async def test_probabilistic_keeps_the_hash_selected_traces():
    p = policy("p", "probabilistic", sampling_percentage=30, hash_salt="s1")
    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(300)]  # FNV-1a needs random ids to spread
    sink = await decide(cfg(p), request(*(span(i, 1) for i in ids)))
    threshold = probabilistic_threshold(30)
    expected = {i for i in ids if fnv1a_64(b"s1" + i.to_bytes(16, "big")) <= threshold}
    assert sink.trace_ids() == expected
    assert 60 < len(expected) < 120


async def test_status_code():
    p = policy("errors", "status_code", status_codes=["ERROR"])
    sink = await decide(cfg(p), request(span(1, 1, status=2), span(2, 1, status=1),
                                        span(3, 1), span(4, 1), span(4, 2, status=2)))
    assert sink.trace_ids() == {1, 4}


async def test_status_code_unset_and_ok():
    p = policy("fine", "status_code", status_codes=["OK", "UNSET"])
    sink = await decide(cfg(p), request(span(1, 1, status=2), span(2, 1, status=1),
                                        span(3, 1)))
    assert sink.trace_ids() == {2, 3}


async def test_string_attribute_exact_values():
    p = policy("svc", "string_attribute", key="service.name", values=["checkout", "cart"])
    sink = await decide(cfg(p),
                        request(span(1, 1), resource={"service.name": "checkout"}),
                        request(span(2, 1), resource={"service.name": "search"}),
                        request(span(3, 1, attributes={"service.name": "cart"})),
                        request(span(4, 1, attributes={"service.name": "cartx"})))
    assert sink.trace_ids() == {1, 3}


async def test_string_attribute_regex_searches_like_go():
    p = policy("routes", "string_attribute", key="http.route", values=["^/api/v[0-9]+/",
                                                                       "health"],
               enabled_regex_matching=True, cache_max_size=2)
    sink = await decide(cfg(p), request(
        span(1, 1, attributes={"http.route": "/api/v2/users"}),
        span(2, 1, attributes={"http.route": "/web/api/v2/"}),
        span(3, 1, attributes={"http.route": "/healthz"}),
        span(4, 1, attributes={"http.route": "/status"}),
        span(5, 1, attributes={"http.route": "/api/v2/users"})))
    assert sink.trace_ids() == {1, 3, 5}


async def test_string_attribute_invert_match():
    p = policy("not-health", "string_attribute", key="http.route", values=["/health"],
               invert_match=True)
    sink = await decide(cfg(p), request(span(1, 1, attributes={"http.route": "/health"}),
                                        span(2, 1, attributes={"http.route": "/buy"}),
                                        span(3, 1)))
    assert sink.trace_ids() == {2, 3}


async def test_inverted_not_sampled_beats_sampled():
    """An inverted not-sampled decision wins over another policy's sampled (Go precedence)."""
    sink = await decide(cfg(policy("errors", "status_code", status_codes=["ERROR"]),
                            policy("not-health", "string_attribute", key="http.route",
                                   values=["/health"], invert_match=True)),
                        request(span(1, 1, status=2, attributes={"http.route": "/health"}),
                                span(2, 1, status=2, attributes={"http.route": "/buy"}),
                                span(3, 1, attributes={"http.route": "/buy"})))
    # trace 3: inverted-sampled, but status_code said not-sampled, so it is not kept
    assert sink.trace_ids() == {2}


async def test_rate_limiting_spends_the_span_budget():
    p = policy("rl", "rate_limiting", spans_per_second=3, burst_capacity=5)
    sink = await decide(cfg(p), request(span(1, 1), span(1, 2), span(1, 3),
                                        span(2, 1), span(2, 2), span(2, 3),
                                        span(3, 1), span(3, 2),
                                        span(4, 1, dur_ms=1), span(4, 2), span(4, 3),
                                        span(4, 4), span(4, 5), span(4, 6)))
    # burst 5: trace 1 (3 spans) passes, trace 2 (3) does not, trace 3 (2) does,
    # trace 4 (6 > burst) never can
    assert sink.trace_ids() == {1, 3}


def test_rate_limiting_refills_at_the_configured_rate():
    now = [0.0]
    limiter = RateLimiting(RateLimitingCfg(spans_per_second=10), clock=lambda: now[0])

    class T:
        span_count = 20
    assert limiter.evaluate(T) == SAMPLED  # burst defaults to 2 x rate = 20
    assert limiter.evaluate(T) == NOT_SAMPLED
    now[0] = 1.0
    assert limiter.evaluate(T) == NOT_SAMPLED  # 10 tokens back, 20 needed
    now[0] = 2.0
    assert limiter.evaluate(T) == SAMPLED


def test_token_bucket_never_exceeds_burst():
    now = [0.0]
    bucket = TokenBucket(100, 50, clock=lambda: now[0])
    now[0] = 1000.0
    assert bucket.allow(50)
    assert not bucket.allow(1)


async def test_bytes_limiting_spends_the_byte_budget():
    big = {"payload": "x" * 600}
    p = policy("bytes", "bytes_limiting", bytes_per_second=500, burst_capacity=1000)
    sink = await decide(cfg(p), request(span(1, 1, attributes=big)),
                        request(span(2, 1, attributes=big)),
                        request(span(3, 1)))
    assert sink.trace_ids() == {1, 3}


async def test_span_count_range_is_inclusive():
    p = policy("sc", "span_count", min_spans=2, max_spans=3)
    sink = await decide(cfg(p), request(span(1, 1), span(2, 1), span(2, 2),
                                        span(3, 1), span(3, 2), span(3, 3),
                                        *(span(4, i) for i in range(1, 5))))
    assert sink.trace_ids() == {2, 3}


async def test_span_count_counts_spans_from_every_request():
    p = policy("sc", "span_count", min_spans=3)
    sink = await decide(cfg(p), request(span(1, 1), span(2, 1)),
                        request(span(1, 2)), request(span(1, 3), span(2, 2)))
    assert sink.span_keys() == {(1, 1), (1, 2), (1, 3)}


async def test_trace_state():
    p = policy("ts", "trace_state", key="vendor", values=["gold", "silver"])
    sink = await decide(cfg(p), request(span(1, 1, trace_state="a=1,vendor=gold"),
                                        span(2, 1, trace_state="vendor=bronze"),
                                        span(3, 1, trace_state="vendor=silver,BAD KEY=1"),
                                        span(4, 1), span(4, 2, trace_state="vendor=silver")))
    assert sink.trace_ids() == {1, 4}


def test_trace_state_parsing():
    assert parse_trace_state("a=1, b@tenant=x ,c=") is None  # empty value is invalid
    assert parse_trace_state("a=1, b@tenant=x") == {"a": "1", "b@tenant": "x"}
    assert parse_trace_state("a=1,a=2") is None


async def test_trace_flags():
    sink = await decide(cfg(policy("flags", "trace_flags")),
                        request(span(1, 1, flags=0x101), span(2, 1, flags=0x100),
                                span(3, 1), span(3, 2, flags=1)))
    assert sink.trace_ids() == {1, 3}


async def test_boolean_attribute():
    p = policy("force", "boolean_attribute", key="app.force_sample", value=True)
    sink = await decide(cfg(p), request(span(1, 1, attributes={"app.force_sample": True}),
                                        span(2, 1, attributes={"app.force_sample": False}),
                                        span(3, 1, attributes={"app.force_sample": "true"})),
                        request(span(4, 1), resource={"app.force_sample": True}))
    assert sink.trace_ids() == {1, 4}


async def test_boolean_attribute_invert_match():
    p = policy("not-bot", "boolean_attribute", key="bot", value=True, invert_match=True)
    sink = await decide(cfg(p), request(span(1, 1, attributes={"bot": True}),
                                        span(2, 1, attributes={"bot": False}), span(3, 1)))
    assert sink.trace_ids() == {2, 3}


async def test_and_needs_every_sub_policy():
    p = {"name": "prod-errors", "type": "and", "and": {"and_sub_policy": [
        policy("prod", "string_attribute", key="env", values=["prod"]),
        policy("errors", "status_code", status_codes=["ERROR"]),
    ]}}
    sink = await decide(cfg(p),
                        request(span(1, 1, status=2), span(2, 1), resource={"env": "prod"}),
                        request(span(3, 1, status=2), resource={"env": "dev"}),
                        request(span(2, 2, status=2, parent=1)))
    # trace 2: prod resource in one request, error span in another -> both hold for the trace
    assert sink.trace_ids() == {1, 2}


async def test_and_with_inverted_sub_policy_and_probabilistic():
    p = {"name": "others", "type": "and", "and": {"and_sub_policy": [
        policy("not-team-a", "string_attribute", key="team", values=["a"], invert_match=True),
        policy("all", "probabilistic", sampling_percentage=100),
    ]}}
    sink = await decide(cfg(p), request(span(1, 1), resource={"team": "a"}),
                        request(span(2, 1), resource={"team": "b"}))
    assert sink.trace_ids() == {2}


async def test_not_swaps_the_sub_decision():
    p = {"name": "no-health", "type": "not", "not": {"not_sub_policy":
         policy("health", "string_attribute", key="http.route", values=["/health"])}}
    sink = await decide(cfg(p), request(span(1, 1, attributes={"http.route": "/health"}),
                                        span(2, 1, attributes={"http.route": "/buy"})))
    assert sink.trace_ids() == {2}


async def test_drop_wins_over_every_sampled_decision():
    drop = {"name": "drop-probes", "type": "drop", "drop": {"drop_sub_policy": [
        policy("probe", "string_attribute", key="http.route", values=["/live", "/ready"]),
        {"name": "no-error", "type": "not", "not": {"not_sub_policy":
         policy("err", "status_code", status_codes=["ERROR"])}},
    ]}}
    sink = await decide(cfg(policy("all", "always_sample"), drop),
                        request(span(1, 1, attributes={"http.route": "/live"}),
                                span(2, 1, attributes={"http.route": "/live"}, status=2),
                                span(3, 1, attributes={"http.route": "/buy"})))
    assert sink.trace_ids() == {2, 3}


async def test_composite_budgets_per_sub_policy():
    p = {"name": "budget", "type": "composite", "composite": {
        "max_total_spans_per_second": 10,
        "policy_order": ["vip", "errors", "rest"],
        "composite_sub_policy": [
            policy("vip", "string_attribute", key="tier", values=["vip"]),
            policy("errors", "status_code", status_codes=["ERROR"]),
            {"name": "rest", "type": "always_sample"},
        ],
        "rate_allocation": [{"policy": "vip", "percent": 50},
                            {"policy": "errors", "percent": 30}],
    }}
    vip = {"tier": "vip"}
    sink = await decide(cfg(p), request(
        # vip budget 5 spans: trace 1 (3) kept, trace 2 (3) over budget, trace 3 (2) kept
        span(1, 1, attributes=vip), span(1, 2), span(1, 3),
        span(2, 1, attributes=vip), span(2, 2), span(2, 3),
        span(3, 1, attributes=vip), span(3, 2),
        # errors budget 3: trace 4 (2) kept, trace 5 (2) over budget
        span(4, 1, status=2), span(4, 2),
        span(5, 1, status=2), span(5, 2),
        # "rest" has no rate_allocation entry: no budget, as in Go
        span(6, 1)))
    assert sink.trace_ids() == {1, 3, 4}


def test_composite_budget_resets_each_second():
    now = [100.2]

    class Always:
        def evaluate(self, trace):
            return SAMPLED

    class T:
        span_count = 4
    composite = Composite(5, [("a", Always(), 5)], clock=lambda: now[0])
    assert composite.evaluate(T) == SAMPLED and composite.tag == "a"
    assert composite.evaluate(T) == NOT_SAMPLED
    now[0] = 101.0
    assert composite.evaluate(T) == SAMPLED


async def test_sample_on_first_match_stops_at_the_first_sampled_policy():
    """With sample_on_first_match a later inverted not-sampled no longer overrules."""
    policies = (policy("errors", "status_code", status_codes=["ERROR"]),
                policy("not-health", "string_attribute", key="r", values=["/h"],
                       invert_match=True))
    traffic = request(span(1, 1, status=2, attributes={"r": "/h"}))
    assert (await decide(cfg(*policies), traffic)).trace_ids() == set()
    sink = await decide(cfg(*policies, sample_on_first_match=True), traffic)
    assert sink.trace_ids() == {1}


@pytest.mark.parametrize(("decisions", "expected"), [
    ({SAMPLED: "a", DROPPED: "d"}, (DROPPED, "d")),
    ({SAMPLED: "a", INVERT_NOT_SAMPLED: "i"}, (NOT_SAMPLED, None)),
    ({SAMPLED: "a", NOT_SAMPLED: "n"}, (SAMPLED, "a")),
    ({INVERT_SAMPLED: "i"}, (SAMPLED, "i")),
    ({INVERT_SAMPLED: "i", NOT_SAMPLED: "n"}, (NOT_SAMPLED, None)),
    ({}, (NOT_SAMPLED, None)),
])
def test_final_decision_precedence(decisions, expected):
    assert final_decision(decisions) == expected


def test_fnv1a_64_reference_vectors():
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_probabilistic_default_salt_is_gos():
    evaluator = Probabilistic(ProbabilisticCfg(sampling_percentage=10))
    assert evaluator.salted == fnv1a_64(b"default-hash-seed")


def test_probabilistic_threshold_matches_go_big_float_math():
    assert probabilistic_threshold(0) == 0
    # (2^64-1) * 0.5 = 2^63 - 0.5 is exact in a 64-bit mantissa: truncates to 2^63 - 1
    # (float64 arithmetic would give 2^63)
    assert probabilistic_threshold(50) == 2**63 - 1
    assert probabilistic_threshold(100) == 2**64 - 1
    assert probabilistic_threshold(250) == 2**64 - 1
    # 0.1 as float64 is 3602879701896397 / 2**55; the exact product is ...263.8999, which a
    # 64-bit mantissa (steps of 1/8 here) rounds to ...263.875 and Uint64() truncates
    # (float64 arithmetic would give ...264)
    assert probabilistic_threshold(10) == 1844674407370955263
