"""Read shards (``export/_shards.py``) without Ray: planned from the dataset index or one
listing of the local bucket, then read; together the shards hold every document once."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient, ClientConfig, InvalidInputError
from kl3m_data_client.export._options import ExportPlan, make_plan
from kl3m_data_client.export._shards import (
    Planning,
    ReadShard,
    Sampler,
    plan_read_shards,
    shard_items,
    task_count,
)

pytestmark = pytest.mark.anyio


def setup(bucket: Any, dataset: str, stage: str, ids: list[str] | None = None) -> Any:
    config = ClientConfig.from_kwargs(**bucket.client_kwargs())
    return config, make_plan(bucket=config.bucket, dataset_id=dataset, stage=stage, ids=ids)


async def read(config: ClientConfig, plan: ExportPlan, shards: list[ReadShard]) -> list[list[Any]]:
    """The items of each shard, read with one client."""
    out: list[list[Any]] = []
    async with AsyncKL3MClient(config=config) as client:
        for shard in shards:
            out.append([item async for item in shard_items(client, plan, shard)])
    return out


def no_client(**_: Any) -> Any:
    raise AssertionError("this plan needs no request, so no client")


@pytest.mark.parametrize(
    ("dataset", "stage", "planning"),
    [
        ("usc", "representations", "index"),
        ("usc", "parquet", "listing"),
        # the index lists representation keys only: documents without one still fall in
        # the open-ended first and last ranges
        ("fdlp", "documents", "index"),
        ("dotgov", "documents", "auto"),  # no index: listing
    ],
)
async def test_read_shards_partition_the_dataset(
    kl3m_corpus_bucket: Any, dataset: str, stage: str, planning: Planning
) -> None:
    config, plan = setup(kl3m_corpus_bucket, dataset, stage)
    shards = await plan_read_shards(
        config,
        plan,
        4,
        client_factory=AsyncKL3MClient,
        planning=planning,
        min_documents_per_task=1,
    )
    assert 3 <= len(shards) <= 4
    assert shards[0].start_after is None and shards[-1].end is None  # nothing left out
    assert all(a.end == b.start_after for a, b in itertools.pairwise(shards))
    per_shard = await read(config, plan, shards)
    truth = {d.document_id: d for d in kl3m_corpus_bucket.corpus.in_stage(stage, dataset)}
    ids = [item.document_id for items in per_shard for item in items]
    assert sorted(ids) == sorted(truth)  # each document once, in exactly one shard
    for shard, items in zip(shards, per_shard, strict=True):
        keys = [item.key for item in items]
        assert keys == sorted(keys) and items  # listing order, and no empty shard
        assert all(shard.start_after is None or k > shard.start_after for k in keys)
        assert all(shard.end is None or k <= shard.end for k in keys)
    sizes = [s.size_bytes for s in shards]
    if planning == "index":  # no object sizes in an index
        assert sizes == [None] * len(shards)
    else:
        assert all(size is not None and size > 0 for size in sizes)


async def test_explicit_ids_are_cut_in_order_without_a_request(kl3m_corpus_bucket: Any) -> None:
    truth = sorted(d.document_id for d in kl3m_corpus_bucket.corpus.in_stage("parquet", "cap"))
    ids = [*truth[:5], "no-such-document"]
    config, plan = setup(kl3m_corpus_bucket, "cap", "parquet", ids)
    shards = await plan_read_shards(
        config, plan, 4, client_factory=no_client, min_documents_per_task=2
    )
    assert [s.ids for s in shards] == [tuple(ids[:2]), tuple(ids[2:4]), tuple(ids[4:])]
    per_shard = await read(config, plan, shards)
    assert [[i.document_id for i in items] for items in per_shard] == [
        ids[:2],
        ids[2:4],
        ids[4:],
    ]
    # one shard: no request either
    whole = await plan_read_shards(
        config, setup(kl3m_corpus_bucket, "cap", "parquet")[1], 1, client_factory=no_client
    )
    assert whole == [ReadShard()]


async def test_index_planning_needs_an_index(kl3m_corpus_bucket: Any) -> None:
    config, plan = setup(kl3m_corpus_bucket, "dotgov", "documents")
    with pytest.raises(InvalidInputError, match=r"dotgov.*no index"):
        await plan_read_shards(config, plan, 4, client_factory=AsyncKL3MClient, planning="index")


def test_sampler_keeps_few_keys_and_cuts_even_ranges() -> None:
    sampler = Sampler(8)
    keys = [f"k{i:06d}" for i in range(100_000)]
    for key in keys:
        sampler.add(key, 3)
    assert len(sampler.samples) < 2 * 8  # O(target) memory, however long the listing
    shards = sampler.ranges(8, size_known=True)
    assert len(shards) == 8 and all(s.size_bytes == 3 * 100_000 // 8 for s in shards)
    counts = [
        sum(
            1
            for k in keys
            if (s.start_after is None or k > s.start_after) and (s.end is None or k <= s.end)
        )
        for s in shards
    ]
    assert sum(counts) == len(keys)
    assert max(counts) - min(counts) <= 2 * sampler.step  # boundaries are sampled keys


def test_task_count() -> None:
    assert task_count(0, 8, 1000) == 1
    assert task_count(2500, 8, 1000) == 3
    assert task_count(10**6, 8, 1000) == 8
    assert task_count(5, 8, 0) == 5


def test_shard_planning_and_distributed_steps_need_no_ray() -> None:
    """With Ray absent, the planning and the scheduler-agnostic export steps import (so this
    file's tests run everywhere), and ``kl3m_data_client.ray`` names the extra to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "import kl3m_data_client.export._shards, kl3m_data_client.export._distributed\n"
        "try:\n"
        "    import kl3m_data_client.ray\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'kl3m-data-client[ray]'" in proc.stdout, proc.stdout + proc.stderr


def test_the_documented_shard_rule_is_the_code() -> None:
    """docs/export.md writes the hash of ``shard=`` and ``workers`` out as Python; evaluated,
    it gives what the exporter computes, for plain, non-ASCII and lone-surrogate ids."""
    import hashlib
    import re
    from pathlib import Path

    from kl3m_data_client.export import in_shard, shard_hash
    from kl3m_data_client.export._records import worker_of

    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text("utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `shard` |"))
    formula = re.search(r"`(int\.from_bytes\(.*?\))`", row)
    assert formula is not None, row
    worker_row = next(line for line in text.splitlines() if line.startswith("| `workers` |"))
    assert "`(shard_hash(id) // count) % workers == j`" in worker_row
    for doc_id in ["title-17/chapter-1", "Ärzte/§ 5", "bad-\udcff-id", "0"]:
        documented = eval(formula.group(1), {"hashlib": hashlib, "id": doc_id})
        assert documented == shard_hash(doc_id)
        for count in (1, 3, 7):
            index = documented % count
            assert in_shard(doc_id, (index, count), None)
            assert not in_shard(doc_id, ((index + 1) % count, count), None) or count == 1
            for workers in (2, 5):
                j = (documented // count) % workers
                assert worker_of(doc_id, (index, count), workers) == j
                assert in_shard(doc_id, (index, count), (j, workers))
