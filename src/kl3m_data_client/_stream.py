"""Ordered concurrent map: the one "fetch many things, yield them in order" shape."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
)
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


if sys.version_info >= (3, 11):

    async def within(awaitable: Awaitable[R], seconds: float) -> R:
        """``await awaitable`` or raise TimeoutError after ``seconds`` (cheaper than wait_for)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def within(awaitable: Awaitable[R], seconds: float) -> R:
        """``await awaitable`` or raise TimeoutError after ``seconds``."""
        return await asyncio.wait_for(awaitable, seconds)


async def in_thread(fn: Callable[..., R], *args: Any, discard: Callable[[R], object]) -> R:
    """``await asyncio.to_thread(fn, *args)`` for a ``fn`` that returns a resource (an open
    file, a part writer): if the caller is cancelled while the thread runs, the resource it
    returns is passed to ``discard`` (close it) instead of being leaked."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except BaseException:

        def drop(done: asyncio.Future[R]) -> None:
            if not done.cancelled() and done.exception() is None:
                discard(done.result())

        task.add_done_callback(drop)
        raise


async def _from_sync(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def aiter_items(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """An async iterator over a sync or async iterable (the async one itself, not a wrapper)."""
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return _from_sync(items)


@asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``async with closing(gen) as it:`` closes ``gen`` on exit, even when abandoned early."""
    try:
        yield iterator
    finally:
        await aclose(iterator)


async def aclose(iterator: object) -> None:
    """Close an async generator (or anything with ``aclose``); no-op otherwise."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class AwaitableIterator(AsyncIterator[T]):
    """An async iterator that can also be awaited for the list of all its items.

    ``async for x in it`` streams; ``await it`` collects (and closes) it; ``aclose()`` closes
    the source early. ``async for`` iterates the source itself (no per-item indirection).
    Each item is produced once: awaiting after partial iteration gives the remaining items.
    """

    __slots__ = ("_source",)

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source

    def __aiter__(self) -> AsyncIterator[T]:
        return self._source

    async def __anext__(self) -> T:
        return await self._source.__anext__()

    async def aclose(self) -> None:
        """Close the source (and the listing or requests it holds)."""
        await aclose(self._source)

    async def _collect(self) -> list[T]:
        async with closing(self._source) as source:
            return [item async for item in source]

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self._collect().__await__()

    def __repr__(self) -> str:
        return f"<AwaitableIterator of {self._source!r}>"


async def ordered_map(
    items: Iterable[T] | AsyncIterable[T],
    fn: Callable[[T], Awaitable[R]],
    *,
    window: int,
) -> AsyncIterator[R]:
    """Yield ``await fn(item)`` for each item, in input order, with ``window`` calls running.

    Input is pulled only as results are consumed (backpressure: a slow consumer holds at most
    ``window`` results). The first failure is raised in order; closing the iterator early
    cancels the calls still running.
    """
    pending: deque[asyncio.Future[R]] = deque()
    source = aiter_items(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.append(asyncio.ensure_future(fn(item)))
            if not pending:
                return
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await aclose(source)
