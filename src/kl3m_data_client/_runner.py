"""The blocking client's event loop thread: an anyio blocking portal running the
:class:`AsyncKL3MClient` every call is forwarded to. Its lifetime: kept alive by iterators
that outlive their client, abandoned (never touched) after ``fork()``, closed at exit."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from kl3m_data_client._client import AsyncKL3MClient
from kl3m_data_client._client_base import StoreFactory
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import ClientClosedError

# Runners inherited through fork() cannot be closed in the child (their loop thread does not
# exist there); they are kept referenced so that no finalizer touches them.
ORPHANS: list[object] = []
#: Loop runners not closed yet; the ones still running at interpreter exit are closed then.
LIVE: weakref.WeakSet[Runner] = weakref.WeakSet()


class Runner:
    """An event loop on a daemon thread (anyio's blocking portal) and the async client on it.

    Iterators of the blocking client hold it ``in_use``; a client that is garbage collected
    (:meth:`abandon`) stops the loop only once no iterator uses it any more.
    """

    def __init__(self, config: ClientConfig, session: Any, s3_client: Any = None) -> None:
        from anyio.from_thread import start_blocking_portal

        self.pid = os.getpid()
        self._cm: AbstractContextManager[Any] = start_blocking_portal(
            "asyncio", name="kl3m-data-client"
        )
        self.portal = self._cm.__enter__()
        self.loop_thread: int = self.portal.call(threading.get_ident)
        store_factory: StoreFactory | None = None
        if s3_client is not None:  # a caller's boto3 client: used as it is (_boto3_store)
            from kl3m_data_client._boto3_store import Boto3Store

            def store_factory(cfg: ClientConfig) -> Boto3Store:
                # the client sends its requests through the caller's blocking client
                return Boto3Store(cfg, s3_client)

        self.client = AsyncKL3MClient(config=config, session=session, _store_factory=store_factory)
        self.closed = False
        self._lock = threading.Lock()
        self._users = 0
        self._abandoned = False
        LIVE.add(self)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by a running iterator: an abandoned client's loop outlives it."""
        with self._lock:
            if self.closed:
                raise ClientClosedError("the client is closed")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                last = self._abandoned and self._users == 0
            if last:
                self.close()

    def abandon(self) -> None:
        """The client was garbage collected: close now, or when its last iterator ends."""
        with self._lock:
            self._abandoned = True
            if self._users:
                return
        self.close()

    def close(self) -> None:
        """Close the async client and stop the loop thread (idempotent; not after fork)."""
        if self.closed or self.pid != os.getpid():
            return
        if threading.get_ident() == self.loop_thread:
            # a garbage collection on the loop thread itself: it cannot stop its own loop
            threading.Thread(target=self.close, name="kl3m-data-client-close").start()
            return
        with self._lock:
            if self.closed or self.pid != os.getpid():
                return
            self.closed = True
        LIVE.discard(self)
        try:
            self.portal.call(self.client.aclose)
        finally:
            # cancel what still runs (an iterator's producer blocked on a full buffer would
            # otherwise keep the loop, and this call, waiting forever)
            with suppress(RuntimeError):
                self.portal.call(self.portal.stop, True)
            self._cm.__exit__(None, None, None)


@atexit.register
def _close_at_exit() -> None:
    """Stop every loop thread still running (forgotten clients, iterators left open)."""
    for runner in list(LIVE):
        runner.close()
