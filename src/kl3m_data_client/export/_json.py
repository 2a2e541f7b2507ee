"""JSON text of records: ``json.dumps`` output, without recursion limits, orjson when exact."""

from __future__ import annotations

import importlib
import json
from array import array
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from kl3m_data_client.export._records import Record


def dumps_deep(value: Any, *, separators: tuple[str, str], ensure_ascii: bool) -> str:
    """``json.dumps(value, separators=..., ensure_ascii=...)`` without recursion.

    The same text as ``json.dumps`` for any JSON value, however deeply nested: the JSON
    decoder accepts nesting close to the interpreter's recursion limit, where the recursive
    encoders (``json``, ``orjson``'s 255 levels) fail. Used when they do.
    """
    item_sep, key_sep = separators
    enc = encode_basestring_ascii if ensure_ascii else encode_basestring
    out: list[str] = []
    # (True, text) is emitted as it is; (False, value) is encoded
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        raw, v = stack.pop()
        if raw:
            out.append(v)
        elif isinstance(v, str):
            out.append(enc(v))
        elif v is None or v is True or v is False or isinstance(v, (int, float)):
            out.append(_scalar(v))
        elif isinstance(v, dict):
            if not v:
                out.append("{}")
                continue
            out.append("{")
            stack.append((True, "}"))
            items = list(v.items())
            for i in range(len(items) - 1, -1, -1):
                k, member = items[i]
                stack.append((False, member))
                name = k if isinstance(k, str) else _scalar(k)
                stack.append((True, (item_sep if i else "") + enc(name) + key_sep))
        elif isinstance(v, (list, tuple)):
            if not v:
                out.append("[]")
                continue
            out.append("[")
            stack.append((True, "]"))
            for i in range(len(v) - 1, -1, -1):
                stack.append((False, v[i]))
                if i:
                    stack.append((True, item_sep))
        else:
            raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")
    return "".join(out)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(v).__name__}")


def json_text(value: Any, *, separators: tuple[str, str], ensure_ascii: bool) -> str:
    """``json.dumps`` (same text), falling back to :func:`dumps_deep` for deep nesting."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
    except RecursionError:
        return dumps_deep(value, separators=separators, ensure_ascii=ensure_ascii)


COMPACT = (",", ":")


def _dumps(record: Record) -> str:
    return json_text(record, separators=COMPACT, ensure_ascii=False)


# -- the orjson fast path (a dependency; the stdlib path where it is missing) -------------
# orjson writes the very bytes of ``_dumps(record).encode()`` (compact separators, UTF-8,
# the same escapes: checked over every code point) for JSON made of exact str / int (64-bit)
# / bool / None / list / dict-with-str-keys values, 6-10x faster. Anything else -- floats
# (NaN, exponent formats), subclasses, other types -- takes the stdlib path, and so does
# whatever orjson refuses (lone surrogates, ints beyond 64 bits, deep nesting): a line is
# byte-identical whichever path wrote it.
_orjson: Any
try:
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NONE = type(None)


def _int64_list(values: list[Any] | tuple[Any, ...]) -> bool:
    """True when every element is an int (or bool) in int64: one C loop, no Python calls."""
    try:
        array("q", values)
    except (TypeError, OverflowError):
        return False
    return True


def _plain_values(values: Any) -> bool:
    """True when orjson encodes every one of ``values`` exactly as ``json.dumps`` does."""
    for v in values:
        t = type(v)
        if t is str or t is _NONE or t is bool:
            continue
        if t is int:
            if not _INT_MIN <= v <= _INT_MAX:
                return False
        elif t is dict:
            for k in v:
                if type(k) is not str:
                    return False
            if not _plain_values(v.values()):
                return False
        elif t is list or t is tuple:
            # token ids: one C loop; anything else (strings, objects) element by element
            if not ((v and type(v[0]) is int and _int64_list(v)) or _plain_values(v)):
                return False
        else:
            return False
    return True


def _plain(value: Any) -> bool:
    """True when orjson encodes ``value`` exactly as ``json.dumps`` does (see above)."""
    return _plain_values((value,))


def encode_line(record: Record) -> bytes:
    """One JSON Lines line (``\\n`` included): the same bytes on the orjson and stdlib paths."""
    if _orjson is not None and _plain_or_deep(record):
        try:
            line: bytes = _orjson.dumps(record, option=_orjson.OPT_APPEND_NEWLINE)
            return line
        except TypeError:  # orjson.JSONEncodeError: lone surrogate, int range, depth
            pass
    return encode_line_stdlib(record)


def encode_line_stdlib(record: Record) -> bytes:
    """:func:`encode_line` without orjson: ``json.dumps`` (compact, UTF-8)."""
    try:
        return (_dumps(record) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, the line stays valid UTF-8
        text = json_text(record, separators=COMPACT, ensure_ascii=True)
        return (text + "\n").encode("ascii")


def _plain_or_deep(record: Record) -> bool:
    """:func:`_plain`, False (the stdlib path) for a record nested too deeply to walk."""
    try:
        return _plain(record)
    except RecursionError:
        return False
