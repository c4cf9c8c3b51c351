"""Keeping a failing draft service from costing more than speed.

A draft is an optimisation: when its service is down, erroring or hung, a stream decodes with the
target alone and its output does not change. Two guards, shared by every stream of one orchestrator:

- a circuit breaker: after a failure no stream calls the draft until a probe, after a backoff that
  doubles with each failed probe (1 s up to 30 s), finds it answering again; so a dead draft costs
  one failed call per backoff period, not one per iteration;
- a deadline that follows the draft's measured cost: a few times what a call of that size has taken
  lately, so a hung draft costs a few draft steps of time, not the orchestrator's call timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from orchestrator import metrics

log = logging.getLogger("specdec")

BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
DEADLINE_FACTOR = 4.0  # a reply this many times slower than usual counts as a hung draft
DEADLINE_FLOOR_S = 0.25  # below this, scheduling noise on a busy machine would trip the breaker
_WEIGHT = 0.2  # of each call in the running cost estimates

# Errors that say this request cannot be drafted (say, the sequence outgrew the draft's context):
# the stream decodes without drafts, but the service is fine for the others.
REQUEST_ERRORS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION,
})


class CircuitBreaker:
    """Closed (calls go through) or open (calls are skipped until the next probe time)."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._open = False
        self._backoff_s = BASE_BACKOFF_S
        self._probe_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        """Whether to call now. While open, one caller per backoff period gets through as the probe
        (a probe that never reports, say its request was cancelled, is simply followed by another)."""
        if not self._open:
            return True
        now = self._clock()
        if now < self._probe_at:
            return False
        self._probe_at = now + self._backoff_s
        return True

    def succeeded(self) -> None:
        if self._open:
            log.info("%s answers again: drafting resumes", self._name)
            metrics.DRAFT_CIRCUIT_OPEN.set(0)
        self._open, self._backoff_s = False, BASE_BACKOFF_S

    def failed(self, code: grpc.StatusCode) -> None:
        metrics.DRAFT_FAILURES.labels(code=code.name).inc()
        if self._open:  # a failed probe: wait longer for the next
            self._backoff_s = min(2 * self._backoff_s, MAX_BACKOFF_S)
        else:
            log.warning("%s failed (%s): streams decode without drafts, probing again in %.0f s",
                        self._name, code.name, self._backoff_s)
            metrics.DRAFT_CIRCUIT_OPEN.set(1)
        self._open = True
        self._probe_at = self._clock() + self._backoff_s


class DraftDeadline:
    """Seconds to wait for a draft reply, from running means of what calls have cost per token they
    ran through the draft model (the sequence's catch-up since the draft last saw it, plus k), kept
    apart for steps and for calls that (re)fill a session's cache, which cost less per token."""

    PREFILL_TOKENS = 16  # a catch-up longer than this is a prefill: a new session, or one let fall behind

    def __init__(self, ceiling_s: float) -> None:
        self._ceiling_s = ceiling_s
        self._per_token = {False: 0.0, True: 0.0}  # by "is a prefill"; 0 = nothing measured yet

    def timeout_s(self, catch_up: int, k: int) -> float:
        per_token = self._per_token[catch_up > self.PREFILL_TOKENS]
        if not per_token:
            return self._ceiling_s
        return min(max(DEADLINE_FACTOR * per_token * (catch_up + k), DEADLINE_FLOOR_S), self._ceiling_s)

    def observe(self, catch_up: int, k: int, seconds: float) -> None:
        prefill = catch_up > self.PREFILL_TOKENS
        self._per_token[prefill] = _toward(self._per_token[prefill], seconds / (catch_up + k))


def _toward(mean: float, observed: float) -> float:
    return observed if not mean else mean + _WEIGHT * (observed - mean)


class DraftGuard:
    """Both guards for one draft service, shared by the orchestrator's streams."""

    def __init__(self, ceiling_s: float) -> None:
        self.breaker = CircuitBreaker("the draft service")
        self.deadline = DraftDeadline(ceiling_s)
