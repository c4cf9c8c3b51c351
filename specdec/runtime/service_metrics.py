"""Prometheus metrics of the draft and target services (served by `specdec serve --metrics-port`)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge, Histogram

from specdec.runtime.cached_lm import CachedLM
from specdec.runtime.slot_lm import SlotLM

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MODEL_CALL_SECONDS = Histogram(
    "specdec_model_call_seconds", "Model compute time of one Propose or Score step (RPC not included)", ["method"],
    buckets=_SECONDS,
)
ACTIVE_SESSIONS = Gauge("specdec_active_sessions", "Sessions held in the KV cache")
CACHE_BYTES = Gauge("specdec_kv_cache_bytes", "Bytes of keys and values held in the KV cache")
CACHE_USAGE = Gauge("specdec_kv_cache_usage", "Fraction (0 to 1) of the KV cache's capacity in use")
CACHE_LAYOUT = Gauge(
    "specdec_kv_cache_layout", "1 for the layout in use: slots (batched passes) or sessions (one at a time)", ["layout"]
)
BATCH_ROWS = Histogram(
    "specdec_batch_rows", "Sessions' steps per forward pass", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
)
BATCH_SECONDS = Histogram(
    "specdec_batch_seconds", "Compute time of one forward pass", buckets=_SECONDS
)


def observe_layout(lm: SlotLM | CachedLM) -> None:
    CACHE_LAYOUT.labels(layout="slots").set(isinstance(lm, SlotLM))
    CACHE_LAYOUT.labels(layout="sessions").set(isinstance(lm, CachedLM))


def observe_batch(rows: int, seconds: float) -> None:
    BATCH_ROWS.observe(rows)
    BATCH_SECONDS.observe(seconds)


def observe_cache(lm: SlotLM | CachedLM) -> None:
    ACTIVE_SESSIONS.set(lm.num_sessions)
    CACHE_BYTES.set(lm.cached_bytes)
    CACHE_USAGE.set(lm.cache_usage)


def record_model_call_soon(method: str, seconds: float, lm: SlotLM | CachedLM | None) -> None:
    """Records a Propose or Score call once the event loop is free: after its reply is on the way."""

    def record() -> None:
        MODEL_CALL_SECONDS.labels(method=method).observe(seconds)
        if lm is not None:
            observe_cache(lm)

    asyncio.get_running_loop().call_soon(record)
