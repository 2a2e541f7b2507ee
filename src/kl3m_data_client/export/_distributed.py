"""Scheduler-agnostic hooks of a distributed export (used by :mod:`kl3m_data_client.ray`).

A distributed export of N shards is N independent single-machine exports, one per shard
``(i, N)`` of the export package's stable id hash, each into its own sub-directory of the
destination, plus a top-level manifest that merges theirs::

    DEST/manifest.json                      options (with "shards": N), per shard: its parts
    DEST/errors.jsonl                       the shards' errors.jsonl, concatenated in order
    DEST/shard-00000-of-00004/              a complete single-machine export of shard 0/4
        manifest.json  errors.jsonl  data/part-00000.parquet ...

Each shard keeps every guarantee of :func:`kl3m_data_client.export.export` (temporary
names, fsync, atomic manifest after each part, resume after a crash, its own lock), and no
two processes ever write the same manifest, so no lock has to work across machines. The
three steps are plain functions: :func:`prepare_destination` (once), :func:`export_shard`
(once per shard, anywhere that sees the destination) and :func:`merge_shards` (once, after
all shards), so any scheduler (Ray, Dask, a Slurm array) can run them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from kl3m_data_client._bridge import run_sync
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import InvalidInputError, KL3MError
from kl3m_data_client.export._client_api import ClientFactory
from kl3m_data_client.export._exporter import export
from kl3m_data_client.export._manifest import (
    FORMAT_VERSION,
    MANIFEST,
    TOOL,
    Manifest,
    diff_options,
    errors_name,
    read_manifest,
    wipe,
    write_manifest,
)
from kl3m_data_client.export._options import make_plan
from kl3m_data_client.export._report import Counters, ExportReport, PartInfo
from kl3m_data_client.export._retry import apply_rounds
from kl3m_data_client.export._writers import fsync_dir, tmp_name

DISTRIBUTED_TOOL = "kl3m-data-client export (distributed)"
_SHARD_DIR_RE = re.compile(r"^shard-\d{5,}-of-\d{5,}$")
#: Export options that cannot be split into independent shards.
_REFUSED = {
    "shard": "the distributed export chooses the shards itself (use shards=N)",
    "deduplicate": "duplicates can fall into different shards; deduplicate after the export",
    "max_documents": "the first N documents are not split by shard; use a single-process export",
}


def shard_dir_name(index: int, count: int) -> str:
    """``shard-00002-of-00008``: the sub-directory of shard ``(index, count)``."""
    return f"shard-{index:05d}-of-{count:05d}"


def distributed_fingerprint(
    config: ClientConfig, dataset_id: str, shards: int, **options: Any
) -> dict[str, Any]:
    """Validate the export options of an N-shard export; the options stored in its manifest.

    Raises InvalidInputError for a bad option or one a shard cannot honour alone.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidInputError(f"shards must be a positive integer, got {shards!r}")
    for name, why in _REFUSED.items():
        if options.get(name) not in (None, False):
            raise InvalidInputError(f"{name} is not supported by the distributed export: {why}")
    if options.get("workers") not in (None, 1):
        raise InvalidInputError(
            "workers must be 1 in a distributed export: each shard is one task; use more shards"
        )
    plan = make_plan(bucket=config.bucket, dataset_id=dataset_id, **options)
    fingerprint = plan.fingerprint()
    fingerprint["shards"] = shards
    return fingerprint


def _read_any_manifest(dest: Path) -> Manifest | None:
    """The manifest of a single-machine or a distributed export in ``dest``, or None."""
    return read_manifest(dest, tools=(TOOL, DISTRIBUTED_TOOL))


def _remove_distributed(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.is_dir() and _SHARD_DIR_RE.match(entry.name):
            shutil.rmtree(entry)
    for name in (MANIFEST, errors_name("")):
        (dest / name).unlink(missing_ok=True)
    fsync_dir(dest)


def _new_manifest(fingerprint: dict[str, Any]) -> Manifest:
    return {
        "format_version": FORMAT_VERSION,
        "tool": DISTRIBUTED_TOOL,
        "options": fingerprint,
        "shards": {},
        "complete": False,
    }


def prepare_destination(
    destination: str | os.PathLike[str],
    fingerprint: dict[str, Any],
    *,
    resume: bool = True,
    overwrite: bool = False,
) -> bool:
    """Check ``destination`` against the options before the shards start; True if resuming.

    A destination holding another export (single-machine, or distributed with other
    options or another shard count) is refused unless ``overwrite``, which removes it.
    """
    dest = Path(destination)
    if dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"destination {str(dest)!r} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    manifest = _read_any_manifest(dest)
    if manifest is not None and overwrite:
        if manifest.get("tool") == TOOL:
            wipe(dest)
        _remove_distributed(dest)
        manifest = None
    elif manifest is not None and manifest.get("tool") == TOOL:
        raise InvalidInputError(
            f"{dest} holds a single-machine export; choose another destination "
            "or pass overwrite=True to replace it"
        )
    elif manifest is not None and not resume:
        raise InvalidInputError(
            f"{dest} already holds an export; pass overwrite=True to replace it "
            "(or resume=True to continue it)"
        )
    elif manifest is not None:
        diffs = diff_options(manifest.get("options") or {}, fingerprint)
        if diffs:
            raise InvalidInputError(
                f"{dest} holds an export made with different options: {'; '.join(diffs)}. "
                "Rerun with the same options to resume it, or pass overwrite=True to replace it"
            )
        return True
    write_manifest(dest, _new_manifest(fingerprint))
    return False


def export_shard(
    config: ClientConfig,
    dataset_id: str,
    destination: str | os.PathLike[str],
    index: int,
    count: int,
    options: dict[str, Any],
    retry_errors: bool = False,
    *,
    client_factory: ClientFactory,
) -> dict[str, Any]:
    """Export shard ``(index, count)`` into its sub-directory of ``destination`` (resuming it;
    with ``retry_errors``, then retrying its recorded per-object errors).

    Blocking: runs its own event loop thread (so it may be called from a thread that runs
    an event loop) and its own client, ``client_factory(config=config)``
    (e.g. ``AsyncKL3MClient``; pass ``config.without_secrets()`` across processes:
    credentials then come from botocore's chain where this runs). Returns the shard's
    report as a dict.
    """
    shard_dest = Path(destination) / shard_dir_name(index, count)

    async def run() -> ExportReport:
        async with client_factory(config=config) as client:
            return await export(
                client,
                dataset_id,
                shard_dest,
                resume=True,
                overwrite=False,
                shard=(index, count),
                retry_errors=retry_errors,
                **options,
            )

    report = run_sync(run, name="kl3m-export-shard")
    out = report.as_dict()
    out["shard"] = index
    out["processed_this_run"] = round(report.docs_per_second * report.duration)
    return out


def _merge_errors(dest: Path, names: list[str]) -> None:
    final = dest / errors_name("")
    tmp = tmp_name(final)
    with open(tmp, "wb") as out:
        for name in names:
            path = dest / name / errors_name("")
            if path.exists():
                with open(path, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)
    fsync_dir(dest)


def merge_shards(
    destination: str | os.PathLike[str],
    *,
    duration: float = 0.0,
    processed_this_run: int = 0,
    resumed: bool = False,
) -> ExportReport:
    """Merge the shard manifests into ``DEST/manifest.json`` and ``errors.jsonl``; the report.

    Reads every shard's manifest from disk (so it checks that the shards wrote to storage
    this process sees) and fails if a shard is unfinished or a part is missing.
    """
    dest = Path(destination)
    manifest = _read_any_manifest(dest)
    if manifest is None or manifest.get("tool") != DISTRIBUTED_TOOL:
        raise InvalidInputError(f"{dest} holds no distributed export to merge")
    options = manifest["options"]
    count = int(options["shards"])
    totals = Counters()
    parts: list[PartInfo] = []
    shards: dict[str, Any] = {}
    names = [shard_dir_name(i, count) for i in range(count)]
    for index, name in enumerate(names):
        shard_manifest = read_manifest(dest / name)
        entry = ((shard_manifest or {}).get("streams") or {}).get("") or {}
        if shard_manifest is None or not shard_manifest.get("complete"):
            raise KL3MError(
                f"shard {name} is not finished (or not visible at {dest} here: the destination "
                "must be a filesystem shared by every node); rerun the export to resume it"
            )
        counters = Counters.from_dict((entry.get("final") or {}).get("counters"))
        retried = apply_rounds(counters, shard_manifest)
        totals.add(counters)
        shard_parts = []
        for part in [*(entry.get("parts") or []), *retried]:
            path = f"{name}/{part['path']}"
            size = int(part["bytes"])
            full = dest / path
            if not full.is_file() or full.stat().st_size != size:
                raise KL3MError(f"part {full} listed by shard {name} is missing or truncated")
            shard_parts.append({**part, "path": path})
            parts.append(PartInfo(str(full), int(part["records"]), str(part["sha256"]), size))
        shards[name] = {
            "shard": [index, count],
            "complete": True,
            "counters": counters.as_dict(),
            "parts": shard_parts,
            "errors": f"{name}/{errors_name('')}",
        }
    _merge_errors(dest, names)
    manifest["shards"] = shards
    manifest["complete"] = True
    write_manifest(dest, manifest)
    return ExportReport.from_totals(
        str(options["dataset_id"]),
        str(options["stage"]),
        str(options["format"]),
        dest,
        totals,
        parts,
        compression=options.get("compression"),
        content=str(options.get("content")),
        duration=duration,
        processed_this_run=processed_this_run,
        resumed=resumed,
    )


__all__ = [
    "DISTRIBUTED_TOOL",
    "distributed_fingerprint",
    "export_shard",
    "merge_shards",
    "prepare_destination",
    "shard_dir_name",
]
