"""0.2.0's ``Document`` handle of the blocking client: other stages load on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kl3m_data_client._document import AsyncDocument, DocumentBase
from kl3m_data_client._formats import StageContent
from kl3m_data_client.models.common import Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    ParquetContent,
    RepresentationContent,
    RepresentationList,
)

if TYPE_CHECKING:
    from kl3m_data_client._sync import KL3MClient


class Document(DocumentBase):
    """A document of a :class:`KL3MClient`; other stages load on demand (blocking).

    Built by the client, or as in 0.2.0: ``Document(client, dataset_id, document_key,
    bucket)`` with the key of the document in any data stage.
    """

    def __init__(
        self,
        client: KL3MClient,
        dataset_id: str | AsyncDocument,
        document_key: str | None = None,
        bucket: str | None = None,
    ) -> None:
        if isinstance(dataset_id, AsyncDocument):
            document = dataset_id
        else:
            document = _document_from_key(client, dataset_id, document_key)
        super().__init__(document.dataset_id, document.document_id, document.stage)
        self._contents = document._contents  # shared cache with the async handle
        self.client = client
        self._async = document
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        """The bucket of the document."""
        return self._bucket or self.client.bucket

    @property
    def s3_client(self) -> Any:
        """The client's blocking botocore S3 client (see ``KL3MClient.s3_client``)."""
        return self.client.s3_client

    def get_content(self, stage: Stage | str = Stage.DOCUMENTS) -> StageContent | None:
        """The content of ``stage`` (fetched the first time), or None if it is not there."""
        stage = Stage.coerce(stage)
        if stage in self._contents:
            return self._contents[stage]
        return self.client._call(self._async.get_content, stage)

    def get_document_content(self) -> DocumentContent | None:
        """The documents-stage content."""
        content = self.get_content(Stage.DOCUMENTS)
        return content if isinstance(content, DocumentContent) else None

    def get_representation_content(self) -> RepresentationContent | None:
        """The representations-stage content."""
        content = self.get_content(Stage.REPRESENTATIONS)
        return content if isinstance(content, RepresentationContent) else None

    def get_representation(self) -> RepresentationList | None:
        """The first parsed document of the representations stage."""
        content = self.get_representation_content()
        return content.get_representation(0) if content else None

    def get_parquet(self) -> ParquetContent | None:
        """The parquet-stage content."""
        content = self.get_content(Stage.PARQUET)
        return content if isinstance(content, ParquetContent) else None

    def exists_in_stage(self, stage: Stage | str) -> bool:
        """True if the document has an object in ``stage``."""
        return self.client._call(self._async.exists_in_stage, stage)


def _document_from_key(client: Any, dataset_id: str, document_key: str | None) -> AsyncDocument:
    """The async handle of 0.2.0's ``Document(client, dataset_id, document_key)``."""
    from kl3m_data_client._keys import parse_document_key

    if not isinstance(document_key, str):
        raise TypeError("Document(client, dataset_id, document_key, bucket) needs document_key")
    stage, document_id = parse_document_key(dataset_id, document_key)
    from kl3m_data_client._sync import KL3MClient

    # another client object (a test double) gets a handle that can give its keys, not I/O
    async_client = client.async_client if isinstance(client, KL3MClient) else None
    return AsyncDocument(async_client, dataset_id, document_id, stage)  # type: ignore[arg-type]
