"""What an export tells its caller: progress snapshots and the final report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


class PartInfo(NamedTuple):
    """One finished output part: path, record count, sha256 (hex) and size in bytes."""

    path: str
    records: int
    sha256: str
    bytes: int


@dataclass
class Counters:
    """Running totals of one stream (stored in the manifest with every part)."""

    exported: int = 0
    skipped: int = 0
    duplicates: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def processed(self) -> int:
        return self.exported + self.skipped + self.duplicates + self.errors

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Counters:
        data = data or {}
        return cls(**{k: int(data.get(k, 0)) for k in cls.__dataclass_fields__})

    def add(self, other: Counters) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class ExportProgress:
    """A progress snapshot passed to the ``progress`` callback (at most ~10 per second)."""

    exported: int = 0
    skipped: int = 0
    duplicates: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Documents expected (from the dataset index when it has one), else None.
    total: int | None = None
    #: Seconds since this run started.
    elapsed: float = 0.0
    #: True for the last call of a run.
    done: bool = False
    #: Objects already handled by earlier runs of a resumed export (included in the counts).
    baseline: int = 0

    @property
    def processed(self) -> int:
        """Objects handled so far (exported, skipped, duplicate or failed)."""
        return self.exported + self.skipped + self.duplicates + self.errors

    @property
    def docs_per_second(self) -> float:
        """Objects handled per second in this run."""
        done = self.processed - self.baseline
        return done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        """Bytes downloaded per second in this run (counts of earlier runs included)."""
        return self.bytes_in / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class ExportReport:
    """The outcome of :func:`export` (JSON-ready with :meth:`as_dict`)."""

    dataset_id: str
    stage: str
    format: str
    destination: str
    compression: str | None = None
    content: str = "tokens"
    exported: int = 0
    skipped: int = 0
    duplicates: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    docs_per_second: float = 0.0
    parts: list[PartInfo] = field(default_factory=list)
    #: True when some objects failed (listed in ``errors.jsonl``).
    partial: bool = False
    #: True when this run continued an unfinished export (or found it finished).
    resumed: bool = False
    #: Path of ``errors.jsonl``.
    errors_path: str = ""
    #: Path of ``manifest.json``.
    manifest_path: str = ""

    @classmethod
    def from_totals(
        cls,
        dataset_id: str,
        stage: str,
        format: str,
        dest: Path,
        totals: Counters,
        parts: list[PartInfo],
        *,
        compression: str | None,
        content: str,
        duration: float,
        processed_this_run: int,
        resumed: bool,
    ) -> ExportReport:
        """The report of an export into ``dest`` from its summed counters and parts."""
        return cls(
            dataset_id=dataset_id,
            stage=stage,
            format=format,
            destination=str(dest),
            compression=compression,
            content=content,
            exported=totals.exported,
            skipped=totals.skipped,
            duplicates=totals.duplicates,
            errors=totals.errors,
            bytes_in=totals.bytes_in,
            bytes_out=sum(p.bytes for p in parts),
            duration=duration,
            docs_per_second=processed_this_run / duration if duration > 0 else 0.0,
            parts=parts,
            partial=totals.errors > 0,
            resumed=resumed,
            errors_path=str(dest / "errors.jsonl"),
            manifest_path=str(dest / "manifest.json"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "dataset_id": self.dataset_id,
            "stage": self.stage,
            "format": self.format,
            "compression": self.compression,
            "content": self.content,
            "destination": self.destination,
            "exported": self.exported,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(self.duration, 6),
            "docs_per_second": round(self.docs_per_second, 3),
            "parts": [p._asdict() for p in self.parts],
            "partial": self.partial,
            "resumed": self.resumed,
            "errors_path": self.errors_path,
            "manifest_path": self.manifest_path,
        }
