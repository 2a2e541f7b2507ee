"""Content models of the three data stages (decoded by ``kl3m_data_client._formats``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kl3m_data_client._limits import DEFAULT_LIMITS, Limits
from kl3m_data_client._parquet import read_parquet_table, table_tokens

__all__ = [
    "DEFAULT_TOKENIZER",
    "DocumentContent",
    "DocumentMetadata",
    "ParquetContent",
    "RepresentationContent",
    "RepresentationList",
    "SingleRepresentation",
]

DEFAULT_TOKENIZER = "alea-institute/kl3m-004-128k-cased"
#: Representation MIME types picked when none is asked for, in this order (then the first).
PREFERRED_MIME_TYPES = ("text/markdown", "text/plain")


def preferred_mime(available: Iterable[str]) -> str | None:
    """``text/markdown``, else ``text/plain``, else the first of ``available``; None if empty."""
    names = list(available)
    for preferred in PREFERRED_MIME_TYPES:
        if preferred in names:
            return preferred
    return names[0] if names else None


@dataclass(frozen=True)
class DocumentMetadata:
    """Dublin Core metadata of a documents-stage object; ``fields`` holds every field."""

    identifier: str
    source: str
    title: str | None = None
    date: str | None = None
    format: str | None = None
    language: str | None = None
    fields: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentMetadata:
        """Build from the object's JSON (``content`` is left out of ``fields``)."""

        def opt(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        return cls(
            identifier=str(data.get("identifier") or ""),
            source=str(data.get("source") or ""),
            title=opt("title"),
            date=opt("date"),
            format=opt("format"),
            language=opt("language"),
            fields={k: v for k, v in data.items() if k != "content"},
        )


@dataclass(frozen=True)
class DocumentContent:
    """A documents-stage object: the original file (``str`` if text, else ``bytes``)."""

    content: str | bytes
    metadata: DocumentMetadata
    raw: bytes = field(default=b"", repr=False)
    blake2b: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentContent:
        """Build from a dict whose ``content`` is already decoded (metadata from the rest).

        Objects read from the bucket are decoded by the client (base64 + zlib, MIME type);
        this constructor takes ``content`` as given, like 0.2.0's.
        """
        content = data.get("content")
        if content is None:
            content = ""
        elif not isinstance(content, (str, bytes)):
            raise TypeError(f"'content' must be str or bytes, got {type(content).__name__}")
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        digest = data.get("blake2b")
        return cls(
            content=content,
            metadata=DocumentMetadata.from_dict(data),
            raw=raw,
            blake2b=digest if isinstance(digest, str) and digest else None,
        )

    @property
    def mime_type(self) -> str | None:
        """The MIME type of the original (the Dublin Core ``format``)."""
        return self.metadata.format

    @property
    def is_binary(self) -> bool:
        """True when the original is kept as bytes (PDF, images, archives)."""
        return isinstance(self.content, bytes)

    def verify(self) -> bool | None:
        """Check the original against ``blake2b``: True/False, or None when no hash is stored."""
        if not self.blake2b:
            return None
        return hashlib.blake2b(self.raw).hexdigest() == self.blake2b.lower()


#: 0.2.0's default arguments: kept first, so that whenever 0.2.0's no-argument call found
#: something, the same value comes back here.
REFERENCE_DEFAULT_MIME = "text/plain"
REFERENCE_DEFAULT_TOKENIZER = "cl100k_base"


def _pick_mime(available: dict[str, Any], mime_type: str | None) -> str | None:
    """``mime_type``; by default ``text/plain`` (0.2.0's default) if present, else
    markdown, else the first (where 0.2.0 returned None)."""
    if mime_type is not None:
        return mime_type if mime_type in available else None
    if REFERENCE_DEFAULT_MIME in available:
        return REFERENCE_DEFAULT_MIME
    return preferred_mime(available)


@dataclass(frozen=True)
class SingleRepresentation:
    """One representation (MIME type) of a document: its text and token ids per tokenizer."""

    mime_type: str
    content: str | None
    tokens: dict[str, list[int]]

    @classmethod
    def from_dict(cls, mime_type: str, data: dict[str, Any]) -> SingleRepresentation:
        """Build from a decoded representation entry."""
        content = data.get("content")
        return cls(
            mime_type=mime_type,
            content=content if isinstance(content, str) else None,
            tokens=dict(data.get("tokens") or {}),
        )

    def get_tokens(self, tokenizer: str | None = None) -> list[int] | None:
        """Token ids of ``tokenizer``; by default ``cl100k_base`` (0.2.0's default) if
        stored, else KL3M's tokenizer, else the first stored (where 0.2.0 gave None)."""
        if tokenizer is not None:
            return self.tokens.get(tokenizer)
        if REFERENCE_DEFAULT_TOKENIZER in self.tokens:
            return self.tokens[REFERENCE_DEFAULT_TOKENIZER]
        if DEFAULT_TOKENIZER in self.tokens:
            return self.tokens[DEFAULT_TOKENIZER]
        return next(iter(self.tokens.values()), None)

    def get_available_tokenizers(self) -> list[str]:
        """Names of the tokenizers with token ids."""
        return list(self.tokens)

    def token_count(self, tokenizer: str | None = None) -> int:
        """Number of tokens for ``tokenizer`` (0 when absent)."""
        tokens = self.get_tokens(tokenizer)
        return len(tokens) if tokens else 0

    def __str__(self) -> str:
        preview = ""
        if self.content:
            short = self.content[:50].replace("\n", " ")
            preview = f', content: "{short}{"..." if len(self.content) > 50 else ""}"'
        info = ", ".join(f"{t}: {len(v)} tokens" for t, v in self.tokens.items()) or "none"
        return f"<{self.mime_type}{preview}, tokens: {{{info}}}>"


@dataclass(frozen=True)
class RepresentationList:
    """All representations of one parsed document."""

    document_id: str
    source: str
    metadata: dict[str, Any]
    representations: dict[str, SingleRepresentation]
    success: bool = True
    error: str | None = None

    @classmethod
    def from_document_data(cls, document_data: dict[str, Any]) -> RepresentationList:
        """Build from one decoded ParsedDocument dict."""
        reps = {
            str(mime): SingleRepresentation.from_dict(str(mime), rep)
            for mime, rep in (document_data.get("representations") or {}).items()
            if isinstance(rep, dict)
        }
        return cls(
            document_id=str(document_data.get("identifier") or ""),
            source=str(document_data.get("source") or ""),
            metadata=dict(document_data.get("metadata") or {}),
            representations=reps,
            success=bool(document_data.get("success", True)),
            error=document_data.get("error"),
        )

    def get_representation(self, mime_type: str | None = None) -> SingleRepresentation | None:
        """The representation of ``mime_type`` (default: plain text, else markdown, else
        the first)."""
        mime = _pick_mime(self.representations, mime_type)
        return None if mime is None else self.representations[mime]

    def get_content(self, mime_type: str | None = None) -> str | None:
        """Text of a representation."""
        rep = self.get_representation(mime_type)
        return rep.content if rep else None

    def get_tokens(
        self, mime_type: str | None = None, tokenizer: str | None = None
    ) -> list[int] | None:
        """Token ids of a representation."""
        rep = self.get_representation(mime_type)
        return rep.get_tokens(tokenizer) if rep else None

    def get_available_mime_types(self) -> list[str]:
        """MIME types with a representation."""
        return list(self.representations)

    def get_available_tokenizers(self, mime_type: str | None = None) -> list[str]:
        """Tokenizers of a representation."""
        rep = self.get_representation(mime_type)
        return rep.get_available_tokenizers() if rep else []

    def token_count(self, mime_type: str | None = None, tokenizer: str | None = None) -> int:
        """Number of tokens of a representation."""
        rep = self.get_representation(mime_type)
        return rep.token_count(tokenizer) if rep else 0

    def summarize(self) -> dict[str, Any]:
        """A JSON-ready summary: id, source, MIME types and token counts."""
        return {
            "document_id": self.document_id,
            "source": self.source,
            "mime_types": self.get_available_mime_types(),
            "token_counts": {
                mime: {tok: rep.token_count(tok) for tok in rep.get_available_tokenizers()}
                for mime, rep in self.representations.items()
            },
        }

    def __str__(self) -> str:
        parts = [f"Document: {self.document_id}", f"Source: {self.source}"]
        reps = ", ".join(str(r) for r in self.representations.values())
        parts.append(f"Representations: [{reps}]")
        if not self.success and self.error:
            parts.append(f"Error: {self.error}")
        return "\n".join(parts)


@dataclass(frozen=True)
class RepresentationContent:
    """A representations-stage object: ParsedDocument dicts with their text decoded."""

    documents: list[dict[str, Any]]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepresentationContent:
        """Build from an already decoded object (see ``_formats.decode_representation``)."""
        return cls(documents=list(data.get("documents") or []))

    def get_document_data(self, index: int = 0) -> dict[str, Any] | None:
        """The ``index``-th ParsedDocument dict."""
        if 0 <= index < len(self.documents):
            return self.documents[index]
        return None

    def get_representation(self, index: int = 0) -> RepresentationList | None:
        """The ``index``-th ParsedDocument as a RepresentationList."""
        data = self.get_document_data(index)
        return RepresentationList.from_document_data(data) if data else None

    def get_text_content(self, mime_type: str | None = None, index: int = 0) -> str | None:
        """Text of a representation of the ``index``-th document."""
        rep = self.get_representation(index)
        return rep.get_content(mime_type) if rep else None

    def get_tokens(
        self, tokenizer: str | None = None, mime_type: str | None = None, index: int = 0
    ) -> list[int] | None:
        """Token ids of a representation of the ``index``-th document."""
        rep = self.get_representation(index)
        return rep.get_tokens(mime_type, tokenizer) if rep else None

    def get_all_representations(self) -> list[RepresentationList]:
        """Every ParsedDocument as a RepresentationList."""
        return [RepresentationList.from_document_data(d) for d in self.documents if d]

    def __str__(self) -> str:
        if not self.documents:
            return "RepresentationContent(empty)"
        if len(self.documents) == 1:
            rep = self.get_representation(0)
            if rep is not None:
                return f"RepresentationContent:\n{rep}"
        return f"RepresentationContent({len(self.documents)} documents)"


@dataclass
class ParquetContent:
    """A parquet-stage object: ``data`` is the object as stored (zlib-compressed parquet)."""

    document_id: str
    data: bytes = field(repr=False)
    size: int
    key: str = ""
    _table: Any = field(default=None, repr=False, compare=False)
    #: the size caps the table is read under (the client's, when the client decoded it)
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False, compare=False)

    @classmethod
    def from_bytes(
        cls, document_id: str, data: bytes, key: str = "", limits: Limits = DEFAULT_LIMITS
    ) -> ParquetContent:
        """Wrap an object's bytes; the table is parsed on first use, under ``limits``."""
        return cls(document_id=document_id, data=data, size=len(data), key=key, limits=limits)

    def get_table(self) -> Any:
        """The parquet file as a ``pyarrow.Table`` (raises CorruptObjectError if unreadable)."""
        if self._table is None:
            self._table = read_parquet_table(self.key or self.document_id, self.data, self.limits)
        return self._table

    def get_data(self) -> bytes:
        """The object's bytes as stored."""
        return self.data

    def get_schema(self) -> Any:
        """The ``pyarrow.Schema`` of the table."""
        return self.get_table().schema

    def get_columns(self) -> list[str]:
        """Column names."""
        return list(self.get_table().column_names)

    def get_column_data(self, column_name: str) -> list[Any] | None:
        """A column as Python values, or None if there is no such column."""
        table = self.get_table()
        if column_name not in table.column_names:
            return None
        return list(table.column(column_name).to_pylist())

    def get_rows(self) -> list[dict[str, Any]]:
        """All rows as dicts."""
        return list(self.get_table().to_pylist())

    def get_document(self) -> dict[str, Any]:
        """The first row: ``{"identifier": ..., "representations": {mime: [ids]}}``.

        A table without a ``representations`` column (not a KL3M parquet object) gives its
        first row as it is, with ``identifier`` defaulting to the document id.
        """
        table = self.get_table()
        rows = table.slice(0, 1).to_pylist()
        row: dict[str, Any] = dict(rows[0]) if rows else {}
        if "representations" not in table.column_names:
            row.setdefault("identifier", self.document_id)
            return row
        identifier, tokens = self._tokens()
        row["identifier"] = identifier or row.get("identifier") or self.document_id
        row["representations"] = tokens
        return row

    def get_representations(self) -> dict[str, list[int]]:
        """Token ids per MIME type (raises CorruptObjectError if the table holds none)."""
        return self._tokens()[1]

    def _tokens(self) -> tuple[str, dict[str, list[int]]]:
        return table_tokens(self.key or self.document_id, self.get_table())

    def save_to_file(self, file_path: str) -> bool:
        """Write the object's bytes to ``file_path``; returns True."""
        with open(file_path, "wb") as fh:
            fh.write(self.data)
        return True

    def __str__(self) -> str:
        return f"ParquetContent(document_id={self.document_id}, size={self.size} bytes)"
