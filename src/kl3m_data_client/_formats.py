"""Pure decoders of the KL3M object formats: bytes in, models out, no I/O.

Every failure raises :class:`CorruptObjectError` (or :class:`SizeLimitExceededError`)
naming the key and what failed; nothing else escapes for any input bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any

from kl3m_data_client._errors import CorruptObjectError

# Limits, inflate and the parquet helpers live below this module (the config and the parquet
# model use them without importing the decoders); they stay importable from here.
from kl3m_data_client._inflate import has_zlib_header
from kl3m_data_client._inflate import inflate as inflate
from kl3m_data_client._limits import DEFAULT_LIMITS as DEFAULT_LIMITS
from kl3m_data_client._limits import Limits as Limits
from kl3m_data_client._parquet import parquet_bytes as parquet_bytes
from kl3m_data_client._parquet import read_parquet_table as read_parquet_table
from kl3m_data_client._parquet import table_tokens as table_tokens
from kl3m_data_client.models.document import (
    DocumentContent,
    DocumentMetadata,
    ParquetContent,
    RepresentationContent,
)
from kl3m_data_client.models.stage import DatasetIndex

_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/x-sh",
        "application/rtf",
    }
)


def is_text_mime(mime_type: str | None) -> bool | None:
    """True/False for a known text/binary MIME type, None when unknown or absent."""
    if not mime_type:
        return None
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        return True
    return mime.endswith(("+xml", "+json"))


_fast_b64: Any
try:  # SIMD base64 (a dependency where it has wheels), ~5x the standard library's speed
    from pybase64 import b64decode as _fast_b64
except ImportError:  # pragma: no cover - platforms without pybase64 wheels
    _fast_b64 = None
_orjson_loads: Any
try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - platforms without orjson wheels
    _orjson_loads = None

if sys.version_info >= (3, 11):

    def _strict_b64(value: str) -> bytes:
        """Strict base64 (``binascii`` ``strict_mode``). pybase64 decodes the inputs whose
        padding is only at the end of a whole number of quanta, where it accepts and refuses
        exactly what strict mode does; the others (pybase64 allows padding mid-string) go
        to ``binascii``."""
        if _fast_b64 is not None and not len(value) % 4 and value.find("=", 0, len(value) - 2) < 0:
            return _fast_b64(value, validate=True)  # type: ignore[no-any-return]
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _strict_b64(value: str) -> bytes:
        return base64.b64decode(value.encode("ascii"), validate=True)


def _b64(value: str, key: str, field: str) -> bytes:
    try:
        return _strict_b64(value)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise CorruptObjectError(key, f"invalid base64 in {field!r}: {exc}") from exc


#: orjson parses objects up to this size: it allocates ~13x the text while parsing (json
#: ~2x), a transient the memory budget's ``BODY_FACTOR`` does not cover for large objects.
ORJSON_MAX_BYTES = 64 << 10


def _load_json(data: bytes, key: str, what: str) -> Any:
    """``json.loads(data)``: through orjson when it takes the text (same values, ~3x
    faster), through ``json`` for whatever orjson refuses (so errors and the odd documents
    ``json`` accepts -- NaN, lone surrogates, UTF-16 -- are unchanged), when its result
    holds a float of 2**63 or more (orjson reads integers beyond 64 bits as floats), and for
    texts above :data:`ORJSON_MAX_BYTES`."""
    if _orjson_loads is not None and len(data) <= ORJSON_MAX_BYTES:
        try:
            value = _orjson_loads(data)
        except ValueError:
            pass
        else:
            if not _big_float(value):
                return value
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptObjectError(key, f"invalid JSON in {what}: {exc}") from exc


def _big_float(value: Any) -> bool:
    """True if ``value`` (parsed JSON) holds a float of magnitude 2**63 or more (iterative:
    a document may nest as deep as orjson parses)."""
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is float:
            if abs(item) >= 9.223372036854775808e18:
                return True
            continue
        if kind is dict:
            items = item.values()
        elif kind is list:
            items = item
        else:
            continue
        kinds = set(map(type, items))  # at C speed: token lists are long
        if float in kinds or dict in kinds or list in kinds:
            todo.extend(x for x in items if type(x) in (float, dict, list))
    return False


def decode_content_field(
    value: str, key: str, *, mime_type: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> str | bytes:
    """Invert ``base64(zlib(raw))``: ``str`` for text originals, ``bytes`` for binary ones."""
    raw = inflate(_b64(value, key, "content"), key, limit=limits.max_inflated_bytes)
    return bytes_to_content(raw, mime_type)


def bytes_to_content(raw: bytes, mime_type: str | None) -> str | bytes:
    """Text as ``str`` when the MIME type says text (or is unknown) and it is UTF-8."""
    if is_text_mime(mime_type) is False:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def decode_document(key: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> DocumentContent:
    """Decode a documents-stage object."""
    obj = _load_json(data, key, "documents object")
    if not isinstance(obj, dict):
        raise CorruptObjectError(key, "documents object is not a JSON object")
    encoded = obj.get("content")
    if encoded is None:
        raw = b""
    elif isinstance(encoded, str):
        raw = inflate(_b64(encoded, key, "content"), key, limit=limits.max_inflated_bytes)
    else:
        raise CorruptObjectError(key, "'content' is not a string")
    fmt = obj.get("format")
    digest = obj.get("blake2b")
    return DocumentContent(
        content=bytes_to_content(raw, fmt if isinstance(fmt, str) else None),
        metadata=DocumentMetadata.from_dict(obj),
        raw=raw,
        blake2b=digest if isinstance(digest, str) and digest else None,
    )


def _decode_text(value: str, key: str, limits: Limits) -> str:
    """Representation text: base64(zlib(utf8)) or, from some writers, the plain text."""
    try:
        packed = _strict_b64(value)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return value
    if not has_zlib_header(packed):
        return value
    raw = inflate(packed, key, limit=limits.max_inflated_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptObjectError(key, f"representation text is not UTF-8: {exc}") from exc


def decode_representation(
    key: str, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> RepresentationContent:
    """Decode a representations-stage object; every representation's text is decoded."""
    obj = _load_json(data, key, "representations object")
    if not isinstance(obj, dict) or not isinstance(obj.get("documents"), list):
        raise CorruptObjectError(key, "representations object has no 'documents' list")
    if not obj["documents"]:
        raise CorruptObjectError(key, "representations object has an empty 'documents' list")
    for doc in obj["documents"]:
        if not isinstance(doc, dict):
            raise CorruptObjectError(key, "a 'documents' entry is not a JSON object")
        reps = doc.get("representations") or {}
        if not isinstance(reps, dict):
            raise CorruptObjectError(key, "'representations' is not a JSON object")
        for mime, rep in reps.items():
            if not isinstance(rep, dict):
                raise CorruptObjectError(key, f"representation {mime!r} is not a JSON object")
            content = rep.get("content")
            if isinstance(content, str):
                rep["content"] = _decode_text(content, key, limits)
            tokens = rep.get("tokens") or {}
            if not isinstance(tokens, dict) or not all(
                isinstance(ids, list) for ids in tokens.values()
            ):
                raise CorruptObjectError(key, f"tokens of {mime!r} are not lists of ids")
    return RepresentationContent(documents=obj["documents"])


def decode_parquet(
    key: str, document_id: str, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> ParquetContent:
    """Decode a parquet-stage object (the table is parsed now, so corruption shows here)."""
    content = ParquetContent.from_bytes(document_id, data, key=key, limits=limits)
    content._table = read_parquet_table(key, data, limits)
    return content


def parquet_tokens(
    key: str, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, dict[str, list[int]]]:
    """The identifier and token ids per MIME type of a parquet-stage object."""
    return table_tokens(key, read_parquet_table(key, data, limits))


def decode_index(
    key: str, data: bytes, dataset_id: str = "", limits: Limits = DEFAULT_LIMITS
) -> DatasetIndex:
    """Decode an index object: gzip-compressed or plain JSON (sniffed by the gzip magic)."""
    if data[:2] == b"\x1f\x8b":
        data = inflate(data, key, limit=limits.max_inflated_bytes, what="gzip", wbits=31)
    obj = _load_json(data, key, "index")
    if not isinstance(obj, dict) or not isinstance(obj.get("objects", []), list):
        raise CorruptObjectError(key, "index has no 'objects' list")
    if not isinstance(obj.get("metadata") or {}, dict):
        raise CorruptObjectError(key, "index 'metadata' is not a JSON object")
    return DatasetIndex.from_dict(obj, dataset_id)


StageContent = DocumentContent | RepresentationContent | ParquetContent


def decode_stage_object(
    stage_value: str, key: str, document_id: str, data: bytes, limits: Limits = DEFAULT_LIMITS
) -> StageContent:
    """Decode an object of the data stage named ``stage_value``."""
    if stage_value == "documents":
        return decode_document(key, data, limits)
    if stage_value == "representations":
        return decode_representation(key, data, limits)
    if stage_value == "parquet":
        return decode_parquet(key, document_id, data, limits)
    raise ValueError(f"not a data stage: {stage_value!r}")
