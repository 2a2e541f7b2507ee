"""Bulk export of KL3M datasets to JSONL and Parquet: streaming, resumable, lossless.

Use it through the client (``await client.export(...)``, ``client.iter_jsonl_export(...)``)
or directly with :func:`export` / :func:`iter_export_records`. The options are the fields of
:class:`ExportOptions` (or the same names as keywords). See ``docs/export.md``.
"""

from __future__ import annotations

from kl3m_data_client.export._auto import DEFAULT_WORKERS, resolve_workers
from kl3m_data_client.export._exporter import export, iter_export_records
from kl3m_data_client.export._options import ExportKeywords, ExportOptions, RecordKeywords
from kl3m_data_client.export._outage import DEFAULT_OUTAGE_TIMEOUT, ExportStoppedError
from kl3m_data_client.export._records import Record, dedup_key, in_shard, make_record, shard_hash
from kl3m_data_client.export._report import ExportProgress, ExportReport, PartInfo

__all__ = [
    "DEFAULT_OUTAGE_TIMEOUT",
    "DEFAULT_WORKERS",
    "ExportKeywords",
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "ExportStoppedError",
    "PartInfo",
    "Record",
    "RecordKeywords",
    "dedup_key",
    "export",
    "in_shard",
    "iter_export_records",
    "make_record",
    "resolve_workers",
    "shard_hash",
]
