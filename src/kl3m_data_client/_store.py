"""The S3 seam: list a prefix, get an object, head an object.

Every request of :class:`AsyncKL3MClient` (so of the blocking client, the export and the Ray
integration) goes through a store: this one, or ``_boto3_store.Boto3Store`` over a caller's
boto3 client (``KL3MClient(s3_client=...)``). Other S3 I/O: the 0.2.0 helpers of
``utils.s3`` (and ``operations.index``) call the botocore client they are given, and
``testing`` uploads to its local server.

One aiobotocore session and client per store, created on the running loop, with the
connection pool sized to ``max_concurrency``; a semaphore holds requests in flight to the
same number. Object GETs go through the obstore data plane (``_obstore``) when the settings
allow (``data_plane``), through aiobotocore otherwise; listings and HEADs always go through
aiobotocore. Errors leave this module as the exceptions of ``_errors`` (``_s3errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ProfileNotFound,
)

from kl3m_data_client._budget import NeedRoom
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._credentials import watch_credentials
from kl3m_data_client._errors import (
    ClientClosedError,
    ConnectionFailedError,
    InvalidInputError,
    KL3MError,
    SizeLimitExceededError,
)
from kl3m_data_client._http import NoRedirectHTTPSession, read_body
from kl3m_data_client._listing import (
    MAX_EMPTY_PAGES,
    ListingCheck,
    ListPage,
    ObjectInfo,
    checked_pages,
    list_once,
)
from kl3m_data_client._obstore import Fallback, ObstorePlane, create_plane
from kl3m_data_client._redact import install_log_redaction, remember_secrets
from kl3m_data_client._redact import redact_exception as scrub
from kl3m_data_client._s3errors import (
    BODY_ERRORS,
    CREDENTIAL_ERRORS,
    NOT_FOUND,
    BrokenBody,
    Spent,
    backoff,
    check_str,
    failed,
    map_error,
)
from kl3m_data_client._stream import closing, within
from kl3m_data_client._timestamps import install as install_fast_timestamps

__all__ = ["LISTING_CONNECTIONS", "MAX_EMPTY_PAGES", "ListPage", "ObjectInfo", "S3Store"]

logger = logging.getLogger("kl3m_data_client")

#: Connections kept beyond ``max_concurrency`` so that listings never wait behind GETs.
LISTING_CONNECTIONS = 4
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


class _Deadline(Exception):
    pass


class S3Store:
    """List / get / head against one bucket, with retries of broken bodies."""

    def __init__(self, config: ClientConfig, session: AioSession | None = None) -> None:
        self.config = config
        self._session = session
        self._client: Any = None
        #: The obstore data plane for GETs, or None (aiobotocore): set with the client.
        self.plane: ObstorePlane | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(config.max_concurrency)
        self._closed = False
        self._extra: dict[str, str] = {"RequestPayer": "requester"} if config.requester_pays else {}
        #: Seconds one object (or one listing page) may take, all attempts included, counted
        #: from the moment its request holds a concurrency slot.
        self.object_deadline: float = config.object_deadline or config.max_attempts * (
            config.connect_timeout + config.read_timeout
        )
        self._check_md5 = True
        #: Every key (or common prefix) a listing of this store skipped because the server
        #: listed it outside the requested prefix, in order (also in ``ListPage.foreign``).
        self.foreign_keys: list[str] = []
        remember_secrets(config.aws_secret_access_key, config.aws_session_token)

    # -- lifecycle -------------------------------------------------------------------------
    async def client(self) -> Any:
        """The aiobotocore S3 client, created on first use."""
        if self._client is not None:
            return self._client
        if self._closed:
            raise ClientClosedError("the client is closed")
        async with self._lock:
            if self._client is None:
                self._client = await self._create()
        return self._client

    async def _create(self) -> Any:
        cfg = self.config
        try:
            session = self._session
            if session is None:  # our own session: S3's timestamps parsed ~20x faster
                session = AioSession(profile=cfg.profile)
                install_fast_timestamps(session)
        except ProfileNotFound as exc:
            raise InvalidInputError(f"AWS profile {cfg.profile!r} not found") from exc
        kwargs = cfg.create_client_kwargs(session)
        # botocore's parameter validation costs ~6% of a small GET; the seam checks its own
        # few inputs instead (:func:`check_str`)
        options = cfg.botocore_options(LISTING_CONNECTIONS, session)
        kwargs["config"] = AioConfig(
            **options, parameter_validation=False, http_session_cls=NoRedirectHTTPSession
        )
        install_log_redaction()
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(session.create_client("s3", **kwargs))
            if not (cfg.anonymous or cfg.aws_access_key_id):
                await watch_credentials(session, client)
            if cfg.data_plane != "aiobotocore":
                self.plane = await create_plane(cfg, session, client, self.object_deadline)
                if self.plane is not None:
                    stack.callback(self.plane.close)
        except ProfileNotFound as exc:
            await stack.aclose()
            raise InvalidInputError(f"AWS profile {cfg.profile!r} not found") from exc
        except BotoCoreError as exc:
            await stack.aclose()
            if isinstance(exc, CREDENTIAL_ERRORS):
                raise self._error(exc, "the S3 client") from scrub(exc)
            raise InvalidInputError(
                f"cannot configure the S3 client: {exc}", per_object=False
            ) from scrub(exc)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        install_log_redaction()
        return client

    async def aclose(self) -> None:
        """Close the S3 client and its connection pool."""
        self._closed = True
        stack, self._stack, self._client = self._stack, None, None
        self.plane = None
        if stack is not None:
            await stack.aclose()

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    # -- errors ----------------------------------------------------------------------------
    def _error(self, exc: BaseException, what: str, key: str | None = None) -> KL3MError:
        """The KL3MError for ``exc`` (``_s3errors.map_error``); raise it ``from exc``."""
        cfg = self.config
        return map_error(exc, what, bucket=cfg.bucket, endpoint_url=cfg.endpoint_url, key=key)

    async def _backoff(self, attempt: int, deadline: float | None = None) -> None:
        await backoff(attempt, deadline)

    def _failed(
        self, what: str, attempt: int, started: float, exc: BaseException, key: str | None = None
    ) -> KL3MError:
        return failed(what, attempt, started, exc, endpoint_url=self.config.endpoint_url, key=key)

    # -- listings --------------------------------------------------------------------------
    async def list_pages(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[ListPage]:
        """Yield checked ListObjectsV2 pages of ``prefix``; a failed page is retried from its token.

        Every page is checked before it is yielded (``_listing.ListingCheck``): keys and
        common prefixes strictly ascending across the whole listing and after
        ``start_after`` (so that resuming after the last key seen loses and repeats
        nothing), no continuation token used twice, a token on every truncated page, at most
        :data:`MAX_EMPTY_PAGES` truncated pages in a row with nothing in the prefix. A failed
        check raises :class:`ServiceError` (code ``InvalidListing``, systemic) naming the
        prefix and the page. Keys outside the prefix are skipped, logged and listed in
        ``ListPage.foreign``. The next page is requested while the caller consumes this one.
        """
        check_str(prefix, "prefix", empty=True)
        if start_after is not None:
            check_str(start_after, "start_after", empty=True)
        if not isinstance(page_size, int) or not 1 <= page_size <= 1000:
            raise InvalidInputError(f"page_size must be 1..1000, got {page_size!r}")
        client = await self.client()
        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Prefix": prefix,
            "MaxKeys": page_size,
            **self._extra,
        }
        if delimiter:
            params["Delimiter"] = delimiter
        if start_after:
            params["StartAfter"] = start_after
        check = ListingCheck(
            prefix,
            start_after or "",
            endpoint_url=self.config.endpoint_url,
            foreign=self.foreign_keys,
        )

        def more(token: str) -> Any:
            return self._list_once(client, dict(params, ContinuationToken=token), prefix)

        pages = checked_pages(self._list_once(client, params, prefix), more, check)
        async with closing(pages) as checked:
            async for page in checked:
                yield page

    async def _list_once(self, client: Any, params: dict[str, Any], prefix: str) -> Any:
        """One ListObjectsV2 page (``_listing.list_once``) within :attr:`object_deadline`."""
        return await list_once(
            client,
            params,
            prefix,
            max_attempts=self.config.max_attempts,
            seconds=self.object_deadline,
            error=self._error,
            failed=self._failed,
        )

    # -- objects ---------------------------------------------------------------------------
    async def get(self, key: str, *, admit: Callable[[int], bool] | None = None) -> bytes | None:
        """The object's bytes, or None if it does not exist; broken bodies are re-requested.

        The request first waits for one of ``max_concurrency`` slots and keeps it until it
        is done; its deadline (:attr:`object_deadline`) counts from then. A body that
        breaks while it is read (reset, truncation, read timeout, payload error, a length
        other than its Content-Length) or whose MD5 does not match a plain (single-part,
        unencrypted or SSE-S3) ETag is requested again: at most ``max_attempts`` times, with
        exponential backoff and jitter. Errors that botocore already retried (throttling,
        5xx, connection failures before a response) are not multiplied here. A body larger
        than ``limits.max_object_bytes`` is refused as soon as the limit is passed.

        ``admit(content_length)`` (a memory budget) is asked before a body is read; when it
        says no, the response is closed unread and :class:`NeedRoom` raised (with the size).

        With the obstore plane (:attr:`plane`) each attempt goes through obstore first; any
        answer but a plain one (``_obstore.Fallback``) makes that attempt, and the rest of
        this GET, through aiobotocore.
        """
        check_str(key, "key")
        client = await self.client()
        async with self._sem:
            return await self._get_in_slot(client, key, admit)

    async def _get_in_slot(
        self, client: Any, key: str, admit: Callable[[int], bool] | None = None
    ) -> bytes | None:
        what = f"object {key!r}"
        started = time.monotonic()
        deadline = started + self.object_deadline
        attempt = 0
        mismatched: set[str] = set()
        plane = self.plane if self.plane is not None and self.plane.takes(key) else None
        while True:
            attempt += 1
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Deadline
                try:
                    fetched: Coroutine[Any, Any, tuple[bytes | None, str | None]] = (
                        self._plane_once(plane, key, admit)
                        if plane is not None
                        else self._get_once(client, key, admit)
                    )
                    data, digest = await within(fetched, remaining)
                except asyncio.TimeoutError as exc:
                    raise _Deadline from exc
                if data is None:
                    return None
                if digest is None:
                    return data
                if digest in mismatched:
                    # the same bytes twice: the ETag is not an MD5 of the content (an
                    # S3-compatible store or an encryption mode we do not know); stop checking
                    logger.debug("ETag of %r is not its MD5; ETag checks disabled", key)
                    self._check_md5 = False
                    return data
                mismatched.add(digest)
                raise BrokenBody("the body does not match its ETag (MD5)")
            except Fallback:
                plane = None  # this attempt again, and the rest, through aiobotocore
                attempt -= 1
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in NOT_FOUND:
                    return None
                raise self._error(exc, what, key) from exc
            except Spent as exc:  # the HTTP client's own retries are spent
                attempts = max(attempt, self.config.max_attempts)
                raise self._failed(f"GET {key!r}", attempts, started, exc.cause, key) from (
                    exc.cause
                )
            except _Deadline as exc:
                raise ConnectionFailedError(
                    f"GET {key!r} did not complete within its deadline of "
                    f"{self.object_deadline:.1f}s ({attempt} attempt(s))",
                    key=key,
                ) from exc
            except BrokenBody as exc:
                if attempt >= self.config.max_attempts or time.monotonic() >= deadline:
                    raise self._failed(f"GET {key!r}", attempt, started, exc, key) from exc
                logger.debug("retrying GET %r after %s", key, exc)
                await self._backoff(attempt, deadline)
            except BotoCoreError as exc:
                raise self._error(exc, what, key) from exc

    def _mismatch(self, data: bytes, etag: str, sse: object = None) -> str | None:
        """The MD5 of ``data`` if a plain (MD5) ``etag`` says it is not the object's bytes."""
        if not self._check_md5:
            return None
        etag = etag.strip('"').lower()
        if not _MD5_ETAG.fullmatch(etag) or sse not in (None, "AES256"):
            return None
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return digest if digest != etag else None

    async def _plane_once(
        self, plane: ObstorePlane, key: str, admit: Callable[[int], bool] | None
    ) -> tuple[bytes | None, str | None]:
        """One GET through obstore: the bytes (None: no such key) that match their ETag."""
        found = await plane.get(key, self.config.limits.max_object_bytes, admit)
        if found is None:
            return None, None
        data, etag = found
        if self._mismatch(data, etag) is not None:
            # aiobotocore sees the encryption header (an SSE-KMS ETag is no MD5) and the
            # framing of the answer: it decides whether the body is broken
            raise plane.fallback(key, BrokenBody("the body does not match its ETag (MD5)"))
        return data, None

    async def _get_once(
        self, client: Any, key: str, admit: Callable[[int], bool] | None = None
    ) -> tuple[bytes, str | None]:
        """One GET through aiobotocore: the bytes and, if they fail the ETag check, their digest."""
        try:
            response = await client.get_object(Bucket=self.config.bucket, Key=key, **self._extra)
        except HTTPClientError as exc:  # botocore's retries are spent
            raise Spent(exc) from exc
        limit = self.config.limits.max_object_bytes
        length = response.get("ContentLength")
        body = response["Body"]
        meta = response.get("ResponseMetadata", {}) or {}
        info = {"status": meta.get("HTTPStatusCode"), "request_id": meta.get("RequestId")}
        if length is not None and length > limit:
            body.close()
            raise SizeLimitExceededError(
                key, f"object is {length} bytes, above the limit of {limit} bytes", **info
            )
        if admit is not None and length is not None and not admit(length):
            body.close()  # unread: the connection is not reused, no body bytes are held
            raise NeedRoom(key, length)
        data = await read_body(body, key, length, limit, info)
        etag = str(response.get("ETag", ""))
        return data, self._mismatch(data, etag, response.get("ServerSideEncryption"))

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, etag and date, or None if it does not exist."""
        check_str(key, "key")
        client = await self.client()
        try:
            async with self._sem:
                response = await client.head_object(
                    Bucket=self.config.bucket, Key=key, **self._extra
                )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in NOT_FOUND:
                return None
            raise self._error(exc, f"object {key!r}", key) from exc
        except (BotoCoreError, *BODY_ERRORS) as exc:
            raise self._error(exc, f"object {key!r}", key) from exc
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
        )
