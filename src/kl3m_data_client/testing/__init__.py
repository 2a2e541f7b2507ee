"""Test helpers: a deterministic synthetic KL3M bucket served by a local moto S3 server.

* :func:`generate_corpus` builds the objects of a KL3M bucket (all stages, index, optional
  corrupt objects) plus the ground truth a reader must return for them;
* :class:`LocalBucket` / :class:`LocalS3Server` serve such a bucket over HTTP on loopback;
* the pytest plugin (auto-loaded through the ``pytest11`` entry point) provides the
  ``kl3m_server``, ``kl3m_corpus_bucket`` and ``kl3m_bucket`` fixtures.

Serving and tokenizing need the ``local`` extra (``pip install 'kl3m-data-client[local]'``);
importing this package does not. See ``docs/testing.md``.

The names are imported on first use (PEP 562), so that loading the pytest plugin, which
lives in this package, imports neither the server modules (moto, aiobotocore) nor the
corpus generator until a fixture needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kl3m_data_client.testing._bucket import LocalBucket
    from kl3m_data_client.testing._corpus import (
        BOMB_INFLATED_SIZE,
        CREATED_AT,
        DEFAULT_BUCKET,
        STAGES,
        TOKENIZER_NAME,
        Corpus,
        GeneratedDocument,
        Stage,
        corpus_tokenizer,
        encode_document_object,
        encode_index_object,
        encode_parquet_object,
        encode_representation_object,
        generate_corpus,
        index_key,
        zlib_bomb,
    )
    from kl3m_data_client.testing._server import DEFAULT_REGION, LocalS3Server, ServerError

__all__ = [
    "BOMB_INFLATED_SIZE",
    "CREATED_AT",
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "STAGES",
    "TOKENIZER_NAME",
    "Corpus",
    "GeneratedDocument",
    "LocalBucket",
    "LocalS3Server",
    "ServerError",
    "Stage",
    "corpus_tokenizer",
    "encode_document_object",
    "encode_index_object",
    "encode_parquet_object",
    "encode_representation_object",
    "generate_corpus",
    "index_key",
    "zlib_bomb",
]

_HOMES = {
    "DEFAULT_REGION": "_server",
    "LocalBucket": "_bucket",
    "LocalS3Server": "_server",
    "ServerError": "_server",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then cache it here."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOMES.get(name, '_corpus')}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
