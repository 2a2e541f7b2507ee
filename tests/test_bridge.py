"""The one way the library runs async code from sync code (``_bridge.run_sync`` /
``iterate_sync``): safe where an event loop already runs, exceptions and clean-up intact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from kl3m_data_client import NotFoundError
from kl3m_data_client._bridge import iterate_sync, run_sync

pytestmark = pytest.mark.anyio


async def where() -> tuple[int, str]:
    await asyncio.sleep(0)
    return threading.get_ident(), threading.current_thread().name


async def test_run_sync_inside_a_running_loop() -> None:
    asyncio.get_running_loop()  # a loop runs in this thread: asyncio.run would refuse
    threads = threading.active_count()
    ident, name = run_sync(where, name="kl3m-test-run")
    assert ident != threading.get_ident() and name == "kl3m-test-run"
    assert threading.active_count() == threads  # its thread was joined


def test_run_sync_raises_the_coroutines_own_exception() -> None:
    async def fail(key: str) -> None:
        raise NotFoundError(f"no such object: {key}", key=key)

    with pytest.raises(NotFoundError, match=r"documents/x/1\.json") as info:
        run_sync(fail, "documents/x/1.json")
    assert info.value.key == "documents/x/1.json"


async def test_iterate_sync_closes_its_source_before_close_returns() -> None:
    events: list[str] = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10_000):
                yield i
        finally:
            await asyncio.sleep(0.01)  # an async clean-up (a cancelled request awaited)
            events.append("cleaned up")

    threads = threading.active_count()
    items = iterate_sync(source, buffer=4, name="kl3m-test-iter")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert events == ["cleaned up"]
    assert threading.active_count() == threads
    assert list(iterate_sync(source, buffer=4))[-1] == 9_999
