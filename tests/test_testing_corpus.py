"""The generated corpus is deterministic and in exactly the formats of docs/format.md.

The decoders below are written from the format notes with plain stdlib + pyarrow (they do not
use the generator's encoders), and are also run over the independent sample objects in
``tests/data/sample-bucket`` (written by another writer) so that both agree on the format.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kl3m_data_client.testing import (
    BOMB_INFLATED_SIZE,
    CREATED_AT,
    STAGES,
    TOKENIZER_NAME,
    Corpus,
    corpus_tokenizer,
    generate_corpus,
    index_key,
    zlib_bomb,
)

SAMPLE = Path(__file__).parent / "data" / "sample-bucket"

DUBLIN_CORE = {
    "title",
    "description",
    "publisher",
    "creator",
    "subject",
    "contributor",
    "date",
    "type",
    "format",
    "identifier",
    "source",
    "language",
    "relation",
    "coverage",
    "rights",
    "license",
    "bibliographic_citation",
}
DOC_EXTRA_FIELDS = {"content", "blake2b", "size", "id", "dataset_id", "extra"}
PARSED_DOC_FIELDS = {
    "source",
    "identifier",
    "original_uri",
    "representations",
    "metadata",
    "success",
    "error",
}
PARQUET_SCHEMA = pa.schema(
    [
        pa.field("identifier", pa.string()),
        pa.field("representations", pa.map_(pa.string(), pa.list_(pa.uint32()))),
    ]
)


# ------------------------------------------------------------------ spec decoders


def decode_document(data: bytes) -> tuple[dict[str, Any], bytes]:
    """documents stage: indent=4 Dublin Core JSON; content = base64(zlib(raw))."""
    obj = json.loads(data)
    assert isinstance(obj, dict)
    assert set(obj) <= DUBLIN_CORE | DOC_EXTRA_FIELDS, set(obj) - DUBLIN_CORE - DOC_EXTRA_FIELDS
    for name, value in obj.items():
        assert value not in ("", [], {}, None), f"empty field {name!r} present"
    assert json.dumps(obj, indent=4).encode("utf-8") == data, "not written with indent=4"
    raw = zlib.decompress(base64.b64decode(obj["content"], validate=True))
    if "blake2b" in obj:
        assert hashlib.blake2b(raw).hexdigest() == obj["blake2b"]
        assert len(obj["blake2b"]) == 128
    return obj, raw


def decode_representation(data: bytes) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    """representations stage: first ParsedDocument; content base64(zlib) or plain."""
    obj = json.loads(data)
    parsed = obj["documents"][0]
    assert set(parsed) == PARSED_DOC_FIELDS
    out: dict[str, tuple[str, Any]] = {}
    for mime, rep in parsed["representations"].items():
        assert rep["mime_type"] == mime
        content = rep["content"]
        try:
            text = zlib.decompress(base64.b64decode(content, validate=True)).decode("utf-8")
        except (ValueError, zlib.error):  # binascii.Error, non-ASCII, non-UTF-8
            text = content  # plain, uncompressed writer variant
        out[mime] = (text, rep["tokens"])
    return parsed, out


def decode_parquet(data: bytes) -> tuple[str, dict[str, list[int]]]:
    """parquet stage: zlib(parquet) (or plain parquet); one row, fixed schema."""
    payload = data if data[:4] == b"PAR1" else zlib.decompress(data)
    table = pq.read_table(pa.BufferReader(payload))
    assert table.schema.equals(PARQUET_SCHEMA), table.schema
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    return row["identifier"], dict(row["representations"])


def decode_index(data: bytes) -> dict[str, Any]:
    """index: gzip JSON, or plain JSON under the same .json.gz key (sniff 1f 8b)."""
    body = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    obj: dict[str, Any] = json.loads(body)
    assert set(obj) == {"objects", "metadata"}
    assert set(obj["metadata"]) == {"dataset_id", "key_prefix", "count", "created_at"}
    assert obj["metadata"]["count"] == len(obj["objects"])
    return obj


def digest(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for key, value in corpus.objects.items():
        h.update(key.encode() + b"\0" + hashlib.sha256(value).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(200, seed=0, dirty=True)


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_objects_across_processes(corpus: Corpus) -> None:
    code = (
        "from kl3m_data_client.testing import generate_corpus\n"
        "import hashlib\n"
        "c = generate_corpus(200, seed=0, dirty=True)\n"
        "h = hashlib.sha256()\n"
        "for k, v in c.objects.items():\n"
        "    h.update(k.encode() + b'\\0' + hashlib.sha256(v).digest())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == digest(corpus)


def test_different_seed_gives_different_corpus(corpus: Corpus) -> None:
    other = generate_corpus(200, seed=1, dirty=True)
    assert digest(other) != digest(corpus)
    assert [d.document_id for d in other.documents] != [d.document_id for d in corpus.documents]


def test_no_clock_values(corpus: Corpus) -> None:
    for key, data in corpus.objects.items():
        if key.startswith("index/") and key not in corpus.corrupt:
            assert decode_index(data)["metadata"]["created_at"] == CREATED_AT
            if data[:2] == b"\x1f\x8b":
                assert data[4:8] == b"\0\0\0\0", "gzip mtime must be 0"


# ------------------------------------------------------------------ formats


def test_every_generated_document_decodes_per_spec(corpus: Corpus) -> None:
    assert corpus.documents
    for doc in corpus.documents:
        meta, raw = decode_document(corpus.objects[doc.document_key])
        assert raw == doc.raw
        assert meta["blake2b"] == doc.blake2b
        assert meta["format"] == doc.mime_type
        assert meta["id"] == doc.document_id
        assert meta["dataset_id"] == doc.dataset_id
        assert meta["title"] == doc.title
        expected_size = len(doc.text) if doc.dataset_id == "cap" else len(raw)
        assert meta["size"] == expected_size

        if "representations" in doc.stages:
            parsed, reps = decode_representation(corpus.objects[doc.representation_key])
            assert parsed["identifier"] == doc.identifier
            assert parsed["success"] is True and parsed["error"] is None
            assert list(reps) == [doc.representation_mime]
            text, tokens = reps[doc.representation_mime]
            assert text == doc.text
            assert tokens == {TOKENIZER_NAME: doc.tokens}
            is_plain = (
                json.loads(corpus.objects[doc.representation_key])["documents"][0][
                    "representations"
                ][doc.representation_mime]["content"]
                == doc.text
            )
            assert is_plain is not doc.representation_compressed
        else:
            assert doc.representation_key not in corpus.objects

        if "parquet" in doc.stages:
            data = corpus.objects[doc.parquet_key]
            assert (data[:4] == b"PAR1") is not doc.parquet_compressed
            identifier, reps_pq = decode_parquet(data)
            assert identifier == doc.identifier
            assert reps_pq == {doc.representation_mime: doc.tokens}
        else:
            assert doc.parquet_key not in corpus.objects


def test_tokens_are_real_tokenizer_output(corpus: Corpus) -> None:
    tokenizer = corpus_tokenizer()
    with_tokens = [d for d in corpus.documents if "representations" in d.stages]
    assert with_tokens
    for doc in with_tokens:
        assert doc.tokens == tokenizer.encode(doc.text).ids
        assert tokenizer.decode(doc.tokens) == doc.text
        assert all(0 <= t < 2**32 for t in doc.tokens)
    assert max(max(d.tokens) for d in with_tokens) > 1000  # merges, not bytes only


def test_index_objects_both_encodings_and_sub_prefix(corpus: Corpus) -> None:
    index_keys = [k for k in corpus.objects if k.startswith("index/") and k not in corpus.corrupt]
    gz = [k for k in index_keys if corpus.objects[k][:2] == b"\x1f\x8b"]
    plain = [k for k in index_keys if corpus.objects[k][:1] == b"{"]
    assert gz and plain and len(gz) + len(plain) == len(index_keys)
    assert set(index_keys) == set(corpus.indexes)
    sub = [k for k in index_keys if decode_index(corpus.objects[k])["metadata"]["key_prefix"]]
    assert len(sub) == 1
    for key in index_keys:
        obj = decode_index(corpus.objects[key])
        ds, prefix = obj["metadata"]["dataset_id"], obj["metadata"]["key_prefix"]
        assert key == index_key(ds, prefix)
        if prefix:
            assert "/" in prefix and key == f"index/{ds}-{prefix.replace('/', '-')}.json.gz"
        want = sorted(
            d.representation_key
            for d in corpus.in_stage("representations", ds)
            if prefix is None or d.document_id.startswith(prefix + "/")
        )
        assert obj["objects"] == want == corpus.indexes[key]
        assert all(k in corpus.objects for k in obj["objects"])


def test_objects_are_exactly_the_documents_indexes_and_corrupt(corpus: Corpus) -> None:
    expected = set(corpus.indexes) | set(corpus.corrupt)
    for doc in corpus.documents:
        expected |= {doc.key(stage) for stage in doc.stages}
    assert set(corpus.objects) == expected
    assert list(corpus.objects) == sorted(corpus.objects)


# ------------------------------------------------------------------ shape of the corpus


def test_datasets_stages_and_mime_types(corpus: Corpus) -> None:
    assert set(corpus.datasets) == {"usc", "cap", "fdlp", "ecfr", "dotgov", "dirty"}
    stages_of = {
        ds: {s for d in corpus.dataset_documents(ds) for s in d.stages} for ds in corpus.datasets
    }
    assert stages_of["dotgov"] == {"documents"}  # a dataset only in documents
    assert stages_of["usc"] == set(STAGES)
    fdlp = corpus.dataset_documents("fdlp")
    assert any("representations" not in d.stages for d in fdlp)
    assert any(d.stages == {"documents", "representations"} for d in fdlp)
    for doc in corpus.documents:
        assert "documents" in doc.stages
        assert "parquet" not in doc.stages or "representations" in doc.stages
    mimes = {d.mime_type for d in corpus.documents}
    assert {"text/html", "text/plain", "application/xhtml+xml", "application/pdf"} <= mimes
    assert {d.representation_mime for d in corpus.documents} == {"text/markdown", "text/plain"}
    pdfs = [d for d in corpus.documents if d.mime_type == "application/pdf"]
    for pdf in pdfs:
        assert pdf.raw.startswith(b"%PDF-")
        with pytest.raises(UnicodeDecodeError):
            pdf.raw.decode("utf-8")
    assert any(not d.representation_compressed for d in corpus.in_stage("representations"))
    assert any(not d.parquet_compressed for d in corpus.in_stage("parquet"))


def test_awkward_ids(corpus: Corpus) -> None:
    ids = [d.document_id for d in corpus.documents]
    for needle in (" ", "[", "]", "+", "%2F", "=", "§", "/"):
        assert any(needle in i for i in ids), needle
    assert any(not i.isascii() for i in ids)
    assert any(i.endswith(".json") for i in ids)  # key ends in .json.json
    assert any(i.count("/") >= 3 for i in ids)
    assert any(i.isdigit() for i in ids)  # cap
    assert len(set(zip([d.dataset_id for d in corpus.documents], ids, strict=True))) == len(ids)


def test_legal_looking_text(corpus: Corpus) -> None:
    text = "\n".join(d.text for d in corpus.documents)
    assert "42 U.S.C. § 1983" in text
    assert "C.F.R. §" in text
    assert "\n## " in text  # headings
    html_doc = next(d for d in corpus.documents if d.mime_type == "text/html")
    assert html_doc.raw.startswith(b"<!DOCTYPE html>") and b"<h1>" in html_doc.raw


def test_sizes_long_tail_and_total_budget() -> None:
    big = generate_corpus(1000, seed=0)
    sizes = sorted(len(d.raw) for d in big.documents)
    assert sizes[0] >= 900
    assert 2_000 <= sizes[len(sizes) // 2] <= 10_000
    assert 900_000 <= sizes[-1] <= 1_000_000
    assert sum(s > 100_000 for s in sizes) >= 3
    assert big.total_bytes < 40_000_000
    assert big.corrupt == {} and "dirty" not in big.datasets


# ------------------------------------------------------------------ dirty dataset


def test_dirty_objects_are_corrupt_as_declared(corpus: Corpus) -> None:
    assert corpus.corrupt
    assert all(k in corpus.objects for k in corpus.corrupt)
    assert all(corpus.objects[k] is not None for k in corpus.corrupt)
    assert not any(d.dataset_id == "dirty" for d in corpus.documents)
    for key, why in corpus.corrupt.items():
        data = corpus.objects[key]
        assert why
        if key.startswith("index/"):
            with pytest.raises((OSError, EOFError, zlib.error)):
                decode_index(data)
        elif "/../" in key:
            decode_document(data)  # well-formed; only the key is hostile
            assert ".." in key.split("/")
        elif key.startswith("documents/"):
            if "bomb" in key:
                continue  # checked below without inflating
            with pytest.raises(
                (ValueError, KeyError, TypeError, AssertionError, binascii.Error, zlib.error)
            ):
                decode_document(data)
        elif key.startswith("representations/"):
            with pytest.raises((ValueError, KeyError, IndexError, TypeError, AssertionError)):
                _, reps = decode_representation(data)
                for _text, tokens in reps.values():
                    for ids in tokens.values():
                        if not isinstance(ids, list):
                            raise TypeError("tokens")
        elif "bomb" not in key:
            with pytest.raises((OSError, zlib.error, pa.ArrowException, AssertionError)):
                decode_parquet(data)
    reasons = " ".join(corpus.corrupt.values())
    for word in ("JSON", "base64", "zlib", "parquet", "empty", "bomb", ".."):
        assert word in reasons, word
    assert corpus.objects["documents/dirty/empty.json"] == b""


def _inflated_size(data: bytes, limit: int) -> int:
    d = zlib.decompressobj()
    total = 0
    buf = data
    while buf and total <= limit:
        total += len(d.decompress(buf, 64 * 1024 * 1024))
        buf = d.unconsumed_tail
    assert d.eof or total > limit
    return total


def test_zlib_bomb_is_small_and_inflates_past_one_gigabyte(corpus: Corpus) -> None:
    bomb = corpus.objects["parquet/dirty/zlib-bomb"]
    assert bomb == zlib_bomb()
    assert len(bomb) < 2_000_000
    assert _inflated_size(bomb, BOMB_INFLATED_SIZE) == BOMB_INFLATED_SIZE > 2**30
    # the stream is complete and its adler32 trailer correct (eof reached without error)
    doc = json.loads(corpus.objects["documents/dirty/zlib-bomb.json"])
    assert base64.b64decode(doc["content"]) == bomb


def test_zlib_bomb_small_instance_roundtrips() -> None:
    small = zlib_bomb(8 * 2**20)
    assert zlib.decompress(small) == bytes(8 * 2**20)


def test_clean_corpus_has_no_dirty_dataset() -> None:
    clean = generate_corpus(30, seed=5)
    assert "dirty" not in clean.datasets and not clean.corrupt
    assert not any("/dirty/" in k for k in clean.objects)


def test_from_objects_wraps_arbitrary_objects() -> None:
    c = Corpus.from_objects({"documents/x/b.json": b"2", "parquet/y/a": b"1", "other": b""})
    assert list(c.objects) == ["documents/x/b.json", "other", "parquet/y/a"]
    assert c.datasets == ("x", "y") and c.documents == []


# ------------------------------------------------------------------ sample bucket


def _sample_objects() -> dict[str, bytes]:
    return {
        p.relative_to(SAMPLE).as_posix(): p.read_bytes()
        for p in sorted(SAMPLE.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def test_sample_bucket_decodes_with_the_same_checks() -> None:
    objects = _sample_objects()
    assert len(objects) >= 20
    docs = {k: v for k, v in objects.items() if k.startswith("documents/")}
    for key, data in docs.items():
        meta, raw = decode_document(data)
        ds, doc_id = key[len("documents/") :].split("/", 1)
        doc_id = doc_id.removesuffix(".json")
        assert meta["id"] == doc_id and meta["dataset_id"] == ds
        if meta["format"] == "application/pdf":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        rep_key = f"representations/{ds}/{doc_id}.json"
        pq_key = f"parquet/{ds}/{doc_id}"
        parsed, reps = decode_representation(objects[rep_key])
        identifier, pq_reps = decode_parquet(objects[pq_key])
        assert identifier == parsed["identifier"]
        # the sample's representations carry kl3m-003 ids while its parquet rows hold ids of
        # another tokenizer (the pipeline re-tokenizes), so only the shape is compared here
        assert set(pq_reps) == set(reps)
        assert all(pq_reps.values())
    indexes = [k for k in objects if k.startswith("index/")]
    encodings = {objects[k][:2] == b"\x1f\x8b" for k in indexes}
    assert encodings == {True, False}
    for key in indexes:
        obj = decode_index(objects[key])
        assert key == index_key(obj["metadata"]["dataset_id"], obj["metadata"]["key_prefix"])
        assert all(k.startswith("representations/") for k in obj["objects"])


def test_generated_objects_have_the_sample_writer_layout(corpus: Corpus) -> None:
    """Field order and JSON layout match the second writer's objects."""
    sample = _sample_objects()

    def doc_tail(data: bytes) -> list[str]:
        keys = list(json.loads(data))
        return [k for k in keys if k in DOC_EXTRA_FIELDS]

    sample_tails = {tuple(doc_tail(v)) for k, v in sample.items() if k.startswith("documents/")}
    ours = {tuple(doc_tail(corpus.objects[d.document_key])) for d in corpus.documents}
    assert ours == sample_tails
    assert sample_tails == {
        ("content", "blake2b", "id", "size", "dataset_id"),
        ("content", "blake2b", "id", "size", "extra", "dataset_id"),
    }
    sample_rep = next(v for k, v in sample.items() if k.startswith("representations/"))
    our_rep = corpus.objects[corpus.in_stage("representations")[0].representation_key]
    assert list(json.loads(sample_rep)["documents"][0]) == list(json.loads(our_rep)["documents"][0])
    # compact separators as json.dumps() writes them, like the sample
    assert our_rep.startswith(b'{"documents": [{"source": ')
    assert sample_rep.startswith(b'{"documents": [{"source": ')


def test_parquet_objects_read_with_the_spec_schema(corpus: Corpus) -> None:
    doc = corpus.in_stage("parquet")[0]
    payload = corpus.objects[doc.parquet_key]
    payload = payload if payload[:4] == b"PAR1" else zlib.decompress(payload)
    table = pq.read_table(io.BytesIO(payload), schema=PARQUET_SCHEMA)
    assert table.column("identifier").to_pylist() == [doc.identifier]


def test_package_imports_without_the_local_extra() -> None:
    """moto and tokenizers are imported lazily: blocking them must not break the import."""
    code = (
        "import sys\n"
        "sys.modules['moto'] = None\n"
        "sys.modules['tokenizers'] = None\n"
        "import kl3m_data_client.testing as t\n"
        "assert t.LocalBucket and t.Corpus.from_objects({'documents/a/b.json': b''})\n"
        "try:\n"
        "    t.corpus_tokenizer()\n"
        "except ImportError as e:\n"
        "    assert 'local' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('tokenizer without tokenizers?')\n"
        "assert 'moto' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
