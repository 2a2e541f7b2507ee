"""``kl3m-client export`` and ``kl3m-client demo``.

Exit status of ``export`` (see docs/export.md): 0 complete without errors; 3 complete with
per-object errors (listed in errors.jsonl); 4 stopped by an outage or another systemic
failure that outlasted ``--outage-timeout`` (resumable: rerun the same command); 1 other
errors; 2 usage or invalid input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._errors import KL3MError
from kl3m_data_client.cli._common import EXIT_OK, EXIT_PARTIAL, UsageError
from kl3m_data_client.cli._ui import UI, Progress, human_bytes
from kl3m_data_client.export._options import OPTION_NAMES, ExportOptions
from kl3m_data_client.export._outage import ExportStoppedError

#: Exit status of an export stopped by an outage / systemic failure (resumable).
EXIT_STOPPED = 4

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient
    from kl3m_data_client.export import ExportReport


def _detail(p: Any) -> str:
    elapsed = max(float(getattr(p, "elapsed", 0.0) or 0.0), 1e-9)
    mb_s = getattr(p, "bytes_in", 0) / elapsed / 1e6
    parts = [f"{mb_s:,.1f} MB/s in", f"{p.errors:,} errors"]
    if getattr(p, "skipped", 0):
        parts.append(f"{p.skipped:,} skipped")
    if getattr(p, "duplicates", 0):
        parts.append(f"{p.duplicates:,} duplicates")
    return ", ".join(parts)


class _ProgressCallback:
    """Feeds :class:`ExportProgress` snapshots to a progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, p: Any) -> None:
        processed = p.exported + p.skipped + p.duplicates + p.errors
        self.progress.update(processed, total=p.total, detail=_detail(p))


def export_options(args: argparse.Namespace) -> dict[str, Any]:
    """The export options the arguments give: every :class:`ExportOptions` field the parser
    has a value for (``--max-concurrency`` and ``--memory-budget`` are the client's too)."""
    given = {name: getattr(args, name, None) for name in OPTION_NAMES}
    return {name: value for name, value in given.items() if value is not None}


async def run_export(
    client: AsyncKL3MClient,
    dataset_id: str,
    destination: str,
    ui: UI,
    options: ExportOptions,
    *,
    label: str | None = None,
) -> ExportReport:
    """Call ``client.export`` with a progress display; returns the ExportReport. With
    ``--quiet`` the export gets no progress callback (and reads no dataset index for a total)."""
    progress = ui.progress(label or f"exporting {dataset_id}", "docs")
    callback = None if ui.quiet else _ProgressCallback(progress)
    try:
        return await client.export(dataset_id, destination, options, progress=callback)
    finally:
        progress.close()


async def run_ray_export(
    client: AsyncKL3MClient,
    dataset_id: str,
    destination: str,
    ui: UI,
    *,
    address: str,
    shards: int | None,
    options: dict[str, Any],
) -> Any:
    """Run :func:`kl3m_data_client.ray.export_distributed` with a progress display."""
    if not shards:
        raise UsageError("--ray needs --shards N (the shard count is part of the export)")
    try:
        import ray  # noqa: F401

        from kl3m_data_client.ray import export_distributed
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'kl3m-data-client[ray]'") from None
    progress = ui.progress(f"exporting {dataset_id} on Ray ({shards} shards)", "docs")
    try:
        return await asyncio.to_thread(
            export_distributed,
            dataset_id,
            destination,
            shards=shards,
            ray_address=address or None,
            config=client.config,
            progress=_ProgressCallback(progress),
            **options,
        )
    finally:
        progress.close()


def print_report(ui: UI, report: Any) -> None:
    """The export report as two tables: totals and part files."""
    r = report.as_dict()
    compression = r.get("compression")
    fmt = r.get("format", "")
    rows = [
        ("dataset", r.get("dataset_id")),
        ("stage", r.get("stage")),
        ("format", f"{fmt} ({compression})" if compression else fmt),
        ("content", r.get("content")),
        ("exported", f"{r.get('exported', 0):,}"),
        ("skipped (filters)", f"{r.get('skipped', 0):,}"),
        ("duplicates", f"{r.get('duplicates', 0):,}"),
        ("errors", f"{r.get('errors', 0):,}"),
        ("read", human_bytes(r.get("bytes_in", 0))),
        ("written", human_bytes(r.get("bytes_out", 0))),
        ("duration", f"{r.get('duration', 0.0):.2f} s"),
        ("rate", f"{r.get('docs_per_second', 0.0):,.1f} docs/s"),
    ]
    if r.get("resumed"):
        rows.append(("resumed", "yes"))
    ui.table(["export", "value"], rows, title=f"export of {r.get('dataset_id')}")
    parts = r.get("parts") or []
    if parts:
        ui.table(
            ["part", "records", "bytes", "sha256"],
            [
                [
                    str(p.get("path")),
                    f"{p.get('records', 0):,}",
                    human_bytes(p.get("bytes", 0)),
                    str(p.get("sha256", ""))[:16] + "…",
                ]
                for p in parts
            ],
            numeric=(1, 2),
        )


class _NoteHandler(logging.Handler):
    """Export log lines (waiting for an outage, recovered) as notes on stderr."""

    def __init__(self, ui: UI) -> None:
        super().__init__(logging.INFO)
        self.ui = ui

    def emit(self, record: logging.LogRecord) -> None:
        self.ui.note(f"kl3m-client: {record.getMessage()}")


@contextlib.contextmanager
def export_notes(ui: UI) -> Iterator[None]:
    """Show the export's outage messages as notes (with --verbose the log shows them)."""
    if ui.verbose:
        yield
        return
    logger = logging.getLogger("kl3m_data_client.export")
    handler = _NoteHandler(ui)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def stopped_message(exc: ExportStoppedError) -> str:
    """The one error line of an export stopped by a systemic failure."""
    cause = exc.last_error
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return (
        f"export stopped (resumable), {what}; everything before the failure is kept: "
        "rerunning the same command resumes the export"
    )


async def cmd_export(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    options = export_options(args)
    try:
        with export_notes(ui):
            report = await _dispatch(client, args, ui, options)
    except ExportStoppedError as exc:
        ui.error(stopped_message(exc))
        return EXIT_STOPPED
    if ui.json_mode:
        ui.emit_json(report.as_dict())
    else:
        print_report(ui, report)
        where = f"files in {report.destination}"
        if report.partial:
            ui.print(
                f"partial export: {report.errors:,} documents failed, listed in "
                f"{report.as_dict().get('errors_path') or 'errors.jsonl'}; {where}",
                style="bold yellow",
            )
        else:
            ui.print(f"done: {report.exported:,} documents exported; {where}", style="bold green")
    return EXIT_PARTIAL if report.partial else EXIT_OK


async def _dispatch(
    client: AsyncKL3MClient, args: argparse.Namespace, ui: UI, options: dict[str, Any]
) -> Any:
    """Run the export the arguments ask for (on Ray or here); its report."""
    if args.ray is not None:
        return await run_ray_export(
            client,
            args.dataset,
            args.destination,
            ui,
            address=args.ray,
            shards=args.shards,
            options=options,
        )
    if args.shards is not None:
        raise UsageError("--shards goes with --ray (use --shard I/N for one shard)")
    return await run_export(client, args.dataset, args.destination, ui, ExportOptions(**options))


# -- demo ---------------------------------------------------------------------------------------
LOCAL_EXTRA_HINT = "pip install 'kl3m-data-client[local]'"


def start_local_bucket(n_documents: int, ui: UI) -> Any:
    """Start a :class:`LocalBucket` (raises KL3MError naming the pip command if moto is absent)."""
    try:
        import moto  # noqa: F401

        from kl3m_data_client.testing import LocalBucket
    except ImportError as exc:
        raise KL3MError(
            f"the demo needs the 'local' extra ({exc.name or exc} is missing): {LOCAL_EXTRA_HINT}"
        ) from None
    ui.note(f"starting a local S3 server with a synthetic {n_documents}-document KL3M bucket…")
    bucket = LocalBucket(n_documents)
    bucket.start()
    return bucket


async def tour(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    """The demo's steps against ``client`` (a local bucket)."""
    from kl3m_data_client.cli._commands import cmd_list, count_dataset, print_status_table

    out = Path(args.output)
    human = not ui.json_mode
    if human:
        ui.print(f"1. datasets of s3://{client.bucket} (local)", style="bold")
        await cmd_list(client, args, ui)
    datasets = list(await client.list_datasets())
    statuses = [await count_dataset(client, d, None, ui) for d in datasets]
    if human:
        ui.print("2. status of each dataset", style="bold")
        print_status_table(ui, statuses, title="objects per stage")
    dataset = args.dataset if args.dataset in datasets else datasets[0]
    reports = []
    for step, (fmt, compression) in enumerate((("jsonl", "gzip"), ("parquet", "zstd")), start=3):
        dest = out / f"{dataset}-{fmt}"
        if human:
            ui.print(f"{step}. export {dataset} to {dest} as {fmt} ({compression})", style="bold")
        report = await run_export(
            client,
            dataset,
            str(dest),
            ui,
            ExportOptions(
                stage="representations", format=fmt, compression=compression, overwrite=True
            ),
            label=f"{dataset} → {fmt}",
        )
        reports.append(report)
        if human:
            print_report(ui, report)
    if ui.json_mode:
        ui.emit_json(
            {
                "datasets": {
                    name: {s.value: v for s, v in stages.items()}
                    for name, stages in (await client.list_datasets()).items()
                },
                "status": [s.as_dict() for s in statuses],
                "exports": [r.as_dict() for r in reports],
            }
        )
    else:
        ui.print("files:", style="bold")
        for r in reports:
            for part in r.parts:
                ui.print(f"  {part.path}")
        parquet_dir = Path(reports[-1].destination) / "data"
        ui.print(
            'read the Parquet export with: python -c "import pyarrow.dataset as ds; '
            f"print(ds.dataset('{parquet_dir}').to_table())\""
        )
    partial = any(r.partial for r in reports)
    return EXIT_PARTIAL if partial else EXIT_OK
