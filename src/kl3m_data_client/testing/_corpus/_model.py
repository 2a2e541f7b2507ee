"""The corpus data model: what a generated bucket holds and the truth a reader must return."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

Stage = Literal["documents", "representations", "parquet"]
STAGES: Final[tuple[Stage, ...]] = ("documents", "representations", "parquet")

#: Tokenizer key used in representations and parquet rows, as in the real bucket. The ids
#: come from a small BPE tokenizer trained locally (see :func:`corpus_tokenizer`), not from
#: the real Hugging Face tokenizer of that name.
TOKENIZER_NAME: Final = "alea-institute/kl3m-004-128k-cased"
DEFAULT_BUCKET: Final = "data.kl3m.ai"
#: Fixed ``created_at`` of generated index objects (no clock is ever read).
CREATED_AT: Final = "2025-03-01T12:00:00.000000"

MIB = 1 << 20
#: Inflated size of the zlib bomb in the ``dirty`` dataset (> 1 GB and > 1 GiB).
BOMB_INFLATED_SIZE: Final = 1100 * MIB
MAX_DOC_BYTES = 1_000_000

# --------------------------------------------------------------------------------------
# public data model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedDocument:
    """One generated (well-formed) document and what a correct reader must get back."""

    dataset_id: str
    document_id: str
    #: MIME type of the original (the Dublin Core ``format``).
    mime_type: str
    #: The original bytes (``content`` of the documents object, decoded).
    raw: bytes = field(repr=False)
    #: Extracted text (the representation's content).
    text: str = field(repr=False)
    #: ``tokenizer.encode(text).ids`` (equal in the representation and the parquet row).
    tokens: list[int] = field(repr=False)
    #: MIME type of the representation (``text/markdown`` or ``text/plain``).
    representation_mime: str
    #: Stages holding this document (always includes ``"documents"``).
    stages: frozenset[Stage]
    #: ``hashlib.blake2b(raw).hexdigest()``.
    blake2b: str
    title: str
    #: Whether the representation ``content`` is base64+zlib (False: plain text).
    representation_compressed: bool = True
    #: Whether the parquet object is zlib-compressed (False: plain parquet bytes).
    parquet_compressed: bool = True

    @property
    def document_key(self) -> str:
        return f"documents/{self.dataset_id}/{self.document_id}.json"

    @property
    def representation_key(self) -> str:
        return f"representations/{self.dataset_id}/{self.document_id}.json"

    @property
    def parquet_key(self) -> str:
        return f"parquet/{self.dataset_id}/{self.document_id}"

    @property
    def identifier(self) -> str:
        """``identifier`` of the ParsedDocument and of the parquet row."""
        return f"s3://{DEFAULT_BUCKET}/{self.document_key}"

    def key(self, stage: Stage) -> str:
        """The S3 key of this document in ``stage``."""
        if stage == "documents":
            return self.document_key
        if stage == "representations":
            return self.representation_key
        if stage == "parquet":
            return self.parquet_key
        raise ValueError(f"unknown stage: {stage!r}")


@dataclass(frozen=True)
class Corpus:
    """A generated bucket: every object by key plus the ground truth to check readers with."""

    #: S3 key -> object bytes (all stages, the index objects and any corrupt objects).
    objects: dict[str, bytes] = field(repr=False)
    #: Well-formed documents, in key order (corrupt objects are not listed here).
    documents: list[GeneratedDocument] = field(repr=False)
    #: Dataset ids present in the bucket (first-level prefixes under any stage), sorted.
    datasets: tuple[str, ...]
    tokenizer_name: str = TOKENIZER_NAME
    #: Key -> why the object is corrupt (only the ``dirty`` dataset).
    corrupt: dict[str, str] = field(default_factory=dict)
    #: Index keys -> list of representation keys they hold (decoded).
    indexes: dict[str, list[str]] = field(default_factory=dict, repr=False)
    n_documents: int = 0
    seed: int = 0
    dirty: bool = False

    @classmethod
    def from_objects(cls, objects: Mapping[str, bytes]) -> Corpus:
        """Wrap arbitrary objects (no ground truth) so they can be served like a corpus."""
        objs = {k: bytes(objects[k]) for k in sorted(objects)}
        return cls(objects=objs, documents=[], datasets=datasets_of(objs))

    @property
    def total_bytes(self) -> int:
        return sum(len(v) for v in self.objects.values())

    def document(self, dataset_id: str, document_id: str) -> GeneratedDocument:
        """Look a generated document up by dataset and id (``KeyError`` if absent)."""
        for doc in self._by_id().get(dataset_id, ()):
            if doc.document_id == document_id:
                return doc
        raise KeyError((dataset_id, document_id))

    def dataset_documents(self, dataset_id: str) -> list[GeneratedDocument]:
        """The generated documents of one dataset, in key order."""
        return list(self._by_id().get(dataset_id, ()))

    def in_stage(self, stage: Stage, dataset_id: str | None = None) -> list[GeneratedDocument]:
        """Documents that have an object in ``stage`` (optionally of one dataset)."""
        return [
            d
            for d in self.documents
            if stage in d.stages and (dataset_id is None or d.dataset_id == dataset_id)
        ]

    def _by_id(self) -> dict[str, list[GeneratedDocument]]:
        out: dict[str, list[GeneratedDocument]] = {}
        for doc in self.documents:
            out.setdefault(doc.dataset_id, []).append(doc)
        return out


def datasets_of(keys: Iterable[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for key in keys:
        parts = key.split("/", 2)
        if parts[0] in STAGES and len(parts) == 3 and parts[1]:
            found.add(parts[1])
    return tuple(sorted(found))
