"""The memory budget: bytes held by documents in flight, reserved in input order.

One :class:`Budget` per operation (a ``stream_documents`` or ``get_documents`` call, an
export stream) bounds what its documents hold: bodies being read, their decoded content and
the records waiting to be written. Each input item gets a :class:`Lease` when it is
submitted (input order = ticket order) and charges it in three steps:

1. **Before the GET** it reserves ``BODY_FACTOR x`` the listed size (the body, plus the
   parsed JSON / base64-decoded copies of it that exist while it is decoded). Objects whose
   size is not listed (explicit ids) reserve
   :data:`UNKNOWN_SIZE` -- a HEAD per document would cost a request each -- and, once the
   GET's headers arrive, top the reservation up to the announced ``Content-Length``
   (:meth:`Lease.admit_body`, asked by the store before it reads the body). A top-up that
   does not fit at once is not waited for with the response open: the store closes it
   unread, the item waits for the bytes like any request (see below) and GETs again (one
   extra request, only for a large unlisted object that meets a full budget). After the
   read, the reservation is set to the real size (or the excess given back).
2. **While decoding**, every byte that ``_inflate.inflate`` produces charges
   ``INFLATED_FACTOR`` bytes (the inflated bytes, the text decoded from them, the record or
   line made of that) through a context variable, from whichever thread decodes. A thread
   never waits for the event loop: when the charge does not fit, decoding stops with
   :class:`NeedBudget` (its memory is freed), the item waits for the bytes on the loop and
   decodes again; a retry asks for twice what it holds, so retries are few.
3. **Release** happens when the consumer is done with the item: ``stream_documents`` when
   you ask for the next document, export when the part writer has written the batch that
   holds the record.

Why it cannot deadlock: results leave ``ordered_map`` in input order, so the item the
consumer waits for -- the *head*, the oldest lease the consumer has not taken yet -- must
never wait for bytes that only move once the consumer moves: those of the items behind it
(they wait to be consumed) and those *parked* by the consumer until more items arrive (a
part writer's open batch). So the head is granted over the budget as soon as the bytes the
consumer is freeing by itself (a batch being written, the document you hold) are free.
Every other request waits in ticket order (no overtaking, so a big item is not starved by
the small ones after it) until it fits. A document larger than the whole budget therefore
runs when it is the head and the consumer has freed what it was freeing: alone, apart from
the items behind it that were already granted and a writer's open batch (bounded in bytes
by the writer). At most the budget plus the head's own charge is held; small documents fit
(a 1 GiB budget holds thousands of them), so they keep full concurrency.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from kl3m_data_client._sizes import DEFAULT_MEMORY_BUDGET as DEFAULT_MEMORY_BUDGET
from kl3m_data_client._sizes import MiB as MiB
from kl3m_data_client._sizes import parse_size as parse_size
from kl3m_data_client._stream import aiter_items, closing, ordered_map

T = TypeVar("T")
R = TypeVar("R")

#: Bytes charged per byte of body (the body and its parsed / base64-decoded copies).
BODY_FACTOR = 3
#: Bytes charged per inflated byte: while decoding, the bytes and the text made of them;
#: while a record is handed to a JSONL writer, its text, its encoded line and the batch's
#: copy of that line (measured: a 200 MiB text document peaks at ~3 x 200 MiB).
INFLATED_FACTOR = 3
#: Body size assumed before the GET of an object whose size is not listed (explicit ids).
#: Small, so that small documents keep their concurrency; a larger body is admitted by its
#: real ``Content-Length`` before it is read (:meth:`Lease.admit_body`).
UNKNOWN_SIZE = 256 * 1024


class NeedBudget(Exception):
    """Raised inside a decode when its memory charge does not fit (the decode is retried)."""

    def __init__(self, wanted: int) -> None:
        super().__init__(f"decoding needs {wanted} more bytes of the memory budget")
        self.wanted = wanted


#: The charge hook of the decode running in this context (set by :meth:`Lease.run`).
_charge: ContextVar[Callable[[int], None] | None] = ContextVar("kl3m_budget_charge", default=None)


def charge_inflated(nbytes: int) -> None:
    """Charge ``nbytes`` of inflated output to the current decode's lease (if any)."""
    hook = _charge.get()
    if hook is not None:
        hook(nbytes)


class Budget:
    """Bytes that the leases of one operation may hold (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"memory budget must be positive, got {limit}")
        self.limit = limit
        self.held = 0
        #: held by leases the consumer has taken and will free by itself (being written,
        #: or the document you hold); the head waits for these, never for the others
        self.draining = 0
        #: the most ever held (for tests and benchmarks)
        self.peak = 0
        self._lock = threading.Lock()
        self._next = 0
        self._untaken: OrderedDict[int, Lease] = OrderedDict()  # ticket order
        self._waiters: list[tuple[int, int, Lease, asyncio.Future[None]]] = []

    def lease(self) -> Lease:
        """A new lease, after every lease created before it (call in input order)."""
        with self._lock:
            ticket = self._next
            self._next += 1
            lease = Lease(self, ticket)
            self._untaken[ticket] = lease
            return lease

    # -- called with the lock held -----------------------------------------------------------
    def _is_head(self, lease: Lease) -> bool:
        return next(iter(self._untaken), None) == lease.ticket

    def _grantable(self, lease: Lease, nbytes: int) -> bool:
        if self.held == 0 or self.held + nbytes <= self.limit:
            return True
        # the head goes over the budget, once what the consumer is freeing is free
        return self.draining == 0 and self._is_head(lease)

    def _grant(self, lease: Lease, nbytes: int) -> None:
        self.held += nbytes
        lease.held += nbytes
        if lease._draining():
            self.draining += nbytes
        self.peak = max(self.peak, self.held)

    def _wake(self) -> None:
        """Grant waiters in ticket order; stop at the first that does not fit."""
        while self._waiters:
            _, nbytes, lease, future = self._waiters[0]
            if future.done():  # cancelled
                self._waiters.pop(0)
                continue
            if not self._grantable(lease, nbytes):
                return
            self._waiters.pop(0)
            self._grant(lease, nbytes)
            future.get_loop().call_soon_threadsafe(_resolve, future)

    # -- lease operations ----------------------------------------------------------------------
    async def _reserve(self, lease: Lease, nbytes: int) -> None:
        if nbytes <= 0:
            return
        with self._lock:
            first = not self._waiters or self._waiters[0][0] > lease.ticket
            if first and self._grantable(lease, nbytes):
                self._grant(lease, nbytes)
                return
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (lease.ticket, nbytes, lease, future)
            index = len(self._waiters)
            while index and self._waiters[index - 1][0] > lease.ticket:
                index -= 1
            self._waiters.insert(index, entry)
            self._wake()  # the new entry may be grantable at once (e.g. the head)
        try:
            await future
        except BaseException:
            with self._lock:
                if future.done() and not future.cancelled():  # granted meanwhile: give back
                    self._give(lease, nbytes)
                else:
                    future.cancel()
                    self._wake()
            raise

    def _try(self, lease: Lease, nbytes: int) -> bool:
        """Grant at once or refuse (never waits; callable from any thread)."""
        with self._lock:
            if lease.released:  # a decode thread that outlived its cancelled task
                return True
            older_waiting = bool(self._waiters) and self._waiters[0][0] < lease.ticket
            if (not older_waiting or self._is_head(lease)) and self._grantable(lease, nbytes):
                self._grant(lease, nbytes)
                return True
            return False

    def _give(self, lease: Lease, nbytes: int) -> None:
        nbytes = min(nbytes, lease.held)
        self.held -= nbytes
        lease.held -= nbytes
        if lease._draining():
            self.draining -= nbytes
        self._wake()

    def _taken(self, lease: Lease) -> None:
        with self._lock:
            if self._untaken.pop(lease.ticket, None) is not None:
                lease.taken_ = True
                if lease._draining():
                    self.draining += lease.held
                self._wake()  # the head moved on

    def _park(self, lease: Lease, parked: bool) -> None:
        with self._lock:
            if lease.parked == parked:
                return
            was = lease._draining()
            lease.parked = parked
            if was and not lease._draining():
                self.draining -= lease.held
                self._wake()
            elif lease._draining() and not was:
                self.draining += lease.held

    def _release(self, lease: Lease) -> None:
        with self._lock:
            lease.released = True
            self._untaken.pop(lease.ticket, None)
            self._give(lease, lease.held)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Lease:
    """The bytes one item holds in a :class:`Budget`."""

    __slots__ = (
        "_room",
        "_used",
        "body",
        "budget",
        "held",
        "parked",
        "released",
        "taken_",
        "ticket",
    )

    def __init__(self, budget: Budget, ticket: int) -> None:
        self.budget = budget
        self.ticket = ticket
        self.held = 0
        self.taken_ = False
        self.parked = False
        self.released = False
        self.body = 0  # bytes held for the body
        self._room = 0  # bytes held for decoding
        self._used = 0  # of those, charged by the current decode attempt

    async def reserve_body(self, size: int | None) -> None:
        """Before the GET: hold ``BODY_FACTOR x size`` (:data:`UNKNOWN_SIZE` if unknown)."""
        want = BODY_FACTOR * (UNKNOWN_SIZE if size is None else size)
        await self.budget._reserve(self, want - self.body)
        self.body = max(self.body, want)

    def admit_body(self, size: int) -> bool:
        """A body of ``size`` bytes announced (before it is read): hold it now, or say no.

        Never waits: on no, the caller drops the response unread, waits in
        :meth:`reserve_body` for ``size`` and asks again.
        """
        want = BODY_FACTOR * size
        if want <= self.body:
            return True
        if self.budget._try(self, want - self.body):
            self.body = want
            return True
        return False

    async def body_read(self, size: int) -> None:
        """After the GET: the body's real size (a top-up, or the excess given back)."""
        want = BODY_FACTOR * size
        if want > self.body:
            await self.budget._reserve(self, want - self.body)
        elif want < self.body:
            with self.budget._lock:
                self.budget._give(self, self.body - want)
        self.body = want

    def _charge(self, nbytes: int) -> None:
        need = INFLATED_FACTOR * nbytes
        self._used += need
        over = self._used - self._room
        if over > 0:
            if not self.budget._try(self, over):
                self._used -= need
                raise NeedBudget(max(over, self._room))
            self._room += over

    async def run(self, inline: bool, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` (here when ``inline``, else in a thread) with its inflation charged."""
        while True:
            self._used = 0
            token = _charge.set(self._charge)
            try:
                if inline:
                    return fn(*args)
                return await asyncio.to_thread(fn, *args)
            except NeedBudget as exc:
                wanted = exc.wanted
            finally:
                _charge.reset(token)
            await self.budget._reserve(self, wanted)
            self._room += wanted

    def _draining(self) -> bool:
        return self.taken_ and not self.parked

    def taken(self) -> None:
        """The consumer has the item: it is no longer the head the others may wait for."""
        self.budget._taken(self)

    def park(self, parked: bool = True) -> None:
        """The consumer keeps the item until *more* items arrive (a writer's open batch).

        The head never waits for parked bytes (that would deadlock); it does wait for the
        other taken items, which the consumer frees by itself.
        """
        self.budget._park(self, parked)

    def release(self) -> None:
        """Give back every byte (idempotent)."""
        self.budget._release(self)


async def budgeted_map(
    items: Iterable[T] | AsyncIterable[T],
    fn: Callable[[T, Lease], Awaitable[R]],
    *,
    window: int,
    budget: Budget,
) -> AsyncIterator[tuple[Lease, R]]:
    """:func:`ordered_map` of ``fn(item, lease)``: each item gets its lease in input order.

    Yields ``(lease, result)`` with the lease already marked taken; the caller releases it
    when done with the result. A failed or cancelled call releases its own lease.
    """

    async def with_leases() -> AsyncIterator[tuple[T, Lease]]:
        async with closing(aiter_items(items)) as source:
            async for item in source:
                yield item, budget.lease()

    async def call(pair: tuple[T, Lease]) -> tuple[Lease, R]:
        item, lease = pair
        try:
            return lease, await fn(item, lease)
        except BaseException:
            lease.release()
            raise

    async with closing(ordered_map(with_leases(), call, window=window)) as results:
        async for lease, result in results:
            lease.taken()
            yield lease, result


async def released_in_turn(pairs: AsyncIterator[tuple[Lease, R]]) -> AsyncIterator[R]:
    """The results of :func:`budgeted_map`, each released when the next one is asked for."""
    async with closing(pairs) as source:
        async for lease, result in source:
            try:
                yield result
            finally:
                lease.release()


class NeedRoom(Exception):
    """Not an error: a GET's ``admit`` refused the body's announced size for now.

    The store closed the response before reading its body; reserve ``size`` bytes, then GET
    again (:func:`budgeted_get`).
    """

    def __init__(self, key: str, size: int) -> None:
        super().__init__(f"no room yet for the {size} bytes of {key!r}")
        self.key = key
        self.size = size


class _Gettable(Protocol):
    async def get(self, key: str, *, admit: Callable[[int], bool] | None = None) -> bytes | None:
        """The S3 seam's GET (``_store.S3Store.get``)."""


async def budgeted_get(store: _Gettable, key: str, lease: Lease | None) -> bytes | None:
    """``store.get(key)`` whose body is admitted by ``lease`` before it is read.

    A body that does not fit yet is not read: the lease waits for its announced size (in
    ticket order, the head never blocked) and the GET is made again.
    """
    if lease is None:
        return await store.get(key)
    while True:
        try:
            return await store.get(key, admit=lease.admit_body)
        except NeedRoom as exc:
            await lease.reserve_body(exc.size)
