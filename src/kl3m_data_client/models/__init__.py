"""Public models (documented paths: ``kl3m_data_client.models.common`` and friends)."""

from kl3m_data_client.models.common import DatasetStatus, Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    DocumentMetadata,
    ParquetContent,
    RepresentationContent,
    RepresentationList,
    SingleRepresentation,
)
from kl3m_data_client.models.stage import DatasetIndex, IndexMetadata

__all__ = [
    "DatasetIndex",
    "DatasetStatus",
    "DocumentContent",
    "DocumentMetadata",
    "IndexMetadata",
    "ParquetContent",
    "RepresentationContent",
    "RepresentationList",
    "SingleRepresentation",
    "Stage",
]
