"""AsyncKL3MClient: the asyncio-native client. The only place that combines I/O and decoding."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from kl3m_data_client._budget import Budget, Lease, budgeted_get, budgeted_map, released_in_turn
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._document import AsyncDocument
from kl3m_data_client._errors import ClientClosedError, InvalidInputError
from kl3m_data_client._formats import (
    Limits,
    StageContent,
    decode_index,
    decode_stage_object,
)
from kl3m_data_client._keys import (
    document_id_from_key,
    index_key,
    legacy_id,
    object_key,
    stage_prefix,
    validate_dataset_id,
    validate_document_id,
)
from kl3m_data_client._stream import (
    AwaitableIterator,
    aclose,
    aiter_items,
    closing,
)
from kl3m_data_client.models.common import DATA_STAGES, DatasetStatus, Stage
from kl3m_data_client.models.stage import DatasetIndex

if TYPE_CHECKING:
    from kl3m_data_client._store import ObjectInfo, S3Store
    from kl3m_data_client.export import ExportReport

logger = logging.getLogger("kl3m_data_client")

#: Objects up to this size are decoded on the event loop; larger ones in a worker thread.
INLINE_DECODE_BYTES = 256 * 1024


class AsyncKL3MClient:
    """Asyncio client for the KL3M bucket.

    Use ``async with AsyncKL3MClient() as client:`` or call :meth:`aclose` when done. The
    S3 client is created on first use, on the running event loop. Credentials come from the
    arguments or from botocore's chain (environment, ~/.aws files, profiles, SSO, assume-role,
    container and instance roles); ``anonymous=True`` sends unsigned requests.
    """

    def __init__(
        self,
        bucket: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        *,
        bucket_name: str | None = None,
        region_name: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        anonymous: bool = False,
        requester_pays: bool = False,
        max_concurrency: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry_mode: str = "standard",
        max_attempts: int = 5,
        object_deadline: float | None = None,
        verify: bool | str | None = None,
        limits: Limits | None = None,
        memory_budget: int | str | None = None,
        verbose: bool = False,
        data_plane: Literal["auto", "obstore", "aiobotocore"] = "auto",
        session: Any = None,
        config: ClientConfig | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "bucket": bucket,
            "bucket_name": bucket_name,
            "region": region,
            "region_name": region_name,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "profile": profile,
            "endpoint_url": endpoint_url,
            "anonymous": anonymous,
            "requester_pays": requester_pays,
            "max_concurrency": max_concurrency,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retry_mode": retry_mode,
            "max_attempts": max_attempts,
            "object_deadline": object_deadline,
            "verify": verify,
            "limits": limits,
            "memory_budget": memory_budget,
            "verbose": verbose,
            "data_plane": data_plane,
        }
        if config is None:
            config = ClientConfig.from_kwargs(**options)
        else:
            defaults = inspect.signature(AsyncKL3MClient.__init__).parameters
            refuse_options_with_config(
                [name for name, value in options.items() if value != defaults[name].default]
            )
        self.config = config
        self._session = session
        self._store: S3Store | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    @property
    def store(self) -> S3Store:
        """The S3 seam (created on first use; aiobotocore is imported here, not before)."""
        if self._store is None:
            if self._closed:
                raise ClientClosedError("the client is closed")
            from kl3m_data_client._store import S3Store

            self._store = S3Store(self.config, self._session)
        return self._store

    async def __aenter__(self) -> AsyncKL3MClient:
        await self.store.client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the S3 client and its connections; the client cannot be used afterwards."""
        self._closed = True
        if self._store is not None:
            await self._store.aclose()

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    def __repr__(self) -> str:
        endpoint = (
            f", endpoint_url={self.config.endpoint_url!r}" if self.config.endpoint_url else ""
        )
        return f"AsyncKL3MClient(bucket={self.bucket!r}{endpoint})"

    def _log(self, message: str, *args: object) -> None:
        logger.log(logging.INFO if self.config.verbose else logging.DEBUG, message, *args)

    # -- listing ---------------------------------------------------------------------------
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
        async with closing(self.store.list_pages(prefix, start_after=start_after)) as pages:
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
        async for page in self.store.list_pages(stage_prefix(stage), delimiter="/"):
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
        async with closing(self.store.list_pages(prefix)) as pages:
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
                self.store.list_pages(stage_prefix(stage, dataset_id, key_prefix), page_size=1)
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
        key = index_key(dataset_id, key_prefix)
        data = await self.store.get(key)
        if data is None:
            return None
        index: DatasetIndex = await self._decode(
            len(data), decode_index, key, data, dataset_id, self.config.limits
        )
        return index

    # -- documents -------------------------------------------------------------------------
    async def _decode(self, size: int, fn: Any, *args: Any, lease: Lease | None = None) -> Any:
        """``fn(*args)`` here for small objects, else in a thread; charged to ``lease``."""
        inline = size <= INLINE_DECODE_BYTES
        if lease is not None:
            return await lease.run(inline, fn, *args)
        if inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

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
        data = await budgeted_get(self.store, key, lease)
        if data is None:
            alternative = legacy_id(document_id)
            if alternative is None:
                return None
            document_id, key = alternative, object_key(stage, dataset_id, alternative)
            data = await budgeted_get(self.store, key, lease)
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
        self, dataset_id: str, document_id: str, stage: Stage, lease: Lease, size: int | None
    ) -> AsyncDocument | None:
        """:meth:`get_document` charged to ``lease`` (for the concurrent fetches)."""
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
        found = await self._fetch(validate_dataset_id(dataset_id), document_id, stage)
        if found is None:
            return None
        found_id, content = found
        return AsyncDocument(self, dataset_id, found_id, stage, {stage: content})

    async def exists(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> bool:
        """True if the document has an object in ``stage`` (a HEAD request)."""
        stage = Stage.coerce(stage)
        return await self.store.head(object_key(stage, dataset_id, document_id)) is not None

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
                    from kl3m_data_client._errors import NotFoundError

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

    # -- export ----------------------------------------------------------------------------
    def iter_jsonl_export(
        self,
        dataset_id: str,
        source_stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        max_documents: int | None = None,
        **options: Any,
    ) -> AwaitableIterator[dict[str, Any]]:
        """Stream export records (``id``, ``identifier``, ``dataset``, ``mime_type``,
        ``tokens`` or ``text``) in listing order (or ``await`` it for the list); see
        :mod:`kl3m_data_client.export`."""
        from kl3m_data_client.export import iter_export_records

        records = iter_export_records(
            self, dataset_id, source_stage, key_prefix, max_documents, **options
        )
        return AwaitableIterator(records)

    async def export(
        self, dataset_id: str, destination: str | os.PathLike[str], **options: Any
    ) -> ExportReport:
        """Export a dataset to JSONL or Parquet parts in ``destination`` (resumable);
        see :func:`kl3m_data_client.export.export` and ``docs/export.md``."""
        from kl3m_data_client.export import export

        return await export(self, dataset_id, destination, **options)


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


__all__ = ["AsyncKL3MClient"]


def refuse_options_with_config(given: list[str]) -> None:
    """``config=`` carries every setting: options given beside it would be silently lost."""
    if given:
        raise InvalidInputError(
            f"pass either config= or client options, not both (got {', '.join(sorted(given))}); "
            "use config.with_options(...) to change settings of a config"
        )
