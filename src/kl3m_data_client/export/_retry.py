"""Retry rounds (``retry_errors=True``): fetch again the objects listed in ``errors.jsonl``.

Round ``n`` of a finished export reads ``errors.jsonl``, fetches its keys again (through the
same fetch step: outages are waited for, per-object failures recorded), and then:

* writes the recovered records to new parts ``data/part-r{n}-00000...`` (the parts of the
  first run are never rewritten);
* writes what still fails (with its new reason) to ``errors-r{n}.jsonl``;
* commits the round in the manifest (``"retries"``: its parts and counters), the commit
  point, and only then replaces ``errors.jsonl`` with ``errors-r{n}.jsonl``.

A round interrupted before its commit leaves nothing: its parts are deleted by the next
round. A crash between the commit and the replacement is repaired by the next run
(:func:`repair_errors`). The report's totals count recovered records as exported (or
skipped / duplicates) and only what still fails as errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client._keys import document_id_from_key, stage_prefix, validate_document_id
from kl3m_data_client._stream import closing
from kl3m_data_client.export._items import Item, error_line, iter_outcomes
from kl3m_data_client.export._manifest import (
    DATA_DIR,
    Manifest,
    atomic_write,
    errors_name,
    part_name,
    read_manifest,
    stream_part_files,
    update_manifest,
)
from kl3m_data_client.export._records import Record, dedup_key
from kl3m_data_client.export._report import Counters
from kl3m_data_client.export._writers import PartWriter, open_part, read_part
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client.export._client_api import ExportClient
    from kl3m_data_client.export._options import ExportPlan
    from kl3m_data_client.export._outage import Outage


def round_stream(n: int) -> str:
    """The stream name of retry round ``n`` (1-based): ``r1``, ``r2``..."""
    return f"r{n}"


def repair_errors(dest: Path, manifest: Manifest) -> None:
    """Make ``errors.jsonl`` what the last committed retry round left (after a crash)."""
    rounds = manifest.get("retries") or []
    if not rounds:
        return
    kept = dest / errors_name(round_stream(len(rounds)))
    final = dest / errors_name("")
    if kept.exists() and (not final.exists() or final.read_bytes() != kept.read_bytes()):
        atomic_write(final, kept.read_bytes())


def _retry_items(lines: list[bytes], plan: ExportPlan) -> tuple[list[Item], list[bytes]]:
    """The items to fetch again, and the lines kept as they are (not retryable)."""
    prefix = stage_prefix(Stage(plan.stage), plan.dataset_id)
    items: list[Item] = []
    kept: list[bytes] = []
    for line in lines:
        try:
            entry = json.loads(line)
            key = entry["key"]
            if not isinstance(key, str) or not key.startswith(prefix):
                raise ValueError("not a key of this export")
            doc_id = validate_document_id(document_id_from_key(key, plan.dataset_id))
        except (ValueError, KeyError, TypeError, InvalidInputError):
            kept.append(line)  # an invalid id or unsafe key: retrying cannot change it
            continue
        items.append(Item(len(items) + 1, key, doc_id))
    return items, kept


async def _aiter(items: list[Item]) -> AsyncIterator[Item]:
    for item in items:
        yield item


class _RoundParts:
    """The data parts of one retry round, written one at a time (``part-r{n}-00000``...)."""

    def __init__(self, dest: Path, plan: ExportPlan, stream: str, counters: Counters) -> None:
        self._dest = dest
        self._plan = plan
        self._stream = stream
        self._counters = counters
        self._writer: PartWriter | None = None
        self.parts: list[dict[str, Any]] = []

    async def add(self, record: Record, line: bytes | None) -> None:
        """Write one recovered record, opening a part first and finishing it when full."""
        plan = self._plan
        if self._writer is None:
            name = part_name(self._stream, len(self.parts), plan.extension)
            self._writer = await asyncio.to_thread(
                open_part,
                self._dest / DATA_DIR / name,
                plan.format,
                plan.compression,
                plan.stage,
                plan.content,
            )
        writer = self._writer
        self._counters.exported += 1
        if writer.add(record, line):
            batch = writer.take_batch()
            await asyncio.to_thread(writer.write_batch, batch)
        if writer.records >= plan.records_per_part:
            await self.finish()

    async def finish(self) -> None:
        """Finish the open part (if any) and list it."""
        if self._writer is None:
            return
        w, self._writer = self._writer, None
        sha, size = await asyncio.to_thread(w.finish, w.take_batch())
        self._counters.bytes_out += size
        self.parts.append(
            {
                "path": f"{DATA_DIR}/{w.final.name}",
                "records": w.records,
                "sha256": sha,
                "bytes": size,
            }
        )

    def abort(self) -> None:
        """Drop the open part (if any): an interrupted round leaves no half-written part."""
        if self._writer is not None:
            self._writer.abort()


async def _error_lines(dest: Path) -> list[bytes]:
    """The non-blank lines of ``errors.jsonl`` (none when it does not exist)."""
    errors_path = dest / errors_name("")
    raw = await asyncio.to_thread(lambda: errors_path.read_bytes() if errors_path.exists() else b"")
    return [line + b"\n" for line in raw.splitlines() if line.strip()]


async def _fetch_round(
    client: ExportClient,
    plan: ExportPlan,
    items: list[Item],
    outage: Outage,
    out: _RoundParts,
    counters: Counters,
    remaining: list[bytes],
    seen: set[bytes] | None,
    on_update: Callable[[Counters, bool], None] | None,
) -> None:
    """Fetch ``items`` again: records go to ``out``, what fails again to ``remaining``."""
    outcomes = iter_outcomes(client, plan, items=_aiter(items), outage=outage, encode=True)
    async with closing(outcomes) as stream_outcomes:
        async for oc in stream_outcomes:
            counters.bytes_in += oc.bytes_in
            if oc.error is not None:
                counters.errors += 1
                remaining.append(error_line(oc.item.key, plan.stage, oc.error))
            elif oc.record is None:
                counters.skipped += 1
            elif seen is not None and (digest := dedup_key(oc.record)) in seen:
                counters.duplicates += 1
            else:
                if seen is not None:
                    seen.add(digest)
                await out.add(oc.record, oc.line)
            if on_update is not None:
                on_update(counters, False)


def _commit_round(dest: Path, stream: str, remaining: list[bytes], entry: dict[str, Any]) -> None:
    """Write the round's errors file, commit the round in the manifest, then replace
    ``errors.jsonl``."""
    atomic_write(dest / errors_name(stream), b"".join(remaining))

    def change(m: Manifest) -> None:
        m.setdefault("retries", []).append(entry)

    repaired = update_manifest(dest, change)
    repair_errors(dest, repaired)


async def retry_round(
    client: ExportClient,
    plan: ExportPlan,
    dest: Path,
    outage: Outage,
    on_update: Callable[[Counters, bool], None] | None = None,
) -> dict[str, Any] | None:
    """Run one retry round on the finished export in ``dest``; its manifest entry (None when
    ``errors.jsonl`` is empty)."""
    lines = await _error_lines(dest)
    if not lines:
        return None
    manifest = await asyncio.to_thread(read_manifest, dest)
    assert manifest is not None
    n = len(manifest.get("retries") or []) + 1
    stream = round_stream(n)
    for path in stream_part_files(dest, stream).values():  # an interrupted round's parts
        path.unlink(missing_ok=True)
    items, remaining = _retry_items(lines, plan)
    seen: set[bytes] | None = None
    if plan.deduplicate:
        seen = await asyncio.to_thread(_all_hashes, dest, plan, manifest)
    counters = Counters()
    out = _RoundParts(dest, plan, stream, counters)
    try:
        await _fetch_round(client, plan, items, outage, out, counters, remaining, seen, on_update)
        await out.finish()
    finally:
        out.abort()
    entry = {
        "round": n,
        "retried": len(items),
        "counters": counters.as_dict(),
        "parts": out.parts,
        "errors": errors_name(stream),
    }
    await asyncio.to_thread(_commit_round, dest, stream, remaining, entry)
    if on_update is not None:
        on_update(counters, True)
    return entry


def _all_hashes(dest: Path, plan: ExportPlan, manifest: Manifest) -> set[bytes]:
    """Deduplication hashes of every record already exported (streams and earlier rounds)."""
    seen: set[bytes] = set()
    entries = list((manifest.get("streams") or {}).values()) + list(manifest.get("retries") or [])
    for entry in entries:
        for part in entry.get("parts") or []:
            for record in read_part(dest / part["path"], plan.format, plan.compression):
                seen.add(dedup_key(record))
    return seen


def apply_rounds(totals: Counters, manifest: Manifest) -> list[dict[str, Any]]:
    """Add the retry rounds of ``manifest`` to ``totals``; their parts, in order.

    A round moves the objects it recovered from ``errors`` to ``exported`` (or skipped /
    duplicates); what failed again stays counted once.
    """
    parts: list[dict[str, Any]] = []
    for entry in manifest.get("retries") or []:
        c = Counters.from_dict(entry.get("counters"))
        recovered = int(entry.get("retried", 0)) - c.errors
        totals.errors -= recovered
        totals.exported += c.exported
        totals.skipped += c.skipped
        totals.duplicates += c.duplicates
        totals.bytes_in += c.bytes_in
        totals.bytes_out += c.bytes_out
        parts.extend(entry.get("parts") or [])
    return parts
