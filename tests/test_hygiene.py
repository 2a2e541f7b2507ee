"""After close() nothing of ours is left: no thread, task, socket or child process."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient, KL3MClient


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.add(int(pid))
    return found


def _settle(check: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_sync_client_leaves_no_thread_socket_or_child(kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = corpus.documents[0].dataset_id
    threads, sockets, children = set(threading.enumerate()), _sockets(), _children()
    client = KL3MClient(**kl3m_corpus_bucket.client_kwargs(), max_concurrency=16)
    docs = list(client.stream_documents(dataset, limit=40))
    assert len(docs) == 40
    it = client.iter_documents(dataset)
    next(it)  # an iterator left open on purpose
    assert set(threading.enumerate()) - threads  # the event loop thread runs
    assert _sockets() > sockets  # the loop's wake-up socket pair (and pooled connections)
    client.close()
    it.close()
    assert _settle(lambda: not (set(threading.enumerate()) - threads)), threading.enumerate()
    assert _settle(lambda: _sockets() <= sockets), _sockets()
    assert _children() == children


@pytest.mark.anyio
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
async def test_async_client_leaves_no_task_or_socket(kl3m_corpus_bucket: Any) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    tasks, sockets = set(asyncio.all_tasks()), _sockets()
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        got = [d async for d in client.stream_documents(dataset, limit=30)]
        assert len(got) == 30
        # (moto closes each connection after its response, so few stay pooled here)
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - tasks if not t.done()} == set()
    for _ in range(100):
        if _sockets() <= sockets:
            break
        await asyncio.sleep(0.05)
    assert _sockets() <= sockets
