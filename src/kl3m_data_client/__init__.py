"""kl3m-data-client: an asyncio-native client for the KL3M legal data bucket.

``AsyncKL3MClient`` is the core; ``KL3MClient`` is its blocking wrapper with the API of the
reference client. Heavy modules (aiobotocore, pyarrow) load on first use, not on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kl3m_data_client._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ClientClosedError,
    ConnectionFailedError,
    CorruptObjectError,
    InvalidInputError,
    KL3MError,
    NotFoundError,
    ServiceError,
    SizeLimitExceededError,
    UntrustedResponseError,
)
from kl3m_data_client._version import __version__
from kl3m_data_client.models.common import DatasetStatus, Stage

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient
    from kl3m_data_client._config import ClientConfig
    from kl3m_data_client._document import AsyncDocument
    from kl3m_data_client._limits import Limits
    from kl3m_data_client._sync import Document, KL3MClient
    from kl3m_data_client.export._options import ExportOptions
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
    "AccessDeniedError",
    "AsyncDocument",
    "AsyncKL3MClient",
    "BucketNotFoundError",
    "ClientClosedError",
    "ClientConfig",
    "ConnectionFailedError",
    "CorruptObjectError",
    "DatasetIndex",
    "DatasetStatus",
    "Document",
    "DocumentContent",
    "DocumentMetadata",
    "ExportOptions",
    "IndexMetadata",
    "InvalidInputError",
    "KL3MClient",
    "KL3MError",
    "Limits",
    "NotFoundError",
    "ParquetContent",
    "RepresentationContent",
    "RepresentationList",
    "ServiceError",
    "SingleRepresentation",
    "SizeLimitExceededError",
    "Stage",
    "UntrustedResponseError",
    "__version__",
]

_LAZY = {
    "AsyncKL3MClient": "kl3m_data_client._client",
    "AsyncDocument": "kl3m_data_client._document",
    "ClientConfig": "kl3m_data_client._config",
    "ExportOptions": "kl3m_data_client.export._options",
    "Limits": "kl3m_data_client._limits",
    "KL3MClient": "kl3m_data_client._sync",
    "Document": "kl3m_data_client._sync",
    "DocumentContent": "kl3m_data_client.models.document",
    "DocumentMetadata": "kl3m_data_client.models.document",
    "ParquetContent": "kl3m_data_client.models.document",
    "RepresentationContent": "kl3m_data_client.models.document",
    "RepresentationList": "kl3m_data_client.models.document",
    "SingleRepresentation": "kl3m_data_client.models.document",
    "DatasetIndex": "kl3m_data_client.models.stage",
    "IndexMetadata": "kl3m_data_client.models.stage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kl3m_data_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
