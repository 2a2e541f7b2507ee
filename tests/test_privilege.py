"""Read features use only ListObjectsV2, GetObject and HeadObject; TLS verification stays on."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import AioSession

from kl3m_data_client import AsyncKL3MClient, ConnectionFailedError, Stage
from kl3m_data_client.testing import LocalBucket
from kl3m_data_client.testing._faults import FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

ALLOWED = {"ListObjectsV2", "GetObject", "HeadObject"}


@pytest.mark.kl3m_corpus(n_documents=12)
@pytest.mark.parametrize("plane", ["obstore", "aiobotocore"])
async def test_read_features_use_only_list_get_head(kl3m_bucket: LocalBucket, plane: str) -> None:
    """Seen in botocore (its calls) and on the wire (every request of either data plane)."""
    calls: list[str] = []
    wire: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    def on_the_wire(info: RequestInfo) -> None:
        wire.append(info.operation)

    session = AioSession()
    session.register("before-call.s3", record)
    corpus = kl3m_bucket.corpus
    doc = corpus.documents[0]
    ids = [d.document_id for d in corpus.dataset_documents(doc.dataset_id)]
    async with (
        FaultProxy(kl3m_bucket.endpoint_url, FaultPlan(0.0, credential_check=on_the_wire)) as p,
        AsyncKL3MClient(
            **{**kl3m_bucket.client_kwargs(), "endpoint_url": p.endpoint_url},
            session=session,
            data_plane=plane,  # type: ignore[arg-type]
        ) as client,
    ):
        assert await client.list_datasets()
        status = await client.get_dataset_status(doc.dataset_id)
        assert status.document_count == len(ids)
        index = await client.get_dataset_index(doc.dataset_id)
        assert index is not None and index.get_document_ids() == {
            d.document_id for d in corpus.in_stage("representations", doc.dataset_id)
        }
        assert [i async for i in client.iter_documents(doc.dataset_id)] == ids
        for stage in (Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET):
            fetched = await client.get_document(doc.dataset_id, doc.document_id, stage)
            assert fetched is not None and fetched.document_id == doc.document_id
        got_three = await client.get_documents(doc.dataset_id, ids[:3])
        assert [d.document_id for d in got_three.values() if d is not None] == ids[:3]
        assert [d.document_id async for d in client.stream_documents(doc.dataset_id)] == ids
        assert await client.exists(doc.dataset_id, doc.document_id)
        assert not await client.exists(doc.dataset_id, "missing-document")
        got = await client.get_document(doc.dataset_id, doc.document_id)
        assert got is not None
        assert await got.get_representation_content() is not None
        assert await got.get_parquet() is not None
        used = client._store.plane
    assert set(wire) == ALLOWED, wire
    if plane == "obstore":  # GETs never pass through botocore
        assert used is not None and used.gets > 0 and used.fallbacks == 0
        assert set(calls) == ALLOWED - {"GetObject"}, calls
    else:
        assert set(calls) == ALLOWED, calls


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kl3m-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_verification_is_on_by_default(kl3m_bucket: LocalBucket, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    doc = kl3m_bucket.corpus.documents[0]
    async with FaultProxy(kl3m_bucket.endpoint_url, ssl_context=context) as proxy:
        assert proxy.endpoint_url.startswith("https://")
        base = {**kl3m_bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url}
        # default: the self-signed certificate is refused
        async with AsyncKL3MClient(**base, max_attempts=1) as client:
            with pytest.raises(ConnectionFailedError, match=r"(?i)ssl|certificate"):
                await client.get_document(doc.dataset_id, doc.document_id)
        assert proxy.requests.total() == 0
        # a CA bundle that holds it, or verify=False, let the request through
        for verify in (str(cert), False):
            async with AsyncKL3MClient(**base, verify=verify) as client:
                got = await client.get_document(doc.dataset_id, doc.document_id)
                assert got is not None
        assert proxy.requests["GetObject"] == 2


async def test_suite_wide_audit_hook_is_wired(
    kl3m_corpus_bucket: Any, only_read_operations: Any
) -> None:
    """The session-wide audit in conftest.py sees this client's requests."""
    before = sum(only_read_operations.values())
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        await client.list_datasets()
    assert sum(only_read_operations.values()) >= before + 3
    assert only_read_operations["ListObjectsV2"] >= 3
