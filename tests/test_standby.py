"""Worker processes started before an export knows its plan (``Standby``), as
``kl3m-client export`` does: adopted by the export that needs them, stopped otherwise, and
the records are those of one worker. Real spawned processes against the local bucket."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient, InvalidInputError
from kl3m_data_client.cli import main
from kl3m_data_client.export._auto import (
    AUTO_LISTING_PEEK,
    AUTO_STANDBY,
    resolve_workers,
    standby_workers,
)
from kl3m_data_client.export._workers import Standby
from kl3m_data_client.testing import encode_document_object

pytestmark = pytest.mark.anyio

DATASET = "cap"


def _lines(dest: Path) -> list[bytes]:
    return sorted(line for p in (dest / "data").iterdir() for line in p.read_bytes().splitlines())


def _recorded(dest: Path) -> int:
    workers: int = json.loads((dest / "manifest.json").read_text())["options"]["workers"]
    return workers


def test_standby_count_rule() -> None:
    assert standby_workers(1) == 0
    assert standby_workers(3) == 2
    assert standby_workers("auto") == min(resolve_workers("auto") - 1, AUTO_STANDBY)
    assert standby_workers("auto", deduplicate=True) == 0
    assert standby_workers(4, max_documents=10) == 0
    with pytest.raises(InvalidInputError, match="workers"):
        standby_workers(0)


async def test_standby_workers_are_adopted_and_a_spare_is_released(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    """Two workers started ahead; an export with workers=2 runs its worker 1 in the first
    (no new process), releases the second, and writes the records of workers=1."""
    options: dict[str, Any] = {"stage": "parquet", "records_per_part": 4}
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        with Standby.ready(client, 2) as standby:
            before = dict(standby.procs)
            assert sorted(before) == [1, 2] and all(p.pid for p in before.values())
            two = await client.export(DATASET, tmp_path / "two", workers=2, **options)
            assert standby.adopted and standby.procs[1] is before[1]
        one = await client.export(DATASET, tmp_path / "one", workers=1, **options)
    assert not any(p.is_alive() for p in before.values())
    assert two.exported == one.exported > 10 and two.errors == one.errors == 0
    assert any(p.name.startswith("part-w1-") for p in (tmp_path / "two" / "data").iterdir())
    assert _lines(tmp_path / "two") == _lines(tmp_path / "one")


async def test_standby_not_needed_or_for_another_client_is_stopped(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    """A one-worker export and an export of a client with other settings (its workers could
    not be those) leave the standby worker waiting; ``workers="auto"`` picking one worker
    for a small export stops it at once. The records are the same every time."""
    kwargs = kl3m_corpus_bucket.client_kwargs()
    async with (
        AsyncKL3MClient(**kwargs) as client,
        AsyncKL3MClient(**kwargs, max_concurrency=7) as other,
    ):
        with Standby.ready(client, 1) as standby:
            started = dict(standby.procs)
            assert sorted(started) == [1]
            alone = await client.export(DATASET, tmp_path / "alone", stage="parquet", workers=1)
            elsewhere = await other.export(DATASET, tmp_path / "other", stage="parquet", workers=2)
            assert not standby.adopted and not standby.discarded and started[1].is_alive()
            auto = await client.export(DATASET, tmp_path / "auto", stage="parquet")
            assert standby.discarded and not started[1].is_alive()
        assert not standby.adopted
    assert _recorded(tmp_path / "auto") == 1
    assert alone.exported == elsewhere.exported == auto.exported > 10
    assert _lines(tmp_path / "alone") == _lines(tmp_path / "other") == _lines(tmp_path / "auto")


def test_no_standby_for_a_client_that_cannot_use_processes(kl3m_corpus_bucket: Any) -> None:
    from kl3m_data_client._store import S3Store

    kwargs = kl3m_corpus_bucket.client_kwargs()
    client = AsyncKL3MClient(**kwargs, _store_factory=lambda c: S3Store(c, None))
    with Standby.ready(client, 2) as standby:
        assert standby.procs == {}


@pytest.mark.parametrize("workers", [None, "2"])
def test_cli_export_with_early_workers_leaves_no_process(
    kl3m_corpus_bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str | None
) -> None:
    """``kl3m-client export`` (default: auto, which starts one worker early; or --workers 2)
    writes the records of --workers 1 and leaves no child process behind."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    base = ["--endpoint-url", kl3m_corpus_bucket.endpoint_url, "--bucket", "data.kl3m.ai"]
    base += ["-q", "export", DATASET]
    extra = ["--stage", "parquet", "--records-per-part", "4"]
    assert main([*base, str(tmp_path / "one"), *extra, "--workers", "1"]) == 0
    chosen = ["--workers", workers] if workers else []
    assert main([*base, str(tmp_path / "w"), *extra, *chosen]) == 0
    assert multiprocessing.active_children() == []
    assert _lines(tmp_path / "w") == _lines(tmp_path / "one")
    assert _recorded(tmp_path / "w") == (2 if workers else 1)  # auto: a small export


def _big_dataset(n: int) -> dict[str, bytes]:
    """``n`` small text documents of the dataset ``big``."""
    return {
        f"documents/big/{i:05d}.json": encode_document_object(
            {"identifier": f"big-{i}", "format": "text/plain"},
            f"document {i}".encode(),
            document_id=f"{i:05d}",
            dataset_id="big",
        )
        for i in range(n)
    }


@pytest.mark.parametrize(
    ("n", "explicit", "pages"),
    [
        (AUTO_LISTING_PEEK - 500, 1, 2),  # pages of 1,000 and 500: one worker
        (AUTO_LISTING_PEEK + 1, 2, 3),  # pages of 1,000, 1,000 and 1: the usable CPUs
    ],
)
async def test_auto_lists_the_dataset_once(
    kl3m_server: Any, tmp_path: Path, only_read_operations: Any, n: int, explicit: int, pages: int
) -> None:
    """``workers="auto"`` reads up to the first 2,000 objects to choose; the export starts
    with them (the dealer of several workers, or the one stream), so the dataset is listed as
    often as with an explicit worker count: once."""
    bucket = kl3m_server.create_bucket(objects=_big_dataset(n))
    try:
        listed: list[int] = []
        async with AsyncKL3MClient(**bucket.client_kwargs()) as client:
            for name, workers in (("explicit", explicit), ("auto", "auto")):
                before = only_read_operations["ListObjectsV2"]
                report = await client.export("big", tmp_path / name, workers=workers)
                listed.append(only_read_operations["ListObjectsV2"] - before)
                assert report.exported == n and report.errors == 0
    finally:
        bucket.close()
    assert listed == [pages, pages]
    chosen = 1 if n < AUTO_LISTING_PEEK else resolve_workers("auto")
    assert _recorded(tmp_path / "auto") == chosen
    assert _lines(tmp_path / "auto") == _lines(tmp_path / "explicit")
