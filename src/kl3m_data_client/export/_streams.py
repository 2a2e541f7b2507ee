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
from kl3m_data_client.export._items import Item, error_line, iter_outcomes
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
from kl3m_data_client.export._records import (
    dedup_key,
)
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


async def run_stream(
    client: ExportClient,
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
