"""``kl3m-client inspect``: one document's metadata, checks and a preview of its content."""

from __future__ import annotations

import argparse
import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._errors import InvalidInputError, NotFoundError
from kl3m_data_client.cli._common import EXIT_OK, UsageError, missing_document
from kl3m_data_client.cli._paths import write_atomically
from kl3m_data_client.cli._ui import UI, json_text
from kl3m_data_client.models.common import Stage
from kl3m_data_client.models.document import (
    DocumentContent,
    ParquetContent,
    RepresentationContent,
)

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient

Content = DocumentContent | RepresentationContent | ParquetContent


@dataclass
class _Summary:
    """What ``inspect`` shows of one content: JSON fields, table rows, a preview."""

    #: the JSON fields after ``dataset_id``, ``document_id``, ``stage`` (in output order)
    fields: dict[str, Any]
    preview: str
    #: the table rows after the metadata
    extra: list[tuple[str, str]] = field(default_factory=list)


def _preview(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit] + "…"


def _document_summary(content: DocumentContent, limit: int) -> _Summary:
    meta = content.metadata
    body = content.content
    preview = (
        _preview(body, limit)
        if isinstance(body, str)
        else f"<{len(body):,} bytes of binary content>"
    )
    fields: dict[str, Any] = {
        "content_type": "document",
        "mime_type": meta.format,
        "metadata": {
            "identifier": meta.identifier,
            "source": meta.source,
            "title": meta.title or "",
            "format": meta.format or "",
        },
    }
    if isinstance(body, bytes):
        fields["content_size"] = len(body)
    verified = content.verify()
    extra = [
        ("date", meta.date or ""),
        ("language", meta.language or ""),
        ("size", f"{len(content.raw):,} bytes"),
        ("blake2b", {True: "ok", False: "MISMATCH", None: "not stored"}[verified]),
    ]
    return _Summary(fields, preview, extra)


def _representation_summary(
    content: RepresentationContent, args: argparse.Namespace, limit: int
) -> _Summary:
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
    title = rep.metadata.get("title")
    fmt = rep.metadata.get("format") or rep.metadata.get("mime_type")
    preview = _preview(single.content, limit)
    fields: dict[str, Any] = {
        "content_type": "representation",
        "mime_type": single.mime_type,
        "available_representations": rep.get_available_mime_types(),
        "representation_preview": {"type": single.mime_type, "content": preview},
        "metadata": {
            "identifier": rep.document_id,
            "source": rep.source,
            "title": None if title is None else str(title),
            "format": None if fmt is None else str(fmt),
        },
    }
    extra = [
        ("representations", ", ".join(rep.get_available_mime_types())),
        *(
            ("tokens", f"{single.token_count(tok):,} ({tok})")
            for tok in single.get_available_tokenizers()
        ),
    ]
    return _Summary(fields, preview, extra)


def _parquet_summary(content: ParquetContent, limit: int) -> _Summary:
    row = content.get_document()
    reps = content.get_representations()
    mime = next(iter(reps), None)
    tokens = reps.get(mime, []) if mime else []
    fields: dict[str, Any] = {
        "content_type": "parquet",
        "mime_type": "application/vnd.apache.parquet",
        "size": content.size,
        "table": {"columns": content.get_columns(), "rows": content.get_table().num_rows},
        "representations": {m: len(ids) for m, ids in reps.items()},
        "metadata": {
            "identifier": str(row.get("identifier") or ""),
            "source": None,
            "title": None,
            "format": mime,
        },
    }
    shown = ", ".join(str(t) for t in tokens[: max(1, limit // 8)])
    more = ", …" if len(tokens) > max(1, limit // 8) else ""
    preview = f"[{shown}{more}] ({len(tokens):,} tokens)" if tokens else ""
    extra = [
        ("columns", ", ".join(content.get_columns())),
        ("size", f"{content.size:,} bytes"),
        *(("tokens", f"{len(ids):,} ({m})") for m, ids in reps.items()),
    ]
    return _Summary(fields, preview, extra)


def _summary(content: Content, args: argparse.Namespace) -> _Summary:
    limit = args.preview_chars
    if isinstance(content, DocumentContent):
        return _document_summary(content, limit)
    if isinstance(content, RepresentationContent):
        return _representation_summary(content, args, limit)
    return _parquet_summary(content, limit)


async def cmd_inspect(client: AsyncKL3MClient, args: argparse.Namespace, ui: UI) -> int:
    stage = Stage.coerce(args.stage)
    if args.representation and stage is not Stage.REPRESENTATIONS:
        raise UsageError("--representation needs --stage representations")
    doc = await client.get_document(args.dataset, args.document_id, stage)
    if doc is None:
        raise await missing_document(client, args.dataset, args.document_id, stage)
    content = doc.content
    if not isinstance(content, (DocumentContent, RepresentationContent, ParquetContent)):
        # the client only returns the three content types
        raise InvalidInputError(f"unexpected content {type(content).__name__}")  # pragma: no cover
    summary = _summary(content, args)
    result: dict[str, Any] = {
        "dataset_id": args.dataset,
        "document_id": doc.document_id,
        "stage": stage.value,
        **summary.fields,
        "content_preview": summary.preview,
    }
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
        *summary.extra,
    ]
    ui.table(["field", "value"], rows)
    if summary.preview:
        ui.panel(summary.preview, title="content preview")
    return EXIT_OK


def _inspect_output(content: Content) -> bytes:
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
