"""The fast decoders (orjson, pybase64, isal) give what the standard library gives.

Each is compared with the standard-library function it stands in for, on valid and on
corrupt input: the same values, and a refusal exactly where the standard library refuses.
"""

from __future__ import annotations

import binascii
import gzip
import json
import random
import zlib

import pytest

from kl3m_data_client import _formats, _inflate
from kl3m_data_client._errors import CorruptObjectError, SizeLimitExceededError
from kl3m_data_client._formats import _load_json, _strict_b64, inflate

KEY = "documents/t/1.json"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_a_default_install_uses_the_fast_decoders() -> None:
    """Otherwise the comparisons below would compare the standard library with itself."""
    assert _formats._fast_b64 is not None
    assert _formats._orjson_loads is not None
    assert _inflate._inflater is not zlib


def _stdlib_b64(value: str) -> bytes | None:
    try:
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _ours_b64(value: str) -> bytes | None:
    try:
        return _strict_b64(value)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _b64_cases() -> list[str]:
    rng = random.Random(16)
    cases = ["", "=", "==", "AA==", "AAA=", "AAAA", "AAAA====", "AA=A", "A===", "AB==", "é"]
    cases += ["AAAA=", "QUJD\nREVG", " QUJD", "QUJD ", "-_-_", "AAAA\x00"]
    for _ in range(20_000):
        chars = [rng.choice(_ALPHABET) for _ in range(rng.choice([0, 3, 4, 5, 8, 12, 16]))]
        for _ in range(rng.randint(0, 2)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice("= \n-_é\x00")
        if len(chars) >= 2 and rng.random() < 0.3:
            chars[-1] = "="
            if rng.random() < 0.5:
                chars[-2] = "="
        cases.append("".join(chars))
    return cases


def test_base64_accepts_and_refuses_what_strict_binascii_does() -> None:
    cases = _b64_cases()
    differ = [c for c in cases if _ours_b64(c) != _stdlib_b64(c)]
    assert differ == []
    # both outcomes are well represented in the cases
    refused = sum(_stdlib_b64(c) is None for c in cases)
    assert 1_000 < refused < len(cases) - 1_000


def _zlib_streams() -> list[tuple[str, bytes, int]]:
    rng = random.Random(5)
    text = b"".join(
        rng.choice([b"the ", b"court ", b"held ", b"\xe2\x80\x94 ", b"42 "]) for _ in range(40_000)
    )
    good = zlib.compress(text)
    gz = gzip.compress(text)
    return [
        ("zlib", good, 15),
        ("zlib empty", zlib.compress(b""), 15),
        ("gzip", gz, 31),
        ("truncated", good[: len(good) // 2], 15),
        ("bad checksum", good[:-1] + bytes([good[-1] ^ 1]), 15),
        ("flipped byte", good[:40] + bytes([good[40] ^ 0xFF]) + good[41:], 15),
        ("not zlib", b"plain text, no header", 15),
        ("gzip bad crc", gz[:-5] + bytes([gz[-5] ^ 1]) + gz[-4:], 31),
        ("trailing bytes", good + b"garbage", 15),
    ]


def _stdlib_inflate(data: bytes, wbits: int) -> bytes | str:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data)
    except zlib.error:
        return "corrupt"
    return out if d.eof else "truncated"


@pytest.mark.parametrize("case", _zlib_streams(), ids=lambda c: c[0])
def test_inflate_matches_zlib(case: tuple[str, bytes, int]) -> None:
    _, data, wbits = case
    expected = _stdlib_inflate(data, wbits)
    try:
        got: bytes | str = inflate(data, KEY, limit=1 << 30, wbits=wbits)
    except CorruptObjectError as exc:
        assert KEY in str(exc)
        got = "truncated" if "truncated" in str(exc) else "corrupt"
    assert got == expected


def test_inflate_refuses_output_above_the_limit_in_steps() -> None:
    bomb = zlib.compress(b"\0" * (8 << 20))
    with pytest.raises(SizeLimitExceededError, match="inflates beyond the limit of 3000000"):
        inflate(bomb, KEY, limit=3_000_000)
    assert inflate(bomb, KEY, limit=8 << 20) == b"\0" * (8 << 20)


JSON_CASES = [
    b'{"a": 1, "b": [true, false, null], "c": "\\u00e9\\n"}',
    b'{"a": 1, "a": 2}',
    b"[1e400, -1e400]",
    b'{"x": NaN, "y": Infinity}',
    b'"\\ud800"',
    b"123456789012345678901234567890",
    b"[0.1, -0.0, 1E2, 5e-324]",
    '{"utf16": "é"}'.encode("utf-16"),
    b"\xef\xbb\xbf{}",
    b'{"a": "\xff"}',
    b"[" * 2000 + b"]" * 2000,
    b"[" + b"123456789012345678901234567890," * 3000 + b"0]",
    b"[" * 200 + b"]" * 200,
    b"[" * 1000 + b"1e300" + b"]" * 1000,
    b'{"a":' * 1000 + b"123456789012345678901234567890" + b"}" * 1000,
    b'{"a": 1,}',
    b"",
    b"   {}   ",
    b'{"a": 1} x',
]


@pytest.mark.parametrize("data", JSON_CASES, ids=range(len(JSON_CASES)))
def test_json_values_and_refusals_match_the_standard_library(data: bytes) -> None:
    try:
        expected = json.loads(data)
    except (ValueError, RecursionError):
        with pytest.raises(CorruptObjectError, match="invalid JSON in test"):
            _load_json(data, KEY, "test")
        return
    got = _load_json(data, KEY, "test")
    # repr: NaN != NaN, and -0.0 == 0.0, but their reprs differ
    assert repr(got) == repr(expected)


def test_large_texts_do_not_pay_orjsons_transient_memory() -> None:
    """orjson allocates ~13x the text while parsing; above ORJSON_MAX_BYTES json parses."""
    import tracemalloc

    big = json.dumps({"content": "A" * (_formats.ORJSON_MAX_BYTES * 4)}).encode()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert _load_json(big, KEY, "test")["content"] == "A" * (_formats.ORJSON_MAX_BYTES * 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(big)
