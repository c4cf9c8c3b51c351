"""orchestrator.read_ahead: the next item is produced while the consumer is busy with this one."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.read_ahead import read_ahead


def test_items_arrive_in_order_and_the_next_is_produced_during_the_consumers_await():
    events: list[str] = []

    async def source():
        for i in range(3):
            events.append(f"produce {i}")
            yield i

    async def main() -> list[int]:
        got = []
        async for item in read_ahead(source()):
            await asyncio.sleep(0.01)  # a client write
            events.append(f"written {item}")
            got.append(item)
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    # Read ahead, each next item is produced before the write of this one finishes.
    assert events.index("produce 1") < events.index("written 0")
    assert events.index("produce 2") < events.index("written 1")


def test_the_sources_error_surfaces_to_the_consumer():
    async def source():
        yield 1
        raise ValueError("upstream failed")

    async def main() -> list[int]:
        return [item async for item in read_ahead(source())]

    with pytest.raises(ValueError, match="upstream failed"):
        asyncio.run(main())


def test_stopping_early_stops_and_closes_the_source():
    state = {"produced": 0, "closed": False}

    async def source():
        try:
            while True:
                state["produced"] += 1
                yield state["produced"]
        finally:
            state["closed"] = True

    async def main() -> None:
        stream = read_ahead(source())
        async for item in stream:
            if item == 2:
                break
        await stream.aclose()

    asyncio.run(main())
    assert state["closed"]
    assert state["produced"] <= 4  # at most depth + 1 past what was consumed
