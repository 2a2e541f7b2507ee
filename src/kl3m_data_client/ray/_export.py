""":func:`export_distributed`: one Ray task per hash shard, each a single-machine export.

The three steps are the scheduler-agnostic functions of
:mod:`kl3m_data_client.export._distributed` (prepare the destination, export one shard,
merge the manifests), each run as a Ray task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import KL3MError
from kl3m_data_client.export._distributed import (
    distributed_fingerprint,
    export_shard,
    merge_shards,
    prepare_destination,
)
from kl3m_data_client.export._report import ExportProgress, ExportReport
from kl3m_data_client.ray._common import CLIENT_KWARGS, client_config, warn_secrets


@contextmanager
def _ray_connection(address: str | None, runtime_env: dict[str, Any] | None) -> Iterator[None]:
    """Use the current Ray connection, or connect to ``address`` (None: ``RAY_ADDRESS``, the
    cluster started on this machine, else a new local one) for the duration."""
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"address": address}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _progress_of(results: list[dict[str, Any]], start: float, done: bool) -> ExportProgress:
    def total(name: str) -> int:
        return sum(int(r.get(name, 0)) for r in results)

    return ExportProgress(
        exported=total("exported"),
        skipped=total("skipped"),
        duplicates=total("duplicates"),
        errors=total("errors"),
        bytes_in=total("bytes_in"),
        bytes_out=total("bytes_out"),
        elapsed=time.monotonic() - start,
        done=done,
    )


def _get_typed(refs: list[Any]) -> list[Any]:
    """``ray.get(refs)``, raising a task's KL3MError itself (ExportStoppedError after an
    outage, with its ``last_error``) instead of Ray's wrapper of it."""
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, KL3MError):
            # its own cause (ExportStoppedError: the failure that stopped the shard) is kept
            raise cause from cause.__cause__
        raise


def _prepare(dest: str, fingerprint: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    return prepare_destination(dest, fingerprint, resume=resume, overwrite=overwrite)


def _merge(dest: str, duration: float, processed: int, resumed: bool) -> ExportReport:
    return merge_shards(dest, duration=duration, processed_this_run=processed, resumed=resumed)


def _export_shard(
    config: ClientConfig,
    dataset_id: str,
    destination: str | os.PathLike[str],
    index: int,
    count: int,
    options: dict[str, Any],
    retry_errors: bool = False,
) -> dict[str, Any]:
    """One shard task: :func:`export_shard` with an :class:`AsyncKL3MClient`."""
    return export_shard(
        config,
        dataset_id,
        destination,
        index,
        count,
        options,
        retry_errors,
        client_factory=AsyncKL3MClient,
    )


def _gather(
    pending: list[Any], start: float, progress: Callable[[ExportProgress], Any] | None
) -> list[dict[str, Any]]:
    """The results of the shard tasks as they finish (``progress`` told after each); if one
    fails (or the driver is interrupted), the others are cancelled: all stays resumable."""
    results: list[dict[str, Any]] = []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.extend(_get_typed(ready))
            if progress is not None:
                progress(_progress_of(results, start, done=False))
    finally:
        for ref in pending:
            ray.cancel(ref)
    return results


def export_distributed(
    dataset_id: str,
    destination: str | os.PathLike[str],
    *,
    shards: int,
    ray_address: str | None = None,
    config: ClientConfig | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: Callable[[ExportProgress], Any] | None = None,
    num_cpus: float = 1.0,
    ray_remote_args: dict[str, Any] | None = None,
    runtime_env: dict[str, Any] | None = None,
    retry_errors: bool = False,
    **options: Any,
) -> ExportReport:
    """Export a dataset with one Ray task per shard; the merged :class:`ExportReport`.

    Shard ``i`` of ``shards`` is the export package's stable hash shard ``(i, shards)``,
    exported by :func:`kl3m_data_client.export.export` (same guarantees: temporary names,
    fsync, atomic manifest, resume) into ``destination/shard-0000i-of-0000N/``; a final task
    merges the shard manifests into ``destination/manifest.json`` and their errors into
    ``destination/errors.jsonl``. The union of the shards' records is the record set of a
    single-process export with the same options. ``destination`` must be a path every node
    sees (a shared filesystem, or a single-node cluster). Rerunning the same call resumes
    unfinished shards; other options into the same destination are refused unless
    ``overwrite``.

    ``options`` are the export options (``stage``, ``format``, ``compression``, ``content``,
    ``key_prefix``, ``ids``, filters, ``records_per_part``, ``max_concurrency``) and client
    settings (``endpoint_url``, ``region``, ...; or pass ``config``); an ``ids`` file must
    be on storage every node sees (or pass a list). ``deduplicate``,
    ``max_documents``, ``shard`` and ``workers`` are refused. Ray: ``ray_address`` (used
    when Ray is not initialised yet; None: ``RAY_ADDRESS`` or a local cluster),
    ``num_cpus`` per shard task, extra ``ray_remote_args``, and a ``runtime_env`` for
    ``ray.init``. ``progress`` is called as shards finish. ``outage_timeout`` and
    ``retry_errors`` work per shard as in the single-machine export; a shard stopped by an
    outage raises :class:`~kl3m_data_client.export.ExportStoppedError` here (rerun to resume).
    """
    client_kwargs = {
        k: options.pop(k) for k in list(options) if k in CLIENT_KWARGS and k != "max_concurrency"
    }
    cfg = client_config(config, client_kwargs)
    warn_secrets(cfg)
    public = cfg.without_secrets()
    dest = str(Path(destination).expanduser().absolute())
    if isinstance(options.get("ids"), (str, os.PathLike)):  # read by every shard task
        options["ids"] = str(Path(options["ids"]).expanduser().absolute())
    fingerprint = distributed_fingerprint(public, dataset_id, shards, **options)
    remote_args: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": 3}
    remote_args.update(ray_remote_args or {})
    with _ray_connection(ray_address, runtime_env):
        # the destination is prepared and merged by tasks too (same resources and node
        # placement as the shards): with a Ray Client address the driver's filesystem is not
        # the cluster's, and a head node without CPUs may not mount the shared storage
        step = ray.remote(**remote_args)
        resumed = ray.get(step(_prepare).remote(dest, fingerprint, resume, overwrite))
        start = time.monotonic()
        shard_task = ray.remote(_export_shard).options(**remote_args)
        pending = [
            shard_task.remote(public, dataset_id, dest, i, shards, options, retry_errors)
            for i in range(shards)
        ]
        results = _gather(pending, start, progress)
        duration = time.monotonic() - start
        processed = sum(int(r["processed_this_run"]) for r in results)
        report: ExportReport = ray.get(
            step(_merge).remote(dest, duration, processed, bool(resumed))
        )
    if progress is not None:
        progress(_progress_of(results, start, done=True))
    return report
