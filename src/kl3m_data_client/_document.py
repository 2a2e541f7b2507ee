"""Document handles: the keys of one document in every stage and its loaded contents."""

from __future__ import annotations

from typing import Any, Protocol

from kl3m_data_client._formats import StageContent
from kl3m_data_client._keys import object_key
from kl3m_data_client.models.common import Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    ParquetContent,
    RepresentationContent,
    RepresentationList,
)


class DocumentSource(Protocol):
    """What a document handle needs of its client (an :class:`AsyncKL3MClient`): the handle
    sits below the client and does not import it."""

    async def fetch_content(
        self, dataset_id: str, document_id: str, stage: Stage | str = ...
    ) -> StageContent | None:
        """GET and decode one document's object in ``stage``; None if it does not exist."""
        ...

    async def exists(self, dataset_id: str, document_id: str, stage: Stage | str = ...) -> bool:
        """True if the document has an object in ``stage``."""
        ...


_MISSING: Any = object()


class DocumentBase:
    """What the sync and async document handles share: ids, keys and the content cache."""

    def __init__(
        self,
        dataset_id: str,
        document_id: str,
        stage: Stage = Stage.DOCUMENTS,
        contents: dict[Stage, StageContent | None] | None = None,
    ) -> None:
        self.dataset_id = dataset_id
        self.document_id = document_id
        self.stage = stage
        self._contents: dict[Stage, StageContent | None] = dict(contents or {})

    @property
    def doc_id(self) -> str:
        """The document id (alias of ``document_id``)."""
        return self.document_id

    @property
    def doc_path(self) -> str:
        """The object's path below ``{stage}/{dataset_id}/`` (``x.json``; ``x`` in parquet)."""
        return self.key(self.stage)[len(self.stage.value) + len(self.dataset_id) + 2 :]

    def key(self, stage: Stage) -> str:
        """The object key of this document in ``stage``."""
        return object_key(stage, self.dataset_id, self.document_id)

    @property
    def document_key(self) -> str:
        """Key in the documents stage."""
        return self.key(Stage.DOCUMENTS)

    @property
    def representation_key(self) -> str:
        """Key in the representations stage."""
        return self.key(Stage.REPRESENTATIONS)

    @property
    def parquet_key(self) -> str:
        """Key in the parquet stage."""
        return self.key(Stage.PARQUET)

    def is_loaded(self, stage: Stage) -> bool:
        """True when the content of ``stage`` (or its absence) is already known."""
        return stage in self._contents

    @property
    def content(self) -> StageContent | None:
        """The content of the stage this document was fetched from."""
        return self._contents.get(self.stage)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dataset_id={self.dataset_id!r}, "
            f"document_id={self.document_id!r}, stage={self.stage.value!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DocumentBase):
            return NotImplemented
        return (self.dataset_id, self.document_id) == (other.dataset_id, other.document_id)

    def __hash__(self) -> int:
        return hash((self.dataset_id, self.document_id))


class AsyncDocument(DocumentBase):
    """A document of an :class:`AsyncKL3MClient`; other stages load on demand (awaitable)."""

    def __init__(
        self,
        client: DocumentSource,
        dataset_id: str,
        document_id: str,
        stage: Stage = Stage.DOCUMENTS,
        contents: dict[Stage, StageContent | None] | None = None,
    ) -> None:
        super().__init__(dataset_id, document_id, stage, contents)
        self.client = client

    async def get_content(self, stage: Stage | str = Stage.DOCUMENTS) -> StageContent | None:
        """The content of ``stage`` (fetched the first time), or None if it is not there."""
        stage = Stage.coerce(stage)
        if stage not in self._contents:
            self._contents[stage] = await self.client.fetch_content(
                self.dataset_id, self.document_id, stage
            )
        return self._contents[stage]

    async def get_document_content(self) -> DocumentContent | None:
        """The documents-stage content."""
        content = await self.get_content(Stage.DOCUMENTS)
        return content if isinstance(content, DocumentContent) else None

    async def get_representation_content(self) -> RepresentationContent | None:
        """The representations-stage content."""
        content = await self.get_content(Stage.REPRESENTATIONS)
        return content if isinstance(content, RepresentationContent) else None

    async def get_representation(self) -> RepresentationList | None:
        """The first parsed document of the representations stage."""
        content = await self.get_representation_content()
        return content.get_representation(0) if content else None

    async def get_parquet(self) -> ParquetContent | None:
        """The parquet-stage content."""
        content = await self.get_content(Stage.PARQUET)
        return content if isinstance(content, ParquetContent) else None

    async def exists_in_stage(self, stage: Stage | str) -> bool:
        """True if the document has an object in ``stage`` (a HEAD unless already loaded)."""
        stage = Stage.coerce(stage)
        if stage in self._contents:
            return self._contents[stage] is not None
        return await self.client.exists(self.dataset_id, self.document_id, stage)
