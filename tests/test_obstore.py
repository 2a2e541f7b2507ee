"""The obstore data plane (``data_plane="obstore"``) against the aiobotocore one.

Real HTTP only: the session's moto bucket, and the fault proxy in front of it for broken
bodies. obstore is in the dev extra: these tests fail (not skip) without it.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import obstore  # noqa: F401  -- fail, not skip, when the dev extra is missing
import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession

from faultkit import ALL_FAILING, proxied_kwargs
from kl3m_data_client import (
    AsyncKL3MClient,
    ConnectionFailedError,
    InvalidInputError,
    KL3MClient,
    ServiceError,
    Stage,
)
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._formats import Limits
from kl3m_data_client._keys import stage_prefix
from kl3m_data_client._obstore import addressable
from kl3m_data_client.models.document import DocumentContent
from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import Fault, FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

SMALL_LIMITS = Limits(max_inflated_bytes=64 << 20)  # the dirty dataset holds a 1.1 GB bomb
STAGES = (Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET)


def _header(info: RequestInfo, name: str) -> str:
    """A request header, by case-insensitive name (obstore sends lower-case names)."""
    return next((v for k, v in info.headers.items() if k.lower() == name.lower()), "")


class _Agents:
    """A credential check of the fault proxy that only records who sent each GET and list."""

    def __init__(self) -> None:
        self.gets: Counter[str] = Counter()
        self.lists: Counter[str] = Counter()
        self.paths: dict[str, set[str]] = {}

    def __call__(self, info: RequestInfo) -> str | None:
        agent = "obstore" if "object_store" in _header(info, "User-Agent") else "boto"
        if info.operation == "GetObject":
            self.gets[agent] += 1
            self.paths.setdefault(agent, set()).add(info.path)
        elif info.operation == "ListObjectsV2":
            self.lists[agent] += 1
        return None


def _outcome(value: Any) -> Any:
    return (type(value).__name__, str(value)) if isinstance(value, Exception) else value


async def _everything(client: AsyncKL3MClient, datasets: tuple[str, ...]) -> dict[str, Any]:
    """Every document of every dataset and stage: a fingerprint of its content, or its error."""
    out: dict[str, Any] = {}
    for dataset in datasets:
        for stage in STAGES:
            ids = await client.list_documents(dataset, stage)
            for doc_id in ids:
                try:
                    doc = await client.get_document(dataset, doc_id, stage)
                    out[f"{stage.value}/{dataset}/{doc_id}"] = (
                        None if doc is None else repr(doc.content)
                    )
                except Exception as exc:
                    out[f"{stage.value}/{dataset}/{doc_id}"] = _outcome(exc)
            if dataset != "dirty":  # the stream yields the same documents, in order
                streamed = [
                    (d.document_id, repr(d.content))
                    async for d in client.stream_documents(dataset, stage)
                ]
                assert [i for i, _ in streamed] == ids
                for doc_id, content in streamed:
                    assert out[f"{stage.value}/{dataset}/{doc_id}"] == content
    return out


def test_invalid_data_plane_is_refused() -> None:
    for bad in ("boto", "", "OBSTORE", None, 1):
        with pytest.raises(InvalidInputError, match="data_plane"):
            ClientConfig(data_plane=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="data_plane"):
        AsyncKL3MClient(data_plane="rust")
    with pytest.raises(InvalidInputError, match="data_plane"):
        KL3MClient(data_plane="rust")
    assert ClientConfig().data_plane == "aiobotocore"
    assert AsyncKL3MClient(data_plane="obstore").config.data_plane == "obstore"
    assert ClientConfig(data_plane="obstore").public_dict()["data_plane"] == "obstore"


def test_unaddressable_keys() -> None:
    for key in ("documents/a b [1]+c.json", "x/pct%2Fslash=1", "§ 1 Übersicht/naïve café"):
        assert addressable(key)
    for key in ("a//b", "a/./b", "a/../b", "/a", "a/", "", "a\x01b", "a\x7fb"):
        assert not addressable(key)


async def test_every_dataset_same_content_as_aiobotocore(kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    datasets = tuple(sorted(corpus.datasets))
    assert "dirty" in datasets
    kwargs = {**kl3m_corpus_bucket.client_kwargs(), "limits": SMALL_LIMITS}
    async with AsyncKL3MClient(**kwargs) as client:
        expected = await _everything(client, datasets)
    agents = _Agents()
    plan = FaultPlan(rate=0.0, credential_check=agents)
    async with (
        FaultProxy(kl3m_corpus_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(
            **{**kwargs, "endpoint_url": proxy.endpoint_url}, data_plane="obstore"
        ) as client,
    ):
        got = await _everything(client, datasets)
        assert client.store._plane is not None
    assert got == expected
    # typed errors of the corrupt objects are the same, and there are some
    assert sum(1 for v in got.values() if isinstance(v, tuple)) >= 5
    # obstore sent the GETs -- awkward keys included; the '..' key went through aiobotocore
    awkward = [d for d in corpus.documents if any(c in d.document_id for c in " []+=%§")]
    assert awkward
    assert agents.gets["obstore"] >= len(expected) - 5
    assert agents.gets["boto"] == 0


async def test_unaddressable_keys_fall_back_to_aiobotocore(kl3m_corpus_bucket: Any) -> None:
    objects = kl3m_corpus_bucket.corpus.objects
    odd = [k for k in objects if not addressable(k)]
    assert odd  # the dirty dataset holds a key with '..' segments
    agents = _Agents()
    async with (
        FaultProxy(kl3m_corpus_bucket.endpoint_url, FaultPlan(0.0, credential_check=agents)) as p,
        AsyncKL3MClient(
            **{**kl3m_corpus_bucket.client_kwargs(), "endpoint_url": p.endpoint_url},
            data_plane="obstore",
        ) as client,
    ):
        for key in odd:
            assert await client.store.get(key) == objects[key]
        assert await client.store.get("documents/x/../no-such.json") is None
    assert agents.gets == Counter({"boto": len(odd) + 1})


async def test_missing_keys_are_none(kl3m_corpus_bucket: Any) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    async with AsyncKL3MClient(
        **kl3m_corpus_bucket.client_kwargs(), data_plane="obstore"
    ) as client:
        assert await client.get_document(dataset, "no/such/document") is None
        assert await client.get_document("no-such-dataset", "x [1]+y") is None
        assert client.store._plane is not None
        docs = await client.get_documents(dataset, ["missing-one"])
        assert docs == {"missing-one": None}


async def test_missing_bucket_is_the_same_error(kl3m_corpus_bucket: Any) -> None:
    kwargs = {**kl3m_corpus_bucket.client_kwargs(), "bucket": "no-such-bucket-here"}
    errors = []
    for plane in ("aiobotocore", "obstore"):
        async with AsyncKL3MClient(**kwargs, data_plane=plane) as client:
            try:
                await client.store.get("documents/a/b.json")
            except Exception as exc:
                errors.append(_outcome(exc))
    assert len(errors) == 2 and errors[0] == errors[1], errors


async def test_export_is_byte_identical(kl3m_corpus_bucket: Any, tmp_path: Path) -> None:
    kwargs = {**kl3m_corpus_bucket.client_kwargs(), "limits": SMALL_LIMITS}
    hashes = []
    for plane in ("aiobotocore", "obstore"):
        files: dict[str, str] = {}
        async with AsyncKL3MClient(**kwargs, data_plane=plane) as client:
            for dataset in kl3m_corpus_bucket.corpus.datasets:
                for stage, fmt in (("documents", "jsonl"), ("representations", "parquet")):
                    dest = tmp_path / plane / f"{dataset}-{stage}"
                    report = await client.export(dataset, dest, stage=stage, format=fmt)
                    for part in report.parts:
                        files[f"{dataset}-{stage}/{Path(part.path).name}"] = part.sha256
                    errors = dest / "errors.jsonl"
                    if errors.exists():
                        files[f"{dataset}-{stage}/errors"] = hashlib.sha256(
                            errors.read_bytes()
                        ).hexdigest()
        hashes.append(files)
    assert len(hashes[0]) >= 10
    assert hashes[0] == hashes[1]


# -- broken bodies, errors and credentials through the fault proxy -----------------------


@pytest.fixture(scope="module")
def fault_bucket(kl3m_server: LocalS3Server) -> Any:
    bucket = kl3m_server.create_bucket(n_documents=60, seed=11)
    try:
        yield bucket
    finally:
        bucket.close()


def _kwargs(bucket: LocalBucket, proxy: FaultProxy, **over: Any) -> dict[str, Any]:
    return proxied_kwargs(bucket, proxy, **{"data_plane": "obstore", **over})


async def test_broken_bodies_are_retried(fault_bucket: LocalBucket) -> None:
    docs = fault_bucket.corpus.documents[:20]
    plan = FaultPlan(
        rate=1.0,
        kinds={Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.CORRUPT_BYTE, Fault.DRIP},
        seed=3,
        max_faults_per_request=1,
        ensure_each=True,
    )
    async with (
        FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(fault_bucket, proxy)) as client,
    ):
        for doc in docs:
            got = await client.get_document(doc.dataset_id, doc.document_id)
            assert got is not None and isinstance(got.content, DocumentContent)
            assert got.content.raw == doc.raw
    assert proxy.fired[Fault.CORRUPT_BYTE] >= 1 and proxy.fired[Fault.TRUNCATE] >= 1
    assert proxy.fired[Fault.RESET_MID_BODY] >= 1
    assert proxy.requests["GetObject"] >= len(docs) + 3


@pytest.mark.parametrize(("kind", "error"), ALL_FAILING)
async def test_all_failing_gives_the_same_error(
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
    print(f"{kind.value}: {info.value!r} in {elapsed:.2f}s, {proxy.requests['GetObject']} GETs")
    assert doc.document_id in str(info.value)
    assert proxy.fired[kind] >= 3
    assert proxy.requests["GetObject"] <= 2 * 3  # obstore's attempts or ours, not both
    assert elapsed < 12, (kind, elapsed)


async def test_access_denied_has_the_same_hint(fault_bucket: LocalBucket) -> None:
    doc = fault_bucket.corpus.documents[0]
    messages = []
    for plane in ("aiobotocore", "obstore"):
        plan = FaultPlan(rate=0.0, credential_check=lambda info: "AccessDenied")
        async with (
            FaultProxy(fault_bucket.endpoint_url, plan) as proxy,
            AsyncKL3MClient(**_kwargs(fault_bucket, proxy, data_plane=plane)) as client,
        ):
            try:
                await client.store.get(doc.document_key)
            except Exception as exc:
                messages.append(_outcome(exc))
    assert messages[0] == messages[1] and messages[0][0] == "AccessDeniedError", messages


class _Issuer:
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
        until = self.valid_until.get(_header(info, "X-Amz-Security-Token"))
        if until is None:
            return "InvalidToken"
        return "ExpiredToken" if time.time() > until + 0.25 else None


class _ShortLived(AioRefreshableCredentials):  # type: ignore[misc]
    _advisory_refresh_timeout = 0.6
    _mandatory_refresh_timeout = 0.4


async def test_credentials_refresh_through_the_session(fault_bucket: LocalBucket) -> None:
    issuer = _Issuer(ttl=1.2)
    session = AioSession()
    session._credentials = _ShortLived.create_from_metadata(
        await issuer.refresh(), refresh_using=issuer.refresh, method="custom-test"
    )
    agents = _Agents()

    def check(info: RequestInfo) -> str | None:
        agents(info)
        return issuer.check(info)

    plan = FaultPlan(rate=0.0, credential_check=check)
    dataset = fault_bucket.corpus.documents[0].dataset_id
    expected = {d.document_id: d.raw for d in fault_bucket.corpus.dataset_documents(dataset)}
    started = time.monotonic()
    async with FaultProxy(fault_bucket.endpoint_url, plan) as proxy:
        kwargs = _kwargs(fault_bucket, proxy)
        for name in ("aws_access_key_id", "aws_secret_access_key"):
            kwargs.pop(name)
        async with AsyncKL3MClient(**kwargs, session=session) as client:
            got: dict[str, bytes] = {}
            while time.monotonic() - started < 2.6:  # outlive two credential lifetimes
                async for doc in client.stream_documents(dataset):
                    assert isinstance(doc.content, DocumentContent)
                    got[doc.document_id] = doc.content.raw
    assert got == expected
    assert issuer.calls > 2
    assert not proxy.rejected, proxy.rejected
    assert agents.gets["obstore"] >= 2 * len(expected)


def _ca_and_leaf(tmp: Path) -> tuple[Path, Path]:
    """A private CA (its PEM: the bundle) and a leaf certificate for 127.0.0.1 signed by it.

    rustls (obstore) refuses a CA certificate used as the server's own certificate, so the
    self-signed certificate of ``test_privilege`` does not do here.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = build("kl3m-test-ca", "kl3m-test-ca", ca_key.public_key(), ca_key, True)
    leaf = build("127.0.0.1", "kl3m-test-ca", leaf_key.public_key(), ca_key, False)
    bundle, chain, key = tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return bundle, chain


async def test_tls_settings_are_honoured(kl3m_bucket: LocalBucket, tmp_path: Path) -> None:
    cert, chain = _ca_and_leaf(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, tmp_path / "leaf.key")
    doc = kl3m_bucket.corpus.documents[0]
    agents = _Agents()
    plan = FaultPlan(rate=0.0, credential_check=agents)
    async with FaultProxy(kl3m_bucket.endpoint_url, plan, ssl_context=context) as proxy:
        base: dict[str, Any] = {**kl3m_bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url}
        base["data_plane"] = "obstore"
        async with AsyncKL3MClient(**base, max_attempts=1) as client:
            with pytest.raises(ConnectionFailedError, match=r"(?i)ssl|certificate") as info:
                await client.store.get(doc.document_key)
            assert "obstore" in str(info.value)
        for verify in (str(cert), False):
            async with AsyncKL3MClient(**base, verify=verify) as client:
                got = await client.get_document(doc.dataset_id, doc.document_id)
                assert got is not None and client.store._plane is not None
    assert agents.gets == Counter({"obstore": 2})


def test_sync_client_takes_the_setting(kl3m_corpus_bucket: Any) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    expected = {d.document_id: d.raw for d in kl3m_corpus_bucket.corpus.dataset_documents(dataset)}
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs(), data_plane="obstore") as client:
        assert client.config.data_plane == "obstore"
        got = {}
        for doc in client.stream_documents(dataset):
            assert isinstance(doc.content, DocumentContent)
            got[doc.document_id] = doc.content.raw
    assert got == expected


# -- listings -------------------------------------------------------------------------------


async def _pages(client: AsyncKL3MClient, prefix: str, **kw: Any) -> list[Any]:
    """Every page of a listing: its objects (key, size, etag, date) and common prefixes."""
    out = []
    async for page in client.store.list_pages(prefix, **kw):
        for info in page.objects:
            assert info.last_modified is not None and info.last_modified.tzinfo is not None
        out.append((page.objects, page.prefixes))
    return out


async def _client_listings(client: AsyncKL3MClient, datasets: list[str]) -> list[Any]:
    out: list[Any] = [await client.list_datasets()]
    for dataset in datasets:
        out.append(await client.get_dataset_status(dataset))
        out.append(await client.has_dataset(dataset))
        for stage in STAGES:
            ids = await client.list_documents(dataset, stage)
            out.append(ids)
            if len(ids) > 3:
                start = stage_prefix(stage, dataset) + ids[len(ids) // 2]
                rest = client.iter_documents(dataset, stage, start_after=start)
                out.append([i async for i in rest])
    return out


async def test_listings_same_as_aiobotocore(kl3m_corpus_bucket: Any) -> None:
    """Every folder, string prefixes, start_after values, delimiters: the same pages."""
    corpus = kl3m_corpus_bucket.corpus
    keys = sorted(corpus.objects)
    folders = sorted({k[: i + 1] for k in keys for i, c in enumerate(k) if c == "/"})
    assert any(".." in f for f in folders) and len(folders) > 100
    # the shallow ones, the '..' ones and a sample of the ~800 others
    folders = [f for n, f in enumerate(folders) if f.count("/") <= 2 or ".." in f or n % 23 == 0]
    prefixes = ["", *folders, "documents/us", "documents/usc/title-0", "index/", "no/such/"]
    starts = [None, "", *keys[::67], "documents/dirty/../", "documents/usc/", "documents/u", "~"]
    kwargs = kl3m_corpus_bucket.client_kwargs()
    agents = _Agents()
    plan = FaultPlan(rate=0.0, credential_check=agents)
    async with (
        FaultProxy(kl3m_corpus_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**kwargs) as boto,
        AsyncKL3MClient(
            **{**kwargs, "endpoint_url": proxy.endpoint_url}, data_plane="obstore"
        ) as ob,
    ):
        for prefix in prefixes:
            assert await _pages(ob, prefix) == await _pages(boto, prefix), prefix
        for prefix in ("", "documents/", "documents/usc/", "documents/dirty/", "representations/"):
            for start in starts:
                got = await _pages(ob, prefix, start_after=start)
                assert got == await _pages(boto, prefix, start_after=start), (prefix, start)
            for extra in ({"delimiter": "/"}, {"delimiter": "-"}, {"page_size": 150}):
                assert await _pages(ob, prefix, **extra) == await _pages(boto, prefix, **extra)
        datasets = sorted(corpus.datasets)
        assert await _client_listings(ob, datasets) == await _client_listings(boto, datasets)
    through_obstore = [f for f in folders if addressable(f[:-1])]
    assert agents.lists["obstore"] >= len(through_obstore)
    # ".." keys, string prefixes, delimiters and small pages: aiobotocore
    assert agents.lists["boto"] >= 10


#: Keys obstore refuses or silently rewrites, next to plain ones. The rewrites caught by the
#: plane's checks: an empty ``x/`` marker, and a non-empty ``m/`` listed after ``m.json``.
ODD_KEYS: dict[str, bytes] = {
    "odd/a.json": b"a",
    "odd/x.json": b"x",
    "odd/x/": b"",
    "odd/x/y": b"xy",
    "odd/m.json": b"m",
    "odd/m/": b"a folder with a body",
    "odd/ sp [1]+=%2F§ü.json": b"awkward",
    "odd/amp&<>'\".json": b"xml",
    "odd/trail.": b"t",
    "odd/.hidden": b"h",
    "odd/empty.json": b"",
    "odd/z//w": b"zw",
    "odd/q/../r": b"qr",
    "odd/./s": b"s",
    "odd/dot/.": b"d",
    "odd/t\x01u": b"ctl",
    "odd/a b [1]+=%2F§ü/c.json": b"awkward folder",
    "odd/a b [1]+=%2F§ü/d/e": b"awkward folder",
}
ODD_PREFIXES = ("odd/", "odd/x/", "odd/m/", "odd/q/", "odd/q/../", "odd/a b [1]+=%2F§ü/", "odd/a b")
N_MANY = 2050  # three ListObjectsV2 pages under many/a/


@pytest.fixture(scope="module")
def list_bucket(kl3m_server: LocalS3Server) -> Any:
    objects = {f"many/a/{i:05d} [§]+{i % 7}.json": b"%d" % i for i in range(N_MANY)}
    objects.update({f"many/b/{k[4:]}": v for k, v in ODD_KEYS.items()})  # after two clean pages
    objects.update(ODD_KEYS)
    bucket = kl3m_server.create_bucket(objects=objects)
    try:
        yield bucket
    finally:
        bucket.close()


async def test_odd_keys_are_listed_like_aiobotocore(list_bucket: LocalBucket) -> None:
    agents = _Agents()
    plan = FaultPlan(rate=0.0, credential_check=agents)
    kwargs = list_bucket.client_kwargs()
    async with (
        FaultProxy(list_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**kwargs) as boto,
        AsyncKL3MClient(
            **{**kwargs, "endpoint_url": proxy.endpoint_url}, data_plane="obstore"
        ) as ob,
    ):
        for prefix in (*ODD_PREFIXES, "many/", "many/a/", "many/b/", "many/b/a b [1]+=%2F§ü/"):
            for start in (None, "odd/a.json", "many/a/01000 [§]+6.json", "many/b/m.json"):
                got = await _pages(ob, prefix, start_after=start)
                assert got == await _pages(boto, prefix, start_after=start), (prefix, start)
        many = await _pages(ob, "many/")
    assert [len(objects) for objects, _ in many] == [1000, 1000, 50 + len(ODD_KEYS)]
    keys = [info.key for objects, _ in many for info in objects]
    assert keys == sorted(set(keys))  # S3's order (UTF-8 bytes = code points), no repeats
    assert {k[len("many/b/") :] for k in keys[N_MANY:]} == {k[4:] for k in ODD_KEYS}
    assert agents.lists["obstore"] >= 10 and agents.lists["boto"] >= 5


# botocore retries a 200 answer whose XML does not parse as a 500: a ServiceError in the end
@pytest.mark.parametrize(("kind", "error"), [*ALL_FAILING, (Fault.BAD_LIST_XML, ServiceError)])
async def test_listing_faults_give_the_same_error(
    list_bucket: LocalBucket, kind: Fault, error: type[Exception]
) -> None:
    """Every listing request faulty: the same typed error and message on both planes."""
    outcomes = []
    for plane in ("aiobotocore", "obstore"):
        agents = _Agents()
        plan = FaultPlan(
            rate=1.0,
            kinds={kind},
            max_faults_per_request=None,
            stall_seconds=1.2,
            credential_check=agents,
        )
        async with (
            FaultProxy(list_bucket.endpoint_url, plan) as proxy,
            AsyncKL3MClient(**_kwargs(list_bucket, proxy, data_plane=plane, max_attempts=2)) as c,
        ):
            started = time.monotonic()
            try:
                await _pages(c, "many/a/")
            except Exception as exc:
                outcomes.append((type(exc), re.sub(r" in [0-9.]+s against .*", "", str(exc))))
            elapsed = time.monotonic() - started
        print(f"{plane} {kind.value}: {outcomes[-1]} in {elapsed:.2f}s, {proxy.requests}")
        assert proxy.requests["ListObjectsV2"] <= 2 * 2  # one retry loop, never two multiplied
        assert proxy.fired[kind] >= 1
        assert elapsed < 12, (plane, kind, elapsed)
        assert set(agents.lists) == {"boto" if plane == "aiobotocore" else "obstore"}
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0][0] is error


async def test_broken_listing_pages_are_retried(list_bucket: LocalBucket) -> None:
    """Faults on every continued page (twice each): every key listed once, in order."""
    expected = sorted(k for k in list_bucket.corpus.objects if k.startswith("many/a/"))

    def continued(info: RequestInfo) -> bool:
        return "continuation-token" in info.query or "start-after" in info.query

    agents = _Agents()
    plan = FaultPlan(
        rate=1.0,
        kinds={Fault.BAD_LIST_XML, Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.SLOWDOWN_503},
        select=continued,
        max_faults_per_request=2,
        ensure_each=True,
        credential_check=agents,
    )
    async with (
        FaultProxy(list_bucket.endpoint_url, plan) as proxy,
        AsyncKL3MClient(**_kwargs(list_bucket, proxy)) as client,
    ):
        listed = [info.key for objects, _ in await _pages(client, "many/a/") for info in objects]
    assert listed == expected
    assert proxy.fired[Fault.BAD_LIST_XML] >= 1 and proxy.fired[Fault.TRUNCATE] >= 1
    assert proxy.fired[Fault.RESET_MID_BODY] >= 1
    assert sum(proxy.fired.values()) >= 4
    assert set(agents.lists) == {"obstore"}


async def test_listing_errors_are_the_same(list_bucket: LocalBucket) -> None:
    outcomes: dict[str, list[Any]] = {}
    for plane in ("aiobotocore", "obstore"):
        plan = FaultPlan(rate=0.0, credential_check=lambda info: "AccessDenied")
        async with FaultProxy(list_bucket.endpoint_url, plan) as proxy:
            for missing in (False, True):
                kwargs = _kwargs(list_bucket, proxy, data_plane=plane)
                if missing:  # straight to the server: the proxy denies everything
                    kwargs.update(bucket="no-such-bucket", endpoint_url=list_bucket.endpoint_url)
                async with AsyncKL3MClient(**kwargs) as client:
                    try:
                        await _pages(client, "many/a/")
                    except Exception as exc:
                        outcomes.setdefault(plane, []).append(_outcome(exc))
    assert outcomes["aiobotocore"] == outcomes["obstore"], outcomes
    assert [o[0] for o in outcomes["obstore"]] == ["AccessDeniedError", "NotFoundError"]
