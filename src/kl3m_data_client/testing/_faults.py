"""A fault-injecting HTTP proxy for S3 endpoints (tests and benchmarks).

:class:`FaultProxy` listens on a free loopback port and forwards every request to an
upstream S3 endpoint (typically the local moto server), keeping the method, the raw path and
query, the body and every header -- including ``Host`` and ``Authorization``: point the
client's ``endpoint_url`` at the proxy, it signs for the proxy's host, and the upstream sees
the very request that was signed.

On a seeded selection of requests it injects one fault of :class:`Fault`:

==================  ==========================================================================
``slowdown_503``    503 with an S3 ``SlowDown`` XML error body
``error_500``       500 with an S3 ``InternalError`` XML error body
``throttle_429``    429 with a ``TooManyRequestsException`` XML error body
``reset_before``    TCP reset (SO_LINGER 0) before any response byte
``reset_mid_body``  headers and part of the body, then a TCP reset
``truncate``        correct ``Content-Length``, part of the body, then a clean close (EOF)
``stall``           part of the body (or nothing, for bodiless answers), then silence past
                    the client's read timeout
``drip``            the whole, correct body in small pieces with pauses (must succeed)
``corrupt_byte``    one byte of a GetObject body flipped, length unchanged
``bad_list_xml``    a ListObjectsV2 page replaced by invalid XML (status 200)
==================  ==========================================================================

Hostile misbehaviours (:data:`HOSTILE_FAULTS`, never chosen unless listed in ``kinds``):

=======================  =====================================================================
``redirect_other_host``  ``redirect_status`` (307) to the same path on a second loopback
                         listener (:attr:`FaultProxy.other`), which records every request it
                         gets, with its headers, and answers ``redirect_body``
``redirect_same_host``   ``redirect_status`` to the proxy itself, with ``x-amz-bucket-region``
                         (S3's region redirect: botocore's own handling re-sends it)
``list_token_loop``      every ListObjectsV2 page is the first one, truncated, with the same
                         ``NextContinuationToken``
``list_no_token``        a ListObjectsV2 page marked truncated without a continuation token
``list_empty_pages``     endless empty truncated pages, each with a fresh token
``list_repeat_key``      the first key of a page listed twice
``list_out_of_order``    the first and last keys of a page swapped
``list_foreign_key``     ``foreign_key`` (outside the requested prefix) added to the page
``chunked_oversize``     a GetObject answered with a chunked body (no Content-Length) of
                         ``oversize_bytes`` bytes; ``oversize_sent`` counts what was written
``length_short``         the whole body sent under a ``Content-Length`` 7 bytes too short
``length_long``          the whole body sent under a ``Content-Length`` 7 bytes too long, then
                         the connection is closed
``echo_headers``         ``echo_status`` / ``echo_code`` error whose message repeats every
                         request header (``name is value``), session token included
=======================  =====================================================================

``latency`` delays every answer by a fixed number of seconds.

Decisions are deterministic: the n-th request for a given ``(method, path?query)`` gets the
same decision for the same seed, whatever the order in which concurrent requests arrive.
``fired`` counts injected faults per kind, so a test can prove that its faults were hit.

Use it as ``async with FaultProxy(upstream, plan) as proxy:`` on a running loop, or from
blocking code as ``with run_fault_proxy(upstream, plan) as proxy:`` (its own loop thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

__all__ = [
    "ALL_FAULTS",
    "HOSTILE_FAULTS",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "RequestInfo",
    "run_fault_proxy",
]


class Fault(str, enum.Enum):
    """The kinds of injected faults."""

    SLOWDOWN_503 = "slowdown_503"
    ERROR_500 = "error_500"
    THROTTLE_429 = "throttle_429"
    RESET_BEFORE = "reset_before"
    RESET_MID_BODY = "reset_mid_body"
    TRUNCATE = "truncate"
    STALL = "stall"
    DRIP = "drip"
    CORRUPT_BYTE = "corrupt_byte"
    BAD_LIST_XML = "bad_list_xml"
    REDIRECT_OTHER_HOST = "redirect_other_host"
    REDIRECT_SAME_HOST = "redirect_same_host"
    LIST_TOKEN_LOOP = "list_token_loop"
    LIST_NO_TOKEN = "list_no_token"
    LIST_EMPTY_PAGES = "list_empty_pages"
    LIST_REPEAT_KEY = "list_repeat_key"
    LIST_OUT_OF_ORDER = "list_out_of_order"
    LIST_FOREIGN_KEY = "list_foreign_key"
    CHUNKED_OVERSIZE = "chunked_oversize"
    LENGTH_SHORT = "length_short"
    LENGTH_LONG = "length_long"
    ECHO_HEADERS = "echo_headers"


#: The misbehaviours of a hostile server (chosen only when listed in ``FaultPlan.kinds``).
HOSTILE_FAULTS: frozenset[Fault] = frozenset(
    {
        Fault.REDIRECT_OTHER_HOST,
        Fault.REDIRECT_SAME_HOST,
        Fault.LIST_TOKEN_LOOP,
        Fault.LIST_NO_TOKEN,
        Fault.LIST_EMPTY_PAGES,
        Fault.LIST_REPEAT_KEY,
        Fault.LIST_OUT_OF_ORDER,
        Fault.LIST_FOREIGN_KEY,
        Fault.CHUNKED_OVERSIZE,
        Fault.LENGTH_SHORT,
        Fault.LENGTH_LONG,
        Fault.ECHO_HEADERS,
    }
)
#: The transient faults of an honest but unreliable server (the default ``kinds``).
ALL_FAULTS: frozenset[Fault] = frozenset(Fault) - HOSTILE_FAULTS
_LIST_FAULTS = frozenset(
    {
        Fault.BAD_LIST_XML,
        Fault.LIST_TOKEN_LOOP,
        Fault.LIST_NO_TOKEN,
        Fault.LIST_EMPTY_PAGES,
        Fault.LIST_REPEAT_KEY,
        Fault.LIST_OUT_OF_ORDER,
        Fault.LIST_FOREIGN_KEY,
    }
)
_GET_FAULTS = frozenset(
    {Fault.CORRUPT_BYTE, Fault.CHUNKED_OVERSIZE, Fault.LENGTH_SHORT, Fault.LENGTH_LONG}
)
#: Faults that need a response body to act on.
_BODY_FAULTS = frozenset({Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.DRIP})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True)
class RequestInfo:
    """What a fault decision and a credential check see of a request."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    attempt: int
    """1 for the first request of this (method, path?query), 2 for its first repeat, ..."""

    @property
    def operation(self) -> str:
        """A best guess of the S3 operation (ListObjectsV2, GetObject, HeadObject, ...)."""
        q = parse_qs(self.query, keep_blank_values=True)
        parts = [p for p in self.path.split("/") if p]
        if self.method == "GET" and "list-type" in q:
            return "ListObjectsV2"
        if self.method == "GET" and len(parts) >= 2:
            return "GetObject"
        if self.method == "HEAD" and len(parts) >= 2:
            return "HeadObject"
        return f"{self.method} {'bucket' if len(parts) <= 1 else 'object'}"


@dataclass
class FaultPlan:
    """Which requests get which faults.

    Args:
        rate: probability that a request gets a fault (0 disables random faults, 1 faults all).
        kinds: the faults to choose from (each request gets one that applies to it).
        seed: the seed of every decision.
        ensure_each: inject each enabled kind on the first request it applies to, so a test
            of a few hundred requests is sure to hit every kind.
        max_faults_per_request: faults injected at most this many times for the same
            (method, path?query); ``None`` for no limit (an endpoint where everything fails).
        select: only requests for which this returns True can get a fault.
        stall_seconds: how long a stall lasts (make it longer than the client's read timeout).
        drip_delay: pause between drip pieces; ``drip_pieces``: how many pieces.
        credential_check: called with the request; returning an S3 error code (for example
            ``"ExpiredToken"``) answers 403 with that code instead of forwarding.
        latency: seconds every answer is delayed by (a fixed-latency endpoint).
        redirect_status: the status of the redirect misbehaviours (301, 302, 307, 308).
        redirect_body: what the other host of ``redirect_other_host`` answers.
        foreign_key: the key ``list_foreign_key`` adds to listing pages.
        oversize_bytes: the length of a ``chunked_oversize`` body.
        echo_status, echo_code: the error answered by ``echo_headers``.
    """

    rate: float = 0.1
    kinds: Collection[Fault] = ALL_FAULTS
    seed: int = 0
    ensure_each: bool = False
    max_faults_per_request: int | None = 2
    select: Callable[[RequestInfo], bool] | None = None
    stall_seconds: float = 3.0
    drip_delay: float = 0.005
    drip_pieces: int = 16
    credential_check: Callable[[RequestInfo], str | None] | None = None
    latency: float = 0.0
    redirect_status: int = 307
    redirect_body: bytes = b'{"substituted": "by another host"}'
    foreign_key: str = "private/secret.json"
    oversize_bytes: int = 64 << 20
    echo_status: int = 400
    echo_code: str = "InvalidArgument"


def _xml_error(code: str, message: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>{extra}"
        "<RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
_TRUNCATED = re.compile(rb"<IsTruncated>\w+</IsTruncated>")
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>[^<]*</NextContinuationToken>")


def _truncated(body: bytes, token: str | None) -> bytes:
    """``body`` (a ListBucketResult) marked truncated, with ``token`` as its next token."""
    body = _NEXT_TOKEN.sub(b"", body)
    tag = b"<IsTruncated>true</IsTruncated>"
    if token is not None:
        tag += f"<NextContinuationToken>{xml_escape(token)}</NextContinuationToken>".encode()
    return _TRUNCATED.sub(lambda _: tag, body, count=1)


def _edit_contents(body: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """``body`` with its ``<Contents>`` entries replaced by ``edit(entries)`` (same place)."""
    entries = _CONTENTS.findall(body)
    new = b"".join(edit(entries))
    if entries:
        first = body.index(entries[0])
        last = body.rindex(entries[-1]) + len(entries[-1])
        return body[:first] + new + body[last:]
    return body.replace(b"</ListBucketResult>", new + b"</ListBucketResult>", 1)


def _foreign_entry(key: str) -> bytes:
    return (
        f"<Contents><Key>{xml_escape(key)}</Key>"
        "<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        '<ETag>"00000000000000000000000000000000"</ETag><Size>12</Size>'
        "<StorageClass>STANDARD</StorageClass></Contents>"
    ).encode()


_STATUS_FAULTS: dict[Fault, tuple[int, str, str]] = {
    Fault.SLOWDOWN_503: (503, "SlowDown", "Please reduce your request rate."),
    Fault.ERROR_500: (500, "InternalError", "We encountered an internal error."),
    Fault.THROTTLE_429: (429, "TooManyRequestsException", "Too many requests."),
}


@dataclass
class _State:
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    faulted: Counter[tuple[str, str]] = field(default_factory=Counter)
    empty_pages: int = 0


@dataclass(frozen=True)
class OtherRequest:
    """A request received by the other host of ``redirect_other_host``."""

    method: str
    path: str
    headers: Mapping[str, str]


class _OtherHost:
    """The second loopback listener a hostile redirect points to; it records what it gets."""

    def __init__(self, host: str, body: bytes) -> None:
        self.host = host
        self.body = body
        self.port = 0
        self.requests: list[OtherRequest] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(OtherRequest(request.method, request.raw_path, dict(request.headers)))
        await request.read()
        return web.Response(body=self.body, content_type="application/json")


class FaultProxy:
    """The proxy; see the module docstring. ``endpoint_url`` is valid once started."""

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
        self.other = _OtherHost(host, self.plan.redirect_body)
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
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=0.5
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            if self.plan.kinds and Fault.REDIRECT_OTHER_HOST in self.plan.kinds:
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
        h = hashlib.blake2b(
            f"{self.plan.seed}|{salt}|{info.method}|{info.path}?{info.query}|{info.attempt}".encode(),
            digest_size=8,
        ).digest()
        return int.from_bytes(h, "big") / 2**64

    def _applicable(self, info: RequestInfo) -> list[Fault]:
        op = info.operation
        out: list[Fault] = []
        for kind in sorted(self.plan.kinds, key=lambda k: k.value):
            if kind in _LIST_FAULTS and op != "ListObjectsV2":
                continue
            if kind in _GET_FAULTS and op != "GetObject":
                continue
            if kind in _BODY_FAULTS and info.method == "HEAD":
                continue
            out.append(kind)
        return out

    def _decide(self, info: RequestInfo) -> Fault | None:
        plan = self.plan
        ident = (info.method, f"{info.path}?{info.query}")
        limit = plan.max_faults_per_request
        if limit is not None and self._state.faulted[ident] >= limit:
            return None
        if plan.select is not None and not plan.select(info):
            return None
        kinds = self._applicable(info)
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
    async def _handle(self, request: web.Request) -> web.StreamResponse:
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
        if self.plan.credential_check is not None:
            code = self.plan.credential_check(info)
            if code:
                self.rejected[code] += 1
                return self._error_response(request, 403, code, "The credentials were rejected.")
        if self.plan.latency > 0:
            await asyncio.sleep(self.plan.latency)
        fault = self._decide(info)
        if fault is not None:
            self.fired[fault] += 1
        if fault in HOSTILE_FAULTS:
            assert fault is not None
            return await self._hostile(request, info, fault)
        if fault in _STATUS_FAULTS:
            status, code, message = _STATUS_FAULTS[fault]
            return self._error_response(request, status, code, message)
        if fault is Fault.RESET_BEFORE:
            await request.read()
            _reset(request)
            return web.Response(status=500)
        if fault is Fault.STALL and request.method == "HEAD":
            await asyncio.sleep(self.plan.stall_seconds)
            _reset(request)
            return web.Response(status=500)

        status, headers, body = await self._forward(request)
        if request.method == "HEAD" or not body or status >= 300:
            # nothing to break in the body: a body fault becomes a reset before the answer
            if fault in (Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.STALL):
                if fault is Fault.STALL:
                    await asyncio.sleep(self.plan.stall_seconds)
                _reset(request)
                return web.Response(status=500)
            return self._plain(request, status, headers, body)
        if fault is Fault.CORRUPT_BYTE:
            pos = int(self._rand(info, "pos") * len(body))
            body = body[:pos] + bytes([body[pos] ^ 0x20]) + body[pos + 1 :]
        elif fault is Fault.BAD_LIST_XML:
            body = body[: len(body) // 2] + b"<<not xml &&"
        if fault in (Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.STALL, Fault.DRIP):
            return await self._streamed(request, status, headers, body, fault)
        return self._plain(request, status, headers, body)

    async def _hostile(
        self, request: web.Request, info: RequestInfo, fault: Fault
    ) -> web.StreamResponse:
        """Answer ``request`` with one of :data:`HOSTILE_FAULTS`."""
        plan = self.plan
        if fault in (Fault.REDIRECT_OTHER_HOST, Fault.REDIRECT_SAME_HOST):
            await request.read()
            if fault is Fault.REDIRECT_OTHER_HOST:
                base = f"http://{self.other.host}:{self.other.port}"
            else:
                base = self.endpoint_url
            code = (
                "PermanentRedirect" if plan.redirect_status in (301, 308) else "TemporaryRedirect"
            )
            body = b""
            if request.method != "HEAD":
                body = _xml_error(code, "Please re-send this request elsewhere.")
            return web.Response(
                status=plan.redirect_status,
                body=body,
                headers={
                    "Location": base + request.raw_path,
                    "x-amz-bucket-region": "us-east-1",
                    "Content-Type": "application/xml",
                },
            )
        if fault is Fault.ECHO_HEADERS:
            await request.read()
            echoed = "; ".join(f"{k} is {v}" for k, v in request.headers.items())
            message = f"Your request was not understood. We received: {echoed}"
            return self._error_response(request, plan.echo_status, plan.echo_code, message)
        if fault is Fault.LIST_EMPTY_PAGES:
            self._state.empty_pages += 1
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
                f"<NextContinuationToken>empty-{self._state.empty_pages}</NextContinuationToken>"
                "</ListBucketResult>"
            ).encode()
            return web.Response(status=200, body=body, content_type="application/xml")
        if fault is Fault.CHUNKED_OVERSIZE:
            return await self._oversize(request)
        path = request.raw_path
        if fault is Fault.LIST_TOKEN_LOOP:  # always the first page, always the same token
            split = urlsplit(path)
            query = [
                (k, v)
                for k, vs in parse_qs(split.query, keep_blank_values=True).items()
                for v in vs
                if k != "continuation-token"
            ]
            path = f"{split.path}?{urlencode(query)}"
        status, headers, body = await self._forward(request, path)
        if status != 200:
            return self._plain(request, status, headers, body)
        if fault is Fault.LIST_TOKEN_LOOP:
            body = _truncated(body, "kl3m-fault-same-token")
        elif fault is Fault.LIST_NO_TOKEN:
            body = _truncated(body, None)
        elif fault is Fault.LIST_REPEAT_KEY:
            body = _edit_contents(body, lambda e: e[:1] + e)
        elif fault is Fault.LIST_OUT_OF_ORDER:
            body = _edit_contents(body, lambda e: e[-1:] + e[1:-1] + e[:1] if len(e) > 1 else e)
        elif fault is Fault.LIST_FOREIGN_KEY:
            body = _edit_contents(body, lambda e: [*e, _foreign_entry(plan.foreign_key)])
        elif fault in (Fault.LENGTH_SHORT, Fault.LENGTH_LONG):
            announced = len(body) + (7 if fault is Fault.LENGTH_LONG else -7)
            return await self._raw(request, status, headers, body, max(0, announced))
        return self._plain(request, status, headers, body)

    async def _oversize(self, request: web.Request) -> web.StreamResponse:
        """A chunked body (no Content-Length) of ``oversize_bytes``, written as it is read."""
        await request.read()
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        piece = b" " * (256 << 10)
        left = self.plan.oversize_bytes
        try:
            while left > 0:
                chunk = piece[: min(left, len(piece))]
                await resp.write(chunk)
                self.oversize_sent += len(chunk)
                left -= len(chunk)
            await resp.write_eof()
        except (ConnectionError, OSError):
            pass  # the client stopped reading: what it was sent is counted
        return resp

    async def _raw(
        self,
        request: web.Request,
        status: int,
        headers: CIMultiDict[str],
        body: bytes,
        announced: int,
    ) -> web.StreamResponse:
        """Write a response by hand with ``Content-Length: announced``, then close."""
        transport = request.transport
        lines = [f"HTTP/1.1 {status} OK"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "date"]
        lines.append(f"Content-Length: {announced}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        if transport is not None:
            transport.write(raw)
            await asyncio.sleep(0.05)  # let the bytes leave before the FIN
            transport.close()
        return web.Response(status=500)

    async def _forward(
        self, request: web.Request, path: str | None = None
    ) -> tuple[int, CIMultiDict[str], bytes]:
        assert self._session is not None
        data = await request.read()
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        url = URL(self.upstream + (path or request.raw_path), encoded=True)
        async with self._session.request(
            request.method,
            url,
            headers=headers,
            data=data if data else None,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        ) as resp:
            body = await resp.read()
            out: CIMultiDict[str] = CIMultiDict(
                (k, v) for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP
            )
            if request.method == "HEAD" and "Content-Length" in resp.headers:
                out["Content-Length"] = resp.headers["Content-Length"]
            return resp.status, out, body

    def _error_response(
        self, request: web.Request, status: int, code: str, message: str
    ) -> web.Response:
        body = b"" if request.method == "HEAD" else _xml_error(code, message)
        return web.Response(
            status=status,
            body=body,
            content_type="application/xml",
            headers={"x-amz-request-id": "FAULTPROXY"},
        )

    @staticmethod
    def _plain(
        request: web.Request, status: int, headers: CIMultiDict[str], body: bytes
    ) -> web.Response:
        if request.method == "HEAD":
            resp = web.Response(status=status, headers=headers)
            return resp
        return web.Response(status=status, headers=headers, body=body)

    async def _streamed(
        self,
        request: web.Request,
        status: int,
        headers: CIMultiDict[str],
        body: bytes,
        fault: Fault,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        if fault is Fault.DRIP:
            n = max(1, self.plan.drip_pieces)
            step = max(1, -(-len(body) // n))
            for i in range(0, len(body), step):
                await resp.write(body[i : i + step])
                await asyncio.sleep(self.plan.drip_delay)
            await resp.write_eof()
            return resp
        cut = max(0, min(len(body) - 1, len(body) // 2))
        if cut:
            await resp.write(body[:cut])
        if fault is Fault.STALL:
            await asyncio.sleep(self.plan.stall_seconds)
        if fault is Fault.TRUNCATE:
            await asyncio.sleep(0.01)  # let the bytes leave before the FIN
            if request.transport is not None:
                request.transport.close()
        else:
            await asyncio.sleep(0.01)
            _reset(request)
        return resp


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


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
