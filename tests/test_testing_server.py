"""LocalBucket / LocalS3Server: real moto server in a child process, checked over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kl3m_data_client.testing import (
    DEFAULT_BUCKET,
    LocalBucket,
    LocalS3Server,
    ServerError,
    generate_corpus,
)


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) child pids of ``pid`` from /proc (no psutil)."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." - comm may contain spaces/parens
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def is_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def s3(endpoint_kwargs: dict[str, str]) -> Any:
    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **endpoint_kwargs)


def list_keys(client: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_local_bucket_serves_every_object_byte_identical() -> None:
    with LocalBucket(60, seed=2, dirty=True) as b:
        corpus = b.corpus
        assert b.bucket == DEFAULT_BUCKET
        client = s3(b.boto_kwargs())
        assert list_keys(client, b.bucket) == {k: len(v) for k, v in corpus.objects.items()}
        for key, data in corpus.objects.items():
            assert client.get_object(Bucket=b.bucket, Key=key)["Body"].read() == data, key
        prefixes = client.list_objects_v2(Bucket=b.bucket, Prefix="documents/", Delimiter="/")
        datasets = {p["Prefix"].split("/")[1] for p in prefixes["CommonPrefixes"]}
        assert datasets == set(corpus.datasets)
        assert b.client_kwargs() == {
            "bucket": DEFAULT_BUCKET,
            "endpoint_url": b.endpoint_url,
            "region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        assert b.endpoint_url.startswith("http://127.0.0.1:")


def test_startup_time_of_a_1000_document_bucket(
    record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.perf_counter()
    with LocalBucket(1000, seed=0) as b:
        ready = time.perf_counter() - t0
        n_keys = len(list_keys(s3(b.boto_kwargs()), b.bucket))
        assert n_keys == len(b.corpus.objects)
    record_property("startup_seconds_1000_documents", round(ready, 3))
    with capsys.disabled():
        print(f"\n[kl3m] 1,000-document LocalBucket ready in {ready:.2f}s ({n_keys} objects)")
    assert ready < 30  # generous: the target is a few seconds


def test_close_leaves_no_child_process() -> None:
    me = os.getpid()
    before = children_of(me)
    b = LocalBucket(5).start()
    pid = b.server.pid
    assert pid in children_of(me) - before
    b.close()
    assert not is_alive(pid)
    assert children_of(me) == before
    b.close()  # idempotent
    with pytest.raises(ServerError):
        _ = b.endpoint_url


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """SIGKILL the parent (no atexit, no close): the server child must go too."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys
            from kl3m_data_client.testing import LocalS3Server
            s = LocalS3Server().start()
            print(s.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    server_pid = int(proc.stdout.strip())
    deadline = time.monotonic() + 10
    while is_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(server_pid)


def test_server_started_from_a_short_lived_thread_survives_the_thread() -> None:
    """PR_SET_DEATHSIG is per *thread*: spawning must not tie the child to a worker thread."""
    server = LocalS3Server()
    t = threading.Thread(target=server.start)
    t.start()
    t.join()
    try:
        time.sleep(0.3)
        assert server.running
        server.ping()
        s3(server.boto_kwargs()).list_buckets()
    finally:
        server.close()
    assert not server.running


def test_free_ports_and_additional_buckets_on_one_server() -> None:
    with LocalS3Server() as one, LocalS3Server() as two:
        assert one.port != two.port
        a = one.create_bucket(n_documents=5, seed=1)
        b = one.create_bucket(n_documents=5, seed=2, dirty=True)
        empty = one.create_bucket("an.empty.bucket")
        assert len({a.bucket, b.bucket, empty.bucket}) == 3
        client = s3(one.boto_kwargs())
        assert set(list_keys(client, a.bucket)) == set(a.corpus.objects)
        assert set(list_keys(client, b.bucket)) == set(b.corpus.objects)
        assert list_keys(client, empty.bucket) == {}
        assert empty.corpus.objects == {}
        a.close()  # deletes the bucket from the shared server
        with pytest.raises(ClientError):
            client.list_objects_v2(Bucket=a.bucket)
        assert one.running  # the shared server keeps running
        assert set(list_keys(client, b.bucket)) == set(b.corpus.objects)


def test_upload_user_objects_over_http_async() -> None:
    objects = {
        "documents/mine/a b/c[1]+d=e%2Ff.json": b'{"x": 1}',
        "documents/mine/ünïcode.json": b"{}",
        "parquet/mine/blob": bytes(range(256)) * 10,
    }
    generated = generate_corpus(12, seed=4)

    async def main() -> None:
        async with LocalBucket(objects=objects, bucket="user.objects") as b:
            assert b.startup_seconds is not None
            assert b.corpus.objects == dict(sorted(objects.items()))
            await b.put_objects_async(generated)
            client = s3(b.boto_kwargs())
            keys = await anyio.to_thread.run_sync(list_keys, client, b.bucket)
            assert set(keys) == set(objects) | set(generated.objects)
            for key, data in [*objects.items(), *generated.objects.items()]:
                body = client.get_object(Bucket=b.bucket, Key=key)["Body"].read()
                assert body == data, key
            pid = b.server.pid
        assert not is_alive(pid)

    anyio.run(main)


def test_sync_upload_of_a_corpus_object() -> None:
    generated = generate_corpus(8, seed=6, dirty=True)
    with LocalBucket(objects=generated) as b:
        assert b.corpus is generated
        client = s3(b.boto_kwargs())
        assert list_keys(client, b.bucket) == {k: len(v) for k, v in generated.objects.items()}


def test_not_started_errors() -> None:
    server = LocalS3Server()
    with pytest.raises(ServerError):
        _ = server.endpoint_url
    with pytest.raises(ServerError):
        server.ping()
    with pytest.raises(ServerError):
        LocalBucket(1, server=server).start()
