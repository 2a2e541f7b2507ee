"""HTTP pieces of the fault proxy: listening, forwarding, plain and broken answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from kl3m_data_client.testing._faults._plan import Fault, FaultPlan

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

#: The faults answered with an S3 error: status, code, message.
STATUS_FAULTS: dict[Fault, tuple[int, str, str]] = {
    Fault.SLOWDOWN_503: (503, "SlowDown", "Please reduce your request rate."),
    Fault.ERROR_500: (500, "InternalError", "We encountered an internal error."),
    Fault.THROTTLE_429: (429, "TooManyRequestsException", "Too many requests."),
}

Answer = tuple[int, "CIMultiDict[str]", bytes]


async def listen(
    app: web.Application, host: str, *, ssl_context: Any = None, **runner: Any
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free port of ``host``; returns the runner (to clean up) and the port."""
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
    await app_runner.setup()
    site = web.TCPSite(app_runner, host, 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return app_runner, port


async def forward(
    session: aiohttp.ClientSession, upstream: str, request: web.Request, path: str | None
) -> Answer:
    """Send ``request`` (at ``path``, its own by default) upstream as it is; the answer."""
    data = await request.read()
    headers = _end_to_end(request.headers)
    url = URL(upstream + (path or request.raw_path), encoded=True)
    async with session.request(
        request.method,
        url,
        headers=headers,
        data=data if data else None,
        allow_redirects=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    ) as resp:
        body = await resp.read()
        out = _end_to_end(resp.headers)
        if request.method == "HEAD" and "Content-Length" in resp.headers:
            out["Content-Length"] = resp.headers["Content-Length"]
        return resp.status, out, body


def _end_to_end(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """``headers`` without the hop-by-hop ones (and without ``Content-Length``)."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP)


def xml_error(code: str, message: str, extra: str = "") -> bytes:
    """An S3 XML error body."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>{extra}"
        "<RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


def error_response(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """An S3 error answer (no body to a HEAD)."""
    body = b"" if request.method == "HEAD" else xml_error(code, message)
    return web.Response(
        status=status,
        body=body,
        content_type="application/xml",
        headers={"x-amz-request-id": "FAULTPROXY"},
    )


def plain(
    request: web.Request, status: int, headers: CIMultiDict[str], body: bytes
) -> web.Response:
    """An answer passed on as it came (no body to a HEAD)."""
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, headers=headers, body=body)


def reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def raw_response(
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


async def streamed(
    request: web.Request,
    answer: Answer,
    fault: Fault,
    plan: FaultPlan,
) -> web.StreamResponse:
    """``answer`` with a body fault: dripped whole, or cut by a reset, an EOF or a stall."""
    status, headers, body = answer
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if fault is Fault.DRIP:
        n = max(1, plan.drip_pieces)
        step = max(1, -(-len(body) // n))
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
            await asyncio.sleep(plan.drip_delay)
        await resp.write_eof()
        return resp
    cut = max(0, min(len(body) - 1, len(body) // 2))
    if cut:
        await resp.write(body[:cut])
    if fault is Fault.STALL:
        await asyncio.sleep(plan.stall_seconds)
    if fault is Fault.TRUNCATE:
        await asyncio.sleep(0.01)  # let the bytes leave before the FIN
        if request.transport is not None:
            request.transport.close()
    else:
        await asyncio.sleep(0.01)
        reset(request)
    return resp
