"""No secret key or session token in logs (DEBUG, botocore included), reprs or error texts."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator

import pytest

from kl3m_data_client import (
    AccessDeniedError,
    AsyncKL3MClient,
    ConnectionFailedError,
    KL3MClient,
)
from kl3m_data_client.testing import LocalBucket
from kl3m_data_client.testing._faults import FaultPlan, FaultProxy, RequestInfo

pytestmark = pytest.mark.anyio

SECRET = "kl3mSECRETkey/Zq9+wJalrXUtnFEMI/K7MDENGbPxRfiCY"
TOKEN = "kl3mSESSIONtoken//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+tokenTAIL=="
ACCESS_KEY = "AKIAKL3MTESTKEY12345"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    touched = []
    for name in ("botocore", "aiobotocore", "kl3m_data_client", "aiohttp", "urllib3"):
        log = logging.getLogger(name)
        touched.append((log, log.level))
        log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        for log, level in touched:
            log.setLevel(level)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _texts(exc: BaseException) -> str:
    return "\n".join(
        [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    )


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert TOKEN not in text
    # fragments, in case of partial escaping or encoding
    assert "kl3mSECRETkey" not in text
    assert "kl3mSESSIONtoken" not in text


async def test_no_secrets_in_debug_logs_reprs_and_errors(
    kl3m_bucket: LocalBucket, capture: _Capture
) -> None:
    doc = kl3m_bucket.corpus.documents[0]
    creds = {
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET,
        "aws_session_token": TOKEN,
    }
    texts: list[str] = []

    def deny(info: RequestInfo) -> str | None:
        return "AccessDenied" if "denied" in info.path else None

    async with FaultProxy(
        kl3m_bucket.endpoint_url, FaultPlan(rate=0.0, credential_check=deny)
    ) as proxy:
        kwargs = {
            "bucket": kl3m_bucket.bucket,
            "region": "us-east-1",
            "endpoint_url": proxy.endpoint_url,
            **creds,
        }
        async with AsyncKL3MClient(**kwargs) as client:
            texts += [repr(client), str(client), repr(client.config), str(client.config)]
            texts += [repr(client._store), repr(client.config.public_dict())]
            assert await client.list_datasets()
            got = await client.get_document(doc.dataset_id, doc.document_id)
            assert got is not None
            texts += [repr(got), str(got.content)]
            assert await client.exists(doc.dataset_id, doc.document_id)
            assert await client.get_document(doc.dataset_id, "no-such-document") is None
            with pytest.raises(AccessDeniedError) as denied:
                await client.get_document("denied", "x")
            texts.append(_texts(denied.value))
        assert proxy.rejected["AccessDenied"] >= 1

    # connection failure
    dead = {**kwargs, "endpoint_url": f"http://127.0.0.1:{_free_port()}", "max_attempts": 2}
    async with AsyncKL3MClient(**dead, connect_timeout=1.0) as client:
        with pytest.raises(ConnectionFailedError) as failed:
            await client.get_document(doc.dataset_id, doc.document_id)
        texts.append(_texts(failed.value))

    # the blocking client
    with KL3MClient(**{**kwargs, "endpoint_url": kl3m_bucket.endpoint_url}) as sync_client:
        texts += [repr(sync_client), str(sync_client)]
        assert sync_client.get_document(doc.dataset_id, doc.document_id) is not None

    logged = "\n".join(capture.lines)
    # the test has teeth: botocore did log the signed headers, and the token was redacted
    assert "X-Amz-Security-Token" in logged
    assert ACCESS_KEY in logged  # not a secret: only the key id is shown in signatures
    _assert_clean(logged)
    for text in texts:
        _assert_clean(text)


def test_redaction_patterns() -> None:
    from kl3m_data_client._redact import redact

    samples = [
        f"headers={{'X-Amz-Security-Token': b'{TOKEN}'}}",
        f"https://x/?X-Amz-Security-Token={TOKEN}&X-Amz-Signature=abc",
        f"<SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>{TOKEN}</SessionToken>",
        f'{{"AccessKeyId": "A", "SecretAccessKey": "{SECRET}", "Token": "{TOKEN}"}}',
        f"aws_secret_access_key = {SECRET}\naws_session_token = {TOKEN}",
    ]
    for sample in samples:
        _assert_clean(redact(sample))
