"""The hostile misbehaviours of the fault proxy (``HOSTILE_FAULTS``) and the other host."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape

from aiohttp import web

from kl3m_data_client.testing._faults._http import listen, xml_error
from kl3m_data_client.testing._faults._plan import Fault, FaultPlan

_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
_TRUNCATED = re.compile(rb"<IsTruncated>\w+</IsTruncated>")
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>[^<]*</NextContinuationToken>")


@dataclass(frozen=True)
class OtherRequest:
    """A request received by the other host of ``redirect_other_host``."""

    method: str
    path: str
    headers: Mapping[str, str]


class OtherHost:
    """The second loopback listener a hostile redirect points to; it records what it gets.

    It listens on ``host`` (the proxy's) and is named ``name`` in ``redirect_other_host``
    (another host name for the same address: ``localhost`` for ``127.0.0.1``), and ``host``
    in ``redirect_other_port`` (the endpoint's host on another port).
    """

    def __init__(self, host: str, body: bytes) -> None:
        self.host = host
        self.name = "127.0.0.1" if host == "localhost" else "localhost"
        self.body = body
        self.port = 0
        self.requests: list[OtherRequest] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://name:port``: this listener under another host name than the proxy's."""
        return f"http://{self.name}:{self.port}"

    @property
    def same_host_url(self) -> str:
        """``http://host:port``: this listener under the proxy's host name (another port)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await listen(app, self.host)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(OtherRequest(request.method, request.raw_path, dict(request.headers)))
        await request.read()
        return web.Response(body=self.body, content_type="application/json")


async def redirect(request: web.Request, plan: FaultPlan, base: str) -> web.Response:
    """``plan.redirect_status`` to the same path under ``base``, with a bucket region."""
    await request.read()
    code = "PermanentRedirect" if plan.redirect_status in (301, 308) else "TemporaryRedirect"
    body = b""
    if request.method != "HEAD":
        body = xml_error(code, "Please re-send this request elsewhere.")
    return web.Response(
        status=plan.redirect_status,
        body=body,
        headers={
            "Location": base + request.raw_path,
            "x-amz-bucket-region": "us-east-1",
            "Content-Type": "application/xml",
        },
    )


def echoed_headers(request: web.Request) -> str:
    """The ``echo_headers`` error message: every request header, ``name is value``."""
    echoed = "; ".join(f"{k} is {v}" for k, v in request.headers.items())
    return f"Your request was not understood. We received: {echoed}"


def empty_page(number: int) -> web.Response:
    """An empty ListObjectsV2 page marked truncated, with a fresh token."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
        f"<NextContinuationToken>empty-{number}</NextContinuationToken>"
        "</ListBucketResult>"
    ).encode()
    return web.Response(status=200, body=body, content_type="application/xml")


async def chunked_oversize(
    request: web.Request, size: int, on_sent: Callable[[int], None]
) -> web.StreamResponse:
    """A chunked body (no Content-Length) of ``size`` bytes; ``on_sent`` counts each write."""
    await request.read()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    piece = b" " * (256 << 10)
    left = size
    try:
        while left > 0:
            chunk = piece[: min(left, len(piece))]
            await resp.write(chunk)
            on_sent(len(chunk))
            left -= len(chunk)
        await resp.write_eof()
    except (ConnectionError, OSError):
        pass  # the client stopped reading: what it was sent is counted
    return resp


def first_page_path(path: str) -> str:
    """``path`` without its continuation token (``list_token_loop``: always the first page)."""
    split = urlsplit(path)
    query = [
        (k, v)
        for k, vs in parse_qs(split.query, keep_blank_values=True).items()
        for v in vs
        if k != "continuation-token"
    ]
    return f"{split.path}?{urlencode(query)}"


def edit_list_page(fault: Fault, body: bytes, plan: FaultPlan) -> bytes:
    """A ListObjectsV2 page ``body`` as the list misbehaviour ``fault`` answers it."""
    if fault is Fault.LIST_TOKEN_LOOP:
        return _truncated(body, "kl3m-fault-same-token")
    if fault is Fault.LIST_NO_TOKEN:
        return _truncated(body, None)
    if fault is Fault.LIST_REPEAT_KEY:
        return _edit_contents(body, lambda e: e[:1] + e)
    if fault is Fault.LIST_OUT_OF_ORDER:
        return _edit_contents(body, lambda e: e[-1:] + e[1:-1] + e[:1] if len(e) > 1 else e)
    if fault is Fault.LIST_FOREIGN_KEY:
        return _edit_contents(body, lambda e: [*e, _foreign_entry(plan.foreign_key)])
    return body


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
