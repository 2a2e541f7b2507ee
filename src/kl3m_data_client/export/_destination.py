"""The destination of an export: its lock, its checks against the options, its completion
and the report read back from its manifest."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client.export._manifest import (
    DATA_DIR,
    WORKERS_LOCK,
    Manifest,
    atomic_write,
    clean_temporaries,
    diff_options,
    errors_name,
    new_manifest,
    read_manifest,
    update_manifest,
    wipe,
    write_manifest,
)
from kl3m_data_client.export._report import Counters, ExportReport, PartInfo
from kl3m_data_client.export._retry import apply_rounds

if TYPE_CHECKING:
    from kl3m_data_client.export._options import ExportPlan


def recorded_workers(destination: str | os.PathLike[str]) -> int | None:
    """The worker count of the export ``destination`` holds, if any (a resume keeps it)."""
    try:
        manifest = read_manifest(Path(destination).expanduser().absolute())
    except (InvalidInputError, OSError):
        return None
    workers = ((manifest or {}).get("options") or {}).get("workers")
    return workers if isinstance(workers, int) and not isinstance(workers, bool) else None


def resolve_destination(destination: str | os.PathLike[str]) -> Path:
    dest = Path(destination).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"destination {str(dest)!r} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


#: Seconds a new run waits for the workers of a killed run to stop.
WORKERS_GONE_TIMEOUT = 30.0


class DestinationLock:
    """An exclusive lock on the destination for the whole run (one export at a time)."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / ".export.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        """Lock, then wait until no worker of an earlier (killed) run still holds its lock."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InvalidInputError(
                f"another export is writing to {self.path.parent}; wait for it to finish"
            ) from None
        self.fd = fd
        workers = os.open(self.path.parent / WORKERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + WORKERS_GONE_TIMEOUT
        try:
            while True:
                try:
                    fcntl.flock(workers, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.release()
                        raise InvalidInputError(
                            f"worker processes of an earlier export to {self.path.parent} "
                            "are still running; wait for them to stop"
                        ) from None
                    time.sleep(0.05)
        finally:
            os.close(workers)  # released: this run's workers take it shared

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_destination(
    dest: Path, plan: ExportPlan, resume: bool, overwrite: bool
) -> tuple[Manifest, bool]:
    """Check the destination against the options; returns (manifest, resumed)."""
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"destination {str(dest)!r} exists and is not a directory")
    (dest / DATA_DIR).mkdir(parents=True, exist_ok=True)
    options = plan.fingerprint()
    manifest = read_manifest(dest)
    if manifest is not None and overwrite:
        manifest = None
        wipe(dest)
    elif manifest is not None and not resume:
        raise InvalidInputError(
            f"{dest} already holds an export; pass overwrite=True to replace it "
            "(or resume=True to continue it)"
        )
    elif manifest is not None:
        diffs = diff_options(manifest.get("options") or {}, options)
        if diffs:
            raise InvalidInputError(
                f"{dest} holds an export made with different options: {'; '.join(diffs)}. "
                "Rerun with the same options to resume it, or pass overwrite=True to replace it"
            )
    if manifest is None:
        wipe(dest)
        manifest = new_manifest(options)
        write_manifest(dest, manifest)
        return manifest, False
    clean_temporaries(dest)
    return manifest, True


def stream_names(plan: ExportPlan) -> list[str]:
    return [""] if plan.workers == 1 else [f"w{j}" for j in range(plan.workers)]


def finalize_export(dest: Path, plan: ExportPlan) -> Manifest:
    """Mark the export complete (merging worker error files into ``errors.jsonl``)."""
    if plan.workers > 1:
        chunks = []
        for name in stream_names(plan):
            path = dest / errors_name(name)
            if path.exists():
                chunks.append(path.read_bytes())
        atomic_write(dest / errors_name(""), b"".join(chunks))

    def change(manifest: Manifest) -> None:
        manifest["complete"] = True

    return update_manifest(dest, change)


def read_complete(dest: Path) -> Manifest:
    manifest = read_manifest(dest)
    if manifest is None:
        raise InvalidInputError(f"the manifest of {dest} disappeared during the export")
    return manifest


def build_report(
    dest: Path,
    plan: ExportPlan,
    manifest: Manifest,
    *,
    duration: float,
    processed_this_run: int,
    resumed: bool,
) -> ExportReport:
    """The report of a (finished or interrupted) export, from its manifest."""
    totals = Counters()
    parts: list[PartInfo] = []
    streams = manifest.get("streams") or {}
    for name in stream_names(plan):
        entry = streams.get(name) or {}
        stream_parts = entry.get("parts") or []
        checkpoint = entry.get("final") or (stream_parts[-1] if stream_parts else None)
        if checkpoint is not None:
            totals.add(Counters.from_dict(checkpoint.get("counters")))
        for p in stream_parts:
            parts.append(
                PartInfo(
                    str(dest / p["path"]), int(p["records"]), str(p["sha256"]), int(p["bytes"])
                )
            )
    for p in apply_rounds(totals, manifest):
        parts.append(
            PartInfo(str(dest / p["path"]), int(p["records"]), str(p["sha256"]), int(p["bytes"]))
        )
    return ExportReport.from_totals(
        plan.dataset_id,
        plan.stage,
        plan.format,
        dest,
        totals,
        parts,
        compression=plan.compression,
        content=plan.content,
        duration=duration,
        processed_this_run=processed_this_run,
        resumed=resumed,
    )
