"""``with`` / ``async with`` for the local servers, over their ``start``/``close`` methods."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import anyio.to_thread

_T = TypeVar("_T", bound="Lifecycle")


class Lifecycle:
    """Context managers over :meth:`start`/:meth:`astart` and :meth:`close`/:meth:`aclose`."""

    def start(self: _T) -> _T:
        raise NotImplementedError

    async def astart(self: _T) -> _T:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self: _T) -> _T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: _T) -> _T:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
