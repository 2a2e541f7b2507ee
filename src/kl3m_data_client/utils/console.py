"""rich tables and logging of 0.2.0's CLI (``kl3m_data_client.utils.console``; needs rich).

Library code never configures logging; :func:`configure_logging` is for scripts and CLIs.
"""

from __future__ import annotations

import logging
from typing import Any

from kl3m_data_client.models.common import DATA_STAGES, DatasetStatus, ProcessingResult, Stage

__all__ = [
    "configure_logging",
    "create_dataset_list_table",
    "create_dataset_status_table",
    "create_processing_result_table",
    "create_progress_bar",
]


def configure_logging(verbose: bool = False, console: Any = None) -> None:
    """Send the ``kl3m_data_client`` logger to a rich handler (INFO, or DEBUG if verbose)."""
    from rich.logging import RichHandler

    logger = logging.getLogger("kl3m_data_client")
    for handler in list(logger.handlers):
        if isinstance(handler, RichHandler):
            logger.removeHandler(handler)
    logger.addHandler(RichHandler(console=console, show_path=False))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def create_dataset_status_table(status: DatasetStatus | dict[str, DatasetStatus]) -> Any:
    """A rich table of one or several dataset statuses."""
    from rich.table import Table

    statuses = list(status.values()) if isinstance(status, dict) else [status]
    table = Table(title="Dataset Status")
    for column in (
        "Dataset",
        "Documents",
        "Representations",
        "Parquet",
        "Missing Reps",
        "Missing Parquet",
        "Complete",
    ):
        table.add_column(column)
    for s in statuses:
        table.add_row(
            s.dataset_id,
            str(s.document_count),
            str(s.representation_count),
            str(s.parquet_count),
            str(s.missing_representations),
            str(s.missing_parquet),
            "yes" if s.is_complete else "no",
        )
    return table


def create_processing_result_table(
    dataset_id: str, stage_from: Stage, stage_to: Stage, result: ProcessingResult
) -> Any:
    """A rich table of a :class:`ProcessingResult`."""
    from rich.table import Table

    table = Table(title=f"{dataset_id}: {stage_from.value} -> {stage_to.value}")
    table.add_column("Metric")
    table.add_column("Value")
    table.add_row("Processed", str(result.processed_count))
    table.add_row("Errors", str(result.error_count))
    table.add_row("Total", str(result.total_count))
    table.add_row("Success rate", f"{result.success_rate:.1f}%")
    table.add_row("Duration", f"{result.duration_seconds:.2f}s")
    table.add_row("Docs/second", f"{result.docs_per_second:.2f}")
    return table


def create_dataset_list_table(datasets: dict[str, dict[Stage, bool]]) -> Any:
    """A rich table of ``KL3MClient.list_datasets()``."""
    from rich.table import Table

    table = Table(title="KL3M Datasets")
    table.add_column("Dataset")
    for stage in DATA_STAGES:
        table.add_column(stage.value.capitalize())
    for name, stages in sorted(datasets.items()):
        table.add_row(name, *("yes" if stages.get(s) else "no" for s in DATA_STAGES))
    return table


def create_progress_bar() -> Any:
    """A rich progress bar (description, bar, percentage, count, elapsed, remaining)."""
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "[progress.percentage]{task.percentage:>3.0f}%",
        "{task.completed}/{task.total}",
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
