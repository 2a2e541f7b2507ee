"""The worker processes ``kl3m-client export`` starts before it connects.

A spawned worker spends ~0.5 s of CPU on its interpreter, imports and client before it
exports anything. Started once the export knows its plan (after the client connects and the
listing is peeked) that start-up is added to the run; started here, first thing, it overlaps
the command's own start-up. ``export._auto.standby_workers`` says how many; the export
adopts those it needs and the others are stopped (``export._workers.Standby``).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kl3m_data_client.export._auto import DEFAULT_WORKERS, standby_workers
from kl3m_data_client.export._workers import Standby

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient


@contextlib.contextmanager
def standby(client: AsyncKL3MClient, args: argparse.Namespace) -> Iterator[None]:
    """Start the export's worker processes now (none with ``--ray``); stop unused ones at exit."""
    count = 0
    if args.ray is None:
        count = standby_workers(
            DEFAULT_WORKERS if args.workers is None else args.workers,
            deduplicate=bool(args.deduplicate),
            max_documents=args.max_documents,
        )
    with Standby.ready(client, count):
        yield
