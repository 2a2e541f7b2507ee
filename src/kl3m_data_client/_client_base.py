"""What the parts of :class:`~kl3m_data_client.AsyncKL3MClient` share: its settings, its
private S3 store (created on first use, or by an injected factory), decoding off the loop,
and the one rule for building a :class:`ClientConfig` from constructor arguments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kl3m_data_client._budget import Lease
from kl3m_data_client._config import ClientConfig
from kl3m_data_client._errors import ClientClosedError, InvalidInputError

if TYPE_CHECKING:
    from kl3m_data_client._store import S3Store

logger = logging.getLogger("kl3m_data_client")

#: Objects up to this size are decoded on the event loop; larger ones in a worker thread.
INLINE_DECODE_BYTES = 256 * 1024

#: Builds the store of a client from its settings (internal: tests and the blocking client's
#: ``s3_client=`` inject one; everything else gets the aiobotocore store).
StoreFactory = Callable[[ClientConfig], "S3Store"]


def refuse_options_with_config(given: list[str]) -> None:
    """``config=`` carries every setting: options given beside it would be silently lost."""
    if given:
        raise InvalidInputError(
            f"pass either config= or client options, not both (got {', '.join(sorted(given))}); "
            "use config.with_options(...) to change settings of a config"
        )


def resolve_config(config: ClientConfig | None, given: Mapping[str, Any]) -> ClientConfig:
    """The client's settings: ``config``, or one built from the options ``given``.

    An option whose value is None counts as not given (the config's default applies); any
    other option next to ``config=`` raises :class:`InvalidInputError`.
    """
    if config is None:
        return ClientConfig.from_kwargs(**{k: v for k, v in given.items() if v is not None})
    refuse_options_with_config([name for name, value in given.items() if value is not None])
    return config


class ClientBase:
    """Settings, lifecycle flag, store and decoding shared by the client's parts."""

    config: ClientConfig

    def __init__(
        self, config: ClientConfig, session: Any, store_factory: StoreFactory | None
    ) -> None:
        self.config = config
        self._session = session
        self._store_factory = store_factory
        self._made_store: S3Store | None = None
        self._closed = False

    @property
    def _store(self) -> S3Store:
        """The S3 seam (private; created on first use: aiobotocore is imported then)."""
        store = self._made_store
        if store is None:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if self._store_factory is not None:
                store = self._store_factory(self.config)
            else:
                from kl3m_data_client._store import S3Store

                store = S3Store(self.config, self._session)
            self._made_store = store
        return store

    @property
    def _portable(self) -> bool:
        """True if ``type(self)(config=self.config)`` elsewhere is an equivalent client (no
        session or store was handed to this one): exports may use worker processes."""
        return self._session is None and self._store_factory is None

    def _log(self, message: str, *args: object) -> None:
        logger.log(logging.INFO if self.config.verbose else logging.DEBUG, message, *args)

    async def _decode(self, size: int, fn: Any, *args: Any, lease: Lease | None = None) -> Any:
        """``fn(*args)`` here for small objects, else in a thread; charged to ``lease``."""
        inline = size <= INLINE_DECODE_BYTES
        if lease is not None:
            return await lease.run(inline, fn, *args)
        if inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)
