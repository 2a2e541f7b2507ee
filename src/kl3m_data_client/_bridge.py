"""Drive an async iterator from a blocking thread through an anyio portal, in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")


async def _receive_batch(receive: MemoryObjectReceiveStream[T]) -> list[T]:
    """Wait for one item, then take every item already buffered."""
    batch = [await receive.receive()]
    while True:
        try:
            batch.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return batch


def iterate_in_portal(
    portal: BlockingPortal, make: Callable[[], AsyncIterator[T]], buffer: int
) -> Iterator[T]:
    """Yield the items of ``make()`` run on ``portal``'s loop.

    A producer task feeds a bounded memory stream (backpressure); the consumer takes every
    buffered item per thread hop. Abandoning the iterator cancels the producer, which closes
    the async iterator and whatever it holds.
    """
    send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=buffer)

    async def produce() -> None:
        source = make()
        try:
            async with send:
                async for item in source:
                    await send.send(item)
        finally:
            await source.aclose()  # type: ignore[attr-defined]

    future = portal.start_task_soon(produce)
    try:
        while True:
            try:
                batch = portal.call(_receive_batch, receive)
            except anyio.EndOfStream:
                break
            yield from batch
        future.result()
    finally:
        if not future.done():
            future.cancel()
        try:
            portal.call(receive.aclose)
        except RuntimeError:  # the portal already stopped: nothing runs on its loop any more
            receive.close()
            send.close()
