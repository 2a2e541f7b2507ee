"""The data plane of object GETs: obstore by default, aiobotocore where obstore cannot go.

Real HTTP only: the session's moto server, reached through the fault proxy, which tells
the two planes apart by their User-Agent (the obstore plane's ends in ``obstore/<version>``).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import (
    AccessDeniedError,
    AsyncKL3MClient,
    BucketNotFoundError,
    InvalidInputError,
    KL3MClient,
    UntrustedResponseError,
)
from kl3m_data_client._budget import NeedRoom
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._obstore import addressable
from kl3m_data_client.testing import LocalBucket, LocalS3Server
from kl3m_data_client.testing._faults import Fault, FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

#: Keys obstore sends unchanged, next to keys it would refuse or rewrite.
AWKWARD: dict[str, bytes] = {
    "odd/ sp [1]+=%2F§ü.json": b"awkward",
    "odd/plus+and space.json": b"plus",
    "odd/pct%2Fslash": b"pct",
    "odd/naïve café/Übersicht": b"unicode",
    "odd/amp&<>'\".json": b"xml",
    "odd/tilde~hash#q?x=1": b"query-like",
    "odd/.hidden": b"hidden",
}
UNADDRESSABLE: dict[str, bytes] = {
    "odd/folder/": b"a trailing slash",
    "odd/z//w": b"an empty segment",
    "odd/q/../r": b"a dot-dot segment",
    "odd/./s": b"a dot segment",
    "odd/t\x01u": b"a control character",
    "/odd/lead": b"a leading slash",
}


def _header(info: RequestInfo, name: str) -> str:
    return next((v for k, v in info.headers.items() if k.lower() == name.lower()), "")


class _Agents:
    """A credential check of the fault proxy that only records who sent each GET."""

    def __init__(self) -> None:
        self.gets: Counter[str] = Counter()

    def __call__(self, info: RequestInfo) -> str | None:
        if info.operation == "GetObject":
            agent = "obstore" if " obstore/" in _header(info, "User-Agent") else "boto"
            self.gets[agent] += 1
        return None


@pytest.fixture(scope="module")
def odd_bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    bucket = kl3m_server.create_bucket(objects={**AWKWARD, **UNADDRESSABLE})
    try:
        yield bucket
    finally:
        bucket.close()


def test_data_plane_option() -> None:
    for bad in ("boto", "", "OBSTORE", None, 1):
        with pytest.raises(InvalidInputError, match="data_plane"):
            ClientConfig(data_plane=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="data_plane"):
        AsyncKL3MClient(data_plane="rust")  # type: ignore[arg-type]
    assert ClientConfig().data_plane == "auto"
    assert AsyncKL3MClient(data_plane="obstore").config.data_plane == "obstore"
    with KL3MClient(data_plane="aiobotocore") as client:
        assert client.config.data_plane == "aiobotocore"
    assert ClientConfig(data_plane="obstore").public_dict()["data_plane"] == "obstore"


def test_import_does_not_load_obstore() -> None:
    code = "import sys, kl3m_data_client; print('obstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_obstore(odd_bucket: LocalBucket) -> None:
    """obstore not importable: "auto" reads through aiobotocore (saying why at DEBUG),
    "obstore" is refused at once."""
    code = textwrap.dedent(
        f"""
        import asyncio, logging, sys
        sys.modules["obstore"] = None  # as if it were not installed
        from kl3m_data_client import AsyncKL3MClient, InvalidInputError
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        logging.getLogger("kl3m_data_client").addHandler(Keep())
        logging.getLogger("kl3m_data_client").setLevel(logging.DEBUG)
        try:
            AsyncKL3MClient(data_plane="obstore")
        except InvalidInputError as exc:
            print("refused:", exc)
        async def main():
            async with AsyncKL3MClient(**{odd_bucket.client_kwargs()!r}) as client:
                print(await client._store.get("odd/.hidden"), client._store.plane)
        asyncio.run(main())
        print([m for m in records if "GETs through" in m])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "refused: data_plane='obstore' needs obstore: pip install obstore"
    assert lines[1] == "b'hidden' None"
    assert lines[2] == "['GETs through aiobotocore: obstore is not installed']"


def test_addressable_keys() -> None:
    assert all(addressable(k) for k in AWKWARD)
    assert not any(addressable(k) for k in UNADDRESSABLE)
    assert not addressable("")


async def test_awkward_keys_round_trip_on_both_planes(odd_bucket: LocalBucket) -> None:
    """Every key comes back with its bytes; obstore carries the ones it can address."""
    objects = {**AWKWARD, **UNADDRESSABLE}
    for plane in ("obstore", "aiobotocore"):
        agents = _Agents()
        async with (
            FaultProxy(odd_bucket.endpoint_url, FaultPlan(0.0, credential_check=agents)) as p,
            AsyncKL3MClient(
                **{**odd_bucket.client_kwargs(), "endpoint_url": p.endpoint_url},
                data_plane=plane,  # type: ignore[arg-type]
            ) as client,
        ):
            for key, data in objects.items():
                assert await client._store.get(key) == data, (plane, key)
            assert await client._store.get("odd/no such [key]+") is None
            assert await client._store.get("odd/x/../no-such") is None
            if plane == "obstore":
                assert client._store.plane is not None
                assert client._store.plane.fallbacks == 0
        if plane == "obstore":
            assert agents.gets == Counter(
                {"obstore": len(AWKWARD) + 1, "boto": len(UNADDRESSABLE) + 1}
            )
        else:
            assert agents.gets == Counter({"boto": len(objects) + 2})


async def test_documents_are_the_same_on_both_planes(kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = max(corpus.datasets, key=lambda d: len(list(corpus.dataset_documents(d))))
    got: dict[str, Any] = {}
    for plane in ("obstore", "aiobotocore"):
        async with AsyncKL3MClient(
            **kl3m_corpus_bucket.client_kwargs(),
            data_plane=plane,  # type: ignore[arg-type]
        ) as client:
            got[plane] = [
                (d.document_id, repr(d.content)) async for d in client.stream_documents(dataset)
            ]
            used = client._store.plane
        assert (used is not None) is (plane == "obstore")
        if used is not None:
            assert used.gets >= len(got[plane]) and used.fallbacks == 0
    assert got["obstore"] == got["aiobotocore"] and len(got["obstore"]) >= 5


async def test_settings_obstore_cannot_honour_fall_back_with_a_reason(
    odd_bucket: LocalBucket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with caplog.at_level(logging.DEBUG, logger="kl3m_data_client"):
        async with AsyncKL3MClient(**odd_bucket.client_kwargs(), data_plane="obstore") as client:
            assert await client._store.get("odd/.hidden") == b"hidden"
            assert client._store.plane is None
    assert any("GETs through aiobotocore: an HTTP proxy" in r.getMessage() for r in caplog.records)


async def test_admission_sees_the_size_before_the_body(odd_bucket: LocalBucket) -> None:
    key = "odd/ sp [1]+=%2F§ü.json"
    asked: list[int] = []

    def refuse(size: int) -> bool:
        asked.append(size)
        return False

    async with AsyncKL3MClient(**odd_bucket.client_kwargs(), data_plane="obstore") as client:
        with pytest.raises(NeedRoom) as got:
            await client._store.get(key, admit=refuse)
        assert got.value.size == len(AWKWARD[key]) and got.value.key == key
        assert await client._store.get(key, admit=lambda size: True) == AWKWARD[key]
        plane = client._store.plane
        assert plane is not None and plane.gets == 1 and plane.fallbacks == 0
    assert asked == [len(AWKWARD[key])]


async def test_errors_are_the_same_on_both_planes(odd_bucket: LocalBucket) -> None:
    outcomes: dict[str, list[tuple[str, str, bool]]] = {}
    for plane in ("obstore", "aiobotocore"):
        denied = FaultPlan(0.0, credential_check=lambda info: "AccessDenied")
        async with FaultProxy(odd_bucket.endpoint_url, denied) as proxy:
            for kwargs in (
                {"endpoint_url": proxy.endpoint_url},
                {"bucket": "no-such-bucket-here"},
            ):
                args = {**odd_bucket.client_kwargs(), **kwargs, "data_plane": plane}
                async with AsyncKL3MClient(**args) as client:
                    try:
                        await client._store.get("odd/.hidden")
                    except (AccessDeniedError, BucketNotFoundError) as exc:
                        row = (type(exc).__name__, str(exc), exc.per_object)
                        outcomes.setdefault(plane, []).append(row)
    assert outcomes["obstore"] == outcomes["aiobotocore"]
    assert [o[0] for o in outcomes["obstore"]] == ["AccessDeniedError", "BucketNotFoundError"]


def _ca_and_leaf(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA (its PEM: the bundle) and a server context for 127.0.0.1 signed by it.

    rustls (under obstore) refuses a CA certificate used as the server's own, so the
    self-signed certificate of ``test_privilege`` would make obstore hand every GET back.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kl3m-test-ca")]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = build("kl3m-test-ca", ca_key.public_key(), ca_key, True)
    leaf = build("127.0.0.1", leaf_key.public_key(), ca_key, False)
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
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)
    return bundle, context


async def test_https_endpoint_on_the_obstore_plane(odd_bucket: LocalBucket, tmp_path: Path) -> None:
    """HTTPS: obstore reaches the endpoint directly (the CA bundle honoured); a redirect from
    there to another host is still never followed (its CONNECT is refused at the dead end)."""
    bundle, context = _ca_and_leaf(tmp_path)
    key = "odd/naïve café/Übersicht"
    for kinds in (set(), {Fault.REDIRECT_OTHER_HOST}):
        plan = FaultPlan(1.0 if kinds else 0.0, kinds=kinds, max_faults_per_request=None)
        async with (
            FaultProxy(odd_bucket.endpoint_url, plan, ssl_context=context) as proxy,
            AsyncKL3MClient(
                **{**odd_bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url},
                verify=str(bundle),
                data_plane="obstore",
            ) as client,
        ):
            assert proxy.endpoint_url.startswith("https://")
            if not kinds:
                assert await client._store.get(key) == AWKWARD[key]
                plane = client._store.plane
                assert plane is not None and (plane.gets, plane.fallbacks) == (1, 0)
            else:
                with pytest.raises(UntrustedResponseError, match="another host"):
                    await client._store.get(key)
                plane = client._store.plane
                assert plane is not None and plane.fallbacks == 1
        assert proxy.other.requests == []


@pytest.mark.parametrize("plane", ["obstore", "aiobotocore"])
async def test_cli_data_plane_flag(
    kl3m_corpus_bucket: Any, plane: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kl3m-client --data-plane P export`` sends every object GET through plane P."""
    import anyio.to_thread

    from kl3m_data_client.cli import main

    corpus = kl3m_corpus_bucket.corpus
    dataset = max(corpus.datasets, key=lambda d: len(list(corpus.dataset_documents(d))))
    kw = kl3m_corpus_bucket.client_kwargs()
    agents = _Agents()
    async with FaultProxy(
        kl3m_corpus_bucket.endpoint_url, FaultPlan(0.0, credential_check=agents)
    ) as proxy:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", kw["aws_access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", kw["aws_secret_access_key"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", kw["region"])
        argv = [
            "--endpoint-url",
            proxy.endpoint_url,
            "--bucket",
            kl3m_corpus_bucket.bucket,
            "--data-plane",
            plane,
            "export",
            dataset,
            str(tmp_path / "out"),
            "--workers",
            "1",
        ]
        status = await anyio.to_thread.run_sync(main, argv)
    assert status == 0
    expected = len(list(corpus.dataset_documents(dataset)))
    agent = "obstore" if plane == "obstore" else "boto"
    assert agents.gets[agent] >= expected > 0
    assert sum(agents.gets.values()) == agents.gets[agent], agents.gets


def test_the_dead_end_proxy_refuses_every_connection() -> None:
    """Where obstore's requests for other hosts go: nothing listens, nothing is received."""
    import socket
    from urllib.parse import urlsplit

    from kl3m_data_client._guard import DeadEnd, endpoint_host

    dead = DeadEnd()
    try:
        port = urlsplit(dead.url).port
        assert port
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        dead.close()
    assert endpoint_host("https://S3.Example.COM:8443/") == "s3.example.com"
    assert endpoint_host("http://[::1]:9000") == "::1"
