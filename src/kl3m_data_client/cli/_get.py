"""``kl3m-client get``: one object's bytes, to stdout or a file (verified, safely named)."""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kl3m_data_client._errors import CorruptObjectError
from kl3m_data_client.cli._common import EXIT_OK, UsageError, missing_document
from kl3m_data_client.cli._paths import path_in_directory, safe_file_name, write_atomically
from kl3m_data_client.cli._ui import UI
from kl3m_data_client.models.common import Stage
from kl3m_data_client.models.document import DocumentContent

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient


def _save(output: str, name: str, data: bytes, overwrite: bool) -> Path:
    """Write ``data`` to ``output``, or into it under ``name`` when it is a directory."""
    target = Path(output)
    if target.is_dir() or output.endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
        target = path_in_directory(target, name)
    write_atomically(target, data, overwrite=overwrite)
    return target


async def cmd_get(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    to_stdout = args.output in (None, "-")
    if to_stdout and ui.json_mode:
        raise UsageError("--json needs --output (the document bytes would go to stdout)")
    content_type: str | None
    if args.stage is None:
        doc = await client.get_document(args.dataset, args.document_id, Stage.DOCUMENTS)
        if doc is None:
            raise await missing_document(client, args.dataset, args.document_id, Stage.DOCUMENTS)
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
            raise await missing_document(client, args.dataset, args.document_id, stage)
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
