"""Test helpers: a deterministic synthetic KL3M bucket served by a local moto S3 server.

* :func:`generate_corpus` builds the objects of a KL3M bucket (all stages, index, optional
  corrupt objects) plus the ground truth a reader must return for them;
* :class:`LocalBucket` / :class:`LocalS3Server` serve such a bucket over HTTP on loopback;
* the pytest plugin (auto-loaded through the ``pytest11`` entry point) provides the
  ``kl3m_server``, ``kl3m_corpus_bucket`` and ``kl3m_bucket`` fixtures.

Serving and tokenizing need the ``local`` extra (``pip install 'kl3m-data-client[local]'``);
importing this package does not. See ``docs/testing.md``.
"""

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
from kl3m_data_client.testing._server import (
    DEFAULT_REGION,
    LocalBucket,
    LocalS3Server,
    ServerError,
)

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
