"""orchestrator.admission: places to run, a bounded wait, refusal beyond both."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.admission import Admission
from specdec.runtime.errors import ResourceExhausted


def test_runs_up_to_the_limit_queues_in_order_and_refuses_beyond_both():
    async def main() -> list[str]:
        admission = Admission(max_running=2, max_waiting=1)
        events: list[str] = []
        release = asyncio.Event()

        async def stream(name: str) -> None:
            async with admission.place():
                events.append(f"{name} runs")
                await release.wait()

        running = [asyncio.ensure_future(stream(name)) for name in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        assert events == ["a runs", "b runs"]  # c waits for a place
        with pytest.raises(ResourceExhausted, match="2 streams generating and 1 waiting"):
            async with admission.place():
                pass
        release.set()
        await asyncio.gather(*running)
        async with admission.place():  # recovered: places free again
            events.append("d runs")
        return events

    assert asyncio.run(main()) == ["a runs", "b runs", "c runs", "d runs"]


def test_a_waiter_that_gives_up_frees_its_place_in_the_queue():
    async def main() -> None:
        admission = Admission(max_running=1, max_waiting=1)
        hold = asyncio.Event()

        async def run_until_released() -> None:
            async with admission.place():
                await hold.wait()

        first = asyncio.ensure_future(run_until_released())
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(run_until_released())
        await asyncio.sleep(0.01)
        waiter.cancel()  # its client went away (or its deadline passed) while waiting
        with pytest.raises(asyncio.CancelledError):
            await waiter
        third = asyncio.ensure_future(run_until_released())  # the queue has room again
        await asyncio.sleep(0.01)
        hold.set()
        await asyncio.gather(first, third)

    asyncio.run(main())
