"""The iter_* methods of AsyncKL3MClient: async iterators that can also be awaited (issue 15)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient
from kl3m_data_client._stream import AwaitableIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(kl3m_corpus_bucket: Any) -> Any:
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as c:
        yield c


def _dataset(kl3m_corpus_bucket: Any) -> str:
    corpus = kl3m_corpus_bucket.corpus
    return str(max(corpus.datasets, key=lambda d: len(corpus.dataset_documents(d))))


async def test_iter_methods_are_awaitable_and_async_iterable(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    dataset = _dataset(kl3m_corpus_bucket)
    prefix = f"documents/{dataset}/"
    expected_keys = sorted(k for k in kl3m_corpus_bucket.corpus.objects if k.startswith(prefix))
    streamed = [i async for i in client.iter_documents(dataset)]
    # the design card's usage in an async service
    ids = await client.iter_documents(dataset)
    assert ids == streamed and len(ids) > 3
    assert await client.iter_documents(dataset, limit=2) == ids[:2]
    assert await client.list_documents(dataset) == ids
    assert await client.iter_prefix(prefix) == expected_keys
    assert [i async for i in client.iter_prefix(prefix)] == expected_keys
    assert [o.key for o in await client.iter_objects(prefix)] == expected_keys
    records = await client.iter_jsonl_export(dataset, max_documents=3)
    assert [r["id"] for r in records] == ids[:3]
    for it in (
        client.iter_documents(dataset),
        client.iter_prefix(prefix),
        client.iter_objects(prefix),
        client.iter_jsonl_export(dataset),
    ):
        assert isinstance(it, AsyncIterator) and isinstance(it, Awaitable)
        await it.aclose()


async def test_mixed_use_and_errors(client: AsyncKL3MClient, kl3m_corpus_bucket: Any) -> None:
    from kl3m_data_client import InvalidInputError

    dataset = _dataset(kl3m_corpus_bucket)
    ids = await client.iter_documents(dataset)
    it = client.iter_documents(dataset)
    assert await anext(it) == ids[0]
    assert await it.__anext__() == ids[1]
    assert await it == ids[2:]  # awaiting collects what is left, then closes
    with pytest.raises(StopAsyncIteration):
        await anext(it)
    with pytest.raises(InvalidInputError):
        await client.iter_documents(dataset, limit=-1)
    with pytest.raises(InvalidInputError):
        async for _ in client.iter_documents(dataset, stage="index"):
            pass


async def test_aclose_closes_the_listing(client: AsyncKL3MClient, kl3m_corpus_bucket: Any) -> None:
    dataset = _dataset(kl3m_corpus_bucket)
    it = client.iter_documents(dataset)
    assert isinstance(it, AwaitableIterator)
    assert await anext(it)
    await it.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(it)


async def test_break_lets_the_listing_close(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    """After ``break`` the dropped listing is closed by the loop's async-generator finalizer,
    exactly as for a plain async generator: the wrapper holds nothing back."""
    dataset = _dataset(kl3m_corpus_bucket)
    it = client.iter_documents(dataset)
    source = weakref.ref(it.__aiter__())
    async for _ in it:
        break
    del it
    for _ in range(1000):  # loop cycles for the scheduled aclose(), not a timed wait
        if source() is None:
            break
        await asyncio.sleep(0)
    assert source() is None


async def test_in_thread_closes_what_a_cancelled_caller_would_leak(tmp_path: Any) -> None:
    """Cancelled while a thread opens a file (an export stopped by its progress callback or
    Ctrl-C): the file is closed when the thread returns, not leaked."""
    import threading

    from kl3m_data_client._stream import in_thread

    started, release = threading.Event(), threading.Event()
    opened: list[Any] = []
    discarded = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_open() -> Any:
        fh = open(tmp_path / "errors.jsonl", "ab")  # noqa: SIM115
        opened.append(fh)
        started.set()
        release.wait(60)
        return fh

    def discard(fh: Any) -> None:
        fh.close()
        loop.call_soon(discarded.set)

    task = asyncio.ensure_future(in_thread(slow_open, discard=discard))
    assert await asyncio.to_thread(started.wait, 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await asyncio.wait_for(discarded.wait(), 60)
    assert opened[0].closed
    # not cancelled: the result is returned as is
    fh = await in_thread(open, tmp_path / "other", "ab", discard=discard)
    assert not fh.closed
    fh.close()
