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
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from kl3m_data_client._budget import DEFAULT_MEMORY_BUDGET, parse_size
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client._keys import normalize_key_prefix, validate_dataset_id
from kl3m_data_client.export._outage import DEFAULT_OUTAGE_TIMEOUT
from kl3m_data_client.export._records import RecordFilter
from kl3m_data_client.models.common import DATA_STAGES, Stage

if TYPE_CHECKING:
    from typing_extensions import Unpack

FORMATS = ("jsonl", "parquet")
JSONL_COMPRESSIONS = ("none", "gzip", "zstd")
PARQUET_COMPRESSIONS = ("zstd", "snappy")

#: ``workers`` when none is given (the API and ``kl3m-client export``): ``"auto"`` or a count.
DEFAULT_WORKERS: int | Literal["auto"] = "auto"
#: The most workers ``workers="auto"`` starts.
AUTO_WORKERS_MAX = 8
#: ``workers="auto"`` starts a worker per this many documents at most (a worker process
#: costs an interpreter start and a client; a short export is faster in one process).
AUTO_DOCUMENTS_PER_WORKER = 1000
#: ``workers="auto"`` counts up to this many listed objects (or ids) before it starts: an
#: export that ends before is a small one (see :func:`resolve_workers`).
AUTO_LISTING_PEEK = 2 * AUTO_DOCUMENTS_PER_WORKER

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

Workers = int | Literal["auto"]
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


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def main_is_import_safe() -> bool:
    """True if a spawned process can start without re-running the caller's script.

    A spawned process imports the main module; a script without an
    ``if __name__ == "__main__":`` guard would start the export again there. Without a main
    file (REPL, notebook, ``-c``) or with the guard in the main file, spawning is safe.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return True
    spec = getattr(main, "__spec__", None)
    if spec is not None and str(getattr(spec, "name", "")).endswith("__main__"):
        return True  # ``python -m package``: never re-run by multiprocessing
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "__name__" in source and "__main__" in source


def processes_usable() -> bool:
    """True if this process may start worker processes (not a daemon, import-safe main)."""
    return not multiprocessing.current_process().daemon and main_is_import_safe()


def resolve_workers(
    workers: Workers,
    *,
    deduplicate: bool = False,
    max_documents: int | None = None,
    documents: int | None = None,
    processes: bool = True,
) -> int:
    """The worker count of ``workers`` (an int is checked; ``"auto"`` is resolved).

    ``"auto"``: the usable CPUs, at most :data:`AUTO_WORKERS_MAX`; 1 where worker
    processes cannot be used (``processes=False``, ``deduplicate``, ``max_documents``); and
    for an export known to hold ``documents`` documents, at most one worker per
    :data:`AUTO_DOCUMENTS_PER_WORKER` of them (a small export runs in the calling process).
    """
    if workers != "auto":
        count = _opt_int("workers", workers, 1)
        assert count is not None
        return count
    if not processes or deduplicate or max_documents is not None:
        return 1
    count = min(usable_cpus(), AUTO_WORKERS_MAX)
    if documents is not None:
        count = min(count, documents // AUTO_DOCUMENTS_PER_WORKER)
    return max(1, count)


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
    options: ExportOptions | None = None,
    default_concurrency: int = 64,
    processes: bool = False,
    **changes: Unpack[ExportKeywords],
) -> ExportPlan:
    """Validate export options (raises InvalidInputError naming the bad one).

    ``options`` with ``changes`` applied (keywords win); ``workers="auto"`` is resolved by
    :func:`resolve_workers` (``processes``: whether worker processes can be used at all).
    The run controls (``resume``, ``overwrite``, ``retry_errors``) are not the plan's.
    """
    opts = merge_options(options, changes)
    stage, format, compression, content = opts.stage, opts.format, opts.compression, opts.content
    key_prefix, ids, max_documents = opts.key_prefix, opts.ids, opts.max_documents
    mime_types, min_tokens, max_tokens = opts.mime_types, opts.min_tokens, opts.max_tokens
    deduplicate, shard, records_per_part = opts.deduplicate, opts.shard, opts.records_per_part
    max_concurrency, workers = opts.max_concurrency, opts.workers
    outage_timeout, memory_budget = opts.outage_timeout, opts.memory_budget
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
    id_source = IdSource.of(ids) if ids is not None else None
    n_workers = resolve_workers(
        workers,
        deduplicate=bool(deduplicate),
        max_documents=max_docs,
        processes=processes,
    )
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
        ids=id_source,
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
