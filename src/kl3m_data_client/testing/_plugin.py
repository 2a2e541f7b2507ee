"""pytest plugin (``pytest11`` entry point ``kl3m_data_client``): local KL3M bucket fixtures.

Fixtures:

* ``kl3m_server`` (session): a running :class:`~kl3m_data_client.testing.LocalS3Server`;
* ``kl3m_corpus_bucket`` (session, treat as read-only): bucket ``data.kl3m.ai`` holding
  ``generate_corpus(200, seed=0, dirty=True)`` (size/seed from the ini options
  ``kl3m_corpus_documents`` / ``kl3m_corpus_seed``);
* ``kl3m_bucket`` (function): a fresh bucket with ``generate_corpus(20, seed=0)``, deleted
  after the test; override with ``@pytest.mark.kl3m_corpus(n_documents=50, seed=1,
  dirty=True)``.

The server child process is stopped at the end of the session.

Loading the plugin costs nothing: it imports neither the server modules nor the corpus
generator, moto or aiobotocore, and starts no thread; each fixture imports what it needs
when it is used (and the server modules start their threads and exit hook only with the
first server).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kl3m_data_client.testing._bucket import LocalBucket
    from kl3m_data_client.testing._server import LocalS3Server

__all__ = ["kl3m_bucket", "kl3m_corpus_bucket", "kl3m_server"]

_MARKER = "kl3m_corpus"
_FUNCTION_DEFAULTS: dict[str, Any] = {"n_documents": 20, "seed": 0, "dirty": False}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kl3m_corpus_documents",
        "number of documents in the kl3m_corpus_bucket fixture's corpus",
        default="200",
    )
    parser.addini(
        "kl3m_corpus_seed", "seed of the kl3m_corpus_bucket fixture's corpus", default="0"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(n_documents=20, seed=0, dirty=False): corpus generated into the "
        "function-scoped kl3m_bucket fixture",
    )


@pytest.fixture(scope="session")
def kl3m_server() -> Iterator[LocalS3Server]:
    """A local moto S3 server (child process) shared by the whole session."""
    from kl3m_data_client.testing._server import LocalS3Server

    server = LocalS3Server()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kl3m_corpus_bucket(
    kl3m_server: LocalS3Server, pytestconfig: pytest.Config
) -> Iterator[LocalBucket]:
    """Shared read-only bucket ``data.kl3m.ai`` with the default corpus and ``dirty`` dataset."""
    from kl3m_data_client.testing._bucket import LocalBucket
    from kl3m_data_client.testing._corpus import DEFAULT_BUCKET

    n_documents = int(str(pytestconfig.getini("kl3m_corpus_documents")))
    seed = int(str(pytestconfig.getini("kl3m_corpus_seed")))
    bucket = LocalBucket(
        n_documents, seed=seed, dirty=True, bucket=DEFAULT_BUCKET, server=kl3m_server
    )
    bucket.start()
    try:
        yield bucket
    finally:
        bucket.close()


@pytest.fixture
def kl3m_bucket(
    kl3m_server: LocalS3Server, request: pytest.FixtureRequest
) -> Iterator[LocalBucket]:
    """A fresh bucket for one test (``@pytest.mark.kl3m_corpus(...)`` sets its corpus)."""
    options = dict(_FUNCTION_DEFAULTS)
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        if marker.args:
            options["n_documents"] = marker.args[0]
        unknown = set(marker.kwargs) - set(_FUNCTION_DEFAULTS)
        if unknown:
            raise pytest.UsageError(f"unknown {_MARKER} marker arguments: {sorted(unknown)}")
        options.update(marker.kwargs)
    bucket = kl3m_server.create_bucket(
        n_documents=int(options["n_documents"]),
        seed=int(options["seed"]),
        dirty=bool(options["dirty"]),
    )
    try:
        yield bucket
    finally:
        bucket.close()
