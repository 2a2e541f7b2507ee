"""Deterministic generator of a synthetic KL3M bucket (see ``docs/testing.md``).

Every object is written in the exact formats of the real ``data.kl3m.ai`` bucket:

* ``documents/{dataset}/{id}.json``: Dublin Core JSON (``indent=4``, only non-empty fields),
  ``content = base64(zlib(raw))``, ``blake2b``, ``size``;
* ``representations/{dataset}/{id}.json``: ``{"documents": [ParsedDocument]}`` with the text
  as ``base64(zlib(utf8))`` (a few are left as plain text, as some writers do) and token ids
  from a byte-level BPE tokenizer trained locally on generated text;
* ``parquet/{dataset}/{id}``: ``zlib(parquet)`` with schema
  ``identifier: string, representations: map<string, list<uint32>>`` (a few uncompressed);
* ``index/{dataset}.json.gz``: gzip JSON or plain JSON under the same kind of key.

The generator uses no clock and no global random state: the same arguments give
byte-identical objects in every process (for a given zlib / pyarrow / tokenizers version).
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Final

from kl3m_data_client.testing._corpus._dirty import dirty_objects, zlib_bomb
from kl3m_data_client.testing._corpus._model import (
    BOMB_INFLATED_SIZE,
    CREATED_AT,
    DEFAULT_BUCKET,
    STAGES,
    TOKENIZER_NAME,
    Corpus,
    GeneratedDocument,
    Stage,
    datasets_of,
)
from kl3m_data_client.testing._corpus._objects import (
    encode_document_object,
    encode_index_object,
    encode_parquet_object,
    encode_representation_object,
    index_key,
)
from kl3m_data_client.testing._corpus._plan import SOURCES, Plan, dublin_core, plan_documents
from kl3m_data_client.testing._corpus._text import (
    corpus_tokenizer,
    make_title,
    paragraph_pool,
    render,
    text_blocks,
)

__all__ = [
    "BOMB_INFLATED_SIZE",
    "CREATED_AT",
    "DEFAULT_BUCKET",
    "STAGES",
    "TOKENIZER_NAME",
    "Corpus",
    "GeneratedDocument",
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


@dataclass(frozen=True)
class _Rendered:
    """One planned document, rendered: the original, its text, its title and metadata."""

    plan: Plan
    raw: bytes
    text: str
    title: str
    dublin_core: dict[str, Any]


def _render_all(plans: list[Plan], seed: int) -> list[_Rendered]:
    pool = paragraph_pool(seed)
    rendered: list[_Rendered] = []
    for i, plan in enumerate(plans):
        rng = random.Random(f"kl3m-doc:{seed}:{i}")
        title = make_title(plan.dataset_id, rng, i)
        blocks = text_blocks(rng, pool, plan.target)
        raw, text = render(plan.mime_type, title, blocks, rng, plan.target)
        dc = dublin_core(plan.dataset_id, plan.document_id, plan.mime_type, title, rng)
        rendered.append(_Rendered(plan, raw, text, title, dc))
    return rendered


def _tokenize(rendered: list[_Rendered]) -> list[list[int]]:
    """The token ids of each rendered text (empty for documents without a representation)."""
    tokenizer = corpus_tokenizer()
    need_tokens = [r.text for r in rendered if "representations" in r.plan.stages]
    # encode_batch_fast (tokenizers >= 0.20) skips offsets: same ids, about twice as fast
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encoded = iter(encode(need_tokens, add_special_tokens=False))
    return [list(next(encoded).ids) if "representations" in r.plan.stages else [] for r in rendered]


def _generated(r: _Rendered, tokens: list[int]) -> GeneratedDocument:
    plan = r.plan
    return GeneratedDocument(
        dataset_id=plan.dataset_id,
        document_id=plan.document_id,
        mime_type=plan.mime_type,
        raw=r.raw,
        text=r.text,
        tokens=tokens,
        representation_mime="text/plain" if plan.mime_type == "text/plain" else "text/markdown",
        stages=plan.stages,
        blake2b=hashlib.blake2b(r.raw).hexdigest(),
        title=r.title,
        representation_compressed=plan.rep_compressed,
        parquet_compressed=plan.parquet_compressed,
    )


def _stage_objects(doc: GeneratedDocument, r: _Rendered, sequence: int) -> dict[str, bytes]:
    """The objects of ``doc`` in each of its stages (``sequence``: its 1-based position)."""
    # cap counts characters, not bytes, in ``size`` (a hint only, as in the real bucket)
    size = len(doc.text) if doc.dataset_id == "cap" else len(doc.raw)
    extra: dict[str, Any] | None = None
    if doc.dataset_id == "fdlp":
        extra = {"sequence": sequence, "ocr": doc.mime_type == "application/pdf"}
    objects = {
        doc.document_key: encode_document_object(
            r.dublin_core,
            doc.raw,
            document_id=doc.document_id,
            dataset_id=doc.dataset_id,
            size=size,
            extra=extra,
        )
    }
    if "representations" in doc.stages:
        objects[doc.representation_key] = encode_representation_object(
            source=SOURCES[doc.dataset_id][0],
            identifier=doc.identifier,
            text=doc.text,
            tokens=doc.tokens,
            mime_type=doc.representation_mime,
            title=doc.title,
            compressed=doc.representation_compressed,
        )
    if "parquet" in doc.stages:
        objects[doc.parquet_key] = encode_parquet_object(
            doc.identifier, {doc.representation_mime: doc.tokens}, compressed=doc.parquet_compressed
        )
    return objects


def _build_documents(
    n_documents: int, seed: int
) -> tuple[list[GeneratedDocument], dict[str, bytes]]:
    rendered = _render_all(plan_documents(n_documents, seed), seed)
    objects: dict[str, bytes] = {}
    documents: list[GeneratedDocument] = []
    tokenized = zip(rendered, _tokenize(rendered), strict=True)
    for sequence, (r, tokens) in enumerate(tokenized, start=1):
        doc = _generated(r, tokens)
        documents.append(doc)
        objects.update(_stage_objects(doc, r, sequence))
    documents.sort(key=lambda d: d.document_key)
    return documents, objects


def _indexes(documents: list[GeneratedDocument]) -> dict[str, tuple[str, str | None, list[str]]]:
    """index key -> (dataset, key_prefix, representation keys)."""
    by_ds: dict[str, list[str]] = {}
    for doc in documents:
        if "representations" in doc.stages:
            by_ds.setdefault(doc.dataset_id, []).append(doc.representation_key)
    out: dict[str, tuple[str, str | None, list[str]]] = {}
    for ds, keys in by_ds.items():
        keys.sort()
        out[index_key(ds)] = (ds, None, keys)
    usc = by_ds.get("usc")
    if usc:
        # a sub-prefix index: the first two folders of the first usc document
        first = usc[0][len("representations/usc/") :].split("/")
        prefix = "/".join(first[:2]) if len(first) > 2 else first[0]
        sub = [k for k in usc if k.startswith(f"representations/usc/{prefix}/")]
        out[index_key("usc", prefix)] = ("usc", prefix, sub)
    return out


# Which datasets get a plain-JSON index under the .json.gz key (the pipeline's variant).
_PLAIN_INDEX_DATASETS: Final = frozenset({"cap", "ecfr"})


def generate_corpus(n_documents: int = 200, *, seed: int = 0, dirty: bool = False) -> Corpus:
    """Generate a deterministic synthetic KL3M bucket.

    Args:
        n_documents: number of well-formed documents (spread over ``usc``, ``cap``, ``fdlp``,
            ``ecfr`` and ``dotgov``; the first five go one to each dataset).
        seed: any int; the same ``(n_documents, seed, dirty)`` gives byte-identical objects.
        dirty: add a ``dirty`` dataset of corrupt objects, listed in :attr:`Corpus.corrupt`.

    Results are cached per process (treat the returned corpus as read-only).
    """
    if n_documents < 0:
        raise ValueError("n_documents must be >= 0")
    return _generate_cached(int(n_documents), int(seed), bool(dirty))


@functools.lru_cache(maxsize=8)
def _generate_cached(n_documents: int, seed: int, dirty: bool) -> Corpus:
    documents, objects = _build_documents(n_documents, seed)
    indexes: dict[str, list[str]] = {}
    for key, (ds, prefix, keys) in _indexes(documents).items():
        plain = ds in _PLAIN_INDEX_DATASETS
        objects[key] = encode_index_object(ds, keys, key_prefix=prefix, gzipped=not plain)
        indexes[key] = keys
    corrupt: dict[str, str] = {}
    if dirty:
        bad, corrupt = dirty_objects()
        objects.update(bad)
    ordered = {k: objects[k] for k in sorted(objects)}
    return Corpus(
        objects=ordered,
        documents=documents,
        datasets=datasets_of(ordered),
        corrupt=dict(sorted(corrupt.items())),
        indexes=indexes,
        n_documents=n_documents,
        seed=seed,
        dirty=dirty,
    )
