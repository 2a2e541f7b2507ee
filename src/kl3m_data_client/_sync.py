"""KL3MClient: the blocking API. It runs the async core on a background event loop and
forwards every call to it. The S3 and decoding logic is the core's; what lives here is the
thread hop: the loop thread's lifetime (kept alive by iterators that outlive their client,
abandoned after ``fork()``, closed at exit), options taken from a 0.2.0 ``s3_client``, and
0.2.0's ``Document`` handle (iterator batching and callback relays are in ``_bridge``)."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager, contextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from kl3m_data_client._client import AsyncKL3MClient, refuse_options_with_config
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._document import AsyncDocument, DocumentBase
from kl3m_data_client._errors import ClientClosedError
from kl3m_data_client._formats import StageContent
from kl3m_data_client.models.common import DatasetStatus, Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    ParquetContent,
    RepresentationContent,
    RepresentationList,
)
from kl3m_data_client.models.stage import DatasetIndex

if TYPE_CHECKING:
    from kl3m_data_client.export import ExportReport

T = TypeVar("T")

# Runners inherited through fork() cannot be closed in the child (their loop thread does not
# exist there); they are kept referenced so that no finalizer touches them.
_ORPHANS: list[object] = []
#: Loop runners not closed yet; the ones still running at interpreter exit are closed then.
_LIVE: weakref.WeakSet[_Runner] = weakref.WeakSet()


class _Runner:
    """An event loop on a daemon thread (anyio's blocking portal) and the async client on it.

    Iterators of the blocking client hold it ``in_use``; a client that is garbage collected
    (:meth:`abandon`) stops the loop only once no iterator uses it any more.
    """

    def __init__(self, config: ClientConfig, session: Any, s3_client: Any = None) -> None:
        from anyio.from_thread import start_blocking_portal

        self.pid = os.getpid()
        self._cm: AbstractContextManager[Any] = start_blocking_portal(
            "asyncio", name="kl3m-data-client"
        )
        self.portal = self._cm.__enter__()
        self.loop_thread: int = self.portal.call(threading.get_ident)
        self.client = AsyncKL3MClient(config=config, session=session)
        if s3_client is not None:  # a caller's boto3 client: used as it is (_boto3_store)
            from kl3m_data_client._boto3_store import Boto3Store

            # the client sends its requests through the caller's blocking client
            self.client._store = Boto3Store(self.client.config, s3_client)
        self.closed = False
        self._lock = threading.Lock()
        self._users = 0
        self._abandoned = False
        _LIVE.add(self)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by a running iterator: an abandoned client's loop outlives it."""
        with self._lock:
            if self.closed:
                raise ClientClosedError("the client is closed")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                last = self._abandoned and self._users == 0
            if last:
                self.close()

    def abandon(self) -> None:
        """The client was garbage collected: close now, or when its last iterator ends."""
        with self._lock:
            self._abandoned = True
            if self._users:
                return
        self.close()

    def close(self) -> None:
        """Close the async client and stop the loop thread (idempotent; not after fork)."""
        if self.closed or self.pid != os.getpid():
            return
        if threading.get_ident() == self.loop_thread:
            # a garbage collection on the loop thread itself: it cannot stop its own loop
            threading.Thread(target=self.close, name="kl3m-data-client-close").start()
            return
        with self._lock:
            if self.closed or self.pid != os.getpid():
                return
            self.closed = True
        _LIVE.discard(self)
        try:
            self.portal.call(self.client.aclose)
        finally:
            # cancel what still runs (an iterator's producer blocked on a full buffer would
            # otherwise keep the loop, and this call, waiting forever)
            with suppress(RuntimeError):
                self.portal.call(self.portal.stop, True)
            self._cm.__exit__(None, None, None)


@atexit.register
def _close_at_exit() -> None:
    """Stop every loop thread still running (forgotten clients, iterators left open)."""
    for runner in list(_LIVE):
        runner.close()


class KL3MClient:
    """Blocking client for the KL3M bucket, with the API of the reference ``KL3MClient``.

    Every call runs on the :class:`AsyncKL3MClient` of a private event loop thread, so it
    works inside Jupyter and other running loops, from many threads and after ``fork()``.
    Use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        bucket: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        s3_client: Any = None,
        verbose: bool = False,
        **options: Any,
    ) -> None:
        session = options.pop("session", None)
        config = options.pop("config", None)
        blocking = False
        if s3_client is not None:
            from kl3m_data_client._boto3_store import is_blocking_client

            blocking = is_blocking_client(s3_client)
        if config is None:
            given: dict[str, Any] = {
                "region": region,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
                **options,
            }
            if s3_client is not None:  # lend what the caller did not give explicitly
                # a boto3 client signs its own requests: no frozen copy of its credentials
                lent = _options_from_boto_client(s3_client, credentials=not blocking)
                if aws_access_key_id or options.get("anonymous"):
                    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                        lent.pop(name, None)
                    lent.pop("anonymous", None)
                given = {**lent, **{k: v for k, v in given.items() if v is not None}}
            config = ClientConfig.from_kwargs(bucket=bucket, verbose=verbose, **given)
        else:
            explicit = {
                "bucket": bucket,
                "region": region,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
            }
            refuse_options_with_config(
                [n for n, v in explicit.items() if v is not None]
                + (["verbose"] if verbose else [])
                + list(options)
            )
        self.config: ClientConfig = config
        self._session = session
        self._user_s3_client = s3_client
        self._boto3_client: Any = s3_client if blocking else None
        self._sync_s3_client: Any = None
        self._runner: _Runner | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    def _get_runner(self) -> _Runner:
        runner = self._runner
        if runner is not None and runner.pid == os.getpid():
            return runner
        with self._lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            runner = self._runner
            if runner is None or runner.pid != os.getpid():
                if runner is not None:  # inherited through fork(): abandon, never touch
                    _ORPHANS.append(runner)
                    if self._finalizer is not None:
                        self._finalizer.detach()
                runner = _Runner(
                    self.config, self._session if runner is None else None, self._boto3_client
                )
                self._runner = runner
                self._finalizer = weakref.finalize(self, runner.abandon)
                self._finalizer.atexit = False  # _close_at_exit closes it, in use or not
        return runner

    @property
    def async_client(self) -> AsyncKL3MClient:
        """The :class:`AsyncKL3MClient` this client forwards to."""
        return self._get_runner().client

    def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        runner = self._get_runner()
        try:
            result: T = runner.portal.call(lambda: fn(*args, **kwargs))
        except (RuntimeError, CancelledError):
            if runner.closed:  # close() from another thread stopped the loop under this call
                raise ClientClosedError("the client was closed during the call") from None
            raise
        return result

    def _iterate(
        self, make: Callable[[AsyncKL3MClient], AsyncIterator[Any]], buffer: int = 1024
    ) -> Iterator[Any]:
        """Drive an async iterator of the core from this thread, a batch per thread hop.

        The iterator keeps this client (and its loop) alive until it is exhausted or closed,
        so ``list(KL3MClient().iter_documents(...))`` works.
        """
        from kl3m_data_client._bridge import iterate_in_portal

        runner = self._get_runner()
        return iterate_in_portal(runner, lambda: make(runner.client), buffer, owner=self)

    def _call_relaying(
        self,
        make: Callable[[Callable[[Any], None]], Coroutine[Any, Any, T]],
        callback: Callable[[Any], Any],
    ) -> T:
        """Run ``make(relay)`` on the loop; ``callback`` runs in this thread (see _bridge)."""
        from kl3m_data_client._bridge import call_relaying

        return call_relaying(self._get_runner().portal, make, callback)

    def close(self) -> None:
        """Close the connections and stop the event loop thread."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if runner is not None:
            runner.close()
        if self._sync_s3_client is not None:
            self._sync_s3_client.close()
            self._sync_s3_client = None

    def __enter__(self) -> KL3MClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        endpoint = (
            f", endpoint_url={self.config.endpoint_url!r}" if self.config.endpoint_url else ""
        )
        return f"KL3MClient(bucket={self.bucket!r}{endpoint})"

    @property
    def s3_client(self) -> Any:
        """A blocking botocore S3 client for ``kl3m_data_client.utils.s3`` helpers."""
        if self._user_s3_client is not None:
            return self._user_s3_client
        if self._sync_s3_client is None:
            from kl3m_data_client._boto3_store import client_from_config

            self._sync_s3_client = client_from_config(self.config)
        return self._sync_s3_client

    # -- forwarding ------------------------------------------------------------------------
    def list_datasets(self) -> dict[str, dict[Stage, bool]]:
        """Every dataset id, with whether it has objects in each data stage."""
        return self._call(AsyncKL3MClient.list_datasets, self.async_client)

    def get_dataset_status(self, dataset_id: str, key_prefix: str | None = None) -> DatasetStatus:
        """Object counts of a dataset in the three stages."""
        return self._call(self.async_client.get_dataset_status, dataset_id, key_prefix)

    def get_dataset_index(
        self, dataset_id: str, key_prefix: str | None = None
    ) -> DatasetIndex | None:
        """The dataset's index object, or None if it has none."""
        return self._call(self.async_client.get_dataset_index, dataset_id, key_prefix)

    def iter_prefix(self, prefix: str) -> Iterator[str]:
        """Stream the keys under ``prefix``."""
        return self._iterate(lambda c: c.iter_prefix(prefix))

    def iter_objects(self, prefix: str) -> Iterator[Any]:
        """Stream the objects (key, size, etag, last_modified) under ``prefix``."""
        return self._iterate(lambda c: c.iter_objects(prefix))

    def iter_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        limit: int | None = None,
    ) -> Iterator[str]:
        """Stream the document ids of a dataset in ``stage``."""
        return self._iterate(lambda c: c.iter_documents(dataset_id, stage, key_prefix, limit))

    def list_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """All document ids of a dataset in ``stage``."""
        return list(self.iter_documents(dataset_id, stage, key_prefix, limit))

    def get_document(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> Document | None:
        """The document with its ``stage`` content loaded, or None if absent.

        One GET (a HEAD then a GET through an ``s3_client``); an id ending in ``.json`` that
        is not found as given is tried once more without the suffix
        (see :meth:`AsyncKL3MClient.get_document`).
        """
        doc = self._call(self.async_client.get_document, dataset_id, document_id, stage)
        return None if doc is None else Document(self, doc)

    def get_documents(
        self,
        dataset_id: str,
        document_ids: Iterable[str],
        stage: Stage | str = Stage.DOCUMENTS,
    ) -> dict[str, Document | None]:
        """Fetch many documents concurrently: ``{id: document or None}``."""
        docs = self._call(self.async_client.get_documents, dataset_id, list(document_ids), stage)
        return {k: None if v is None else Document(self, v) for k, v in docs.items()}

    def stream_documents(
        self,
        dataset_id: str,
        stage: Stage | str = Stage.DOCUMENTS,
        *,
        key_prefix: str | None = None,
        document_ids: Iterable[str] | None = None,
        limit: int | None = None,
        skip_missing: bool = True,
    ) -> Iterator[Document]:
        """Fetch documents concurrently, yielding them in listing (or given) order."""
        ids = None if document_ids is None else list(document_ids)
        docs = self._iterate(
            lambda c: c.stream_documents(
                dataset_id,
                stage,
                key_prefix=key_prefix,
                document_ids=ids,
                limit=limit,
                skip_missing=skip_missing,
            ),
            buffer=self.config.max_concurrency,
        )
        return (Document(self, d) for d in docs)

    def exists(
        self, dataset_id: str, document_id: str, stage: Stage | str = Stage.DOCUMENTS
    ) -> bool:
        """True if the document has an object in ``stage``."""
        return self._call(self.async_client.exists, dataset_id, document_id, stage)

    # -- export ----------------------------------------------------------------------------
    def iter_jsonl_export(
        self,
        dataset_id: str,
        source_stage: Stage | str = Stage.DOCUMENTS,
        key_prefix: str | None = None,
        max_documents: int | None = None,
        **options: Any,
    ) -> Iterator[dict[str, Any]]:
        """Export records of a dataset, in listing order (a plain iterator)."""
        return self._iterate(
            lambda c: c.iter_jsonl_export(
                dataset_id, source_stage, key_prefix, max_documents, **options
            ),
            buffer=self.config.max_concurrency,
        )

    def export(
        self, dataset_id: str, destination: str | os.PathLike[str], **options: Any
    ) -> ExportReport:
        """Export a dataset to JSONL or Parquet parts in ``destination`` (resumable).

        A ``progress`` callback runs in the calling thread, never on the event loop: a slow
        callback does not slow the export (it gets the latest snapshot; the final one, with
        ``done=True``, is always delivered). An exception raised by the callback stops the
        export (the destination stays resumable) and is raised from this call; so does an
        interrupt (KeyboardInterrupt) in the calling thread.
        """
        progress = options.pop("progress", None)
        client = self.async_client
        # also without a callback: an interrupt (Ctrl-C) here cancels the export and waits
        return self._call_relaying(
            lambda relay: client.export(
                dataset_id, destination, progress=None if progress is None else relay, **options
            ),
            progress or _ignore,
        )


def _ignore(_: object) -> None:
    """A callback that does nothing."""


class Document(DocumentBase):
    """A document of a :class:`KL3MClient`; other stages load on demand (blocking).

    Built by the client, or as in 0.2.0: ``Document(client, dataset_id, document_key,
    bucket)`` with the key of the document in any data stage.
    """

    def __init__(
        self,
        client: KL3MClient,
        dataset_id: str | AsyncDocument,
        document_key: str | None = None,
        bucket: str | None = None,
    ) -> None:
        if isinstance(dataset_id, AsyncDocument):
            document = dataset_id
        else:
            document = _document_from_key(client, dataset_id, document_key)
        super().__init__(document.dataset_id, document.document_id, document.stage)
        self._contents = document._contents  # shared cache with the async handle
        self.client = client
        self._async = document
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        """The bucket of the document."""
        return self._bucket or self.client.bucket

    @property
    def s3_client(self) -> Any:
        """The client's blocking botocore S3 client (see ``KL3MClient.s3_client``)."""
        return self.client.s3_client

    def get_content(self, stage: Stage | str = Stage.DOCUMENTS) -> StageContent | None:
        """The content of ``stage`` (fetched the first time), or None if it is not there."""
        stage = Stage.coerce(stage)
        if stage in self._contents:
            return self._contents[stage]
        return self.client._call(self._async.get_content, stage)

    def get_document_content(self) -> DocumentContent | None:
        """The documents-stage content."""
        content = self.get_content(Stage.DOCUMENTS)
        return content if isinstance(content, DocumentContent) else None

    def get_representation_content(self) -> RepresentationContent | None:
        """The representations-stage content."""
        content = self.get_content(Stage.REPRESENTATIONS)
        return content if isinstance(content, RepresentationContent) else None

    def get_representation(self) -> RepresentationList | None:
        """The first parsed document of the representations stage."""
        content = self.get_representation_content()
        return content.get_representation(0) if content else None

    def get_parquet(self) -> ParquetContent | None:
        """The parquet-stage content."""
        content = self.get_content(Stage.PARQUET)
        return content if isinstance(content, ParquetContent) else None

    def exists_in_stage(self, stage: Stage | str) -> bool:
        """True if the document has an object in ``stage``."""
        return self.client._call(self._async.exists_in_stage, stage)


def _document_from_key(client: Any, dataset_id: str, document_key: str | None) -> AsyncDocument:
    """The async handle of 0.2.0's ``Document(client, dataset_id, document_key)``."""
    from kl3m_data_client._keys import parse_document_key

    if not isinstance(document_key, str):
        raise TypeError("Document(client, dataset_id, document_key, bucket) needs document_key")
    stage, document_id = parse_document_key(dataset_id, document_key)
    # another client object (a test double) gets a handle that can give its keys, not I/O
    async_client = client.async_client if isinstance(client, KL3MClient) else None
    return AsyncDocument(async_client, dataset_id, document_id, stage)  # type: ignore[arg-type]


def _options_from_boto_client(s3_client: Any, *, credentials: bool = True) -> dict[str, Any]:
    """Region, endpoint (and, for a client we cannot use as it is, credentials) of a
    client passed as ``s3_client``."""
    options: dict[str, Any] = {}
    meta = getattr(s3_client, "meta", None)
    region = getattr(meta, "region_name", None)
    if region:
        options["region"] = region
    endpoint = getattr(meta, "endpoint_url", None)
    if endpoint and "amazonaws.com" not in endpoint:
        options["endpoint_url"] = endpoint
    if not credentials:
        return options
    signer = getattr(s3_client, "_request_signer", None)
    found = getattr(signer, "_credentials", None)
    if found is not None:
        frozen = found.get_frozen_credentials()
        options["aws_access_key_id"] = frozen.access_key
        options["aws_secret_access_key"] = frozen.secret_key
        if frozen.token:
            options["aws_session_token"] = frozen.token
    elif signer is not None:
        options["anonymous"] = True
    return options
