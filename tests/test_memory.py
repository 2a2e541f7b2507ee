"""Memory bounded by bytes: the budget, one-copy inflation, the on-disk dedup seen-set.

Peak RSS is measured in a subprocess (``VmHWM`` of /proc/self/status) that exports from the
local bucket; slow early items come from the fault proxy's ``drip`` fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from kl3m_data_client import AsyncKL3MClient, CorruptObjectError, InvalidInputError
from kl3m_data_client._budget import Budget, parse_size
from kl3m_data_client._config import ClientConfig
from kl3m_data_client.testing import LocalBucket
from kl3m_data_client.testing._corpus import encode_document_object
from kl3m_data_client.testing._faults import Fault, FaultPlan, FaultProxy, RequestInfo
from kl3m_data_client.utils.s3 import decompress_content

pytestmark = pytest.mark.anyio

MiB = 1 << 20
#: What an export holds besides the budget's charges (buffers, allocator slack); the
#: interpreter, the libraries and a connected client are measured before and not counted.
MARGIN = 96 * MiB
#: A guard against a deadlock (the tests normally take a few seconds).
HANG = 120


def _text(i: int, size: int) -> bytes:
    unit = f"document {i}: a line of fairly compressible legal text, section {i}.\n".encode()
    return (unit * (size // len(unit) + 1))[:size]


def _document(dataset: str, i: int, size: int) -> tuple[str, bytes]:
    doc_id = f"doc{i:03d}"
    body = encode_document_object(
        {"identifier": doc_id, "format": "text/plain"},
        _text(i, size),
        document_id=doc_id,
        dataset_id=dataset,
    )
    return f"documents/{dataset}/{doc_id}.json", body


def _records(dest: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in sorted((dest / "data").glob("*.jsonl")):
        with part.open("rb") as fh:
            out.extend(json.loads(line) for line in fh)
    return out


def _peak_rss_of_export(bucket: LocalBucket, dest: Path, dataset: str, budget: int) -> int:
    """Export ``dataset`` in a fresh process; its peak RSS in bytes above what the process
    held before the export (interpreter, libraries, a connected client)."""
    code = textwrap.dedent(
        f"""
        import asyncio, json

        from kl3m_data_client import AsyncKL3MClient

        def status(name):
            with open("/proc/self/status") as fh:
                return int(next(l.split()[1] for l in fh if l.startswith(name))) * 1024

        async def main():
            kwargs = json.loads({json.dumps(json.dumps(bucket.client_kwargs()))})
            async with AsyncKL3MClient(**kwargs, memory_budget={budget}) as client:
                await client.exists({dataset!r}, "doc000")  # connected, libraries loaded
                import kl3m_data_client.export  # noqa: F401
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM
                before = status("VmRSS")
                report = await client.export({dataset!r}, {str(dest)!r})
                assert report.exported == 3 and report.errors == 0, report
                print(status("VmHWM") - before)

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600
    )
    return int(out.stdout.split()[-1])


@pytest.mark.kl3m_corpus(0)
def test_export_of_big_documents_stays_within_budget(
    kl3m_bucket: LocalBucket, tmp_path: Path
) -> None:
    """3 x 200 MiB documents: the export's peak RSS growth within budget + margin (without
    a budget: ~1.3 GiB). Growth, not the whole process: libraries loaded at start (the fast
    decoders are ~7 MiB) are not documents, and the absolute peak sat within 2 MiB of the
    old limit (888 MiB of 896), so it failed under load with nothing held per document.

    A 200 MiB text document alone costs ~3 x 200 MiB while its record is handed to the
    JSONL writer, so a 768 MiB budget holds one at a time.
    """
    size = 200 * MiB
    objects = dict(_document("big", i, size) for i in range(3))
    kl3m_bucket.put_objects(objects)
    budget = 768 * MiB
    peak = _peak_rss_of_export(kl3m_bucket, tmp_path / "out", "big", budget)
    assert peak < budget + MARGIN, f"peak RSS growth {peak / MiB:.0f} MiB"
    records = _records(tmp_path / "out")
    assert [r["id"] for r in records] == ["doc000", "doc001", "doc002"]
    for i, record in enumerate(records):
        text = record["text"].encode()
        assert len(text) == size and text == _text(i, size)


def test_refusing_a_bomb_costs_at_most_the_cap(kl3m_bucket: LocalBucket) -> None:
    """A 1 GiB zlib bomb against a 64 MiB cap grows RSS by less than 128 MiB."""
    bomb = zlib.compress(b"\0" * (1024 * MiB), 9)
    body = json.dumps(
        {"identifier": "bomb", "content": __import__("base64").b64encode(bomb).decode()}
    ).encode()
    kl3m_bucket.put_objects({"documents/bombs/bomb.json": body})
    code = textwrap.dedent(
        f"""
        import asyncio, json
        from kl3m_data_client import AsyncKL3MClient, SizeLimitExceededError
        from kl3m_data_client._formats import Limits

        def status(name):
            with open("/proc/self/status") as fh:
                return int(next(l.split()[1] for l in fh if l.startswith(name))) * 1024

        async def main():
            kwargs = json.loads({json.dumps(json.dumps(kl3m_bucket.client_kwargs()))})
            limits = Limits(max_inflated_bytes=64 << 20)
            async with AsyncKL3MClient(**kwargs, limits=limits) as client:
                await client.get_object_bytes("bombs", "bomb")  # warm up the connection
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM
                before = status("VmRSS")
                try:
                    await client.get_document("bombs", "bomb")
                except SizeLimitExceededError as exc:
                    assert exc.key == "documents/bombs/bomb.json", exc.key
                else:
                    raise AssertionError("the bomb was not refused")
                print(status("VmHWM") - before)

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300
    )
    growth = int(out.stdout.split()[-1])
    assert growth < 128 * MiB, f"RSS grew by {growth / MiB:.0f} MiB"


def _slow_early(info: RequestInfo) -> bool:
    """The GETs of the first documents (doc000..doc004) drip slowly."""
    return info.operation == "GetObject" and any(f"doc00{i}" in info.path for i in range(5))


@pytest.mark.kl3m_corpus(0)
async def test_budget_never_deadlocks_with_slow_early_items(
    kl3m_bucket: LocalBucket, tmp_path: Path
) -> None:
    """Early items finish last; later ones wait for bytes; everything arrives, in order."""
    sizes = [3 * MiB if i % 4 == 0 else 256 * 1024 for i in range(40)]
    objects = dict(_document("slow", i, size) for i, size in enumerate(sizes))
    await kl3m_bucket.put_objects_async(objects)
    ids = [f"doc{i:03d}" for i in range(40)]
    plan = FaultPlan(
        rate=1.0,
        kinds={Fault.DRIP},
        select=_slow_early,
        max_faults_per_request=None,
        drip_delay=0.03,
        drip_pieces=16,
    )
    kwargs = {**kl3m_bucket.client_kwargs(), "max_concurrency": 16, "memory_budget": 8 * MiB}
    async with FaultProxy(kl3m_bucket.endpoint_url, plan) as proxy:
        kwargs["endpoint_url"] = proxy.endpoint_url
        async with AsyncKL3MClient(**kwargs) as client:
            with anyio.fail_after(HANG):
                streamed = [d.document_id async for d in client.stream_documents("slow")]
                by_id = await client.get_documents("slow", list(reversed(ids)))
                report = await client.export("slow", tmp_path / "e")
                given = await client.export("slow", tmp_path / "i", ids=ids)
        assert proxy.fired[Fault.DRIP] >= 20
    assert streamed == ids
    assert list(by_id) == list(reversed(ids))
    for i, doc_id in enumerate(ids):
        document = by_id[doc_id]
        assert document is not None
        assert document.content is not None
        assert document.content.content == _text(i, sizes[i]).decode()  # type: ignore[union-attr]
    assert report.exported == 40 and report.errors == 0
    assert given.exported == 40 and given.errors == 0
    for dest in (tmp_path / "e", tmp_path / "i"):
        assert [r["id"] for r in _records(dest)] == ids


@pytest.mark.kl3m_corpus(0)
async def test_documents_larger_than_the_budget_still_arrive(kl3m_bucket: LocalBucket) -> None:
    sizes = [8 * MiB, 1024, 6 * MiB, 2048, 1024]
    objects = dict(_document("huge", i, size) for i, size in enumerate(sizes))
    await kl3m_bucket.put_objects_async(objects)
    kwargs = {**kl3m_bucket.client_kwargs(), "memory_budget": 1 * MiB}
    async with AsyncKL3MClient(**kwargs) as client:
        with anyio.fail_after(HANG):
            docs = [d async for d in client.stream_documents("huge")]
            many = await client.get_documents("huge", [f"doc{i:03d}" for i in range(5)])
    assert [len(d.content.content) for d in docs] == sizes  # type: ignore[union-attr]
    assert [len(d.content.content) for d in many.values() if d] == sizes  # type: ignore[union-attr]


async def test_budget_is_fifo_and_lets_the_head_through() -> None:
    """The primitive: no overtaking; the head overdraws; the rest waits for what drains."""
    budget = Budget(100)
    first, second, third = budget.lease(), budget.lease(), budget.lease()
    await second.reserve_body(20)  # 60 of 100 (BODY_FACTOR 3)
    granted: list[str] = []

    async def reserve(lease: Any, size: int, name: str) -> None:
        await lease.reserve_body(size)
        granted.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reserve, third, 20, "third")  # 60 more: over the budget, not the head
        await anyio.wait_all_tasks_blocked()
        assert granted == []
        await reserve(first, 50, "first")  # the head: 150, granted over the budget at once
        assert granted == ["first"] and budget.held == 210
        first.taken()
        first.release()
        await anyio.wait_all_tasks_blocked()
        assert granted == ["first"]  # 60 + 60 > 100, and ``second`` is the head now
        second.taken()  # the consumer has it: the head (third) waits for it to be freed
        await anyio.wait_all_tasks_blocked()
        assert granted == ["first"]
        second.release()
    assert granted == ["first", "third"]
    assert budget.held == 60 and budget.peak == 210


def test_decompress_content_maps_non_ascii_bytes() -> None:
    with pytest.raises(CorruptObjectError) as info:
        decompress_content("caf\u00e9".encode())
    assert info.value.key == "<content>"
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_memory_budget_setting() -> None:
    assert parse_size("512MiB") == 512 * MiB
    assert parse_size("1.5GB") == 1_500_000_000
    assert ClientConfig(memory_budget="2GiB").memory_budget == 2048 * MiB  # type: ignore[arg-type]
    assert ClientConfig().memory_budget == 1024 * MiB
    for bad in ("lots", 0, -1, True):
        with pytest.raises(InvalidInputError, match="memory_budget"):
            ClientConfig(memory_budget=bad)  # type: ignore[arg-type]


def test_cli_memory_budget(kl3m_bucket: LocalBucket, tmp_path: Path) -> None:
    kw = kl3m_bucket.client_kwargs()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": kw["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": kw["aws_secret_access_key"],
    }
    base = [sys.executable, "-m", "kl3m_data_client.cli", "--endpoint-url"]
    base += [kw["endpoint_url"], "--bucket", kw["bucket"]]
    bad = subprocess.run([*base, "--memory-budget", "lots", "list"], capture_output=True, env=env)
    assert bad.returncode == 2 and b"not a size" in bad.stderr
    dataset = kl3m_bucket.corpus.documents[0].dataset_id
    ok = subprocess.run(
        [*base, "--memory-budget", "1MiB", "export", dataset, str(tmp_path / "x")],
        capture_output=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert list((tmp_path / "x" / "data").glob("*.jsonl"))


@pytest.mark.kl3m_corpus(0)
async def test_deduplicate_seen_set_lives_on_disk(kl3m_bucket: LocalBucket, tmp_path: Path) -> None:
    same = _text(1, 4096)
    objects = {}
    for i in range(6):
        doc_id = f"doc{i:03d}"
        objects[f"documents/dups/{doc_id}.json"] = encode_document_object(
            {"identifier": doc_id, "format": "text/plain"},
            same if i % 2 else _text(i, 4096),
            document_id=doc_id,
            dataset_id="dups",
        )
    await kl3m_bucket.put_objects_async(objects)
    async with AsyncKL3MClient(**kl3m_bucket.client_kwargs()) as client:
        report = await client.export("dups", tmp_path / "d", deduplicate=True, records_per_part=2)
        records = [r async for r in client.iter_jsonl_export("dups", deduplicate=True)]
    assert report.exported == 4 and report.duplicates == 2
    assert [r["id"] for r in records] == ["doc000", "doc001", "doc002", "doc004"]
    assert not list((tmp_path / "d").glob(".dedup*")), "the scratch seen-set is removed"


@pytest.mark.kl3m_corpus(0)
@pytest.mark.parametrize("plane", ["obstore", "aiobotocore"])
async def test_unlisted_body_is_admitted_before_it_is_read(
    kl3m_bucket: LocalBucket, plane: str
) -> None:
    """An object of unknown size (an explicit id) that does not fit is not read: its GET is
    closed unread, the lease waits in turn for the announced size, then GETs again. GETs are
    counted on the wire (the fault proxy), whichever data plane sends them."""
    from kl3m_data_client._budget import BODY_FACTOR, budgeted_get

    key, body = "documents/admit/doc.json", os.urandom(1 * MiB)  # raw bytes: no decoding here
    await kl3m_bucket.put_objects_async({key: body})
    gets: list[str] = []

    def on_the_wire(info: RequestInfo) -> None:
        if info.operation == "GetObject":
            gets.append(info.path)

    async with (
        FaultProxy(kl3m_bucket.endpoint_url, FaultPlan(0.0, credential_check=on_the_wire)) as p,
        AsyncKL3MClient(
            **{**kl3m_bucket.client_kwargs(), "endpoint_url": p.endpoint_url},
            data_plane=plane,  # type: ignore[arg-type]
        ) as client,
    ):
        budget = Budget(BODY_FACTOR * len(body) + BODY_FACTOR * len(body) // 4)
        head, other = budget.lease(), budget.lease()
        await head.reserve_body(len(body))  # the head holds most of the budget
        await other.reserve_body(None)  # unknown size: the small estimate fits
        got: list[bytes | None] = []

        async def fetch() -> None:
            got.append(await budgeted_get(client._store, key, other))

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch)
                while not budget._waiters and not got:  # refused at the headers, waiting
                    await anyio.wait_all_tasks_blocked()
                assert got == [] and len(gets) == 1
                assert budget.held <= budget.limit  # the refused body was never charged
                head.taken()
                head.release()
        used = client._store.plane
    assert (used is not None) is (plane == "obstore")
    if used is not None:
        assert used.gets == 1 and used.fallbacks == 0
    assert got == [body]
    assert len(gets) == 2  # read only once there was room for it
    assert budget.peak <= budget.limit
    assert other.held == BODY_FACTOR * len(body)
