"""The listing half of :class:`~kl3m_data_client.AsyncKL3MClient`: objects, keys, datasets,
dataset status and index, document ids (unsafe listed ids skipped with a warning)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from kl3m_data_client._budget import NeedRoom
from kl3m_data_client._client_base import ClientBase, logger
from kl3m_data_client._errors import InvalidInputError, SizeLimitExceededError
from kl3m_data_client._formats import decode_index
from kl3m_data_client._keys import (
    document_id_from_key,
    index_key,
    stage_prefix,
    validate_document_id,
)
from kl3m_data_client._stream import AwaitableIterator, closing
from kl3m_data_client.models.common import DATA_STAGES, DatasetStatus, Stage
from kl3m_data_client.models.stage import DatasetIndex

if TYPE_CHECKING:
    from kl3m_data_client._store import ObjectInfo


class ListingClient(ClientBase):
    """Listing calls of the async client (its base class; not used alone)."""

    def iter_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> AwaitableIterator[ObjectInfo]:
        """Stream the objects under ``prefix`` (key, size, etag, last modified), page by page.

        Like every ``iter_*`` method, the result is an async iterator that can also be
        awaited for the whole list (``infos = await client.iter_objects(prefix)``).
        """
        return AwaitableIterator(self._iter_objects(prefix, start_after))

    async def _iter_objects(
        self, prefix: str, start_after: str | None
    ) -> AsyncIterator[ObjectInfo]:
        async with closing(self._store.list_pages(prefix, start_after=start_after)) as pages:
            async for page in pages:
                for info in page.objects:
                    yield info

    def iter_prefix(self, prefix: str) -> AwaitableIterator[str]:
        """Stream the keys under ``prefix`` (or ``await`` it for the list)."""
        return AwaitableIterator(self._iter_prefix(prefix))

    async def _iter_prefix(self, prefix: str) -> AsyncIterator[str]:
        async with closing(self._iter_objects(prefix, None)) as infos:
            async for info in infos:
                yield info.key

    async def _list_dataset_ids(self, stage: Stage) -> list[str]:
        ids: list[str] = []
        async for page in self._store.list_pages(stage_prefix(stage), delimiter="/"):
            ids.extend(p[len(stage.value) + 1 :].rstrip("/") for p in page.prefixes)
        return ids

    async def list_datasets(self) -> dict[str, dict[Stage, bool]]:
        """Every dataset id, with whether it has objects in each data stage."""
        found = await asyncio.gather(*(self._list_dataset_ids(s) for s in DATA_STAGES))
        names = sorted(set().union(*found))
        return {
            name: {stage: name in ids for stage, ids in zip(DATA_STAGES, found, strict=True)}
            for name in names
        }

    async def _count(
        self, stage: Stage, prefix: str, progress: Callable[[Stage, int], None] | None
    ) -> int:
        count = 0
        async with closing(self._store.list_pages(prefix)) as pages:
            async for page in pages:
                count += len(page.objects)
                if progress is not None:
                    progress(stage, count)
        self._log("counted %d objects under %s", count, prefix)
        return count

    async def get_dataset_status(
        self,
        dataset_id: str,
        key_prefix: str | None = None,
        *,
        progress: Callable[[Stage, int], None] | None = None,
    ) -> DatasetStatus:
        """Object counts of a dataset in the three stages (listed concurrently).

        ``progress(stage, count_so_far)`` is called after every listing page.
        """
        counts = await asyncio.gather(
            *(
                self._count(s, stage_prefix(s, dataset_id, key_prefix), progress)
                for s in DATA_STAGES
            )
        )
        return DatasetStatus.from_counts(dataset_id, *counts)

    async def has_dataset(self, dataset_id: str, key_prefix: str | None = None) -> bool:
        """True if the dataset (or its key prefix) has an object in any data stage."""
        for stage in DATA_STAGES:
            async with closing(
                self._store.list_pages(stage_prefix(stage, dataset_id, key_prefix), page_size=1)
            ) as pages:
                async for page in pages:
                    if page.objects:
                        return True
                    break
        return False

    def iter_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        limit: int | None = None,
        *,
        start_after: str | None = None,
    ) -> AwaitableIterator[str]:
        """Stream the document ids of a dataset in ``stage`` (listing order).

        ``async for doc_id in client.iter_documents(...)`` streams them;
        ``ids = await client.iter_documents(...)`` gives the list. A listed key whose id is
        unsafe (``..`` or empty segments, a leading ``/``, NUL or control characters) is
        logged as a WARNING on the ``kl3m_data_client`` logger and skipped.
        """
        return AwaitableIterator(
            self._iter_documents(dataset_id, stage, key_prefix, limit, start_after)
        )

    async def _iter_documents(
        self,
        dataset_id: str,
        stage: Stage | str,
        key_prefix: str | None,
        limit: int | None,
        start_after: str | None,
    ) -> AsyncIterator[str]:
        stage = Stage.coerce(stage)
        if stage not in DATA_STAGES:
            raise InvalidInputError(f"stage {stage.value!r} holds no documents")
        if limit is not None and limit < 0:
            raise InvalidInputError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return
        listed = self._listed(dataset_id, stage, key_prefix, limit, start_after=start_after)
        async with closing(listed) as pairs:
            async for doc_id, _ in pairs:
                yield doc_id

    async def _listed(
        self,
        dataset_id: str,
        stage: Stage,
        key_prefix: str | None,
        limit: int | None,
        *,
        start_after: str | None = None,
    ) -> AsyncIterator[tuple[str, int]]:
        """``(document id, listed size)`` of a dataset's objects in ``stage``, listing order."""
        if limit == 0:
            return
        prefix = stage_prefix(stage, dataset_id, key_prefix)
        count = 0
        async with closing(self._iter_objects(prefix, start_after)) as infos:
            async for info in infos:
                doc_id = document_id_from_key(info.key, dataset_id)
                if not doc_id:
                    continue
                try:
                    validate_document_id(doc_id)
                except InvalidInputError as exc:
                    logger.warning("skipping listed key %r: unsafe document id (%s)", info.key, exc)
                    continue
                yield doc_id, info.size
                count += 1
                if limit is not None and count >= limit:
                    return

    async def list_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """All document ids of a dataset (loads them in memory; prefer :meth:`iter_documents`)."""
        return await self.iter_documents(dataset_id, stage, key_prefix, limit)

    async def get_dataset_index(
        self, dataset_id: str, key_prefix: str | None = None
    ) -> DatasetIndex | None:
        """The dataset's index object (gzip or plain JSON), or None if it has none."""
        return await self._dataset_index(dataset_id, key_prefix)

    async def _dataset_index(
        self, dataset_id: str, key_prefix: str | None = None, *, max_bytes: int | None = None
    ) -> DatasetIndex | None:
        """:meth:`get_dataset_index`; with ``max_bytes``, also None for an index larger than
        that, stored or inflated (its body is closed unread when its length says so)."""
        key = index_key(dataset_id, key_prefix)
        limits = self.config.limits
        if max_bytes is None:
            data = await self._store.get(key)
        else:
            limits = replace(limits, max_inflated_bytes=min(limits.max_inflated_bytes, max_bytes))
            try:
                data = await self._store.get(key, admit=lambda size: size <= max_bytes)
            except NeedRoom:
                return None
            if data is not None and len(data) > max_bytes:  # a body without a length
                return None
        if data is None:
            return None
        try:
            index: DatasetIndex = await self._decode(
                len(data), decode_index, key, data, dataset_id, limits
            )
        except SizeLimitExceededError:
            if max_bytes is None:
                raise
            return None
        return index
