"""What one export stream works on: the items to fetch (listing or explicit ids), the
fetcher that turns them into outcomes (records, skips, per-object errors) under the memory
budget, and the progress tracker. Shared by the exporter, its workers, retry rounds and Ray.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kl3m_data_client._budget import (
    Budget,
    Lease,
    NeedBudget,
    budgeted_get,
    budgeted_map,
    released_in_turn,
)
from kl3m_data_client._errors import (
    CorruptObjectError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    is_per_object,
)
from kl3m_data_client._keys import (
    document_id_from_key,
    object_key,
    stage_prefix,
    validate_document_id,
)
from kl3m_data_client._limits import Limits
from kl3m_data_client._stream import closing
from kl3m_data_client.export._options import ExportPlan
from kl3m_data_client.export._outage import Outage
from kl3m_data_client.export._records import (
    Record,
    Skip,
    in_shard,
    make_record,
)
from kl3m_data_client.export._report import Counters, ExportProgress
from kl3m_data_client.export._writers import (
    check_parquet_record,
    encode_line,
)
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client.export._client_api import ExportClient


#: Objects up to this size are turned into records on the event loop; larger in a thread.
INLINE_BYTES = 256 * 1024
#: Minimum seconds between two progress callbacks.
PROGRESS_INTERVAL = 0.1


# ------------------------------------------------------------------------------ counters
class Tracker:
    """Sums the counters of all streams and calls ``callback`` at most every 0.1 s."""

    def __init__(self, callback: Callable[[ExportProgress], Any] | None) -> None:
        self.callback = callback
        self.start = time.monotonic()
        self.streams: dict[str, Counters] = {}
        self.baseline: dict[str, int] = {}
        self.total: int | None = None
        self._last = 0.0

    def update(self, stream: str, counters: Counters, *, force: bool = False) -> None:
        self.streams[stream] = counters
        self.baseline.setdefault(stream, counters.processed)
        if self.callback is None:
            return
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self.callback(self.snapshot())

    def processed_this_run(self) -> int:
        return sum(c.processed for c in self.streams.values()) - sum(self.baseline.values())

    def snapshot(self, done: bool = False) -> ExportProgress:
        total = Counters()
        for c in self.streams.values():
            total.add(c)
        return ExportProgress(
            exported=total.exported,
            skipped=total.skipped,
            duplicates=total.duplicates,
            errors=total.errors,
            bytes_in=total.bytes_in,
            bytes_out=total.bytes_out,
            total=self.total,
            elapsed=time.monotonic() - self.start,
            done=done,
            baseline=sum(self.baseline.values()),
        )

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot(done=True))


# ------------------------------------------------------------------------------ source
@dataclass(slots=True)
class Item:
    """One listed (or given) document: its input position, key and id (or why it is bad)."""

    position: int
    key: str
    document_id: str
    error: KL3MError | None = None
    size: int | None = None  # listed size (None for explicit ids)


@dataclass(slots=True)
class Outcome:
    """What became of one item: a record (``line``: its JSONL encoding, when the fetch step
    encoded it), a skip reason, or a per-object error (systemic failures are raised)."""

    item: Item
    record: Record | None = None
    skip: str | None = None
    error: KL3MError | None = None
    bytes_in: int = 0
    line: bytes | None = None


@dataclass(slots=True)
class Peek:
    """The first items of a plan's listing, read before the export started (to size
    ``workers="auto"``): :func:`iter_items` yields them again instead of listing them twice."""

    items: list[Item]
    more: bool  # the listing goes on after the last of them


def error_line(key: str, stage: str, exc: KL3MError) -> bytes:
    """The ``errors.jsonl`` line of a failed object: key, stage, reason, error (the class
    name) and status (HTTP) when known."""
    reason = getattr(exc, "reason", None) or str(exc)
    line: dict[str, Any] = {"key": key, "stage": stage, "reason": reason}
    line["error"] = type(exc).__name__
    if exc.status is not None:
        line["status"] = exc.status
    try:
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in a key or reason: escape it
        return json.dumps(line).encode("ascii") + b"\n"


async def iter_items(
    client: ExportClient,
    plan: ExportPlan,
    *,
    start_after: str | None = None,
    position: int = 0,
    sub_shard: tuple[int, int] | None = None,
    outage: Outage | None = None,
    peek: Peek | None = None,
) -> AsyncIterator[Item]:
    """The documents to export, in listing (or given) order, restricted to the shard.

    ``position`` counts every input item before the shard filter; a listing resumes with
    ``start_after`` (S3 StartAfter), explicit ids by skipping ``position`` items. A listing
    that fails systemically waits on ``outage`` and continues after the last key it listed.
    A listing from the start begins with ``peek`` (this plan's first items, already read)
    and lists only what follows them.
    """
    if outage is None:
        outage = Outage(plan.outage_timeout)
    if peek is not None and plan.ids is None and start_after is None and position == 0:
        for item in peek.items:
            if in_shard(item.document_id, None, sub_shard):
                yield item
        if not (peek.more and peek.items):
            return
        start_after, position = peek.items[-1].key, peek.items[-1].position
    stage = Stage(plan.stage)
    if plan.ids is not None:
        for index, raw_id in enumerate(plan.ids):
            if index < position:
                continue
            try:
                doc_id = validate_document_id(raw_id)
                key = object_key(stage, plan.dataset_id, doc_id)
            except InvalidInputError as exc:
                item = Item(index + 1, raw_id, raw_id, error=exc)
            else:
                item = Item(index + 1, key, doc_id)
            if in_shard(item.document_id, plan.shard, sub_shard):
                yield item
        return
    prefix = stage_prefix(stage, plan.dataset_id, plan.key_prefix)
    after = start_after
    attempt = 0
    while True:
        try:
            async with closing(client.iter_objects(prefix, start_after=after)) as infos:
                async for info in infos:
                    key = after = info.key
                    attempt = 0
                    outage.ok()
                    doc_id = document_id_from_key(key, plan.dataset_id)
                    if not doc_id:
                        continue
                    position += 1
                    if not in_shard(doc_id, plan.shard, sub_shard):
                        continue
                    try:
                        validate_document_id(doc_id)
                    except InvalidInputError as exc:
                        unsafe = CorruptObjectError(key, f"unsafe key: {exc}")
                        yield Item(position, key, doc_id, error=unsafe)
                    else:
                        yield Item(position, key, doc_id, size=info.size)
            return
        except KL3MError as exc:
            if not outage.waitable(exc):
                raise
            await outage.wait(exc, attempt)  # then list again after the last key listed
            attempt += 1


def _builder(
    plan: ExportPlan, limits: Limits, encode: bool
) -> Callable[[Item, bytes], Record | Skip | tuple[Record, bytes | None]]:
    """The record step of ``plan``: one object's bytes -> its record and, with ``encode``,
    what the part writer needs checked or encoded already (its JSONL line): whatever a
    single object contains fails here, as that object's error, never in the writer."""
    stage, dataset_id, flt = plan.stage, plan.dataset_id, plan.record_filter
    jsonl = plan.format == "jsonl"

    def build(item: Item, data: bytes) -> Record | Skip | tuple[Record, bytes | None]:
        try:
            result = make_record(stage, item.key, dataset_id, item.document_id, data, flt, limits)
            if not encode or isinstance(result, Skip):
                return result
            if jsonl:
                return result, encode_line(result)
            check_parquet_record(result)
            return result, None
        except (KL3MError, NeedBudget):
            raise
        except Exception as exc:  # RecursionError, MemoryError, ...: a bad object, never a stop
            raise CorruptObjectError(
                item.key, f"cannot be exported: {type(exc).__name__}: {exc}"
            ) from exc

    return build


def _fetcher(
    client: ExportClient, plan: ExportPlan, outage: Outage, *, encode: bool = False
) -> Callable[[Item, Lease], Awaitable[Outcome]]:
    """The fetch step: GET (through outages), decode, filter and, with ``encode``, encode.

    Per-object failures become the outcome's ``error``; systemic ones wait on ``outage``
    and, when it is spent, raise (the item is never recorded as done).
    """
    build = _builder(plan, client.config.limits, encode)

    async def fetch(item: Item, lease: Lease) -> Outcome:
        if item.error is not None:
            return Outcome(item, error=item.error)
        await lease.reserve_body(item.size)
        try:
            data = await outage.call(lambda: budgeted_get(client._store, item.key, lease))
        except KL3MError as exc:
            if is_per_object(exc):
                return Outcome(item, error=exc)
            raise
        if data is None:
            return Outcome(item, error=NotFoundError(f"{item.key!r} not found", key=item.key))
        size = len(data)
        await lease.body_read(size)
        try:
            result = await lease.run(size <= INLINE_BYTES, build, item, data)
        except KL3MError as exc:
            if not is_per_object(exc):
                raise
            return Outcome(item, error=exc, bytes_in=size)
        if isinstance(result, Skip):
            return Outcome(item, skip=result.reason, bytes_in=size)
        if isinstance(result, tuple):
            return Outcome(item, record=result[0], line=result[1], bytes_in=size)
        return Outcome(item, record=result, bytes_in=size)

    return fetch


def iter_outcomes(
    client: ExportClient,
    plan: ExportPlan,
    *,
    start_after: str | None = None,
    position: int = 0,
    sub_shard: tuple[int, int] | None = None,
    items: AsyncIterator[Item] | None = None,
    outage: Outage | None = None,
    encode: bool = False,
) -> AsyncIterator[Outcome]:
    """Fetch and turn into records every item, ``max_concurrency`` at a time, in order.

    The items are ``items`` when given (a worker fed by the parent's listing), else
    :func:`iter_items` of the plan. Listing and fetching share one outage clock. Their bytes
    stay within the plan's memory budget (split between its workers): an outcome holds its
    bytes until the next one is asked for (:func:`iter_leased_outcomes` hands the leases
    over instead).
    """
    return released_in_turn(
        iter_leased_outcomes(
            client,
            plan,
            start_after=start_after,
            position=position,
            sub_shard=sub_shard,
            items=items,
            outage=outage,
            encode=encode,
        )
    )


def iter_leased_outcomes(
    client: ExportClient,
    plan: ExportPlan,
    *,
    start_after: str | None = None,
    position: int = 0,
    sub_shard: tuple[int, int] | None = None,
    items: AsyncIterator[Item] | None = None,
    outage: Outage | None = None,
    encode: bool = False,
) -> AsyncIterator[tuple[Lease, Outcome]]:
    """:func:`iter_outcomes` as ``(lease, outcome)`` pairs: each outcome holds its bytes in
    the memory budget until the caller calls ``lease.release()`` (a part writer keeps them
    until the batch that holds the record is written)."""
    if outage is None:
        outage = Outage(plan.outage_timeout)
    if items is None:
        items = iter_items(
            client,
            plan,
            start_after=start_after,
            position=position,
            sub_shard=sub_shard,
            outage=outage,
        )
    fetch = _fetcher(client, plan, outage, encode=encode)
    budget = Budget(max(1, plan.memory_budget // plan.workers))
    return budgeted_map(items, fetch, window=plan.max_concurrency, budget=budget)
