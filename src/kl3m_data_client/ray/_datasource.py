"""The Ray Data datasource of KL3M export records, and :func:`read_kl3m`.

Planning happens once on the driver (:func:`plan_read_shards`, with the driver's own
credentials if given); each read task is :func:`~kl3m_data_client.ray._read.read_shard`
of one shard, pickled without secrets.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from kl3m_data_client._bridge import run_sync
from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client.export import _shards
from kl3m_data_client.export._options import ExportPlan, make_plan
from kl3m_data_client.export._shards import MIN_DOCUMENTS_PER_TASK, Planning, ReadShard
from kl3m_data_client.export._writers import parquet_schema
from kl3m_data_client.models.common import Stage
from kl3m_data_client.ray._common import OnError, client_config, warn_secrets
from kl3m_data_client.ray._read import BLOCK_ROWS, read_shard


async def plan_read_shards(
    config: ClientConfig,
    plan: ExportPlan,
    parallelism: int,
    *,
    planning: Planning = "auto",
    min_documents_per_task: int = MIN_DOCUMENTS_PER_TASK,
) -> list[ReadShard]:
    """The read shards of ``plan`` (:func:`kl3m_data_client.export._shards.plan_read_shards`
    with an :class:`AsyncKL3MClient` of ``config``)."""
    return await _shards.plan_read_shards(
        config,
        plan,
        parallelism,
        client_factory=AsyncKL3MClient,
        planning=planning,
        min_documents_per_task=min_documents_per_task,
    )


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
        cfg = client_config(config, client_kwargs)
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
        warn_secrets(cfg)
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
            self._shards[parallelism] = run_sync(
                functools.partial(
                    plan_read_shards,
                    config,
                    self._plan,
                    parallelism,
                    planning=self._planning,
                    min_documents_per_task=self._min_per_task,
                ),
                name="kl3m-ray-plan",
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
                read_shard, self._config, plan, shard, self._on_error, self._block_rows
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
