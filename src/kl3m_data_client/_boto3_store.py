"""The S3 seam over a caller's blocking boto3/botocore client (``KL3MClient(s3_client=...)``).

:class:`Boto3Store` has the interface of :class:`~kl3m_data_client._store.S3Store`
(``list_pages``, ``get``, ``head``, ``aclose``, the same typed errors through the store's
own mapping) but sends every request through the client it was given, as it is: its
config, credentials (which keep refreshing), event handlers, a botocore ``Stubber`` or
moto's ``mock_aws`` all apply. The blocking calls run on one worker thread, in the order
they are made, so ordered mocks written for 0.2.0 see 0.2.0's request sequence; an object
read is a HEAD then a GET, as 0.2.0's ``get_document`` + ``get_content`` were.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from kl3m_data_client._budget import NeedRoom
from kl3m_data_client._errors import (
    ClientClosedError,
    InvalidInputError,
    KL3MError,
    SizeLimitExceededError,
)
from kl3m_data_client._listing import ListingCheck, ListPage, ObjectInfo
from kl3m_data_client._s3errors import BrokenBody, check_str
from kl3m_data_client._s3errors import map_error as _map_error
from kl3m_data_client._store import S3Store

if TYPE_CHECKING:
    from kl3m_data_client._config import ClientConfig

T = TypeVar("T")

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
#: Failures while a body is read: the GET is made again (botocore does not retry these).
_BODY_FAILURES: tuple[type[Exception], ...] = (
    IncompleteReadError,
    ResponseStreamingError,
    ReadTimeoutError,
    BrokenBody,
    ConnectionError,
)
_DONE = object()


def map_error(
    exc: Exception,
    what: str,
    *,
    bucket: str,
    key: str | None = None,
    endpoint_url: str | None = None,
) -> KL3MError:
    """The :class:`KL3MError` the store raises for ``exc`` (its mapping, reused as is)."""
    return _map_error(exc, what, bucket=bucket, endpoint_url=endpoint_url, key=key)


def is_blocking_client(s3_client: Any) -> bool:
    """True for a boto3/botocore client (False for aiobotocore, whose calls are coroutines)."""
    get_object = getattr(s3_client, "get_object", None)
    return callable(get_object) and not asyncio.iscoroutinefunction(get_object)


# -- blocking botocore clients (the store below and the 0.2.0 helpers in utils.s3) ---------
def client_from_config(config: ClientConfig, botocore_config: Any = None) -> Any:
    """A blocking botocore S3 client with the settings of ``config`` (and ``botocore_config``
    merged over them)."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = botocore.session.Session(profile=config.profile)
        kwargs = config.create_client_kwargs(session)
    except ProfileNotFound as exc:
        raise InvalidInputError(f"AWS profile {config.profile!r} not found") from exc
    merged = Config(**config.botocore_options(session=session))
    if botocore_config is not None:
        merged = merged.merge(botocore_config)
        if botocore_config.region_name and "region_name" not in kwargs:
            kwargs["region_name"] = botocore_config.region_name
    return session.create_client("s3", config=merged, **kwargs)


def boto_error(
    exc: Exception, what: str, *, bucket: str, key: str | None = None, client: Any = None
) -> KL3MError:
    """The :class:`KL3MError` for a botocore failure (the store's mapping, not a copy)."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return map_error(exc, what, bucket=bucket, key=key, endpoint_url=endpoint)


def botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def list_params(bucket: str, prefix: str, delimiter: str | None, page_size: int) -> dict[str, Any]:
    """Arguments of the ListObjectsV2 paginator (only what differs from S3's defaults, so
    ordered mocks recorded against 0.2.0 see the same request)."""
    if not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise InvalidInputError(f"page_size must be 1..1000, got {page_size!r}")
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        params["Delimiter"] = delimiter
    if page_size != 1000:
        params["PaginationConfig"] = {"PageSize": page_size}
    return params


def iter_pages(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    delimiter: str | None = None,
    page_size: int = 1000,
    extra: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The ListObjectsV2 response pages of ``prefix`` (botocore's paginator)."""
    params = list_params(bucket, prefix, delimiter, page_size)
    params.update(extra or {})
    pages = iter(client.get_paginator("list_objects_v2").paginate(**params))
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except botocore_errors() as exc:
            raise boto_error(exc, f"listing of {prefix!r}", bucket=bucket, client=client) from exc
        yield page


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Boto3Store(S3Store):
    """List / get / head through a caller's boto3 client, on a worker thread."""

    def __init__(self, config: ClientConfig, s3_client: Any) -> None:
        super().__init__(config)
        self._client = s3_client
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kl3m-boto3")

    async def client(self) -> Any:
        """The caller's boto3 client."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        return self._client

    async def aclose(self) -> None:
        """Stop the worker thread; the caller's boto3 client stays open (it is theirs)."""
        self._closed = True
        self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise ClientClosedError("the client is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def list_pages(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[ListPage]:
        """Yield ListObjectsV2 pages of ``prefix`` (the client's paginator, in the thread)."""
        check_str(prefix, "prefix", empty=True)
        if start_after is not None:
            check_str(start_after, "start_after", empty=True)
        extra = dict(self._extra)
        if start_after:
            extra["StartAfter"] = start_after
        client = await self.client()
        pages: Iterator[dict[str, Any]] = iter_pages(
            client,
            self.config.bucket,
            prefix,
            delimiter=delimiter,
            page_size=page_size,
            extra=extra,
        )
        check = ListingCheck(
            prefix,
            start_after or "",
            endpoint_url=self.config.endpoint_url,
            foreign=self.foreign_keys,
        )
        while True:
            response = await self._run(next, pages, _DONE)
            if response is _DONE:
                return
            yield check.page(response)

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, etag and date, or None if it does not exist."""
        check_str(key, "key")
        client = await self.client()
        try:
            response = await self._run(
                client.head_object, Bucket=self.config.bucket, Key=key, **self._extra
            )
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise self._error(exc, f"object {key!r}", key) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc, f"object {key!r}", key) from exc
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0) or 0),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
        )

    async def get(self, key: str, *, admit: Callable[[int], bool] | None = None) -> bytes | None:
        """HEAD, then GET the object's bytes; None if it does not exist.

        The size limit (and ``admit``, a memory budget: :class:`NeedRoom` when it says no) is
        checked on the HEAD, before anything is downloaded. When the HEAD
        answers 404 the GET still runs: only its error code tells a missing key (None) from
        a missing bucket (BucketNotFoundError). A body that breaks while it is read is
        requested again (``max_attempts`` in all).
        """
        info = await self.head(key)
        if info is not None:
            self._check_size(key, info.size)
            if admit is not None and not admit(info.size):
                raise NeedRoom(key, info.size)
        # a HEAD 404 has no body to tell a missing key from a missing bucket: the GET says
        client = await self.client()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._run(self._get_blocking, client, key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                raise self._error(exc, f"object {key!r}", key) from exc
            except _BODY_FAILURES as exc:
                if attempt >= self.config.max_attempts:
                    raise self._failed(f"GET {key!r}", attempt, started, exc) from exc
                await self._backoff(attempt)
            except (BotoCoreError, OSError) as exc:
                raise self._error(exc, f"object {key!r}", key) from exc

    def _check_size(self, key: str, size: int) -> None:
        limit = self.config.limits.max_object_bytes
        if size > limit:
            raise SizeLimitExceededError(
                key, f"object is {size} bytes, above the limit of {limit} bytes"
            )

    def _get_blocking(self, client: Any, key: str) -> bytes:
        """One blocking GET (runs on the worker thread)."""
        response = client.get_object(Bucket=self.config.bucket, Key=key, **self._extra)
        body = response["Body"]
        try:
            # read() whole, as boto3 users' own mocks expect (``read=lambda: body``); the size
            # limit was checked on the HEAD and is checked again below
            data = body.read()
        finally:
            close = getattr(body, "close", None)
            if callable(close):
                close()
        if not isinstance(data, bytes):
            raise InvalidInputError(f"the S3 client returned {type(data).__name__} for {key!r}")
        length = response.get("ContentLength")
        if isinstance(length, int) and len(data) != length:
            raise BrokenBody(f"got {len(data)} of {length} bytes")
        self._check_size(key, len(data))
        return data
