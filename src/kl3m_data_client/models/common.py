"""Stage and dataset status (documented import path ``kl3m_data_client.models.common``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["DatasetStatus", "ProcessingResult", "Stage"]


class Stage(Enum):
    """The stages of the KL3M pipeline; each is a top-level prefix of the bucket."""

    DOCUMENTS = "documents"
    REPRESENTATIONS = "representations"
    PARQUET = "parquet"
    INDEX = "index"

    @classmethod
    def coerce(cls, value: Stage | str) -> Stage:
        """Return ``value`` as a Stage, accepting its string value (``"parquet"``)."""
        if isinstance(value, Stage):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            from kl3m_data_client._errors import InvalidInputError

            names = ", ".join(s.value for s in DATA_STAGES)
            raise InvalidInputError(f"unknown stage {value!r}; expected one of {names}") from None


DATA_STAGES = (Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET)


@dataclass(frozen=True)
class DatasetStatus:
    """Object counts of a dataset (or a key prefix of it) in each stage."""

    dataset_id: str
    document_count: int
    representation_count: int
    parquet_count: int
    missing_representations: int
    missing_parquet: int

    @property
    def is_complete(self) -> bool:
        """True when every document has a representation and every representation a parquet."""
        return self.missing_representations == 0 and self.missing_parquet == 0

    @property
    def total_documents(self) -> int:
        """The number of documents (documents stage)."""
        return self.document_count

    def as_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (the shape of ``kl3m-client status --json``)."""
        return {
            "dataset_id": self.dataset_id,
            "document_count": self.document_count,
            "representation_count": self.representation_count,
            "parquet_count": self.parquet_count,
            "missing_representations": self.missing_representations,
            "missing_parquet": self.missing_parquet,
            "is_complete": self.is_complete,
        }

    @classmethod
    def from_counts(
        cls, dataset_id: str, documents: int, representations: int, parquet: int
    ) -> DatasetStatus:
        """Build a status from the three stage counts."""
        return cls(
            dataset_id=dataset_id,
            document_count=documents,
            representation_count=representations,
            parquet_count=parquet,
            missing_representations=max(0, documents - representations),
            missing_parquet=max(0, representations - parquet),
        )


@dataclass(frozen=True)
class ProcessingResult:
    """Counts and duration of a batch operation (documents processed, errors, seconds)."""

    processed_count: int
    error_count: int
    duration_seconds: float

    @property
    def total_count(self) -> int:
        """Processed plus failed."""
        return self.processed_count + self.error_count

    @property
    def success_rate(self) -> float:
        """Percentage processed without error (100.0 when nothing was attempted)."""
        if self.total_count == 0:
            return 100.0
        return 100.0 * self.processed_count / self.total_count

    @property
    def docs_per_second(self) -> float:
        """Processed documents per second (0.0 for a zero duration)."""
        if self.duration_seconds <= 0:
            return 0.0
        return self.processed_count / self.duration_seconds

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "processed_count": self.processed_count,
            "error_count": self.error_count,
            "duration_seconds": self.duration_seconds,
            "total_count": self.total_count,
            "success_rate": self.success_rate,
            "docs_per_second": self.docs_per_second,
        }
