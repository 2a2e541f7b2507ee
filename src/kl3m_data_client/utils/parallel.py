"""0.2.0's thread-pool helper (``kl3m_data_client.utils.parallel``).

For reading documents concurrently prefer ``KL3MClient.get_documents`` /
``stream_documents``, which run on the client's event loop without one thread per request.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

__all__ = ["ParallelExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class ParallelExecutor(Generic[T, R]):
    """Run ``worker_fn`` over items on ``max_workers`` threads, optionally with a rich
    progress bar; failures are collected, not raised."""

    def __init__(
        self,
        worker_fn: Callable[[T], R],
        max_workers: int = 10,
        progress: Any = None,
        task_id: Any = None,
        description: str = "Processing",
    ) -> None:
        self.worker_fn = worker_fn
        self.max_workers = max_workers
        self.progress = progress
        self.task_id = task_id
        self.description = description

    def process_batch(self, items: list[T]) -> tuple[list[R], list[Exception]]:
        """``(results in item order, exceptions)`` for the items that succeeded / failed."""
        if not items:
            return [], []
        task_id = self.task_id
        if self.progress is not None and task_id is None:
            task_id = self.progress.add_task(self.description, total=len(items))
        results: list[R] = []
        errors: list[Exception] = []
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            futures = [pool.submit(self.worker_fn, item) for item in items]
            for done, future in enumerate(futures, 1):
                try:
                    results.append(future.result())
                except Exception as exc:
                    errors.append(exc)
                if self.progress is not None and task_id is not None:
                    self.progress.update(task_id, completed=done)
        return results, errors
