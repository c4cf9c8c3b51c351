"""specdec.runtime.serving.ModelWorker: short model calls run on the event loop, long ones on a worker
thread, and never two at once."""

from __future__ import annotations

import asyncio
import threading
import time

from specdec.runtime.serving import ModelWorker


def test_short_calls_run_on_the_event_loop_and_long_ones_on_the_worker_thread():
    async def main() -> tuple[str, str, float]:
        worker = ModelWorker()
        short, _ = await worker.run(ModelWorker.INLINE_TOKENS, lambda: threading.current_thread().name)
        long, seconds = await worker.run(
            ModelWorker.INLINE_TOKENS + 1, lambda: (time.sleep(0.02), threading.current_thread().name)[1]
        )
        return short, long, seconds

    short, long, seconds = asyncio.run(main())
    assert short == threading.current_thread().name
    assert long.startswith("model")
    assert seconds >= 0.02  # the call's own time


def test_a_short_call_waits_for_a_long_one_in_flight():
    events: list[str] = []

    def long_call() -> None:
        events.append("long starts")
        time.sleep(0.05)
        events.append("long ends")

    async def main() -> None:
        worker = ModelWorker()
        long = asyncio.create_task(worker.run(ModelWorker.INLINE_TOKENS + 1, long_call))
        await asyncio.sleep(0.01)  # the long call is on the worker thread now
        await worker.run(1, lambda: events.append("short"))
        await long

    asyncio.run(main())
    assert events == ["long starts", "long ends", "short"]
