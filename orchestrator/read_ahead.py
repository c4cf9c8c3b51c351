"""Producing a stream's next chunk while the current one is written to the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def read_ahead(source: AsyncIterator[T], depth: int = 1) -> AsyncIterator[T]:
    """Yields what `source` yields, while a task already produces the next items (up to `depth`
    waiting), so the consumer's awaits overlap the producer's. grpc.aio waits for each streamed
    message to be sent before the handler goes on; read ahead, the next iteration's draft call
    starts meanwhile. `source`'s errors surface here; closing this generator stops and closes it.
    """
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    await queue.put((item, None))
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put((_END, error))
        else:
            await queue.put((_END, None))

    producer = asyncio.create_task(produce())
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
