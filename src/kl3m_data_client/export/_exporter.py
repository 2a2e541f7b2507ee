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
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kl3m_data_client._errors import (
    InvalidInputError,
    KL3MError,
)
from kl3m_data_client._sizes import MiB
from kl3m_data_client._stream import closing
from kl3m_data_client.export._auto import processes_usable
from kl3m_data_client.export._destination import (
    DestinationLock,
    build_report,
    finalize_export,
    prepare_destination,
    read_complete,
    recorded_workers,
    resolve_destination,
)
from kl3m_data_client.export._items import Peek, Tracker, iter_outcomes
from kl3m_data_client.export._manifest import Manifest
from kl3m_data_client.export._options import ExportOptions, ExportPlan, make_plan, merge_options
from kl3m_data_client.export._outage import Outage
from kl3m_data_client.export._records import (
    Record,
    dedup_key,
)
from kl3m_data_client.export._report import Counters, ExportProgress, ExportReport
from kl3m_data_client.export._retry import repair_errors, retry_round
from kl3m_data_client.export._seen import SeenSet
from kl3m_data_client.export._streams import run_stream
from kl3m_data_client.export._workers import auto_workers, run_workers
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from kl3m_data_client.export._client_api import ExportClient
    from kl3m_data_client.export._options import ExportKeywords, RecordKeywords

logger = logging.getLogger("kl3m_data_client.export")


# ------------------------------------------------------------------------------ records API
async def iter_export_records(
    client: ExportClient,
    dataset_id: str,
    source_stage: Stage | str | None = None,
    key_prefix: str | None = None,
    max_documents: int | None = None,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    options: ExportOptions | None = None,
    **changes: Unpack[RecordKeywords],
) -> AsyncIterator[Record]:
    """Export records of a dataset, in listing order.

    Takes the export options (``options`` and/or keywords, see :class:`ExportOptions`);
    ``source_stage``, ``key_prefix`` and ``max_documents`` (0.2.0's positional arguments)
    override them when given. Options about files (``format``, ``compression``,
    ``records_per_part``, ``workers``, the run controls) have no effect here.

    A bad object raises its typed error (:class:`CorruptObjectError`, NotFoundError, ...)
    naming its key; with ``on_error="skip"`` it is logged as a warning and skipped instead
    (``export`` records it in errors.jsonl). Systemic failures are waited for
    (``outage_timeout``) and then raised (:class:`ExportStoppedError`), whatever ``on_error``.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    opts = replace(merge_options(options, changes), workers=1)
    if source_stage is not None:
        opts = replace(opts, stage=source_stage)
    if key_prefix is not None:
        opts = replace(opts, key_prefix=key_prefix)
    if max_documents is not None:
        opts = replace(opts, max_documents=max_documents)
    plan = _plan(client, dataset_id, opts, processes=False)
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


def _plan(
    client: ExportClient, dataset_id: str, options: ExportOptions, *, processes: bool
) -> ExportPlan:
    """The plan of ``options`` on ``client`` (concurrency and budget default to its own)."""
    if options.memory_budget is None:
        options = replace(options, memory_budget=client.config.memory_budget)
    return make_plan(
        bucket=client.config.bucket,
        dataset_id=dataset_id,
        options=options,
        default_concurrency=2 * client.config.max_concurrency,
        processes=processes,
    )


async def _export_plan(
    client: ExportClient,
    dataset_id: str,
    destination: str | os.PathLike[str],
    opts: ExportOptions,
) -> tuple[ExportPlan, Outage, Peek | None]:
    """The plan of an export (``workers="auto"`` resolved), its outage clock and the items
    ``workers="auto"`` listed to decide (the export starts with them)."""
    if opts.workers == "auto" and opts.resume and not opts.overwrite:
        recorded = await asyncio.to_thread(recorded_workers, destination)
        if recorded is not None:
            opts = replace(opts, workers=recorded)
    processes = client._portable and processes_usable()
    plan = _plan(client, dataset_id, opts, processes=processes)
    outage = Outage(plan.outage_timeout)
    peek = None
    if opts.workers == "auto":
        plan, peek = await auto_workers(client, plan, outage)
    return plan, outage, peek


# ------------------------------------------------------------------------------ orchestration
def _recovered(c: Counters) -> Counters:
    """A retry round's counters as a change of the export's totals (for progress): what it
    recovered moves from errors to exported / skipped / duplicates."""
    moved = c.exported + c.skipped + c.duplicates
    return Counters(c.exported, c.skipped, c.duplicates, -moved, c.bytes_in, c.bytes_out)


#: The largest dataset index an export reads for its progress total, as stored and as JSON
#: text (~250,000 keys). A bigger index is left unread: the progress then has no total,
#: rather than the whole key list of a large dataset in memory and its parse on the CPU.
PROGRESS_INDEX_MAX_BYTES = 16 * MiB


async def _fetch_total(client: ExportClient, plan: ExportPlan, tracker: Tracker) -> None:
    """The expected document count from the dataset index (progress only; failures ignored,
    an index over :data:`PROGRESS_INDEX_MAX_BYTES` is closed unread)."""
    if plan.ids is not None or plan.shard is not None:
        return
    try:
        index = await client._dataset_index(
            plan.dataset_id, plan.key_prefix, max_bytes=PROGRESS_INDEX_MAX_BYTES
        )
    except KL3MError:
        return
    if index is None:
        return
    total = index.metadata.count or len(index.objects)
    if plan.max_documents is not None:
        total = min(total, plan.max_documents)
    tracker.total = total


async def _acquire(lock: DestinationLock) -> None:
    """Take the destination lock (in a thread: it may wait for an earlier run's workers)."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(acquiring)
    except BaseException:  # cancelled while waiting: the thread ends, then its lock is freed
        with contextlib.suppress(BaseException):
            await acquiring
        lock.release()
        raise


async def _run(
    client: ExportClient,
    plan: ExportPlan,
    dest: Path,
    tracker: Tracker,
    outage: Outage,
    peek: Peek | None,
) -> Manifest:
    """Export what the (unfinished) export in ``dest`` still lacks; its completed manifest."""
    if plan.workers == 1:
        await run_stream(
            client,
            plan,
            dest,
            "",
            None,
            lambda c, force: tracker.update("", c, force=force),
            outage=outage,
            peek=peek,
        )
    else:
        await run_workers(client, plan, dest, tracker, outage, peek)
    return await asyncio.to_thread(finalize_export, dest, plan)


def _finish_progress(tracker: Tracker, report: ExportReport) -> None:
    """The last progress update (the report's totals when the export was complete already)."""
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


async def export(
    client: ExportClient,
    dataset_id: str,
    destination: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    progress: Callable[[ExportProgress], Any] | None = None,
    **changes: Unpack[ExportKeywords],
) -> ExportReport:
    """Export a dataset to ``destination`` (see :meth:`AsyncKL3MClient.export`).

    The options are ``options`` (an :class:`ExportOptions`) with the keywords applied.
    ``workers="auto"`` (the default) resumes with the worker count recorded in
    ``destination``, else picks one by :func:`resolve_workers`; the manifest records it.
    Systemic failures are waited for up to ``outage_timeout`` seconds (default 300), then
    the export stops with :class:`ExportStoppedError` (resumable). With ``retry_errors``,
    once the export is finished, the objects listed in ``errors.jsonl`` are fetched again
    (a retry round: see ``docs/export.md``).
    """
    opts = merge_options(options, changes)
    plan, outage, peek = await _export_plan(client, dataset_id, destination, opts)
    resume, overwrite, retry_errors = opts.resume, opts.overwrite, opts.retry_errors
    dest = await asyncio.to_thread(resolve_destination, destination)
    tracker = Tracker(progress)
    lock = DestinationLock(dest)
    await _acquire(lock)
    total_task: asyncio.Task[None] | None = None
    try:
        manifest, resumed = await asyncio.to_thread(
            prepare_destination, dest, plan, resume, overwrite
        )
        if not manifest.get("complete"):
            if progress is not None:
                total_task = asyncio.create_task(_fetch_total(client, plan, tracker))
            manifest = await _run(client, plan, dest, tracker, outage, peek)
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
            manifest = await asyncio.to_thread(read_complete, dest)
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
        _finish_progress(tracker, report)
    return report
