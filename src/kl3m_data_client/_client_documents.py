"""The document half of :class:`~kl3m_data_client.AsyncKL3MClient`: GET and decode one
object, one document, or many concurrently within the memory budget."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

from kl3m_data_client._budget import Budget, Lease, budgeted_get, budgeted_map, released_in_turn
from kl3m_data_client._client_listing import ListingClient
from kl3m_data_client._document import AsyncDocument
from kl3m_data_client._errors import InvalidInputError, NotFoundError
from kl3m_data_client._formats import StageContent, decode_stage_object
from kl3m_data_client._keys import (
    legacy_id,
    object_key,
    validate_dataset_id,
    validate_document_id,
)
from kl3m_data_client._stream import aclose, aiter_items, closing
from kl3m_data_client.models.common import DATA_STAGES, Stage


class DocumentsClient(ListingClient):
    """Document calls of the async client (its base class; not used alone)."""

    async def fetch_content(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> StageContent | None:
        """GET and decode one document's object in ``stage``; None if it does not exist."""
        found = await self._fetch(dataset_id, document_id, Stage.coerce(stage))
        return None if found is None else found[1]

    async def get_object_bytes(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> bytes | None:
        """A document's object in ``stage`` exactly as stored, or None if it does not exist."""
        found = await self._get_raw(dataset_id, document_id, Stage.coerce(stage))
        return None if found is None else found[2]

    async def _get_raw(
        self,
        dataset_id: str,
        document_id: str,
        stage: Stage,
        lease: Lease | None = None,
        size: int | None = None,
    ) -> tuple[str, str, bytes] | None:
        """GET (id, key, bytes); an id ending in ``.json`` that is not found is tried without.

        With a ``lease``, the body is reserved (``size``, the listed size, if known) before
        the GET and the reservation set to the real size after it.
        """
        document_id = validate_document_id(document_id)
        key = object_key(stage, dataset_id, document_id)
        if lease is not None:
            await lease.reserve_body(size)
        data = await budgeted_get(self._store, key, lease)
        if data is None:
            alternative = legacy_id(document_id)
            if alternative is None:
                return None
            document_id, key = alternative, object_key(stage, dataset_id, alternative)
            data = await budgeted_get(self._store, key, lease)
            if data is None:
                return None
        if lease is not None:
            await lease.body_read(len(data))
        return document_id, key, data

    async def _fetch(
        self,
        dataset_id: str,
        document_id: str,
        stage: Stage,
        lease: Lease | None = None,
        size: int | None = None,
    ) -> tuple[str, StageContent] | None:
        """GET and decode one document's object (charged to ``lease`` when given)."""
        found = await self._get_raw(dataset_id, document_id, stage, lease, size)
        if found is None:
            return None
        document_id, key, data = found
        content: StageContent = await self._decode(
            len(data),
            decode_stage_object,
            stage.value,
            key,
            document_id,
            data,
            self.config.limits,
            lease=lease,
        )
        return document_id, content

    async def _budgeted_document(
        self,
        dataset_id: str,
        document_id: str,
        stage: Stage,
        lease: Lease | None,
        size: int | None,
    ) -> AsyncDocument | None:
        """:meth:`get_document`, charged to ``lease`` when given (the concurrent fetches)."""
        found = await self._fetch(dataset_id, document_id, stage, lease, size)
        if found is None:
            return None
        found_id, content = found
        return AsyncDocument(self, dataset_id, found_id, stage, {stage: content})

    async def get_document(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> AsyncDocument | None:
        """The document with its ``stage`` content loaded, or None if absent.

        One GET. An id ending in ``.json`` that is not found as given is tried once more
        without the suffix (a second GET); the document found then has the shorter id.
        """
        stage = Stage.coerce(stage)
        return await self._budgeted_document(
            validate_dataset_id(dataset_id), document_id, stage, None, None
        )

    async def exists(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> bool:
        """True if the document has an object in ``stage`` (a HEAD request)."""
        stage = Stage.coerce(stage)
        return await self._store.head(object_key(stage, dataset_id, document_id)) is not None

    def stream_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        *,
        key_prefix: str | None = None,
        document_ids: Iterable[str] | AsyncIterable[str] | None = None,
        limit: int | None = None,
        skip_missing: bool = True,
    ) -> AsyncIterator[AsyncDocument]:
        """Fetch and decode documents concurrently, yielding them in listing (or given) order.

        At most ``max_concurrency`` requests are in flight and at most twice that many
        documents are held, however slow the consumer; their bytes (bodies, decoded content)
        stay within ``memory_budget`` (a document counts until you ask for the next one; one
        larger than the budget is fetched alone). Ids in ``document_ids`` that do not
        exist are skipped (or raise NotFoundError with ``skip_missing=False``); a corrupt
        object raises CorruptObjectError naming its key.
        """
        stage = Stage.coerce(stage)
        validate_dataset_id(dataset_id)
        if stage not in DATA_STAGES:
            raise InvalidInputError(f"stage {stage.value!r} holds no documents")
        if limit is not None and limit < 0:
            raise InvalidInputError(f"limit must be >= 0, got {limit}")
        ids: AsyncIterable[tuple[str, int | None]]
        if document_ids is None:
            ids = self._listed(dataset_id, stage, key_prefix, limit)
        else:
            ids = _unsized(_limited(document_ids, limit))

        async def fetch(pair: tuple[str, int | None], lease: Lease) -> AsyncDocument | None:
            doc_id, size = pair
            document = await self._budgeted_document(dataset_id, doc_id, stage, lease, size)
            if document is None:
                if not skip_missing:
                    key = object_key(stage, dataset_id, doc_id)
                    raise NotFoundError(f"document {key!r} not found", key=key)
                return None
            return document

        budget = Budget(self.config.memory_budget)
        fetched = budgeted_map(ids, fetch, window=2 * self.config.max_concurrency, budget=budget)
        return _present(released_in_turn(fetched))

    async def get_documents(
        self,
        dataset_id: str,
        document_ids: Iterable[str],
        stage: Stage | str = Stage.DOCUMENTS,
    ) -> dict[str, AsyncDocument | None]:
        """Fetch many documents concurrently: ``{id: document or None}`` in the given order.

        The result holds every document; ``memory_budget`` bounds what is in flight besides.
        """
        stage = Stage.coerce(stage)
        ids = list(dict.fromkeys(document_ids))
        for doc_id in ids:
            validate_document_id(doc_id)
        validate_dataset_id(dataset_id)
        results: dict[str, AsyncDocument | None] = {}

        async def fetch(doc_id: str, lease: Lease) -> tuple[str, AsyncDocument | None]:
            return doc_id, await self._budgeted_document(dataset_id, doc_id, stage, lease, None)

        budget = Budget(self.config.memory_budget)
        window = 2 * self.config.max_concurrency
        async with closing(budgeted_map(ids, fetch, window=window, budget=budget)) as fetched:
            async for lease, (doc_id, doc) in fetched:
                results[doc_id] = doc
                lease.release()
        return results


async def _limited(
    items: Iterable[str] | AsyncIterable[str], limit: int | None
) -> AsyncIterator[str]:
    source = aiter_items(items)
    try:
        count = 0
        if limit is not None and limit <= 0:
            return
        async for item in source:
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        await aclose(source)


async def _unsized(items: AsyncIterator[str]) -> AsyncIterator[tuple[str, int | None]]:
    async with closing(items) as source:
        async for item in source:
            yield item, None


async def _present(items: AsyncIterator[AsyncDocument | None]) -> AsyncIterator[AsyncDocument]:
    try:
        async for item in items:
            if item is not None:
                yield item
    finally:
        await aclose(items)
