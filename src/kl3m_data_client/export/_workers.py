"""Worker processes (spawned, never forked): worker j exports worker shard (j, N).

Each worker has its own client (from the picklable :class:`ClientConfig`), its own stream
``w{j}`` in the manifest (updated under an inter-process lock), its own parts
``part-w{j}-*`` and its own ``errors-w{j}.jsonl``. Workers send progress, completion or
their exception on a queue; the parent sums progress and merges the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import queue as queue_module
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._config import ClientConfig
from kl3m_data_client.export._options import ExportPlan

if TYPE_CHECKING:
    from kl3m_data_client.export._exporter import Counters, Tracker

#: Seconds between two progress messages of a worker.
WORKER_PROGRESS_INTERVAL = 0.2


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


async def _work(config: ClientConfig, plan: ExportPlan, dest: Path, j: int, q: Any) -> None:
    from kl3m_data_client._client import AsyncKL3MClient
    from kl3m_data_client.export._exporter import run_stream

    last = 0.0

    def on_update(counters: Counters, force: bool) -> None:
        nonlocal last
        now = time.monotonic()
        if force or now - last >= WORKER_PROGRESS_INTERVAL:
            last = now
            q.put(("progress", j, counters.as_dict()))

    async with AsyncKL3MClient(config=config) as client:
        counters = await run_stream(client, plan, dest, f"w{j}", (j, plan.workers), on_update)
    q.put(("done", j, counters.as_dict()))


def worker_main(config: ClientConfig, plan: ExportPlan, dest: str, j: int, q: Any) -> None:
    """Entry point of worker ``j`` (runs in a spawned process)."""
    try:
        asyncio.run(_work(config, plan, Path(dest), j, q))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        q.put(("error", j, _picklable(exc)))
    finally:
        q.close()
        q.join_thread()


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _check_alive(procs: list[Any], done: set[int], dead_since: dict[int, float]) -> None:
    now = time.monotonic()
    for j, p in enumerate(procs):
        if j in done or p.exitcode is None:
            continue
        # give its last message time to arrive before declaring it dead
        if now - dead_since.setdefault(j, now) > 2.0:
            raise RuntimeError(
                f"export worker {j} exited with code {p.exitcode} before finishing; "
                "rerun the same export to resume"
            )


async def run_workers(config: ClientConfig, plan: ExportPlan, dest: Path, tracker: Tracker) -> None:
    """Run ``plan.workers`` worker processes to completion (or stop them all on failure)."""
    from kl3m_data_client.export._exporter import Counters

    ctx = multiprocessing.get_context("spawn")
    q: Any = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker_main,
            args=(config, plan, str(dest), j, q),
            name=f"kl3m-export-w{j}",
        )
        for j in range(plan.workers)
    ]
    done: set[int] = set()
    try:
        for p in procs:
            await asyncio.to_thread(p.start)
        dead_since: dict[int, float] = {}
        while len(done) < len(procs):
            try:
                kind, j, payload = await asyncio.to_thread(q.get, True, 0.2)
            except queue_module.Empty:
                _check_alive(procs, done, dead_since)
                continue
            if kind == "error":
                raise payload
            tracker.update(f"w{j}", Counters.from_dict(payload), force=kind == "done")
            if kind == "done":
                done.add(j)
    finally:
        await asyncio.to_thread(_stop, procs)
        q.close()
        with contextlib.suppress(Exception):
            q.join_thread()
