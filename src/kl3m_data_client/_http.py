"""HTTP pieces of the aiobotocore path: no redirect is followed, bodies are read within a limit.

:class:`NoRedirectHTTPSession` is installed in every aiobotocore client of the store;
:func:`read_body` reads a GetObject body as announced, or chunk by chunk under the size limit
when there is no ``Content-Length``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiobotocore.httpsession import AIOHTTPSession
from botocore.exceptions import BotoCoreError

from kl3m_data_client._errors import SizeLimitExceededError
from kl3m_data_client._redact import redact_exception as scrub
from kl3m_data_client._s3errors import BODY_ERRORS, BrokenBody, describe

#: Bytes asked of the connection per read of a body (the size limit is checked per read).
READ_CHUNK = 1 << 20


class _NoRedirects:
    """An aiohttp session seen through a facade whose requests never follow redirects."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        kwargs["allow_redirects"] = False
        return self._session.request(method, url, **kwargs)


class NoRedirectHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, except that no redirect is followed by aiohttp.

    aiohttp follows 301/302/303/307/308 by default, to any host, carrying the signed
    headers (``X-Amz-Security-Token`` included) and handing the other host's body to
    botocore. urllib3 under plain botocore follows none; with this session botocore sees
    every 3xx answer as it would there (its S3 region redirect re-resolves the endpoint
    from the bucket's region, never from the ``Location`` header). Installed with
    ``AioConfig(http_session_cls=...)``.
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        return _NoRedirects(await super()._get_session(proxy_url))


def header_text(value: object) -> str | None:
    """A header value as text (botocore keeps some as bytes)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


async def read_body(
    body: Any, key: str, length: int | None, limit: int, info: dict[str, Any]
) -> bytes:
    """Read an aiobotocore ``body``, never more than ``limit`` bytes.

    With a ``Content-Length`` (already checked against ``limit``) the body is read as
    announced, in one call: the HTTP client reads no byte beyond it, and fewer bytes is a
    broken body. Without one (chunked), it is read in chunks and refused as soon as it
    passes ``limit``; the chunks are joined once at the end.
    """
    chunks: list[bytes] = []
    total = 0
    try:
        async with body as stream:
            if length is not None:  # announced, within the limit: read as announced
                data: bytes = await stream.read()
                if len(data) != length:
                    raise BrokenBody(f"got {len(data)} of {length} bytes")
                return data
            while True:
                chunk = await stream.read(READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise SizeLimitExceededError(
                        key,
                        f"object body passed the limit of {limit} bytes while read "
                        "(no Content-Length)",
                        **info,
                    )
                chunks.append(chunk)
    except (BotoCoreError, *BODY_ERRORS) as exc:
        raise BrokenBody(describe(scrub(exc))) from exc
    return b"".join(chunks)
