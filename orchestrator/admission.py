"""Admission control: how many streams generate at once, and how many may wait for a place.

Up to `max_running` streams generate at once; up to `max_waiting` more wait, in arrival order; a
request beyond both is refused at once with RESOURCE_EXHAUSTED, naming the limit, instead of
queueing without bound. The two gauges are what Kubernetes inference gateways and KEDA read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from orchestrator import metrics
from specdec.runtime.errors import ResourceExhausted

# Defaults: the services batch up to their cache's slots per pass (21 at the default --cache-mb for
# the default target); beyond that, streams take turns.
DEFAULT_MAX_RUNNING = 32
DEFAULT_MAX_WAITING = 128


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("--max-concurrent-streams must be >= 1 and --max-queued-streams >= 0")
        self._max_running = max_running
        self._max_waiting = max_waiting
        self._places = asyncio.Semaphore(max_running)
        self._waiting = 0
        self.running = 0  # streams generating now: the load adaptive k learns its costs at

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Holds one of the running places for the body; waits for one, or refuses."""
        if self._places.locked() and self._waiting >= self._max_waiting:
            raise ResourceExhausted(
                f"the server is at its limit of {self._max_running} streams generating and {self._max_waiting} "
                "waiting (--max-concurrent-streams, --max-queued-streams); retry later"
            )
        self._waiting += 1
        metrics.REQUESTS_WAITING.set(self._waiting)
        try:
            await self._places.acquire()
        finally:
            self._waiting -= 1
            metrics.REQUESTS_WAITING.set(self._waiting)
        self.running += 1
        metrics.REQUESTS_RUNNING.set(self.running)
        try:
            yield
        finally:
            self.running -= 1
            metrics.REQUESTS_RUNNING.set(self.running)
            self._places.release()
