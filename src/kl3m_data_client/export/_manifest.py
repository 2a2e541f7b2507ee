"""The destination layout and its manifest (replaced atomically after every part).

::

    DEST/manifest.json            options, and per stream: finished parts and counters
    DEST/errors.jsonl             one line per failed object (key, stage, reason, error, status)
    DEST/errors-w{j}.jsonl        the same, per worker process (workers > 1)
    DEST/errors-r{n}.jsonl        what still failed after retry round n (--retry-errors)
    DEST/data/part-00000.jsonl    parts (``part-w{j}-00000...`` with workers > 1,
                                  ``part-r{n}-00000...``: records recovered by retry round n)
    DEST/.manifest.lock           serialises manifest updates of worker processes

A *stream* is one sequential exporter: ``""`` with ``workers=1``, ``"w{j}"`` for worker j,
``"r{n}"`` for retry round n (listed under ``"retries"`` in the manifest).
Temporary files are hidden (``.name.tmp``) and removed by the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client.export._writers import TMP_SUFFIX, fsync_dir, tmp_name

MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
#: Held (shared) by every spawned export worker while it runs: a new run of the export waits
#: until it is free (a worker whose exporting process was killed must stop first).
WORKERS_LOCK = ".workers.lock"
DATA_DIR = "data"
FORMAT_VERSION = 1
TOOL = "kl3m-data-client export"

Manifest = dict[str, Any]

_PART_RE = re.compile(r"^part-(?:([wr]\d+)-)?(\d+)\.(?:jsonl|jsonl\.gz|jsonl\.zst|parquet)$")
_ERRORS_RE = re.compile(r"^errors(?:-[wr]\d+)?\.jsonl$")


def part_name(stream: str, index: int, extension: str) -> str:
    """``part-00000.jsonl`` or, for worker streams, ``part-w0-00000.jsonl``."""
    middle = f"{stream}-" if stream else ""
    return f"part-{middle}{index:05d}{extension}"


def errors_name(stream: str) -> str:
    """``errors.jsonl`` or ``errors-w0.jsonl``."""
    return f"errors-{stream}.jsonl" if stream else "errors.jsonl"


def new_manifest(options: dict[str, Any]) -> Manifest:
    """An empty manifest for ``options``."""
    return {
        "format_version": FORMAT_VERSION,
        "tool": TOOL,
        "options": options,
        "streams": {},
        "complete": False,
    }


def read_manifest(dest: Path, *, tools: tuple[str, ...] = (TOOL,)) -> Manifest | None:
    """The manifest of ``dest``, or None when there is none; one written by another tool
    than ``tools`` (by default the single-machine export) is refused."""
    path = dest / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise InvalidInputError(
            f"{path} is not a valid export manifest ({exc}); pass overwrite=True to start over"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("tool") not in tools:
        raise InvalidInputError(
            f"{path} is not a kl3m-data-client export manifest; choose another destination"
        )
    return manifest


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp, fsync, rename, fsync dir)."""
    tmp = tmp_name(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_manifest(dest: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically."""
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(dest / MANIFEST, data.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """A blocking inter-process lock (``flock``) on ``path``, created if missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no inter-process locking
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def manifest_lock(dest: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive inter-process lock for read-modify-write of the manifest."""
    return file_lock(dest / LOCK)


def update_manifest(dest: Path, change: Callable[[Manifest], None]) -> Manifest:
    """Apply ``change`` to the current manifest and replace it, under the lock."""
    with manifest_lock(dest):
        manifest = read_manifest(dest)
        if manifest is None:
            raise InvalidInputError(f"the manifest of {dest} disappeared during the export")
        change(manifest)
        write_manifest(dest, manifest)
        return manifest


def diff_options(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``name (old -> new)`` for every option that differs."""
    out = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            out.append(f"{name} ({old.get(name)!r} -> {new.get(name)!r})")
    return out


def clean_temporaries(dest: Path) -> int:
    """Delete leftover temporary files of an interrupted run; returns how many."""
    removed = 0
    for folder in (dest, dest / DATA_DIR):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if name.startswith(".") and name.endswith(TMP_SUFFIX) and entry.is_file():
                inner = name[1 : -len(TMP_SUFFIX)]
                if _PART_RE.match(inner) or inner == MANIFEST or _ERRORS_RE.match(inner):
                    entry.unlink(missing_ok=True)
                    removed += 1
    return removed


def stream_part_files(dest: Path, stream: str) -> dict[int, Path]:
    """Finished part files of ``stream`` present on disk, by index."""
    out: dict[int, Path] = {}
    folder = dest / DATA_DIR
    if not folder.is_dir():
        return out
    for entry in folder.iterdir():
        m = _PART_RE.match(entry.name)
        if m and (m.group(1) or "") == stream:
            out[int(m.group(2))] = entry
    return out


def wipe(dest: Path) -> None:
    """Remove everything an export wrote to ``dest`` (other files are left alone)."""
    clean_temporaries(dest)
    folder = dest / DATA_DIR
    if folder.is_dir():
        for entry in folder.iterdir():
            if _PART_RE.match(entry.name):
                entry.unlink(missing_ok=True)
    for entry in dest.iterdir():
        if entry.name == MANIFEST or _ERRORS_RE.match(entry.name):
            entry.unlink(missing_ok=True)
    fsync_dir(dest)
