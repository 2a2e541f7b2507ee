"""The S3 seam: list a prefix, get an object, head an object. The only module doing S3 I/O.

One aiobotocore session and client per store, created on the running loop, with the
connection pool sized to ``max_concurrency``; a semaphore holds requests in flight to the
same number. Errors leave this module as the exceptions of ``_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ClientClosedError,
    ConnectionFailedError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    ServiceError,
    SizeLimitExceededError,
)
from kl3m_data_client._redact import install_log_redaction, remember_secrets
from kl3m_data_client._stream import within
from kl3m_data_client._timestamps import install as install_fast_timestamps

logger = logging.getLogger("kl3m_data_client")
T = TypeVar("T")

#: Connections kept beyond ``max_concurrency`` so that listings never wait behind GETs.
LISTING_CONNECTIONS = 4

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_BODY_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    asyncio.TimeoutError,
    ResponseStreamingError,
    ReadTimeoutError,
    BotoConnectionError,
    ConnectionError,
)
_ACCESS_HINT = (
    "check your AWS credentials (environment, ~/.aws, --profile), the region, and whether "
    "the bucket needs requester_pays=True or anonymous=True"
)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed or HEADed object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(slots=True)
class ListPage:
    """One ListObjectsV2 page: objects, common prefixes, and the token of the next page."""

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None


class _BrokenBody(Exception):
    pass


class _Deadline(Exception):
    pass


class _Spent(Exception):
    """botocore gave up after its own retries: do not retry again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


def _check_str(value: object, what: str, *, empty: bool = False) -> str:
    """``value`` if it is a string (non-empty unless ``empty``), else InvalidInputError."""
    if not isinstance(value, str) or not (value or empty):
        kind = "a string" if empty else "a non-empty string"
        raise InvalidInputError(f"{what} must be {kind}, got {value!r}")
    return value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, _BrokenBody):
        return f"broken body ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_RETRYABLE: tuple[type[Exception], ...] = (_BrokenBody, *_BODY_ERRORS)


class S3Store:
    """List / get / head against one bucket, with retries of broken bodies."""

    def __init__(self, config: ClientConfig, session: AioSession | None = None) -> None:
        self.config = config
        self._session = session
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(config.max_concurrency)
        self._closed = False
        self._extra: dict[str, str] = {"RequestPayer": "requester"} if config.requester_pays else {}
        #: Seconds one object (or one listing page) may take, all attempts included.
        self.object_deadline: float = config.object_deadline or config.max_attempts * (
            config.connect_timeout + config.read_timeout
        )
        self._check_md5 = True
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
        # few inputs instead (:func:`_check_str`)
        options = cfg.botocore_options(LISTING_CONNECTIONS, session)
        kwargs["config"] = AioConfig(**options, parameter_validation=False)
        install_log_redaction()
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(session.create_client("s3", **kwargs))
        except ProfileNotFound as exc:
            await stack.aclose()
            raise InvalidInputError(f"AWS profile {cfg.profile!r} not found") from exc
        except BotoCoreError as exc:
            await stack.aclose()
            raise InvalidInputError(f"cannot configure the S3 client: {exc}") from exc
        self._stack = stack
        install_log_redaction()
        return client

    async def aclose(self) -> None:
        """Close the S3 client and its connection pool."""
        self._closed = True
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    # -- errors ----------------------------------------------------------------------------
    def _error(self, exc: Exception, what: str, key: str | None = None) -> KL3MError:
        bucket = self.config.bucket
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return BucketNotFoundError(f"bucket {bucket!r} does not exist", key=key)
            if code in _DENIED or status == 403:
                return AccessDeniedError(
                    f"access denied to {what} in bucket {bucket!r}: {_ACCESS_HINT}", key=key
                )
            if code in _BAD_CREDENTIALS:
                return AccessDeniedError(
                    f"S3 rejected the credentials ({code}) for {what}: {_ACCESS_HINT}", key=key
                )
            if code in _NOT_FOUND:
                return NotFoundError(f"{what} not found in bucket {bucket!r}", key=key)
            message = err.get("Message") or ""
            return ServiceError(
                f"S3 error {code or status} for {what}: {message}".rstrip(": "),
                key=key,
                code=code or None,
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AccessDeniedError(
                f"no usable AWS credentials for {what}: configure them (environment, "
                "~/.aws, --profile) or use anonymous=True for public data",
                key=key,
            )
        if isinstance(exc, (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)):
            where = self.config.endpoint_url or "S3"
            return ConnectionFailedError(
                f"cannot reach {where} for {what}: {type(exc).__name__}: {exc}; "
                "check the endpoint, region and network"
            )
        return ServiceError(f"unexpected failure for {what}: {type(exc).__name__}: {exc}", key=key)

    async def _backoff(self, attempt: int, deadline: float | None = None) -> None:
        """Sleep ``0.05 * 2**attempt`` s (capped at 5 s) with +-50% jitter, within ``deadline``."""
        delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(delay)

    def _failed(self, what: str, attempt: int, started: float, exc: BaseException) -> KL3MError:
        elapsed = time.monotonic() - started
        where = self.config.endpoint_url or "S3"
        return ConnectionFailedError(
            f"{what} failed after {attempt} attempt(s) in {elapsed:.1f}s against {where}: "
            f"{_describe(exc)}"
        )

    # -- operations ------------------------------------------------------------------------
    async def list_pages(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[ListPage]:
        """Yield ListObjectsV2 pages of ``prefix``; a failed page is retried from its token."""
        _check_str(prefix, "prefix", empty=True)
        if start_after is not None:
            _check_str(start_after, "start_after", empty=True)
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
        # The next page is requested while the caller consumes this one (one page ahead).
        ahead: asyncio.Future[Any] | None = None
        try:
            response = await self._list_once(client, params, prefix)
            while True:
                page = self._page(response)
                if page.next_token:
                    ahead = asyncio.ensure_future(
                        self._list_once(
                            client, dict(params, ContinuationToken=page.next_token), prefix
                        )
                    )
                yield page
                if ahead is None:
                    return
                response, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    @staticmethod
    def _page(response: Any) -> ListPage:
        page = ListPage(
            objects=[
                ObjectInfo(
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")).strip('"'),
                    last_modified=item.get("LastModified"),
                )
                for item in response.get("Contents", ())
            ],
            prefixes=[p["Prefix"] for p in response.get("CommonPrefixes", ())],
        )
        if response.get("IsTruncated"):
            page.next_token = response.get("NextContinuationToken") or None
        return page

    async def _list_once(self, client: Any, params: dict[str, Any], prefix: str) -> Any:
        """One ListObjectsV2 page, retried (same token) on broken or unparsable answers.

        botocore already retried connection errors and 5xx/throttling answers
        ``max_attempts`` times: those end here. What botocore does not retry -- a body cut
        while it is read, or XML that does not parse -- is retried here, ``max_attempts``
        times within :attr:`object_deadline`.
        """
        what = f"listing of {prefix!r}"
        if params.get("ContinuationToken"):
            what += " (continued page)"
        started = time.monotonic()
        deadline = started + self.object_deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return await within(client.list_objects_v2(**params), remaining)
            except ClientError as exc:
                raise self._error(exc, what) from None
            except (HTTPClientError, EndpointConnectionError, ConnectTimeoutError) as exc:
                # botocore already made max_attempts tries of this request
                attempts = max(attempt, self.config.max_attempts)
                raise self._failed(what, attempts, started, exc) from None
            except (ResponseParserError, *_BODY_ERRORS) as exc:
                if attempt >= self.config.max_attempts or time.monotonic() >= deadline:
                    raise self._failed(what, attempt, started, exc) from None
                logger.debug("retrying %s after %s", what, type(exc).__name__)
                await self._backoff(attempt, deadline)
            except BotoCoreError as exc:
                raise self._error(exc, what) from None

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist; broken bodies are re-requested.

        A body that breaks while it is read (reset, truncation, read timeout, payload error)
        or whose MD5 does not match a plain (single-part, unencrypted or SSE-S3) ETag is
        requested again: at most ``max_attempts`` times, with exponential backoff and jitter,
        within :attr:`object_deadline` seconds. Errors that botocore already retried
        (throttling, 5xx, connection failures before a response) are not multiplied here.
        """
        _check_str(key, "key")
        client = await self.client()
        what = f"object {key!r}"
        started = time.monotonic()
        deadline = started + self.object_deadline
        attempt = 0
        mismatched: set[str] = set()
        while True:
            attempt += 1
            try:
                async with self._sem:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Deadline
                    try:
                        data, digest = await within(self._get_once(client, key), remaining)
                    except asyncio.TimeoutError:
                        raise _Deadline from None
                if digest is None:
                    return data
                if digest in mismatched:
                    # the same bytes twice: the ETag is not an MD5 of the content (an
                    # S3-compatible store or an encryption mode we do not know); stop checking
                    logger.debug("ETag of %r is not its MD5; ETag checks disabled", key)
                    self._check_md5 = False
                    return data
                mismatched.add(digest)
                raise _BrokenBody("the body does not match its ETag (MD5)")
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _NOT_FOUND:
                    return None
                raise self._error(exc, what, key) from None
            except _Spent as exc:  # the HTTP client's own retries are spent
                attempts = max(attempt, self.config.max_attempts)
                raise self._failed(f"GET {key!r}", attempts, started, exc.cause) from None
            except _Deadline:
                raise ConnectionFailedError(
                    f"GET {key!r} did not complete within its deadline of "
                    f"{self.object_deadline:.1f}s ({attempt} attempt(s))"
                ) from None
            except _BrokenBody as exc:
                if attempt >= self.config.max_attempts or time.monotonic() >= deadline:
                    raise self._failed(f"GET {key!r}", attempt, started, exc) from None
                logger.debug("retrying GET %r after %s", key, exc)
                await self._backoff(attempt, deadline)
            except BotoCoreError as exc:
                raise self._error(exc, what, key) from None

    async def _get_once(self, client: Any, key: str) -> tuple[bytes, str | None]:
        """One GET: the bytes and, if they fail the ETag check, their digest."""
        try:
            response = await client.get_object(Bucket=self.config.bucket, Key=key, **self._extra)
        except HTTPClientError as exc:  # botocore's retries are spent
            raise _Spent(exc) from None
        limit = self.config.limits.max_object_bytes
        length = response.get("ContentLength")
        body = response["Body"]
        if length is not None and length > limit:
            body.close()
            raise SizeLimitExceededError(
                key, f"object is {length} bytes, above the limit of {limit} bytes"
            )
        try:
            async with body as stream:
                data: bytes = await stream.read()
        except (BotoCoreError, *_BODY_ERRORS) as exc:
            raise _BrokenBody(_describe(exc)) from None
        if length is not None and len(data) != length:
            raise _BrokenBody(f"got {len(data)} of {length} bytes")
        if len(data) > limit:
            raise SizeLimitExceededError(
                key, f"object is {len(data)} bytes, above the limit of {limit} bytes"
            )
        if self._check_md5:
            etag = str(response.get("ETag", "")).strip('"').lower()
            sse = response.get("ServerSideEncryption")
            if _MD5_ETAG.fullmatch(etag) and sse in (None, "AES256"):
                digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
                if digest != etag:
                    return data, digest
        return data, None

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, etag and date, or None if it does not exist."""
        _check_str(key, "key")
        client = await self.client()
        try:
            async with self._sem:
                response = await client.head_object(
                    Bucket=self.config.bucket, Key=key, **self._extra
                )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                return None
            raise self._error(exc, f"object {key!r}", key) from None
        except (BotoCoreError, *_BODY_ERRORS) as exc:
            raise self._error(exc, f"object {key!r}", key) from None
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
        )
