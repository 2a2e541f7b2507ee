"""What the ``kl3m-client`` commands share: exit statuses, usage errors, "not found" errors
that say what to run next, and a rate limiter for progress updates."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kl3m_data_client._errors import NotFoundError
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class UsageError(Exception):
    """A combination of options that cannot work (exit status 2)."""


# -- helpers ------------------------------------------------------------------------------------
async def dataset_exists(client: AsyncKL3MClient, dataset_id: str) -> bool:
    """True if the dataset has at least one object in any data stage (one tiny list each)."""
    return await client.has_dataset(dataset_id)


def missing_dataset(client: AsyncKL3MClient, dataset_id: str, key_prefix: str | None) -> Exception:
    """The error for a dataset with no objects (names the command that lists datasets)."""
    where = f" under key prefix {key_prefix!r}" if key_prefix else ""
    return NotFoundError(
        f"dataset {dataset_id!r} has no objects{where} in any stage of bucket "
        f"{client.bucket!r}; run 'kl3m-client list' to see the datasets"
    )


class Ticker:
    """Calls a progress update at most every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


async def missing_document(
    client: AsyncKL3MClient, dataset_id: str, document_id: str, stage: Stage
) -> Exception:
    """The error for a missing document: its dataset's if that is missing too."""
    if not await dataset_exists(client, dataset_id):
        return missing_dataset(client, dataset_id, None)
    return NotFoundError(
        f"document {document_id!r} not found in the {stage.value} stage of dataset "
        f"{dataset_id!r}; list the ids with 'kl3m-client documents {dataset_id}'"
    )
