"""Parquet helpers at the import path of 0.2.0 (``kl3m_data_client.utils.parquet_utils``).

Reading goes through the client's own decoder (``_formats``); the writers build the
one-row ``identifier`` / ``representations`` table of the parquet stage. Unlike 0.2.0,
unreadable bytes raise :class:`~kl3m_data_client.CorruptObjectError` instead of giving None.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping
from typing import Any

from kl3m_data_client._errors import CorruptObjectError
from kl3m_data_client._formats import (
    decode_content_field,
    parquet_tokens,
    read_parquet_table,
)
from kl3m_data_client.models.document import DEFAULT_TOKENIZER

__all__ = [
    "DEFAULT_TOKENIZER_NAME",
    "create_parquet_with_tokens",
    "create_simple_parquet",
    "deserialize_document_bytes",
    "get_column_data",
    "get_default_tokenizer",
    "get_document_schema",
    "get_parquet_table",
    "get_table_columns",
    "get_table_rows",
    "get_table_schema",
    "serialize_document",
]

DEFAULT_TOKENIZER_NAME = DEFAULT_TOKENIZER
_KEY = "<parquet bytes>"
_tokenizers: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_TOKEN_TYPE":  # pyarrow.uint32(), without importing pyarrow up front
        import pyarrow as pa

        return pa.uint32()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_default_tokenizer() -> Any:
    """The KL3M tokenizer (``tokenizers`` package, fetched from the Hugging Face hub once)."""
    if DEFAULT_TOKENIZER_NAME not in _tokenizers:
        from tokenizers import Tokenizer

        _tokenizers[DEFAULT_TOKENIZER_NAME] = Tokenizer.from_pretrained(DEFAULT_TOKENIZER_NAME)
    return _tokenizers[DEFAULT_TOKENIZER_NAME]


def get_document_schema() -> Any:
    """The parquet-stage schema: ``identifier: string``, ``representations: map<string,
    list<uint32>>``."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("identifier", pa.string()),
            pa.field("representations", pa.map_(pa.string(), pa.list_(pa.uint32()))),
        ]
    )


def _write(table: Any) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, write_statistics=False, store_schema=False)
    return sink.getvalue()


def create_parquet_with_tokens(document_id: str, token_map: Mapping[str, list[int]]) -> bytes:
    """A parquet file (uncompressed bytes) of one document: its id and token ids per MIME type."""
    import pyarrow as pa

    table = pa.table(
        {"identifier": [document_id], "representations": [list(token_map.items())]},
        schema=get_document_schema(),
    )
    return _write(table)


def create_simple_parquet(document_id: str, text: str) -> bytes:
    """A small test parquet file: ``document_id``, ``content`` and ``tokens`` (code points)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            pa.field("document_id", pa.string()),
            pa.field("content", pa.string()),
            pa.field("tokens", pa.list_(pa.int32())),
        ]
    )
    table = pa.table(
        {"document_id": [document_id], "content": [text], "tokens": [[ord(c) for c in text]]},
        schema=schema,
    )
    return _write(table)


def serialize_document(document: Mapping[str, Any], schema: Any = None) -> bytes | None:
    """A parquet-stage object (zlib-compressed parquet) for a ParsedDocument dict.

    Each representation's ``content`` (base64+zlib or plain text) is tokenized with the
    default tokenizer. None when the document has no representation.
    """
    import pyarrow as pa

    token_map: list[tuple[str, list[int]]] = []
    for mime, record in (document.get("representations") or {}).items():
        content = record.get("content") or ""
        if isinstance(content, str):
            try:
                decoded = decode_content_field(content, _KEY, mime_type="text/plain")
                content = decoded if isinstance(decoded, str) else content
            except CorruptObjectError:
                pass  # plain text, as some writers store it
        token_map.append((str(mime), get_default_tokenizer().encode(content).ids))
    if not token_map:
        return None
    table = pa.table(
        {"identifier": [document.get("identifier", "")], "representations": [token_map]},
        schema=schema if schema is not None else get_document_schema(),
    )
    return zlib.compress(_write(table))


def deserialize_document_bytes(document_bytes: bytes) -> dict[str, Any]:
    """``{"identifier": ..., "representations": {mime: [ids]}}`` of a parquet-stage object."""
    identifier, tokens = parquet_tokens(_KEY, document_bytes)
    return {"identifier": identifier, "representations": tokens}


def get_parquet_table(document_bytes: bytes) -> Any:
    """A parquet-stage object (zlib-compressed or plain) as a ``pyarrow.Table``."""
    return read_parquet_table(_KEY, document_bytes)


def get_table_schema(table: Any) -> Any:
    """The table's ``pyarrow.Schema``."""
    return table.schema


def get_table_columns(table: Any) -> list[str]:
    """The table's column names."""
    return list(table.column_names)


def get_column_data(table: Any, column_name: str) -> list[Any] | None:
    """A column as Python values, or None if the table has no such column."""
    if column_name not in table.column_names:
        return None
    return list(table.column(column_name).to_pylist())


def get_table_rows(table: Any) -> list[dict[str, Any]]:
    """Every row as a dict."""
    return list(table.to_pylist())
