"""Read shards: a dataset cut into disjoint parts that together cover it, for parallel reads.

Used by the Ray datasource (one read task per shard), but nothing here needs Ray: a
:class:`ReadShard` is a key range ``(start_after, end]`` of the stage listing, or a chunk of
an explicit id list, and :func:`plan_read_shards` decides the boundaries with any
:class:`~kl3m_data_client.export._client_api.ExportClient` it builds. :func:`shard_items`
gives the items of one shard.

(The export's own ``shard=(i, n)`` option is a hash partition, not a key range: see
:func:`kl3m_data_client.export.in_shard`.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from kl3m_data_client._errors import InvalidInputError, KL3MError
from kl3m_data_client._keys import object_key, stage_prefix
from kl3m_data_client._stream import closing
from kl3m_data_client.export._client_api import ClientFactory, ExportClient
from kl3m_data_client.export._items import Item, iter_items
from kl3m_data_client.export._options import ExportPlan, IdSource
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client._config import ClientConfig

__all__ = [
    "MIN_DOCUMENTS_PER_TASK",
    "Planning",
    "ReadShard",
    "Sampler",
    "plan_read_shards",
    "shard_items",
    "task_count",
]

logger = logging.getLogger("kl3m_data_client.ray")

#: Where read-shard boundaries come from: the dataset index, one listing, or the index if
#: the dataset has one.
Planning = Literal["auto", "index", "listing"]

#: With automatic parallelism, a read shard gets at least this many documents.
MIN_DOCUMENTS_PER_TASK = 1000


@dataclass(frozen=True)
class ReadShard:
    """One read task: keys in ``(start_after, end]`` of the listing, or explicit ids."""

    start_after: str | None = None
    end: str | None = None
    ids: tuple[str, ...] | None = None
    #: Estimated bytes (object sizes from the listing), or None.
    size_bytes: int | None = None


class Sampler:
    """Keeps every ``step``-th key of a stream (at most ``2 * target``, ``step`` doubling).

    Memory stays O(target) however long the stream; :meth:`ranges` then cuts the stream into
    contiguous ranges of about equal key counts.
    """

    def __init__(self, target: int) -> None:
        self.limit = 2 * max(1, target)
        self.step = 1
        self.samples: list[str] = []
        self.count = 0
        self.bytes = 0

    def add(self, key: str, size: int = 0) -> None:
        """Count one key (in listing order) of ``size`` bytes."""
        self.count += 1
        self.bytes += size
        if self.count % self.step == 0:
            self.samples.append(key)
            if len(self.samples) >= self.limit:
                self.samples = self.samples[1::2]
                self.step *= 2

    def ranges(self, tasks: int, size_known: bool) -> list[ReadShard]:
        """``tasks`` contiguous ranges of about ``count / tasks`` keys each (fewer when
        boundaries coincide); the first starts at the beginning, the last is open-ended."""
        bounds: list[str] = []
        for j in range(1, tasks):
            index = (j * self.count // tasks) // self.step - 1
            if index >= 0 and (not bounds or self.samples[index] > bounds[-1]):
                bounds.append(self.samples[index])
        size = self.bytes // (len(bounds) + 1) if size_known else None
        starts: list[str | None] = [None, *bounds]
        ends: list[str | None] = [*bounds, None]
        return [ReadShard(a, b, size_bytes=size) for a, b in zip(starts, ends, strict=True)]


def task_count(documents: int, parallelism: int, min_per_task: int) -> int:
    """How many shards for ``documents``: at most ``parallelism``, each at least
    ``min_per_task`` documents (at least one shard)."""
    return max(1, min(parallelism, math.ceil(documents / max(1, min_per_task))))


async def _index_keys(client: ExportClient, plan: ExportPlan, required: bool) -> list[str] | None:
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


def _id_chunks(ids: list[str], parallelism: int, min_per_task: int) -> list[ReadShard]:
    n = task_count(len(ids), parallelism, min_per_task)
    cuts = [len(ids) * j // n for j in range(n + 1)]
    return [ReadShard(ids=tuple(ids[cuts[j] : cuts[j + 1]])) for j in range(n)]


async def plan_read_shards(
    config: ClientConfig,
    plan: ExportPlan,
    parallelism: int,
    *,
    client_factory: ClientFactory,
    planning: Planning = "auto",
    min_documents_per_task: int = MIN_DOCUMENTS_PER_TASK,
) -> list[ReadShard]:
    """Split a read into at most ``parallelism`` disjoint shards whose union is everything.

    Explicit ids are cut into contiguous chunks (no request). Otherwise the key space of the
    stage prefix is cut into ranges ``(start_after, end]``: the first starts at the
    beginning and the last is open-ended, so keys missing from the index (or added after
    it) are still read once. The boundaries come from the dataset index (one GET) when
    ``planning`` allows and it exists, else from one listing of the prefix, keeping
    O(parallelism) keys in memory. A client, ``client_factory(config=config)``, is opened
    only when a request is needed.
    """
    if plan.ids is not None:
        return _id_chunks(list(plan.ids), parallelism, min_documents_per_task)
    if parallelism <= 1 and planning != "index":
        return [ReadShard()]
    async with client_factory(config=config) as client:
        if planning in ("auto", "index"):
            keys = await _index_keys(client, plan, required=planning == "index")
            if keys is not None:
                sampler = Sampler(len(keys))
                for key in keys:
                    sampler.add(key)
                tasks = task_count(len(keys), parallelism, min_documents_per_task)
                return sampler.ranges(tasks, size_known=False)
        sampler = Sampler(parallelism)
        prefix = stage_prefix(Stage(plan.stage), plan.dataset_id, plan.key_prefix)
        async with closing(client.iter_objects(prefix)) as infos:
            async for info in infos:
                sampler.add(info.key, info.size or 0)
    tasks = task_count(sampler.count, parallelism, min_documents_per_task)
    return sampler.ranges(tasks, size_known=True)


async def shard_items(
    client: ExportClient, plan: ExportPlan, shard: ReadShard
) -> AsyncIterator[Item]:
    """The items of one read shard, in listing order (or the order of its ids)."""
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
