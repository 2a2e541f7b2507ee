"""``workers="auto"``: how many exporters an export runs (one rule, one default)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Literal

from kl3m_data_client.export._validate import opt_int

Workers = int | Literal["auto"]

#: ``workers`` when none is given (the API and ``kl3m-client export``): ``"auto"`` or a count.
DEFAULT_WORKERS: Workers = "auto"
#: The most workers ``workers="auto"`` starts.
AUTO_WORKERS_MAX = 8
#: ``workers="auto"`` starts a worker per this many documents at most (a worker process
#: costs an interpreter start and a client; a short export is faster in one process).
AUTO_DOCUMENTS_PER_WORKER = 1000
#: Worker processes ``kl3m-client export`` starts before it knows the size of an export with
#: ``workers="auto"`` (see :func:`standby_workers`).
AUTO_STANDBY = 1
#: ``workers="auto"`` counts up to this many listed objects (or ids) before it starts: an
#: export that ends before is a small one (see :func:`resolve_workers`).
AUTO_LISTING_PEEK = 2 * AUTO_DOCUMENTS_PER_WORKER


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def main_is_import_safe() -> bool:
    """True if a spawned process can start without re-running the caller's script.

    A spawned process imports the main module; a script without an
    ``if __name__ == "__main__":`` guard would start the export again there. Without a main
    file (REPL, notebook, ``-c``) or with the guard in the main file, spawning is safe.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return True
    spec = getattr(main, "__spec__", None)
    if spec is not None and str(getattr(spec, "name", "")).endswith("__main__"):
        return True  # ``python -m package``: never re-run by multiprocessing
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "__name__" in source and "__main__" in source


def processes_usable() -> bool:
    """True if this process may start worker processes (not a daemon, import-safe main)."""
    return not multiprocessing.current_process().daemon and main_is_import_safe()


def resolve_workers(
    workers: Workers,
    *,
    deduplicate: bool = False,
    max_documents: int | None = None,
    documents: int | None = None,
    processes: bool = True,
) -> int:
    """The worker count of ``workers`` (an int is checked; ``"auto"`` is resolved).

    ``"auto"``: the usable CPUs, at most :data:`AUTO_WORKERS_MAX`; 1 where worker
    processes cannot be used (``processes=False``, ``deduplicate``, ``max_documents``); and
    for an export known to hold ``documents`` documents, at most one worker per
    :data:`AUTO_DOCUMENTS_PER_WORKER` of them (a small export runs in the calling process).
    """
    if workers != "auto":
        count = opt_int("workers", workers, 1)
        assert count is not None
        return count
    if not processes or deduplicate or max_documents is not None:
        return 1
    count = min(usable_cpus(), AUTO_WORKERS_MAX)
    if documents is not None:
        count = min(count, documents // AUTO_DOCUMENTS_PER_WORKER)
    return max(1, count)


def standby_workers(
    workers: Workers, *, deduplicate: bool = False, max_documents: int | None = None
) -> int:
    """Worker processes to start before an export knows its size (``kl3m-client export``
    starts them before it connects, so their start-up overlaps its own).

    A count: ``workers - 1``. ``"auto"``: ``min(resolve_workers("auto") - 1,`` :data:`AUTO_STANDBY`
    ``)``. 0 with ``deduplicate`` or ``max_documents`` (one worker). The export adopts those
    it needs and the others are stopped.
    """
    if deduplicate or max_documents is not None:
        return 0
    if workers == "auto":
        return min(resolve_workers("auto") - 1, AUTO_STANDBY)
    return resolve_workers(workers) - 1
