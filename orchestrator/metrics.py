"""Prometheus metrics of the orchestrator: the spec-decode counters vLLM users know, and latency."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)

REQUESTS = Counter("specdec_requests", "Generate calls completed", ["draft", "finish_reason"])
ACTIVE_REQUESTS = Gauge("specdec_active_requests", "Generate calls in flight")
# The names follow vLLM's num_requests_running / num_requests_waiting, which gateways read.
REQUESTS_RUNNING = Gauge("specdec_num_requests_running", "Streams generating")
REQUESTS_WAITING = Gauge("specdec_num_requests_waiting", "Streams waiting for a place to generate")
PROMPT_TOKENS = Counter("specdec_prompt_tokens", "Prompt tokens processed")
GENERATION_TOKENS = Counter("specdec_generation_tokens", "Tokens generated")
NUM_DRAFTS = Counter("specdec_spec_decode_num_drafts", "Iterations that drafted at least one token")
NUM_DRAFT_TOKENS = Counter("specdec_spec_decode_num_draft_tokens", "Tokens drafted")
NUM_ACCEPTED_TOKENS = Counter("specdec_spec_decode_num_accepted_tokens", "Drafted tokens accepted")
NUM_ACCEPTED_PER_POS = Counter(
    "specdec_spec_decode_num_accepted_tokens_per_pos", "Drafted tokens accepted, by position in the draft", ["position"]
)
DRAFT_CIRCUIT_OPEN = Gauge("specdec_draft_circuit_open", "1 while the draft service is skipped after failures")
DRAFT_FAILURES = Counter("specdec_draft_failures", "Draft calls that failed, by status", ["code"])
# One per session while it generates: a count that stays up after the streams end is a leak.
UPSTREAM_STREAMS = Gauge("specdec_upstream_streams", "Session streams open to the draft or target service", ["service"])
UPSTREAM_RESENDS = Counter("specdec_upstream_resends", "Steps sent again after a stream or replica failed", ["service"])
REQUEST_LATENCY = Histogram("specdec_request_latency_seconds", "Generate call duration", buckets=_LATENCY_BUCKETS)
TIME_TO_FIRST_TOKEN = Histogram("specdec_time_to_first_token_seconds", "Time to the first generated token", buckets=_LATENCY_BUCKETS)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "specdec_time_per_output_token_seconds", "Mean time per token after the first",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1),
)


def record_iteration_soon(drafted: int, accepted: int) -> None:
    """Counts an iteration once the event loop is free: by then the next upstream request is out."""
    if drafted:
        asyncio.get_running_loop().call_soon(_record_iteration, drafted, accepted)


def _record_iteration(drafted: int, accepted: int) -> None:
    NUM_DRAFTS.inc()
    NUM_DRAFT_TOKENS.inc(drafted)
    NUM_ACCEPTED_TOKENS.inc(accepted)
    for position in range(accepted):
        NUM_ACCEPTED_PER_POS.labels(position=str(position)).inc()


def record_request(
    draft: str, finish_reason: str, prompt_tokens: int, generated: int, elapsed_s: float, first_token_s: float
) -> None:
    REQUESTS.labels(draft=draft, finish_reason=finish_reason).inc()
    PROMPT_TOKENS.inc(prompt_tokens)
    GENERATION_TOKENS.inc(generated)
    REQUEST_LATENCY.observe(elapsed_s)
    TIME_TO_FIRST_TOKEN.observe(first_token_s)
    if generated > 1:
        TIME_PER_OUTPUT_TOKEN.observe((elapsed_s - first_token_s) / (generated - 1))
