"""The optional obstore data plane: GETs and listings through obstore (Rust ``object_store``).

Chosen with ``data_plane="obstore"``; :meth:`S3Store.get` and :meth:`S3Store.list_pages` use
it. HEADs and delimiter listings stay on aiobotocore, and so does everything around a GET:
the semaphore, the retries of broken bodies, the per-object deadline, the ETag check and the
error mapping of ``_store``. This module supplies one GET attempt
(:meth:`ObstorePlane.get_once`), shaped like ``S3Store._get_once``, and listings
(:meth:`ObstorePlane.list_pages`), shaped like ``S3Store.list_pages``:

* credentials come from the aiobotocore session (``get_credentials()``) through obstore's
  ``credential_provider`` callback, so refreshable credentials refresh through botocore;
* obstore's HTTP errors become botocore ``ClientError`` (same codes, same typed errors),
  a request that fails after obstore's own retries becomes ``_Spent``, a body that breaks
  while it is read becomes ``_BrokenBody`` (retried by the loop of ``S3Store.get``);
* keys obstore cannot address (empty or ``.``/``..`` segments, a leading or trailing ``/``,
  control characters) are fetched through aiobotocore;
* a listing goes through obstore only when obstore lists exactly what ListObjectsV2 would:
  a prefix ending in ``/`` (obstore's prefixes are whole path segments), an addressable
  ``start_after``, no delimiter, pages of 1,000 keys. obstore refuses a page holding a key it
  cannot parse and silently drops the trailing ``/`` of a key: a page with a refused key, a key
  out of order or outside the prefix, or an empty object (a ``folder/`` marker, probably) is
  listed again through aiobotocore, and so is the rest of that listing.

``obstore`` is imported only when a plane is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, NoCredentialsError

from kl3m_data_client._errors import InvalidInputError, SizeLimitExceededError
from kl3m_data_client._stream import closing, within

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

    from kl3m_data_client._store import ListPage, ObjectInfo, S3Store

logger = logging.getLogger("kl3m_data_client")

_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_STATUS = re.compile(r"status(?: code)?:? (\d{3})\b")
_MESSAGES = re.compile(r'message: "([^"]*)"')
_NAMES = re.compile(r"\b([A-Z][A-Za-z]+)\b")
_NOISE = frozenset(
    {"Some", "None", "Custom", "Other", "OtherError", "Generic", "Http", "HttpError", "Os"}
    | {"RetryError", "RetryErrorImpl", "GET", "S3", "Error", "Request", "Connect", "Body"}
)
_UNADDRESSABLE_SEGMENTS = frozenset({"", ".", ".."})
#: Keys per ListObjectsV2 page. obstore always asks for this many (S3's maximum), so
#: listings that want smaller pages (a one-key probe) stay on aiobotocore.
LIST_PAGE = 1000
_INSTALL_HINT = "data_plane='obstore' needs obstore: pip install 'kl3m-data-client[obstore]'"


def addressable(key: str) -> bool:
    """True if obstore sends ``key`` unchanged (its paths drop or refuse some keys)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return False
    return not any(part in _UNADDRESSABLE_SEGMENTS for part in key.split("/"))


class _BotocoreCredentials:
    """obstore ``credential_provider``: the aiobotocore session's (refreshable) credentials."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    async def __call__(self) -> dict[str, Any]:
        creds = self._credentials
        get_frozen = getattr(creds, "get_frozen_credentials", None)
        frozen = await get_frozen() if get_frozen is not None else creds
        expiry = getattr(creds, "_expiry_time", None)  # refreshable credentials only
        expires_at = expiry if isinstance(expiry, datetime) else None
        if expires_at is not None:  # obstore wants datetime.timezone.utc itself
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=timezone.utc)
            expires_at = expires_at.astimezone(timezone.utc)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": expires_at,
        }


class _StaticCredentials:
    def __init__(self, key_id: str, secret: str, token: str | None) -> None:
        self._value = {
            "access_key_id": key_id,
            "secret_access_key": secret,
            "token": token,
            "expires_at": None,
        }

    def __call__(self) -> dict[str, Any]:
        return self._value


async def create_plane(store: S3Store, session: AioSession, client: Any) -> ObstorePlane | None:
    """The plane for ``store``, or None when its settings need aiobotocore (logged)."""
    try:
        import obstore  # noqa: F401
        from obstore.store import S3Store as ObjectStore
    except ImportError as exc:  # pragma: no cover - obstore is in the dev extra
        raise InvalidInputError(_INSTALL_HINT) from exc
    cfg = store.config
    options: dict[str, Any] = {
        "region": client.meta.region_name or "us-east-1",
        "virtual_hosted_style_request": not cfg.path_style,
        "skip_signature": cfg.anonymous,
        "request_payer": cfg.requester_pays,
    }
    if cfg.path_style:
        options["endpoint"] = client.meta.endpoint_url
    deadline = timedelta(seconds=store.object_deadline)
    client_options: dict[str, Any] = {
        "allow_http": str(client.meta.endpoint_url).startswith("http://"),
        "connect_timeout": timedelta(seconds=cfg.connect_timeout),
        "read_timeout": timedelta(seconds=cfg.read_timeout),
        "timeout": deadline,
        "pool_max_idle_per_host": str(cfg.max_concurrency),
    }
    verify = cfg.verify if cfg.verify is not None else session.get_config_variable("ca_bundle")
    if verify is False:
        client_options["allow_invalid_certificates"] = True
    elif isinstance(verify, str):
        try:
            client_options["root_certificate"] = await asyncio.to_thread(Path(verify).read_bytes)
        except OSError as exc:
            logger.debug("data_plane='obstore': CA bundle %r unreadable (%s)", verify, exc)
            return None
    provider: Any = None
    if not cfg.anonymous:
        if cfg.aws_access_key_id and cfg.aws_secret_access_key:
            provider = _StaticCredentials(
                cfg.aws_access_key_id, cfg.aws_secret_access_key, cfg.aws_session_token
            )
        else:
            credentials = await session.get_credentials()
            if credentials is None:  # aiobotocore raises the usual NoCredentialsError
                logger.debug("data_plane='obstore': no credentials, GETs use aiobotocore")
                return None
            provider = _BotocoreCredentials(credentials)
    try:
        object_store = ObjectStore(
            cfg.bucket,
            client_options=client_options,  # type: ignore[arg-type]
            retry_config={
                "max_retries": cfg.max_attempts - 1,
                "retry_timeout": deadline,
                "backoff": {"init_backoff": timedelta(milliseconds=50)},
            },
            credential_provider=provider,
            **options,
        )
    except Exception as exc:  # an option this obstore cannot take: keep aiobotocore
        logger.debug("data_plane='obstore' unavailable (%s); GETs use aiobotocore", exc)
        return None
    return ObstorePlane(store, object_store)


class ObstorePlane:
    """One GET attempt through obstore, with the contract of ``S3Store._get_once``."""

    def __init__(self, store: S3Store, object_store: Any) -> None:
        import obstore
        from obstore.exceptions import InvalidPathError

        self._store = store
        self._object_store = object_store
        self._get_async = obstore.get_async
        self._list = obstore.list
        self._invalid_path: type[Exception] = InvalidPathError

    async def get_once(self, client: Any, key: str) -> tuple[bytes, str | None]:
        """The bytes and, if they fail the ETag check, their digest (see ``_get_once``)."""
        from kl3m_data_client._store import _MD5_ETAG, _BrokenBody, _Spent

        store = self._store
        if not addressable(key):
            return await store._get_once(client, key)
        try:
            result = await self._get_async(self._object_store, key)
        except ValueError:  # a path obstore refuses after all
            return await store._get_once(client, key)
        except Exception as exc:
            error = _client_error(exc)
            if error is not None:
                raise error from None
            if "credential provider" in str(exc):  # botocore found none or failed to refresh
                raise NoCredentialsError() from None
            # no HTTP answer after obstore's own retries (like botocore's HTTPClientError)
            raise _Spent(ConnectionError(_brief(exc))) from None
        meta = result.meta
        length = int(meta["size"])
        limit = store.config.limits.max_object_bytes
        if length > limit:
            raise SizeLimitExceededError(
                key, f"object is {length} bytes, above the limit of {limit} bytes"
            )
        try:
            data = bytes(await result.bytes_async())
        except Exception as exc:
            # obstore already re-requested the rest of the body max_attempts - 1 times (its
            # retries cover bodies too): like botocore's spent retries, not multiplied here
            raise _Spent(_BrokenBody(_brief(exc))) from None
        if len(data) != length:
            raise _BrokenBody(f"got {len(data)} of {length} bytes")
        if store._check_md5:
            etag = str(meta.get("e_tag") or "").strip('"').lower()
            if _MD5_ETAG.fullmatch(etag):
                digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
                if digest != etag:
                    return data, digest
        return data, None

    # -- listings --------------------------------------------------------------------------
    @staticmethod
    def lists(prefix: str, start_after: str | None, page_size: int) -> bool:
        """True if obstore can list ``prefix`` (no delimiter) exactly as ListObjectsV2 does.

        obstore's prefixes are whole path segments (it lists ``{prefix}/``), so ``prefix`` must
        end with ``/``; it and ``start_after`` must reach S3 unchanged; and the pages must be
        S3's full pages (obstore always requests 1,000 keys).
        """
        return (
            page_size >= LIST_PAGE
            and prefix.endswith("/")
            and addressable(prefix[:-1])
            and (not start_after or addressable(start_after))
        )

    async def list_pages(
        self, prefix: str, start_after: str | None, page_size: int
    ) -> AsyncIterator[ListPage]:
        """The pages of ``S3Store.list_pages`` (no delimiter) for a listing :meth:`lists` takes.

        One page ahead is requested while the caller consumes the current one. A page obstore
        cannot list exactly ends the obstore part: aiobotocore lists the rest, from the last
        key handed out.
        """
        from kl3m_data_client._store import ListPage

        listing = _Listing(self, prefix, start_after or None)
        ahead: asyncio.Future[list[ObjectInfo] | None] | None = None
        try:
            try:
                objects = await listing.next()
                if objects is None:  # like ListObjectsV2: one empty page
                    yield ListPage()
                    return
                while objects is not None:
                    ahead = asyncio.ensure_future(listing.next())
                    yield ListPage(objects=objects)
                    objects, ahead = await ahead, None
                return
            except _Unlistable as exc:
                logger.debug("%r listed by aiobotocore after %r: %s", prefix, listing.after, exc)
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
        store = self._store
        client = await store.client()
        rest = store._boto_pages(client, prefix, None, listing.after, page_size)
        async with closing(rest) as pages:
            async for page in pages:
                yield page


_GARBLED = ClientError(
    {
        "Error": {"Code": "500", "Message": "Internal Server Error"},
        "ResponseMetadata": {"HTTPStatusCode": 500},
    },
    "ListObjectsV2",
)


class _Unlistable(Exception):
    """obstore cannot list this page exactly (aiobotocore lists it and the rest)."""


class _Listing:
    """An obstore listing, chunk by chunk; a broken page is requested again from its start."""

    def __init__(self, plane: ObstorePlane, prefix: str, start_after: str | None) -> None:
        self._plane = plane
        self._prefix = prefix
        self._stream: Any = None
        self._continued = False
        #: The last key listed: where a new stream (or aiobotocore) resumes.
        self.after = start_after

    async def next(self) -> list[ObjectInfo] | None:
        """The next page (1,000 keys, fewer at the end), or None at the end."""
        plane, store = self._plane, self._plane._store
        what = f"listing of {self._prefix!r}"
        if self._continued:
            what += " (continued page)"
        started = time.monotonic()
        deadline = started + store.object_deadline
        attempt = 0
        while True:
            attempt += 1
            if self._stream is None:
                self._stream = plane._list(
                    plane._object_store,
                    self._prefix[:-1],
                    offset=self.after or None,
                    chunk_size=LIST_PAGE,
                )
            try:
                batch = await within(anext(self._stream), deadline - time.monotonic())
            except StopAsyncIteration:
                return None
            except plane._invalid_path as exc:  # a key obstore cannot parse: the whole page
                self._stream = None
                raise _Unlistable(_brief(exc)) from None
            except Exception as exc:
                self._stream = None  # a failed stream ends: the next one starts after self.after
                if not isinstance(exc, asyncio.TimeoutError):
                    _raise_listing_error(store, exc, what, attempt, started)
                # a page cut or garbled while read (obstore does not retry those) or too slow
                if attempt >= store.config.max_attempts or time.monotonic() >= deadline:
                    if "invalid list response" in str(exc):
                        # botocore makes a 200 answer whose XML does not parse a 500 (S3's
                        # "200 error"): the same ServiceError here
                        raise store._error(_GARBLED, what) from None
                    raise store._failed(what, attempt, started, _broken(exc)) from None
                logger.debug("retrying %s after %s", what, type(exc).__name__)
                await store._backoff(attempt, deadline)
                continue
            objects = _objects(batch, self._prefix, self.after)
            if not objects:  # an empty chunk (never seen) would end the listing
                self._stream = None
                why = "an empty page" if objects is not None else "a key it may have rewritten"
                raise _Unlistable(f"obstore returned {why}")
            self.after = objects[-1].key
            self._continued = True
            return objects


def _objects(batch: Any, prefix: str, after: str | None) -> list[ObjectInfo] | None:
    """obstore's metadata as ``ObjectInfo``; None if a key may not be the key S3 sent.

    S3 lists keys in strictly increasing order, all under ``prefix``; obstore drops the
    trailing ``/`` of a key, which shows as a key out of order or outside the prefix -- or not
    at all, so empty objects (``folder/`` markers are empty) are left to aiobotocore too.
    """
    from kl3m_data_client._store import ObjectInfo

    previous = after or ""
    out: list[ObjectInfo] = []
    append = out.append
    for meta in batch:
        key: str = meta["path"]
        size = meta["size"]
        if size <= 0 or key <= previous or not key.startswith(prefix):
            return None
        append(ObjectInfo(key, size, (meta["e_tag"] or "").strip('"'), meta["last_modified"]))
        previous = key
    return out


def _raise_listing_error(
    store: S3Store, exc: Exception, what: str, attempt: int, started: float
) -> None:
    """Raise the typed error of a failed listing request; return if the page may be retried."""
    error = _client_error(exc, "ListObjectsV2")
    if error is not None:  # an HTTP answer, after obstore's retries of 5xx and throttling
        raise store._error(error, what) from None
    if "credential provider" in str(exc):
        raise store._error(NoCredentialsError(), what) from None
    if "Error performing list request" in str(exc):
        # no HTTP answer after obstore's own retries (like botocore's HTTPClientError)
        attempts = max(attempt, store.config.max_attempts)
        raise store._failed(what, attempts, started, ConnectionError(_brief(exc))) from None


def _broken(exc: Exception) -> Exception:
    from kl3m_data_client._store import _BrokenBody

    if isinstance(exc, asyncio.TimeoutError):
        return exc
    return _BrokenBody(_brief(exc))


def _brief(exc: Exception) -> str:
    """obstore's error in one line: its message and the innermost causes of its debug dump."""
    text, _, debug = str(exc).partition("\n\nDebug source:")
    causes = [m for m in _MESSAGES.findall(debug) if m]
    causes += [w for w in _NAMES.findall(debug.split("inner:", 1)[-1]) if w not in _NOISE]
    tail = list(dict.fromkeys(causes))[-4:]
    more = f" ({', '.join(tail)})" if tail else ""
    return f"obstore {type(exc).__name__}: {text.strip()}{more}"


def _client_error(exc: Exception, operation: str = "GetObject") -> ClientError | None:
    """obstore's error for an HTTP answer as botocore's ``ClientError``; None without one."""
    text = str(exc)
    status_match = _STATUS.search(text)
    code_match = _CODE.search(text)
    if isinstance(exc, FileNotFoundError):
        status, default = 404, "NoSuchKey"
    elif status_match is not None:
        status = int(status_match.group(1))
        default = {401: "Unauthorized", 403: "AccessDenied"}.get(status, str(status))
    else:
        return None
    message_match = _MESSAGE.search(text)
    return ClientError(
        {
            "Error": {
                "Code": code_match.group(1) if code_match else default,
                "Message": message_match.group(1) if message_match else "",
            },
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )
