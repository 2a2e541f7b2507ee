"""The obstore data plane (``data_plane="obstore"``) against the aiobotocore one.

Real HTTP only: the session's moto bucket, and the fault proxy in front of it for broken
bodies. obstore is in the dev extra: these tests fail (not skip) without it.
"""

from __future__ import annotations

import hashlib
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
    Stage,
)
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._formats import Limits
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
    """A credential check of the fault proxy that only records who sent each GET."""

    def __init__(self) -> None:
        self.gets: Counter[str] = Counter()
        self.paths: dict[str, set[str]] = {}

    def __call__(self, info: RequestInfo) -> str | None:
        if info.operation == "GetObject":
            agent = "obstore" if "object_store" in _header(info, "User-Agent") else "boto"
            self.gets[agent] += 1
            self.paths.setdefault(agent, set()).add(info.path)
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
