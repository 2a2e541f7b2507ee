"""AsyncKL3MClient: the asyncio-native client (construction, lifecycle and export here;
listing in ``_client_listing``, documents in ``_client_documents``)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from kl3m_data_client._client_base import StoreFactory, resolve_config
from kl3m_data_client._client_documents import DocumentsClient
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._stream import AwaitableIterator
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Unpack

    from kl3m_data_client._config import ClientOptions
    from kl3m_data_client.export import ExportProgress, ExportReport
    from kl3m_data_client.export._options import ExportKeywords, ExportOptions, RecordKeywords


class AsyncKL3MClient(DocumentsClient):
    """Asyncio client for the KL3M bucket.

    Use ``async with AsyncKL3MClient() as client:`` or call :meth:`aclose` when done. The
    S3 client is created on first use, on the running event loop. Credentials come from the
    arguments or from botocore's chain (environment, ~/.aws files, profiles, SSO, assume-role,
    container and instance roles); ``anonymous=True`` sends unsigned requests.

    The keyword options are the fields of :class:`~kl3m_data_client.ClientConfig` (see
    :class:`~kl3m_data_client._config.ClientOptions`); an option not given takes the config's
    default. Pass either them or a whole ``config=``, not both (:class:`InvalidInputError`).
    ``session`` is an aiobotocore session to create the S3 client from.
    """

    def __init__(
        self,
        bucket: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        *,
        session: Any = None,
        config: ClientConfig | None = None,
        _store_factory: StoreFactory | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        given = {
            "bucket": bucket,
            "region": region,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            **options,
        }
        super().__init__(resolve_config(config, given), session, _store_factory)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self.config.bucket

    async def __aenter__(self) -> AsyncKL3MClient:
        await self._store.client()
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
        if self._made_store is not None:
            await self._made_store.aclose()

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    def __repr__(self) -> str:
        endpoint = (
            f", endpoint_url={self.config.endpoint_url!r}" if self.config.endpoint_url else ""
        )
        return f"AsyncKL3MClient(bucket={self.bucket!r}{endpoint})"

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
    ) -> AwaitableIterator[dict[str, Any]]:
        """Stream export records (``id``, ``identifier``, ``dataset``, ``mime_type``,
        ``tokens`` or ``text``) in listing order (or ``await`` it for the list).

        Takes the export options of :meth:`export` (those about files have no effect);
        ``source_stage`` (default ``documents``), ``key_prefix`` and ``max_documents`` are
        0.2.0's positional spelling of ``stage``, ``key_prefix`` and ``max_documents``. A bad
        object raises its typed error naming the key (``on_error="skip"``: logged, skipped).
        See :func:`kl3m_data_client.export.iter_export_records`.
        """
        from kl3m_data_client.export import iter_export_records

        records = iter_export_records(
            self,
            dataset_id,
            source_stage,
            key_prefix,
            max_documents,
            on_error=on_error,
            options=options,
            **changes,
        )
        return AwaitableIterator(records)

    async def export(
        self,
        dataset_id: str,
        destination: str | os.PathLike[str],
        options: ExportOptions | None = None,
        *,
        progress: Callable[[ExportProgress], Any] | None = None,
        **changes: Unpack[ExportKeywords],
    ) -> ExportReport:
        """Export a dataset to JSONL or Parquet parts in ``destination`` (resumable).

        The options are the fields of :class:`~kl3m_data_client.export.ExportOptions`, given
        as keywords or as ``options=ExportOptions(...)`` (keywords override it); see
        ``docs/export.md``. ``workers="auto"`` (the default) runs one exporter per usable
        CPU (at most 8; 1 where worker processes cannot be used). ``progress`` receives
        :class:`~kl3m_data_client.export.ExportProgress` snapshots.
        """
        from kl3m_data_client.export import export

        return await export(self, dataset_id, destination, options, progress=progress, **changes)


__all__ = ["AsyncKL3MClient"]
