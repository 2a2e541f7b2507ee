"""Listing, streaming and export against a second S3 implementation: s3rver (Node.js), not moto.

The fixture installs the ``s3rver`` npm package into ``~/.cache/kl3m-tests/s3rver`` on first
use (``npm install``), starts it on a free loopback port with a temporary data directory,
and uploads a generated corpus. It needs ``node`` and ``npm`` (CI has both); without them
the module is skipped. Quirks found are listed in docs/aws.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from kl3m_data_client import AsyncKL3MClient, Stage
from kl3m_data_client.models.document import DocumentContent
from kl3m_data_client.testing import Corpus, generate_corpus
from test_cli import cli_env, read_jsonl_ids, run

S3RVER_HOME = Path.home() / ".cache" / "kl3m-tests" / "s3rver"
BUCKET = "kl3m-s3rver"
CREDENTIALS = {"aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER"}


def _s3rver_command() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run s3rver")
    script = S3RVER_HOME / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if not script.exists():
        S3RVER_HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(S3RVER_HOME), "s3rver@3", "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return [node, str(script)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"s3rver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("s3rver did not start listening")


async def _upload(endpoint: str, objects: dict[str, bytes]) -> None:
    session = AioSession()
    config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=16)
    async with session.create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config, **CREDENTIALS
    ) as s3:
        sem = asyncio.Semaphore(16)

        async def put(key: str, body: bytes) -> None:
            async with sem:
                await s3.put_object(Bucket=BUCKET, Key=key, Body=body)

        await asyncio.gather(*(put(k, v) for k, v in objects.items()))


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Corpus]]:
    command = _s3rver_command()
    port = _free_port()
    data = tmp_path_factory.mktemp("s3rver")
    args = ["-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent"]
    # s3rver 3.x encrypts continuation tokens with a cipher OpenSSL 3 (Node >= 17) only
    # offers through its legacy provider: without it every continued page is a 500
    env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
    proc = subprocess.Popen(
        [*command, *args, "--configure-bucket", BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        _wait_for(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        corpus = generate_corpus(40, seed=3)
        asyncio.run(_upload(endpoint, dict(corpus.objects)))
        yield endpoint, corpus
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kwargs(endpoint: str) -> dict[str, Any]:
    return {"bucket": BUCKET, "endpoint_url": endpoint, "region": "us-east-1", **CREDENTIALS}


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_listing_against_s3rver(s3rver: tuple[str, Corpus]) -> None:
    endpoint, corpus = s3rver
    expected = sorted(k for k in corpus.objects if k.startswith("documents/"))
    async with AsyncKL3MClient(**_kwargs(endpoint)) as client:
        listed = [
            o.key
            async for page in client._store.list_pages("documents/", page_size=7)
            for o in page.objects
        ]
        # resume after a key in the middle: exactly the rest
        middle = expected[len(expected) // 2]
        rest = [
            o.key
            async for page in client._store.list_pages(
                "documents/", start_after=middle, page_size=5
            )
            for o in page.objects
        ]
        datasets = await client.list_datasets()
    assert listed == expected
    assert rest == [k for k in expected if k > middle]
    # s3rver 3.7 answers a Delimiter listing with its first common prefix only (and
    # IsTruncated=false), a quirk the client cannot tell from a real answer: see docs/aws.md
    assert datasets and set(datasets) <= {d.dataset_id for d in corpus.documents}


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_stream_documents_against_s3rver(s3rver: tuple[str, Corpus]) -> None:
    endpoint, corpus = s3rver
    async with AsyncKL3MClient(**_kwargs(endpoint)) as client:
        for dataset in sorted({d.dataset_id for d in corpus.documents}):
            expected = {
                d.document_id: d.raw
                for d in corpus.dataset_documents(dataset)
                if "documents" in d.stages
            }
            got: dict[str, bytes] = {}
            async for doc in client.stream_documents(dataset, Stage.DOCUMENTS):
                assert isinstance(doc.content, DocumentContent)
                got[doc.document_id] = doc.content.raw
            assert got == expected, dataset


@pytest.mark.timeout(180)
def test_export_against_s3rver(s3rver: tuple[str, Corpus], tmp_path: Path) -> None:
    endpoint, corpus = s3rver
    dataset = sorted({d.dataset_id for d in corpus.documents})[0]
    env = cli_env(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER")
    proc = run(
        "export", dataset, str(tmp_path / "out"), "--json", "-q",
        endpoint=endpoint, bucket=BUCKET, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    prefix = f"documents/{dataset}/"
    keys = [k for k in corpus.objects if k.startswith(prefix)]
    assert sorted(read_jsonl_ids(report)) == sorted(
        k[len(prefix) :].removesuffix(".json") for k in keys
    )
