"""What the export needs of a client: the :class:`ExportClient` protocol and a factory.

:class:`~kl3m_data_client.AsyncKL3MClient` satisfies the protocol; the export never imports
it (the client's ``export`` methods import the export, so the layers point one way). Worker
processes and shard tasks build their own clients with a :data:`ClientFactory`: the class of
the client the export was started with, or the one a caller passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kl3m_data_client._config import ClientConfig
    from kl3m_data_client._store import ObjectInfo, S3Store
    from kl3m_data_client.models.stage import DatasetIndex


class ExportClient(Protocol):
    """The calls an export makes on its client (an ``AsyncKL3MClient``)."""

    config: ClientConfig

    @property
    def _store(self) -> S3Store:
        """The client's S3 store (GETs of the objects to export)."""
        ...

    @property
    def _portable(self) -> bool:
        """True if ``factory(config=client.config)`` in another process makes an equivalent
        client (no session or store was handed to this one): worker processes may be used."""
        ...

    def iter_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """The objects under ``prefix``, in listing order."""
        ...

    async def get_dataset_index(
        self, dataset_id: str, key_prefix: str | None = None
    ) -> DatasetIndex | None:
        """The dataset's index object, or None if it has none."""
        ...

    async def _dataset_index(
        self, dataset_id: str, key_prefix: str | None = None, *, max_bytes: int | None = None
    ) -> DatasetIndex | None:
        """The index, or None if it has none or (with ``max_bytes``) it is larger."""
        ...

    async def __aenter__(self) -> Any:
        """Open the client."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        ...


#: Builds a client from a configuration (``factory(config=config)``); it must pickle, as it
#: crosses to worker processes and Ray tasks (a class defined at module level does).
ClientFactory = Callable[..., ExportClient]


def factory_of(client: ExportClient) -> ClientFactory:
    """The factory of clients like ``client``: its class."""
    return type(client)
