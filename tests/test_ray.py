"""Ray Data integration against the local bucket: read tasks, a local Ray cluster, and the
distributed export compared with the single-process export."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from kl3m_data_client import (
    AsyncKL3MClient,
    ClientConfig,
    CorruptObjectError,
    InvalidInputError,
    KL3MClient,
    NotFoundError,
)
from kl3m_data_client.export import ExportProgress, ExportReport
from kl3m_data_client.export._distributed import (
    distributed_fingerprint,
    export_shard,
    prepare_destination,
)

ray = pytest.importorskip("ray")

from kl3m_data_client.ray import KL3MDatasource, export_distributed, read_kl3m  # noqa: E402

pytestmark = [
    # Ray's own DataContext() assigns its deprecated fields while it is being constructed
    # (ray.data.context warns about itself); nothing in this project triggers these.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

SECRET = "s3cr3t-never-on-a-worker-9f1c"


def worker_env(bucket: Any) -> dict[str, str]:
    kw = bucket.client_kwargs()
    return {
        "AWS_ACCESS_KEY_ID": kw["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": kw["aws_secret_access_key"],
    }


@pytest.fixture(scope="module")
def ray_cluster(kl3m_corpus_bucket: Any) -> Iterator[None]:
    """A local 2-CPU Ray cluster whose workers get the test credentials from their
    environment (the driver passes explicit keys, which are never shipped)."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": worker_env(kl3m_corpus_bucket)},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def worker_credentials(kl3m_corpus_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """For read tasks run in this process: credentials through botocore's chain (env)."""
    for name, value in worker_env(kl3m_corpus_bucket).items():
        monkeypatch.setenv(name, value)


def run_in_process(source: KL3MDatasource, parallelism: int) -> list[list[dict[str, Any]]]:
    """Execute every read task here; the records of each."""
    out = []
    for task in source.get_read_tasks(parallelism):
        out.append([row for block in task() for row in block.to_pylist()])
    return out


def expected(bucket: Any, dataset: str, stage: str) -> dict[str, Any]:
    return {d.document_id: d for d in bucket.corpus.in_stage(stage, dataset)}


def dataset_records(ds: Any) -> list[dict[str, Any]]:
    """The rows of a Ray Dataset as Python values (through Arrow, like a Parquet read)."""
    rows = [r for t in ray.get(ds.to_arrow_refs()) for r in t.to_pylist()]
    return sorted(rows, key=lambda r: r["id"])


def export_records(report: ExportReport) -> list[dict[str, Any]]:
    rows = [r for p in report.parts for r in pq.read_table(p.path).to_pylist()]
    return sorted(rows, key=lambda r: r["id"])


# ------------------------------------------------------------ read tasks run here (no cluster)
def test_nothing_secret_is_pickled(kl3m_corpus_bucket: Any) -> None:
    from ray import cloudpickle

    config = ClientConfig(
        endpoint_url=kl3m_corpus_bucket.endpoint_url,
        aws_access_key_id="AKIAEXAMPLEKEY",
        aws_secret_access_key=SECRET,
        aws_session_token=SECRET + "-token",
    )
    assert SECRET.encode() not in pickle.dumps(config.without_secrets())
    source = KL3MDatasource(
        "cap", ids=["1000", "1001", "1002"], min_documents_per_task=1, config=config
    )
    assert SECRET.encode() not in pickle.dumps(source.config)
    assert SECRET.encode() not in cloudpickle.dumps(source)
    tasks = source.get_read_tasks(2)  # ids: planned without any request
    assert len(tasks) == 2
    assert SECRET.encode() not in cloudpickle.dumps(tasks)


@pytest.mark.parametrize(
    ("dataset", "stage", "planning"),
    [
        ("usc", "representations", "index"),
        ("usc", "parquet", "listing"),
        # the index lists representation keys only: documents without one still fall in
        # the open-ended first/last ranges
        ("fdlp", "documents", "index"),
        ("dotgov", "documents", "auto"),  # no index: listing
    ],
)
def test_read_shards_partition_the_dataset(
    kl3m_corpus_bucket: Any, worker_credentials: None, dataset: str, stage: str, planning: str
) -> None:
    source = KL3MDatasource(
        dataset,
        stage=stage,
        planning=planning,  # type: ignore[arg-type]
        min_documents_per_task=1,
        **kl3m_corpus_bucket.client_kwargs(),
    )
    shards = run_in_process(source, 4)
    assert len(shards) >= 3
    ids = [r["id"] for shard in shards for r in shard]
    truth = expected(kl3m_corpus_bucket, dataset, stage)
    assert sorted(ids) == sorted(truth)  # disjoint (no id twice) and complete
    for shard in shards:
        assert [r["id"] for r in shard] == sorted(
            (r["id"] for r in shard), key=lambda i: truth[i].key(stage)
        )  # listing order inside a task
    for row in (r for shard in shards for r in shard):
        doc = truth[row["id"]]
        if stage == "documents":
            assert row["mime_type"] == doc.mime_type and row["blake2b"] == doc.blake2b
        else:
            assert row["tokens"] == doc.tokens


def test_explicit_ids_and_bad_objects(kl3m_corpus_bucket: Any, worker_credentials: None) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    truth = expected(kl3m_corpus_bucket, "cap", "parquet")
    ids = [*sorted(truth)[:5], "no-such-document"]
    source = KL3MDatasource(
        "cap", stage="parquet", ids=ids, on_error="skip", min_documents_per_task=1, **kw
    )
    shards = run_in_process(source, 3)
    assert [len(s) for s in shards] == [2, 2, 1]  # contiguous chunks; the missing id skipped
    assert [r["id"] for s in shards for r in s] == ids[:5]
    with pytest.raises(NotFoundError, match="no-such-document"):  # default: on_error="raise"
        run_in_process(KL3MDatasource("cap", stage="parquet", ids=ids[-2:], **kw), 1)
    bad = ["corrupt-parquet", "bad-zlib"]
    skipping = KL3MDatasource("dirty", stage="parquet", ids=bad, on_error="skip", **kw)
    assert run_in_process(skipping, 1) == [[]]
    with pytest.raises(CorruptObjectError, match="corrupt-parquet"):
        run_in_process(KL3MDatasource("dirty", stage="parquet", ids=bad, **kw), 1)
    with pytest.raises(InvalidInputError, match="no tokens"):
        KL3MDatasource("cap", stage="documents", content="tokens", **kw)


# ------------------------------------------------------------------------------ local Ray
def test_ray_dataset_holds_each_document_once(kl3m_corpus_bucket: Any, ray_cluster: None) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    truth = expected(kl3m_corpus_bucket, "usc", "representations")
    ds = read_kl3m("usc", parallelism=3, **kw)
    rows = dataset_records(ds)
    assert [r["id"] for r in rows] == sorted(truth)  # each document once
    for row in rows:
        doc = truth[row["id"]]
        assert row["tokens"] == doc.tokens
        assert (row["dataset"], row["mime_type"]) == ("usc", doc.representation_mime)

    truth_docs = expected(kl3m_corpus_bucket, "fdlp", "documents")
    rows = dataset_records(read_kl3m("fdlp", stage="documents", parallelism=2, **kw))
    assert [r["id"] for r in rows] == sorted(truth_docs)
    assert all(json.loads(r["metadata"]) for r in rows)


def test_distributed_export_equals_single_process_export(
    kl3m_corpus_bucket: Any, ray_cluster: None, worker_credentials: None, tmp_path: Path
) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    options: dict[str, Any] = {
        "stage": "representations",
        "format": "parquet",
        "records_per_part": 10,
    }
    with KL3MClient(**kw) as client:
        single = client.export("usc", tmp_path / "single", **options)

    # an interrupted distributed run: the destination prepared, only shard 1 of 3 done
    config = ClientConfig.from_kwargs(**kw).without_secrets()
    fingerprint = distributed_fingerprint(config, "usc", 3, **options)
    assert prepare_destination(tmp_path / "dist", fingerprint) is False
    done = export_shard(
        config, "usc", tmp_path / "dist", 1, 3, options, client_factory=AsyncKL3MClient
    )
    assert done["exported"] > 0

    seen: list[ExportProgress] = []
    dist = export_distributed(
        "usc", tmp_path / "dist", shards=3, progress=seen.append, **options, **kw
    )
    assert dist.resumed
    assert seen[-1].done and seen[-1].exported == dist.exported

    assert export_records(dist) == export_records(single)  # record for record
    assert (dist.exported, dist.errors, dist.partial) == (single.exported, 0, False)
    assert sum(p.records for p in dist.parts) == single.exported
    assert dist.parts and all("/shard-0000" in p.path for p in dist.parts)
    assert pq.read_schema(dist.parts[0].path) == pq.read_schema(single.parts[0].path)

    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["options"]["shards"] == 3
    assert sorted(manifest["shards"]) == [f"shard-0000{i}-of-00003" for i in range(3)]
    assert (tmp_path / "dist" / "errors.jsonl").read_bytes() == b""

    # the Ray Dataset of the same dataset: the same records, with the Parquet parts' schema
    ds = read_kl3m("usc", parallelism=2, **kw)
    assert dataset_records(ds) == export_records(single)
    assert ds.schema().base_schema == pq.read_schema(single.parts[0].path).remove_metadata()

    # rerun: nothing left to do, same files; other options are refused
    again = export_distributed("usc", tmp_path / "dist", shards=3, **options, **kw)
    assert [p.sha256 for p in again.parts] == [p.sha256 for p in dist.parts]
    with pytest.raises(InvalidInputError, match="different options"):
        export_distributed("usc", tmp_path / "dist", shards=2, **options, **kw)
    with pytest.raises(InvalidInputError, match="deduplicate"):
        export_distributed("usc", tmp_path / "d2", shards=2, deduplicate=True, **kw)


def test_cli_export_on_ray_equals_plain_export(kl3m_corpus_bucket: Any, tmp_path: Path) -> None:
    """``kl3m-client export ... --ray --shards 2`` (its own local cluster) vs a plain export."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **worker_env(kl3m_corpus_bucket))
    base = [
        sys.executable,
        "-m",
        "kl3m_data_client.cli",
        "--endpoint-url",
        kl3m_corpus_bucket.endpoint_url,
        "--bucket",
        kl3m_corpus_bucket.bucket,
        "export",
        "usc",
    ]
    flags = ["--stage", "representations", "--json"]
    runs = {}
    for name, extra in (("ray", ["--ray", "--shards", "2"]), ("plain", [])):
        proc = subprocess.run(
            [*base, str(tmp_path / name), *flags, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = json.loads(proc.stdout)
    assert runs["ray"]["exported"] == runs["plain"]["exported"] > 0

    def records(root: Path) -> list[str]:
        return sorted(
            line for p in root.rglob("*.jsonl") for line in p.read_text().splitlines() if line
        )

    assert records(tmp_path / "ray") == records(tmp_path / "plain")
    bad = subprocess.run(
        [*base, str(tmp_path / "bad"), "--shards", "2"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--ray" in bad.stderr
