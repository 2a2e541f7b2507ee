"""The S3 seam: list a prefix, get an object, head an object, over aiobotocore.

Every request of :class:`AsyncKL3MClient` (so of the blocking client, the export and the Ray
integration) goes through a store: this one, or ``_boto3_store.Boto3Store`` over a caller's
boto3 client (``KL3MClient(s3_client=...)``). Other S3 I/O: the 0.2.0 helpers of
``utils.s3`` (and ``operations.index``) call the botocore client they are given, and
``testing`` uploads to its local server.

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore import exceptions as _bex
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidConfigError,
    MetadataRetrievalError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    RefreshWithMFAUnsupportedError,
    ResponseStreamingError,
    TokenRetrievalError,
    UnknownCredentialError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from kl3m_data_client._budget import NeedRoom
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
    UntrustedResponseError,
)
from kl3m_data_client._redact import install_log_redaction, remember_secrets
from kl3m_data_client._redact import redact_exception as scrub
from kl3m_data_client._stream import within
from kl3m_data_client._timestamps import install as install_fast_timestamps

logger = logging.getLogger("kl3m_data_client")
T = TypeVar("T")

#: Connections kept beyond ``max_concurrency`` so that listings never wait behind GETs.
LISTING_CONNECTIONS = 4
#: Consecutive truncated listing pages without a key (or common prefix) inside the prefix
#: before a listing is refused as endless.
MAX_EMPTY_PAGES = 50
#: Bytes asked of the connection per read of a body (the size limit is checked per read).
READ_CHUNK = 1 << 20

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
#: S3 error codes that concern one object only (archived, gone version, key too long...):
#: recorded for that object, the run goes on.
_PER_OBJECT_CODES = frozenset(
    {"InvalidObjectState", "ObjectNotInActiveTierError", "NoSuchVersion", "KeyTooLongError"}
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
#: botocore failures to obtain or use credentials (systemic: AccessDeniedError).
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    UnknownCredentialError,
    NoAuthTokenError,
    TokenRetrievalError,
    RefreshWithMFAUnsupportedError,
    MetadataRetrievalError,
    _bex.SSOError,
    *((_bex.LoginError,) if hasattr(_bex, "LoginError") else ()),
)
#: botocore failures on the wire (systemic: ConnectionFailedError).
_WIRE_ERRORS: tuple[type[Exception], ...] = (
    HTTPClientError,
    BotoConnectionError,
    IncompleteReadError,
    ChecksumError,
    _bex.FlexibleChecksumError,
    _bex.CapacityNotAvailableError,
    ResponseParserError,
)
#: botocore failures of the local configuration (systemic InvalidInputError).
_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    ProfileNotFound,
    ConfigNotFound,
    ConfigParseError,
    InvalidConfigError,
)
#: aiohttp's refusals of a redirect (none are followed, see :class:`NoRedirectHTTPSession`).
_REDIRECT_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.TooManyRedirects,
    aiohttp.RedirectClientError,
)
_ACCESS_HINT = (
    "check your AWS credentials (environment, ~/.aws, --profile), the region, and whether "
    "the bucket needs requester_pays=True or anonymous=True"
)
_CREDENTIAL_IN_AUTH = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed or HEADed object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(slots=True)
class ListPage:
    """One checked ListObjectsV2 page.

    ``objects`` and ``prefixes`` are inside the requested prefix and in strictly ascending
    order (within the page and after every earlier page). ``foreign`` holds the keys and
    common prefixes the server listed *outside* the prefix: they were skipped (and logged
    as warnings) and are never part of ``objects``. ``number`` counts pages from 1.
    """

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None
    foreign: list[str] = field(default_factory=list)
    number: int = 0


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


class _NoRedirects:
    """An aiohttp session seen through a facade whose requests never follow redirects."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        kwargs["allow_redirects"] = False
        return self._session.request(method, url, **kwargs)


class NoRedirectHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, except that no redirect is followed by aiohttp.

    aiohttp follows 301/302/303/307/308 by default, to any host, carrying the signed
    headers (``X-Amz-Security-Token`` included) and handing the other host's body to
    botocore. urllib3 under plain botocore follows none; with this session botocore sees
    every 3xx answer as it would there (its S3 region redirect re-resolves the endpoint
    from the bucket's region, never from the ``Location`` header). Installed with
    ``AioConfig(http_session_cls=...)``.
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        return _NoRedirects(await super()._get_session(proxy_url))


def _redirect_target(location: str, endpoint: str | None) -> str:
    """The host (and port) a ``Location`` points to, or a note that it is the endpoint's."""
    target = urlsplit(location)
    if not target.netloc:
        return "the same host" if location else "no Location header"
    if endpoint and urlsplit(endpoint).netloc.lower() == target.netloc.lower():
        return f"the same host {target.netloc}"
    return f"another host {target.netloc}"


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
        #: Seconds one object (or one listing page) may take, all attempts included, counted
        #: from the moment its request holds a concurrency slot.
        self.object_deadline: float = config.object_deadline or config.max_attempts * (
            config.connect_timeout + config.read_timeout
        )
        self._check_md5 = True
        self._signed_with: tuple[str, str] | None = None
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
        # few inputs instead (:func:`_check_str`)
        options = cfg.botocore_options(LISTING_CONNECTIONS, session)
        kwargs["config"] = AioConfig(
            **options, parameter_validation=False, http_session_cls=NoRedirectHTTPSession
        )
        install_log_redaction()
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(session.create_client("s3", **kwargs))
            await self._watch_credentials(session, client)
        except ProfileNotFound as exc:
            await stack.aclose()
            raise InvalidInputError(f"AWS profile {cfg.profile!r} not found") from exc
        except BotoCoreError as exc:
            await stack.aclose()
            if isinstance(exc, _CREDENTIAL_ERRORS):
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

    async def _watch_credentials(self, session: AioSession, client: Any) -> None:
        """Remember the secret key and token the session resolved, and every refresh of them.

        Explicit keys are remembered in ``__init__``; others come from botocore's chain
        (environment, profile, SSO, IMDS...) and refreshable ones change during a run. The
        session's credential object is public API (``get_credentials``,
        ``get_frozen_credentials``); a ``before-send`` hook notices a new access key id or
        token in the signed request and remembers the new values before anything is sent.
        """
        if self.config.anonymous or self.config.aws_access_key_id:
            return
        credentials = await session.get_credentials()
        if credentials is None:
            return

        async def freeze() -> None:
            frozen = await credentials.get_frozen_credentials()
            remember_secrets(frozen.secret_key, frozen.token)

        await freeze()

        async def on_send(request: Any, **_: Any) -> None:
            headers = request.headers
            token = _text(headers.get("X-Amz-Security-Token")) or ""
            match = _CREDENTIAL_IN_AUTH.search(_text(headers.get("Authorization")) or "")
            signed_with = (match.group(1) if match else "", token)
            if signed_with != self._signed_with:
                self._signed_with = signed_with
                remember_secrets(token)
                await freeze()

        client.meta.events.register("before-send.s3", on_send, unique_id="kl3m-remember-creds")

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
    def _error(self, exc: BaseException, what: str, key: str | None = None) -> KL3MError:
        """The KL3MError for ``exc`` (raise it ``from exc``): class, ``per_object``, status.

        Per object: NoSuchKey (NotFoundError) and the S3 codes of one object's state
        (``InvalidObjectState``...). Everything else is systemic: 5xx and throttling after
        retries, redirects, access and credentials, connections, configuration.
        """
        scrub(exc)
        bucket = self.config.bucket
        where = self.config.endpoint_url or "S3"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {}) or {}
            meta = exc.response.get("ResponseMetadata", {}) or {}
            headers = meta.get("HTTPHeaders", {}) or {}
            code = str(err.get("Code", "") or "")
            status = meta.get("HTTPStatusCode")
            info: dict[str, Any] = {
                "key": key,
                "status": status,
                "request_id": meta.get("RequestId") or headers.get("x-amz-request-id"),
            }
            if code == "NoSuchBucket":
                return BucketNotFoundError(f"bucket {bucket!r} does not exist", **info)
            if isinstance(status, int) and 300 <= status < 400:
                location = str(headers.get("location", ""))
                target = _redirect_target(location, self.config.endpoint_url)
                why = (
                    "redirects to another host are never followed and no credentials were "
                    "sent there"
                    if target.startswith("another")
                    else "botocore could not follow it"
                )
                return UntrustedResponseError(
                    f"{where} answered {what} with a redirect ({status}) to {target}; {why}: "
                    "check endpoint_url and region",
                    code=code or str(status),
                    **info,
                )
            message = err.get("Message") or ""
            if code in _PER_OBJECT_CODES:  # S3 answers 403 InvalidObjectState (archived)
                return ServiceError(
                    f"S3 error {code} for {what}: {message}".rstrip(": "),
                    code=code,
                    per_object=True,
                    **info,
                )
            if code in _DENIED or status == 403:
                return AccessDeniedError(
                    f"access denied to {what} in bucket {bucket!r}: {_ACCESS_HINT}", **info
                )
            if code in _BAD_CREDENTIALS:
                return AccessDeniedError(
                    f"S3 rejected the credentials ({code}) for {what}: {_ACCESS_HINT}", **info
                )
            if code in _NOT_FOUND:
                return NotFoundError(f"{what} not found in bucket {bucket!r}", **info)
            return ServiceError(
                f"S3 error {code or status} for {what}: {message}".rstrip(": "),
                code=code or None,
                **info,
            )
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return AccessDeniedError(
                f"no usable AWS credentials for {what} ({type(exc).__name__}): configure "
                "them (environment, ~/.aws, --profile) or use anonymous=True for public data",
                key=key,
            )
        if isinstance(exc, _REDIRECT_ERRORS):
            return UntrustedResponseError(
                f"{where} answered {what} with a redirect that is not followed: {exc}",
                key=key,
                code="Redirect",
            )
        if isinstance(exc, aiohttp.ClientResponseError):
            return ServiceError(
                f"HTTP error {exc.status} for {what} from {where}: {exc.message}",
                key=key,
                status=exc.status,
            )
        if isinstance(
            exc, (*_WIRE_ERRORS, aiohttp.ClientError, OSError, asyncio.TimeoutError, _BrokenBody)
        ):
            return ConnectionFailedError(
                f"cannot reach {where} for {what}: {_describe(exc)}; "
                "check the endpoint, region and network",
                key=key,
            )
        if isinstance(exc, _CONFIG_ERRORS):
            return InvalidInputError(
                f"the AWS configuration is not usable for {what}: {_describe(exc)}",
                key=key,
                per_object=False,
            )
        return ServiceError(
            f"unexpected failure for {what}: {_describe(exc)}", key=key, per_object=False
        )

    async def _backoff(self, attempt: int, deadline: float | None = None) -> None:
        """Sleep ``0.05 * 2**attempt`` s (capped at 5 s) with +-50% jitter, within ``deadline``."""
        delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(delay)

    def _failed(
        self, what: str, attempt: int, started: float, exc: BaseException, key: str | None = None
    ) -> KL3MError:
        scrub(exc)
        elapsed = time.monotonic() - started
        where = self.config.endpoint_url or "S3"
        return ConnectionFailedError(
            f"{what} failed after {attempt} attempt(s) in {elapsed:.1f}s against {where}: "
            f"{_describe(exc)}",
            key=key,
        )

    def _listing_error(self, prefix: str, number: int, reason: str) -> ServiceError:
        where = self.config.endpoint_url or "S3"
        return UntrustedResponseError(
            f"the listing of {prefix!r} from {where} cannot be trusted: page {number} {reason}",
            code="InvalidListing",
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
        """Yield checked ListObjectsV2 pages of ``prefix``; a failed page is retried from its token.

        Every page is checked before it is yielded (:class:`_ListingCheck`): keys and common
        prefixes strictly ascending across the whole listing and after ``start_after`` (so
        that resuming after the last key seen loses and repeats nothing), no continuation
        token used twice, a token on every truncated page, at most :data:`MAX_EMPTY_PAGES`
        truncated pages in a row with nothing in the prefix. A failed check raises
        :class:`ServiceError` (code ``InvalidListing``, systemic) naming the prefix and the
        page. Keys outside the prefix are skipped, logged and listed in ``ListPage.foreign``.
        """
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
        check = _ListingCheck(self, prefix, start_after or "")
        # The next page is requested while the caller consumes this one (one page ahead).
        ahead: asyncio.Future[Any] | None = None
        try:
            response = await self._list_once(client, params, prefix)
            while True:
                page = check.page(response)
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
                raise self._error(exc, what) from exc
            except (HTTPClientError, EndpointConnectionError, ConnectTimeoutError) as exc:
                # botocore already made max_attempts tries of this request
                attempts = max(attempt, self.config.max_attempts)
                raise self._failed(what, attempts, started, exc) from exc
            except (ResponseParserError, *_BODY_ERRORS) as exc:
                if attempt >= self.config.max_attempts or time.monotonic() >= deadline:
                    raise self._failed(what, attempt, started, exc) from exc
                logger.debug("retrying %s after %s", what, type(exc).__name__)
                await self._backoff(attempt, deadline)
            except BotoCoreError as exc:
                raise self._error(exc, what) from exc

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
        """
        _check_str(key, "key")
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
        while True:
            attempt += 1
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Deadline
                try:
                    data, digest = await within(self._get_once(client, key, admit), remaining)
                except asyncio.TimeoutError as exc:
                    raise _Deadline from exc
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
                raise self._error(exc, what, key) from exc
            except _Spent as exc:  # the HTTP client's own retries are spent
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
            except _BrokenBody as exc:
                if attempt >= self.config.max_attempts or time.monotonic() >= deadline:
                    raise self._failed(f"GET {key!r}", attempt, started, exc, key) from exc
                logger.debug("retrying GET %r after %s", key, exc)
                await self._backoff(attempt, deadline)
            except BotoCoreError as exc:
                raise self._error(exc, what, key) from exc

    async def _get_once(
        self, client: Any, key: str, admit: Callable[[int], bool] | None = None
    ) -> tuple[bytes, str | None]:
        """One GET: the bytes and, if they fail the ETag check, their digest."""
        try:
            response = await client.get_object(Bucket=self.config.bucket, Key=key, **self._extra)
        except HTTPClientError as exc:  # botocore's retries are spent
            raise _Spent(exc) from exc
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
        data = await self._read_body(body, key, length, limit, info)
        if self._check_md5:
            etag = str(response.get("ETag", "")).strip('"').lower()
            sse = response.get("ServerSideEncryption")
            if _MD5_ETAG.fullmatch(etag) and sse in (None, "AES256"):
                digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
                if digest != etag:
                    return data, digest
        return data, None

    async def _read_body(
        self, body: Any, key: str, length: int | None, limit: int, info: dict[str, Any]
    ) -> bytes:
        """Read ``body``, never more than ``limit`` bytes.

        With a ``Content-Length`` (already checked against ``limit``) the body is read as
        announced, in one call: the HTTP client reads no byte beyond it, and fewer bytes is a
        broken body. Without one (chunked), it is read in chunks and refused as soon as it
        passes ``limit``; the chunks are joined once at the end.
        """
        chunks: list[bytes] = []
        total = 0
        try:
            async with body as stream:
                if length is not None:  # announced, within the limit: read as announced
                    data: bytes = await stream.read()
                    if len(data) != length:
                        raise _BrokenBody(f"got {len(data)} of {length} bytes")
                    return data
                while True:
                    chunk = await stream.read(READ_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise SizeLimitExceededError(
                            key,
                            f"object body passed the limit of {limit} bytes while read "
                            "(no Content-Length)",
                            **info,
                        )
                    chunks.append(chunk)
        except (BotoCoreError, *_BODY_ERRORS) as exc:
            raise _BrokenBody(_describe(scrub(exc))) from exc
        return b"".join(chunks)

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
            raise self._error(exc, f"object {key!r}", key) from exc
        except (BotoCoreError, *_BODY_ERRORS) as exc:
            raise self._error(exc, f"object {key!r}", key) from exc
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            last_modified=response.get("LastModified"),
        )


def _text(value: object) -> str | None:
    """A header value as text (botocore keeps some as bytes)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class _ListingCheck:
    """Checks one listing page after the other (see :meth:`S3Store.list_pages`)."""

    def __init__(self, store: S3Store, prefix: str, start_after: str) -> None:
        self.store = store
        self.prefix = prefix
        #: The greatest key or common prefix accepted so far (keys must come after it).
        self.last = start_after
        self.number = 0
        self.empty_run = 0
        self.tokens: set[str] = set()

    def _fail(self, reason: str) -> ServiceError:
        return self.store._listing_error(self.prefix, self.number, reason)

    def _inside(self, name: str, kind: str, page: ListPage) -> bool:
        if name.startswith(self.prefix):
            return True
        page.foreign.append(name)
        self.store.foreign_keys.append(name)
        logger.warning(
            "listing of %r, page %d: skipped %s %r outside the prefix",
            self.prefix,
            self.number,
            kind,
            name,
        )
        return False

    def _ordered(self, names: list[str], kind: str) -> None:
        previous = self.last
        for name in names:
            if name == previous:
                raise self._fail(f"repeats the {kind} {name!r}")
            if name < previous:
                raise self._fail(f"lists the {kind} {name!r} after {previous!r} (not ascending)")
            previous = name

    def page(self, response: Any) -> ListPage:
        """The checked page of ``response``; raises ServiceError if it cannot be trusted."""
        self.number += 1
        page = ListPage(number=self.number)
        truncated = bool(response.get("IsTruncated"))
        token = response.get("NextContinuationToken") or None
        if truncated:
            if not isinstance(token, str):
                raise self._fail("is truncated but has no continuation token")
            if token in self.tokens:
                raise self._fail("repeats a continuation token (the listing would never end)")
            self.tokens.add(token)
        for item in response.get("Contents", ()) or ():
            key = item.get("Key")
            if not isinstance(key, str):
                raise self._fail(f"has an entry without a key: {item!r}")
            if self._inside(key, "key", page):
                page.objects.append(
                    ObjectInfo(
                        key=key,
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified"),
                    )
                )
        for entry in response.get("CommonPrefixes", ()) or ():
            name = entry.get("Prefix")
            if isinstance(name, str) and self._inside(name, "common prefix", page):
                page.prefixes.append(name)
        keys = [info.key for info in page.objects]
        self._ordered(keys, "key")
        self._ordered(page.prefixes, "common prefix")
        if keys and page.prefixes and set(keys) & set(page.prefixes):
            raise self._fail("lists the same name as a key and a common prefix")
        self.last = max([self.last, *keys[-1:], *page.prefixes[-1:]])
        if truncated:
            page.next_token = token
            if page.objects or page.prefixes:
                self.empty_run = 0
            else:
                self.empty_run += 1
                if self.empty_run > MAX_EMPTY_PAGES:
                    raise self._fail(
                        f"is the {self.empty_run}th truncated page in a row with nothing in "
                        f"the prefix (limit {MAX_EMPTY_PAGES})"
                    )
        return page
