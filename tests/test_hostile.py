"""A hostile S3 endpoint: redirects, lying listings, oversize and mis-sized bodies, echoes.

moto server <- FaultProxy (hostile misbehaviours) <- AsyncKL3MClient, over real HTTP. Each
case ends in bounded time (pytest-timeout marks) with a clear KL3MError or the clean data;
no request reaches the other host of a redirect, nothing outside the dataset is returned.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from faultkit import proxied_kwargs
from kl3m_data_client import (
    AsyncKL3MClient,
    ConnectionFailedError,
    KL3MError,
    ServiceError,
    SizeLimitExceededError,
    UntrustedResponseError,
)
from kl3m_data_client._formats import Limits
from kl3m_data_client._listing import MAX_EMPTY_PAGES
from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import Fault, FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

FOREIGN = "private/secret.json"
#: Both data planes of GETs: each hostile GET case holds on either.
PLANES = pytest.mark.parametrize("plane", ["obstore", "aiobotocore"])


@pytest.fixture(scope="module")
def hostile_bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    bucket = kl3m_server.create_bucket(n_documents=60, seed=11)
    # an object a client that trusted the listing would fetch and export
    bucket.put_objects({FOREIGN: b'{"id": "not part of any dataset"}'})
    try:
        yield bucket
    finally:
        bucket.close()


def _plan(kind: Fault, **over: Any) -> FaultPlan:
    return FaultPlan(**{"rate": 1.0, "kinds": {kind}, "max_faults_per_request": None, **over})


def _dataset(bucket: LocalBucket) -> tuple[str, list[str]]:
    docs = bucket.corpus.documents
    counts = collections.Counter(d.dataset_id for d in docs)
    dataset = max(sorted(counts), key=lambda ds: counts[ds])
    return dataset, sorted(d.document_id for d in bucket.corpus.dataset_documents(dataset))


# -- redirects -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
@PLANES
async def test_redirect_to_another_host_is_never_followed(
    hostile_bucket: LocalBucket, status: int, plane: str
) -> None:
    doc = hostile_bucket.corpus.documents[0]
    plan = _plan(Fault.REDIRECT_OTHER_HOST, redirect_status=status)
    token = "kl3mREDIRECTtoken-must-stay-home-0123456789"
    async with (
        FaultProxy(hostile_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(
            **proxied_kwargs(hostile_bucket, proxy, data_plane=plane), aws_session_token=token
        ) as client,
    ):
        other = f"{proxy.other.name}:{proxy.other.port}"
        with pytest.raises(ServiceError) as got:
            await client._store.get(doc.document_key)
        if plane == "obstore":  # obstore's redirected request hit the dead-end proxy
            assert client._store.plane is not None
            assert client._store.plane.fallbacks == 1
        error = got.value
        assert isinstance(error, UntrustedResponseError) and error.per_object is False
        assert error.key == doc.document_key
        assert error.status == status
        assert doc.document_key in str(error) and f"another host {other}" in str(error)
        assert error.__cause__ is not None
        # listings and HEADs are refused the same way
        with pytest.raises(ServiceError, match="another host"):
            async for _ in client._store.list_pages("documents/"):
                pass
        with pytest.raises(ServiceError, match="another host"):
            await client.exists(doc.dataset_id, doc.document_id)
    assert proxy.fired[Fault.REDIRECT_OTHER_HOST] >= 3
    assert proxy.other.requests == []  # never contacted: no token, no body used
    assert token not in str(error)


@pytest.mark.timeout(60)
@PLANES
async def test_redirect_to_the_endpoints_host_on_another_port(
    hostile_bucket: LocalBucket, plane: str
) -> None:
    """The one case where the planes differ (docs/aws.md): the trust unit of the obstore
    plane is the endpoint's host name, as ``NO_PROXY`` matches it (ports are not part of
    it); aiobotocore follows no redirect at all."""
    doc = hostile_bucket.corpus.documents[2]
    body = hostile_bucket.corpus.objects[doc.document_key]
    bucket = hostile_bucket.bucket
    plan = _plan(Fault.REDIRECT_OTHER_PORT, redirect_status=307, redirect_body=body)
    async with (
        FaultProxy(hostile_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**proxied_kwargs(hostile_bucket, proxy, data_plane=plane)) as client,
    ):
        assert client._store.plane is None or plane == "obstore"
        if plane == "aiobotocore":
            other = f"127.0.0.1:{proxy.other.port}"
            with pytest.raises(UntrustedResponseError, match=f"another host {other}"):
                await client._store.get(doc.document_key)
            assert proxy.other.requests == []
            assert proxy.fired[Fault.REDIRECT_OTHER_PORT] >= 1
        else:  # followed by obstore, once, to the same path
            assert await client._store.get(doc.document_key) == body
            assert [r.path for r in proxy.other.requests] == [f"/{bucket}/{doc.document_key}"]
            assert proxy.fired[Fault.REDIRECT_OTHER_PORT] == 1


@pytest.mark.timeout(60)
async def test_same_host_region_redirect_goes_through_botocore(
    hostile_bucket: LocalBucket,
) -> None:
    """S3's 301 PermanentRedirect with x-amz-bucket-region: botocore re-sends, data is right."""
    doc = hostile_bucket.corpus.documents[1]
    plan = _plan(Fault.REDIRECT_SAME_HOST, redirect_status=301, max_faults_per_request=1)
    async with (
        FaultProxy(hostile_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**proxied_kwargs(hostile_bucket, proxy)) as client,
    ):
        data = await client._store.get(doc.document_key)
    assert data == hostile_bucket.corpus.objects[doc.document_key]
    assert proxy.fired[Fault.REDIRECT_SAME_HOST] == 1
    assert proxy.requests["GetObject"] == 2


# -- listings ------------------------------------------------------------------------------
LISTING_CASES = [
    (Fault.LIST_TOKEN_LOOP, "page 2 repeats a continuation token"),
    (Fault.LIST_NO_TOKEN, "page 1 is truncated but has no continuation token"),
    (Fault.LIST_EMPTY_PAGES, f"page {MAX_EMPTY_PAGES + 1} is the"),
    (Fault.LIST_REPEAT_KEY, "page 1 repeats the key"),
    (Fault.LIST_OUT_OF_ORDER, "page 1 lists the key"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "expected"), LISTING_CASES)
async def test_untrustworthy_listing_fails_naming_prefix_and_page(
    hostile_bucket: LocalBucket, kind: Fault, expected: str
) -> None:
    dataset, _ = _dataset(hostile_bucket)
    async with (
        FaultProxy(hostile_bucket.endpoint_url, _plan(kind)) as proxy,
        AsyncKL3MClient(**proxied_kwargs(hostile_bucket, proxy)) as client,
    ):
        seen: list[str] = []
        with pytest.raises(ServiceError) as got:
            async for page in client._store.list_pages("documents/", page_size=10):
                seen += [o.key for o in page.objects]
        # the blocking iteration of a dataset ends the same way
        with pytest.raises(ServiceError, match="cannot be trusted"):
            async for _ in client.stream_documents(dataset):
                pass
    error = got.value
    assert isinstance(error, UntrustedResponseError)
    assert error.per_object is False and error.code == "InvalidListing"
    assert "'documents/'" in str(error) and expected in str(error), str(error)
    assert len(seen) == len(set(seen))  # nothing yielded twice before the failure
    assert proxy.fired[kind] >= 1
    if kind is Fault.LIST_EMPTY_PAGES:
        assert proxy.fired[kind] <= 2 * (MAX_EMPTY_PAGES + 2)  # stopped, not endless


@pytest.mark.timeout(60)
async def test_keys_outside_the_prefix_are_skipped_and_reported(
    hostile_bucket: LocalBucket, caplog: pytest.LogCaptureFixture
) -> None:
    dataset, ids = _dataset(hostile_bucket)
    prefix = f"documents/{dataset}/"
    async with (
        FaultProxy(hostile_bucket.endpoint_url, _plan(Fault.LIST_FOREIGN_KEY)) as proxy,
        AsyncKL3MClient(**proxied_kwargs(hostile_bucket, proxy)) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="kl3m_data_client"):
            pages = [page async for page in client._store.list_pages(prefix, page_size=7)]
            streamed = [d.document_id async for d in client.stream_documents(dataset)]
        recorded = list(client._store.foreign_keys)
    foreign = [k for p in pages for k in p.foreign]
    assert foreign == [FOREIGN] * len(pages)
    assert recorded[: len(pages)] == foreign and set(recorded) == {FOREIGN}
    assert all(o.key.startswith(prefix) for p in pages for o in p.objects)
    assert [p.number for p in pages] == list(range(1, len(pages) + 1))
    assert sorted(streamed) == ids  # every document once, nothing from outside
    assert any(FOREIGN in r.getMessage() and prefix in r.getMessage() for r in caplog.records)
    assert proxy.fired[Fault.LIST_FOREIGN_KEY] >= len(pages)


# -- bodies --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@PLANES
async def test_chunked_oversize_body_is_refused_while_read(
    hostile_bucket: LocalBucket, plane: str
) -> None:
    doc = hostile_bucket.corpus.documents[0]
    limit = 4 << 20
    plan = _plan(Fault.CHUNKED_OVERSIZE, oversize_bytes=200 << 20)
    async with (
        FaultProxy(hostile_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(
            **proxied_kwargs(hostile_bucket, proxy, data_plane=plane),
            limits=Limits(max_object_bytes=limit),
        ) as client,
    ):
        with pytest.raises(SizeLimitExceededError) as got:
            await client._store.get(doc.document_key)
        # obstore refuses a body without a Content-Length: aiobotocore reads it, limited
        assert (client._store.plane is not None) is (plane == "obstore")
    assert got.value.per_object is True and got.value.key == doc.document_key
    assert "no Content-Length" in str(got.value)
    assert proxy.fired[Fault.CHUNKED_OVERSIZE] == (2 if plane == "obstore" else 1)
    # far less than the 200 MiB offered: the limit plus socket buffers
    assert proxy.oversize_sent < 64 << 20, proxy.oversize_sent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [Fault.LENGTH_SHORT, Fault.LENGTH_LONG])
@PLANES
async def test_wrong_content_length_is_a_broken_body(
    hostile_bucket: LocalBucket, kind: Fault, plane: str
) -> None:
    doc = hostile_bucket.corpus.documents[2]
    kwargs = proxied_kwargs(hostile_bucket, FaultProxy("http://unused"), data_plane=plane)
    async with FaultProxy(hostile_bucket.endpoint_url, _plan(kind)) as proxy:
        kwargs.update(endpoint_url=proxy.endpoint_url, max_attempts=3)
        async with AsyncKL3MClient(**kwargs) as client:
            with pytest.raises(ConnectionFailedError) as got:
                await client._store.get(doc.document_key)
            assert (client._store.plane is not None) is (plane == "obstore")
    assert got.value.per_object is False and got.value.key == doc.document_key
    assert got.value.__cause__ is not None
    assert proxy.fired[kind] >= 2  # retried, never returned


# -- deadlines -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@PLANES
async def test_deadline_counts_from_the_concurrency_slot(
    hostile_bucket: LocalBucket, plane: str
) -> None:
    """max_concurrency=1, 0.3 s per GET, deadline 1.2 s: all six GETs complete (a deadline
    started before the slot would expire for the fifth and sixth, queued 1.2 s and 1.5 s)."""
    docs = hostile_bucket.corpus.documents[:6]
    plan = FaultPlan(rate=0.0, latency=0.3)
    async with (
        FaultProxy(hostile_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(
            **proxied_kwargs(hostile_bucket, proxy, max_concurrency=1, data_plane=plane),
            object_deadline=1.2,
        ) as client,
    ):
        got = await asyncio.gather(*(client._store.get(d.document_key) for d in docs))
        gets = client._store.plane.gets if client._store.plane is not None else 0
    assert gets == (len(docs) if plane == "obstore" else 0)
    assert got == [hostile_bucket.corpus.objects[d.document_key] for d in docs]
    assert proxy.requests["GetObject"] == len(docs)


# -- secrets echoed by the server ----------------------------------------------------------
def _all_text(exc: BaseException) -> str:
    return "\n".join(
        [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    )


@pytest.mark.timeout(60)
async def test_echoed_session_token_from_the_environment_is_redacted(
    hostile_bucket: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "kl3mENVtoken-echoed-by-a-hostile-server-9876543210"
    secret = "kl3mENVsecret-0123456789abcdefghij"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAKL3MENVTEST00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    doc = hostile_bucket.corpus.documents[0]
    kwargs = proxied_kwargs(hostile_bucket, FaultProxy("http://unused"))
    del kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"]
    async with FaultProxy(hostile_bucket.endpoint_url, _plan(Fault.ECHO_HEADERS)) as proxy:
        kwargs["endpoint_url"] = proxy.endpoint_url
        async with AsyncKL3MClient(**kwargs) as client:
            with pytest.raises(ServiceError) as got:
                await client._store.get(doc.document_key)
    text = _all_text(got.value)
    assert "We received" in text and "X-Amz-Security-Token is" in text  # it was echoed
    assert token not in text and secret not in text
    assert got.value.status == 400 and got.value.request_id == "FAULTPROXY"
    assert got.value.__cause__ is not None and token not in str(got.value.__cause__)


class _Issuer:
    """Credentials valid ``ttl`` seconds; every refresh issues a new token and secret."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.issued: list[dict[str, str]] = []

    async def refresh(self) -> dict[str, str]:
        from datetime import datetime, timedelta, timezone

        n = len(self.issued) + 1
        creds = {
            "access_key": f"AKIDKL3MGEN{n:05d}",
            "secret_key": f"kl3mREFRESHsecret-generation-{n:04d}-abcdef",
            "token": f"kl3mREFRESHtoken-generation-{n:04d}-0123456789",
            "expiry_time": (datetime.now(timezone.utc) + timedelta(seconds=self.ttl)).isoformat(),
        }
        self.issued.append(creds)
        return creds


class _ShortLived(AioRefreshableCredentials):  # type: ignore[misc]
    _advisory_refresh_timeout = 0.6
    _mandatory_refresh_timeout = 0.4


class _Provider(CredentialProvider):  # type: ignore[misc]
    METHOD = "kl3m-test-refreshing"
    CANONICAL_NAME = "kl3m-test-refreshing"

    def __init__(self, issuer: _Issuer) -> None:
        self.issuer = issuer

    async def load(self) -> Any:  # aiobotocore awaits provider.load()
        return _ShortLived.create_from_metadata(
            await self.issuer.refresh(), refresh_using=self.issuer.refresh, method=self.METHOD
        )


@pytest.mark.timeout(60)
async def test_refreshed_credentials_are_redacted_too(hostile_bucket: LocalBucket) -> None:
    issuer = _Issuer(ttl=1.0)
    session = AioSession()
    session.get_component("credential_provider").insert_before("env", _Provider(issuer))
    doc = hostile_bucket.corpus.documents[0]
    kwargs = proxied_kwargs(hostile_bucket, FaultProxy("http://unused"))
    del kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"]
    texts: list[str] = []
    echoed: set[str] = set()

    def gets_only(info: RequestInfo) -> bool:
        token = info.headers.get("X-Amz-Security-Token")
        if token:
            echoed.add(token)
        return info.operation == "GetObject"

    plan = _plan(Fault.ECHO_HEADERS, select=gets_only)
    async with FaultProxy(hostile_bucket.endpoint_url, plan) as proxy:
        kwargs["endpoint_url"] = proxy.endpoint_url
        async with AsyncKL3MClient(**kwargs, session=session) as client:
            while len(echoed) < 3:  # until the third generation of credentials was sent
                with pytest.raises(ServiceError) as got:
                    await client._store.get(doc.document_key)
                texts.append(_all_text(got.value))
                await asyncio.sleep(0.1)
    assert len(issuer.issued) >= 3
    joined = "\n".join(texts)
    assert "X-Amz-Security-Token is" in joined
    for creds in issuer.issued:
        assert creds["token"] not in joined and creds["secret_key"] not in joined
    assert "kl3mREFRESH" not in joined
    assert all(isinstance(t, str) for t in texts) and issubclass(ServiceError, KL3MError)


# -- the listing checks across pages (the checker alone, on ListObjectsV2-shaped answers) ----
def _answer(*keys: str, token: str | None = None, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "Contents": [{"Key": k, "Size": 1, "ETag": '"e"'} for k in keys],
        "CommonPrefixes": [{"Prefix": p} for p in prefixes],
        "IsTruncated": token is not None,
        **({"NextContinuationToken": token} if token else {}),
    }


def _checker(start_after: str = "") -> Any:
    from kl3m_data_client._listing import ListingCheck

    return ListingCheck("d/", start_after)


@pytest.mark.parametrize(
    ("pages", "start_after", "reason"),
    [
        ([_answer("d/a", "d/b", token="t1"), _answer("d/b", "d/c")], "", "page 2 repeats the key"),
        ([_answer("d/a", "d/c", token="t1"), _answer("d/b")], "", "page 2 lists the key 'd/b'"),
        ([_answer("d/a")], "d/b", "page 1 lists the key 'd/a' after 'd/b'"),
        ([_answer("d/a", token="t1"), _answer("d/b", token="t1")], "", "page 2 repeats a con"),
        ([_answer(prefixes=("d/x/",), token="t"), _answer(prefixes=("d/x/",))], "", "repeats"),
    ],
)
def test_listing_order_is_checked_across_pages(
    pages: list[dict[str, Any]], start_after: str, reason: str
) -> None:
    check = _checker(start_after)
    with pytest.raises(ServiceError, match=reason) as got:
        for answer in pages:
            check.page(answer)
    assert got.value.per_object is False and "'d/'" in str(got.value)


def test_foreign_common_prefixes_are_skipped() -> None:
    check = _checker()
    page = check.page(_answer("d/a", prefixes=("d/b/", "e/", "x/"), token="t"))
    assert [o.key for o in page.objects] == ["d/a"]
    assert page.prefixes == ["d/b/"] and page.foreign == ["e/", "x/"]
    assert check.page(_answer("d/c")).objects[0].key == "d/c"
