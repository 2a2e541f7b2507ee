"""Worker processes (spawned, never forked): worker j exports worker shard (j, N).

Worker 0 runs in the calling process, on its event loop with the caller's client (it is
ready at once: no interpreter to start, no second client to create, ~0.4 s of CPU saved);
workers 1..N-1 are spawned processes. A spawned worker imports the export and opens its
client first, then reads its job (the plan and the destination) from its inbox: so workers
can be started before the export knows its plan (:class:`Standby`, used by ``kl3m-client
export`` to overlap their start-up with its own). Each worker has its own client (from the picklable
:class:`ClientConfig`), its own stream ``w{j}`` in the manifest (updated under an
inter-process lock), its own parts ``part-w{j}-*`` and its own ``errors-w{j}.jsonl``.
Spawned workers send progress, completion or their exception on a queue; the parent sums
progress and merges the results. The dataset is listed once, by the parent, which deals each
worker the items of its shard that come after the worker's checkpoint, in listing order
(bounded queues: the listing runs at most :data:`DEAL_DEPTH` batches ahead of a worker).
When any worker fails, the others are stopped (worker 0 is cancelled, which aborts its open
part) and the error is raised: a rerun resumes every stream from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import multiprocessing
import pickle
import queue as queue_module
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import KL3MError
from kl3m_data_client._stream import closing
from kl3m_data_client.export._auto import AUTO_LISTING_PEEK, processes_usable, resolve_workers
from kl3m_data_client.export._client_api import factory_of
from kl3m_data_client.export._items import Item, Peek, Tracker, iter_items
from kl3m_data_client.export._manifest import WORKERS_LOCK, file_lock
from kl3m_data_client.export._options import ExportPlan
from kl3m_data_client.export._outage import ExportStoppedError, Outage
from kl3m_data_client.export._streams import resume_point, run_stream

if TYPE_CHECKING:
    from kl3m_data_client.export._client_api import ClientFactory, ExportClient
    from kl3m_data_client.export._report import Counters

#: Seconds between two progress messages of a worker.
WORKER_PROGRESS_INTERVAL = 0.2
#: Seconds between two checks of a spawned worker that its parent is alive.
ORPHAN_CHECK_INTERVAL = 0.2
#: Items per message of the parent's listing to a worker, and batches queued per worker.
DEAL_BATCH = 256
DEAL_DEPTH = 16

#: One dealt item: (position, key, document_id, error, listed size).
Dealt = tuple[int, str, str, "KL3MError | None", "int | None"]
#: The first message of a spawned worker's inbox: its plan and destination (None: stop).
Job = tuple[ExportPlan, str]


async def _deal(
    client: ExportClient,
    plan: ExportPlan,
    dest: Path,
    send: list[Callable[[list[Dealt] | None], Awaitable[None]]],
    outage: Outage,
    peek: Peek | None = None,
) -> None:
    """List the dataset once (starting with ``peek``, the items already read, on a fresh
    start); send worker ``j`` the items of its shard after its checkpoint."""
    from kl3m_data_client.export._records import worker_of

    points = [await asyncio.to_thread(resume_point, dest, f"w{j}") for j in range(len(send))]
    todo = {j for j, (_, _, complete) in enumerate(points) if not complete}
    start: tuple[str | None, int] = (None, 0)
    if todo and all(points[j][0] is not None for j in todo):
        first = min(todo, key=lambda j: points[j][0] or "")
        start = (points[first][0], points[first][1])
    after = [point[0] for point in points]
    batches: list[list[Dealt]] = [[] for _ in send]
    if todo:
        listing = iter_items(
            client, plan, start_after=start[0], position=start[1], outage=outage, peek=peek
        )
        async with closing(listing) as items:
            async for item in items:
                j = worker_of(item.document_id, plan.shard, plan.workers)
                last_key = after[j]
                if j not in todo or (last_key is not None and item.key <= last_key):
                    continue
                batch = batches[j]
                batch.append((item.position, item.key, item.document_id, item.error, item.size))
                if len(batch) >= DEAL_BATCH:
                    batches[j] = []
                    await send[j](batch)
    for j, batch in enumerate(batches):
        if batch:
            await send[j](batch)
        await send[j](None)


def _put(q: Any, batch: list[Dealt] | None, stop: threading.Event) -> None:
    """Put on a bounded process queue; give up when ``stop`` is set (the run is ending)."""
    while not stop.is_set():
        try:
            q.put(batch, timeout=0.2)
            return
        except queue_module.Full:
            continue


def _orphaned() -> bool:
    """True in a spawned worker whose exporting process is gone."""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def _get(q: Any) -> Any:
    """The next message from the parent (a job, a batch, None); fails if the parent process
    is gone."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue_module.Empty:
            if _orphaned():
                raise ExportStoppedError("the exporting process is gone: worker stopped") from None


async def _dealt(receive: Callable[[], Awaitable[list[Dealt] | None]]) -> AsyncIterator[Item]:
    """The items dealt to this worker, in order, until the parent's end marker."""
    while (batch := await receive()) is not None:
        for position, key, document_id, error, size in batch:
            yield Item(position, key, document_id, error, size)


def _picklable(exc: BaseException, j: int) -> BaseException:
    """``exc`` if it crosses to the parent intact (KL3MErrors do, with their attributes),
    else a KL3MError naming it (its cause cannot travel)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return KL3MError(f"export worker {j} failed: {type(exc).__name__}: {exc}")
    return exc


async def _work(factory: ClientFactory, config: ClientConfig, j: int, q: Any, inbox: Any) -> None:
    last = 0.0

    def on_update(counters: Counters, force: bool) -> None:
        nonlocal last
        now = time.monotonic()
        if force or now - last >= WORKER_PROGRESS_INTERVAL:
            last = now
            q.put(("progress", j, counters.as_dict()))

    async with factory(config=config) as client:  # ready before the job comes
        job: Job | None = await asyncio.to_thread(_get, inbox)
        if job is None:
            return  # not needed (a standby worker the export did not use)
        plan, dest = job
        items = _dealt(lambda: asyncio.to_thread(_get, inbox)) if plan.ids is None else None
        # see _destination.DestinationLock.acquire
        with file_lock(Path(dest) / WORKERS_LOCK, shared=True):
            if _orphaned():  # the parent died before this worker held the lock: write nothing
                raise ExportStoppedError("the exporting process is gone: worker stopped")
            stream = asyncio.ensure_future(
                run_stream(
                    client, plan, Path(dest), f"w{j}", (j, plan.workers), on_update, items=items
                )
            )
            counters = await _unless_orphaned(stream)
    q.put(("done", j, counters.as_dict()))


async def _unless_orphaned(stream: asyncio.Future[Counters]) -> Counters:
    """The stream's result; cancel it (its open part is aborted) if the parent dies."""
    while not stream.done():
        await asyncio.wait([stream], timeout=ORPHAN_CHECK_INTERVAL)
        if not stream.done() and _orphaned():
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
            raise ExportStoppedError("the exporting process is gone: worker stopped")
    return stream.result()


def worker_main(factory: ClientFactory, config: ClientConfig, j: int, q: Any, inbox: Any) -> None:
    """Entry point of spawned worker ``j``: a client from ``factory``, then the job and the
    dealt items from ``inbox``; progress, completion or its exception on ``q``."""
    try:
        asyncio.run(_work(factory, config, j, q, inbox))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        q.put(("error", j, _picklable(exc, j)))
    finally:
        q.close()
        q.join_thread()


def _stop(procs: list[Any]) -> None:
    procs = [p for p in procs if p.pid is not None]  # started ones (a start may have failed)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _check_alive(procs: dict[int, Any], done: set[int], dead_since: dict[int, float]) -> None:
    now = time.monotonic()
    for j, p in procs.items():
        if j in done or p.exitcode is None:
            continue
        # give its last message time to arrive before declaring it dead
        if now - dead_since.setdefault(j, now) > 2.0:
            raise ExportStoppedError(
                f"export worker {j} exited with code {p.exitcode} before finishing; "
                "rerun the same export to resume"
            )


async def auto_workers(
    client: ExportClient, plan: ExportPlan, outage: Outage
) -> tuple[ExportPlan, Peek | None]:
    """``plan`` (resolved from ``workers="auto"``) with fewer workers for a small export,
    and the listing read to decide (the export starts with those items: listed once).

    Explicit ids are counted; a listing is read up to :data:`AUTO_LISTING_PEEK` objects
    (one or two pages) before any worker starts, waiting through outages like the export's
    own listing, so the count does not depend on a transient failure.
    """
    if plan.workers == 1:
        return plan, None
    items: list[Item] = []
    more = False
    async with closing(iter_items(client, plan, outage=outage)) as listing:
        async for item in listing:
            items.append(item)
            if item.position >= AUTO_LISTING_PEEK:
                more = True
                break
    if not more:
        plan = replace(plan, workers=resolve_workers("auto", documents=len(items)))
    if plan.workers == 1:  # workers started ahead are not needed: stop them now
        standby = _STANDBY.get()
        if standby is not None and standby.fits(client):
            await asyncio.to_thread(standby.discard)
    return plan, (Peek(items, more) if plan.ids is None else None)


def _sender(inbox: Any, stop: threading.Event) -> Callable[[list[Dealt] | None], Awaitable[None]]:
    """How the dealer sends a batch to a spawned worker's ``inbox`` (waiting in a thread when
    it is full, until ``stop``)."""

    async def send(batch: list[Dealt] | None) -> None:
        try:
            inbox.put_nowait(batch)
        except queue_module.Full:
            await asyncio.to_thread(_put, inbox, batch, stop)

    return send


async def _supervise(
    q: Any,
    procs: dict[int, Any],
    local: asyncio.Task[Counters],
    dealer: asyncio.Task[None] | None,
    tracker: Tracker,
) -> None:
    """Relay the workers' progress until all are done; raise the first failure (of the
    listing, of worker 0, of a spawned worker, or a spawned worker that died)."""
    from kl3m_data_client.export._report import Counters

    done: set[int] = set()
    dead_since: dict[int, float] = {}
    while True:
        if dealer is not None and dealer.done():
            dealer.result()  # raises a failure of the listing
        if local.done():
            local.result()  # raises worker 0's failure
            if len(done) == len(procs):
                break
        elif len(done) == len(procs):
            await asyncio.wait([local])
            continue
        try:
            kind, j, payload = await asyncio.to_thread(q.get, True, 0.2)
        except queue_module.Empty:
            _check_alive(procs, done, dead_since)
            continue
        if j not in procs:
            continue  # a standby worker this export released
        if kind == "error":
            raise payload
        tracker.update(f"w{j}", Counters.from_dict(payload), force=kind == "done")
        if kind == "done":
            done.add(j)


class Standby:
    """Spawned workers ``1..count`` of an export whose plan is not known yet.

    Each starts at once (interpreter, imports, its own client) and then waits for its job;
    an export run inside :meth:`ready` adopts them (:func:`run_workers`) instead of starting
    its workers after its listing, so their start-up overlaps the caller's. Those it does not
    need are stopped: all of them as soon as ``workers="auto"`` picks one worker
    (:func:`auto_workers`), the spare ones when the export starts, the rest when
    :meth:`ready` exits.
    """

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self._q: Any = None
        self.procs: dict[int, Any] = {}
        self.inboxes: dict[int, Any] = {}
        self.factory: ClientFactory | None = None
        self.config: ClientConfig | None = None
        self.adopted = False  # an export took the workers: it stops them
        self.discarded = False

    @property
    def q(self) -> Any:
        """The workers' messages to the parent (made with the first worker: a multiprocessing
        queue starts multiprocessing's resource tracker process)."""
        if self._q is None:
            self._q = self.ctx.Queue()
        return self._q

    def start(self, factory: ClientFactory, config: ClientConfig, j: int) -> None:
        """Start worker ``j`` (a client from ``factory(config=config)``)."""
        self.factory, self.config = factory, config
        inbox = self.ctx.Queue(DEAL_DEPTH)
        proc = self.ctx.Process(
            target=worker_main,
            args=(factory, config, j, self.q, inbox),
            name=f"kl3m-export-w{j}",
        )
        self.procs[j], self.inboxes[j] = proc, inbox
        proc.start()

    def fits(self, client: ExportClient) -> bool:
        """True if these workers were started for exports of ``client`` and are free."""
        return (
            not (self.adopted or self.discarded)
            and self.factory is factory_of(client)
            and self.config == client.config
        )

    def discard(self) -> None:
        """Stop the workers now, unless an export adopted them (then it stops them)."""
        if self.adopted or self.discarded:
            return
        self.discarded = True
        _stop(list(self.procs.values()))
        _close_queues(self.inboxes, self._q)

    @classmethod
    @contextlib.contextmanager
    def ready(cls, client: ExportClient, count: int) -> Iterator[Standby]:
        """Start ``count`` workers for exports of ``client`` now; stop the unused ones at
        exit. Nothing is started where ``client`` cannot use worker processes."""
        standby = cls()
        if count > 0 and client._portable and processes_usable():
            for j in range(1, count + 1):
                standby.start(factory_of(client), client.config, j)
        token = _STANDBY.set(standby)
        try:
            yield standby
        finally:
            _STANDBY.reset(token)
            standby.discard()


#: The :class:`Standby` workers of the export about to run in this context, if any.
_STANDBY: contextvars.ContextVar[Standby | None] = contextvars.ContextVar(
    "kl3m_export_standby", default=None
)


def _release(procs: dict[int, Any], inboxes: dict[int, Any]) -> None:
    """Tell waiting workers they are not needed (they close their client and exit)."""
    for j, inbox in inboxes.items():
        if procs[j].pid is not None and procs[j].is_alive():
            with contextlib.suppress(queue_module.Full, ValueError, OSError):
                inbox.put_nowait(None)


async def run_workers(
    client: ExportClient,
    plan: ExportPlan,
    dest: Path,
    tracker: Tracker,
    outage: Outage,
    peek: Peek | None = None,
) -> None:
    """Run ``plan.workers`` workers to completion (or stop them all on failure).

    Worker 0 runs here, on this loop and ``client``; the others are spawned processes (the
    :class:`Standby` ones first, if this export runs inside :meth:`Standby.ready`).
    The listing and worker 0 share ``outage``; each spawned worker has its own clock.
    """
    standby = _STANDBY.get()
    if standby is None or not standby.fits(client):
        standby = Standby()
    standby.adopted = True
    q = standby.q
    # explicit ids: each worker walks the list itself; a listing: the parent lists once
    listing = plan.ids is None
    spare = {j: standby.procs.pop(j) for j in list(standby.procs) if j >= plan.workers}
    spare_inboxes = {j: standby.inboxes.pop(j) for j in spare}
    procs, inboxes = standby.procs, standby.inboxes
    stop = threading.Event()
    local_inbox: asyncio.Queue[list[Dealt] | None] = asyncio.Queue(DEAL_DEPTH)
    local: asyncio.Task[Counters] | None = None
    dealer: asyncio.Task[None] | None = None
    try:
        _release(spare, spare_inboxes)
        for j in range(1, plan.workers):
            if j not in procs:
                await asyncio.to_thread(standby.start, factory_of(client), client.config, j)
        for j in range(1, plan.workers):
            inboxes[j].put_nowait((plan, str(dest)))  # its first message: an empty queue
        if listing:
            senders = [
                local_inbox.put,
                *(_sender(inboxes[j], stop) for j in range(1, plan.workers)),
            ]
            dealer = asyncio.create_task(_deal(client, plan, dest, senders, outage, peek))
        local = asyncio.create_task(
            run_stream(
                client,
                plan,
                dest,
                "w0",
                (0, plan.workers),
                lambda c, force: tracker.update("w0", c, force=force),
                items=_dealt(local_inbox.get) if listing else None,
                outage=outage,
            )
        )
        await _supervise(q, procs, local, dealer, tracker)
    finally:
        stop.set()
        procs.update(spare)
        inboxes.update(spare_inboxes)
        await _finish(asyncio.ensure_future(_shutdown([dealer, local], procs, inboxes, q)))


async def _shutdown(
    tasks: list[asyncio.Task[Any] | None], procs: dict[int, Any], inboxes: dict[int, Any], q: Any
) -> None:
    """Cancel the listing and worker 0, stop the spawned workers, close the queues."""
    for task in tasks:
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(_stop, list(procs.values()))
    _close_queues(inboxes, q)


def _close_queues(inboxes: dict[int, Any], q: Any) -> None:
    """Close the queues of stopped workers (what is still queued is dropped)."""
    for inbox in inboxes.values():
        inbox.close()
        inbox.cancel_join_thread()
    if q is not None:
        q.close()
        with contextlib.suppress(Exception):
            q.join_thread()


async def _finish(task: asyncio.Future[None]) -> None:
    """Wait for ``task`` to the end even if this one is cancelled meanwhile (then raise the
    cancellation after it): a cancel scope that re-cancels every await (anyio's, as in the
    blocking client) must not leave worker processes running."""
    cancelled: BaseException | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = exc
    task.result()
    if cancelled is not None:
        raise cancelled
