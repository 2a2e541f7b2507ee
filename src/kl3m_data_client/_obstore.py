"""The obstore data plane: object GETs through obstore (Rust ``object_store``), at a fraction
of botocore's CPU per GET.

``S3Store.get`` asks :meth:`ObstorePlane.get` first; everything around a GET stays the
store's (concurrency slot, per-object deadline, ETag check, retries of broken bodies). The
plane only takes the plain case -- a ``200`` with a ``Content-Length``, or S3's ``404
NoSuchKey`` -- and hands every other outcome to the aiobotocore path by raising
:class:`Fallback` (that GET is made again there, and its answer mapped to the usual typed
error). So obstore never retries (``max_retries=0``): retries, their backoff and their limits
are those of botocore and the store, one policy for both planes.

* Credentials: explicit keys, and static ones the session found (environment, shared
  file), are given to obstore as they are; refreshable ones are lent through obstore's
  credential-provider hook (``_credentials.SessionCredentials``), so they refresh by
  botocore's rules.
* Redirects: obstore follows them to any host, so its proxy is ``_guard.DeadEnd`` for
  every host but the endpoint's: a request for another host is refused before it is sent.
* Admission: ``admit`` (the memory budget) and ``max_object_bytes`` are checked against the
  ``Content-Length`` before the body is read; a refused body is dropped unread.
* Keys obstore cannot send unchanged (:func:`addressable`), listings and HEADs go through
  aiobotocore.

``obstore`` is imported only when a plane is created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.credentials import RefreshableCredentials

from kl3m_data_client._budget import NeedRoom
from kl3m_data_client._credentials import SessionCredentials
from kl3m_data_client._errors import InvalidInputError, SizeLimitExceededError
from kl3m_data_client._guard import DeadEnd, endpoint_host

if TYPE_CHECKING:
    from collections.abc import Callable

    from kl3m_data_client._config import ClientConfig

logger = logging.getLogger("kl3m_data_client")

_UNADDRESSABLE_SEGMENTS = frozenset({"", ".", ".."})
#: The code of S3's answer for a missing key, as obstore's error text carries it.
_NO_SUCH_KEY = "<Code>NoSuchKey</Code>"
INSTALL_HINT = "data_plane='obstore' needs obstore: pip install obstore"
#: The process in which obstore's runtime (tokio, with its threads) was started: a child
#: forked from it inherits a runtime without threads, where every obstore call would hang.
_RUNTIME_PID: int | None = None


def _obstore_version() -> str:
    import obstore

    return str(getattr(obstore, "__version__", "0"))


def _user_agent(session: Any, client: Any) -> str:
    """The client's User-Agent with ``obstore/<version>`` before the session's extra."""
    agent = str(client.meta.config.user_agent)
    extra = getattr(session, "user_agent_extra", None) or ""
    if extra and agent.endswith(f" {extra}"):
        agent = agent[: -len(extra) - 1]
    return " ".join(part for part in (agent, f"obstore/{_obstore_version()}", extra) if part)


def addressable(key: str) -> bool:
    """True if obstore sends ``key`` unchanged (its paths drop or refuse some keys)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return False
    return not any(part in _UNADDRESSABLE_SEGMENTS for part in key.split("/"))


class Fallback(Exception):
    """obstore did not give a plain answer: make this GET through aiobotocore."""


def _unusable(cfg: ClientConfig, session: Any, client: Any) -> str | None:
    """Why the settings need aiobotocore for GETs, or None."""
    if _RUNTIME_PID is not None and os.getpid() != _RUNTIME_PID:
        return "obstore's runtime was started in the parent of this forked process"
    if urllib.request.getproxies_environment():
        return "an HTTP proxy is configured in the environment"
    if cfg.bucket.startswith("arn:"):
        return "the bucket is an ARN (access point or outpost)"
    for name in ("use_fips_endpoint", "use_dualstack_endpoint"):
        if str(session.get_config_variable(name) or "").lower() in ("true", "1"):
            return f"{name} is set (botocore resolves those endpoints)"
    endpoint = str(client.meta.endpoint_url or "")
    if urllib.parse.urlsplit(endpoint).path not in ("", "/"):
        return f"the endpoint {endpoint!r} has a path"
    return None


async def create_plane(
    cfg: ClientConfig, session: Any, client: Any, deadline: float
) -> ObstorePlane | None:
    """The plane for a store with settings ``cfg``, or None when they need aiobotocore
    (the reason is logged at DEBUG)."""
    try:
        from obstore.store import S3Store as ObjectStore
    except ImportError as exc:
        if cfg.data_plane == "obstore":
            raise InvalidInputError(INSTALL_HINT) from exc
        logger.debug("GETs through aiobotocore: obstore is not installed")
        return None
    why = _unusable(cfg, session, client)
    options: dict[str, Any] | None = None
    if why is None:
        options, why = await _store_options(cfg, session, client, deadline)
    if options is None:
        logger.debug("GETs through aiobotocore: %s", why)
        return None
    guard = DeadEnd()
    options["client_options"]["proxy_url"] = guard.url
    options["client_options"]["proxy_excludes"] = endpoint_host(options["endpoint"])
    try:
        object_store = ObjectStore(
            cfg.bucket,
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=deadline)},
            **options,
        )
    except Exception as exc:  # an option this obstore cannot take
        guard.close()
        logger.debug("GETs through aiobotocore: obstore refused the settings (%s)", exc)
        return None
    return ObstorePlane(object_store, guard)


async def _store_options(
    cfg: ClientConfig, session: Any, client: Any, deadline: float
) -> tuple[dict[str, Any] | None, str | None]:
    """obstore ``S3Store`` keyword arguments for ``cfg``, or None and why not."""
    endpoint = str(client.meta.endpoint_url)
    scheme, _, host = endpoint.partition("://")
    if not cfg.path_style:  # virtual-hosted: obstore wants the bucket in the endpoint
        endpoint = f"{scheme}://{cfg.bucket}.{host.rstrip('/')}"
    client_options: dict[str, Any] = {
        "allow_http": scheme == "http",
        "connect_timeout": timedelta(seconds=cfg.connect_timeout),
        "read_timeout": timedelta(seconds=cfg.read_timeout),
        # the whole GET may take the object's deadline (the store's, which also bounds it)
        "timeout": timedelta(seconds=deadline),
        "pool_max_idle_per_host": str(cfg.max_concurrency),
        "user_agent": _user_agent(session, client),
    }
    verify = cfg.verify if cfg.verify is not None else session.get_config_variable("ca_bundle")
    if verify is False:
        client_options["allow_invalid_certificates"] = True
    elif isinstance(verify, str):
        try:
            pem = await asyncio.to_thread(Path(verify).read_bytes)
        except OSError as exc:
            return None, f"the CA bundle {verify!r} is not readable ({type(exc).__name__})"
        client_options["root_certificate"] = pem
    options: dict[str, Any] = {
        "endpoint": endpoint.rstrip("/"),
        "region": client.meta.region_name or "us-east-1",
        "virtual_hosted_style_request": not cfg.path_style,
        "request_payer": cfg.requester_pays,
        "client_options": client_options,
    }
    if cfg.anonymous:
        options["skip_signature"] = True
    elif cfg.aws_access_key_id:
        options["access_key_id"] = cfg.aws_access_key_id
        options["secret_access_key"] = cfg.aws_secret_access_key
        if cfg.aws_session_token:
            options["token"] = cfg.aws_session_token
    else:
        credentials = await session.get_credentials()
        if credentials is None:  # aiobotocore raises the usual NoCredentialsError
            return None, "botocore found no credentials"
        if isinstance(credentials, RefreshableCredentials):
            options["credential_provider"] = SessionCredentials(credentials)
        else:  # static (environment, shared file): no callback from obstore's threads
            frozen = await credentials.get_frozen_credentials()
            options["access_key_id"] = frozen.access_key
            options["secret_access_key"] = frozen.secret_key
            if frozen.token:
                options["token"] = frozen.token
    return options, None


class ObstorePlane:
    """GETs through obstore; anything but a plain answer raises :class:`Fallback`."""

    def __init__(self, object_store: Any, guard: DeadEnd) -> None:
        import obstore

        global _RUNTIME_PID
        _RUNTIME_PID = self._pid = os.getpid()

        self._object_store = object_store
        self._get_async = obstore.get_async
        #: The proxy of every host but the endpoint's: a refused connection.
        self.guard = guard
        #: GETs answered through obstore, and GETs it handed to aiobotocore.
        self.gets = 0
        self.fallbacks = 0

    def takes(self, key: str) -> bool:
        """True if this plane can GET ``key`` (and this is not a child forked after it)."""
        return addressable(key) and os.getpid() == self._pid

    def close(self) -> None:
        """Release the guard's port, and obstore's store (its pooled connections and the
        credential provider its threads call) now, while the interpreter runs: not at exit,
        where a runtime thread still holding them could meet a finalizing interpreter."""
        self.guard.close()
        self._object_store = None

    async def get(
        self, key: str, limit: int, admit: Callable[[int], bool] | None
    ) -> tuple[bytes, str] | None:
        """The body and ETag of ``key``, or None for S3's ``NoSuchKey``.

        Raises :class:`SizeLimitExceededError` for a ``Content-Length`` above ``limit``,
        :class:`NeedRoom` when ``admit`` refuses it (the body is dropped unread), and
        :class:`Fallback` for anything else than a plain answer.
        """
        try:
            result = await self._get_async(self._object_store, key)
        except FileNotFoundError as exc:
            if _NO_SUCH_KEY in str(exc):
                self.gets += 1
                return None
            raise self.fallback(key, exc) from None
        except Exception as exc:
            raise self.fallback(key, exc) from None
        meta = result.meta
        size = meta["size"]
        if size > limit:
            raise SizeLimitExceededError(
                key, f"object is {size} bytes, above the limit of {limit} bytes", status=200
            )
        if admit is not None and not admit(size):
            raise NeedRoom(key, size)  # the result is dropped unread: so is its connection
        try:
            data = bytes(await result.bytes_async())
        except Exception as exc:
            raise self.fallback(key, exc) from None
        if len(data) != size:
            raise self.fallback(key, ValueError(f"got {len(data)} of {size} bytes"))
        self.gets += 1
        return data, str(meta.get("e_tag") or "")

    def fallback(self, key: str, exc: BaseException) -> Fallback:
        """The :class:`Fallback` of ``key`` after ``exc`` (counted, logged by class only)."""
        # the class only: obstore's text may repeat what a server echoed (headers, token)
        self.fallbacks += 1
        logger.debug("GET %r through aiobotocore after obstore's %s", key, type(exc).__name__)
        return Fallback(type(exc).__name__)
