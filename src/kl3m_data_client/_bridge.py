"""Running async code from sync code: the one home of the blocking <-> event loop hop.

* :func:`loop_thread` starts an event loop on a new thread for the duration (an anyio
  blocking portal); :func:`run_sync` runs one coroutine function to completion on such a
  thread and :func:`iterate_sync` drives an async iterator from one. Both work whether or
  not the calling thread already runs an event loop (Jupyter, an async test, a Ray actor),
  unlike ``asyncio.run``. A ``KeyboardInterrupt`` (or any exception) in the calling thread
  cancels the coroutine and waits for its clean-up before it propagates.
* :func:`iterate_in_portal` drives an async iterator from a blocking thread, in batches;
  closing it early cancels the producer and waits until the source has finished its cleanup
  (shielded, so the cancellation cannot cut it short).
* :func:`call_relaying` runs a coroutine on the loop while calls of a user callback are
  relayed to the calling thread, so user code never runs on (or stalls) the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream

from kl3m_data_client._errors import ClientClosedError
from kl3m_data_client._stream import aclose

T = TypeVar("T")
A = TypeVar("A")


#: After the first item of a batch, wait up to this long for more (fewer thread hops).
LINGER_SECONDS = 0.004
#: Largest batch handed over per thread hop.
MAX_BATCH = 1024
#: Upper bound of the shielded clean-up of a closed source (closing a listing takes ms).
CLEANUP_SECONDS = 30.0


@contextmanager
def loop_thread(name: str = "kl3m-data-client-loop") -> Iterator[BlockingPortal]:
    """An asyncio event loop on a new daemon thread named ``name``, for the ``with`` block.

    On leaving the block the loop is stopped (tasks still running are cancelled if the
    block raised) and the thread joined.
    """
    with start_blocking_portal("asyncio", name=name) as portal:
        yield portal


def run_sync(fn: Callable[..., Awaitable[T]], *args: Any, name: str = "kl3m-data-client-run") -> T:
    """``await fn(*args)`` on a private event loop thread; its result (or its exception).

    The one way this library runs async code from sync code: safe inside a running event
    loop (the calling thread only waits), and interrupting the wait cancels the coroutine
    and waits for its clean-up.
    """
    with loop_thread(name) as portal:
        return portal.call(fn, *args)


def iterate_sync(
    make: Callable[[], AsyncIterator[T]], buffer: int, *, name: str = "kl3m-data-client-iter"
) -> Iterator[T]:
    """The items of ``make()``, an async iterator run on a private event loop thread.

    See :func:`iterate_in_portal` (batching, backpressure through ``buffer``, clean-up of
    the source when the iterator is closed early). The thread lives as long as the iterator.
    """
    with loop_thread(name) as portal:
        yield from iterate_in_portal(portal, make, buffer)


class Host(Protocol):
    """What the bridge needs of a blocking client's loop runner."""

    @property
    def portal(self) -> BlockingPortal:
        """The portal of the loop thread."""

    @property
    def closed(self) -> bool:
        """True once the loop was stopped (explicit close)."""

    def in_use(self) -> AbstractContextManager[None]:
        """Held while an iterator runs: the loop is not stopped by a finalizer meanwhile."""


class _PortalOnly:
    """A :class:`Host` for a bare portal whose owner keeps it running during the iteration."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self.closed = False

    def in_use(self) -> AbstractContextManager[None]:
        return nullcontext()


class _Stopper:
    """Cancels a task running on the loop, even before it has started (loop thread only)."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.requested = False

    def enter(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        if self.requested:
            scope.cancel()

    def stop(self) -> None:
        self.requested = True
        if self.scope is not None:
            self.scope.cancel()


def _stop_and_wait(portal: BlockingPortal, stopper: _Stopper, future: Any) -> bool:
    """Cancel the task of ``future`` and wait until it has returned (its clean-up done).

    False if the loop cannot be reached: it was stopped (its tasks went with it), or this
    runs on the loop thread itself (a garbage collection there), where waiting would hang.
    """
    if future.done():
        return True
    try:
        portal.call(stopper.stop)
    except RuntimeError:
        future.cancel()
        return False
    concurrent.futures.wait([future])
    return True


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
    host: Host | BlockingPortal,
    make: Callable[[], AsyncIterator[T]],
    buffer: int,
    *,
    owner: object = None,
) -> Iterator[T]:
    """Yield the items of ``make()`` run on the loop of ``host`` (or of a bare portal).

    A producer task feeds a bounded memory stream (backpressure); the consumer takes every
    buffered item per thread hop. ``owner`` (the blocking client) stays referenced until the
    iterator is exhausted or closed, and ``host.in_use()`` is held while it runs, so the
    client's finalizer cannot stop the loop under it. Closing or abandoning the iterator
    cancels the producer and waits for it: the source is closed under a shielded scope, so
    its own clean-up (a look-ahead request cancelled and awaited, its connection released)
    completes before ``close()`` returns.
    """
    if isinstance(host, BlockingPortal):
        host = _PortalOnly(host)
    with host.in_use():  # ``owner`` stays referenced by this frame until it ends
        portal = host.portal
        send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=buffer)
        stopper = _Stopper()

        async def produce() -> None:
            with anyio.CancelScope() as scope:
                stopper.enter(scope)
                source = make()
                try:
                    async with send:
                        async for item in source:
                            # send() yields to the loop before every item (an anyio
                            # checkpoint: an extra loop cycle, ~50 us); only wait when the
                            # buffer is full
                            try:
                                send.send_nowait(item)
                            except anyio.WouldBlock:
                                await send.send(item)
                finally:
                    with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
                        await aclose(source)

        future = portal.start_task_soon(produce)
        try:
            while True:
                try:
                    batch = portal.call(_receive_batch, receive)
                except anyio.EndOfStream:
                    break
                except (RuntimeError, concurrent.futures.CancelledError):
                    if host.closed:  # the portal stopped, or its stop cancelled this call
                        raise ClientClosedError("the client was closed during iteration") from None
                    raise
                yield from batch
            future.result()
        finally:
            if host.closed or not _stop_and_wait(portal, stopper, future):
                receive.close()  # the loop is out of reach: close the streams from here
                send.close()
            else:
                portal.call(receive.aclose)


_DONE: Any = object()


def call_relaying(
    portal: BlockingPortal,
    make: Callable[[Callable[[A], None]], Coroutine[Any, Any, T]],
    callback: Callable[[A], Any],
) -> T:
    """``make(relay)`` run on ``portal``'s loop; each ``relay(x)`` calls ``callback(x)`` in
    the calling thread.

    The loop only queues the argument (it never waits for the callback). When the callback is
    slower than the calls, queued arguments are coalesced: the callback gets the latest one
    (suited to progress snapshots; the last one is always delivered, before the result is
    returned). If the callback raises (or this thread is interrupted), the coroutine is
    cancelled, its clean-up awaited, and the callback's exception is raised here.
    """
    mailbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stopper = _Stopper()
    result: list[T] = []

    async def run() -> None:
        with anyio.CancelScope() as scope:
            stopper.enter(scope)
            result.append(await make(mailbox.put))

    future = portal.start_task_soon(run)
    future.add_done_callback(lambda _: mailbox.put(_DONE))
    try:
        while True:
            items = [mailbox.get()]
            while True:  # coalesce whatever else is queued
                try:
                    items.append(mailbox.get_nowait())
                except queue.Empty:
                    break
            done = items[-1] is _DONE  # always the last message
            if done:
                items.pop()
            if items:
                callback(items[-1])
            if done:
                break
    except BaseException:
        _stop_and_wait(portal, stopper, future)
        raise
    future.result()  # the coroutine's exception, if any
    return result[0]
