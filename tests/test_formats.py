"""Pure decoders against the sample objects of a second writer, and key validation."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path

import pytest

from kl3m_data_client import CorruptObjectError, InvalidInputError, SizeLimitExceededError, Stage
from kl3m_data_client._formats import (
    Limits,
    decode_document,
    decode_index,
    decode_parquet,
    decode_representation,
    inflate,
    parquet_tokens,
)
from kl3m_data_client._keys import (
    document_id_from_key,
    index_key,
    normalize_key_prefix,
    object_key,
    stage_prefix,
    validate_document_id,
)

SAMPLE = Path(__file__).parent / "data" / "sample-bucket"


def _objects(stage: str) -> list[Path]:
    return sorted(p for p in (SAMPLE / stage).rglob("*") if p.is_file())


def test_sample_bucket_is_present() -> None:
    assert len(_objects("documents")) >= 8
    formats = {json.loads(p.read_bytes()).get("format") for p in _objects("documents")}
    assert "application/pdf" in formats and formats - {"application/pdf"}, formats
    signed = [bool(json.loads(p.read_bytes()).get("blake2b")) for p in _objects("documents")]
    assert set(signed) == {True}, "verify() is checked on signed samples"


@pytest.mark.parametrize("path", _objects("documents"), ids=lambda p: p.name)
def test_sample_documents_decode_and_verify(path: Path) -> None:
    key = str(path.relative_to(SAMPLE))
    data = path.read_bytes()
    obj = json.loads(data)
    content = decode_document(key, data)
    raw = zlib.decompress(base64.b64decode(obj["content"]))
    assert content.raw == raw
    assert content.verify() is (True if obj.get("blake2b") else None)
    assert content.metadata.identifier == obj.get("identifier", "")
    # a PDF stays bytes, every other sample is text (both kinds are present: see below)
    assert content.is_binary is (obj.get("format") == "application/pdf")
    assert content.content == (raw if content.is_binary else raw.decode("utf-8"))
    assert "content" not in content.metadata.fields and content.metadata.fields.get(
        "title"
    ) == obj.get("title")


@pytest.mark.parametrize("path", _objects("representations"), ids=lambda p: p.name)
def test_sample_representations_match_parquet(path: Path) -> None:
    key = str(path.relative_to(SAMPLE))
    rep = decode_representation(key, path.read_bytes()).get_representation(0)
    assert rep is not None and rep.representations
    doc_id = document_id_from_key(key)
    dataset = key.split("/")[1]
    parquet_path = SAMPLE / "parquet" / dataset / doc_id
    pq_key = f"parquet/{dataset}/{doc_id}"
    identifier, tokens = parquet_tokens(pq_key, parquet_path.read_bytes())
    # both name the documents-stage object of the same document
    assert identifier == rep.document_id == f"s3://data.kl3m.ai/documents/{dataset}/{doc_id}.json"
    # the sample writer's parquet rows are tokenized separately: same MIME types, own ids
    assert set(tokens) == set(rep.representations)
    for mime, single in rep.representations.items():
        assert isinstance(single.content, str) and single.content
        assert single.get_tokens()
        assert tokens[mime] and all(type(t) is int and 0 <= t < 2**32 for t in tokens[mime])
    content = decode_parquet(pq_key, doc_id, parquet_path.read_bytes())
    assert content.get_representations() == tokens


def test_sample_indexes_both_encodings() -> None:
    usc = (SAMPLE / "index" / "usc.json.gz").read_bytes()
    fdlp = (SAMPLE / "index" / "fdlp.json.gz").read_bytes()
    assert usc[:2] == b"\x1f\x8b" and fdlp[:1] == b"{"
    for name, data in (("usc", usc), ("fdlp", fdlp)):
        index = decode_index(f"index/{name}.json.gz", data, name)
        assert index.metadata.dataset_id == name
        assert len(index.objects) == index.metadata.count > 0
        ids = index.get_document_ids()
        assert ids and not any(i.endswith(".json") or i.startswith("representations/") for i in ids)


def test_plain_representation_text_and_plain_parquet_are_accepted() -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    doc = {
        "documents": [
            {
                "identifier": "x",
                "representations": {
                    "text/plain": {
                        "content": "Section 1. Plain text, not base64!",
                        "tokens": {"t": [1, 2]},
                    }
                },
            }
        ]
    }
    rep = decode_representation("representations/x/a.json", json.dumps(doc).encode())
    assert rep.get_text_content("text/plain") == "Section 1. Plain text, not base64!"
    table = pa.table(
        {
            "identifier": ["x"],
            "representations": pa.array(
                [[("text/plain", [1, 2, 3])]], type=pa.map_(pa.string(), pa.list_(pa.uint32()))
            ),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    assert parquet_tokens("parquet/x/a", buf.getvalue()) == ("x", {"text/plain": [1, 2, 3]})
    assert parquet_tokens("parquet/x/a", zlib.compress(buf.getvalue()))[1] == {
        "text/plain": [1, 2, 3]
    }


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"{not json", "JSON"),
        (json.dumps({"content": "!!!notbase64"}).encode(), "base64"),
        (json.dumps({"content": base64.b64encode(b"not zlib").decode()}).encode(), "zlib"),
        (
            json.dumps({"content": base64.b64encode(zlib.compress(b"abc")[:-3]).decode()}).encode(),
            "zlib",
        ),
        (b"", "JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_corrupt_documents_name_key_and_reason(data: bytes, what: str) -> None:
    with pytest.raises(CorruptObjectError) as err:
        decode_document("documents/x/bad.json", data)
    assert err.value.key == "documents/x/bad.json"
    assert what in err.value.reason


def test_corrupt_parquet_and_index() -> None:
    with pytest.raises(CorruptObjectError, match="parquet"):
        parquet_tokens("parquet/x/a", zlib.compress(b"PAR1 garbage PAR1"))
    with pytest.raises(CorruptObjectError):
        parquet_tokens("parquet/x/a", b"random bytes")
    with pytest.raises(CorruptObjectError, match="gzip"):
        decode_index("index/x.json.gz", b"\x1f\x8b\x08garbage")


def test_zlib_bomb_is_refused_at_the_cap() -> None:
    compressor = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 100_000
    with pytest.raises(SizeLimitExceededError):
        inflate(bomb, "k", limit=8 * 1024 * 1024)
    doc = json.dumps({"content": base64.b64encode(bomb).decode()}).encode()
    with pytest.raises(SizeLimitExceededError) as err:
        decode_document("documents/x/bomb.json", doc, Limits(max_inflated_bytes=1024 * 1024))
    assert err.value.key == "documents/x/bomb.json"
    gz = gzip.compress(bytes(4 * 1024 * 1024))
    with pytest.raises(SizeLimitExceededError):
        decode_index("index/x.json.gz", gz, "x", Limits(max_inflated_bytes=1024 * 1024))


def test_keys() -> None:
    assert object_key(Stage.DOCUMENTS, "usc", "a/b c[1]+") == "documents/usc/a/b c[1]+.json"
    assert object_key(Stage.PARQUET, "usc", "a/b.json") == "parquet/usc/a/b.json"
    assert stage_prefix(Stage.REPRESENTATIONS, "usc", "/t1/c2/") == "representations/usc/t1/c2/"
    assert index_key("usc", "t1/c2") == "index/usc-t1-c2.json.gz"
    assert document_id_from_key("parquet/usc/a/b") == "a/b"
    assert document_id_from_key("documents/usc/a/b.json", "usc") == "a/b"
    assert normalize_key_prefix("//") is None
    assert validate_document_id("x.json") == "x.json"
    for bad in ["", "/x", "a/../b", "..", "a//b", "./a", "a\x00"]:
        with pytest.raises(InvalidInputError):
            validate_document_id(bad)
    for bad_prefix in ["a/../b", ".."]:
        with pytest.raises(InvalidInputError):
            normalize_key_prefix(bad_prefix)
    with pytest.raises(InvalidInputError):
        Stage.coerce("nope")
    assert Stage.coerce("Parquet") is Stage.PARQUET


def test_fast_timestamps_equal_botocore() -> None:
    from datetime import datetime, timezone
    from email.utils import format_datetime

    from botocore.utils import parse_timestamp as botocore_parse
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kl3m_data_client._timestamps import parse_timestamp

    @settings(max_examples=300, deadline=None)
    @given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
    def check(moment: datetime) -> None:
        moment = moment.replace(tzinfo=timezone.utc)
        iso = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        rfc = format_datetime(moment.replace(microsecond=0), usegmt=True)
        for text in (iso, rfc, moment.strftime("%Y-%m-%dT%H:%M:%SZ")):
            assert parse_timestamp(text) == botocore_parse(text), text

    check()
    for other in ("1700000000", "2024-05-01T12:00:00+02:00", "Wed, 01 May 2024 12:00:00 +0000"):
        assert parse_timestamp(other) == botocore_parse(other)


def test_parquet_content_reads_its_table_under_its_own_limits() -> None:
    """A parquet model reads (and re-reads) its table under the limits it was made with, not
    the defaults: a client's small cap refuses an object the defaults would inflate."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl3m_data_client import Limits as PublicLimits
    from kl3m_data_client.models.document import ParquetContent

    ids = list(range(300_000))  # ~1.2 MB of uint32 tokens, uncompressed parquet
    table = pa.table(
        {
            "identifier": ["x"],
            "representations": pa.array(
                [[("text/plain", ids)]], type=pa.map_(pa.string(), pa.list_(pa.uint32()))
            ),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="NONE")
    packed = zlib.compress(buf.getvalue())
    small = PublicLimits(max_inflated_bytes=64 * 1024)
    assert small == Limits(max_inflated_bytes=64 * 1024)  # one class, however it is imported

    lazy = ParquetContent.from_bytes("a", packed, key="parquet/x/a", limits=small)
    with pytest.raises(SizeLimitExceededError) as err:
        lazy.get_table()
    assert err.value.key == "parquet/x/a"
    with pytest.raises(SizeLimitExceededError):
        decode_parquet("parquet/x/a", "a", packed, small)
    decoded = decode_parquet("parquet/x/a", "a", packed)
    assert decoded.limits == Limits()
    assert decoded.get_representations() == {"text/plain": ids}
    roomy = ParquetContent.from_bytes("a", packed, key="parquet/x/a", limits=Limits())
    assert roomy.get_representations() == {"text/plain": ids}
