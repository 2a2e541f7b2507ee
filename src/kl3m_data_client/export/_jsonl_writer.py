"""The JSON Lines part writer (uncompressed, gzip or zstd) and its reader."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kl3m_data_client.export._json import encode_line
from kl3m_data_client.export._part import DEFAULT_BOUNDS, BatchBounds, PartWriter
from kl3m_data_client.export._records import Record


class JsonlWriter(PartWriter):
    """JSON Lines, uncompressed, gzip (mtime 0) or zstd (level 3, single frame)."""

    def __init__(self, final: Path, compression: str, bounds: BatchBounds = DEFAULT_BOUNDS) -> None:
        super().__init__(final, bounds)
        self._stream: Any
        if compression == "gzip":
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=self.sink, mtime=0, compresslevel=6
            )
        elif compression == "zstd":
            import zstandard

            sink: Any = self.sink
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)
        else:
            self._stream = self.sink
        self._lines = bytearray()  # the encoded lines of the batch
        self._pending = 0  # records in ``_lines``

    def add(self, record: Record, line: bytes | None = None) -> bool:
        # ``line``: the record already encoded (the exporter encodes in its fetch step).
        # A record is encoded when it is added (on the event loop; with orjson ~25 us for a
        # 47 KB document): the writer thread then only hashes and writes (both release the
        # GIL), and a batch of token records is ~6 bytes per token instead of ~40 as Python
        # ints. Lines go into one buffer per batch, not separate bytes objects: a batch of
        # those, freed together, fragmented the C heap (a parquet -> JSONL export grew by
        # ~5 MB per 1,000 documents).
        self._lines += encode_line(record) if line is None else line
        self._pending += 1
        return self._counted(record, self._pending, len(self._lines))

    def take_batch(self) -> list[Any]:
        lines, self._lines, self._pending, self._units = self._lines, bytearray(), 0, 0
        return [lines] if lines else []

    def write_batch(self, batch: list[Any]) -> None:
        for lines in batch:
            self._stream.write(lines)

    def _close_encoder(self) -> None:
        if self._stream is not self.sink:
            self._stream.close()


def read_jsonl(path: Path, compression: str) -> Iterator[Record]:
    """The records of a finished JSON Lines part."""
    if compression == "gzip":
        fh: Any = gzip.open(path, "rb")  # noqa: SIM115
    elif compression == "zstd":
        import zstandard

        fh = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
    else:
        fh = open(path, "rb")  # noqa: SIM115

    with fh, io.TextIOWrapper(fh, encoding="utf-8") as text:
        for line in text:
            if line.strip():
                yield json.loads(line)
