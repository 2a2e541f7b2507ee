"""One export stream run to the end: outcomes -> parts -> checkpoints in the manifest, and
the resume point a rerun starts from. Used by the exporter and its worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kl3m_data_client._budget import Lease
from kl3m_data_client._errors import (
    InvalidInputError,
)
from kl3m_data_client._stream import closing, in_thread
from kl3m_data_client.export._items import (
    Item,
    Outcome,
    Peek,
    error_line,
    iter_items,
    iter_leased_outcomes,
)
from kl3m_data_client.export._manifest import (
    DATA_DIR,
    Manifest,
    errors_name,
    part_name,
    read_manifest,
    stream_part_files,
    update_manifest,
)
from kl3m_data_client.export._options import ExportPlan
from kl3m_data_client.export._outage import Outage
from kl3m_data_client.export._records import dedup_key
from kl3m_data_client.export._report import Counters
from kl3m_data_client.export._seen import SeenSet
from kl3m_data_client.export._writers import (
    PartWriter,
    open_part,
    read_part,
)

if TYPE_CHECKING:
    from kl3m_data_client.export._client_api import ExportClient


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


class StreamRunner:
    """One unfinished stream being exported: its open part, pending write and checkpoint state.

    The previous batch is encoded and written in a thread while fetching goes on; at most one
    write runs at a time, so parts stay byte-identical to a sequential run. Memory budget: a
    record holds its bytes until the batch that holds it is written (the open batch's records
    are parked: the next document must not wait for them).
    """

    def __init__(
        self,
        client: ExportClient,
        plan: ExportPlan,
        dest: Path,
        stream: str,
        state: StreamState,
        seen: SeenSet | None,
        errors_fh: IO[bytes],
        on_update: Callable[[Counters, bool], None] | None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.dest = dest
        self.stream = stream
        self.state = state
        self.counters = state.counters
        self.seen = seen
        self.errors_fh = errors_fh
        self.on_update = on_update
        self.writer: PartWriter | None = None
        self.busy = False  # a thread is using ``writer``
        self.write_task: asyncio.Future[None] | None = None
        self.batch_leases: list[Lease] = []
        self.first_key = ""
        self.position = state.position
        self.last_key = state.last_key

    @classmethod
    async def open(
        cls,
        client: ExportClient,
        plan: ExportPlan,
        dest: Path,
        stream: str,
        state: StreamState,
        on_update: Callable[[Counters, bool], None] | None,
    ) -> StreamRunner:
        """A runner of the loaded (unfinished) ``state``, its seen-set and errors file open."""
        seen: SeenSet | None = None
        if plan.deduplicate:
            seen = await asyncio.to_thread(_seen_hashes, dest, plan, state.parts, stream)
        errors_fh: IO[bytes] = await in_thread(
            open, dest / errors_name(stream), "ab", discard=lambda fh: fh.close()
        )
        return cls(client, plan, dest, stream, state, seen, errors_fh, on_update)

    async def run(
        self,
        sub_shard: tuple[int, int] | None,
        items: AsyncIterator[Item] | None,
        outage: Outage,
    ) -> Counters:
        """Export the rest of the stream, then mark it complete; always releases everything."""
        limit = self.plan.max_documents
        try:
            if limit is None or self.counters.exported < limit:
                outcomes = iter_leased_outcomes(
                    self.client,
                    self.plan,
                    start_after=None if self.plan.ids is not None else self.state.last_key,
                    position=self.state.position,
                    sub_shard=sub_shard,
                    items=items,
                    outage=outage,
                    encode=True,
                )
                await self._consume(outcomes)
            if self.writer is not None:
                await self._finish_part()
            await asyncio.to_thread(
                lambda: _checkpoint(
                    self.dest, self.stream, part=None, final=self._checkpoint_state()
                )
            )
        finally:
            await self._close()
        self._notify(True)
        return self.counters

    def _notify(self, final: bool) -> None:
        if self.on_update is not None:
            self.on_update(self.counters, final)

    async def _consume(self, outcomes: AsyncIterator[tuple[Lease, Outcome]]) -> None:
        """Count, record or export each outcome, in order, until ``max_documents``.

        The per-document path: an exported record stays on the event loop unless its part
        must be opened, its batch is full (handed to the writer thread) or its part is.
        """
        counters, plan, seen = self.counters, self.plan, self.seen
        limit, per_part = plan.max_documents, plan.records_per_part
        leases = self.batch_leases
        update = self.on_update
        async with closing(outcomes) as stream_outcomes:
            async for lease, oc in stream_outcomes:
                item, record = oc.item, oc.record
                counters.bytes_in += oc.bytes_in
                self.position, self.last_key = item.position, item.key
                if oc.error is not None:
                    lease.release()
                    counters.errors += 1
                    self.errors_fh.write(error_line(item.key, plan.stage, oc.error))
                    self.errors_fh.flush()
                elif record is None:
                    lease.release()
                    counters.skipped += 1
                elif seen is not None and not seen.add(dedup_key(record)):
                    lease.release()
                    counters.duplicates += 1
                else:
                    writer = self.writer
                    if writer is None:
                        writer = await self._open_part(item.key)
                    counters.exported += 1
                    leases.append(lease)  # released once the batch holding it is written
                    if writer.add(record, oc.line):
                        await self._write_batch(writer)
                    else:
                        lease.park()  # the open batch: the next document must not wait for it
                    if writer.records >= per_part:
                        await self._finish_part()
                    if limit is not None and counters.exported >= limit:
                        break
                if update is not None:
                    update(counters, False)

    async def _open_part(self, first_key: str) -> PartWriter:
        """Open the stream's next part (its first record's key is ``first_key``)."""
        plan = self.plan
        name = part_name(self.stream, len(self.state.parts), plan.extension)
        self.writer = await in_thread(
            open_part,
            self.dest / DATA_DIR / name,
            plan.format,
            plan.compression,
            plan.stage,
            plan.content,
            discard=lambda w: w.abort(),
        )
        self.first_key = first_key
        return self.writer

    async def _write_batch(self, writer: PartWriter) -> None:
        """Hand the full batch to a writer thread (after the previous one is written)."""
        await self._wait_for_write()
        self.busy = True
        self.write_task = asyncio.ensure_future(
            asyncio.to_thread(writer.write_batch, writer.take_batch())
        )
        self._release_when_written(self.write_task)

    def _release_when_written(self, task: asyncio.Future[Any]) -> None:
        leases = list(self.batch_leases)
        self.batch_leases.clear()  # the same list object: ``_consume`` holds it
        for lease in leases:
            lease.park(False)
        task.add_done_callback(lambda _: _release(leases))

    async def _wait_for_write(self) -> None:
        if self.write_task is not None:
            task, self.write_task = self.write_task, None
            try:
                await task
            finally:
                self.busy = False

    def _checkpoint_state(self, **extra: Any) -> dict[str, Any]:
        self.errors_fh.flush()
        os.fsync(self.errors_fh.fileno())
        return {
            "counters": self.counters.as_dict(),
            "errors_bytes": self.errors_fh.tell(),
            "position": self.position,
            "last_key": self.last_key,
            **extra,
        }

    async def _finish_part(self) -> None:
        """Finish the open part and checkpoint it in the manifest."""
        assert self.writer is not None
        await self._wait_for_write()
        w, pending = self.writer, self.writer.take_batch()
        self.busy = True
        finishing = asyncio.ensure_future(asyncio.to_thread(w.finish, pending))
        self._release_when_written(finishing)
        sha, size = await finishing
        self.busy = False
        self.writer = None
        self.counters.bytes_out += size
        part = {
            "path": f"{DATA_DIR}/{w.final.name}",
            "records": w.records,
            "sha256": sha,
            "bytes": size,
            "first_key": self.first_key,
        }

        def commit() -> None:
            part.update(self._checkpoint_state())
            _checkpoint(self.dest, self.stream, part=part, final=None)

        await asyncio.to_thread(commit)
        self.state.parts.append(part)

    async def _close(self) -> None:
        if self.write_task is not None:  # a thread cannot be cancelled: let it end, then abort
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.write_task)
            self.busy = False
        if self.writer is not None and not self.busy:
            self.writer.abort()
        _release(self.batch_leases)
        if self.seen is not None:
            self.seen.close()
        self.errors_fh.close()


def _release(leases: list[Lease]) -> None:
    for lease in leases:
        lease.release()
    leases.clear()


async def run_stream(
    client: ExportClient,
    plan: ExportPlan,
    dest: Path,
    stream: str = "",
    sub_shard: tuple[int, int] | None = None,
    on_update: Callable[[Counters, bool], None] | None = None,
    items: AsyncIterator[Item] | None = None,
    outage: Outage | None = None,
    peek: Peek | None = None,
) -> Counters:
    """Export one stream into ``dest`` (resuming it from the manifest); returns its counters.

    ``items``: the stream's items after its checkpoint, when the caller lists for it;
    ``outage``: the run's outage clock (shared with the caller's listing); ``peek``: the
    first items of the listing, already read (used when the stream starts from the beginning).
    A systemic failure that outlasts the outage clock raises ExportStoppedError: the open
    part is dropped and the manifest stays at the last finished part (a rerun resumes).
    """
    state = await asyncio.to_thread(_load_stream, dest, plan, stream)
    if on_update is not None:
        on_update(state.counters, True)
    if state.complete:
        return state.counters
    if outage is None:
        outage = Outage(plan.outage_timeout)
    if items is None and peek is not None:
        items = iter_items(
            client,
            plan,
            start_after=state.last_key,
            position=state.position,
            sub_shard=sub_shard,
            outage=outage,
            peek=peek,
        )
    runner = await StreamRunner.open(client, plan, dest, stream, state, on_update)
    return await runner.run(sub_shard, items, outage)
