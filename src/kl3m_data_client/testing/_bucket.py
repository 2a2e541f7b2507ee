"""A KL3M-format bucket on the local server (see ``docs/testing.md``)."""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Mapping

import anyio
import anyio.to_thread

from kl3m_data_client.testing._child import ServerError
from kl3m_data_client.testing._corpus import DEFAULT_BUCKET, Corpus, generate_corpus
from kl3m_data_client.testing._lifecycle import Lifecycle
from kl3m_data_client.testing._server import LocalS3Server

__all__ = ["LocalBucket"]


@functools.cache
def _warmer() -> concurrent.futures.ThreadPoolExecutor:
    """Generates the parent's copy of a corpus while the server process builds its own
    (created on first use)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kl3m-corpus")


class LocalBucket(Lifecycle):
    """A KL3M-format bucket served by a local moto S3 server.

    By default it starts its own :class:`LocalS3Server` and fills the bucket with
    ``generate_corpus(n_documents, seed=seed, dirty=dirty)``, generated inside the server
    process (a 1,000-document bucket is ready in a couple of seconds)::

        with LocalBucket(1000, dirty=True) as b:
            client = KL3MClient(**b.client_kwargs())
            expected = b.corpus.documents

    Pass ``objects`` (a :class:`Corpus` or ``{key: bytes}``) to upload your own objects over
    HTTP instead, and ``server`` to put the bucket on an existing server (closing the bucket
    then deletes it; otherwise closing stops the server).
    """

    def __init__(
        self,
        n_documents: int = 200,
        *,
        seed: int = 0,
        dirty: bool = False,
        bucket: str = DEFAULT_BUCKET,
        objects: Corpus | Mapping[str, bytes] | None = None,
        server: LocalS3Server | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.n_documents = n_documents
        self.seed = seed
        self.dirty = dirty
        self._objects = objects
        self._owns_server = server is None
        self.server = server or LocalS3Server(host=host, startup_timeout=startup_timeout)
        self._corpus: Corpus | None = None
        self._corpus_future: concurrent.futures.Future[Corpus] | None = None
        self._started = False
        self._closed = False
        self._t0 = 0.0
        #: Seconds the last :meth:`start` took (server start + bucket fill).
        self.startup_seconds: float | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalBucket:
        """Start the server (if owned), create and fill the bucket (idempotent)."""
        if self._start_bucket():
            self._finish_start()
        return self

    async def astart(self) -> LocalBucket:
        """:meth:`start` without blocking the event loop."""
        if await anyio.to_thread.run_sync(self._start_bucket):
            await self._finish_start_async()
        return self

    def _start_bucket(self) -> bool:
        """Start the server and create the bucket; True if user objects still need uploading."""
        if self._started:
            return False
        if self._closed:
            raise ServerError("bucket was closed")
        self._t0 = time.perf_counter()
        if self._owns_server:
            self.server.start()
        elif not self.server.running:
            raise ServerError("the server of this bucket is not running")
        if self._objects is None and self._corpus_future is None:
            # overlap: tokenizing releases the GIL, and the child works in parallel anyway
            self._corpus_future = _warmer().submit(
                generate_corpus, self.n_documents, seed=self.seed, dirty=self.dirty
            )
        try:
            if self._objects is None:
                self.server._command(
                    {
                        "op": "create_bucket",
                        "bucket": self.bucket,
                        "n_documents": self.n_documents,
                        "seed": self.seed,
                        "dirty": self.dirty,
                    }
                )
                self._mark_started()
                return False
            self.server._command({"op": "create_bucket", "bucket": self.bucket})
        except BaseException:
            if self._owns_server:
                self.server.close()
            raise
        return True

    def _mark_started(self) -> None:
        self._started = True
        self.startup_seconds = time.perf_counter() - self._t0

    def _finish_start(self) -> None:
        assert self._objects is not None
        try:
            self.server.upload(self.bucket, self._objects)
        except BaseException:
            self._started = True
            self.close()
            raise
        self._mark_started()

    async def _finish_start_async(self) -> None:
        assert self._objects is not None
        try:
            await self.server.upload_async(self.bucket, self._objects)
        except BaseException:
            self._started = True
            await self.aclose()
            raise
        self._mark_started()

    def close(self) -> None:
        """Stop the owned server, or delete the bucket from a shared one (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_server:
            self.server.close()
        elif self._started and self.server.running:
            self.server.delete_bucket(self.bucket)

    # ----------------------------------------------------------------- access
    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def corpus(self) -> Corpus:
        """What the bucket holds (ground truth); generated lazily in this process."""
        if self._corpus is None:
            if self._corpus_future is not None:
                self._corpus = self._corpus_future.result()
            elif self._objects is None:
                self._corpus = generate_corpus(self.n_documents, seed=self.seed, dirty=self.dirty)
            elif isinstance(self._objects, Corpus):
                self._corpus = self._objects
            else:
                self._corpus = Corpus.from_objects(self._objects)
        return self._corpus

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``AsyncKL3MClient(**kw)`` / ``KL3MClient(**kw)``."""
        boto = self.server.boto_kwargs()
        return {
            "bucket": self.bucket,
            "endpoint_url": boto["endpoint_url"],
            "region": boto["region_name"],
            "aws_access_key_id": boto["aws_access_key_id"],
            "aws_secret_access_key": boto["aws_secret_access_key"],
        }

    def boto_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / aiobotocore ``create_client``."""
        return self.server.boto_kwargs()

    def put_objects(self, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32) -> None:
        """Upload more objects into this bucket over HTTP (not reflected in :attr:`corpus`)."""
        self.server.upload(self.bucket, objects, concurrency=concurrency)

    async def put_objects_async(
        self, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        await self.server.upload_async(self.bucket, objects, concurrency=concurrency)

    def __repr__(self) -> str:
        state = "running" if self._started and not self._closed else "stopped"
        return f"<LocalBucket {self.bucket!r} {state} n_documents={self.n_documents}>"
