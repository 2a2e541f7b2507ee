"""The seen-set of ``deduplicate=True``: record digests in a scratch sqlite3 file.

An in-memory set of 16-byte digests costs ~100 bytes per unique record (1 GB per 10 M
documents); this one keeps a few MB of page cache whatever the count. It is scratch: built
at the start of a stream (from the parts already written when resuming), deleted at its
end, never trusted across runs. No journal and no fsync: losing it only means rebuilding it.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from types import TracebackType

#: Page cache of the file, in KiB (sqlite's ``cache_size`` with a minus sign).
CACHE_KIB = 4096


class SeenSet:
    """Digests seen so far; :meth:`add` tells whether a digest is new."""

    def __init__(self, path: Path | None = None) -> None:
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="kl3m-dedup-")
            path = Path(self._tmpdir.name) / "seen.sqlite3"
        self.path = path
        path.unlink(missing_ok=True)  # scratch: never reuse a file of an earlier run
        # used from the event loop and from a thread (the resume rebuild), never at once
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("BEGIN")
        self._insert = "INSERT OR IGNORE INTO seen VALUES (?)"

    def add(self, digest: bytes) -> bool:
        """Add ``digest``; True if it was not there yet."""
        return self._db.execute(self._insert, (digest,)).rowcount == 1

    def __contains__(self, digest: object) -> bool:
        row = self._db.execute("SELECT 1 FROM seen WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    def close(self) -> None:
        """Close and delete the file (idempotent)."""
        db, self._db = self._db, None  # type: ignore[assignment]
        if db is not None:
            db.close()
            self.path.unlink(missing_ok=True)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SeenSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
