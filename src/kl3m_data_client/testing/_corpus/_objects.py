"""Encoders of the bucket's objects, in the formats of ``docs/format.md``."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Mapping
from typing import Any

from kl3m_data_client.testing._corpus._model import CREATED_AT, TOKENIZER_NAME

_DC_ORDER = (
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
)


def b64z(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data)).decode("ascii")


def encode_document_object(
    dublin_core: Mapping[str, Any],
    raw: bytes,
    *,
    document_id: str,
    dataset_id: str,
    size: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """A documents-stage object: Dublin Core JSON, ``indent=4``, only non-empty fields."""
    obj: dict[str, Any] = {}
    for name in _DC_ORDER:
        value = dublin_core.get(name)
        if value:
            obj[name] = value
    obj["content"] = b64z(raw)
    obj["blake2b"] = hashlib.blake2b(raw).hexdigest()
    obj["id"] = document_id
    obj["size"] = len(raw) if size is None else size
    if extra:
        obj["extra"] = dict(extra)
    obj["dataset_id"] = dataset_id
    return json.dumps(obj, indent=4).encode("utf-8")


def encode_representation_object(
    *,
    source: str,
    identifier: str,
    text: str,
    tokens: list[int],
    mime_type: str,
    title: str,
    compressed: bool = True,
    tokenizer_name: str = TOKENIZER_NAME,
) -> bytes:
    """A representations-stage object: ``{"documents": [ParsedDocument]}``."""
    content = b64z(text.encode("utf-8")) if compressed else text
    parsed = {
        "source": source,
        "identifier": identifier,
        "original_uri": identifier,
        "representations": {
            mime_type: {
                "content": content,
                "tokens": {tokenizer_name: tokens},
                "mime_type": mime_type,
            }
        },
        "metadata": {"title": title},
        "success": True,
        "error": None,
    }
    return json.dumps({"documents": [parsed]}).encode("utf-8")


def encode_parquet_object(
    identifier: str, representations: Mapping[str, list[int]], *, compressed: bool = True
) -> bytes:
    """A parquet-stage object: one row ``identifier, representations`` (zlib unless told)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("identifier", pa.string()),
            pa.field("representations", pa.map_(pa.string(), pa.list_(pa.uint32()))),
        ]
    )
    table = pa.table(
        {"identifier": [identifier], "representations": [list(representations.items())]},
        schema=schema,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, write_statistics=False, store_schema=False)
    data = sink.getvalue()
    return zlib.compress(data) if compressed else data


def encode_index_object(
    dataset_id: str, keys: list[str], *, key_prefix: str | None = None, gzipped: bool = True
) -> bytes:
    """An index object; ``gzipped=False`` gives the plain JSON the pipeline writes."""
    body = json.dumps(
        {
            "objects": keys,
            "metadata": {
                "dataset_id": dataset_id,
                "key_prefix": key_prefix,
                "count": len(keys),
                "created_at": CREATED_AT,
            },
        }
    ).encode("utf-8")
    # mtime=0 keeps gzip output byte-identical between runs
    return gzip.compress(body, mtime=0) if gzipped else body


def index_key(dataset_id: str, key_prefix: str | None = None) -> str:
    """``index/{dataset}.json.gz`` or ``index/{dataset}-{prefix with / -> -}.json.gz``."""
    if key_prefix:
        return f"index/{dataset_id}-{key_prefix.strip('/').replace('/', '-')}.json.gz"
    return f"index/{dataset_id}.json.gz"
