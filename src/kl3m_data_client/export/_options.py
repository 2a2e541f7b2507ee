"""Export options: validated once into a picklable :class:`ExportPlan`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kl3m_data_client._budget import DEFAULT_MEMORY_BUDGET, parse_size
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client._keys import normalize_key_prefix, validate_dataset_id
from kl3m_data_client.export._outage import DEFAULT_OUTAGE_TIMEOUT
from kl3m_data_client.export._records import RecordFilter
from kl3m_data_client.models.common import DATA_STAGES, Stage

FORMATS = ("jsonl", "parquet")
JSONL_COMPRESSIONS = ("none", "gzip", "zstd")
PARQUET_COMPRESSIONS = ("zstd", "snappy")

#: Options that change the output; a resume must repeat them exactly.
FINGERPRINT_FIELDS = (
    "bucket",
    "dataset_id",
    "stage",
    "format",
    "compression",
    "content",
    "key_prefix",
    "ids",
    "max_documents",
    "mime_types",
    "min_tokens",
    "max_tokens",
    "deduplicate",
    "shard",
    "records_per_part",
    "workers",
)
#: The keyword options of an export (``make_plan`` takes ``bucket``/``dataset_id`` apart).
PLAN_OPTIONS = frozenset(FINGERPRINT_FIELDS) - {"bucket", "dataset_id"} | {
    "max_concurrency",
    "outage_timeout",
    "memory_budget",
}


@dataclass(frozen=True)
class IdSource:
    """Explicit document ids: a file (one per line) or an in-memory list; ``digest`` names it."""

    path: str | None
    items: tuple[str, ...] | None
    digest: str

    def __iter__(self) -> Iterator[str]:
        if self.items is not None:
            yield from self.items
            return
        assert self.path is not None
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                doc_id = line.strip()
                if doc_id:
                    yield doc_id

    @classmethod
    def of(cls, ids: str | os.PathLike[str] | Iterable[str]) -> IdSource:
        """Read (the digest of) a file of ids, or take an iterable of ids."""
        if isinstance(ids, (str, os.PathLike)):
            path = Path(ids)
            if not path.is_file():
                raise InvalidInputError(f"ids file {str(path)!r} does not exist")
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            return cls(path=str(path.resolve()), items=None, digest="file:" + h.hexdigest())
        items = tuple(str(i).strip() for i in ids)
        items = tuple(i for i in items if i)
        h = hashlib.sha256("\n".join(items).encode("utf-8", "surrogatepass"))
        return cls(path=None, items=items, digest="list:" + h.hexdigest())


@dataclass(frozen=True)
class ExportPlan:
    """Every export option, validated (picklable: worker processes receive it)."""

    bucket: str
    dataset_id: str
    stage: str
    format: str
    compression: str
    content: str
    key_prefix: str | None
    ids: IdSource | None
    max_documents: int | None
    mime_types: tuple[str, ...] | None
    min_tokens: int | None
    max_tokens: int | None
    deduplicate: bool
    shard: tuple[int, int] | None
    records_per_part: int
    workers: int
    max_concurrency: int
    #: Seconds a systemic failure (outage) is waited for before the export stops.
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT
    #: bytes the documents in flight and the records not yet written may hold (all workers)
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    @property
    def record_filter(self) -> RecordFilter:
        """The filter applied while building records."""
        return RecordFilter(
            content=self.content,
            mime_types=frozenset(self.mime_types) if self.mime_types is not None else None,
            min_tokens=self.min_tokens,
            max_tokens=self.max_tokens,
        )

    @property
    def extension(self) -> str:
        """File extension of the parts."""
        if self.format == "parquet":
            return ".parquet"
        return {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[self.compression]

    def fingerprint(self) -> dict[str, Any]:
        """The options that determine the output (stored in the manifest)."""
        out: dict[str, Any] = {}
        for name in FINGERPRINT_FIELDS:
            value = getattr(self, name)
            if name == "ids":
                value = value.digest if value is not None else None
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def _opt_int(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _shard(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str) and "/" in value:
        a, _, b = value.partition("/")
        try:
            value = (int(a), int(b))
        except ValueError:
            raise InvalidInputError(f"shard must look like 'I/N', got {value!r}") from None
    try:
        index, count = value
    except (TypeError, ValueError):
        raise InvalidInputError(f"shard must be (index, count), got {value!r}") from None
    if (
        not isinstance(index, int)
        or not isinstance(count, int)
        or count < 1
        or not 0 <= index < count
    ):
        raise InvalidInputError(f"shard must be (index, count) with 0 <= index < count: {value!r}")
    return (index, count)


def make_plan(
    *,
    bucket: str,
    dataset_id: str,
    stage: Stage | str = Stage.DOCUMENTS,
    format: str = "jsonl",
    compression: str | None = None,
    content: str | None = None,
    key_prefix: str | None = None,
    ids: str | os.PathLike[str] | Iterable[str] | None = None,
    max_documents: int | None = None,
    mime_types: Iterable[str] | str | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    deduplicate: bool = False,
    shard: Any = None,
    records_per_part: int = 100_000,
    max_concurrency: int | None = None,
    workers: int = 1,
    default_concurrency: int = 64,
    outage_timeout: float | None = None,
    memory_budget: int | str | None = None,
) -> ExportPlan:
    """Validate export options (raises InvalidInputError naming the bad one)."""
    validate_dataset_id(dataset_id)
    st = Stage.coerce(stage)
    if st not in DATA_STAGES:
        raise InvalidInputError(f"stage {st.value!r} holds no documents")
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if fmt == "jsonl":
        comp = "none" if compression is None else str(compression).lower()
        if comp in ("gz",):
            comp = "gzip"
        if comp in ("zst",):
            comp = "zstd"
        if comp not in JSONL_COMPRESSIONS:
            raise InvalidInputError(
                f"jsonl compression must be one of {', '.join(JSONL_COMPRESSIONS)}, "
                f"got {compression!r}"
            )
        if comp == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise InvalidInputError(
                    "zstd compression needs the 'zstandard' package: "
                    "pip install 'kl3m-data-client[zstd]'"
                ) from None
    else:
        comp = "zstd" if compression is None else str(compression).lower()
        if comp not in PARQUET_COMPRESSIONS:
            raise InvalidInputError(
                f"parquet compression must be one of {', '.join(PARQUET_COMPRESSIONS)}, "
                f"got {compression!r}"
            )
    if content is None:
        content = "text" if st is Stage.DOCUMENTS else "tokens"
    content = str(content).lower()
    if content not in ("tokens", "text"):
        raise InvalidInputError(f"content must be 'tokens' or 'text', got {content!r}")
    if st is Stage.DOCUMENTS and content == "tokens":
        raise InvalidInputError("the documents stage has no tokens; use content='text'")
    if st is Stage.PARQUET and content == "text":
        raise InvalidInputError("the parquet stage has no text; use content='tokens'")
    min_t = _opt_int("min_tokens", min_tokens, 0)
    max_t = _opt_int("max_tokens", max_tokens, 0)
    if st is Stage.DOCUMENTS and (min_t is not None or max_t is not None):
        raise InvalidInputError("the documents stage has no tokens to count (min/max_tokens)")
    if min_t is not None and max_t is not None and min_t > max_t:
        raise InvalidInputError(f"min_tokens ({min_t}) is above max_tokens ({max_t})")
    mimes: tuple[str, ...] | None = None
    if mime_types is not None:
        if isinstance(mime_types, str):
            mime_types = [m for m in mime_types.split(",")]
        mimes = tuple(sorted({str(m).strip() for m in mime_types if str(m).strip()}))
        if not mimes:
            raise InvalidInputError("mime_types is empty")
    rpp = _opt_int("records_per_part", records_per_part, 1)
    assert rpp is not None
    n_workers = _opt_int("workers", workers, 1)
    assert n_workers is not None
    conc = _opt_int("max_concurrency", max_concurrency, 1) or default_concurrency
    max_docs = _opt_int("max_documents", max_documents, 0)
    outage = DEFAULT_OUTAGE_TIMEOUT if outage_timeout is None else outage_timeout
    if (
        isinstance(outage, bool)
        or not isinstance(outage, (int, float))
        or not 0 <= outage < float("inf")
    ):
        raise InvalidInputError(f"outage_timeout must be seconds >= 0, got {outage_timeout!r}")
    if isinstance(memory_budget, str):
        try:
            memory_budget = parse_size(memory_budget)
        except ValueError as exc:
            raise InvalidInputError(f"memory_budget: {exc}") from exc
    budget = _opt_int("memory_budget", memory_budget, 1) or DEFAULT_MEMORY_BUDGET
    if n_workers > 1 and deduplicate:
        raise InvalidInputError(
            "deduplicate needs workers=1 (duplicates can fall into different worker shards)"
        )
    if n_workers > 1 and max_docs is not None:
        raise InvalidInputError(
            "max_documents needs workers=1 (the first N documents are not split by worker)"
        )
    return ExportPlan(
        bucket=bucket,
        dataset_id=dataset_id,
        stage=st.value,
        format=fmt,
        compression=comp,
        content=content,
        key_prefix=normalize_key_prefix(key_prefix),
        ids=IdSource.of(ids) if ids is not None else None,
        max_documents=max_docs,
        mime_types=mimes,
        min_tokens=min_t,
        max_tokens=max_t,
        deduplicate=bool(deduplicate),
        shard=_shard(shard),
        records_per_part=rpp,
        workers=n_workers,
        max_concurrency=conc,
        outage_timeout=float(outage),
        memory_budget=budget,
    )
