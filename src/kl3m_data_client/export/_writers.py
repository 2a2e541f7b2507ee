"""Part writers: records in, one durable file out (blocking; call them from a thread).

A part is written to a hidden temporary name in its directory, flushed and fsynced, then
renamed to its final name (and the directory fsynced). The output is a pure function of the
records: no timestamps (gzip ``mtime=0``, no file name in the gzip header), fixed batching.

This module opens and reads parts of either format; the writers are in ``_jsonl_writer`` and
``_parquet_writer``, the part file they share (temporary name, hashing, batching, durable
finish) in ``_part``, the JSON text in ``_json``.
"""

from collections.abc import Iterator
from pathlib import Path

from kl3m_data_client.export._json import encode_line, json_text
from kl3m_data_client.export._jsonl_writer import JsonlWriter, read_jsonl
from kl3m_data_client.export._parquet_writer import (
    ParquetWriter,
    check_parquet_record,
    parquet_schema,
    read_parquet,
    records_to_table,
)
from kl3m_data_client.export._part import (
    BATCH_BYTES,
    BATCH_RECORDS,
    BATCH_UNITS,
    TMP_PREFIX,
    TMP_SUFFIX,
    BatchBounds,
    HashingFile,
    PartWriter,
    fsync_dir,
    tmp_name,
)
from kl3m_data_client.export._records import Record

__all__ = [
    "BATCH_BYTES",
    "BATCH_RECORDS",
    "BATCH_UNITS",
    "TMP_PREFIX",
    "TMP_SUFFIX",
    "BatchBounds",
    "HashingFile",
    "JsonlWriter",
    "ParquetWriter",
    "PartWriter",
    "check_parquet_record",
    "encode_line",
    "fsync_dir",
    "json_text",
    "open_part",
    "parquet_schema",
    "read_part",
    "records_to_table",
    "tmp_name",
]


def open_part(final: Path, fmt: str, compression: str, stage: str, content: str) -> PartWriter:
    """A writer of the part ``final``."""
    if fmt == "parquet":
        return ParquetWriter(final, compression, stage, content)
    return JsonlWriter(final, compression)


def read_part(path: Path, fmt: str, compression: str) -> Iterator[Record]:
    """The records of a finished part (used to rebuild deduplication state on resume)."""
    if fmt == "parquet":
        return read_parquet(path)
    return read_jsonl(path, compression)
