"""The Parquet part writer (zstd or snappy, one row group per batch) and its reader."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kl3m_data_client.export._json import json_text
from kl3m_data_client.export._part import DEFAULT_BOUNDS, BatchBounds, PartWriter
from kl3m_data_client.export._records import Record, token_array


def check_parquet_record(record: Record) -> None:
    """Raise ValueError if a Parquet part cannot hold ``record`` (strings must be UTF-8).

    Run in the fetch step, so that such a record is that object's error, not the part's.
    """
    for name, value in record.items():
        if name == "metadata":
            value = json_text(value, separators=(", ", ": "), ensure_ascii=False)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{name} is not valid Unicode: {exc}") from exc


def parquet_schema(stage: str, content: str) -> Any:
    """The Arrow schema of a part: id, identifier, dataset, mime_type, tokens | text, ..."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string()),
        pa.field("identifier", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("mime_type", pa.string()),
    ]
    if content == "tokens":
        fields.append(pa.field("tokens", pa.list_(pa.uint32())))
    else:
        fields.append(pa.field("text", pa.string()))
    if stage == "documents":
        fields += [
            pa.field("encoding", pa.string()),
            pa.field("blake2b", pa.string()),
            pa.field("metadata", pa.string()),  # JSON object
        ]
    return pa.schema(fields)


def records_to_table(batch: list[Record], schema: Any) -> Any:
    """An Arrow table of ``batch`` (token lists built from one flat uint32 buffer)."""
    import pyarrow as pa

    columns: list[Any] = []
    for f in schema:
        name = f.name
        if name == "tokens":
            flat = token_array([], "")
            offsets = token_array([0], "")
            for r in batch:
                ids = r["tokens"]
                flat.extend(ids if type(ids) is array else token_array(ids, str(r.get("id"))))
                offsets.append(len(flat))
            values = pa.Array.from_buffers(pa.uint32(), len(flat), [None, pa.py_buffer(flat)])
            offs = pa.Array.from_buffers(
                pa.uint32(), len(offsets), [None, pa.py_buffer(offsets)]
            ).cast(pa.int32())
            columns.append(pa.ListArray.from_arrays(offs, values, type=f.type))
        elif name == "metadata":
            columns.append(
                pa.array(
                    [
                        json_text(r.get("metadata"), separators=(", ", ": "), ensure_ascii=False)
                        for r in batch
                    ],
                    type=pa.string(),
                )
            )
        else:
            columns.append(pa.array([r.get(name) for r in batch], type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


#: The Parquet columns whose values repeat, the only ones dictionary-encoded (token ids
#: repeat too: a 128k vocabulary). ``id``, ``identifier``, ``text``, ``blake2b`` and
#: ``metadata`` are nearly unique per row: a dictionary there only costs memory and CPU until
#: the writer falls back to plain encoding.
DICTIONARY_COLUMNS = ("dataset", "mime_type", "encoding", "tokens.list.element")


def _release_arrow_memory() -> None:
    """Hand the freed memory of pyarrow's default pool back to the OS."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


class ParquetWriter(PartWriter):
    """Parquet (zstd or snappy), one row group per batch.

    After each row group the memory pool returns what the batch used: mimalloc and jemalloc
    keep freed pages for reuse, and a documents -> Parquet export peaked ~30 MB higher
    without this (it costs ~1-2% CPU: the next batch faults its pages in again).
    """

    def __init__(
        self,
        final: Path,
        compression: str,
        stage: str,
        content: str,
        bounds: BatchBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(final, bounds)
        import pyarrow.parquet as pq

        self.schema = parquet_schema(stage, content)
        names = set(self.schema.names)
        self._writer = pq.ParquetWriter(
            self.sink,
            self.schema,
            compression=compression,
            use_dictionary=[c for c in DICTIONARY_COLUMNS if c.split(".")[0] in names],
            use_compliant_nested_type=True,  # list columns: ``tokens.list.element``
        )

    def add(self, record: Record, line: bytes | None = None) -> bool:
        tokens = record.get("tokens")
        if tokens is not None and type(tokens) is not array:
            # a batch holds up to BATCH_UNITS tokens: 4 bytes each in a uint32 array, ~40 as
            # a list of Python ints (160 MB per batch)
            record = {**record, "tokens": token_array(tokens, str(record.get("id")))}
        return super().add(record)

    def write_batch(self, batch: list[Record]) -> None:
        if batch:
            table = records_to_table(batch, self.schema)
            self._writer.write_table(table)
            del table
            _release_arrow_memory()

    def _close_encoder(self) -> None:
        self._writer.close()
        _release_arrow_memory()


def read_parquet(path: Path) -> Iterator[Record]:
    """The records of a finished Parquet part, one row group at a time."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i)
        yield from table.to_pylist()
