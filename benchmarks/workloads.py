"""One benchmark workload in this process (started by ``run.py``, one process per client).

    python benchmarks/workloads.py CLIENT --endpoint URL [--dataset bench] [--limit N] ...

Fetch-and-decode clients list ``documents/{dataset}/``, GET every object and decode it
(JSON, base64, zlib): ``ref`` (kl3m-data-client 0.2.0 from benchmarks/.ref, as documented:
``iter_documents`` + ``get_document`` (HEAD) + ``get_document_content`` (GET), sequential),
``boto3`` (64 threads), ``s3fs`` (batch ``cat``), ``aiobotocore`` (64-way semaphore),
``obstore``, ``ours-async`` (``AsyncKL3MClient.stream_documents``), ``ours-sync``
(``KL3MClient.stream_documents``), ``ours-export`` (``client.export``, ``--workers``,
``--format``, ``--stage``); ``--data-plane`` is passed to our clients as ``data_plane=``.
Listing: ``list-paginator``, ``list-ours``, ``list-index``, ``list-obstore``,
``list-parallel`` (``list-ours`` over key ranges listed concurrently).

The client is created and one request made (a warm-up) before the clock starts; the window
covers listing, GETs and decoding. Prints ``RESULT {json}`` with the window's wall time and
CPU (this process and its waited-for children: threads and export workers included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
from typing import Any

from _list_workloads import (
    list_index,
    list_obstore,
    list_ours,
    list_paginator,
    list_parallel,
)
from _measure import (
    BUCKET,
    KEY_ID,
    REGION,
    SECRET,
    Window,
    decode,
    obstore_store,
    ours_kwargs,
    peak_rss_kb,
)


# ------------------------------------------------------------------------------ peers
def run_ref(a: argparse.Namespace) -> dict[str, Any]:
    # kl3m-data-client 0.2.0 (PYTHONPATH=benchmarks/.ref); it takes no endpoint argument,
    # so AWS_ENDPOINT_URL (honoured by boto3) points it at the local endpoint.
    from kl3m_data_client import KL3MClient
    from kl3m_data_client.models.common import Stage

    assert "/.ref/" in sys.modules["kl3m_data_client"].__file__, "not the reference client"
    client = KL3MClient(bucket=BUCKET, region=REGION)
    client.get_document(a.dataset, "__warmup__", Stage.DOCUMENTS)  # HEAD (404)
    docs = raw_bytes = 0
    with Window() as w:
        for doc_id in client.iter_documents(a.dataset, Stage.DOCUMENTS, limit=a.limit):
            doc = client.get_document(a.dataset, doc_id, Stage.DOCUMENTS)
            if doc is None:
                continue
            content = doc.get_document_content()
            if content is None:
                continue
            docs += 1
            c = content.content
            raw_bytes += len(c.encode() if isinstance(c, str) else c or b"")
    return {"docs": docs, "raw_bytes": raw_bytes, "window": w}


def _boto_config(concurrency: int) -> Any:
    from botocore.config import Config

    return Config(max_pool_connections=concurrency, s3={"addressing_style": "path"})


def run_boto3(a: argparse.Namespace) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=a.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=_boto_config(a.concurrency),
    )
    s3.list_objects_v2(Bucket=BUCKET, Prefix="documents/__warmup__/", MaxKeys=1)
    prefix = f"documents/{a.dataset}/"

    def keys() -> Any:
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield item["Key"]
                n += 1
                if a.limit and n >= a.limit:
                    return

    def fetch(key: str) -> int:
        return decode(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    with Window() as w, ThreadPoolExecutor(a.concurrency) as pool:
        sizes = list(pool.map(fetch, keys()))
    return {"docs": len(sizes), "raw_bytes": sum(sizes), "window": w}


def run_s3fs(a: argparse.Namespace) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=KEY_ID,
        secret=SECRET,
        endpoint_url=a.endpoint,
        client_kwargs={"region_name": REGION},
        config_kwargs={"max_pool_connections": a.concurrency, "s3": {"addressing_style": "path"}},
    )
    fs.exists(f"{BUCKET}/documents/__warmup__.json")
    with Window() as w:
        paths = fs.find(f"{BUCKET}/documents/{a.dataset}/")
        if a.limit:
            paths = paths[: a.limit]
        # the documented batch read; it treats paths as globs ('[' ...): missing keys
        # are omitted silently
        bodies = fs.cat(paths, on_error="omit", batch_size=a.concurrency)
        sizes = [decode(b) for b in bodies.values() if isinstance(b, bytes)]
    return {
        "docs": len(sizes),
        "raw_bytes": sum(sizes),
        "window": w,
        "listed": len(paths),
        "note": f"{len(paths) - len(sizes)} listed keys not returned by cat",
    }


async def _aiobotocore(a: argparse.Namespace) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    session = AioSession()
    cfg = AioConfig(max_pool_connections=a.concurrency, s3={"addressing_style": "path"})
    async with session.create_client(
        "s3",
        endpoint_url=a.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=cfg,
    ) as s3:
        await s3.list_objects_v2(Bucket=BUCKET, Prefix="documents/__warmup__/", MaxKeys=1)
        sem = asyncio.Semaphore(a.concurrency)
        sizes: list[int] = []
        tasks: set[asyncio.Task[None]] = set()

        async def fetch(key: str) -> None:
            try:
                r = await s3.get_object(Bucket=BUCKET, Key=key)
                async with r["Body"] as body:
                    data = await body.read()
                sizes.append(decode(data))
            finally:
                sem.release()

        with Window() as w:
            n = 0
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=BUCKET, Prefix=f"documents/{a.dataset}/"):
                for item in page.get("Contents", ()):
                    if a.limit and n >= a.limit:
                        break
                    n += 1
                    await sem.acquire()
                    t = asyncio.create_task(fetch(item["Key"]))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
    return {"docs": len(sizes), "raw_bytes": sum(sizes), "window": w}


async def _obstore_run(a: argparse.Namespace) -> dict[str, Any]:
    import obstore

    store = obstore_store(a)
    with contextlib.suppress(FileNotFoundError):
        await obstore.head_async(store, "documents/__warmup__.json")
    sem = asyncio.Semaphore(a.concurrency)
    sizes: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def fetch(key: str) -> None:
        try:
            r = await obstore.get_async(store, key)
            data = await r.bytes_async()
            sizes.append(decode(bytes(data)))
        finally:
            sem.release()

    with Window() as w:
        n = 0
        async for batch in obstore.list(store, f"documents/{a.dataset}/", chunk_size=1000):
            for meta in batch:
                if a.limit and n >= a.limit:
                    break
                n += 1
                await sem.acquire()
                t = asyncio.create_task(fetch(meta["path"]))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    return {"docs": len(sizes), "raw_bytes": sum(sizes), "window": w, "listed": n}


# ------------------------------------------------------------------------------ ours


# ------------------------------------------------------------------------------ ours
def _raw_len(content: Any) -> int:
    return len(content.raw)


async def _ours_async(a: argparse.Namespace) -> dict[str, Any]:
    from kl3m_data_client import AsyncKL3MClient

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        docs = raw_bytes = 0
        with Window() as w:
            async for doc in client.stream_documents(a.dataset, limit=a.limit or None):
                docs += 1
                raw_bytes += _raw_len(doc.content)
    return {"docs": docs, "raw_bytes": raw_bytes, "window": w}


def run_ours_sync(a: argparse.Namespace) -> dict[str, Any]:
    from kl3m_data_client import KL3MClient

    with KL3MClient(**ours_kwargs(a)) as client:
        client.exists(a.dataset, "__warmup__")
        docs = raw_bytes = 0
        with Window() as w:
            for doc in client.stream_documents(a.dataset, limit=a.limit or None):
                docs += 1
                raw_bytes += _raw_len(doc.content)
    return {"docs": docs, "raw_bytes": raw_bytes, "window": w}


async def _ours_export(a: argparse.Namespace) -> dict[str, Any]:
    from kl3m_data_client import AsyncKL3MClient

    if os.environ.get("BENCH_NO_ORJSON"):  # A/B of the optional orjson fast path
        from kl3m_data_client.export import _json

        _json._orjson = None

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        with tempfile.TemporaryDirectory(prefix="kl3m-bench-") as dest:
            options: dict[str, Any] = {
                "stage": a.stage,
                "format": a.format,
                "workers": a.workers,
            }
            if a.limit:
                options["max_documents"] = a.limit
            with Window() as w:
                report = await client.export(a.dataset, dest, **options)
            out = {
                "docs": report.exported,
                "errors": report.errors,
                "skipped": report.skipped,
                "bytes_in": report.bytes_in,
                "bytes_out": report.bytes_out,
                "window": w,
            }
    return out


def _obstore_get(a: argparse.Namespace, client: Any) -> Any:
    """A prototype of an obstore data plane behind ``S3Store.get`` (feasibility only).

    Same contract as ``S3Store.get`` for the happy path: the bytes, or None when missing;
    at most ``--concurrency`` GETs in flight; the MD5 ETag check kept. Not handled (what the
    real seam would add): retries of broken bodies, error mapping, deadlines, credentials
    refreshed through the aiobotocore session, keys obstore cannot address.
    """
    import hashlib

    import obstore

    store = obstore_store(a)
    sem = asyncio.Semaphore(a.concurrency)

    async def get(key: str, *, admit: Any = None) -> bytes | None:
        async with sem:
            try:
                r = await obstore.get_async(store, key)
            except FileNotFoundError:
                return None
            if admit is not None and not admit(r.meta["size"]):  # the memory budget
                from kl3m_data_client._budget import NeedRoom

                raise NeedRoom(key, r.meta["size"])
            data = bytes(await r.bytes_async())
        etag = str(r.meta.get("e_tag") or "").strip('"').lower()
        if len(etag) == 32 and hashlib.md5(data, usedforsecurity=False).hexdigest() != etag:
            raise RuntimeError(f"MD5 mismatch for {key!r}")
        return data

    return get


async def _obstore_export(a: argparse.Namespace) -> dict[str, Any]:
    """Our export (listing, records, writers, manifest) with GETs through obstore."""
    from kl3m_data_client import AsyncKL3MClient

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        get = _obstore_get(a, client)
        await get("documents/__warmup__.json")
        client._store.get = get  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory(prefix="kl3m-bench-") as dest:
            options: dict[str, Any] = {"stage": a.stage, "format": a.format, "workers": 1}
            if a.limit:
                options["max_documents"] = a.limit
            with Window() as w:
                report = await client.export(a.dataset, dest, **options)
    return {"docs": report.exported, "errors": report.errors, "window": w}


RUNNERS = {
    "ref": run_ref,
    "boto3": run_boto3,
    "s3fs": run_s3fs,
    "aiobotocore": lambda a: asyncio.run(_aiobotocore(a)),
    "obstore": lambda a: asyncio.run(_obstore_run(a)),
    "ours-async": lambda a: asyncio.run(_ours_async(a)),
    "ours-sync": run_ours_sync,
    "ours-export": lambda a: asyncio.run(_ours_export(a)),
    "obstore-export": lambda a: asyncio.run(_obstore_export(a)),
    "list-paginator": lambda a: asyncio.run(list_paginator(a)),
    "list-ours": lambda a: asyncio.run(list_ours(a)),
    "list-index": lambda a: asyncio.run(list_index(a)),
    "list-obstore": lambda a: asyncio.run(list_obstore(a)),
    "list-parallel": lambda a: asyncio.run(list_parallel(a)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=sorted(RUNNERS))
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--dataset", default="bench")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--format", default="jsonl")
    ap.add_argument("--stage", default="documents")
    ap.add_argument("--memory-budget", default=None, help="e.g. 1GiB (ours, if it has it)")
    ap.add_argument("--data-plane", default=None, help="ours: AsyncKL3MClient(data_plane=...)")
    a = ap.parse_args()
    out = RUNNERS[a.client](a)
    w = out.pop("window")
    out.update(seconds=w.seconds, cpu=w.cpu, sys_cpu=w.sys_cpu, children_cpu=w.children_cpu)
    out["rss_kb"] = peak_rss_kb()
    # export workers (spawned processes): the largest one's peak (ru_maxrss of children)
    out["rss_children_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
