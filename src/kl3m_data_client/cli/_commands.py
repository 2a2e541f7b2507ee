"""The commands of ``kl3m-client``: each an async function ``(client, args, ui) -> exit code``.

``list`` and ``status`` live here; ``documents``, ``inspect``, ``get`` in their own modules
(``export`` in ``_export``), and what they share in ``_common``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from pathlib import Path
from typing import TYPE_CHECKING

from kl3m_data_client.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    Ticker,
    UsageError,
    dataset_exists,
    missing_dataset,
)
from kl3m_data_client.cli._documents import cmd_documents
from kl3m_data_client.cli._get import cmd_get
from kl3m_data_client.cli._inspect import cmd_inspect
from kl3m_data_client.cli._ui import UI
from kl3m_data_client.models.common import DATA_STAGES, DatasetStatus, Stage

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient

__all__ = [
    "CSV_HEADER",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "UsageError",
    "cmd_documents",
    "cmd_get",
    "cmd_inspect",
    "cmd_list",
    "cmd_status",
    "count_dataset",
    "dataset_exists",
    "print_status_table",
]


# -- list ---------------------------------------------------------------------------------------
async def cmd_list(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    datasets = await client.list_datasets()
    data = {
        name: {stage.value: bool(present) for stage, present in stages.items()}
        for name, stages in datasets.items()
    }
    if ui.json_mode:
        ui.emit_json(data)
        return EXIT_OK
    if not data:
        ui.print(f"no datasets in bucket {client.bucket}")
        return EXIT_OK
    mark = {True: "yes", False: "-"}
    ui.table(
        ["dataset", "documents", "representations", "parquet"],
        [[name, *(mark[v[s.value]] for s in DATA_STAGES)] for name, v in data.items()],
        title=f"{len(data)} datasets in s3://{client.bucket}",
    )
    return EXIT_OK


# -- status -------------------------------------------------------------------------------------
async def count_dataset(
    client: AsyncKL3MClient, dataset_id: str, key_prefix: str | None, ui: UI
) -> DatasetStatus:
    """Count the objects of each stage concurrently, with a progress display."""
    counts = dict.fromkeys(DATA_STAGES, 0)
    progress = ui.progress(f"counting {dataset_id}", "objects", transient=True)
    ticker = Ticker()

    def show() -> None:
        detail = ", ".join(f"{s.value} {counts[s]:,}" for s in DATA_STAGES)
        progress.update(sum(counts.values()), detail=detail)

    def on_page(stage: Stage, count: int) -> None:
        counts[stage] = count
        if ticker.due():
            show()

    try:
        status = await client.get_dataset_status(dataset_id, key_prefix, progress=on_page)
        show()
    finally:
        progress.close()
    return status


async def cmd_status(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    status = await count_dataset(client, args.dataset, args.key_prefix, ui)
    if status.document_count + status.representation_count + status.parquet_count == 0:
        raise missing_dataset(client, args.dataset, args.key_prefix)
    data = status.as_dict()
    if args.csv:
        await asyncio.to_thread(_write_csv, Path(args.csv), status)
        ui.note(f"wrote {args.csv}")
    if ui.json_mode:
        ui.emit_json(data)
        return EXIT_OK
    print_status_table(ui, [status], title=f"s3://{client.bucket}")
    return EXIT_OK


#: ``status --csv`` columns, named as 0.2.0's CLI named them.
CSV_HEADER = (
    "Dataset",
    "Documents",
    "Representations",
    "Parquet",
    "Missing Rep.",
    "Missing Parq.",
    "Is Complete",
)


def _write_csv(path: Path, status: DatasetStatus) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        writer.writerow(
            [
                status.dataset_id,
                status.document_count,
                status.representation_count,
                status.parquet_count,
                status.missing_representations,
                status.missing_parquet,
                status.is_complete,
            ]
        )


def print_status_table(ui: UI, statuses: list[DatasetStatus], *, title: str) -> None:
    """One row per dataset: the stage counts and what is missing."""
    ui.table(
        [
            "dataset",
            "documents",
            "representations",
            "parquet",
            "missing repr.",
            "missing parquet",
            "complete",
        ],
        [
            [
                s.dataset_id,
                f"{s.document_count:,}",
                f"{s.representation_count:,}",
                f"{s.parquet_count:,}",
                f"{s.missing_representations:,}",
                f"{s.missing_parquet:,}",
                "yes" if s.is_complete else "no",
            ]
            for s in statuses
        ],
        title=title,
        numeric=(1, 2, 3, 4, 5),
    )
