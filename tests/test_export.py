"""Bulk export against the local bucket (moto over real HTTP): content, filters, shards."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import (
    AsyncKL3MClient,
    CorruptObjectError,
    InvalidInputError,
    KL3MClient,
    Stage,
)
from kl3m_data_client._formats import Limits
from kl3m_data_client.export import ExportProgress, ExportReport, shard_hash
from kl3m_data_client.models.document import DocumentContent, ParquetContent

pytestmark = pytest.mark.anyio

SMALL_LIMITS = Limits(max_inflated_bytes=64 << 20)  # the dirty dataset holds a 1.1 GB bomb
DATASET = "cap"


@pytest.fixture
async def client(kl3m_corpus_bucket: Any) -> Any:
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs(), limits=SMALL_LIMITS) as c:
        yield c


def read_records(report: ExportReport) -> list[dict[str, Any]]:
    """Every record of an export, in part order, decoded independently of the exporter."""
    out: list[dict[str, Any]] = []
    for part in report.parts:
        path = Path(part.path)
        data = path.read_bytes()
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            out.extend(pq.read_table(io.BytesIO(data)).to_pylist())
            continue
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        elif path.name.endswith(".zst"):
            import zstandard

            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
        out.extend(json.loads(line) for line in data.decode("utf-8").splitlines())
    return out


async def expected_record(
    client: AsyncKL3MClient, dataset: str, doc_id: str, stage: Stage, content: str
) -> dict[str, Any]:
    """The record a per-document read gives."""
    doc = await client.get_document(dataset, doc_id, stage)
    assert doc is not None
    c = doc.content
    if stage is Stage.DOCUMENTS:
        assert isinstance(c, DocumentContent)
        binary = isinstance(c.content, bytes)
        text = base64.b64encode(c.raw).decode() if binary else c.content
        return {
            "id": doc_id,
            "identifier": c.metadata.identifier,
            "dataset": dataset,
            "mime_type": c.mime_type,
            "text": text,
            "encoding": "base64" if binary else "utf-8",
            "blake2b": c.blake2b,
            "metadata": c.metadata.fields,
        }
    if stage is Stage.REPRESENTATIONS:
        rep = c.get_representation()  # type: ignore[union-attr]
        assert rep is not None
        single = rep.get_representation()
        assert single is not None
        body: dict[str, Any] = (
            {"tokens": single.get_tokens()} if content == "tokens" else {"text": single.content}
        )
        return {
            "id": doc_id,
            "identifier": rep.document_id,
            "dataset": dataset,
            "mime_type": single.mime_type,
            **body,
        }
    assert isinstance(c, ParquetContent)
    reps = c.get_representations()
    mime = "text/markdown" if "text/markdown" in reps else next(iter(reps))
    return {
        "id": doc_id,
        "identifier": c.get_document()["identifier"],
        "dataset": dataset,
        "mime_type": mime,
        "tokens": reps[mime],
    }


def check_parts(report: ExportReport) -> None:
    """Part names, sizes and sha256 match the report."""
    assert Path(report.parts[0].path).name.startswith("part-00000")
    assert report.bytes_out == sum(Path(p.path).stat().st_size for p in report.parts)
    for p in report.parts:
        assert hashlib.sha256(Path(p.path).read_bytes()).hexdigest() == p.sha256


CASES = [
    (Stage.DOCUMENTS, "jsonl", "none", "text"),
    (Stage.DOCUMENTS, "parquet", "zstd", "text"),
    (Stage.REPRESENTATIONS, "jsonl", "gzip", "tokens"),
    (Stage.REPRESENTATIONS, "jsonl", "zstd", "text"),
    (Stage.REPRESENTATIONS, "parquet", "snappy", "tokens"),
    (Stage.REPRESENTATIONS, "parquet", "zstd", "text"),
    (Stage.PARQUET, "jsonl", "none", "tokens"),
    (Stage.PARQUET, "parquet", "zstd", "tokens"),
]


@pytest.mark.parametrize(("stage", "fmt", "compression", "content"), CASES)
async def test_export_equals_per_document_reads(
    client: AsyncKL3MClient,
    kl3m_corpus_bucket: Any,
    tmp_path: Path,
    stage: Stage,
    fmt: str,
    compression: str,
    content: str,
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    docs = corpus.in_stage(stage.value, DATASET)
    assert len(docs) > 10
    report = await client.export(
        DATASET,
        tmp_path / "out",
        stage=stage,
        format=fmt,
        compression=compression,
        content=content,
        records_per_part=7,
    )
    records = read_records(report)
    assert [r["id"] for r in records] == sorted(d.document_id for d in docs)  # listing order
    for record in records:
        want = await expected_record(client, DATASET, record["id"], stage, content)
        if fmt == "parquet" and stage is Stage.DOCUMENTS:
            record["metadata"] = json.loads(record["metadata"])
        assert record == want
    # and against the generator's ground truth
    truth = {d.document_id: d for d in docs}
    for record in records:
        doc = truth[record["id"]]
        if stage is Stage.DOCUMENTS:
            raw = (
                base64.b64decode(record["text"])
                if record["encoding"] == "base64"
                else record["text"].encode()
            )
            assert raw == doc.raw
        elif content == "tokens":
            assert record["tokens"] == doc.tokens
        else:
            assert record["text"] == doc.text
    assert report.exported == len(docs)
    assert report.errors == 0 and not report.partial and not report.resumed
    assert sum(p.records for p in report.parts) == len(docs)
    check_parts(report)
    json.dumps(report.as_dict())


async def test_parquet_loads_with_pyarrow_dataset_and_duckdb(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads

    report = await client.export(
        DATASET, tmp_path / "pq", stage="representations", format="parquet", records_per_part=5
    )
    docs = kl3m_corpus_bucket.corpus.in_stage("representations", DATASET)
    table = pads.dataset(str(tmp_path / "pq" / "data"), format="parquet").to_table()
    assert table.num_rows == len(docs)
    assert table.schema.field("tokens").type == pa.list_(pa.uint32())
    assert set(table.column_names) == {"id", "identifier", "dataset", "mime_type", "tokens"}
    con = duckdb.connect()
    glob = str(tmp_path / "pq" / "data" / "*.parquet")
    n, total = con.execute(
        f"SELECT count(*), sum(len(tokens)) FROM read_parquet('{glob}')"
    ).fetchone()
    assert n == len(docs) == report.exported
    assert total == sum(len(d.tokens) for d in docs)
    con.close()


async def test_shards_are_disjoint_and_cover_the_dataset(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    docs = kl3m_corpus_bucket.corpus.in_stage("parquet", DATASET)
    seen: list[str] = []
    for i in range(3):
        report = await client.export(
            DATASET, tmp_path / f"s{i}", stage="parquet", shard=(i, 3), records_per_part=1000
        )
        ids = [r["id"] for r in read_records(report)]
        assert all(shard_hash(x) % 3 == i for x in ids)
        seen += ids
    assert sorted(seen) == sorted(d.document_id for d in docs)
    assert len(seen) == len(set(seen))


async def test_filters_and_max_documents(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    docs = kl3m_corpus_bucket.corpus.in_stage("representations", DATASET)
    counts = sorted(len(d.tokens) for d in docs)
    lo, hi = counts[len(counts) // 4], counts[3 * len(counts) // 4]
    report = await client.export(
        DATASET, tmp_path / "f", stage="representations", min_tokens=lo, max_tokens=hi
    )
    want = sorted(d.document_id for d in docs if lo <= len(d.tokens) <= hi)
    assert [r["id"] for r in read_records(report)] == want
    assert report.skipped == len(docs) - len(want)

    mimes = {d.representation_mime for d in docs}
    mime = sorted(mimes)[0]
    report = await client.export(
        DATASET, tmp_path / "m", stage="representations", mime_types=[mime]
    )
    assert {r["mime_type"] for r in read_records(report)} == {mime}

    report = await client.export(DATASET, tmp_path / "n", stage="parquet", max_documents=4)
    assert [r["id"] for r in read_records(report)] == sorted(d.document_id for d in docs)[:4]

    records = [
        r async for r in client.iter_jsonl_export(DATASET, "representations", max_documents=3)
    ]
    assert [r["id"] for r in records] == sorted(d.document_id for d in docs)[:3]
    assert set(records[0]) == {"id", "identifier", "dataset", "mime_type", "tokens"}


async def test_explicit_ids_from_list_and_file(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    docs = kl3m_corpus_bucket.corpus.in_stage("parquet", DATASET)
    wanted = [d.document_id for d in docs[::3]][::-1]  # given order is kept
    report = await client.export(DATASET, tmp_path / "l", stage="parquet", ids=wanted)
    assert [r["id"] for r in read_records(report)] == wanted
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join([*wanted, "no-such-document"]) + "\n")
    report = await client.export(DATASET, tmp_path / "f", stage="parquet", ids=ids_file)
    assert [r["id"] for r in read_records(report)] == wanted
    assert report.errors == 1 and report.partial
    errors = (tmp_path / "f" / "errors.jsonl").read_text().splitlines()
    assert json.loads(errors[0])["key"] == f"parquet/{DATASET}/no-such-document"


async def test_deduplicate(kl3m_bucket: Any, tmp_path: Path) -> None:
    corpus = kl3m_bucket.corpus
    docs = corpus.in_stage("representations", "usc")
    # copy two documents under new ids: same tokens, different ids
    extra = {
        f"representations/usc/zz-copy-{i}.json": corpus.objects[d.representation_key]
        for i, d in enumerate(docs[:2])
    }
    kl3m_bucket.put_objects(extra)
    async with AsyncKL3MClient(**kl3m_bucket.client_kwargs()) as client:
        report = await client.export(
            "usc", tmp_path / "d", stage="representations", deduplicate=True, records_per_part=2
        )
        ids = [r["id"] for r in read_records(report)]
        assert ids == sorted(d.document_id for d in docs)
        assert report.duplicates == 2
        plain = await client.export("usc", tmp_path / "p", stage="representations")
        assert plain.exported == len(docs) + 2


async def test_corrupt_objects_go_to_errors_jsonl(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    corrupt = kl3m_corpus_bucket.corpus.corrupt
    for stage in ("documents", "representations", "parquet"):
        dest = tmp_path / stage
        report = await client.export("dirty", dest, stage=stage, format="jsonl")
        lines = [json.loads(x) for x in (dest / "errors.jsonl").read_text().splitlines()]
        bad = sorted(k for k in corrupt if k.startswith(f"{stage}/"))
        assert sorted(e["key"] for e in lines) == bad
        assert all(e["stage"] == stage and e["reason"] for e in lines)
        # the dirty dataset holds only corrupt objects: each one is an error, none is lost
        # to "skipped" and none is exported
        keys = [k for k in kl3m_corpus_bucket.corpus.objects if k.startswith(f"{stage}/dirty/")]
        assert set(keys) == set(bad)
        assert (report.exported, report.errors, report.skipped) == (0, len(bad), 0)
        assert report.partial


async def test_errors_do_not_stop_the_good_documents(kl3m_bucket: Any, tmp_path: Path) -> None:
    docs = kl3m_bucket.corpus.in_stage("representations", "usc")
    kl3m_bucket.put_objects(
        {
            "representations/usc/a-bad.json": b"{not json",
            "representations/usc/title-99/bad.json": b'{"documents": 3}',
        }
    )
    async with AsyncKL3MClient(**kl3m_bucket.client_kwargs()) as client:
        report = await client.export("usc", tmp_path / "o", stage="representations")
    assert [r["id"] for r in read_records(report)] == sorted(d.document_id for d in docs)
    assert report.errors == 2 and report.partial


async def test_options_mismatch_is_refused(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "o"
    first = await client.export(DATASET, dest, stage="parquet", records_per_part=5)
    with pytest.raises(InvalidInputError) as info:
        await client.export(DATASET, dest, stage="representations", records_per_part=6)
    assert "stage" in str(info.value) and "records_per_part" in str(info.value)
    with pytest.raises(InvalidInputError, match="overwrite"):
        await client.export(DATASET, dest, stage="parquet", records_per_part=5, resume=False)
    again = await client.export(DATASET, dest, stage="parquet", records_per_part=5)
    assert again.resumed and again.exported == first.exported and again.parts == first.parts
    replaced = await client.export(
        DATASET, dest, stage="representations", format="parquet", overwrite=True
    )
    assert not replaced.resumed and replaced.exported == first.exported
    assert all(p.path.endswith(".parquet") for p in replaced.parts)
    assert not list((dest / "data").glob("*.jsonl"))


@pytest.mark.parametrize(
    "options",
    [
        {"format": "csv"},
        {"compression": "lz4"},
        {"stage": "documents", "content": "tokens"},
        {"stage": "parquet", "content": "text"},
        {"shard": (3, 3)},
        {"records_per_part": 0},
        {"workers": 2, "deduplicate": True},
        {"min_tokens": 5, "max_tokens": 1},
    ],
)
async def test_bad_options(client: AsyncKL3MClient, tmp_path: Path, options: Any) -> None:
    options.setdefault("stage", "representations")
    with pytest.raises(InvalidInputError):
        await client.export(DATASET, tmp_path / "x", **options)


async def test_progress_callback(client: AsyncKL3MClient, tmp_path: Path) -> None:
    seen: list[ExportProgress] = []
    report = await client.export(
        DATASET, tmp_path / "p", stage="representations", progress=seen.append
    )
    assert seen and seen[-1].done
    assert seen[-1].exported == report.exported
    assert seen[-1].total is not None  # cap has an index
    assert all(a.exported <= b.exported for a, b in itertools.pairwise(seen))


def test_sync_client_and_workers(kl3m_corpus_bucket: Any, tmp_path: Path) -> None:
    kwargs = kl3m_corpus_bucket.client_kwargs()
    with KL3MClient(**kwargs) as client:
        one = client.export(DATASET, tmp_path / "one", stage="parquet", records_per_part=4)
        two = client.export(
            DATASET, tmp_path / "two", stage="parquet", records_per_part=4, workers=2
        )
        records = list(client.iter_jsonl_export(DATASET, "parquet"))
    a, b = read_records(one), read_records(two)
    assert sorted(json.dumps(r, sort_keys=True) for r in a) == sorted(
        json.dumps(r, sort_keys=True) for r in b
    )
    assert records == a
    assert two.exported == one.exported and not two.partial
    assert {Path(p.path).name.split("-")[1] for p in two.parts} <= {"w0", "w1"}
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["complete"] and set(manifest["streams"]) == {"w0", "w1"}


async def test_iter_jsonl_export_raises_on_bad_objects_unless_skipping(
    kl3m_corpus_bucket: Any,
) -> None:
    corrupt = kl3m_corpus_bucket.corpus.corrupt
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        with pytest.raises(CorruptObjectError) as err:
            async for _ in client.iter_jsonl_export("dirty", "documents"):
                pass
        assert err.value.key in corrupt
        kept = [r async for r in client.iter_jsonl_export("dirty", "documents", on_error="skip")]
    assert all(f"documents/dirty/{r['id']}.json" not in corrupt for r in kept)


def test_jsonl_lines_are_the_same_bytes_with_or_without_orjson() -> None:
    """The optional orjson path (installed by the dev extra) and the stdlib path write the
    same bytes: a line does not depend on which path wrote it.

    The two paths are compared with each other (orjson itself against
    :func:`encode_line_stdlib`), both against ``json.dumps`` compact UTF-8 text, and every line
    decodes back to its record. Records orjson may encode (``_plain``) must take the fast
    path; any other record (floats, big ints) falls back to the stdlib path.
    """
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kl3m_data_client.export import _json

    orjson = _json._orjson
    assert orjson is not None, "orjson (extra 'fast') must be installed for this test"

    def reference(record: dict[str, Any]) -> bytes:
        """json.dumps, compact, UTF-8; lone surrogates escaped."""
        try:
            return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        except UnicodeEncodeError:
            return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")

    def orjson_line(record: dict[str, Any]) -> bytes:
        line: bytes = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        return line

    # what the fast path takes: exact str / int64-or-uint64 / bool / None / list / dict
    plain_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.text(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=20,
    )

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(st.text(), plain_values, max_size=6))
    def check_orjson(record: dict[str, Any]) -> None:
        assert _json._plain(record)  # takes the fast path
        fast = orjson_line(record)
        assert fast == _json.encode_line_stdlib(record)  # the two paths agree
        assert fast == reference(record)
        assert _json.encode_line(record) == fast
        assert json.loads(fast) == record

    check_orjson()

    any_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.text()
        | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=20,
    )

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(st.text(), any_values, max_size=6))
    def check_any(record: dict[str, Any]) -> None:
        line = _json.encode_line(record)
        assert line == reference(record)
        if _json._plain(record):
            assert line == orjson_line(record)
        line.decode("utf-8")  # always valid UTF-8, lone surrogates included
        assert json.loads(line) == record

    check_any()
    every_char = {"text": "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000)}
    assert _json._plain(every_char)
    assert orjson_line(every_char) == _json.encode_line_stdlib(every_char)
    assert _json.encode_line(every_char) == reference(every_char)
    surrogate = b'{"t":"\\ud800"}\n'
    assert _json.encode_line({"t": "\ud800"}) == surrogate  # orjson refuses, stdlib escapes
    assert _json.encode_line_stdlib({"t": "\ud800"}) == surrogate


def _flock_held_on(path: Path) -> bool:
    """True when /proc/locks lists an exclusive flock on ``path``'s inode (read-only probe)."""
    st = path.stat()
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: FLOCK ADVISORY WRITE pid maj:min:inode 0 EOF"; a waiter's line has "->" first
        if (fields[1], fields[3], fields[5]) == ("FLOCK", "WRITE", device):
            return True
    return False


def _open_fds_to(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    target = str(path.resolve())
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd) == target
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/locks")
def test_export_waits_for_workers_of_a_killed_run(kl3m_corpus_bucket: Any, tmp_path: Path) -> None:
    """A worker of an earlier run (its parent killed) still holds the workers lock: a new run
    does not touch the destination until it is released."""
    import fcntl
    import threading

    dest = tmp_path / "out"
    dest.mkdir()
    export_lock = dest / ".export.lock"
    export_lock.touch()
    workers_lock = dest / ".workers.lock"
    fd = os.open(workers_lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what a running worker holds
    result: list[Any] = []
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        run = threading.Thread(target=lambda: result.append(client.export(DATASET, dest)))
        run.start()
        try:
            # the event: the run holds the destination lock and has the workers lock open,
            # i.e. it is waiting for the earlier run's workers (polled, never a fixed sleep)
            waiting = threading.Event()
            while run.is_alive() and not (
                _flock_held_on(export_lock) and _open_fds_to(workers_lock) == 2
            ):
                waiting.wait(0.005)
            assert run.is_alive(), result
            assert not (dest / "manifest.json").exists()
            assert sorted(p.name for p in dest.iterdir()) == [".export.lock", ".workers.lock"]
        finally:
            os.close(fd)
        run.join(60)
    assert len(result) == 1 and not result[0].partial
    assert result[0].exported == len(kl3m_corpus_bucket.corpus.dataset_documents(DATASET))


@pytest.mark.parametrize("gzipped", [False, True])
async def test_progress_total_leaves_an_index_too_big_to_hold_unread(
    kl3m_server: Any, tmp_path: Path, gzipped: bool
) -> None:
    """The progress total comes from the dataset index only up to PROGRESS_INDEX_MAX_BYTES
    (stored, and inflated for a gzip index): a bigger one gives no total, not a parse of a
    huge key list; the export itself is not affected. (The export cancels a total still
    being read when it ends, so the capped read is also checked on its own.)"""
    from kl3m_data_client._keys import index_key
    from kl3m_data_client.export._exporter import PROGRESS_INDEX_MAX_BYTES
    from kl3m_data_client.testing import encode_index_object

    b = kl3m_server.create_bucket(n_documents=12, seed=21)
    try:
        dataset = sorted({d.dataset_id for d in b.corpus.documents})[0]
        prefix = f"documents/{dataset}/"
        keys = sorted(k for k in b.corpus.objects if k.startswith(prefix))
        filler = [f"{prefix}made-up/{i:09d}.json" for i in range(PROGRESS_INDEX_MAX_BYTES // 40)]
        totals: list[int | None] = []
        for listed in (keys + filler, keys):
            index = encode_index_object(dataset, listed, gzipped=gzipped)
            await b.put_objects_async({index_key(dataset): index})
            seen: list[ExportProgress] = []
            async with AsyncKL3MClient(**b.client_kwargs()) as client:
                report = await client.export(
                    dataset,
                    tmp_path / f"out-{len(listed)}",
                    stage="documents",
                    progress=seen.append,
                )
                capped = await client._dataset_index(dataset, max_bytes=PROGRESS_INDEX_MAX_BYTES)
                whole = await client.get_dataset_index(dataset)
            assert report.exported + report.skipped + report.errors == len(keys)
            totals.append(seen[-1].total)
            assert whole is not None and whole.metadata.count == len(listed)
            assert (capped is None) == (listed is not keys)
            assert capped is None or capped.metadata.count == len(keys)
        assert totals == [None, len(keys)]
    finally:
        b.close()
