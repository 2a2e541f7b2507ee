"""A loopback HTTP proxy in front of obstore that lets its requests reach one origin only.

obstore (reqwest underneath) follows redirects to any host and has no switch to stop it: a
hostile endpoint's 3xx would send the request -- with the session token -- to another
host and hand that host's body back as the object. Every request of the obstore plane is
therefore sent through this proxy (obstore's ``proxy_url``): a request for the configured
origin (``host:port``) is passed on unchanged in meaning (plain HTTP: rewritten to
origin-form; HTTPS: a ``CONNECT`` tunnel), any other is answered ``421`` without contacting
anyone, and counted in :attr:`OriginGuard.refused`. The plane then makes that GET through
aiobotocore, which refuses the redirect with its usual error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from urllib.parse import urlsplit

logger = logging.getLogger("kl3m_data_client")

_MAX_HEAD = 64 << 10
_MAX_RECORDED = 1000
_REFUSAL = b"HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_TUNNEL_OPEN = b"HTTP/1.1 200 Connection Established\r\n\r\n"


def origin_of(url: str) -> str:
    """``host:port`` of ``url``, lower-case, with the scheme's default port made explicit."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OriginGuard:
    """The proxy; :attr:`url` is obstore's ``proxy_url`` once :meth:`start` returned.

    It runs on an event loop of its own, in a daemon thread: relaying obstore's bytes never
    waits for the caller's loop (busy decoding documents), and none of its tasks are the
    caller's.
    """

    def __init__(self, endpoint: str, connect_timeout: float = 10.0) -> None:
        parts = urlsplit(endpoint)
        self.connect_timeout = connect_timeout
        self.origin = origin_of(endpoint)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        #: Requests refused: the ``host:port`` each wanted to reach (the first 1,000).
        self.refused: list[str] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._open: set[_Inbound] = set()
        #: Every connection to the origin not yet lost, including one whose connecting task
        #: was cancelled just as it connected (asyncio.wait_for can drop that result).
        self._upstreams: set[asyncio.Transport] = set()
        self._pid = 0

    async def start(self) -> None:
        """Listen on a free loopback port, from the guard's own loop thread."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=loop.run_forever, name="kl3m-origin-guard", daemon=True
        )
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(self._listen(), loop)
        await asyncio.wrap_future(listening)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Inbound(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        """Stop listening, drop every connection and end the loop thread."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None or os.getpid() != self._pid:
            return  # not started, closed, or a forked child (the thread is the parent's)
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for _ in range(2):  # twice: a connection accepted just now is made on the next turn
            await asyncio.sleep(0)
            for inbound in list(self._open):
                inbound.abort()
            for upstream in list(self._upstreams):
                upstream.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _ in range(3):  # the transports' connection_lost callbacks
                await asyncio.sleep(0)

    async def connect(self, inbound: _Inbound) -> asyncio.Transport:
        """A connection to the origin whose data goes to ``inbound``."""
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(lambda: _Upstream(inbound), self._host, self._port)
        transport, _ = await asyncio.wait_for(connecting, self.connect_timeout)
        return transport


class _Upstream(asyncio.Protocol):
    """The origin's side of one proxied connection: its bytes go back unchanged."""

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inbound.guard._upstreams.add(transport)
        if self.inbound.lost:  # obstore hung up while this connection was being made
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.inbound.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.inbound.guard._upstreams.discard(self.transport)
        self.inbound.close()

    def pause_writing(self) -> None:
        self.inbound.pause_reading()

    def resume_writing(self) -> None:
        self.inbound.resume_reading()


class _Inbound(asyncio.Protocol):
    """obstore's side of one proxied connection."""

    def __init__(self, guard: OriginGuard) -> None:
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: list[bytes] = []  # for the origin, until connected
        self.connecting: asyncio.Task[None] | None = None
        self.tunnel = False
        self.lost = False

    # -- transport events ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.guard._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.guard._open.discard(self)
        if self.connecting is not None:
            self.connecting.cancel()
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self._forward(data)
            return
        self.buffer += data
        while not self.tunnel:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._refuse("an oversized request head")
                break
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            self._request(head)
        if self.tunnel and self.buffer:
            rest, self.buffer = bytes(self.buffer), bytearray()
            self._forward(rest)

    # -- helpers for the other side ------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # -- requests ------------------------------------------------------------------------
    def _request(self, head: bytes) -> None:
        line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = line.decode("latin-1").split(" ")
        except ValueError:
            self._refuse("a malformed request line")
            return
        if method == "CONNECT":
            authority = origin_of(f"https://{target}")
            if authority != self.guard.origin:
                self._refuse(authority)
                return
            self.tunnel = True
            self.send(_TUNNEL_OPEN)
            self._forward(b"")
            return
        parts = urlsplit(target)
        # only GETs without a body are proxied (the plane sends nothing else)
        if (
            method != "GET"
            or parts.scheme != "http"
            or origin_of(target) != self.guard.origin
            or b"\r\ntransfer-encoding:" in b"\r\n" + rest.lower()
        ):
            self._refuse(parts.netloc or target)
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self._forward(f"{method} {path} {version}\r\n".encode("latin-1") + rest)

    def _forward(self, data: bytes) -> None:
        if self.upstream is not None:
            if data:
                self.upstream.write(data)
            return
        if data:
            self.waiting.append(data)
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            upstream = await self.guard.connect(self)
        except (OSError, asyncio.TimeoutError):
            self.abort()  # obstore sees a broken connection: the GET goes to aiobotocore
            return
        if self.transport is None or self.transport.is_closing():
            upstream.close()
            return
        self.upstream = upstream
        waiting, self.waiting = self.waiting, []
        for data in waiting:
            upstream.write(data)

    def _refuse(self, authority: str) -> None:
        if len(self.guard.refused) < _MAX_RECORDED:
            self.guard.refused.append(authority)
        logger.debug(
            "obstore request for %s refused (only %s is reached)", authority, self.guard.origin
        )
        self.send(_REFUSAL)
        self.close()
