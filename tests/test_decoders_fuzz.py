"""Property tests of every decoder: any input gives a result or our typed error, nothing else."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tracemalloc
import zlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kl3m_data_client._errors import CorruptObjectError, SizeLimitExceededError
from kl3m_data_client._formats import (
    Limits,
    decode_content_field,
    decode_document,
    decode_index,
    decode_parquet,
    decode_representation,
    inflate,
    parquet_tokens,
)

LIMITS = Limits(max_object_bytes=1 << 20, max_inflated_bytes=64 * 1024)
KEY = "documents/fuzz/x.json"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _b64z(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data)).decode()


def _ok_or_typed(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except CorruptObjectError as exc:
        assert exc.key
        return exc


def _mutate(data: bytes, draw: Any) -> bytes:
    if not data:
        return data
    ops = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4))
    buf = bytearray(data)
    for pos, value in ops:
        buf[pos] = value
    cut = draw(st.integers(0, len(buf)))
    return bytes(buf[:cut]) if draw(st.booleans()) else bytes(buf)


# -- arbitrary bytes ------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    _ok_or_typed(decode_document, KEY, data, LIMITS)
    _ok_or_typed(decode_representation, KEY, data, LIMITS)
    _ok_or_typed(decode_index, KEY, data, "fuzz", LIMITS)
    _ok_or_typed(parquet_tokens, KEY, data, LIMITS)
    _ok_or_typed(decode_parquet, KEY, "x", data, LIMITS)
    _ok_or_typed(inflate, data, KEY, limit=LIMITS.max_inflated_bytes)
    _ok_or_typed(inflate, data, KEY, limit=LIMITS.max_inflated_bytes, wbits=31)
    _ok_or_typed(decode_content_field, data.decode("latin-1"), KEY, limits=LIMITS)


@FUZZ
@given(st.text(max_size=512), st.one_of(st.none(), st.text(max_size=20)))
def test_arbitrary_content_field(value: str, mime: str | None) -> None:
    _ok_or_typed(decode_content_field, value, KEY, mime_type=mime, limits=LIMITS)


# -- structured, near-valid inputs -----------------------------------------------------------
@FUZZ
@given(st.data())
def test_near_valid_documents(data: st.DataObject) -> None:
    obj: dict[str, Any] = {
        "title": data.draw(json_values),
        "format": data.draw(
            st.one_of(st.sampled_from(["text/html", "application/pdf"]), json_values)
        ),
        "content": data.draw(
            st.one_of(st.binary(max_size=200).map(_b64z), json_values, st.text(max_size=40))
        ),
        "size": data.draw(json_values),
        "blake2b": data.draw(json_values),
        "identifier": data.draw(json_values),
        "creator": data.draw(json_values),
        "subject": data.draw(json_values),
        "date": data.draw(json_values),
        "extra": data.draw(json_values),
        data.draw(st.text(max_size=10)): data.draw(json_values),
    }
    raw = json.dumps(obj).encode()
    result = _ok_or_typed(decode_document, KEY, _mutate(raw, data.draw), LIMITS)
    if not isinstance(result, CorruptObjectError):
        repr(result)
        str(result.metadata)


@FUZZ
@given(st.data())
def test_near_valid_representations(data: st.DataObject) -> None:
    rep: dict[str, Any] = {
        "content": data.draw(
            st.one_of(st.text(max_size=50).map(lambda t: _b64z(t.encode())), json_values)
        ),
        "tokens": data.draw(
            st.one_of(
                st.dictionaries(st.text(max_size=5), st.lists(json_values, max_size=4)), json_values
            )
        ),
        "mime_type": data.draw(json_values),
    }
    doc: Any = data.draw(
        st.one_of(
            st.just({"source": "s", "identifier": "i", "representations": {"text/plain": rep}}),
            st.just({"representations": rep}),
            st.just({"identifier": data.draw(json_values), "representations": {"x": rep}}),
            json_values,
        )
    )
    raw = json.dumps({"documents": [doc]}).encode()
    result = _ok_or_typed(decode_representation, KEY, _mutate(raw, data.draw), LIMITS)
    if not isinstance(result, CorruptObjectError):
        repr(result)
        _ok_or_typed(lambda: list(result.documents))


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


_PARQUET_TABLES = [
    pa.table(
        {
            "identifier": ["s3://b/k"],
            "representations": pa.array(
                [[("text/plain", [1, 2, 3])]], type=pa.map_(pa.string(), pa.list_(pa.uint32()))
            ),
        }
    ),
    pa.table({"identifier": [1], "representations": [5]}),
    pa.table({"identifier": [None], "representations": [[1, 2]]}),
    pa.table({"identifier": ["a"], "representations": ["text"]}),
    pa.table({"identifier": ["a"], "representations": [[[1, 2]]]}),
    pa.table({"identifier": ["a"], "representations": [{"a": 1}]}),
    pa.table({"identifier": ["a"], "representations": [[{"k": "text/plain", "v": 3}]]}),
    pa.table(
        {"identifier": pa.array([], pa.string()), "representations": pa.array([], pa.string())}
    ),
    pa.table({"other": [1]}),
    pa.Table.from_arrays(
        [pa.array([1]), pa.array([2])], names=["representations", "representations"]
    ),
]


@pytest.mark.parametrize("table", _PARQUET_TABLES, ids=range(len(_PARQUET_TABLES)))
@pytest.mark.parametrize("compress", [False, True])
def test_parquet_schemas(table: pa.Table, compress: bool) -> None:
    data = _parquet(table)
    if compress:
        data = zlib.compress(data)
    tokens = _ok_or_typed(parquet_tokens, KEY, data, LIMITS)
    if not isinstance(tokens, CorruptObjectError):
        identifier, reps = tokens
        assert isinstance(identifier, str)
        assert all(
            isinstance(v, list) and all(isinstance(i, int) for i in v) for v in reps.values()
        )
    _ok_or_typed(decode_parquet, KEY, "x", data, LIMITS)


@FUZZ
@given(st.data())
def test_near_valid_parquet(data: st.DataObject) -> None:
    table = data.draw(st.sampled_from(_PARQUET_TABLES))
    raw = _parquet(table)
    if data.draw(st.booleans()):
        raw = zlib.compress(raw)
    mutated = _mutate(raw, data.draw)
    _ok_or_typed(parquet_tokens, KEY, mutated, LIMITS)
    _ok_or_typed(decode_parquet, KEY, "x", mutated, LIMITS)


@FUZZ
@given(st.data())
def test_near_valid_index(data: st.DataObject) -> None:
    obj = {
        "objects": data.draw(st.one_of(st.lists(json_values, max_size=5), json_values)),
        "metadata": data.draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"dataset_id": json_values, "count": json_values, "created_at": json_values}
                ),
                json_values,
            )
        ),
    }
    raw = json.dumps(obj).encode()
    if data.draw(st.booleans()):
        raw = gzip.compress(raw)
    result = _ok_or_typed(decode_index, KEY, _mutate(raw, data.draw), "fuzz", LIMITS)
    if not isinstance(result, CorruptObjectError):
        _ok_or_typed(result.get_document_ids)


# -- limits ----------------------------------------------------------------------------------
def _bomb(inflated: int) -> bytes:
    """A zlib stream of ``inflated`` zeros, built by streaming (never holding the output)."""
    comp = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [comp.compress(chunk) for _ in range(inflated // len(chunk))]
    parts.append(comp.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = _bomb(1100 * (1 << 20))  # > 1 GB inflated
    assert len(data) < 2 << 20
    return data


def test_zlib_bomb_is_refused_within_the_cap(bomb: bytes) -> None:
    cap = 4 << 20
    limits = Limits(max_inflated_bytes=cap)
    document = json.dumps({"title": "bomb", "content": base64.b64encode(bomb).decode()}).encode()
    gz_index = gzip.compress(bytes(8 << 20))
    tracemalloc.start()
    try:
        for call in (
            lambda: inflate(bomb, KEY, limit=cap),
            lambda: decode_document(KEY, document, limits),
            lambda: parquet_tokens(KEY, bomb, limits),
            lambda: decode_parquet(KEY, "x", bomb, limits),
            lambda: decode_index(KEY, gz_index, "x", limits),
        ):
            tracemalloc.reset_peak()
            with pytest.raises(SizeLimitExceededError):
                call()
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 3 * cap + len(document) + (2 << 20), peak
    finally:
        tracemalloc.stop()


def test_inflate_limit_edges() -> None:
    payload = b"a" * 1000
    assert inflate(zlib.compress(payload), KEY, limit=1000) == payload
    with pytest.raises(SizeLimitExceededError):
        inflate(zlib.compress(payload), KEY, limit=999)
    with pytest.raises(CorruptObjectError, match="truncated"):
        inflate(zlib.compress(payload)[:-6], KEY, limit=2000)
