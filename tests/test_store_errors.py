"""Every exception the S3 seam can see leaves it as a KL3MError of the right class and kind.

The first tests enumerate the exception classes of ``botocore.exceptions`` and
``aiohttp.client_exceptions`` (as httpx's test of its transport-error mapping does), build
one of each and pass it through the store's mapping; the last ones get the errors over real
HTTP (moto behind the fault proxy) and check cause, status and request id.
"""

from __future__ import annotations

import asyncio
import inspect
import string
from collections.abc import Iterator
from typing import Any

import aiohttp
import aiohttp.client_exceptions as aiohttp_exceptions
import botocore.exceptions as botocore_exceptions
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from faultkit import proxied_kwargs
from kl3m_data_client import (
    AccessDeniedError,
    AsyncKL3MClient,
    BucketNotFoundError,
    ConnectionFailedError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    ServiceError,
    UntrustedResponseError,
)
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import is_per_object
from kl3m_data_client._store import S3Store
from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import Fault, FaultPlan, FaultProxy
from kl3m_data_client.testing._faults import RequestInfo as Req

KEY = "documents/usc/one.json"
WHAT = f"object {KEY!r}"

# -- botocore ------------------------------------------------------------------------------
CREDENTIALS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "UnknownCredentialError",
    "NoAuthTokenError",
    "TokenRetrievalError",
    "RefreshWithMFAUnsupportedError",
    "MetadataRetrievalError",
    "SSOError",
    "SSOTokenLoadError",
    "UnauthorizedSSOTokenError",
    "PendingAuthorizationExpiredError",
    "LoginError",
    "LoginRefreshRequired",
    "LoginInsufficientPermissions",
    "LoginTokenLoadError",
    "LoginAuthorizationCodeError",
}
WIRE = {
    "HTTPClientError",
    "ConnectionError",
    "EndpointConnectionError",
    "SSLError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ProxyConnectionError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ChecksumError",
    "FlexibleChecksumError",
    "CapacityNotAvailableError",
}
CONFIGURATION = {"ProfileNotFound", "ConfigNotFound", "ConfigParseError", "InvalidConfigError"}
CONFIGURATION_SUB = {"InfiniteLoopConfigError"}


def _module_classes(module: Any) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Exception)
        and not issubclass(obj, Warning)
        and obj.__module__ == module.__name__
    ]


def _client_error(
    code: str, status: int, message: str = "m", headers: dict[str, str] | None = None
) -> botocore_exceptions.ClientError:
    return botocore_exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "HTTPStatusCode": status,
                "RequestId": "REQ123",
                "HTTPHeaders": headers or {},
            },
        },
        "GetObject",
    )


def _build_botocore(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, botocore_exceptions.ClientError):
        return cls({"Error": {"Code": "X", "Message": "m"}}, "GetObject")
    fmt = getattr(cls, "fmt", "")
    names = {field for _, field, _, _ in string.Formatter().parse(fmt) if field}
    kwargs = {name.split(".")[0].split("[")[0]: "x" for name in names}
    if cls.__name__ == "ParamValidationError":
        kwargs = {"report": "x"}
    if cls.__name__ == "WaiterError":
        return cls(name="x", reason="x", last_response={})
    return cls(**kwargs)


def _store() -> S3Store:
    return S3Store(ClientConfig(endpoint_url="http://127.0.0.1:9"))


def _expected_botocore(cls: type[BaseException]) -> type[KL3MError]:
    names = {c.__name__ for c in cls.__mro__}
    if names & CREDENTIALS:
        return AccessDeniedError
    if names & WIRE:
        return ConnectionFailedError
    if names & (CONFIGURATION | CONFIGURATION_SUB):
        return InvalidInputError
    return ServiceError


BOTOCORE = [
    c
    for c in _module_classes(botocore_exceptions)
    if not issubclass(c, botocore_exceptions.ClientError)
]


def test_the_enumeration_is_not_empty() -> None:
    assert len(BOTOCORE) > 80
    assert {c.__name__ for c in BOTOCORE} >= CREDENTIALS - {
        "LoginError",
        "LoginRefreshRequired",
        "LoginInsufficientPermissions",
        "LoginTokenLoadError",
        "LoginAuthorizationCodeError",
        "PendingAuthorizationExpiredError",
    }
    assert {c.__name__ for c in BOTOCORE} >= WIRE | CONFIGURATION


@pytest.mark.parametrize("cls", BOTOCORE, ids=lambda c: c.__name__)
def test_every_botocore_exception_is_mapped(cls: type[BaseException]) -> None:
    exc = _build_botocore(cls)
    mapped = _store()._error(exc, WHAT, KEY)
    assert type(mapped) is _expected_botocore(cls), (cls, mapped)
    # none of them concerns one object: the run must wait/stop, not record and go on
    assert mapped.per_object is False and not is_per_object(mapped)
    assert mapped.key == KEY
    assert str(mapped)


CLIENT_ERRORS: list[tuple[str, int, type[KL3MError], bool]] = [
    ("NoSuchKey", 404, NotFoundError, True),
    ("404", 404, NotFoundError, True),
    ("InvalidObjectState", 403, ServiceError, True),
    ("ObjectNotInActiveTierError", 403, ServiceError, True),
    ("NoSuchVersion", 404, ServiceError, True),
    ("KeyTooLongError", 400, ServiceError, True),
    ("NoSuchBucket", 404, BucketNotFoundError, False),
    ("AccessDenied", 403, AccessDeniedError, False),
    ("403", 403, AccessDeniedError, False),
    ("AllAccessDisabled", 403, AccessDeniedError, False),
    ("ExpiredToken", 400, AccessDeniedError, False),
    ("InvalidToken", 400, AccessDeniedError, False),
    ("InvalidAccessKeyId", 403, AccessDeniedError, False),
    ("SignatureDoesNotMatch", 403, AccessDeniedError, False),
    ("InternalError", 500, ServiceError, False),
    ("SlowDown", 503, ServiceError, False),
    ("ServiceUnavailable", 503, ServiceError, False),
    ("TooManyRequestsException", 429, ServiceError, False),
    ("RequestTimeout", 400, ServiceError, False),
    ("InvalidArgument", 400, ServiceError, False),
    ("PermanentRedirect", 301, UntrustedResponseError, False),
    ("TemporaryRedirect", 307, UntrustedResponseError, False),
]


@pytest.mark.parametrize(("code", "status", "cls", "per_object"), CLIENT_ERRORS)
def test_client_errors_by_code(
    code: str, status: int, cls: type[KL3MError], per_object: bool
) -> None:
    mapped = _store()._error(_client_error(code, status), WHAT, KEY)
    assert type(mapped) is cls
    assert mapped.per_object is per_object
    assert (mapped.key, mapped.status, mapped.request_id) == (KEY, status, "REQ123")


def test_redirect_names_the_target_host() -> None:
    exc = _client_error(
        "TemporaryRedirect", 307, headers={"location": "http://evil.example:8443/b/k"}
    )
    mapped = _store()._error(exc, WHAT, KEY)
    assert isinstance(mapped, ServiceError) and mapped.per_object is False
    assert "another host evil.example:8443" in str(mapped) and KEY in str(mapped)


# -- aiohttp -------------------------------------------------------------------------------
_REQUEST = RequestInfo(
    URL("http://127.0.0.1/b/k"), "GET", CIMultiDictProxy(CIMultiDict()), URL("http://127.0.0.1/b/k")
)
_CONNECTION = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)


def _build_aiohttp(cls: type[BaseException]) -> BaseException:
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if params[:2] == ["request_info", "history"]:
        return cls(_REQUEST, (), status=502, message="bad gateway")  # type: ignore[call-arg]
    if params[:3] == ["path", "connection_key", "os_error"]:
        return cls("/tmp/s", _CONNECTION, OSError(111, "refused"))  # type: ignore[call-arg]
    if params[:2] == ["connection_key", "os_error"]:
        return cls(_CONNECTION, OSError(111, "refused"))  # type: ignore[call-arg]
    if params[:2] == ["connection_key", "certificate_error"]:
        return cls(_CONNECTION, ValueError("bad certificate"))  # type: ignore[call-arg]
    if params[:1] == ["url"]:
        return cls("http://elsewhere.example/")  # type: ignore[call-arg]
    if cls is aiohttp.ServerFingerprintMismatch:
        return cls(b"a", b"b", "127.0.0.1", 9)
    return cls("x")


AIOHTTP = _module_classes(aiohttp_exceptions)


def _expected_aiohttp(cls: type[BaseException]) -> type[KL3MError]:
    if issubclass(cls, (aiohttp.TooManyRedirects, aiohttp.RedirectClientError)):
        return UntrustedResponseError  # no redirect is ever followed
    if issubclass(cls, aiohttp.ClientResponseError):
        return ServiceError
    if not issubclass(cls, (aiohttp.ClientError, OSError)):
        return ServiceError  # not a transport error (WSMessageTypeError): unexpected, systemic
    return ConnectionFailedError


@pytest.mark.parametrize("cls", AIOHTTP, ids=lambda c: c.__name__)
def test_every_aiohttp_exception_is_mapped(cls: type[BaseException]) -> None:
    exc = _build_aiohttp(cls)
    mapped = _store()._error(exc, WHAT, KEY)
    assert type(mapped) is _expected_aiohttp(cls), (cls, mapped)
    assert mapped.per_object is False
    assert mapped.key == KEY


@pytest.mark.parametrize(
    "exc",
    [asyncio.TimeoutError(), TimeoutError(), OSError(104, "reset"), ConnectionResetError()],
    ids=repr,
)
def test_os_level_failures_are_connection_failures(exc: BaseException) -> None:
    mapped = _store()._error(exc, WHAT, KEY)
    assert type(mapped) is ConnectionFailedError and mapped.per_object is False


def test_the_enumerations_cover_the_modules() -> None:
    assert len(AIOHTTP) >= 25
    assert aiohttp.ClientPayloadError in AIOHTTP and aiohttp.TooManyRedirects in AIOHTTP


# -- over real HTTP ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    b = kl3m_server.create_bucket(n_documents=10, seed=5)
    try:
        yield b
    finally:
        b.close()


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_errors_over_http_keep_cause_status_and_request_id(bucket: LocalBucket) -> None:
    doc = bucket.corpus.documents[0]
    key = doc.document_key
    plan = FaultPlan(rate=1.0, kinds={Fault.ERROR_500}, max_faults_per_request=None)
    async with (
        FaultProxy(bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**proxied_kwargs(bucket, proxy, max_attempts=2)) as client,
    ):
        with pytest.raises(ServiceError) as got:
            await client._store.get(key)
    error = got.value
    assert (error.key, error.status, error.request_id) == (key, 500, "FAULTPROXY")
    assert error.per_object is False
    assert isinstance(error.__cause__, botocore_exceptions.ClientError)

    def codes(info: Req) -> str | None:
        if info.operation != "GetObject":
            return None
        return "InvalidObjectState" if "archived" in info.path else "ExpiredToken"

    async with (
        FaultProxy(bucket.endpoint_url, FaultPlan(rate=0.0, credential_check=codes)) as proxy,
        AsyncKL3MClient(**proxied_kwargs(bucket, proxy)) as client,
    ):
        with pytest.raises(ServiceError) as archived:
            await client._store.get("documents/x/archived.json")
        with pytest.raises(AccessDeniedError) as expired:
            await client._store.get(key)
    assert archived.value.per_object is True and archived.value.status == 403
    assert archived.value.key == "documents/x/archived.json"
    assert expired.value.per_object is False and expired.value.status == 403
    assert expired.value.request_id == "FAULTPROXY"
    for exc in (archived.value, expired.value):
        assert isinstance(exc.__cause__, botocore_exceptions.ClientError)

    plan = FaultPlan(rate=1.0, kinds={Fault.RESET_BEFORE}, max_faults_per_request=None)
    async with (
        FaultProxy(bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**proxied_kwargs(bucket, proxy, max_attempts=2)) as client,
    ):
        with pytest.raises(ConnectionFailedError) as reset:
            await client._store.get(key)
    assert reset.value.key == key and reset.value.per_object is False
    assert isinstance(reset.value.__cause__, botocore_exceptions.BotoCoreError)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_missing_bucket_and_missing_key(bucket: LocalBucket) -> None:
    kwargs = {**bucket.client_kwargs(), "bucket": "no-such-bucket.kl3m.local", "max_attempts": 1}
    async with AsyncKL3MClient(**kwargs) as client:
        with pytest.raises(BucketNotFoundError) as got:
            async for _ in client._store.list_pages("documents/"):
                pass
        assert got.value.per_object is False and got.value.status == 404
        assert got.value.__cause__ is not None
    async with AsyncKL3MClient(**bucket.client_kwargs()) as client:
        assert await client._store.get("documents/usc/no-such-document.json") is None
        assert await client._store.head("documents/usc/no-such-document.json") is None
