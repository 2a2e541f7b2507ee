"""Pure functions: one stage object's bytes -> one export record (no I/O, no state).

A record is a plain dict with the columns of the published KL3M datasets (``identifier``,
``dataset``, ``mime_type``, ``tokens`` or ``text``) plus ``id``, the document id. Records of
the documents stage also carry ``encoding`` (``"utf-8"``: ``text`` is the original text;
``"base64"``: ``text`` is the base64 of a binary original), ``blake2b`` and ``metadata`` (the
Dublin Core fields, without ``content``).

Every function raises :class:`CorruptObjectError` for a bad object, and returns ``None`` when
the object is fine but filtered out (the reason is given in a :class:`Skip`).
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kl3m_data_client._errors import CorruptObjectError
from kl3m_data_client._formats import (
    DEFAULT_LIMITS,
    Limits,
    decode_document,
    decode_representation,
    parquet_tokens,
)
from kl3m_data_client.models.document import DEFAULT_TOKENIZER, preferred_mime

Record = dict[str, Any]

_UINT32 = "I" if array("I").itemsize == 4 else "L"


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What to keep: content kind, MIME types and token count range."""

    content: str = "tokens"  # "tokens" | "text"
    mime_types: frozenset[str] | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None

    def token_count_ok(self, count: int) -> bool:
        """True when ``count`` lies in ``[min_tokens, max_tokens]``."""
        if self.min_tokens is not None and count < self.min_tokens:
            return False
        return self.max_tokens is None or count <= self.max_tokens


@dataclass(frozen=True, slots=True)
class Skip:
    """A well-formed object that the filters leave out."""

    reason: str


def token_array(tokens: Sequence[Any], key: str) -> array[int]:
    """The token ids as a uint32 array (validates types and range in C)."""
    try:
        return array(_UINT32, tokens)
    except (TypeError, OverflowError, ValueError) as exc:
        raise CorruptObjectError(key, f"token ids are not uint32 integers: {exc}") from None


def shard_hash(document_id: str) -> int:
    """A stable 64-bit hash of a document id (same value in every process and version)."""
    digest = hashlib.blake2b(document_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def in_shard(document_id: str, shard: tuple[int, int] | None, sub: tuple[int, int] | None) -> bool:
    """True when the id belongs to ``shard`` and, inside it, to worker shard ``sub``.

    ``shard = (i, n)`` keeps ids with ``h % n == i``; ``sub = (j, m)`` keeps, among those,
    ids with ``(h // n) % m == j``, so worker shards partition the user's shard.
    """
    if shard is None and sub is None:
        return True
    h = shard_hash(document_id)
    n = 1
    if shard is not None:
        index, n = shard
        if h % n != index:
            return False
    if sub is not None:
        j, m = sub
        return (h // n) % m == j
    return True


def worker_of(document_id: str, shard: tuple[int, int] | None, workers: int) -> int:
    """The worker shard ``j`` of an id of ``shard``: ``in_shard(id, shard, (j, workers))``."""
    return (shard_hash(document_id) // (shard[1] if shard else 1)) % workers


def dedup_key(record: Record) -> bytes:
    """The deduplication hash of a record: of its token sequence, else of its text."""
    h = hashlib.blake2b(digest_size=16)
    tokens = record.get("tokens")
    if tokens is not None:
        h.update(b"t")
        h.update(token_array(tokens, str(record.get("id", ""))).tobytes())
    else:
        h.update(b"s")
        h.update(str(record.get("text") or "").encode("utf-8", "surrogatepass"))
    return h.digest()


def _pick(available: Sequence[str], wanted: frozenset[str] | None) -> str | None:
    return preferred_mime(m for m in available if wanted is None or m in wanted)


def _pick_tokens(tokens: Any) -> list[Any] | None:
    if not isinstance(tokens, dict) or not tokens:
        return None
    ids = tokens.get(DEFAULT_TOKENIZER, next(iter(tokens.values())))
    return ids if isinstance(ids, list) else None


def document_record(
    key: str,
    dataset_id: str,
    document_id: str,
    data: bytes,
    flt: RecordFilter,
    limits: Limits = DEFAULT_LIMITS,
) -> Record | Skip:
    """A documents-stage record (content checked against ``blake2b`` when present)."""
    doc = decode_document(key, data, limits)
    if doc.verify() is False:
        raise CorruptObjectError(key, "blake2b does not match the decoded content")
    mime = doc.mime_type or ""
    if flt.mime_types is not None and mime not in flt.mime_types:
        return Skip(f"mime type {mime!r} not selected")
    if isinstance(doc.content, str):
        text, encoding = doc.content, "utf-8"
    else:
        text, encoding = base64.b64encode(doc.content).decode("ascii"), "base64"
    return {
        "id": document_id,
        "identifier": doc.metadata.identifier,
        "dataset": dataset_id,
        "mime_type": mime,
        "text": text,
        "encoding": encoding,
        "blake2b": doc.blake2b,
        "metadata": doc.metadata.fields,  # the decoded object's own dict: nobody else holds it
    }


def representation_record(
    key: str,
    dataset_id: str,
    document_id: str,
    data: bytes,
    flt: RecordFilter,
    limits: Limits = DEFAULT_LIMITS,
) -> Record | Skip:
    """A representations-stage record (first ParsedDocument, preferred representation)."""
    content = decode_representation(key, data, limits)
    parsed = content.get_document_data(0)
    if parsed is None:
        raise CorruptObjectError(key, "no ParsedDocument in 'documents'")
    reps = parsed.get("representations") or {}
    if not reps:
        return Skip("no representation")
    mime = _pick(list(reps), flt.mime_types)
    if mime is None:
        return Skip("no representation of a selected mime type")
    rep = reps[mime]
    ids = _pick_tokens(rep.get("tokens"))
    array_ids = token_array(ids, key) if ids is not None else None
    count = len(array_ids) if array_ids is not None else None
    if (flt.min_tokens is not None or flt.max_tokens is not None) and (
        count is None or not flt.token_count_ok(count)
    ):
        return Skip("token count out of range")
    record: Record = {
        "id": document_id,
        "identifier": str(parsed.get("identifier") or ""),
        "dataset": dataset_id,
        "mime_type": mime,
    }
    if flt.content == "text":
        text = rep.get("content")
        if not isinstance(text, str):
            return Skip("no text")
        record["text"] = text
    else:
        if ids is None:
            return Skip("no tokens")
        record["tokens"] = ids
    return record


def parquet_record(
    key: str,
    dataset_id: str,
    document_id: str,
    data: bytes,
    flt: RecordFilter,
    limits: Limits = DEFAULT_LIMITS,
) -> Record | Skip:
    """A parquet-stage record (token ids of the preferred representation)."""
    identifier, reps = parquet_tokens(key, data, limits)
    if not reps:
        return Skip("no representation")
    mime = _pick(list(reps), flt.mime_types)
    if mime is None:
        return Skip("no representation of a selected mime type")
    ids = reps[mime]
    token_array(ids, key)
    if not flt.token_count_ok(len(ids)):
        return Skip("token count out of range")
    return {
        "id": document_id,
        "identifier": identifier,
        "dataset": dataset_id,
        "mime_type": mime,
        "tokens": ids,
    }


def make_record(
    stage: str,
    key: str,
    dataset_id: str,
    document_id: str,
    data: bytes,
    flt: RecordFilter,
    limits: Limits = DEFAULT_LIMITS,
) -> Record | Skip:
    """The record of one object of ``stage``."""
    if stage == "documents":
        return document_record(key, dataset_id, document_id, data, flt, limits)
    if stage == "representations":
        return representation_record(key, dataset_id, document_id, data, flt, limits)
    if stage == "parquet":
        return parquet_record(key, dataset_id, document_id, data, flt, limits)
    raise ValueError(f"not a data stage: {stage!r}")
