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

import base64
import functools
import gzip
import hashlib
import html
import io
import json
import math
import random
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "CREATED_AT",
    "DEFAULT_BUCKET",
    "STAGES",
    "TOKENIZER_NAME",
    "Corpus",
    "GeneratedDocument",
    "Stage",
    "corpus_tokenizer",
    "generate_corpus",
]

Stage = Literal["documents", "representations", "parquet"]
STAGES: Final[tuple[Stage, ...]] = ("documents", "representations", "parquet")

#: Tokenizer key used in representations and parquet rows, as in the real bucket. The ids
#: come from a small BPE tokenizer trained locally (see :func:`corpus_tokenizer`), not from
#: the real Hugging Face tokenizer of that name.
TOKENIZER_NAME: Final = "alea-institute/kl3m-004-128k-cased"
DEFAULT_BUCKET: Final = "data.kl3m.ai"
#: Fixed ``created_at`` of generated index objects (no clock is ever read).
CREATED_AT: Final = "2025-03-01T12:00:00.000000"

_MIB = 1 << 20
#: Inflated size of the zlib bomb in the ``dirty`` dataset (> 1 GB and > 1 GiB).
BOMB_INFLATED_SIZE: Final = 1100 * _MIB
_MAX_DOC_BYTES = 1_000_000


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
        return cls(objects=objs, documents=[], datasets=_datasets_of(objs))

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


def _datasets_of(keys: Iterable[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for key in keys:
        parts = key.split("/", 2)
        if parts[0] in STAGES and len(parts) == 3 and parts[1]:
            found.add(parts[1])
    return tuple(sorted(found))


# --------------------------------------------------------------------------------------
# text generation
# --------------------------------------------------------------------------------------

_WORDS_TEXT = (
    "the court shall any person who under color of statute ordinance regulation custom or "
    "usage of state territory subjects causes to be subjected citizen United States other "
    "within jurisdiction thereof deprivation rights privileges immunities secured by "
    "Constitution and laws liable party injured in action at law suit equity proper "
    "proceeding for redress except that brought against judicial officer act omission taken "
    "such officer's capacity injunctive relief not granted unless declaratory decree was "
    "violated unavailable purposes this section Act Congress applicable exclusively District "
    "Columbia considered be Secretary may prescribe regulations necessary carry out "
    "provisions title subsection paragraph subparagraph clause notwithstanding provided "
    "further amount appropriated fiscal year agency head department report committees "
    "House Representatives Senate plaintiff defendant appellant appellee petitioner "
    "respondent judgment affirmed reversed remanded opinion dissenting concurring motion "
    "dismiss summary jurisdiction venue contract tort negligence damages reasonable "
    "standard review de novo abuse discretion evidence record finding fact conclusion "
    "Federal Register Code Regulations rule notice comment effective date amendment "
    "compliance enforcement penalty civil criminal violation each day continuing "
    "application permit license fee schedule hearing administrative judge appeal board "
    "public private entity corporation partnership trust estate beneficiary property "
    "interest tax income credit deduction return filing period employer employee wage "
    "benefit plan insurance coverage health safety environmental protection water air "
    "emissions standard program grant assistance eligible recipient State local tribal"
)
_WORDS = tuple(_WORDS_TEXT.split())
_NAMES_TEXT = (
    "Smith Jones Garcia Miller Davis Rodríguez Martínez Hernández López Wilson Anderson "
    "Thomas Taylor Moore Jackson Martin Lee Pérez Thompson White Harris Sánchez Clark "
    "Ramírez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyễn Hill Flores "
    "Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts O'Brien Müller"
)
_NAMES = tuple(_NAMES_TEXT.split())
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
_HOSTS = (
    "www.uscourts.gov",
    "purl.fdlp.gov",
    "www.gpo.gov",
    "www.justice.gov",
    "www.ftc.gov",
    "www.sec.gov",
    "www.epa.gov",
    "acl.gov",
)


def _citation(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.randint(1, 54)} U.S.C. § {rng.randint(1, 9999)}"
    if kind == 1:
        return f"{rng.randint(1, 50)} C.F.R. § {rng.randint(1, 999)}.{rng.randint(1, 99)}"
    if kind == 2:
        return (
            f"{rng.choice(_NAMES)} v. {rng.choice(_NAMES)}, {rng.randint(1, 999)} F.3d "
            f"{rng.randint(1, 1500)} ({rng.randint(1, 11)}th Cir. {rng.randint(1990, 2024)})"
        )
    if kind == 3:
        return f"Pub. L. No. {rng.randint(90, 118)}–{rng.randint(1, 400)}"
    if kind == 4:
        return f"{rng.randint(1, 600)} U.S. {rng.randint(1, 999)} ({rng.randint(1850, 2024)})"
    if kind == 5:
        return "42 U.S.C. § 1983"
    return f"{rng.randint(1, 90)} Fed. Reg. {rng.randint(1, 99999)}"


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(8, 24))
    if rng.random() < 0.35:
        words.insert(rng.randrange(len(words)), f"({_citation(rng)})")
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words)), f"“{rng.choice(_WORDS)} {rng.choice(_WORDS)}”")
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", ";", ":"))


def _paragraph(rng: random.Random) -> str:
    marker = ""
    if rng.random() < 0.5:
        marker = f"({chr(ord('a') + rng.randrange(8))}) "
    return marker + " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def _heading_words(rng: random.Random, n: int) -> str:
    return " ".join(w[0].upper() + w[1:] for w in rng.choices(_WORDS, k=n))


@functools.lru_cache(maxsize=16)
def _paragraph_pool(seed: int) -> tuple[str, ...]:
    rng = random.Random(f"kl3m-pool:{seed}")
    return tuple(_paragraph(rng) for _ in range(300))


# --------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------

_TOKENIZER_LOCK = threading.Lock()
_TOKENIZER: list[Any] = []


def corpus_tokenizer() -> Any:
    """The byte-level BPE ``tokenizers.Tokenizer`` whose ids the corpus carries.

    Trained once per process on generated legal text (no network, deterministic); requires the
    ``local`` extra (``tokenizers``). ``corpus_tokenizer().decode(doc.tokens) == doc.text``.
    """
    with _TOKENIZER_LOCK:
        if not _TOKENIZER:
            _TOKENIZER.append(_train_tokenizer())
        return _TOKENIZER[0]


def _train_tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kl3m_data_client.testing needs the 'local' extra: "
            "pip install 'kl3m-data-client[local]'"
        ) from exc

    rng = random.Random("kl3m-tokenizer")
    training = list(_paragraph_pool(-1))
    training += [_citation(rng) for _ in range(2000)]
    training += [f"§ {rng.randint(1, 9999)}. {_heading_words(rng, 4)}" for _ in range(500)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training, trainer=trainer)
    return tokenizer


# --------------------------------------------------------------------------------------
# object encoders (the formats of docs/format.md)
# --------------------------------------------------------------------------------------

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


def _b64z(data: bytes) -> str:
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
    obj["content"] = _b64z(raw)
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
    content = _b64z(text.encode("utf-8")) if compressed else text
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


# --------------------------------------------------------------------------------------
# documents
# --------------------------------------------------------------------------------------

_DATASETS: Final = ("usc", "cap", "fdlp", "ecfr", "dotgov")
_DATASET_WEIGHTS: Final = (30, 25, 20, 15, 10)
_SOURCES: Final = {
    "usc": ("https://uscode.house.gov/", "Office of the Law Revision Counsel"),
    "cap": ("https://static.case.law/", "Harvard Law School"),
    "fdlp": ("https://permanent.fdlp.gov/", "U.S. Government Publishing Office"),
    "ecfr": ("https://www.ecfr.gov/", "Office of the Federal Register"),
    "dotgov": ("https://www.usa.gov/", ""),
}
# Awkward path components: spaces, unicode, brackets, '+', literal '%2F', '='.
_AWKWARD = (
    "section {n} [a]+b",
    "pct%2Fslash {n}",
    "§ {n} Übersicht",
    "key=value {n}",
    "naïve café {n}",
    "a+b=c [{n}]",
)


@dataclass
class _Plan:
    dataset_id: str
    document_id: str
    mime_type: str
    target: int
    stages: frozenset[Stage]
    rep_compressed: bool
    parquet_compressed: bool


def _target_size(rng: random.Random) -> int:
    if rng.random() < 0.015:  # the long tail: log-uniform 50 KB .. 1 MB
        return int(math.exp(rng.uniform(math.log(50_000), math.log(_MAX_DOC_BYTES))))
    size = int(rng.lognormvariate(8.0, 1.15))  # median ~3 KB
    return max(1024, min(size, _MAX_DOC_BYTES))


def _document_id(dataset_id: str, i: int, rng: random.Random) -> str:
    awkward = rng.random() < 0.18
    leaf_tmpl = rng.choice(_AWKWARD) if awkward else ""
    if dataset_id == "usc":
        title, chapter = rng.randint(1, 54), rng.randint(1, 40)
        leaf = leaf_tmpl.format(n=i) if awkward else f"section-{i:06d}"
        sub = f"subchapter-{rng.choice(_ROMAN).lower()}/" if rng.random() < 0.3 else ""
        return f"title-{title:02d}/chapter-{chapter}/{sub}{leaf}"
    if dataset_id == "cap":
        return str(1000 + i)
    if dataset_id == "fdlp":
        leaf = leaf_tmpl.format(n=i) if awkward else f"doc-{i:06d}"
        lps, host, pkg = 100000 + rng.randrange(20) * 7, rng.choice(_HOSTS), rng.randint(1, 30)
        return f"LPS{lps}/{host}/pkg{pkg}/{leaf}"
    if dataset_id == "ecfr":
        title, part = rng.randint(1, 50), rng.randint(1, 999)
        leaf = leaf_tmpl.format(n=i) if awkward else f"section-{part}.{i}"
        return f"title-{title}/part-{part}/{leaf}"
    host = rng.choice(_HOSTS)
    leaf = leaf_tmpl.format(n=i) if awkward else f"page-{i}.html"
    if rng.random() < 0.15:
        # an id that itself ends in ".json": its key ends in ".json.json"
        leaf = f"api/data-{i}.json"
    return (
        f"{host}/{'/'.join(rng.choice(_WORDS) for _ in range(rng.randint(0, 3)))}/{leaf}".replace(
            "//", "/"
        )
    )


def _mime_for(dataset_id: str, rng: random.Random) -> str:
    if dataset_id == "usc":
        return rng.choice(("text/html", "text/html", "application/xhtml+xml"))
    if dataset_id == "cap":
        return rng.choice(("text/html", "text/plain"))
    if dataset_id == "fdlp":
        return rng.choice(("text/html", "application/pdf", "application/pdf"))
    if dataset_id == "ecfr":
        return "application/xhtml+xml"
    return rng.choice(("text/html", "text/html", "text/plain", "application/pdf"))


def _plan(n_documents: int, seed: int) -> list[_Plan]:
    rng = random.Random(f"kl3m-corpus:{seed}")
    plans: list[_Plan] = []
    used: set[tuple[str, str]] = set()
    big = n_documents // 2 if n_documents >= 20 else -1
    for i in range(n_documents):
        dataset_id = (
            _DATASETS[i]
            if i < len(_DATASETS)
            else rng.choices(_DATASETS, weights=_DATASET_WEIGHTS)[0]
        )
        document_id = _document_id(dataset_id, i, rng)
        while (dataset_id, document_id) in used:  # pragma: no cover - ids embed i
            document_id += "-dup"
        used.add((dataset_id, document_id))
        mime = _mime_for(dataset_id, rng)
        target = _target_size(rng)
        if i == big:
            target = _MAX_DOC_BYTES - rng.randrange(50_000)
        stages: set[Stage] = {"documents"}
        if dataset_id in ("usc", "cap"):
            stages |= {"representations", "parquet"}
        elif dataset_id == "fdlp":
            # incomplete: some documents never got a representation, some no parquet
            if rng.random() < 0.85:
                stages.add("representations")
                if rng.random() < 0.8:
                    stages.add("parquet")
        elif dataset_id == "ecfr" and rng.random() < 0.75:
            stages.add("representations")
            if rng.random() < 0.5:
                stages.add("parquet")
        # dotgov: documents stage only
        plans.append(
            _Plan(
                dataset_id=dataset_id,
                document_id=document_id,
                mime_type=mime,
                target=target,
                stages=frozenset(stages),
                rep_compressed=rng.random() >= 0.1,
                parquet_compressed=rng.random() >= 0.1,
            )
        )
    # make sure each incomplete variant occurs at least once when there are enough documents
    fdlp = [p for p in plans if p.dataset_id == "fdlp"]
    if len(fdlp) >= 3:
        fdlp[0].stages = frozenset({"documents"})
        fdlp[1].stages = frozenset({"documents", "representations"})
        fdlp[2].stages = frozenset(STAGES)
    return plans


def _title(dataset_id: str, rng: random.Random, i: int) -> str:
    if dataset_id == "cap":
        return (
            f"{rng.choice(_NAMES)} v. {rng.choice(_NAMES)}, {rng.randint(1, 600)} U.S. "
            f"{rng.randint(1, 999)} ({rng.randint(1850, 2024)})"
        )
    if dataset_id == "ecfr":
        return f"§ {rng.randint(1, 999)}.{i} {_heading_words(rng, 3)}."
    if dataset_id == "dotgov":
        return f"{_heading_words(rng, 4)} | {rng.choice(_HOSTS)}"
    return f"§ {rng.randint(1, 9999)}. {_heading_words(rng, rng.randint(2, 5))}"


def _blocks(rng: random.Random, pool: tuple[str, ...], target: int) -> list[tuple[str, str]]:
    """(kind, text) blocks whose markdown rendering is about ``target`` characters."""
    blocks: list[tuple[str, str]] = []
    size = 0
    n_heading = 0
    while size < target:
        if rng.random() < 0.12:
            n_heading += 1
            text = f"({n_heading}) {_heading_words(rng, rng.randint(2, 6))}"
            kind = "h2"
        else:
            text = pool[rng.randrange(len(pool))]
            kind = "p"
        blocks.append((kind, text))
        size += len(text) + 5
    return blocks


def _render(
    mime: str, title: str, blocks: list[tuple[str, str]], rng: random.Random, target: int
) -> tuple[bytes, str]:
    """(raw original bytes, extracted text) for one document."""
    if mime == "text/plain":
        text = title + "\n\n" + "\n\n".join(t for _, t in blocks) + "\n"
        return text.encode("utf-8"), text
    markdown = (
        f"# {title}\n\n"
        + "\n\n".join(f"## {t}" if kind == "h2" else t for kind, t in blocks)
        + "\n"
    )
    if mime == "application/pdf":
        # Binary original (never valid UTF-8); the representation holds the "extracted" text.
        header = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        stream = rng.randbytes(max(256, target - 200))
        pdf = (
            header
            + b"2 0 obj\n<< /Filter /FlateDecode >>\nstream\n"
            + stream
            + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
        )
        return pdf, markdown
    body = "\n".join(
        f"<h2>{html.escape(t)}</h2>" if kind == "h2" else f"<p>{html.escape(t)}</p>"
        for kind, t in blocks
    )
    if mime == "application/xhtml+xml":
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>'
            f"{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n"
        )
    else:
        doc = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/><title>'
            f"{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n</body></html>\n"
        )
    return doc.encode("utf-8"), markdown


def _dublin_core(
    dataset_id: str, document_id: str, mime: str, title: str, rng: random.Random
) -> dict[str, Any]:
    source, publisher = _SOURCES[dataset_id]
    if dataset_id == "dotgov":
        identifier = f"https://{document_id}"
        publisher = document_id.split("/", 1)[0]
    elif dataset_id == "fdlp":
        identifier = f"{source}{document_id}"
    else:
        identifier = f"{source}{document_id}"
    dc: dict[str, Any] = {
        "title": title,
        "description": title if rng.random() < 0.6 else "",
        "publisher": publisher,
        "creator": [rng.choice(_NAMES)] if rng.random() < 0.3 else [],
        "subject": rng.sample(["Securities", "Civil Rights", "Tax", "Environment"], 2)
        if rng.random() < 0.3
        else [],
        "date": f"{rng.randint(1950, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        "T00:00:00",
        "format": mime,
        "identifier": identifier,
        "source": source,
        "language": "en",
        "license": "Public Domain" if dataset_id != "dotgov" else "",
        "bibliographic_citation": title if dataset_id == "cap" else "",
    }
    return dc


def _build_documents(
    n_documents: int, seed: int
) -> tuple[list[GeneratedDocument], dict[str, bytes]]:
    tokenizer = corpus_tokenizer()
    pool = _paragraph_pool(seed)
    plans = _plan(n_documents, seed)
    rendered: list[tuple[_Plan, bytes, str, str, dict[str, Any]]] = []
    for i, plan in enumerate(plans):
        rng = random.Random(f"kl3m-doc:{seed}:{i}")
        title = _title(plan.dataset_id, rng, i)
        blocks = _blocks(rng, pool, plan.target)
        raw, text = _render(plan.mime_type, title, blocks, rng, plan.target)
        dc = _dublin_core(plan.dataset_id, plan.document_id, plan.mime_type, title, rng)
        rendered.append((plan, raw, text, title, dc))

    need_tokens = [r[2] for r in rendered if "representations" in r[0].stages]
    # encode_batch_fast (tokenizers >= 0.20) skips offsets: same ids, about twice as fast
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encoded = iter(encode(need_tokens, add_special_tokens=False))

    objects: dict[str, bytes] = {}
    documents: list[GeneratedDocument] = []
    for plan, raw, text, title, dc in rendered:
        has_rep = "representations" in plan.stages
        tokens: list[int] = list(next(encoded).ids) if has_rep else []
        rep_mime = "text/plain" if plan.mime_type == "text/plain" else "text/markdown"
        doc = GeneratedDocument(
            dataset_id=plan.dataset_id,
            document_id=plan.document_id,
            mime_type=plan.mime_type,
            raw=raw,
            text=text,
            tokens=tokens,
            representation_mime=rep_mime,
            stages=plan.stages,
            blake2b=hashlib.blake2b(raw).hexdigest(),
            title=title,
            representation_compressed=plan.rep_compressed,
            parquet_compressed=plan.parquet_compressed,
        )
        documents.append(doc)
        # cap counts characters, not bytes, in ``size`` (a hint only, as in the real bucket)
        size = len(text) if plan.dataset_id == "cap" else len(raw)
        extra: dict[str, Any] | None = None
        if plan.dataset_id == "fdlp":
            extra = {"sequence": len(documents), "ocr": plan.mime_type == "application/pdf"}
        objects[doc.document_key] = encode_document_object(
            dc,
            raw,
            document_id=doc.document_id,
            dataset_id=doc.dataset_id,
            size=size,
            extra=extra,
        )
        if has_rep:
            objects[doc.representation_key] = encode_representation_object(
                source=_SOURCES[doc.dataset_id][0],
                identifier=doc.identifier,
                text=text,
                tokens=tokens,
                mime_type=rep_mime,
                title=title,
                compressed=doc.representation_compressed,
            )
        if "parquet" in plan.stages:
            objects[doc.parquet_key] = encode_parquet_object(
                doc.identifier, {rep_mime: tokens}, compressed=doc.parquet_compressed
            )
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


# --------------------------------------------------------------------------------------
# dirty dataset
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def zlib_bomb(inflated_size: int = BOMB_INFLATED_SIZE) -> bytes:
    """A zlib stream of ``inflated_size`` zero bytes, built without allocating that size.

    Zero chunks are streamed through ``zlib.compressobj`` with full flushes, which make every
    chunk's compressed block identical; once that is observed the block is repeated instead of
    recompressing another gigabyte. The adler32 trailer of ``n`` zeros is ``(n % 65521) << 16 | 1``.
    """
    chunk_size = _MIB
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


def _dirty_objects() -> tuple[dict[str, bytes], dict[str, str]]:
    raw = b"<html><body><p>A well-formed document behind a hostile key.</p></body></html>"
    dc = {
        "title": "Escape",
        "format": "text/html",
        "identifier": "https://example.gov/escape",
        "source": "https://example.gov/",
    }

    def doc_json(content: str, **over: Any) -> bytes:
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

    bomb = zlib_bomb()
    garbage = bytes(random.Random("kl3m-dirty").randbytes(2048))
    wrong_schema = io.BytesIO()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"identifier": [1], "tokens": [[1, 2, 3]]}), wrong_schema)

    items: list[tuple[str, bytes, str]] = [
        (
            "documents/dirty/bad-json.json",
            b'{\n    "title": "Truncated",\n    "content": "eJz',
            "invalid JSON (truncated object)",
        ),
        ("documents/dirty/not-an-object.json", b"[1, 2, 3]", "JSON is not an object"),
        (
            "documents/dirty/bad-base64.json",
            doc_json("@@@ not base64 @@@"),
            "content is not valid base64",
        ),
        (
            "documents/dirty/bad-zlib.json",
            doc_json(base64.b64encode(b"this is not a zlib stream").decode()),
            "content is base64 but not zlib",
        ),
        (
            "documents/dirty/blake2b-mismatch.json",
            doc_json(_b64z(b"hello"), blake2b=hashlib.blake2b(b"other").hexdigest(), size=5),
            "blake2b does not match the decoded content",
        ),
        ("documents/dirty/empty.json", b"", "empty object (0 bytes)"),
        (
            "documents/dirty/zlib-bomb.json",
            doc_json(base64.b64encode(bomb).decode("ascii"), size=len(bomb)),
            f"zlib bomb: content inflates to {BOMB_INFLATED_SIZE} bytes",
        ),
        (
            "documents/dirty/../../escape.json",
            encode_document_object(dc, raw, document_id="../../escape", dataset_id="dirty"),
            "key has '..' path segments (path traversal if the id becomes a file path)",
        ),
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
            json.dumps(
                {
                    "documents": [
                        {
                            "source": "x",
                            "identifier": "x",
                            "representations": {
                                "text/markdown": {
                                    "content": _b64z(b"x"),
                                    "tokens": {TOKENIZER_NAME: "not a list"},
                                    "mime_type": "text/markdown",
                                }
                            },
                        }
                    ]
                }
            ).encode(),
            "tokens are a string, not a list of ints",
        ),
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
        ("index/dirty.json.gz", b"\x1f\x8b\x08\x00" + garbage, "corrupt gzip index"),
    ]
    objects = {k: v for k, v, _ in items}
    corrupt = {k: why for k, _, why in items}
    return objects, corrupt


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


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
        dirty_objects, corrupt = _dirty_objects()
        objects.update(dirty_objects)
    ordered = {k: objects[k] for k in sorted(objects)}
    return Corpus(
        objects=ordered,
        documents=documents,
        datasets=_datasets_of(ordered),
        corrupt=dict(sorted(corrupt.items())),
        indexes=indexes,
        n_documents=n_documents,
        seed=seed,
        dirty=dirty,
    )
