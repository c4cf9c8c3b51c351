"""orchestrator.draft_guard: the circuit breaker's backoff and the draft deadline's bounds."""

from __future__ import annotations

import grpc

from orchestrator.draft_guard import (
    BASE_BACKOFF_S,
    DEADLINE_FACTOR,
    DEADLINE_FLOOR_S,
    MAX_BACKOFF_S,
    CircuitBreaker,
    DraftDeadline,
)

DOWN = grpc.StatusCode.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_opens_the_breaker_and_one_probe_per_backoff_gets_through():
    clock = Clock()
    breaker = CircuitBreaker("draft", clock)
    assert breaker.allow() and not breaker.is_open
    breaker.failed(DOWN)
    assert breaker.is_open and not breaker.allow()
    clock.now += BASE_BACKOFF_S
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one per period, even if the probe never reports
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_failed_probes_double_the_backoff_up_to_its_cap_and_success_resets_it():
    clock = Clock()
    breaker = CircuitBreaker("draft", clock)
    breaker.failed(DOWN)
    waits = []
    for _ in range(8):
        start = clock.now
        while not breaker.allow():
            clock.now += 0.25
        waits.append(clock.now - start)
        breaker.failed(DOWN)  # the probe failed
    assert waits[:3] == [BASE_BACKOFF_S, 2 * BASE_BACKOFF_S, 4 * BASE_BACKOFF_S]
    assert max(waits) == MAX_BACKOFF_S
    breaker.succeeded()
    breaker.failed(DOWN)
    clock.now += BASE_BACKOFF_S
    assert breaker.allow()  # back to the base backoff


def test_the_draft_deadline_follows_measured_cost_within_floor_and_ceiling():
    deadline = DraftDeadline(ceiling_s=60.0)
    assert deadline.timeout_s(catch_up=1, k=3) == 60.0  # nothing measured: the call timeout
    for _ in range(10):
        deadline.observe(catch_up=1, k=3, seconds=0.4)  # 0.1 s per token
    assert abs(deadline.timeout_s(catch_up=1, k=3) - DEADLINE_FACTOR * 0.4) < 1e-9
    assert deadline.timeout_s(catch_up=0, k=1) == max(DEADLINE_FACTOR * 0.1, DEADLINE_FLOOR_S)
    for _ in range(10):
        deadline.observe(catch_up=1, k=1, seconds=0.001)
    assert deadline.timeout_s(catch_up=1, k=1) == DEADLINE_FLOOR_S
    # A prefill (a long catch-up) is judged by what prefills cost, not by a step's cost.
    assert deadline.timeout_s(catch_up=500, k=2) == 60.0
    deadline.observe(catch_up=500, k=2, seconds=1.0)
    assert abs(deadline.timeout_s(catch_up=500, k=2) - DEADLINE_FACTOR * 1.0) < 1e-9
