"""The listing workloads of ``workloads.py`` (one per process): the aiobotocore paginator,
our ``iter_documents``, ``get_dataset_index``, key ranges listed concurrently (prototype) and
obstore's list, each over ``documents/{dataset}/``."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _measure import BUCKET, KEY_ID, REGION, SECRET, Window, obstore_store, ours_kwargs


async def list_paginator(a: argparse.Namespace) -> dict[str, Any]:
    from aiobotocore.session import AioSession
    from botocore.config import Config

    async with AioSession().create_client(
        "s3",
        endpoint_url=a.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    ) as s3:
        await s3.list_objects_v2(Bucket=BUCKET, Prefix="documents/__warmup__/", MaxKeys=1)
        n = 0
        with Window() as w:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=BUCKET, Prefix=f"documents/{a.dataset}/"):
                n += len(page.get("Contents", ()))
    return {"docs": n, "window": w}


async def list_ours(a: argparse.Namespace) -> dict[str, Any]:
    from kl3m_data_client import AsyncKL3MClient

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        n = 0
        with Window() as w:
            async for _ in client.iter_documents(a.dataset):
                n += 1
    return {"docs": n, "window": w}


async def list_index(a: argparse.Namespace) -> dict[str, Any]:
    from kl3m_data_client import AsyncKL3MClient

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        with Window() as w:
            index = await client.get_dataset_index(a.dataset)
            n = len(index.objects) if index is not None else 0
    return {"docs": n, "window": w}


#: Ranges wanted (at least; up to twice as many are kept).
_RANGES = 8


async def _split(client: Any, prefix: str) -> tuple[list[str], int]:
    """Range boundaries (keys) for ``prefix``, from probes of the id's first characters.

    The first page gives the alphabet of the ids. Then level by level (at most 8), one
    ``MaxKeys=1`` ListObjectsV2 after ``prefix + stem`` and after ``prefix + stem + c`` for each
    character ``c`` of that alphabet, concurrently: the keys returned give characters that
    follow ``stem`` (others too: a probe returns the next key whatever it holds), and those
    extend the stems. Any sorted boundaries partition the keys; the probes only make the
    ranges even.
    """
    probes = 1

    async def page(after: str | None, max_keys: int) -> tuple[list[str], bool]:
        # one ListObjectsV2 through the store's aiobotocore client: (keys, truncated)
        params: dict[str, Any] = {"Bucket": BUCKET, "Prefix": prefix, "MaxKeys": max_keys}
        if after is not None:
            params["StartAfter"] = after
        r = await client.list_objects_v2(**params)
        return [o["Key"] for o in r.get("Contents", ())], bool(r.get("IsTruncated"))

    async def first_after(after: str) -> str | None:
        nonlocal probes
        probes += 1
        keys, _ = await page(after, 1)
        return keys[0] if keys else None

    first, truncated = await page(None, 1000)
    if not truncated:  # one page: nothing to split
        return [], probes
    alphabet = sorted({c for key in first for c in key[len(prefix) :]})
    stems = [""]
    for _ in range(8):
        if len(stems) >= _RANGES:
            break
        afters = [prefix + s + c for s in stems for c in ("", *alphabet)]
        found = await asyncio.gather(*(first_after(x) for x in afters))
        deeper = {
            key[len(prefix) : len(prefix) + len(s) + 1]
            for s in stems
            for key in found
            if key is not None and key.startswith(prefix + s) and len(key) > len(prefix + s)
        }
        if not deeper:
            break
        stems = sorted(deeper)
    if len(stems) > 2 * _RANGES:  # every k-th stem
        stems = [stems[i * len(stems) // (2 * _RANGES)] for i in range(2 * _RANGES)]
    return [prefix + s for s in stems[1:]], probes


async def list_parallel(a: argparse.Namespace) -> dict[str, Any]:
    """The ids of ``iter_documents``, listed as key ranges ``(b[i], b[i+1]]`` concurrently."""
    from kl3m_data_client import AsyncKL3MClient
    from kl3m_data_client._keys import document_id_from_key
    from kl3m_data_client._stream import closing

    async with AsyncKL3MClient(**ours_kwargs(a)) as client:
        await client.exists(a.dataset, "__warmup__")
        store = client._store
        prefix = f"documents/{a.dataset}/"
        overshoot = 0

        async def one_range(after: str | None, upper: str | None) -> list[str]:
            nonlocal overshoot
            ids: list[str] = []
            async with closing(store.list_pages(prefix, start_after=after)) as pages:
                async for page in pages:
                    for info in page.objects:
                        if upper is not None and info.key > upper:
                            overshoot += 1
                            continue
                        doc_id = document_id_from_key(info.key)
                        if doc_id:
                            ids.append(doc_id)
                    if upper is not None and page.objects and page.objects[-1].key > upper:
                        break
            return ids

        with Window() as w:
            t0 = time.perf_counter()
            bounds, probes = await _split(await store.client(), prefix)
            split_seconds = time.perf_counter() - t0
            edges: list[str | None] = [None, *bounds, None]
            parts = await asyncio.gather(
                *(one_range(edges[i], edges[i + 1]) for i in range(len(edges) - 1))
            )
            ids = [i for part in parts for i in part]
    assert len(set(ids)) == len(ids), "a key listed twice"
    return {
        "docs": len(ids),
        "window": w,
        "ranges": len(edges) - 1,
        "probes": probes,
        "split_seconds": split_seconds,
        "overshoot": overshoot,
    }


async def list_obstore(a: argparse.Namespace) -> dict[str, Any]:
    import obstore

    store = obstore_store(a)
    n = 0
    with Window() as w:
        async for batch in obstore.list(store, f"documents/{a.dataset}/", chunk_size=1000):
            n += len(batch)
    return {"docs": n, "window": w}
