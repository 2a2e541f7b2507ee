"""The export engine: list -> fetch (ordered_map) -> records -> parts -> manifest.

One *stream* is a sequential exporter over the listing (or the explicit ids) of a dataset,
optionally restricted to a shard. Fetching overlaps listing through :func:`ordered_map`
(bounded window, listing order kept); decoding of big objects and all file work run in
threads. After each part the manifest is replaced atomically with the part's last key, the
counters and the size of ``errors.jsonl``: a rerun continues from there (``StartAfter`` for
listings, a count for explicit ids) and rewrites byte-identical parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kl3m_data_client._budget import Budget, Lease, NeedBudget, budgeted_map, released_in_turn
from kl3m_data_client._errors import (
    CorruptObjectError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    is_per_object,
)
from kl3m_data_client._formats import Limits
from kl3m_data_client._keys import (
    document_id_from_key,
    object_key,
    stage_prefix,
    validate_document_id,
)
from kl3m_data_client._stream import closing, in_thread
from kl3m_data_client.export._manifest import (
    DATA_DIR,
    WORKERS_LOCK,
    Manifest,
    clean_temporaries,
    diff_options,
    errors_name,
    new_manifest,
    part_name,
    read_manifest,
    stream_part_files,
    update_manifest,
    wipe,
    write_manifest,
)
from kl3m_data_client.export._options import PLAN_OPTIONS, ExportPlan, make_plan
from kl3m_data_client.export._outage import Outage
from kl3m_data_client.export._records import (
    Record,
    Skip,
    dedup_key,
    in_shard,
    make_record,
)
from kl3m_data_client.export._report import Counters, ExportProgress, ExportReport, PartInfo
from kl3m_data_client.export._retry import apply_rounds, repair_errors, retry_round
from kl3m_data_client.export._seen import SeenSet
from kl3m_data_client.export._writers import (
    PartWriter,
    check_parquet_record,
    encode_line,
    open_part,
    read_part,
)
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient

logger = logging.getLogger("kl3m_data_client.export")

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
    lease: Lease | None = None  # its bytes in the memory budget (the consumer releases it)


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
    client: AsyncKL3MClient,
    plan: ExportPlan,
    *,
    start_after: str | None = None,
    position: int = 0,
    sub_shard: tuple[int, int] | None = None,
    outage: Outage | None = None,
) -> AsyncIterator[Item]:
    """The documents to export, in listing (or given) order, restricted to the shard.

    ``position`` counts every input item before the shard filter; a listing resumes with
    ``start_after`` (S3 StartAfter), explicit ids by skipping ``position`` items. A listing
    that fails systemically waits on ``outage`` and continues after the last key it listed.
    """
    if outage is None:
        outage = Outage(plan.outage_timeout)
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


def _build(
    plan: ExportPlan, item: Item, data: bytes, limits: Limits, encode: bool
) -> Record | Skip | tuple[Record, bytes | None]:
    """The record of one object and, with ``encode``, what the part writer needs checked or
    encoded already (its JSONL line): whatever a single object contains fails here, as
    that object's error, never in the writer."""
    key = item.key
    try:
        result = make_record(
            plan.stage, key, plan.dataset_id, item.document_id, data, plan.record_filter, limits
        )
        if isinstance(result, Skip) or not encode:
            return result
        if plan.format == "jsonl":
            return result, encode_line(result)
        check_parquet_record(result)
        return result, None
    except (KL3MError, NeedBudget):
        raise
    except Exception as exc:  # RecursionError, MemoryError, ...: a bad object, never a stop
        raise CorruptObjectError(key, f"cannot be exported: {type(exc).__name__}: {exc}") from exc


def _fetcher(
    client: AsyncKL3MClient, plan: ExportPlan, outage: Outage, *, encode: bool = False
) -> Callable[[Item, Lease], Awaitable[Outcome]]:
    """The fetch step: GET (through outages), decode, filter and, with ``encode``, encode.

    Per-object failures become the outcome's ``error``; systemic ones wait on ``outage``
    and, when it is spent, raise (the item is never recorded as done).
    """
    limits = client.config.limits

    async def fetch(item: Item, lease: Lease) -> Outcome:
        if item.error is not None:
            return Outcome(item, error=item.error)
        await lease.reserve_body(item.size)
        try:
            data = await outage.call(lambda: client.store.get(item.key))
        except KL3MError as exc:
            if is_per_object(exc):
                return Outcome(item, error=exc)
            raise
        if data is None:
            return Outcome(item, error=NotFoundError(f"{item.key!r} not found", key=item.key))
        size = len(data)
        await lease.body_read(size)
        try:
            result = await lease.run(size <= INLINE_BYTES, _build, plan, item, data, limits, encode)
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
    client: AsyncKL3MClient,
    plan: ExportPlan,
    *,
    start_after: str | None = None,
    position: int = 0,
    sub_shard: tuple[int, int] | None = None,
    items: AsyncIterator[Item] | None = None,
    outage: Outage | None = None,
    encode: bool = False,
    hold: bool = False,
) -> AsyncIterator[Outcome]:
    """Fetch and turn into records every item, ``max_concurrency`` at a time, in order.

    The items are ``items`` when given (a worker fed by the parent's listing), else
    :func:`iter_items` of the plan. Listing and fetching share one outage clock. Their bytes
    stay within the plan's memory budget (split between its workers): an outcome holds its
    bytes until the next one is asked for, or, with ``hold=True``, until the caller calls
    ``outcome.lease.release()``.
    """
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
    fetched = budgeted_map(items, fetch, window=plan.max_concurrency, budget=budget)
    if hold:
        return _with_leases(fetched)
    return released_in_turn(fetched)


async def _with_leases(fetched: AsyncIterator[tuple[Lease, Outcome]]) -> AsyncIterator[Outcome]:
    async with closing(fetched) as pairs:
        async for lease, outcome in pairs:
            outcome.lease = lease
            yield outcome


# ------------------------------------------------------------------------------ records API
async def iter_export_records(
    client: AsyncKL3MClient,
    dataset_id: str,
    source_stage: Stage | str = Stage.DOCUMENTS,
    key_prefix: str | None = None,
    max_documents: int | None = None,
    *,
    on_error: str = "raise",
    **options: Any,
) -> AsyncIterator[Record]:
    """Export records of a dataset, in listing order.

    A bad object raises its typed error (:class:`CorruptObjectError`, NotFoundError, ...)
    naming its key; with ``on_error="skip"`` it is logged as a warning and skipped instead
    (``export`` records it in errors.jsonl). Systemic failures are waited for
    (``outage_timeout``) and then raised (:class:`ExportStoppedError`), whatever ``on_error``.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    plan = _plan(
        client,
        dataset_id,
        stage=source_stage,
        key_prefix=key_prefix,
        max_documents=max_documents,
        **options,
    )
    count = 0
    if plan.max_documents == 0:
        return
    seen = SeenSet() if plan.deduplicate else None
    async with contextlib.AsyncExitStack() as stack:
        if seen is not None:
            stack.callback(seen.close)
        outcomes = await stack.enter_async_context(closing(iter_outcomes(client, plan)))
        async for oc in outcomes:
            if oc.error is not None:
                if on_error == "raise":
                    raise oc.error
                logger.warning("skipping %s: %s", oc.item.key, oc.error)
                continue
            if oc.record is None:
                continue
            if seen is not None and not seen.add(dedup_key(oc.record)):
                continue
            yield oc.record
            count += 1
            if plan.max_documents is not None and count >= plan.max_documents:
                return


def _plan(client: AsyncKL3MClient, dataset_id: str, **options: Any) -> ExportPlan:
    unknown = sorted(set(options) - PLAN_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected export option(s): {', '.join(unknown)}")
    if options.get("max_concurrency") is None:
        options["max_concurrency"] = 2 * client.config.max_concurrency
    if options.get("memory_budget") is None:
        options["memory_budget"] = client.config.memory_budget
    return make_plan(bucket=client.config.bucket, dataset_id=dataset_id, **options)


# ------------------------------------------------------------------------------ one stream
@dataclass
class StreamState:
    parts: list[dict[str, Any]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    errors_bytes: int = 0
    position: int = 0
    last_key: str | None = None
    complete: bool = False


def _stream_entry(dest: Path, stream: str) -> dict[str, Any]:
    manifest = read_manifest(dest)
    return ((manifest or {}).get("streams") or {}).get(stream) or {}


def _last_checkpoint(entry: dict[str, Any]) -> dict[str, Any] | None:
    checkpoint = entry.get("final") if entry.get("complete") else None
    if checkpoint is None and entry.get("parts"):
        checkpoint = entry["parts"][-1]
    return checkpoint


def resume_point(dest: Path, stream: str) -> tuple[str | None, int, bool]:
    """``(last_key, position, complete)`` of a stream's checkpoint (read-only)."""
    entry = _stream_entry(dest, stream)
    checkpoint = _last_checkpoint(entry) or {}
    last_key = checkpoint.get("last_key")
    return last_key, int(checkpoint.get("position", 0)), bool(entry.get("complete"))


def _load_stream(dest: Path, plan: ExportPlan, stream: str) -> StreamState:
    """Restore a stream from the manifest; remove parts and errors written after it."""
    entry = _stream_entry(dest, stream)
    state = StreamState(parts=list(entry.get("parts") or []))
    checkpoint = _last_checkpoint(entry)
    if checkpoint is not None:
        state.counters = Counters.from_dict(checkpoint.get("counters"))
        state.errors_bytes = int(checkpoint.get("errors_bytes", 0))
        state.position = int(checkpoint.get("position", 0))
        state.last_key = checkpoint.get("last_key")
    state.complete = bool(entry.get("complete"))
    on_disk = stream_part_files(dest, stream)
    for index, part in enumerate(state.parts):
        path = dest / part["path"]
        if on_disk.get(index) != path or path.stat().st_size != part["bytes"]:
            raise InvalidInputError(
                f"part {path} listed in the manifest is missing or has the wrong size; "
                "pass overwrite=True to export again"
            )
    for index, path in on_disk.items():
        if index >= len(state.parts):  # renamed but not yet in the manifest: redo it
            path.unlink(missing_ok=True)
    errors = dest / errors_name(stream)
    with open(errors, "ab") as fh:
        if fh.tell() > state.errors_bytes:
            fh.truncate(state.errors_bytes)
            fh.flush()
            os.fsync(fh.fileno())
    return state


def _seen_hashes(dest: Path, plan: ExportPlan, parts: list[dict[str, Any]], stream: str) -> SeenSet:
    """The dedup seen-set of a stream (on disk, in ``dest``), rebuilt from its parts."""
    seen = SeenSet(dest / f".dedup{'-' + stream if stream else ''}.sqlite3")
    try:
        for part in parts:
            for record in read_part(dest / part["path"], plan.format, plan.compression):
                seen.add(dedup_key(record))
    except BaseException:
        seen.close()
        raise
    return seen


def _checkpoint(
    dest: Path, stream: str, *, part: dict[str, Any] | None, final: dict[str, Any] | None
) -> None:
    def change(manifest: Manifest) -> None:
        entry = manifest["streams"].setdefault(stream, {"parts": [], "complete": False})
        if part is not None:
            entry["parts"].append(part)
        if final is not None:
            entry["final"] = final
            entry["complete"] = True

    update_manifest(dest, change)


async def run_stream(
    client: AsyncKL3MClient,
    plan: ExportPlan,
    dest: Path,
    stream: str = "",
    sub_shard: tuple[int, int] | None = None,
    on_update: Callable[[Counters, bool], None] | None = None,
    items: AsyncIterator[Item] | None = None,
    outage: Outage | None = None,
) -> Counters:
    """Export one stream into ``dest`` (resuming it from the manifest); returns its counters.

    ``items``: the stream's items after its checkpoint, when the caller lists for it;
    ``outage``: the run's outage clock (shared with the caller's listing).
    A systemic failure that outlasts the outage clock raises ExportStoppedError: the open
    part is dropped and the manifest stays at the last finished part (a rerun resumes).
    """
    state = await asyncio.to_thread(_load_stream, dest, plan, stream)
    counters = state.counters
    if on_update is not None:
        on_update(counters, True)
    if state.complete:
        return counters
    seen: SeenSet | None = None
    if plan.deduplicate:
        seen = await asyncio.to_thread(_seen_hashes, dest, plan, state.parts, stream)
    data_dir = dest / DATA_DIR
    errors_fh: IO[bytes] = await in_thread(
        open, dest / errors_name(stream), "ab", discard=lambda fh: fh.close()
    )
    writer: PartWriter | None = None
    busy = False  # a thread is using ``writer``
    # The previous batch is encoded and written in a thread while fetching goes on; at most one
    # write runs at a time, so parts stay byte-identical to a sequential run.
    write_task: asyncio.Future[None] | None = None
    # memory budget: a record holds its bytes until the batch that holds it is written (the
    # open batch's records are parked: the next document must not wait for them)
    batch_leases: list[Lease] = []

    def release(leases: list[Lease]) -> None:
        for lease in leases:
            lease.release()
        leases.clear()

    def release_when_written(task: asyncio.Future[Any]) -> None:
        leases = list(batch_leases)
        batch_leases.clear()
        for lease in leases:
            lease.park(False)
        task.add_done_callback(lambda _: release(leases))

    async def wait_for_write() -> None:
        nonlocal write_task, busy
        if write_task is not None:
            task, write_task = write_task, None
            try:
                await task
            finally:
                busy = False

    first_key = ""
    position = state.position
    last_key = state.last_key

    def checkpoint_state(**extra: Any) -> dict[str, Any]:
        errors_fh.flush()
        os.fsync(errors_fh.fileno())
        return {
            "counters": counters.as_dict(),
            "errors_bytes": errors_fh.tell(),
            "position": position,
            "last_key": last_key,
            **extra,
        }

    async def finish_part() -> None:
        nonlocal writer, busy
        assert writer is not None
        await wait_for_write()
        w, pending = writer, writer.take_batch()
        busy = True
        finishing = asyncio.ensure_future(asyncio.to_thread(w.finish, pending))
        release_when_written(finishing)
        sha, size = await finishing
        busy = False
        writer = None
        counters.bytes_out += size
        part = {
            "path": f"{DATA_DIR}/{w.final.name}",
            "records": w.records,
            "sha256": sha,
            "bytes": size,
            "first_key": first_key,
        }

        def commit() -> None:
            part.update(checkpoint_state())
            _checkpoint(dest, stream, part=part, final=None)

        await asyncio.to_thread(commit)
        state.parts.append(part)

    limit = plan.max_documents
    if outage is None:
        outage = Outage(plan.outage_timeout)
    try:
        if limit is None or counters.exported < limit:
            outcomes = iter_outcomes(
                client,
                plan,
                start_after=None if plan.ids is not None else state.last_key,
                position=state.position,
                sub_shard=sub_shard,
                items=items,
                outage=outage,
                encode=True,
                hold=True,
            )
            async with closing(outcomes) as stream_outcomes:
                async for oc in stream_outcomes:
                    counters.bytes_in += oc.bytes_in
                    position, last_key = oc.item.position, oc.item.key
                    record = oc.record
                    if oc.error is not None:
                        counters.errors += 1
                        errors_fh.write(error_line(oc.item.key, plan.stage, oc.error))
                        errors_fh.flush()
                    elif record is None:
                        counters.skipped += 1
                    elif seen is not None and not seen.add(dedup_key(record)):
                        counters.duplicates += 1
                    else:
                        if writer is None:
                            name = part_name(stream, len(state.parts), plan.extension)
                            writer = await in_thread(
                                open_part,
                                data_dir / name,
                                plan.format,
                                plan.compression,
                                plan.stage,
                                plan.content,
                                discard=lambda w: w.abort(),
                            )
                            first_key = oc.item.key
                        counters.exported += 1
                        if oc.lease is not None:
                            batch_leases.append(oc.lease)
                            oc.lease = None
                        if writer.add(record, oc.line):
                            await wait_for_write()
                            busy = True
                            write_task = asyncio.ensure_future(
                                asyncio.to_thread(writer.write_batch, writer.take_batch())
                            )
                            release_when_written(write_task)
                        elif batch_leases:
                            batch_leases[-1].park()
                        if writer.records >= plan.records_per_part:
                            await finish_part()
                        if limit is not None and counters.exported >= limit:
                            break
                    if oc.lease is not None:  # not handed to the writer
                        oc.lease.release()
                    if on_update is not None:
                        on_update(counters, False)
        if writer is not None:
            await finish_part()
        await asyncio.to_thread(
            lambda: _checkpoint(dest, stream, part=None, final=checkpoint_state())
        )
    finally:
        if write_task is not None:  # a thread cannot be cancelled: let it end, then abort
            with contextlib.suppress(BaseException):
                await asyncio.shield(write_task)
            busy = False
        if writer is not None and not busy:
            writer.abort()
        release(batch_leases)
        if seen is not None:
            seen.close()
        errors_fh.close()
    if on_update is not None:
        on_update(counters, True)
    return counters


# ------------------------------------------------------------------------------ orchestration
#: Seconds a new run waits for the workers of a killed run to stop.
WORKERS_GONE_TIMEOUT = 30.0


class _DestinationLock:
    """An exclusive lock on the destination for the whole run (one export at a time)."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / ".export.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        """Lock, then wait until no worker of an earlier (killed) run still holds its lock."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InvalidInputError(
                f"another export is writing to {self.path.parent}; wait for it to finish"
            ) from None
        self.fd = fd
        workers = os.open(self.path.parent / WORKERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + WORKERS_GONE_TIMEOUT
        try:
            while True:
                try:
                    fcntl.flock(workers, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.release()
                        raise InvalidInputError(
                            f"worker processes of an earlier export to {self.path.parent} "
                            "are still running; wait for them to stop"
                        ) from None
                    time.sleep(0.05)
        finally:
            os.close(workers)  # released: this run's workers take it shared

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _prepare(dest: Path, plan: ExportPlan, resume: bool, overwrite: bool) -> tuple[Manifest, bool]:
    """Check the destination against the options; returns (manifest, resumed)."""
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"destination {str(dest)!r} exists and is not a directory")
    (dest / DATA_DIR).mkdir(parents=True, exist_ok=True)
    options = plan.fingerprint()
    manifest = read_manifest(dest)
    if manifest is not None and overwrite:
        manifest = None
        wipe(dest)
    elif manifest is not None and not resume:
        raise InvalidInputError(
            f"{dest} already holds an export; pass overwrite=True to replace it "
            "(or resume=True to continue it)"
        )
    elif manifest is not None:
        diffs = diff_options(manifest.get("options") or {}, options)
        if diffs:
            raise InvalidInputError(
                f"{dest} holds an export made with different options: {'; '.join(diffs)}. "
                "Rerun with the same options to resume it, or pass overwrite=True to replace it"
            )
    if manifest is None:
        wipe(dest)
        manifest = new_manifest(options)
        write_manifest(dest, manifest)
        return manifest, False
    clean_temporaries(dest)
    return manifest, True


def _stream_names(plan: ExportPlan) -> list[str]:
    return [""] if plan.workers == 1 else [f"w{j}" for j in range(plan.workers)]


def _finalize(dest: Path, plan: ExportPlan) -> Manifest:
    """Mark the export complete (merging worker error files into ``errors.jsonl``)."""
    if plan.workers > 1:
        chunks = []
        for name in _stream_names(plan):
            path = dest / errors_name(name)
            if path.exists():
                chunks.append(path.read_bytes())
        from kl3m_data_client.export._manifest import atomic_write

        atomic_write(dest / errors_name(""), b"".join(chunks))

    def change(manifest: Manifest) -> None:
        manifest["complete"] = True

    return update_manifest(dest, change)


def _recovered(c: Counters) -> Counters:
    """A retry round's counters as a change of the export's totals (for progress): what it
    recovered moves from errors to exported / skipped / duplicates."""
    moved = c.exported + c.skipped + c.duplicates
    return Counters(c.exported, c.skipped, c.duplicates, -moved, c.bytes_in, c.bytes_out)


def _read_complete(dest: Path) -> Manifest:
    manifest = read_manifest(dest)
    if manifest is None:
        raise InvalidInputError(f"the manifest of {dest} disappeared during the export")
    return manifest


def build_report(
    dest: Path,
    plan: ExportPlan,
    manifest: Manifest,
    *,
    duration: float,
    processed_this_run: int,
    resumed: bool,
) -> ExportReport:
    """The report of a (finished or interrupted) export, from its manifest."""
    totals = Counters()
    parts: list[PartInfo] = []
    streams = manifest.get("streams") or {}
    for name in _stream_names(plan):
        entry = streams.get(name) or {}
        stream_parts = entry.get("parts") or []
        checkpoint = entry.get("final") or (stream_parts[-1] if stream_parts else None)
        if checkpoint is not None:
            totals.add(Counters.from_dict(checkpoint.get("counters")))
        for p in stream_parts:
            parts.append(
                PartInfo(
                    str(dest / p["path"]), int(p["records"]), str(p["sha256"]), int(p["bytes"])
                )
            )
    for p in apply_rounds(totals, manifest):
        parts.append(
            PartInfo(str(dest / p["path"]), int(p["records"]), str(p["sha256"]), int(p["bytes"]))
        )
    return ExportReport.from_totals(
        plan.dataset_id,
        plan.stage,
        plan.format,
        dest,
        totals,
        parts,
        compression=plan.compression,
        content=plan.content,
        duration=duration,
        processed_this_run=processed_this_run,
        resumed=resumed,
    )


async def _fetch_total(client: AsyncKL3MClient, plan: ExportPlan, tracker: Tracker) -> None:
    """The expected document count from the dataset index (progress only; failures ignored)."""
    if plan.ids is not None or plan.shard is not None:
        return
    try:
        index = await client.get_dataset_index(plan.dataset_id, plan.key_prefix)
    except KL3MError:
        return
    if index is None:
        return
    total = index.metadata.count or len(index.objects)
    if plan.max_documents is not None:
        total = min(total, plan.max_documents)
    tracker.total = total


def _resolve_destination(destination: str | os.PathLike[str]) -> Path:
    dest = Path(destination).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"destination {str(dest)!r} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


async def export(
    client: AsyncKL3MClient,
    dataset_id: str,
    destination: str | os.PathLike[str],
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: Callable[[ExportProgress], Any] | None = None,
    retry_errors: bool = False,
    **options: Any,
) -> ExportReport:
    """Export a dataset to ``destination`` (see :meth:`AsyncKL3MClient.export`).

    Systemic failures are waited for up to ``outage_timeout`` seconds (default 300), then
    the export stops with :class:`ExportStoppedError` (resumable). With ``retry_errors``,
    once the export is finished, the objects listed in ``errors.jsonl`` are fetched again
    (a retry round: see ``docs/export.md``).
    """
    plan = _plan(client, dataset_id, **options)
    dest = await asyncio.to_thread(_resolve_destination, destination)
    tracker = Tracker(progress)
    outage = Outage(plan.outage_timeout)
    lock = _DestinationLock(dest)
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(acquiring)
    except BaseException:  # cancelled while waiting: the thread ends, then its lock is freed
        with contextlib.suppress(BaseException):
            await acquiring
        lock.release()
        raise
    total_task: asyncio.Task[None] | None = None
    try:
        manifest, resumed = await asyncio.to_thread(_prepare, dest, plan, resume, overwrite)
        if not manifest.get("complete"):
            if progress is not None:
                total_task = asyncio.create_task(_fetch_total(client, plan, tracker))
            if plan.workers == 1:
                await run_stream(
                    client,
                    plan,
                    dest,
                    "",
                    None,
                    lambda c, force: tracker.update("", c, force=force),
                    outage=outage,
                )
            else:
                from kl3m_data_client.export._workers import run_workers

                await run_workers(client, plan, dest, tracker, outage)
            manifest = await asyncio.to_thread(_finalize, dest, plan)
        else:
            await asyncio.to_thread(repair_errors, dest, manifest)
        if retry_errors:
            await retry_round(
                client,
                plan,
                dest,
                outage,
                lambda c, force: tracker.update("retry", _recovered(c), force=force),
            )
            manifest = await asyncio.to_thread(_read_complete, dest)
    finally:
        if total_task is not None and not total_task.done():
            total_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await total_task
        lock.release()
    duration = time.monotonic() - tracker.start
    report = build_report(
        dest,
        plan,
        manifest,
        duration=duration,
        processed_this_run=tracker.processed_this_run(),
        resumed=resumed,
    )
    if progress is not None:
        if not tracker.streams:  # already complete: report the totals once
            tracker.streams[""] = Counters(
                report.exported,
                report.skipped,
                report.duplicates,
                report.errors,
                report.bytes_in,
                report.bytes_out,
            )
            tracker.baseline[""] = tracker.streams[""].processed
        tracker.finish()
    return report


def export_options_help() -> Iterable[str]:
    """The names of the export options (for the CLI and docs)."""
    return sorted(PLAN_OPTIONS | {"resume", "overwrite", "progress", "retry_errors"})
