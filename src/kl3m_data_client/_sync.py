"""KL3MClient: the blocking API. It runs the async core on a background event loop
(``_runner``) and forwards every call to it. The S3 and decoding logic is the core's; what
lives here is the thread hop, options taken from a 0.2.0 ``s3_client``, and the forwarding
methods (iterator batching and callback relays are in ``_bridge``, 0.2.0's ``Document``
handle in ``_sync_document``)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import CancelledError
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._client_base import resolve_config
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import ClientClosedError
from kl3m_data_client._runner import ORPHANS, Runner
from kl3m_data_client._sync_document import Document
from kl3m_data_client.models.common import DatasetStatus, Stage
from kl3m_data_client.models.stage import DatasetIndex

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from kl3m_data_client._config import ClientKeywords
    from kl3m_data_client.export import ExportProgress, ExportReport
    from kl3m_data_client.export._options import ExportKeywords, ExportOptions, RecordKeywords

T = TypeVar("T")


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
        verbose: bool | None = None,
        *,
        session: Any = None,
        config: ClientConfig | None = None,
        **options: Unpack[ClientKeywords],
    ) -> None:
        """The arguments of :class:`AsyncKL3MClient` (same names, same defaults), plus 0.2.0's
        ``s3_client``: a boto3 S3 client whose requests the client sends (an aiobotocore one
        lends its region, endpoint and credentials)."""
        blocking = False
        if s3_client is not None:
            from kl3m_data_client._boto3_store import is_blocking_client

            blocking = is_blocking_client(s3_client)
        given: dict[str, Any] = {
            "bucket": bucket,
            "region": region,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "verbose": verbose,
            **options,
        }
        if s3_client is not None and config is None:  # lend what the caller did not give
            # a boto3 client signs its own requests: no frozen copy of its credentials
            lent = _options_from_boto_client(s3_client, credentials=not blocking)
            if aws_access_key_id or options.get("anonymous"):
                for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                    lent.pop(name, None)
                lent.pop("anonymous", None)
            given = {**lent, **{k: v for k, v in given.items() if v is not None}}
        config = resolve_config(config, given)
        self.config: ClientConfig = config
        self._session = session
        self._user_s3_client = s3_client
        self._boto3_client: Any = s3_client if blocking else None
        self._sync_s3_client: Any = None
        self._runner: Runner | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    def _get_runner(self) -> Runner:
        runner = self._runner
        if runner is not None and runner.pid == os.getpid():
            return runner
        with self._lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            runner = self._runner
            if runner is None or runner.pid != os.getpid():
                if runner is not None:  # inherited through fork(): abandon, never touch
                    ORPHANS.append(runner)
                    if self._finalizer is not None:
                        self._finalizer.detach()
                runner = Runner(
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
        source_stage: Stage | str | None = None,
        key_prefix: str | None = None,
        max_documents: int | None = None,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        options: ExportOptions | None = None,
        **changes: Unpack[RecordKeywords],
    ) -> Iterator[dict[str, Any]]:
        """Export records of a dataset, in listing order (a plain iterator); the arguments
        of :meth:`AsyncKL3MClient.iter_jsonl_export`."""
        return self._iterate(
            lambda c: c.iter_jsonl_export(
                dataset_id,
                source_stage,
                key_prefix,
                max_documents,
                on_error=on_error,
                options=options,
                **changes,
            ),
            buffer=self.config.max_concurrency,
        )

    def export(
        self,
        dataset_id: str,
        destination: str | os.PathLike[str],
        options: ExportOptions | None = None,
        *,
        progress: Callable[[ExportProgress], Any] | None = None,
        **changes: Unpack[ExportKeywords],
    ) -> ExportReport:
        """Export a dataset to JSONL or Parquet parts in ``destination`` (resumable); the
        arguments of :meth:`AsyncKL3MClient.export`.

        A ``progress`` callback runs in the calling thread, never on the event loop: a slow
        callback does not slow the export (it gets the latest snapshot; the final one, with
        ``done=True``, is always delivered). An exception raised by the callback stops the
        export (the destination stays resumable) and is raised from this call; so does an
        interrupt (KeyboardInterrupt) in the calling thread.
        """
        client = self.async_client
        # also without a callback: an interrupt (Ctrl-C) here cancels the export and waits
        return self._call_relaying(
            lambda relay: client.export(
                dataset_id,
                destination,
                options,
                progress=None if progress is None else relay,
                **changes,
            ),
            progress or _ignore,
        )


def _ignore(_: object) -> None:
    """A callback that does nothing."""


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


__all__ = ["Document", "KL3MClient"]
