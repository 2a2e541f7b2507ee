"""Ray Data integration: the corpus as a Ray Dataset, and an export spread over a cluster.

Install with ``pip install 'kl3m-data-client[ray]'``; see ``docs/scale-out.md``.

* :func:`read_kl3m` / :class:`KL3MDatasource`: a ``ray.data.Dataset`` of export records
  (the columns of the export package's Parquet output). Read tasks are disjoint key ranges
  (boundaries from the dataset index when present, else from one listing on the driver) or
  chunks of an explicit id list; each task runs its own :class:`AsyncKL3MClient`.
* :func:`export_distributed`: one Ray task per shard ``(i, N)`` of the export package's
  stable id hash, each a complete resumable single-machine export into
  ``DEST/shard-0000i-of-0000N/``; a final task merges their manifests.

Only a :class:`ClientConfig` without secrets is sent to the workers: they resolve
credentials through botocore's chain (environment, ``~/.aws``, instance or pod roles). No
client, session or connection crosses a process boundary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

try:
    import ray
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kl3m_data_client.ray needs Ray Data: pip install 'kl3m-data-client[ray]'"
    ) from exc

from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import InvalidInputError, KL3MError
from kl3m_data_client._keys import object_key, stage_prefix
from kl3m_data_client._stream import closing
from kl3m_data_client.export._distributed import (
    distributed_fingerprint,
    export_shard,
    merge_shards,
    prepare_destination,
)
from kl3m_data_client.export._items import (
    Item,
    Outcome,
    iter_items,
    iter_outcomes,
)
from kl3m_data_client.export._options import ExportPlan, IdSource, make_plan
from kl3m_data_client.export._records import Record
from kl3m_data_client.export._report import ExportProgress, ExportReport
from kl3m_data_client.export._writers import parquet_schema, records_to_table
from kl3m_data_client.models.common import Stage

__all__ = ["KL3MDatasource", "export_distributed", "read_kl3m"]

logger = logging.getLogger("kl3m_data_client.ray")

Planning = Literal["auto", "index", "listing"]
OnError = Literal["skip", "raise"]

#: With automatic parallelism, a read task gets at least this many documents.
MIN_DOCUMENTS_PER_TASK = 1000
#: Records per Arrow block yielded by a read task.
BLOCK_ROWS = 1024

_CLIENT_KWARGS = frozenset(f.name for f in dataclasses.fields(ClientConfig)) | {
    "bucket_name",
    "region_name",
}


# ------------------------------------------------------------------------------ helpers
def _client_config(config: ClientConfig | None, kwargs: dict[str, Any]) -> ClientConfig:
    if config is not None:
        if kwargs:
            raise TypeError(
                f"pass either config or client keyword arguments, not both: {sorted(kwargs)}"
            )
        return config
    return ClientConfig.from_kwargs(**kwargs)


def _has_secrets(config: ClientConfig) -> bool:
    return bool(config.aws_secret_access_key or config.aws_session_token)


def _warn_secrets(config: ClientConfig) -> None:
    if _has_secrets(config):
        logger.warning(
            "explicit AWS credentials are used on the driver only and never sent to Ray "
            "workers; the workers resolve their own through botocore's chain (set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the cluster's environment or "
            "runtime_env, or use instance/pod roles); see docs/scale-out.md"
        )


def _run_async(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` (a coroutine function) on a private event loop thread; its result."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal("asyncio", name="kl3m-ray") as portal:
        return portal.call(fn)


# ------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class ReadShard:
    """One read task: keys in ``(start_after, end]`` of the listing, or explicit ids."""

    start_after: str | None = None
    end: str | None = None
    ids: tuple[str, ...] | None = None
    #: Estimated bytes (object sizes from the listing), or None.
    size_bytes: int | None = None


class _Sampler:
    """Keeps every ``step``-th key of a stream (at most ``2 * target``, ``step`` doubling)."""

    def __init__(self, target: int) -> None:
        self.limit = 2 * max(1, target)
        self.step = 1
        self.samples: list[str] = []
        self.count = 0
        self.bytes = 0

    def add(self, key: str, size: int = 0) -> None:
        self.count += 1
        self.bytes += size
        if self.count % self.step == 0:
            self.samples.append(key)
            if len(self.samples) >= self.limit:
                self.samples = self.samples[1::2]
                self.step *= 2

    def ranges(self, tasks: int, size_known: bool) -> list[ReadShard]:
        """``tasks`` contiguous ranges of about ``count / tasks`` keys each."""
        bounds: list[str] = []
        for j in range(1, tasks):
            index = (j * self.count // tasks) // self.step - 1
            if index >= 0 and (not bounds or self.samples[index] > bounds[-1]):
                bounds.append(self.samples[index])
        size = self.bytes // (len(bounds) + 1) if size_known else None
        starts: list[str | None] = [None, *bounds]
        ends: list[str | None] = [*bounds, None]
        return [ReadShard(a, b, size_bytes=size) for a, b in zip(starts, ends, strict=True)]


def _task_count(documents: int, parallelism: int, min_per_task: int) -> int:
    return max(1, min(parallelism, math.ceil(documents / max(1, min_per_task))))


async def _index_keys(
    client: AsyncKL3MClient, plan: ExportPlan, required: bool
) -> list[str] | None:
    """Sorted keys, in the plan's stage, of the documents the dataset index lists."""
    try:
        index = await client.get_dataset_index(plan.dataset_id, plan.key_prefix)
    except KL3MError as exc:
        if required:
            raise
        logger.warning("dataset index of %s unusable (%s); listing instead", plan.dataset_id, exc)
        return None
    if index is None:
        if required:
            raise InvalidInputError(f"dataset {plan.dataset_id!r} has no index (planning='index')")
        return None
    stage = Stage(plan.stage)
    prefix = stage_prefix(stage, plan.dataset_id, plan.key_prefix)
    keys: set[str] = set()
    for doc_id in index.get_document_ids():
        try:
            key = object_key(stage, plan.dataset_id, doc_id)
        except InvalidInputError:
            continue
        if key.startswith(prefix):
            keys.add(key)
    return sorted(keys)


async def plan_read_shards(
    config: ClientConfig,
    plan: ExportPlan,
    parallelism: int,
    *,
    planning: Planning = "auto",
    min_documents_per_task: int = MIN_DOCUMENTS_PER_TASK,
) -> list[ReadShard]:
    """Split a read into at most ``parallelism`` disjoint shards whose union is everything.

    Explicit ids are cut into contiguous chunks. Otherwise the key space of the stage prefix
    is cut into ranges ``(start_after, end]``: the first starts at the beginning and the last
    is open-ended, so keys missing from the index (or added after it) are still read once.
    The boundaries come from the dataset index (one GET) when ``planning`` allows and it
    exists, else from one listing of the prefix, keeping O(parallelism) keys in memory.
    """
    if plan.ids is not None:
        ids = list(plan.ids)
        n = _task_count(len(ids), parallelism, min_documents_per_task)
        cuts = [len(ids) * j // n for j in range(n + 1)]
        return [ReadShard(ids=tuple(ids[cuts[j] : cuts[j + 1]])) for j in range(n)]
    if parallelism <= 1 and planning != "index":
        return [ReadShard()]
    async with AsyncKL3MClient(config=config) as client:
        if planning in ("auto", "index"):
            keys = await _index_keys(client, plan, required=planning == "index")
            if keys is not None:
                sampler = _Sampler(len(keys))
                for key in keys:
                    sampler.add(key)
                tasks = _task_count(len(keys), parallelism, min_documents_per_task)
                return sampler.ranges(tasks, size_known=False)
        sampler = _Sampler(parallelism)
        prefix = stage_prefix(Stage(plan.stage), plan.dataset_id, plan.key_prefix)
        async with closing(client.iter_objects(prefix)) as infos:
            async for info in infos:
                sampler.add(info.key, info.size or 0)
        tasks = _task_count(sampler.count, parallelism, min_documents_per_task)
        return sampler.ranges(tasks, size_known=True)


# ------------------------------------------------------------------------------ reading
async def _shard_items(
    client: AsyncKL3MClient, plan: ExportPlan, shard: ReadShard
) -> AsyncIterator[Item]:
    if shard.ids is not None:
        plan = replace(plan, ids=IdSource(path=None, items=shard.ids, digest=""))
        async with closing(iter_items(client, plan)) as items:
            async for item in items:
                yield item
        return
    async with closing(iter_items(client, plan, start_after=shard.start_after)) as items:
        async for item in items:
            if shard.end is not None and item.key > shard.end:
                return
            yield item


def _accept(outcome: Outcome, on_error: OnError) -> Record | None:
    """The record of an outcome; a failed one raises its typed error (CorruptObjectError,
    NotFoundError, InvalidInputError, ...) or is logged and skipped. (Systemic failures
    never reach here: the fetch step waits for them, then raises ExportStoppedError.)"""
    if outcome.error is None:
        return outcome.record  # None when the filters leave it out
    if on_error == "raise":
        raise outcome.error
    logger.warning("skipping %s: %s", outcome.item.key, outcome.error)
    return None


async def iter_shard_blocks(
    config: ClientConfig,
    plan: ExportPlan,
    shard: ReadShard,
    *,
    on_error: OnError = "raise",
    block_rows: int = BLOCK_ROWS,
) -> AsyncIterator[Any]:
    """Arrow tables of the export records of one read shard, in listing (or given) order."""
    schema = parquet_schema(plan.stage, plan.content)
    async with AsyncKL3MClient(config=config) as client:
        outcomes = iter_outcomes(client, plan, items=_shard_items(client, plan, shard))
        batch: list[Record] = []
        async with closing(outcomes) as stream:
            async for outcome in stream:
                record = _accept(outcome, on_error)
                if record is None:
                    continue
                batch.append(record)
                if len(batch) >= block_rows:
                    yield await asyncio.to_thread(records_to_table, batch, schema)
                    batch = []
        if batch:
            yield await asyncio.to_thread(records_to_table, batch, schema)


def _read_shard(
    config: ClientConfig, plan: ExportPlan, shard: ReadShard, on_error: OnError, block_rows: int
) -> Iterator[Any]:
    """A read task's body (runs on a Ray worker): its own event loop thread and client."""
    from anyio.from_thread import start_blocking_portal

    from kl3m_data_client._bridge import iterate_in_portal

    def make() -> AsyncIterator[Any]:
        return iter_shard_blocks(config, plan, shard, on_error=on_error, block_rows=block_rows)

    with start_blocking_portal("asyncio", name="kl3m-ray-read") as portal:
        yield from iterate_in_portal(portal, make, buffer=2)


def _block_metadata(size_bytes: int | None) -> Any:
    names = {f.name for f in dataclasses.fields(BlockMetadata)}
    # num_rows stays unknown: filters, bad and missing objects change it, and Ray answers
    # count() from it without reading
    values: dict[str, Any] = {
        "num_rows": None,
        "size_bytes": size_bytes,
        "schema": None,
        "input_files": None,
        "exec_stats": None,
    }
    return BlockMetadata(**{k: v for k, v in values.items() if k in names})


def _read_task(
    fn: Callable[[], Iterator[Any]], size_bytes: int | None, schema: Any, limit: Any
) -> Any:
    params = inspect.signature(ReadTask.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "schema" in params:
        kwargs["schema"] = schema
    if "per_task_row_limit" in params and limit is not None:
        kwargs["per_task_row_limit"] = limit
    return ReadTask(fn, _block_metadata(size_bytes), **kwargs)


class KL3MDatasource(Datasource):
    """A Ray Data datasource of KL3M export records (see :func:`read_kl3m` for the options).

    Picklable without secrets: explicit credentials, if given, serve the planning on the
    driver only (they are dropped when the datasource is pickled).
    """

    def __init__(
        self,
        dataset_id: str,
        *,
        stage: Stage | str = Stage.REPRESENTATIONS,
        key_prefix: str | None = None,
        ids: str | os.PathLike[str] | Iterator[str] | list[str] | tuple[str, ...] | None = None,
        content: str | None = None,
        mime_types: list[str] | tuple[str, ...] | str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        max_concurrency: int | None = None,
        planning: Planning = "auto",
        on_error: OnError = "raise",
        block_rows: int = BLOCK_ROWS,
        min_documents_per_task: int = MIN_DOCUMENTS_PER_TASK,
        config: ClientConfig | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        cfg = _client_config(config, client_kwargs)
        if planning not in ("auto", "index", "listing"):
            raise InvalidInputError(f"planning must be auto, index or listing, got {planning!r}")
        if on_error not in ("skip", "raise"):
            raise InvalidInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise InvalidInputError(f"block_rows must be a positive integer, got {block_rows!r}")
        self._plan = make_plan(
            bucket=cfg.bucket,
            dataset_id=dataset_id,
            stage=stage,
            content=content,
            key_prefix=key_prefix,
            ids=ids,
            mime_types=mime_types,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            max_concurrency=max_concurrency,
            default_concurrency=2 * cfg.max_concurrency,
        )
        _warn_secrets(cfg)
        self._driver_config: ClientConfig | None = cfg  # may hold secrets: never pickled
        self._config = cfg.without_secrets()
        self._planning: Planning = planning
        self._on_error: OnError = on_error
        self._block_rows = block_rows
        self._min_per_task = min_documents_per_task
        self._shards: dict[int, list[ReadShard]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_driver_config"] = None
        return state

    @property
    def config(self) -> ClientConfig:
        """The configuration the read tasks use (without secrets)."""
        return self._config

    @property
    def plan(self) -> ExportPlan:
        """The validated read options (an export plan: stage, content, filters, ids)."""
        return self._plan

    def get_name(self) -> str:
        return f"KL3M({self._plan.dataset_id}, {self._plan.stage})"

    def schema(self) -> Any:
        """The Arrow schema of the blocks (that of the export package's Parquet parts)."""
        return parquet_schema(self._plan.stage, self._plan.content)

    def estimate_inmemory_data_size(self) -> int | None:
        for shards in self._shards.values():
            sizes = [s.size_bytes for s in shards]
            if sizes and all(s is not None for s in sizes):
                return sum(s for s in sizes if s is not None)
        return None

    def shards(self, parallelism: int) -> list[ReadShard]:
        """The read shards for ``parallelism`` tasks (planned once, on the driver)."""
        parallelism = max(1, int(parallelism))
        if parallelism not in self._shards:
            config = self._driver_config or self._config
            self._shards[parallelism] = _run_async(
                functools.partial(
                    plan_read_shards,
                    config,
                    self._plan,
                    parallelism,
                    planning=self._planning,
                    min_documents_per_task=self._min_per_task,
                )
            )
        return self._shards[parallelism]

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[Any]:
        # the ids travel in their shard, not in the plan of every task
        plan = replace(self._plan, ids=None)
        schema = self.schema()
        tasks = []
        for shard in self.shards(parallelism):
            fn = functools.partial(
                _read_shard, self._config, plan, shard, self._on_error, self._block_rows
            )
            tasks.append(_read_task(fn, shard.size_bytes, schema, per_task_row_limit))
        return tasks


def read_kl3m(
    dataset_id: str,
    *,
    stage: Stage | str = Stage.REPRESENTATIONS,
    key_prefix: str | None = None,
    ids: str | os.PathLike[str] | list[str] | tuple[str, ...] | None = None,
    content: str | None = None,
    mime_types: list[str] | tuple[str, ...] | str | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    max_concurrency: int | None = None,
    planning: Planning = "auto",
    on_error: OnError = "raise",
    config: ClientConfig | None = None,
    parallelism: int = -1,
    concurrency: int | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    **client_kwargs: Any,
) -> Any:
    """A ``ray.data.Dataset`` of the export records of a dataset (one row per document).

    Columns are those of the export package's Parquet parts: ``id``, ``identifier``,
    ``dataset``, ``mime_type``, then ``tokens`` (``list<uint32>``) or ``text``, plus
    ``encoding``, ``blake2b`` and ``metadata`` (JSON) for the documents stage. ``content``
    defaults to ``text`` for the documents stage and ``tokens`` otherwise; ``mime_types``,
    ``min_tokens`` and ``max_tokens`` filter as in the export.

    ``ids`` (a list, or a file with one id per line) reads those documents only;
    otherwise the listing of ``stage``/``dataset_id``/``key_prefix``.
    ``planning`` chooses where read-task boundaries come from: ``"index"`` (the dataset
    index), ``"listing"`` (one listing on the driver) or ``"auto"`` (index if present).
    ``parallelism`` is the number of read tasks (-1: Ray decides, at least
    ``MIN_DOCUMENTS_PER_TASK`` documents per task). As in ``iter_jsonl_export``, a corrupt
    or missing object fails the read with a typed error naming its key (CorruptObjectError,
    NotFoundError); ``on_error="skip"`` logs it on the worker and skips it. Client settings
    come from ``config`` or client keyword arguments; workers never receive secrets (see
    ``docs/scale-out.md``).
    """
    source = KL3MDatasource(
        dataset_id,
        stage=stage,
        key_prefix=key_prefix,
        ids=ids,
        content=content,
        mime_types=mime_types,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        max_concurrency=max_concurrency,
        planning=planning,
        on_error=on_error,
        min_documents_per_task=1 if parallelism > 0 else MIN_DOCUMENTS_PER_TASK,
        config=config,
        **client_kwargs,
    )
    kwargs: dict[str, Any] = {}
    if parallelism > 0:
        params = inspect.signature(ray.data.read_datasource).parameters
        key = "override_num_blocks" if "override_num_blocks" in params else "parallelism"
        kwargs[key] = parallelism
    if concurrency is not None:
        kwargs["concurrency"] = concurrency
    if ray_remote_args:
        kwargs["ray_remote_args"] = ray_remote_args
    return ray.data.read_datasource(source, **kwargs)


# ------------------------------------------------------------------------------ export
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
        k: options.pop(k) for k in list(options) if k in _CLIENT_KWARGS and k != "max_concurrency"
    }
    cfg = _client_config(config, client_kwargs)
    _warn_secrets(cfg)
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
        results: list[dict[str, Any]] = []
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                results.extend(_get_typed(ready))
                if progress is not None:
                    progress(_progress_of(results, start, done=False))
        finally:
            for ref in pending:  # a shard failed, or Ctrl-C: the others stop, resumable
                ray.cancel(ref)
        duration = time.monotonic() - start
        processed = sum(int(r["processed_this_run"]) for r in results)
        report: ExportReport = ray.get(
            step(_merge).remote(dest, duration, processed, bool(resumed))
        )
    if progress is not None:
        progress(_progress_of(results, start, done=True))
    return report
