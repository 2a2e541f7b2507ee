"""Drive an async iterator from a blocking thread through an anyio portal, in batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")


#: After the first item of a batch, wait up to this long for more (fewer thread hops).
LINGER_SECONDS = 0.004
#: Largest batch handed over per thread hop.
MAX_BATCH = 1024


def _drain(receive: MemoryObjectReceiveStream[T], batch: list[T]) -> bool:
    """Move buffered items into ``batch``; False once the stream has ended."""
    while len(batch) < MAX_BATCH:
        try:
            batch.append(receive.receive_nowait())
        except anyio.WouldBlock:
            return True
        except anyio.EndOfStream:
            return False
    return True


async def _receive_batch(receive: MemoryObjectReceiveStream[T]) -> list[T]:
    """Wait for one item; if few follow at once, linger briefly to gather more.

    (The linger is a sleep, not a cancelled receive: cancelling a receive that was just
    handed an item would lose it.)
    """
    batch = [await receive.receive()]
    if _drain(receive, batch) and len(batch) < MAX_BATCH // 8:
        await asyncio.sleep(LINGER_SECONDS)
        _drain(receive, batch)
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
                    # send() yields to the loop before every item (an anyio checkpoint: an
                    # extra loop cycle, ~50 us); only wait when the buffer is full
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
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
