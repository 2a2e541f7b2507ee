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
from kl3m_data_client._stream import closing
from kl3m_data_client.export._auto import processes_usable
from kl3m_data_client.export._items import Tracker, iter_outcomes
from kl3m_data_client.export._manifest import (
    DATA_DIR,
    WORKERS_LOCK,
    Manifest,
    atomic_write,
    clean_temporaries,
    diff_options,
    errors_name,
    new_manifest,
    read_manifest,
    update_manifest,
    wipe,
    write_manifest,
)
from kl3m_data_client.export._options import ExportOptions, ExportPlan, make_plan, merge_options
from kl3m_data_client.export._outage import Outage
from kl3m_data_client.export._records import (
    Record,
    dedup_key,
)
from kl3m_data_client.export._report import Counters, ExportProgress, ExportReport, PartInfo
from kl3m_data_client.export._retry import apply_rounds, repair_errors, retry_round
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
) -> tuple[ExportPlan, Outage]:
    """The plan of an export (``workers="auto"`` resolved) and its outage clock."""
    if opts.workers == "auto" and opts.resume and not opts.overwrite:
        recorded = await asyncio.to_thread(_recorded_workers, destination)
        if recorded is not None:
            opts = replace(opts, workers=recorded)
    processes = client._portable and processes_usable()
    plan = _plan(client, dataset_id, opts, processes=processes)
    outage = Outage(plan.outage_timeout)
    if opts.workers == "auto":
        plan = await auto_workers(client, plan, outage)
    return plan, outage


def _recorded_workers(destination: str | os.PathLike[str]) -> int | None:
    """The worker count of the export ``destination`` holds, if any (a resume keeps it)."""
    try:
        manifest = read_manifest(Path(destination).expanduser().absolute())
    except (InvalidInputError, OSError):
        return None
    workers = ((manifest or {}).get("options") or {}).get("workers")
    return workers if isinstance(workers, int) and not isinstance(workers, bool) else None


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


async def _fetch_total(client: ExportClient, plan: ExportPlan, tracker: Tracker) -> None:
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
    plan, outage = await _export_plan(client, dataset_id, destination, opts)
    resume, overwrite, retry_errors = opts.resume, opts.overwrite, opts.retry_errors
    dest = await asyncio.to_thread(_resolve_destination, destination)
    tracker = Tracker(progress)
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
