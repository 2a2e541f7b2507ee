"""The dataset index model (``index/{dataset_id}.json.gz``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DatasetIndex", "IndexMetadata"]


@dataclass(frozen=True)
class IndexMetadata:
    """The ``metadata`` section of an index object."""

    dataset_id: str
    key_prefix: str | None
    count: int
    created_at: datetime

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexMetadata:
        """Build from the decoded JSON ``metadata`` dict.

        As in 0.2.0, a missing or unreadable ``created_at`` becomes the current local time,
        a missing ``count`` 0 and a missing ``key_prefix`` None.
        """
        created = data.get("created_at")
        created_at: datetime | None = created if isinstance(created, datetime) else None
        if isinstance(created, str):
            try:
                created_at = datetime.fromisoformat(created)
            except ValueError:
                created_at = None
        if created_at is None:
            created_at = datetime.now()
        count = data.get("count", 0)
        return cls(
            dataset_id=str(data.get("dataset_id") or ""),
            key_prefix=data.get("key_prefix") or None,
            count=count if isinstance(count, int) else 0,
            created_at=created_at,
        )


@dataclass(frozen=True)
class DatasetIndex:
    """A dataset's list of representation keys, as written by the pipeline."""

    objects: list[str]
    metadata: IndexMetadata
    dataset_id: str = field(default="")

    @classmethod
    def from_dict(cls, data: dict[str, Any], dataset_id: str = "") -> DatasetIndex:
        """Build from the decoded index JSON."""
        objects = [str(k) for k in data.get("objects", [])]
        metadata = IndexMetadata.from_dict(data.get("metadata") or {})
        return cls(objects=objects, metadata=metadata, dataset_id=dataset_id or metadata.dataset_id)

    def get_document_ids(self) -> set[str]:
        """The document ids of the listed keys (a set, as in 0.2.0), full sub-path kept.

        Unlike 0.2.0, ``documents/ds/a/x.json`` gives ``a/x``, not ``x``: two documents with
        the same file name in different folders keep distinct ids.
        """
        return set(self.document_ids())

    def document_ids(self) -> list[str]:
        """The document ids of the listed keys in index order, without duplicates."""
        from kl3m_data_client._keys import document_id_from_key

        seen: set[str] = set()
        ids: list[str] = []
        for key in self.objects:
            doc_id = document_id_from_key(key, self.dataset_id or None)
            if doc_id and doc_id not in seen:
                seen.add(doc_id)
                ids.append(doc_id)
        return ids

    def __len__(self) -> int:
        return len(self.objects)
