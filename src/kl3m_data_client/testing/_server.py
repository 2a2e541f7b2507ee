"""The local S3 server (moto, in a child process) and its commands (see ``docs/testing.md``).

Importing this module starts nothing: threads and the exit hook come with the first server.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread

from kl3m_data_client._bridge import run_sync
from kl3m_data_client.testing._child import ServerError, ServerProcess
from kl3m_data_client.testing._corpus import Corpus
from kl3m_data_client.testing._lifecycle import Lifecycle
from kl3m_data_client.testing._upload import upload

if TYPE_CHECKING:
    from kl3m_data_client.testing._bucket import LocalBucket

__all__ = ["DEFAULT_REGION", "LocalS3Server", "ServerError"]

DEFAULT_REGION: Final = "us-east-1"
_ACCESS_KEY: Final = "testing"
_SECRET_KEY: Final = "testing"
_BUCKET_COUNTER = itertools.count(1)


def _fresh_bucket_name() -> str:
    return f"test-{os.getpid()}-{next(_BUCKET_COUNTER)}.kl3m.local"


class LocalS3Server(Lifecycle):
    """moto's S3 server in a child process on a free loopback port.

    ``with LocalS3Server() as server:`` (or ``async with``) starts it; :meth:`close` stops it
    and reaps the child. The child also exits when this process dies (Linux: parent-death
    signal; everywhere: EOF on its stdin). Buckets are created with :meth:`create_bucket`.
    """

    def __init__(self, *, host: str = "127.0.0.1", startup_timeout: float = 60.0) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self._child: ServerProcess | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalS3Server:
        """Start the child and wait until it answers HTTP (idempotent)."""
        with self._lock:
            if self._child is None:
                self._child = ServerProcess.start(self.host, self.startup_timeout)
        return self

    async def astart(self) -> LocalS3Server:
        """:meth:`start` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.start)
        return self

    def close(self) -> None:
        """Stop the child and wait for it; safe to call twice."""
        with self._lock:
            child, self._child = self._child, None
            if child is not None:
                child.close()

    # ----------------------------------------------------------------- properties
    @property
    def running(self) -> bool:
        child = self._child
        return child is not None and child.running

    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self._require_child().pid

    @property
    def port(self) -> int:
        return self._require_child().port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` (use path-style addressing)."""
        return f"http://{self.host}:{self.port}"

    def boto_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / aiobotocore ``create_client``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": DEFAULT_REGION,
            "aws_access_key_id": _ACCESS_KEY,
            "aws_secret_access_key": _SECRET_KEY,
        }

    # ----------------------------------------------------------------- buckets
    def create_bucket(
        self,
        bucket: str | None = None,
        *,
        n_documents: int = 0,
        seed: int = 0,
        dirty: bool = False,
        objects: Corpus | Mapping[str, bytes] | None = None,
    ) -> LocalBucket:
        """Create a bucket on this server and fill it.

        Without ``objects`` the server process generates ``generate_corpus(n_documents,
        seed=seed, dirty=dirty)`` itself and loads it into moto's memory (fast; an empty bucket
        when ``n_documents == 0`` and not ``dirty``). With ``objects`` they are uploaded over
        HTTP with aiobotocore. ``bucket`` defaults to a fresh ``test-N.kl3m.local`` name.
        """
        from kl3m_data_client.testing._bucket import LocalBucket  # it imports this module

        b = LocalBucket(
            n_documents,
            seed=seed,
            dirty=dirty,
            bucket=bucket or _fresh_bucket_name(),
            objects=objects,
            server=self,
        )
        return b.start()

    def delete_bucket(self, bucket: str) -> None:
        """Delete a bucket and everything in it."""
        self._command({"op": "delete_bucket", "bucket": bucket})

    def upload(
        self, bucket: str, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        """PUT objects into an existing bucket over HTTP, ``concurrency`` at a time."""
        run_sync(functools.partial(self.upload_async, concurrency=concurrency), bucket, objects)

    async def upload_async(
        self, bucket: str, objects: Corpus | Mapping[str, bytes], *, concurrency: int = 32
    ) -> None:
        """Async :meth:`upload` (asyncio event loop; aiobotocore)."""
        data = objects.objects if isinstance(objects, Corpus) else objects
        await upload(self.boto_kwargs(), bucket, data, concurrency)

    def ping(self) -> None:
        """Round-trip a no-op command (raises :class:`ServerError` if the child is gone)."""
        self._command({"op": "ping"})

    def stop_serving(self) -> None:
        """Start an outage: close the listening socket and cut every open connection.

        Connections are refused until :meth:`restart_serving`; the buckets stay in the
        server's memory (the child process keeps running).
        """
        self._command({"op": "stop_http"})

    def schedule_outage(
        self, after_requests: int, *, reject: int | None = None, query: str | None = None
    ) -> None:
        """Stop serving once ``after_requests`` more requests have arrived (that request is
        answered, then open connections are cut). With ``query``, the outage starts instead
        at the first such request whose query string contains ``query`` (for instance
        ``"continuation-token"``: the second page of a listing), which is not answered.
        With ``reject``, the port then resets that many connection attempts and the server
        comes back by itself (a short outage, ended by the clients' own retries); without,
        it stays down until :meth:`restart_serving`. Driven by requests, not by time.
        """
        cmd = {"op": "schedule_outage", "after": after_requests, "reject": reject, "query": query}
        self._command(cmd)

    def http_status(self) -> dict[str, Any]:
        """``serving``, ``requests`` (count), ``outages`` (count), ``rejected`` (connections
        reset during scheduled outages) and ``armed`` (an outage is scheduled)."""
        reply = self._command({"op": "http_status"})
        return {k: reply[k] for k in ("serving", "requests", "outages", "rejected", "armed")}

    def restart_serving(self) -> None:
        """End an outage: listen again on the same port and wait until HTTP answers."""
        reply = self._command({"op": "start_http"})
        if int(reply["port"]) != self.port:  # pragma: no cover - the port was taken
            raise ServerError(f"server came back on port {reply['port']}, not {self.port}")
        self._require_child().wait_http(time.monotonic() + self.startup_timeout)

    # ----------------------------------------------------------------- protocol
    def _require_child(self) -> ServerProcess:
        child = self._child
        if child is None:
            raise ServerError("server is not running; call start() or use 'with'")
        return child

    def _command(self, cmd: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Send one command to the child (see ``_launcher``); its reply."""
        with self._lock:
            return self._require_child().command(cmd, timeout)
