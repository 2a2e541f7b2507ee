"""Listings: checked ListObjectsV2 pages, objects and the checks that make a listing trusted.

:class:`ListingCheck` checks one page after the other (order, tokens, foreign keys, endless
empty pages); :func:`checked_pages` requests the next page while the caller consumes the
current one. The requests themselves are the store's (``S3Store.list_pages``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.parsers import ResponseParserError

from kl3m_data_client._errors import KL3MError, ServiceError, UntrustedResponseError
from kl3m_data_client._s3errors import BODY_ERRORS, backoff
from kl3m_data_client._stream import within

logger = logging.getLogger("kl3m_data_client")

#: Consecutive truncated listing pages without a key (or common prefix) inside the prefix
#: before a listing is refused as endless.
MAX_EMPTY_PAGES = 50


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed or HEADed object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None


@dataclass(slots=True)
class ListPage:
    """One checked ListObjectsV2 page.

    ``objects`` and ``prefixes`` are inside the requested prefix and in strictly ascending
    order (within the page and after every earlier page). ``foreign`` holds the keys and
    common prefixes the server listed *outside* the prefix: they were skipped (and logged
    as warnings) and are never part of ``objects``. ``number`` counts pages from 1.
    """

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None
    foreign: list[str] = field(default_factory=list)
    number: int = 0


def listing_error(prefix: str, number: int, reason: str, endpoint_url: str | None) -> ServiceError:
    """The systemic error of a listing page that cannot be trusted."""
    return UntrustedResponseError(
        f"the listing of {prefix!r} from {endpoint_url or 'S3'} cannot be trusted: page "
        f"{number} {reason}",
        code="InvalidListing",
    )


async def checked_pages(
    first: Awaitable[Any], more: Callable[[str], Awaitable[Any]], check: ListingCheck
) -> AsyncIterator[ListPage]:
    """The checked pages of a listing: ``first`` answer, then ``more(token)`` for each next one.

    The next page is requested while the caller consumes this one (one page ahead).
    """
    ahead: asyncio.Future[Any] | None = None
    try:
        response = await first
        while True:
            page = check.page(response)
            if page.next_token:
                ahead = asyncio.ensure_future(more(page.next_token))
            yield page
            if ahead is None:
                return
            response, ahead = await ahead, None
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def list_once(
    client: Any,
    params: dict[str, Any],
    prefix: str,
    *,
    max_attempts: int,
    seconds: float,
    error: Callable[[BaseException, str], KL3MError],
    failed: Callable[[str, int, float, BaseException], KL3MError],
) -> Any:
    """One ListObjectsV2 page, retried (same token) on broken or unparsable answers.

    botocore already retried connection errors and 5xx/throttling answers
    ``max_attempts`` times: those end here. What botocore does not retry -- a body cut
    while it is read, or XML that does not parse -- is retried here, ``max_attempts``
    times within ``seconds``.
    """
    what = f"listing of {prefix!r}"
    if params.get("ContinuationToken"):
        what += " (continued page)"
    started = time.monotonic()
    deadline = started + seconds
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            return await within(client.list_objects_v2(**params), remaining)
        except ClientError as exc:
            raise error(exc, what) from exc
        except (HTTPClientError, EndpointConnectionError, ConnectTimeoutError) as exc:
            # botocore already made max_attempts tries of this request
            attempts = max(attempt, max_attempts)
            raise failed(what, attempts, started, exc) from exc
        except (ResponseParserError, *BODY_ERRORS) as exc:
            if attempt >= max_attempts or time.monotonic() >= deadline:
                raise failed(what, attempt, started, exc) from exc
            logger.debug("retrying %s after %s", what, type(exc).__name__)
            await backoff(attempt, deadline)
        except BotoCoreError as exc:
            raise error(exc, what) from exc


class ListingCheck:
    """Checks one listing page after the other (see ``S3Store.list_pages``)."""

    def __init__(
        self,
        prefix: str,
        start_after: str,
        *,
        endpoint_url: str | None = None,
        foreign: list[str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        #: Where every skipped foreign key is also appended (the store's ``foreign_keys``).
        self.foreign = foreign if foreign is not None else []
        #: The greatest key or common prefix accepted so far (keys must come after it).
        self.last = start_after
        self.number = 0
        self.empty_run = 0
        self.tokens: set[str] = set()

    def _fail(self, reason: str) -> ServiceError:
        return listing_error(self.prefix, self.number, reason, self.endpoint_url)

    def _inside(self, name: str, kind: str, page: ListPage) -> bool:
        if name.startswith(self.prefix):
            return True
        page.foreign.append(name)
        self.foreign.append(name)
        logger.warning(
            "listing of %r, page %d: skipped %s %r outside the prefix",
            self.prefix,
            self.number,
            kind,
            name,
        )
        return False

    def _ordered(self, names: list[str], kind: str) -> None:
        previous = self.last
        for name in names:
            if name == previous:
                raise self._fail(f"repeats the {kind} {name!r}")
            if name < previous:
                raise self._fail(f"lists the {kind} {name!r} after {previous!r} (not ascending)")
            previous = name

    def page(self, response: Any) -> ListPage:
        """The checked page of ``response``; raises ServiceError if it cannot be trusted."""
        self.number += 1
        page = ListPage(number=self.number)
        truncated = bool(response.get("IsTruncated"))
        token = response.get("NextContinuationToken") or None
        if truncated:
            if not isinstance(token, str):
                raise self._fail("is truncated but has no continuation token")
            if token in self.tokens:
                raise self._fail("repeats a continuation token (the listing would never end)")
            self.tokens.add(token)
        for item in response.get("Contents", ()) or ():
            key = item.get("Key")
            if not isinstance(key, str):
                raise self._fail(f"has an entry without a key: {item!r}")
            if self._inside(key, "key", page):
                page.objects.append(
                    ObjectInfo(
                        key=key,
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified"),
                    )
                )
        for entry in response.get("CommonPrefixes", ()) or ():
            name = entry.get("Prefix")
            if isinstance(name, str) and self._inside(name, "common prefix", page):
                page.prefixes.append(name)
        keys = [info.key for info in page.objects]
        self._ordered(keys, "key")
        self._ordered(page.prefixes, "common prefix")
        if keys and page.prefixes and set(keys) & set(page.prefixes):
            raise self._fail("lists the same name as a key and a common prefix")
        self.last = max([self.last, *keys[-1:], *page.prefixes[-1:]])
        if truncated:
            page.next_token = token
            if page.objects or page.prefixes:
                self.empty_run = 0
            else:
                self.empty_run += 1
                if self.empty_run > MAX_EMPTY_PAGES:
                    raise self._fail(
                        f"is the {self.empty_run}th truncated page in a row with nothing in "
                        f"the prefix (limit {MAX_EMPTY_PAGES})"
                    )
        return page
