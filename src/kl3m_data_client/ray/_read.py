"""The body of a Ray read task: the export records of one read shard, as Arrow tables.

Runs on a Ray worker with its own event loop thread (:func:`~kl3m_data_client._bridge.
iterate_sync`) and its own :class:`AsyncKL3MClient`, built from a configuration without
secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from kl3m_data_client._bridge import iterate_sync
from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._stream import closing
from kl3m_data_client.export._items import Outcome, iter_outcomes
from kl3m_data_client.export._options import ExportPlan
from kl3m_data_client.export._records import Record
from kl3m_data_client.export._shards import ReadShard, shard_items
from kl3m_data_client.export._writers import parquet_schema, records_to_table
from kl3m_data_client.ray._common import OnError, logger

#: Records per Arrow block yielded by a read task.
BLOCK_ROWS = 1024


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
        outcomes = iter_outcomes(client, plan, items=shard_items(client, plan, shard))
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


def read_shard(
    config: ClientConfig, plan: ExportPlan, shard: ReadShard, on_error: OnError, block_rows: int
) -> Iterator[Any]:
    """A read task's body (runs on a Ray worker): its own event loop thread and client."""

    def make() -> AsyncIterator[Any]:
        return iter_shard_blocks(config, plan, shard, on_error=on_error, block_rows=block_rows)

    return iterate_sync(make, buffer=2, name="kl3m-ray-read")
