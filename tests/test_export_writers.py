"""Part writers on their own: batching, memory layout of a batch, output bytes."""

from __future__ import annotations

import gzip
import json
from array import array
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client.export._writers import BatchBounds, JsonlWriter, ParquetWriter, PartWriter


def _records(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        rec: dict[str, Any] = {"id": f"doc/{i}", "identifier": f"https://x/{i}", "dataset": "d"}
        rec["mime_type"] = "text/markdown" if i % 3 else "text/plain"
        rec["tokens"] = [(i * 7919 + j * 31) % 128_000 for j in range(1 + (i * 37) % 90)]
        out.append(rec)
    return out


def _write(writer: PartWriter, records: list[dict[str, Any]]) -> list[list[Any]]:
    """Drive a writer as the exporter does; returns the batches it was handed."""
    batches = []
    for record in records:
        if writer.add(record):
            batch = writer.take_batch()
            batches.append(batch)
            writer.write_batch(batch)
    pending = writer.take_batch()
    batches.append(pending)
    writer.finish(pending)
    return batches


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_jsonl_batch_is_one_buffer_and_output_is_unchanged(
    tmp_path: Path, compression: str
) -> None:
    """Lines encoded on add go into one buffer per batch (many small bytes objects freed
    together fragment the C heap), of bounded size; the part's bytes do not depend on where
    batches are cut."""
    records = _records(100)
    one_batch = JsonlWriter(tmp_path / "b.jsonl", compression)
    assert len(_write(one_batch, records)) == 1  # default bounds: everything in one batch
    small = BatchBounds(records=7, units=300, encoded_bytes=1000)
    batches = _write(JsonlWriter(tmp_path / "a.jsonl", compression, small), records)
    assert len(batches) > 100 // 7  # some batches were cut by units or bytes
    for batch in batches[:-1]:
        assert len(batch) == 1 and type(batch[0]) is bytearray
        lines = bytes(batch[0]).splitlines(keepends=True)
        assert sum(map(len, lines[:-1])) < 1000  # cut at the first line reaching the bound
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert a == b
    raw = gzip.decompress(a) if compression == "gzip" else a
    if compression == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().decompressobj().decompress(a)
    assert [json.loads(line) for line in raw.splitlines()] == records


def test_big_batches_are_written_in_slices_with_the_same_bytes_and_hash(tmp_path: Path) -> None:
    """A batch larger than ``WRITE_BYTES`` reaches the file in slices of at most that size
    (big writes cost the kernel more per byte); the part's bytes, size and sha256 are those of
    the lines, whatever the slicing."""
    import hashlib
    import io

    from kl3m_data_client.export._part import WRITE_BYTES, HashingFile

    class Recording(io.BytesIO):
        """A file that remembers the size of every write it is given."""

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, data: Any) -> int:
            self.sizes.append(len(data))
            return super().write(data)

    records = [{"id": str(i), "text": f"{i}:" + "x\u00e9\n" * 20_000} for i in range(120)]
    expected = b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in records
    )
    assert len(expected) > 3 * WRITE_BYTES
    raw = Recording()
    sink = HashingFile(raw)
    sink.write(bytearray(expected))
    sink.write(b"")
    assert max(raw.sizes) == WRITE_BYTES and sum(raw.sizes) == len(expected)
    assert raw.getvalue() == expected

    final = tmp_path / "big.jsonl"
    writer = JsonlWriter(final, "none")
    batches = _write(writer, records)
    assert sum(len(b[0]) for b in batches if b) == len(expected)
    assert final.read_bytes() == expected
    sha, size = writer.sink.sha.hexdigest(), writer.sink.size
    assert (sha, size) == (hashlib.sha256(expected).hexdigest(), len(expected))


def test_orjson_exactness_walk_on_lists() -> None:
    """The walk that sends a record to orjson checks lists of ints in one C loop and falls
    back to element by element: a float or an int beyond uint64 anywhere takes the stdlib
    path; int64..uint64 ints, bools, strings and nested values stay on the fast path."""
    from kl3m_data_client.export._json import _plain, encode_line

    fast = [
        {"t": [1, 2, 3]},
        {"t": [1, 2**63, True]},  # uint64 range: not int64, still exact
        {"t": ["a", 1, None, False, [2, "b"], {"k": [3]}]},
        {"t": [True, 1]},
        {"t": (1, "x")},
        {"t": []},
    ]
    slow = [
        {"t": [1, 2.5]},
        {"t": [1, 2**64]},
        {"t": ["a", [1, {"k": 0.1}]]},
        {"t": [-(2**63) - 1]},
        {1: "non-str key"},
        {"t": {"k": [1, 2, 3.0]}},
    ]
    for record in fast:
        assert _plain(record), record
    for record in slow:
        assert not _plain(record), record
    for record in fast + slow:
        try:
            text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        except TypeError:
            continue
        assert encode_line(record) == text.encode() + b"\n"


def test_parquet_row_groups_are_bounded_and_tokens_buffered_compactly(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    small = BatchBounds(records=20, units=500)
    records = _records(120)
    probe = ParquetWriter(tmp_path / "probe.parquet", "zstd", "parquet", "tokens", small)
    probe.add(records[0])
    (buffered,) = probe.take_batch()
    probe.finish([buffered])
    assert type(buffered["tokens"]) is array and buffered["tokens"].itemsize == 4  # not ints
    assert type(records[0]["tokens"]) is list  # the caller's record is left alone

    _write(ParquetWriter(tmp_path / "p.parquet", "zstd", "parquet", "tokens", small), records)

    pf = pq.ParquetFile(tmp_path / "p.parquet")
    assert pf.metadata.num_row_groups > 120 // 20
    longest = max(len(r["tokens"]) for r in records)
    for i in range(pf.metadata.num_row_groups):
        group = pf.read_row_group(i)
        tokens = sum(len(t) for t in group.column("tokens").to_pylist())
        assert group.num_rows <= 20
        assert tokens < 500 + longest  # cut at the first record that reaches the bound
    assert pf.read().to_pylist() == records
    columns = pf.metadata.row_group(0)
    encodings = {
        columns.column(j).path_in_schema: columns.column(j).encodings
        for j in range(columns.num_columns)
    }
    dictionary = {path for path, enc in encodings.items() if "RLE_DICTIONARY" in enc}
    assert dictionary == {"dataset", "mime_type", "tokens.list.element"}


def test_deep_json_is_json_dumps_text_without_recursion() -> None:
    """``dumps_deep`` gives ``json.dumps``'s text for any JSON value (both separators, both
    ``ensure_ascii``), and ``json_text`` falls back to it where the recursive encoder fails."""
    import sys

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kl3m_data_client.export._json import dumps_deep, json_text

    values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(
                st.text() | st.integers() | st.booleans() | st.none(), inner, max_size=4
            )
        ),
        max_leaves=25,
    )

    @settings(max_examples=300, deadline=None)
    @given(values, st.booleans(), st.sampled_from([(",", ":"), (", ", ": ")]))
    def check(value: Any, ascii_only: bool, separators: tuple[str, str]) -> None:
        expected = json.dumps(value, separators=separators, ensure_ascii=ascii_only)
        assert dumps_deep(value, separators=separators, ensure_ascii=ascii_only) == expected

    check()
    depth = sys.getrecursionlimit() + 100
    deep: Any = "x"
    for _ in range(depth):
        deep = {"k": [deep]}
    with pytest.raises(RecursionError):
        json.dumps(deep)
    text = json_text(deep, separators=(",", ":"), ensure_ascii=False)
    assert text == '{"k":[' * depth + '"x"' + "]}" * depth
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_deep({"a": object()}, separators=(",", ":"), ensure_ascii=True)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_read_part_gives_back_the_records_of_a_finished_part(
    tmp_path: Path, compression: str
) -> None:
    """``read_part`` (resume rebuilds deduplication state with it) reads every format back."""
    from kl3m_data_client.export._writers import open_part, read_part

    records = _records(30)
    for fmt, comp in (("jsonl", compression), ("parquet", "zstd")):
        final = tmp_path / f"part.{fmt}.{comp}"
        _write(open_part(final, fmt, comp, "parquet", "tokens"), records)
        assert list(read_part(final, fmt, comp)) == records
        assert not list(tmp_path.glob(".*.tmp"))  # the temporary name is gone
