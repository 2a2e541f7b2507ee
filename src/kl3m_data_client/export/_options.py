"""Export options: one :class:`ExportOptions` type, validated once into a picklable
:class:`ExportPlan`.

:class:`ExportOptions` is the single list of export options (names, types, defaults) shared
by ``AsyncKL3MClient.export``, ``KL3MClient.export``, ``iter_jsonl_export``, the function
:func:`kl3m_data_client.export.export`, the ``kl3m-client export`` command and the
distributed export. :class:`ExportKeywords` is the same list as keyword arguments (for
``**changes: Unpack[ExportKeywords]`` signatures that IDEs and mypy check); a unit test keeps
the two equal.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from kl3m_data_client._budget import DEFAULT_MEMORY_BUDGET
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client._keys import normalize_key_prefix, validate_dataset_id
from kl3m_data_client.export._auto import DEFAULT_WORKERS, Workers, resolve_workers
from kl3m_data_client.export._outage import DEFAULT_OUTAGE_TIMEOUT
from kl3m_data_client.export._records import RecordFilter
from kl3m_data_client.export._validate import (
    budget_of,
    content_of,
    format_of,
    mime_types_of,
    opt_int,
    seconds_of,
    shard_of,
    token_range,
)
from kl3m_data_client.models.common import DATA_STAGES, Stage

if TYPE_CHECKING:
    from typing_extensions import Unpack

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

Shard = tuple[int, int] | str
IdsOption = str | os.PathLike[str] | Iterable[str]


@dataclass(frozen=True)
class ExportOptions:
    """Every option of an export (see ``docs/export.md`` for each one's meaning).

    Pass one to ``export(..., options=ExportOptions(...))`` or give the same names as
    keywords (keywords override the fields of ``options``).
    """

    #: source stage: documents, representations or parquet
    stage: Stage | str = Stage.DOCUMENTS
    #: ``jsonl`` or ``parquet``
    format: str = "jsonl"
    #: jsonl: none/gzip/zstd (default none); parquet: zstd/snappy (default zstd)
    compression: str | None = None
    #: ``tokens`` or ``text`` (default: text for documents, else tokens)
    content: str | None = None
    #: only ids below this sub-path of the dataset
    key_prefix: str | None = None
    #: explicit document ids: an iterable, or a path to a file with one id per line
    ids: IdsOption | None = None
    #: stop after this many exported records (needs one worker)
    max_documents: int | None = None
    #: keep these MIME types (a list or a comma-separated string)
    mime_types: Iterable[str] | str | None = None
    #: token count range (representations, parquet)
    min_tokens: int | None = None
    max_tokens: int | None = None
    #: drop records already exported (needs one worker)
    deduplicate: bool = False
    #: ``(index, count)`` or ``"I/N"``: export one hash shard
    shard: Shard | None = None
    #: records per output part
    records_per_part: int = 100_000
    #: exporters in parallel (the calling process and ``workers - 1`` spawned processes), or
    #: ``"auto"`` (see :func:`resolve_workers`)
    workers: Workers = DEFAULT_WORKERS
    #: GETs in flight (default: twice the client's ``max_concurrency``)
    max_concurrency: int | None = None
    #: bytes (or ``"512MiB"``) documents in flight and unwritten records may hold
    #: (default: the client's)
    memory_budget: int | str | None = None
    #: seconds a systemic failure is waited for before the export stops (default 300)
    outage_timeout: float | None = None
    #: continue an unfinished export in the destination
    resume: bool = True
    #: replace whatever export the destination holds
    overwrite: bool = False
    #: once finished, fetch the objects of errors.jsonl again (a retry round)
    retry_errors: bool = False


class RecordKeywords(TypedDict, total=False):
    """The fields of :class:`ExportOptions` as keyword arguments, but for ``key_prefix`` and
    ``max_documents`` (positional in ``iter_jsonl_export``, as in 0.2.0)."""

    stage: Stage | str
    format: str
    compression: str | None
    content: str | None
    ids: IdsOption | None
    mime_types: Iterable[str] | str | None
    min_tokens: int | None
    max_tokens: int | None
    deduplicate: bool
    shard: Shard | None
    records_per_part: int
    workers: Workers
    max_concurrency: int | None
    memory_budget: int | str | None
    outage_timeout: float | None
    resume: bool
    overwrite: bool
    retry_errors: bool


class ExportKeywords(RecordKeywords, total=False):
    """The fields of :class:`ExportOptions` as keyword arguments (same names and types)."""

    key_prefix: str | None
    max_documents: int | None


#: The names of the export options, in declaration order.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ExportOptions))
#: The run controls among them (they do not shape the plan, nor the records).
RUN_CONTROLS = frozenset({"resume", "overwrite", "retry_errors"})


def merge_options(options: ExportOptions | None, changes: Mapping[str, Any]) -> ExportOptions:
    """``options`` (or the defaults) with ``changes`` applied; TypeError names an unknown one."""
    unknown = sorted(set(changes) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unexpected export option(s): {', '.join(unknown)}")
    if options is not None and not isinstance(options, ExportOptions):
        raise TypeError(f"options must be an ExportOptions, got {type(options).__name__}")
    return replace(options or ExportOptions(), **changes)


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


def make_plan(
    *,
    bucket: str,
    dataset_id: str,
    options: ExportOptions | None = None,
    default_concurrency: int = 64,
    processes: bool = False,
    **changes: Unpack[ExportKeywords],
) -> ExportPlan:
    """Validate export options (raises InvalidInputError naming the bad one).

    ``options`` with ``changes`` applied (keywords win); ``workers="auto"`` is resolved by
    :func:`~kl3m_data_client.export.resolve_workers` (``processes``: whether worker
    processes can be used at all). The run controls (``resume``, ``overwrite``,
    ``retry_errors``) are not the plan's.
    """
    opts = merge_options(options, changes)
    validate_dataset_id(dataset_id)
    stage = Stage.coerce(opts.stage)
    if stage not in DATA_STAGES:
        raise InvalidInputError(f"stage {stage.value!r} holds no documents")
    fmt, compression = format_of(opts.format, opts.compression)
    min_tokens, max_tokens = token_range(stage, opts.min_tokens, opts.max_tokens)
    records_per_part = opt_int("records_per_part", opts.records_per_part, 1)
    assert records_per_part is not None
    max_documents = opt_int("max_documents", opts.max_documents, 0)
    deduplicate = bool(opts.deduplicate)
    workers = resolve_workers(
        opts.workers, deduplicate=deduplicate, max_documents=max_documents, processes=processes
    )
    if workers > 1 and deduplicate:
        raise InvalidInputError(
            "deduplicate needs workers=1 (duplicates can fall into different worker shards)"
        )
    if workers > 1 and max_documents is not None:
        raise InvalidInputError(
            "max_documents needs workers=1 (the first N documents are not split by worker)"
        )
    return ExportPlan(
        bucket=bucket,
        dataset_id=dataset_id,
        stage=stage.value,
        format=fmt,
        compression=compression,
        content=content_of(stage, opts.content),
        key_prefix=normalize_key_prefix(opts.key_prefix),
        ids=IdSource.of(opts.ids) if opts.ids is not None else None,
        max_documents=max_documents,
        mime_types=mime_types_of(opts.mime_types),
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        deduplicate=deduplicate,
        shard=shard_of(opts.shard),
        records_per_part=records_per_part,
        workers=workers,
        max_concurrency=opt_int("max_concurrency", opts.max_concurrency, 1) or default_concurrency,
        outage_timeout=seconds_of("outage_timeout", opts.outage_timeout, DEFAULT_OUTAGE_TIMEOUT),
        memory_budget=budget_of(opts.memory_budget),
    )
