"""The fault proxy itself: forwarding, the seeded fault decisions, and the answers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from kl3m_data_client.testing._faults import _hostile as hostile
from kl3m_data_client.testing._faults._http import (
    STATUS_FAULTS,
    Answer,
    error_response,
    forward,
    listen,
    plain,
    raw_response,
    reset,
    streamed,
)
from kl3m_data_client.testing._faults._plan import (
    HOSTILE_FAULTS,
    Fault,
    FaultPlan,
    RequestInfo,
    applicable,
    draw,
)

#: The faults that break a response body (on a bodiless answer: a reset before it).
_CUT_BODY = (Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.STALL)


@dataclass
class _State:
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    faulted: Counter[tuple[str, str]] = field(default_factory=Counter)
    empty_pages: int = 0


class FaultProxy:
    """The proxy; see the package docstring. ``endpoint_url`` is valid once started."""

    def __init__(
        self,
        upstream: str,
        plan: FaultPlan | None = None,
        *,
        host: str = "127.0.0.1",
        ssl_context: Any = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan(rate=0.0)
        self.host = host
        self.ssl_context = ssl_context
        self.port = 0
        #: Injected faults per kind.
        self.fired: Counter[Fault] = Counter()
        #: Forwarded or answered requests per (guessed) S3 operation.
        self.requests: Counter[str] = Counter()
        #: 403 answers given by ``credential_check``.
        self.rejected: Counter[str] = Counter()
        #: Body bytes written by ``chunked_oversize`` answers.
        self.oversize_sent = 0
        #: The other host of ``redirect_other_host`` (``other.requests`` is what it got).
        self.other = hostile.OtherHost(host, self.plan.redirect_body)
        self._state = _State()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """The URL to give the client as ``endpoint_url``."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        """Bind a free loopback port and start serving."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=256),
        )
        try:
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner, self.port = await listen(
                app, self.host, ssl_context=self.ssl_context, shutdown_timeout=0.5
            )
            kinds = set(self.plan.kinds)
            if Fault.REDIRECT_OTHER_HOST in kinds or Fault.REDIRECT_OTHER_PORT in kinds:
                await self.other.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self.other.stop()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def reset_counters(self) -> None:
        """Forget fired faults, request counts and per-request attempt numbers."""
        self.fired.clear()
        self.requests.clear()
        self.rejected.clear()
        self.oversize_sent = 0
        self.other.requests.clear()
        self._state = _State()

    # -- decisions -------------------------------------------------------------------------
    def _rand(self, info: RequestInfo, salt: str) -> float:
        return draw(self.plan.seed, info, salt)

    def _decide(self, info: RequestInfo) -> Fault | None:
        plan = self.plan
        ident = (info.method, f"{info.path}?{info.query}")
        limit = plan.max_faults_per_request
        if limit is not None and self._state.faulted[ident] >= limit:
            return None
        if plan.select is not None and not plan.select(info):
            return None
        kinds = applicable(plan.kinds, info)
        if not kinds:
            return None
        choice: Fault | None = None
        if plan.ensure_each:
            missing = [k for k in kinds if not self.fired[k]]
            if missing:
                # list pages are rare: give them their own fault first
                if Fault.BAD_LIST_XML in missing:
                    choice = Fault.BAD_LIST_XML
                else:
                    choice = missing[int(self._rand(info, "ensure") * len(missing))]
        if choice is None and plan.rate > 0 and self._rand(info, "rate") < plan.rate:
            choice = kinds[int(self._rand(info, "kind") * len(kinds))]
        if choice is not None:
            self._state.faulted[ident] += 1
        return choice

    # -- serving ---------------------------------------------------------------------------
    def _request_info(self, request: web.Request) -> RequestInfo:
        """Count the request and describe it (its attempt number included)."""
        split = urlsplit(request.raw_path)
        ident = (request.method, f"{split.path}?{split.query}")
        self._state.attempts[ident] += 1
        info = RequestInfo(
            method=request.method,
            path=split.path,
            query=split.query,
            headers=dict(request.headers),
            attempt=self._state.attempts[ident],
        )
        self.requests[info.operation] += 1
        return info

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        info = self._request_info(request)
        if self.plan.credential_check is not None:
            code = self.plan.credential_check(info)
            if code:
                self.rejected[code] += 1
                return error_response(request, 403, code, "The credentials were rejected.")
        if self.plan.latency > 0:
            await asyncio.sleep(self.plan.latency)
        fault = self._decide(info)
        if fault is not None:
            self.fired[fault] += 1
        if fault in HOSTILE_FAULTS:
            assert fault is not None
            return await self._hostile(request, fault)
        if fault in STATUS_FAULTS:
            status, code, message = STATUS_FAULTS[fault]
            return error_response(request, status, code, message)
        if fault is Fault.RESET_BEFORE:
            await request.read()
            reset(request)
            return web.Response(status=500)
        if fault is Fault.STALL and request.method == "HEAD":
            await asyncio.sleep(self.plan.stall_seconds)
            reset(request)
            return web.Response(status=500)
        return await self._forwarded(request, info, fault)

    async def _forwarded(
        self, request: web.Request, info: RequestInfo, fault: Fault | None
    ) -> web.StreamResponse:
        """Forward ``request`` and pass the answer on, broken by ``fault`` if it is set."""
        status, headers, body = await self._forward(request)
        if request.method == "HEAD" or not body or status >= 300:
            # nothing to break in the body: a body fault becomes a reset before the answer
            if fault in _CUT_BODY:
                if fault is Fault.STALL:
                    await asyncio.sleep(self.plan.stall_seconds)
                reset(request)
                return web.Response(status=500)
            return plain(request, status, headers, body)
        if fault is Fault.CORRUPT_BYTE:
            pos = int(self._rand(info, "pos") * len(body))
            body = body[:pos] + bytes([body[pos] ^ 0x20]) + body[pos + 1 :]
        elif fault is Fault.BAD_LIST_XML:
            body = body[: len(body) // 2] + b"<<not xml &&"
        if fault in (*_CUT_BODY, Fault.DRIP):
            assert fault is not None
            return await streamed(request, (status, headers, body), fault, self.plan)
        return plain(request, status, headers, body)

    async def _hostile(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        """Answer ``request`` with one of :data:`HOSTILE_FAULTS`."""
        plan = self.plan
        targets = {
            Fault.REDIRECT_OTHER_HOST: self.other.url,
            Fault.REDIRECT_OTHER_PORT: self.other.same_host_url,
            Fault.REDIRECT_SAME_HOST: self.endpoint_url,
        }
        if fault in targets:
            return await hostile.redirect(request, plan, targets[fault])
        if fault is Fault.ECHO_HEADERS:
            await request.read()
            message = hostile.echoed_headers(request)
            return error_response(request, plan.echo_status, plan.echo_code, message)
        if fault is Fault.LIST_EMPTY_PAGES:
            self._state.empty_pages += 1
            return hostile.empty_page(self._state.empty_pages)
        if fault is Fault.CHUNKED_OVERSIZE:
            return await hostile.chunked_oversize(
                request, plan.oversize_bytes, self._count_oversize
            )
        path = hostile.first_page_path(request.raw_path) if fault is Fault.LIST_TOKEN_LOOP else None
        status, headers, body = await self._forward(request, path)
        if status != 200:
            return plain(request, status, headers, body)
        if fault in (Fault.LENGTH_SHORT, Fault.LENGTH_LONG):
            announced = len(body) + (7 if fault is Fault.LENGTH_LONG else -7)
            return await raw_response(request, status, headers, body, max(0, announced))
        return plain(request, status, headers, hostile.edit_list_page(fault, body, plan))

    def _count_oversize(self, sent: int) -> None:
        self.oversize_sent += sent

    async def _forward(self, request: web.Request, path: str | None = None) -> Answer:
        assert self._session is not None
        return await forward(self._session, self.upstream, request, path)


@contextlib.contextmanager
def run_fault_proxy(
    upstream: str, plan: FaultPlan | None = None, **kwargs: Any
) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` on its own event loop thread (for blocking code)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    proxy = FaultProxy(upstream, plan, **kwargs)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    thread = threading.Thread(target=run, name="kl3m-fault-proxy", daemon=True)
    thread.start()
    loop.call_soon_threadsafe(ready.set)
    ready.wait()
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=30)
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
