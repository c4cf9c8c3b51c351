"""Prometheus metrics of the draft and target services (served by `specdec serve --metrics-port`)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge, Histogram

from specdec.runtime.cached_lm import CachedLM

MODEL_CALL_SECONDS = Histogram(
    "specdec_model_call_seconds", "Model compute time of one Propose or Score step (RPC not included)", ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTIVE_SESSIONS = Gauge("specdec_active_sessions", "Sessions held in the prefix KV cache")
CACHE_BYTES = Gauge("specdec_kv_cache_bytes", "Bytes of keys and values held in the prefix KV cache")


def observe_cache(lm: CachedLM) -> None:
    ACTIVE_SESSIONS.set(lm.num_sessions)
    CACHE_BYTES.set(lm.cached_bytes)


def record_model_call_soon(method: str, seconds: float, lm: CachedLM | None) -> None:
    """Records a Propose or Score call once the event loop is free: after its reply is on the way."""

    def record() -> None:
        MODEL_CALL_SECONDS.labels(method=method).observe(seconds)
        if lm is not None:
            observe_cache(lm)

    asyncio.get_running_loop().call_soon(record)
