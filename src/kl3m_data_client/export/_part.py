"""A part file: written under a hidden temporary name, hashed, fsynced, then renamed.

The base of the part writers: the temporary name, the hashing sink, the fixed batching (the
batch boundaries depend on the records alone) and the durable finish.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kl3m_data_client.export._records import Record

#: Records per Parquet row group / per JSONL write.
BATCH_RECORDS = 2048
#: A batch is also flushed when it holds this many tokens (or text characters).
BATCH_UNITS = 4_000_000
#: ... and a JSONL batch when its encoded lines reach this size (4 M tokens are ~25 MB of
#: JSON). Where writes are cut does not change a part's bytes.
BATCH_BYTES = 8 << 20
#: The largest single ``write`` to a part file. Measured (ext4, Linux 6.18): 150 MB written
#: in 1 MiB writes cost ~0.06 s of kernel CPU every time; in 2-8 MiB writes the median was
#: 0.1-0.4 s and single runs took over 1 s (large page-cache folios), for the same bytes.
WRITE_BYTES = 1 << 20


@dataclass(frozen=True)
class BatchBounds:
    """When a batch is full: at ``records`` records, ``units`` tokens (or text characters),
    or ``encoded_bytes`` of encoded JSON lines (JSON Lines parts only)."""

    records: int = BATCH_RECORDS
    units: int = BATCH_UNITS
    encoded_bytes: int = BATCH_BYTES


DEFAULT_BOUNDS = BatchBounds()

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """fsync a directory (makes renames in it durable); a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def tmp_name(final: Path) -> Path:
    """The temporary name of ``final`` (hidden, same directory)."""
    return final.with_name(f"{TMP_PREFIX}{final.name}{TMP_SUFFIX}")


class HashingFile:
    """A write-only binary file that hashes (sha256) and counts what goes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        size = len(data)
        if size <= WRITE_BYTES:
            self.raw.write(data)
        else:  # big writes cost the kernel more per byte (see WRITE_BYTES)
            with memoryview(data) as view:
                for start in range(0, size, WRITE_BYTES):
                    self.raw.write(view[start : start + WRITE_BYTES])
        self.size += size
        return size

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # the owner closes ``raw``
        self.closed = True


def _units(record: Record) -> int:
    tokens = record.get("tokens")
    if tokens is not None:
        return len(tokens)
    text = record.get("text")
    return len(text) if isinstance(text, str) else 0


class PartWriter:
    """Base class: buffering into batches, the temporary file, fsync and rename."""

    def __init__(self, final: Path, bounds: BatchBounds = DEFAULT_BOUNDS) -> None:
        self.final = final
        self.bounds = bounds
        self.tmp = tmp_name(final)
        self._raw: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self.sink = HashingFile(self._raw)
        self.records = 0
        self._batch: list[Any] = []  # records (JsonlWriter keeps encoded lines instead)
        self._units = 0

    # the exporter calls add() on the event loop and write_pending() in a thread
    def add(self, record: Record, line: bytes | None = None) -> bool:
        """Buffer a record (``line``: its JSONL encoding, if done); True when a batch is
        ready for :meth:`write_batch`."""
        self._batch.append(record)
        return self._counted(record, len(self._batch))

    def _counted(self, record: Record, pending: int, pending_bytes: int = 0) -> bool:
        """Count ``record`` in; True when the batch (``pending`` records, ``pending_bytes``
        encoded) is full."""
        self.records += 1
        self._units += _units(record)
        bounds = self.bounds
        return (
            pending >= bounds.records
            or self._units >= bounds.units
            or pending_bytes >= bounds.encoded_bytes
        )

    def take_batch(self) -> list[Any]:
        """Take the buffered records (the batch boundary is fixed by the records alone)."""
        batch, self._batch, self._units = self._batch, [], 0
        return batch

    def write_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def _close_encoder(self) -> None:
        raise NotImplementedError

    def finish(self, pending: list[Any]) -> tuple[str, int]:
        """Write ``pending``, close, fsync, rename; returns (sha256 hex, bytes)."""
        if pending:
            self.write_batch(pending)
        self._close_encoder()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.sink.sha.hexdigest(), self.sink.size

    def abort(self) -> None:
        """Close and delete the temporary file (best effort)."""
        try:
            self._raw.close()
        finally:
            self.tmp.unlink(missing_ok=True)
