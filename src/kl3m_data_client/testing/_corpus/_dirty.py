"""The ``dirty`` dataset: corrupt, hostile and oversized objects, and why each is bad."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import random
import zlib
from typing import Any

from kl3m_data_client.testing._corpus._model import BOMB_INFLATED_SIZE, MIB, TOKENIZER_NAME
from kl3m_data_client.testing._corpus._objects import b64z, encode_document_object


@functools.lru_cache(maxsize=1)
def zlib_bomb(inflated_size: int = BOMB_INFLATED_SIZE) -> bytes:
    """A zlib stream of ``inflated_size`` zero bytes, built without allocating that size.

    Zero chunks are streamed through ``zlib.compressobj`` with full flushes, which make every
    chunk's compressed block identical; once that is observed the block is repeated instead of
    recompressing another gigabyte. The adler32 trailer of ``n`` zeros is ``(n % 65521) << 16 | 1``.
    """
    chunk_size = MIB
    if inflated_size % chunk_size or inflated_size < 4 * chunk_size:
        raise ValueError("inflated_size must be a multiple of 1 MiB and at least 4 MiB")
    n_chunks = inflated_size // chunk_size
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, header/trailer added below
    chunk = bytes(chunk_size)
    blocks = [comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH) for _ in range(3)]
    body: list[bytes] = list(blocks)
    if blocks[1] == blocks[2]:
        body.extend([blocks[2]] * (n_chunks - 3))
    else:  # pragma: no cover - a zlib that does not reset its state on full flush
        body.extend(
            comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH) for _ in range(n_chunks - 3)
        )
    body.append(comp.flush(zlib.Z_FINISH))
    adler = ((inflated_size % 65521) << 16) | 1
    return b"\x78\xda" + b"".join(body) + adler.to_bytes(4, "big")


#: (key, object bytes, why it is corrupt)
_Bad = tuple[str, bytes, str]
_GARBAGE_SEED = "kl3m-dirty"


def _corrupt_document(content: str, **over: Any) -> bytes:
    """A documents-stage object whose ``content`` (or an ``over`` field) is bad."""
    obj: dict[str, Any] = {
        "title": "Corrupt",
        "format": "text/html",
        "content": content,
        "id": "x",
        "size": 10,
        "dataset_id": "dirty",
    }
    obj.update(over)
    return json.dumps(obj, indent=4).encode("utf-8")


def _bad_documents(bomb: bytes) -> list[_Bad]:
    raw = b"<html><body><p>A well-formed document behind a hostile key.</p></body></html>"
    dc = {
        "title": "Escape",
        "format": "text/html",
        "identifier": "https://example.gov/escape",
        "source": "https://example.gov/",
    }
    return [
        (
            "documents/dirty/bad-json.json",
            b'{\n    "title": "Truncated",\n    "content": "eJz',
            "invalid JSON (truncated object)",
        ),
        ("documents/dirty/not-an-object.json", b"[1, 2, 3]", "JSON is not an object"),
        (
            "documents/dirty/bad-base64.json",
            _corrupt_document("@@@ not base64 @@@"),
            "content is not valid base64",
        ),
        (
            "documents/dirty/bad-zlib.json",
            _corrupt_document(base64.b64encode(b"this is not a zlib stream").decode()),
            "content is base64 but not zlib",
        ),
        (
            "documents/dirty/blake2b-mismatch.json",
            _corrupt_document(
                b64z(b"hello"), blake2b=hashlib.blake2b(b"other").hexdigest(), size=5
            ),
            "blake2b does not match the decoded content",
        ),
        ("documents/dirty/empty.json", b"", "empty object (0 bytes)"),
        (
            "documents/dirty/zlib-bomb.json",
            _corrupt_document(base64.b64encode(bomb).decode("ascii"), size=len(bomb)),
            f"zlib bomb: content inflates to {BOMB_INFLATED_SIZE} bytes",
        ),
        (
            "documents/dirty/../../escape.json",
            encode_document_object(dc, raw, document_id="../../escape", dataset_id="dirty"),
            "key has '..' path segments (path traversal if the id becomes a file path)",
        ),
    ]


def _bad_representations() -> list[_Bad]:
    wrong_types = {
        "documents": [
            {
                "source": "x",
                "identifier": "x",
                "representations": {
                    "text/markdown": {
                        "content": b64z(b"x"),
                        "tokens": {TOKENIZER_NAME: "not a list"},
                        "mime_type": "text/markdown",
                    }
                },
            }
        ]
    }
    return [
        (
            "representations/dirty/bad-json.json",
            b'{"documents": [{"source": ',
            "invalid JSON (truncated object)",
        ),
        (
            "representations/dirty/no-documents.json",
            b'{"documents": []}',
            "no ParsedDocument in 'documents'",
        ),
        (
            "representations/dirty/wrong-types.json",
            json.dumps(wrong_types).encode(),
            "tokens are a string, not a list of ints",
        ),
    ]


def _bad_parquet(bomb: bytes, garbage: bytes) -> list[_Bad]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrong_schema = io.BytesIO()
    pq.write_table(pa.table({"identifier": [1], "tokens": [[1, 2, 3]]}), wrong_schema)
    return [
        (
            "parquet/dirty/corrupt-parquet",
            zlib.compress(b"PAR1" + garbage + b"PAR1"),
            "zlib is fine but the payload is not a parquet file",
        ),
        ("parquet/dirty/bad-zlib", b"\x78\x9c" + garbage, "not a zlib stream nor parquet"),
        (
            "parquet/dirty/wrong-schema",
            zlib.compress(wrong_schema.getvalue()),
            "parquet with an unexpected schema",
        ),
        (
            "parquet/dirty/zlib-bomb",
            bomb,
            f"zlib bomb: {len(bomb)} bytes inflating to {BOMB_INFLATED_SIZE} bytes",
        ),
    ]


def dirty_objects() -> tuple[dict[str, bytes], dict[str, str]]:
    """The objects of the ``dirty`` dataset (key -> bytes) and why each is corrupt."""
    bomb = zlib_bomb()
    garbage = bytes(random.Random(_GARBAGE_SEED).randbytes(2048))
    items = [
        *_bad_documents(bomb),
        *_bad_representations(),
        *_bad_parquet(bomb, garbage),
        ("index/dirty.json.gz", b"\x1f\x8b\x08\x00" + garbage, "corrupt gzip index"),
    ]
    objects = {k: v for k, v, _ in items}
    corrupt = {k: why for k, _, why in items}
    return objects, corrupt
