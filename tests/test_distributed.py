"""The scheduler-agnostic steps of a distributed export (``export/_distributed.py``), run
without Ray, from inside a running event loop (a notebook, an async test, a Ray actor)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient, ClientConfig, InvalidInputError
from kl3m_data_client.export import shard_hash
from kl3m_data_client.export._distributed import (
    DISTRIBUTED_TOOL,
    distributed_fingerprint,
    export_shard,
    merge_shards,
    prepare_destination,
)

pytestmark = pytest.mark.anyio

OPTIONS: dict[str, Any] = {"stage": "parquet", "format": "jsonl", "records_per_part": 7}


def records(root: Path) -> list[dict[str, Any]]:
    return sorted(
        (
            json.loads(line)
            for p in root.rglob("part-*.jsonl")
            for line in p.read_text().split("\n")
            if line
        ),
        key=lambda r: r["id"],
    )


async def test_shards_export_from_inside_a_running_event_loop(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    """``export_shard`` blocks, but runs on its own loop thread: called straight from this
    coroutine, on a thread whose loop is running (where ``asyncio.run`` raises)."""
    asyncio.get_running_loop()  # the point of the test: a loop runs in this thread
    threads = threading.active_count()
    kw = kl3m_corpus_bucket.client_kwargs()
    config = ClientConfig.from_kwargs(**kw)
    fingerprint = distributed_fingerprint(config, "cap", 3, **OPTIONS)
    dest = tmp_path / "dist"
    assert prepare_destination(dest, fingerprint) is False
    results = [
        export_shard(config, "cap", dest, i, 3, OPTIONS, client_factory=AsyncKL3MClient)
        for i in range(3)
    ]
    assert threading.active_count() == threads  # each shard's loop thread was joined
    report = merge_shards(dest, processed_this_run=sum(r["processed_this_run"] for r in results))

    async with AsyncKL3MClient(**kw) as client:
        single = await client.export("cap", tmp_path / "single", **OPTIONS)
    assert records(dest) == records(tmp_path / "single")  # record for record
    assert report.exported == single.exported == sum(r["exported"] for r in results) > 0
    for i, result in enumerate(results):
        assert result["shard"] == i
        shard_ids = [r["id"] for r in records(dest / f"shard-0000{i}-of-00003")]
        assert shard_ids and all(shard_hash(x) % 3 == i for x in shard_ids)
    assert json.loads((dest / "manifest.json").read_text())["complete"] is True
    # a rerun resumes: each shard is already complete
    again = export_shard(config, "cap", dest, 0, 3, OPTIONS, client_factory=AsyncKL3MClient)
    assert again["processed_this_run"] == 0 and again["exported"] == results[0]["exported"]


async def test_prepare_destination_refuses_what_it_does_not_own(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    config = ClientConfig.from_kwargs(**kw)
    fingerprint = distributed_fingerprint(config, "cap", 2, **OPTIONS)
    async with AsyncKL3MClient(**kw) as client:
        await client.export("cap", tmp_path / "single", **OPTIONS)
    with pytest.raises(InvalidInputError, match="holds a single-machine export"):
        prepare_destination(tmp_path / "single", fingerprint)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"tool": "something else"}')
    with pytest.raises(InvalidInputError, match="not a kl3m-data-client export manifest"):
        prepare_destination(tmp_path / "other", fingerprint)
    (tmp_path / "other" / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a valid export manifest"):
        prepare_destination(tmp_path / "other", fingerprint)
    # overwrite replaces the single-machine export with a fresh distributed one
    assert prepare_destination(tmp_path / "single", fingerprint, overwrite=True) is False
    manifest = json.loads((tmp_path / "single" / "manifest.json").read_text())
    assert manifest["tool"] == DISTRIBUTED_TOOL and manifest["options"]["shards"] == 2
    assert not list((tmp_path / "single").rglob("part-*"))
    assert prepare_destination(tmp_path / "single", fingerprint) is True  # resumes
