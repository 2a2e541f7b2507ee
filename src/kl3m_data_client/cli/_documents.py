"""``kl3m-client documents``: stream a dataset's ids (or count them) in constant memory."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kl3m_data_client._stream import aclose
from kl3m_data_client.cli._common import EXIT_OK, Ticker, dataset_exists, missing_dataset
from kl3m_data_client.cli._ui import UI, escape_text, json_text
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient


async def cmd_documents(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    stage = Stage.coerce(args.stage)
    # --limit 0 lists everything, as in 0.2.0
    ids = client.iter_documents(args.dataset, stage, args.key_prefix, args.limit or None)
    try:
        first = await anext(ids, None)
        if first is None and not await dataset_exists(client, args.dataset):
            raise missing_dataset(client, args.dataset, None)
        if args.count:
            return await _count_ids(client, args, ui, stage, first, ids)
        if args.output:
            # the file is this command's output stream, written as ids arrive (like stdout)
            with open(args.output, "w", encoding="utf-8") as fh:  # noqa: ASYNC230
                count = await _write_ids(args, ui, stage, first, ids, fh, to_file=True)
            if ui.json_mode:
                ui.emit_json(
                    {
                        "dataset_id": args.dataset,
                        "stage": stage.value,
                        "document_count": count,
                        "output": args.output,
                    }
                )
            else:
                ui.note(f"wrote {count:,} ids to {args.output}")
            return EXIT_OK
        count = await _write_ids(args, ui, stage, first, ids, sys.stdout, to_file=False)
        if not ui.json_mode:
            ui.note(f"{count:,} document{'' if count == 1 else 's'}")
        return EXIT_OK
    finally:
        await aclose(ids)


async def _count_ids(
    client: AsyncKL3MClient,
    args: argparse.Namespace,
    ui: UI,
    stage: Stage,
    first: str | None,
    ids: AsyncIterator[str],
) -> int:
    count = 0 if first is None else 1
    progress = ui.progress(f"counting {args.dataset}", "ids", transient=True)
    ticker = Ticker()
    try:
        async for _ in ids:
            count += 1
            if ticker.due():
                progress.update(count)
        progress.update(count)
    finally:
        progress.close()
    if args.output:  # as in 0.2.0: the count, one line
        await asyncio.to_thread(Path(args.output).write_text, f"{count}\n", encoding="utf-8")
    if ui.json_mode:
        ui.emit_json({"dataset_id": args.dataset, "stage": stage.value, "document_count": count})
    else:
        ui.print(f"{count}")
    return EXIT_OK


async def _write_ids(
    args: argparse.Namespace,
    ui: UI,
    stage: Stage,
    first: str | None,
    ids: AsyncIterator[str],
    out: IO[str],
    *,
    to_file: bool,
) -> int:
    """Stream ids to ``out`` (a JSON document in --json mode): constant memory.

    Flushed at the first id and then at most every 0.2 s, so a pipe sees the first ids at
    once. A progress display is shown only when the ids do not go to the terminal. Ids are
    escaped on stdout (:func:`escape_text`) and written exactly to a file.
    """
    as_json = ui.json_mode
    escape = not to_file
    show_progress = to_file or not ui.stdout_is_tty
    progress = (
        ui.progress(f"listing {args.dataset}", "ids", transient=True) if show_progress else None
    )
    ticker = Ticker()
    flush = Ticker(0.2)
    count = 0
    if as_json:
        head = {"dataset_id": args.dataset, "stage": stage.value}
        out.write(json_text(head)[:-1] + ', "documents": [')
    try:
        if first is not None:
            out.write(_id_line(first, as_json, escape, first=True))
            out.flush()
            count = 1
            async for doc_id in ids:
                out.write(_id_line(doc_id, as_json, escape, first=False))
                count += 1
                if flush.due():
                    out.flush()
                if progress is not None and ticker.due():
                    progress.update(count)
        if as_json:
            out.write(("\n" if count else "") + f'], "document_count": {count}}}\n')
        out.flush()
        if progress is not None:
            progress.update(count)
    finally:
        if progress is not None:
            progress.close()
    return count


def _id_line(doc_id: str, as_json: bool, escape: bool, *, first: bool) -> str:
    if as_json:
        return ("\n  " if first else ",\n  ") + json_text(doc_id)
    return (escape_text(doc_id) if escape else doc_id) + "\n"
