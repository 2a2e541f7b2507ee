"""Shared fixtures. The S3 server comes from the kl3m_data_client pytest plugin."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
