"""Shared fixtures. The S3 server comes from the kl3m_data_client pytest plugin."""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from typing import Any

import pytest

#: The only S3 operations a read feature of this client may send (least privilege).
READ_OPERATIONS = frozenset({"ListObjectsV2", "GetObject", "HeadObject"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def only_read_operations() -> Iterator[collections.Counter[str]]:
    """Over the whole suite, clients made by the library send only the three read operations.

    A botocore ``before-call`` hook is registered on every session from which the library's
    S3 seam (``kl3m_data_client._store``) creates a client; test set-up clients (uploads to
    the local bucket) are made elsewhere and not counted.
    """
    from aiobotocore.session import AioSession

    seen: collections.Counter[str] = collections.Counter()

    def record(model: Any = None, **_: Any) -> None:
        if model is not None:
            seen[model.name] += 1

    original = AioSession.create_client

    def create_client(self: AioSession, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__") == "kl3m_data_client._store":
            self.register("before-call.s3", record, unique_id="kl3m-read-audit")
        return original(self, *args, **kwargs)

    AioSession.create_client = create_client  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        AioSession.create_client = original  # type: ignore[method-assign]
    assert set(seen) <= READ_OPERATIONS, f"write or other operations sent: {dict(seen)}"
