"""The commands of ``kl3m-client``: each an async function ``(client, args, ui) -> exit code``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import mimetypes
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kl3m_data_client._errors import CorruptObjectError, InvalidInputError, NotFoundError
from kl3m_data_client._stream import aclose
from kl3m_data_client.cli._paths import path_in_directory, safe_file_name, write_atomically
from kl3m_data_client.cli._ui import UI, escape_text, json_text
from kl3m_data_client.models.common import DATA_STAGES, DatasetStatus, Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    ParquetContent,
    RepresentationContent,
)

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class UsageError(Exception):
    """A combination of options that cannot work (exit status 2)."""


# -- helpers ------------------------------------------------------------------------------------
async def dataset_exists(client: AsyncKL3MClient, dataset_id: str) -> bool:
    """True if the dataset has at least one object in any data stage (one tiny list each)."""
    return await client.has_dataset(dataset_id)


def _missing_dataset(client: AsyncKL3MClient, dataset_id: str, key_prefix: str | None) -> Exception:
    where = f" under key prefix {key_prefix!r}" if key_prefix else ""
    return NotFoundError(
        f"dataset {dataset_id!r} has no objects{where} in any stage of bucket "
        f"{client.bucket!r}; run 'kl3m-client list' to see the datasets"
    )


class _Ticker:
    """Calls a progress update at most every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


# -- list ---------------------------------------------------------------------------------------
async def cmd_list(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    datasets = await client.list_datasets()
    data = {
        name: {stage.value: bool(present) for stage, present in stages.items()}
        for name, stages in datasets.items()
    }
    if ui.json_mode:
        ui.emit_json(data)
        return EXIT_OK
    if not data:
        ui.print(f"no datasets in bucket {client.bucket}")
        return EXIT_OK
    mark = {True: "yes", False: "-"}
    ui.table(
        ["dataset", "documents", "representations", "parquet"],
        [[name, *(mark[v[s.value]] for s in DATA_STAGES)] for name, v in data.items()],
        title=f"{len(data)} datasets in s3://{client.bucket}",
    )
    return EXIT_OK


# -- status -------------------------------------------------------------------------------------
async def count_dataset(
    client: AsyncKL3MClient, dataset_id: str, key_prefix: str | None, ui: UI
) -> DatasetStatus:
    """Count the objects of each stage concurrently, with a progress display."""
    counts = dict.fromkeys(DATA_STAGES, 0)
    progress = ui.progress(f"counting {dataset_id}", "objects", transient=True)
    ticker = _Ticker()

    def show() -> None:
        detail = ", ".join(f"{s.value} {counts[s]:,}" for s in DATA_STAGES)
        progress.update(sum(counts.values()), detail=detail)

    def on_page(stage: Stage, count: int) -> None:
        counts[stage] = count
        if ticker.due():
            show()

    try:
        status = await client.get_dataset_status(dataset_id, key_prefix, progress=on_page)
        show()
    finally:
        progress.close()
    return status


async def cmd_status(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    status = await count_dataset(client, args.dataset, args.key_prefix, ui)
    if status.document_count + status.representation_count + status.parquet_count == 0:
        raise _missing_dataset(client, args.dataset, args.key_prefix)
    data = status.as_dict()
    if args.csv:
        await asyncio.to_thread(_write_csv, Path(args.csv), status)
        ui.note(f"wrote {args.csv}")
    if ui.json_mode:
        ui.emit_json(data)
        return EXIT_OK
    print_status_table(ui, [status], title=f"s3://{client.bucket}")
    return EXIT_OK


#: ``status --csv`` columns, named as 0.2.0's CLI named them.
CSV_HEADER = (
    "Dataset",
    "Documents",
    "Representations",
    "Parquet",
    "Missing Rep.",
    "Missing Parq.",
    "Is Complete",
)


def _write_csv(path: Path, status: DatasetStatus) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        writer.writerow(
            [
                status.dataset_id,
                status.document_count,
                status.representation_count,
                status.parquet_count,
                status.missing_representations,
                status.missing_parquet,
                status.is_complete,
            ]
        )


def print_status_table(ui: UI, statuses: list[DatasetStatus], *, title: str) -> None:
    """One row per dataset: the stage counts and what is missing."""
    ui.table(
        [
            "dataset",
            "documents",
            "representations",
            "parquet",
            "missing repr.",
            "missing parquet",
            "complete",
        ],
        [
            [
                s.dataset_id,
                f"{s.document_count:,}",
                f"{s.representation_count:,}",
                f"{s.parquet_count:,}",
                f"{s.missing_representations:,}",
                f"{s.missing_parquet:,}",
                "yes" if s.is_complete else "no",
            ]
            for s in statuses
        ],
        title=title,
        numeric=(1, 2, 3, 4, 5),
    )


# -- documents ----------------------------------------------------------------------------------
async def cmd_documents(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    stage = Stage.coerce(args.stage)
    # --limit 0 lists everything, as in 0.2.0
    ids = client.iter_documents(args.dataset, stage, args.key_prefix, args.limit or None)
    try:
        first = await anext(ids, None)
        if first is None and not await dataset_exists(client, args.dataset):
            raise _missing_dataset(client, args.dataset, None)
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
    ticker = _Ticker()
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
    ticker = _Ticker()
    flush = _Ticker(0.2)
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


# -- inspect ------------------------------------------------------------------------------------
def _save(output: str, name: str, data: bytes, overwrite: bool) -> Path:
    """Write ``data`` to ``output``, or into it under ``name`` when it is a directory."""
    target = Path(output)
    if target.is_dir() or output.endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
        target = path_in_directory(target, name)
    write_atomically(target, data, overwrite=overwrite)
    return target


def _preview(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit] + "…"


async def cmd_inspect(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    stage = Stage.coerce(args.stage)
    if args.representation and stage is not Stage.REPRESENTATIONS:
        raise UsageError("--representation needs --stage representations")
    doc = await client.get_document(args.dataset, args.document_id, stage)
    if doc is None:
        raise await _missing_document(client, args.dataset, args.document_id, stage)
    content = doc.content
    limit = args.preview_chars
    extra: list[tuple[str, str]] = []
    result: dict[str, Any] = {
        "dataset_id": args.dataset,
        "document_id": doc.document_id,
        "stage": stage.value,
    }
    if isinstance(content, DocumentContent):
        meta = content.metadata
        body = content.content
        preview = (
            _preview(body, limit)
            if isinstance(body, str)
            else f"<{len(body):,} bytes of binary content>"
        )
        result["content_type"] = "document"
        result["mime_type"] = meta.format
        result["metadata"] = {
            "identifier": meta.identifier,
            "source": meta.source,
            "title": meta.title or "",
            "format": meta.format or "",
        }
        if isinstance(body, bytes):
            result["content_size"] = len(body)
        verified = content.verify()
        extra = [
            ("date", meta.date or ""),
            ("language", meta.language or ""),
            ("size", f"{len(content.raw):,} bytes"),
            ("blake2b", {True: "ok", False: "MISMATCH", None: "not stored"}[verified]),
        ]
    elif isinstance(content, RepresentationContent):
        rep = content.get_representation(0)
        if rep is None:
            raise NotFoundError(f"representation object of {args.document_id!r} holds no document")
        single = rep.get_representation(args.representation)
        if single is None:
            available = ", ".join(rep.get_available_mime_types()) or "none"
            raise NotFoundError(
                f"document {args.document_id!r} has no {args.representation or 'text'} "
                f"representation (available: {available})"
            )
        result["content_type"] = "representation"
        result["mime_type"] = single.mime_type
        result["available_representations"] = rep.get_available_mime_types()
        result["representation_preview"] = {
            "type": single.mime_type,
            "content": _preview(single.content, limit),
        }
        title = rep.metadata.get("title")
        fmt = rep.metadata.get("format") or rep.metadata.get("mime_type")
        result["metadata"] = {
            "identifier": rep.document_id,
            "source": rep.source,
            "title": None if title is None else str(title),
            "format": None if fmt is None else str(fmt),
        }
        preview = _preview(single.content, limit)
        extra = [
            ("representations", ", ".join(rep.get_available_mime_types())),
            *(
                ("tokens", f"{single.token_count(tok):,} ({tok})")
                for tok in single.get_available_tokenizers()
            ),
        ]
    elif isinstance(content, ParquetContent):
        row = content.get_document()
        reps = content.get_representations()
        mime = next(iter(reps), None)
        tokens = reps.get(mime, []) if mime else []
        result["content_type"] = "parquet"
        result["mime_type"] = "application/vnd.apache.parquet"
        result["size"] = content.size
        result["table"] = {"columns": content.get_columns(), "rows": content.get_table().num_rows}
        result["representations"] = {m: len(ids) for m, ids in reps.items()}
        result["metadata"] = {
            "identifier": str(row.get("identifier") or ""),
            "source": None,
            "title": None,
            "format": mime,
        }
        shown = ", ".join(str(t) for t in tokens[: max(1, limit // 8)])
        more = ", …" if len(tokens) > max(1, limit // 8) else ""
        preview = f"[{shown}{more}] ({len(tokens):,} tokens)" if tokens else ""
        extra = [
            ("columns", ", ".join(content.get_columns())),
            ("size", f"{content.size:,} bytes"),
            *(("tokens", f"{len(ids):,} ({m})") for m, ids in reps.items()),
        ]
    else:  # pragma: no cover - the client only returns the three content types
        raise InvalidInputError(f"unexpected content {type(content).__name__}")
    result["content_preview"] = preview
    if args.output:
        target = Path(args.output)
        await asyncio.to_thread(write_atomically, target, _inspect_output(content), overwrite=True)
        result["output"] = str(target)
        if not ui.json_mode:
            ui.note(f"wrote the {stage.value} content to {target}")
            return EXIT_OK
    if ui.json_mode:
        ui.emit_json(result)
        return EXIT_OK
    rows = [
        ("dataset", result["dataset_id"]),
        ("document", result["document_id"]),
        ("stage", result["stage"]),
        ("content type", result["mime_type"] or ""),
        *((k, "" if v is None else str(v)) for k, v in result["metadata"].items()),
        *extra,
    ]
    ui.table(["field", "value"], rows)
    if preview:
        ui.panel(preview, title="content preview")
    return EXIT_OK


def _inspect_output(content: DocumentContent | RepresentationContent | ParquetContent) -> bytes:
    """``inspect --output``: the content as JSON (binary originals in ``content_base64``);
    a parquet object as stored."""
    if isinstance(content, ParquetContent):
        return content.data
    if isinstance(content, DocumentContent):
        body: dict[str, Any] = {"metadata": content.metadata.fields}
        if isinstance(content.content, bytes):
            body["content"] = None
            body["content_base64"] = base64.b64encode(content.content).decode("ascii")
        else:
            body["content"] = content.content
    else:
        body = {"documents": content.documents}
    return json_text(body, indent=2).encode("utf-8") + b"\n"


async def _missing_document(
    client: AsyncKL3MClient, dataset_id: str, document_id: str, stage: Stage
) -> Exception:
    if not await dataset_exists(client, dataset_id):
        return _missing_dataset(client, dataset_id, None)
    return NotFoundError(
        f"document {document_id!r} not found in the {stage.value} stage of dataset "
        f"{dataset_id!r}; list the ids with 'kl3m-client documents {dataset_id}'"
    )


# -- get ----------------------------------------------------------------------------------------
async def cmd_get(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    to_stdout = args.output in (None, "-")
    if to_stdout and ui.json_mode:
        raise UsageError("--json needs --output (the document bytes would go to stdout)")
    content_type: str | None
    if args.stage is None:
        doc = await client.get_document(args.dataset, args.document_id, Stage.DOCUMENTS)
        if doc is None:
            raise await _missing_document(client, args.dataset, args.document_id, Stage.DOCUMENTS)
        content = doc.content
        assert isinstance(content, DocumentContent)
        if content.verify() is False:
            raise CorruptObjectError(doc.document_key, "blake2b does not match the content")
        data = content.raw
        content_type = content.mime_type
        suffix = ""
        if not Path(args.document_id).suffix and content_type:
            suffix = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
        stage_value = None
        name = safe_file_name(args.document_id, suffix=suffix)
    else:
        stage = Stage.coerce(args.stage)
        found = await client.get_object_bytes(args.dataset, args.document_id, stage)
        if found is None:
            raise await _missing_document(client, args.dataset, args.document_id, stage)
        data = found
        if stage is Stage.PARQUET:
            content_type = "application/vnd.apache.parquet"
            suffix = ".parquet" if data[:4] == b"PAR1" else ".parquet.zlib"
        else:
            content_type = "application/json"
            suffix = f".{stage.value}.json"
        stage_value = stage.value
        name = safe_file_name(args.document_id, suffix=suffix)
    if to_stdout:
        if ui.stdout_is_tty and b"\x00" in data[:8192]:
            raise UsageError("refusing to write binary content to a terminal; use --output FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = await asyncio.to_thread(_save, args.output, name, data, args.overwrite)
    if ui.json_mode:
        ui.emit_json(
            {
                "dataset_id": args.dataset,
                "document_id": args.document_id,
                "stage": stage_value,
                "content_type": content_type,
                "path": str(target),
                "bytes": len(data),
            }
        )
    else:
        ui.note(f"wrote {len(data):,} bytes to {target}")
    return EXIT_OK
