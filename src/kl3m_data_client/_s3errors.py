"""How failures of S3 requests become :mod:`_errors` exceptions, and the retry backoff.

One home for the mapping of botocore / aiohttp failures to :class:`KL3MError` (class,
``per_object``, status, request id, redacted message), used by the store, the boto3 seam
and the 0.2.0 helpers.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from botocore import exceptions as _bex
from botocore.exceptions import (
    ChecksumError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    CredentialRetrievalError,
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
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from kl3m_data_client._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConnectionFailedError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    ServiceError,
    UntrustedResponseError,
)
from kl3m_data_client._redact import redact_exception as scrub

NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
#: S3 error codes that concern one object only (archived, gone version, key too long...):
#: recorded for that object, the run goes on.
_PER_OBJECT_CODES = frozenset(
    {"InvalidObjectState", "ObjectNotInActiveTierError", "NoSuchVersion", "KeyTooLongError"}
)
#: Failures while a body is read (the GET is made again).
BODY_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    asyncio.TimeoutError,
    ResponseStreamingError,
    ReadTimeoutError,
    BotoConnectionError,
    ConnectionError,
)
#: botocore failures to obtain or use credentials (systemic: AccessDeniedError).
CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
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
#: aiohttp's refusals of a redirect (none are followed, see ``_http.NoRedirectHTTPSession``).
_REDIRECT_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.TooManyRedirects,
    aiohttp.RedirectClientError,
)
_ACCESS_HINT = (
    "check your AWS credentials (environment, ~/.aws, --profile), the region, and whether "
    "the bucket needs requester_pays=True or anonymous=True"
)


class BrokenBody(Exception):
    """A body that broke while it was read, or does not match its length or ETag."""


class Spent(Exception):
    """botocore gave up after its own retries: do not retry again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def redirect_target(location: str, endpoint: str | None) -> str:
    """The host (and port) a ``Location`` points to, or a note that it is the endpoint's."""
    target = urlsplit(location)
    if not target.netloc:
        return "the same host" if location else "no Location header"
    if endpoint and urlsplit(endpoint).netloc.lower() == target.netloc.lower():
        return f"the same host {target.netloc}"
    return f"another host {target.netloc}"


def check_str(value: object, what: str, *, empty: bool = False) -> str:
    """``value`` if it is a string (non-empty unless ``empty``), else InvalidInputError."""
    if not isinstance(value, str) or not (value or empty):
        kind = "a string" if empty else "a non-empty string"
        raise InvalidInputError(f"{what} must be {kind}, got {value!r}")
    return value


def describe(exc: BaseException) -> str:
    """``exc`` in a few words: its class and message."""
    text = str(exc)
    if isinstance(exc, BrokenBody):
        return f"broken body ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def map_error(
    exc: BaseException,
    what: str,
    *,
    bucket: str,
    endpoint_url: str | None = None,
    key: str | None = None,
) -> KL3MError:
    """The KL3MError for ``exc`` (raise it ``from exc``): class, ``per_object``, status.

    Per object: NoSuchKey (NotFoundError) and the S3 codes of one object's state
    (``InvalidObjectState``...). Everything else is systemic: 5xx and throttling after
    retries, redirects, access and credentials, connections, configuration.
    """
    scrub(exc)
    where = endpoint_url or "S3"
    if isinstance(exc, ClientError):
        return _answer_error(exc, what, bucket=bucket, endpoint_url=endpoint_url, key=key)
    if isinstance(exc, CREDENTIAL_ERRORS):
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
        exc, (*_WIRE_ERRORS, aiohttp.ClientError, OSError, asyncio.TimeoutError, BrokenBody)
    ):
        return ConnectionFailedError(
            f"cannot reach {where} for {what}: {describe(exc)}; "
            "check the endpoint, region and network",
            key=key,
        )
    if isinstance(exc, _CONFIG_ERRORS):
        return InvalidInputError(
            f"the AWS configuration is not usable for {what}: {describe(exc)}",
            key=key,
            per_object=False,
        )
    return ServiceError(
        f"unexpected failure for {what}: {describe(exc)}", key=key, per_object=False
    )


def _answer_error(
    exc: ClientError, what: str, *, bucket: str, endpoint_url: str | None, key: str | None
) -> KL3MError:
    """:func:`map_error` for an S3 answer (a botocore ``ClientError``)."""
    where = endpoint_url or "S3"
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
        target = redirect_target(str(headers.get("location", "")), endpoint_url)
        why = (
            "redirects to another host are never followed and no credentials were sent there"
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
    if code in NOT_FOUND:
        return NotFoundError(f"{what} not found in bucket {bucket!r}", **info)
    return ServiceError(
        f"S3 error {code or status} for {what}: {message}".rstrip(": "),
        code=code or None,
        **info,
    )


def failed(
    what: str,
    attempt: int,
    started: float,
    exc: BaseException,
    *,
    endpoint_url: str | None,
    key: str | None = None,
) -> KL3MError:
    """The ConnectionFailedError of a request that failed ``attempt`` times since ``started``."""
    scrub(exc)
    elapsed = time.monotonic() - started
    return ConnectionFailedError(
        f"{what} failed after {attempt} attempt(s) in {elapsed:.1f}s against "
        f"{endpoint_url or 'S3'}: {describe(exc)}",
        key=key,
    )


async def backoff(attempt: int, deadline: float | None = None) -> None:
    """Sleep ``0.05 * 2**attempt`` s (capped at 5 s) with +-50% jitter, within ``deadline``."""
    delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
    if deadline is not None:
        delay = min(delay, max(0.0, deadline - time.monotonic()))
    await asyncio.sleep(delay)
