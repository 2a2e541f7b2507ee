"""Fault injection over real HTTP: moto server <- FaultProxy <- AsyncKL3MClient.

Every test asserts the fault counters, so a proxy that injects nothing fails the test.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession

from faultkit import ALL_FAILING, proxied_kwargs
from kl3m_data_client import (
    AsyncKL3MClient,
    ConnectionFailedError,
    Stage,
)
from kl3m_data_client.models.document import DocumentContent, RepresentationContent
from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import ALL_FAULTS, Fault, FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

N_DOCUMENTS = 300


@pytest.fixture(scope="module")
def fault_bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    bucket = kl3m_server.create_bucket(n_documents=N_DOCUMENTS, seed=7)
    try:
        yield bucket
    finally:
        bucket.close()


_kwargs = proxied_kwargs


def _fingerprint(content: Any) -> str:
    h = hashlib.sha256()
    if isinstance(content, DocumentContent):
        h.update(content.raw)
        h.update(repr(content.metadata).encode())
        h.update(repr(content.content).encode())
    elif isinstance(content, RepresentationContent):
        h.update(repr(content.documents).encode())
    else:  # pragma: no cover - other stages are not streamed here
        raise AssertionError(type(content))
    return h.hexdigest()


async def _stream_all(client: AsyncKL3MClient, datasets: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for stage, some in ((Stage.DOCUMENTS, datasets), (Stage.REPRESENTATIONS, datasets[:2])):
        for dataset in some:
            async for doc in client.stream_documents(dataset, stage):
                out[f"{stage.value}/{dataset}/{doc.document_id}"] = _fingerprint(doc.content)
    return out


async def test_mixed_faults_give_the_clean_content(fault_bucket: LocalBucket) -> None:
    corpus = fault_bucket.corpus
    datasets = tuple(sorted({d.dataset_id for d in corpus.documents}))
    async with FaultProxy(fault_bucket.endpoint_url, FaultPlan(rate=0.0)) as clean_proxy:
        async with AsyncKL3MClient(**_kwargs(fault_bucket, clean_proxy)) as client:
            clean = await _stream_all(client, datasets)
        assert not clean_proxy.fired
    some = datasets[:2]
    n_expected = len(corpus.in_stage("documents")) + sum(
        len(corpus.in_stage("representations", d)) for d in some
    )
    assert len(clean) == n_expected
    assert len(corpus.in_stage("documents")) == N_DOCUMENTS
    # the ground truth agrees with the clean run
    for doc in corpus.documents[:20]:
        key = f"documents/{doc.dataset_id}/{doc.document_id}"
        assert key in clean

    plan = FaultPlan(rate=0.1, seed=1, ensure_each=True, stall_seconds=1.2)
    started = time.monotonic()
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy)) as client,
    ):
        faulty = await _stream_all(client, datasets)
    elapsed = time.monotonic() - started
    assert faulty == clean
    assert set(proxy.fired) == set(ALL_FAULTS), proxy.fired
    assert sum(proxy.fired.values()) >= 0.05 * sum(proxy.requests.values())
    assert elapsed < 60, elapsed


async def test_failed_listing_page_resumes_from_its_token(fault_bucket: LocalBucket) -> None:
    """Small pages; the continued pages break: every key is listed exactly once."""
    keys = sorted(k for k in fault_bucket.corpus.objects if k.startswith("documents/"))

    def continued(info: RequestInfo) -> bool:
        return "continuation-token" in info.query

    plan = FaultPlan(
        rate=1.0,
        kinds={Fault.BAD_LIST_XML, Fault.RESET_MID_BODY, Fault.TRUNCATE},
        select=continued,
        max_faults_per_request=2,
        ensure_each=True,  # continuation tokens vary between runs: make every kind fire
    )
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy)) as client,
    ):
        listed = [
            info.key
            async for page in client._store.list_pages("documents/", page_size=100)
            for info in page.objects
        ]
    assert listed == keys
    assert proxy.fired[Fault.BAD_LIST_XML] >= 1
    assert sum(proxy.fired.values()) >= 2 * (len(keys) // 100 - 1)


@pytest.mark.parametrize(("kind", "error"), ALL_FAILING)
async def test_all_failing_stops_in_bounded_time(
    fault_bucket: LocalBucket, kind: Fault, error: type[Exception]
) -> None:
    doc = fault_bucket.corpus.documents[0]
    plan = FaultPlan(rate=1.0, kinds={kind}, max_faults_per_request=None, stall_seconds=1.2)
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy, max_attempts=3)) as client,
    ):
        started = time.monotonic()
        with pytest.raises(error) as info:
            await client.get_document(doc.dataset_id, doc.document_id)
        elapsed = time.monotonic() - started
        gets = proxy.requests["GetObject"]
        plane = client._store.plane
        assert plane is not None and plane.gets == 0  # the default data plane: obstore
        if kind in (Fault.SLOWDOWN_503, Fault.RESET_MID_BODY):
            with pytest.raises(error):  # the listing fails first, as clearly
                async for _ in client.stream_documents(doc.dataset_id):
                    pass
    message = str(info.value)
    print(f"{kind.value}: {type(info.value).__name__} after {elapsed:.2f}s, {gets} GETs: {message}")
    assert doc.document_id in message
    assert proxy.fired[kind] >= 3
    # obstore's one try (it never retries), then botocore's own attempts (3) or ours (3),
    # never both multiplied
    assert plane.fallbacks == 1
    assert gets <= 1 + 2 * 3
    assert elapsed < 12, (kind, elapsed)


async def test_per_object_deadline(fault_bucket: LocalBucket) -> None:
    doc = fault_bucket.corpus.documents[0]
    plan = FaultPlan(rate=1.0, kinds={Fault.STALL}, max_faults_per_request=None, stall_seconds=5)
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy, max_attempts=50)) as client,
    ):
        client._store.object_deadline = 2.5
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError, match=r"deadline|attempt"):
            await client.get_document(doc.dataset_id, doc.document_id)
        elapsed = time.monotonic() - started
    assert proxy.fired[Fault.STALL] >= 1
    assert elapsed < 4.5, elapsed


async def test_corrupt_bytes_are_detected_by_etag(fault_bucket: LocalBucket) -> None:
    """S3 GET has no Content-MD5, but a single-part object's ETag is its MD5."""
    docs = fault_bucket.corpus.documents[:12]
    plan = FaultPlan(rate=1.0, kinds={Fault.CORRUPT_BYTE}, max_faults_per_request=1)
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy)) as client,
    ):
        for doc in docs:
            got = await client.get_document(doc.dataset_id, doc.document_id)
            assert got is not None
            content = got.content
            assert isinstance(content, DocumentContent)
            assert content.raw == doc.raw
            assert hashlib.blake2b(content.raw).hexdigest() == doc.blake2b
    assert proxy.fired[Fault.CORRUPT_BYTE] == len(docs)
    assert proxy.requests["GetObject"] == 2 * len(docs)


async def test_drip_and_reset_on_head(fault_bucket: LocalBucket) -> None:
    doc = fault_bucket.corpus.documents[0]
    plan = FaultPlan(rate=1.0, kinds={Fault.DRIP, Fault.RESET_BEFORE}, max_faults_per_request=1)
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy)) as client,
    ):
        assert await client.exists(doc.dataset_id, doc.document_id)
        got = await client.get_document(doc.dataset_id, doc.document_id)
    assert got is not None and isinstance(got.content, DocumentContent)
    assert got.content.raw == doc.raw
    assert sum(proxy.fired.values()) >= 2


class _Issuer:
    """Short-lived credentials: generation n is valid for ``ttl`` seconds after its issue."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.calls = 0
        self.valid_until: dict[str, float] = {}

    async def refresh(self) -> dict[str, str]:
        self.calls += 1
        token = f"TOKEN-gen{self.calls}-{'x' * 20}"
        self.valid_until[token] = time.time() + self.ttl
        expiry = datetime.now(timezone.utc) + timedelta(seconds=self.ttl)
        return {
            "access_key": f"AKIDGEN{self.calls:04d}",
            "secret_key": f"secret-gen-{self.calls}",
            "token": token,
            "expiry_time": expiry.isoformat(),
        }

    def check(self, info: RequestInfo) -> str | None:
        # header names are case-insensitive (obstore sends them in lower case)
        token = next(
            (v for k, v in info.headers.items() if k.lower() == "x-amz-security-token"), None
        )
        if token is None:
            return "InvalidToken"
        until = self.valid_until.get(token)
        if until is None:
            return "InvalidToken"
        return "ExpiredToken" if time.time() > until + 0.25 else None


class _ShortLived(AioRefreshableCredentials):  # type: ignore[misc]
    # botocore refreshes 15 / 10 minutes before expiry; scale that to a 2-second lifetime
    _advisory_refresh_timeout = 0.6
    _mandatory_refresh_timeout = 0.4


async def test_refreshable_credentials_expire_during_a_run(fault_bucket: LocalBucket) -> None:
    issuer = _Issuer(ttl=1.2)
    session = AioSession()
    session._credentials = _ShortLived.create_from_metadata(
        await issuer.refresh(), refresh_using=issuer.refresh, method="custom-test"
    )
    plan = FaultPlan(rate=0.3, kinds={Fault.DRIP}, drip_delay=0.02, credential_check=issuer.check)
    dataset = fault_bucket.corpus.documents[0].dataset_id
    expected = {d.document_id: d.raw for d in fault_bucket.corpus.dataset_documents(dataset)}
    kwargs = _kwargs(fault_bucket, FaultProxy("http://unused"))
    for name in ("aws_access_key_id", "aws_secret_access_key", "endpoint_url"):
        kwargs.pop(name)
    started = time.monotonic()
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**kwargs, endpoint_url=proxy.endpoint_url, session=session) as client,
    ):
        got: dict[str, bytes] = {}
        while time.monotonic() - started < 2.6:  # outlive two credential lifetimes
            async for doc in client.stream_documents(dataset):
                assert isinstance(doc.content, DocumentContent)
                got[doc.document_id] = doc.content.raw
        plane = client._store.plane
    assert got == expected
    assert issuer.calls > 2
    assert not proxy.rejected, proxy.rejected
    assert proxy.fired[Fault.DRIP] >= 1
    # the GETs went through obstore, with the credentials botocore refreshed
    assert plane is not None and plane.gets >= len(expected) and plane.fallbacks == 0
