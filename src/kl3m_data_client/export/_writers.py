"""Part writers: records in, one durable file out (blocking; call them from a thread).

A part is written to a hidden temporary name in its directory, flushed and fsynced, then
renamed to its final name (and the directory fsynced). The output is a pure function of the
records: no timestamps (gzip ``mtime=0``, no file name in the gzip header), fixed batching.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
from array import array
from collections.abc import Iterator
from json.encoder import encode_basestring, encode_basestring_ascii
from pathlib import Path
from typing import IO, Any

from kl3m_data_client.export._records import Record, token_array

#: Records per Parquet row group / per JSONL write.
BATCH_RECORDS = 2048
#: A batch is also flushed when it holds this many tokens (or text characters).
BATCH_UNITS = 4_000_000
#: ... and a JSONL batch when its encoded lines reach this size (4 M tokens are ~25 MB of
#: JSON). Where writes are cut does not change a part's bytes.
BATCH_BYTES = 8 << 20

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """fsync a directory (makes renames in it durable); a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def tmp_name(final: Path) -> Path:
    """The temporary name of ``final`` (hidden, same directory)."""
    return final.with_name(f"{TMP_PREFIX}{final.name}{TMP_SUFFIX}")


class HashingFile:
    """A write-only binary file that hashes (sha256) and counts what goes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        n = self.raw.write(data)
        self.size += len(data)
        return n if n is not None else len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # the owner closes ``raw``
        self.closed = True


def _units(record: Record) -> int:
    tokens = record.get("tokens")
    if tokens is not None:
        return len(tokens)
    text = record.get("text")
    return len(text) if isinstance(text, str) else 0


class PartWriter:
    """Base class: buffering into batches, the temporary file, fsync and rename."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = tmp_name(final)
        self._raw: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self.sink = HashingFile(self._raw)
        self.records = 0
        self._batch: list[Any] = []  # records (JsonlWriter keeps encoded lines instead)
        self._units = 0

    # the exporter calls add() on the event loop and write_pending() in a thread
    def add(self, record: Record, line: bytes | None = None) -> bool:
        """Buffer a record (``line``: its JSONL encoding, if done); True when a batch is
        ready for :meth:`write_batch`."""
        self._batch.append(record)
        self.records += 1
        self._units += _units(record)
        return len(self._batch) >= BATCH_RECORDS or self._units >= BATCH_UNITS

    def take_batch(self) -> list[Any]:
        """Take the buffered records (the batch boundary is fixed by the records alone)."""
        batch, self._batch, self._units = self._batch, [], 0
        return batch

    def write_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def _close_encoder(self) -> None:
        raise NotImplementedError

    def finish(self, pending: list[Any]) -> tuple[str, int]:
        """Write ``pending``, close, fsync, rename; returns (sha256 hex, bytes)."""
        if pending:
            self.write_batch(pending)
        self._close_encoder()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.sink.sha.hexdigest(), self.sink.size

    def abort(self) -> None:
        """Close and delete the temporary file (best effort)."""
        try:
            self._raw.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def dumps_deep(value: Any, *, separators: tuple[str, str], ensure_ascii: bool) -> str:
    """``json.dumps(value, separators=..., ensure_ascii=...)`` without recursion.

    The same text as ``json.dumps`` for any JSON value, however deeply nested: the JSON
    decoder accepts nesting close to the interpreter's recursion limit, where the recursive
    encoders (``json``, ``orjson``'s 255 levels) fail. Used when they do.
    """
    item_sep, key_sep = separators
    enc = encode_basestring_ascii if ensure_ascii else encode_basestring
    out: list[str] = []
    # (True, text) is emitted as it is; (False, value) is encoded
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        raw, v = stack.pop()
        if raw:
            out.append(v)
        elif isinstance(v, str):
            out.append(enc(v))
        elif v is None or v is True or v is False or isinstance(v, (int, float)):
            out.append(_scalar(v))
        elif isinstance(v, dict):
            if not v:
                out.append("{}")
                continue
            out.append("{")
            stack.append((True, "}"))
            items = list(v.items())
            for i in range(len(items) - 1, -1, -1):
                k, member = items[i]
                stack.append((False, member))
                name = k if isinstance(k, str) else _scalar(k)
                stack.append((True, (item_sep if i else "") + enc(name) + key_sep))
        elif isinstance(v, (list, tuple)):
            if not v:
                out.append("[]")
                continue
            out.append("[")
            stack.append((True, "]"))
            for i in range(len(v) - 1, -1, -1):
                stack.append((False, v[i]))
                if i:
                    stack.append((True, item_sep))
        else:
            raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")
    return "".join(out)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(v).__name__}")


def json_text(value: Any, *, separators: tuple[str, str], ensure_ascii: bool) -> str:
    """``json.dumps`` (same text), falling back to :func:`dumps_deep` for deep nesting."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
    except RecursionError:
        return dumps_deep(value, separators=separators, ensure_ascii=ensure_ascii)


_COMPACT = (",", ":")


def _dumps(record: Record) -> str:
    return json_text(record, separators=_COMPACT, ensure_ascii=False)


# -- the optional orjson fast path (``pip install kl3m-data-client[fast]``) ----------------
# orjson writes the very bytes of ``_dumps(record).encode()`` (compact separators, UTF-8,
# the same escapes: checked over every code point) for JSON made of exact str / int (64-bit)
# / bool / None / list / dict-with-str-keys values, 6-10x faster. Anything else -- floats
# (NaN, exponent formats), subclasses, other types -- takes the stdlib path, and so does
# whatever orjson refuses (lone surrogates, ints beyond 64 bits, deep nesting): a line is
# byte-identical whichever path wrote it.
_orjson: Any
try:
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_PLAIN_SCALARS = frozenset({str, bool, type(None)})


def _int64_list(values: list[Any] | tuple[Any, ...]) -> bool:
    """True when every element is an int (or bool) in int64: one C loop, no Python calls."""
    try:
        array("q", values)
    except (TypeError, OverflowError):
        return False
    return True


def _plain(value: Any) -> bool:
    """True when orjson encodes ``value`` exactly as ``json.dumps`` does (see above)."""
    t = type(value)
    if t in _PLAIN_SCALARS:
        return True
    if t is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not (type(v) in _PLAIN_SCALARS or _plain(v)):
                return False
        return True
    if t is list or t is tuple:
        return _int64_list(value) or all(map(_plain, value))
    return False


def encode_line(record: Record) -> bytes:
    """One JSON Lines line (``\\n`` included): the same bytes on the orjson and stdlib paths."""
    if _orjson is not None and _plain_or_deep(record):
        try:
            line: bytes = _orjson.dumps(record, option=_orjson.OPT_APPEND_NEWLINE)
            return line
        except TypeError:  # orjson.JSONEncodeError: lone surrogate, int range, depth
            pass
    try:
        return (_dumps(record) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, the line stays valid UTF-8
        text = json_text(record, separators=_COMPACT, ensure_ascii=True)
        return (text + "\n").encode("ascii")


def _plain_or_deep(record: Record) -> bool:
    """:func:`_plain`, False (the stdlib path) for a record nested too deeply to walk."""
    try:
        return _plain(record)
    except RecursionError:
        return False


def check_parquet_record(record: Record) -> None:
    """Raise ValueError if a Parquet part cannot hold ``record`` (strings must be UTF-8).

    Run in the fetch step, so that such a record is that object's error, not the part's.
    """
    for name, value in record.items():
        if name == "metadata":
            value = json_text(value, separators=(", ", ": "), ensure_ascii=False)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{name} is not valid Unicode: {exc}") from exc


class JsonlWriter(PartWriter):
    """JSON Lines, uncompressed, gzip (mtime 0) or zstd (level 3, single frame)."""

    def __init__(self, final: Path, compression: str) -> None:
        super().__init__(final)
        self._stream: Any
        if compression == "gzip":
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=self.sink, mtime=0, compresslevel=6
            )
        elif compression == "zstd":
            import zstandard

            sink: Any = self.sink
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)
        else:
            self._stream = self.sink
        self._lines = bytearray()  # the encoded lines of the batch
        self._pending = 0  # records in ``_lines``

    def add(self, record: Record, line: bytes | None = None) -> bool:
        # ``line``: the record already encoded (the exporter encodes in its fetch step).
        # A record is encoded when it is added (on the event loop; with orjson ~25 us for a
        # 47 KB document): the writer thread then only hashes and writes (both release the
        # GIL), and a batch of token records is ~6 bytes per token instead of ~40 as Python
        # ints. Lines go into one buffer per batch, not separate bytes objects: a batch of
        # those, freed together, fragmented the C heap (a parquet -> JSONL export grew by
        # ~5 MB per 1,000 documents).
        self._lines += encode_line(record) if line is None else line
        self._pending += 1
        self.records += 1
        self._units += _units(record)
        return (
            self._pending >= BATCH_RECORDS
            or self._units >= BATCH_UNITS
            or len(self._lines) >= BATCH_BYTES
        )

    def take_batch(self) -> list[Any]:
        lines, self._lines, self._pending, self._units = self._lines, bytearray(), 0, 0
        return [lines] if lines else []

    def write_batch(self, batch: list[Any]) -> None:
        for lines in batch:
            self._stream.write(lines)

    def _close_encoder(self) -> None:
        if self._stream is not self.sink:
            self._stream.close()


def parquet_schema(stage: str, content: str) -> Any:
    """The Arrow schema of a part: id, identifier, dataset, mime_type, tokens | text, ..."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string()),
        pa.field("identifier", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("mime_type", pa.string()),
    ]
    if content == "tokens":
        fields.append(pa.field("tokens", pa.list_(pa.uint32())))
    else:
        fields.append(pa.field("text", pa.string()))
    if stage == "documents":
        fields += [
            pa.field("encoding", pa.string()),
            pa.field("blake2b", pa.string()),
            pa.field("metadata", pa.string()),  # JSON object
        ]
    return pa.schema(fields)


def records_to_table(batch: list[Record], schema: Any) -> Any:
    """An Arrow table of ``batch`` (token lists built from one flat uint32 buffer)."""
    import pyarrow as pa

    columns: list[Any] = []
    for f in schema:
        name = f.name
        if name == "tokens":
            flat = token_array([], "")
            offsets = token_array([0], "")
            for r in batch:
                ids = r["tokens"]
                flat.extend(ids if type(ids) is array else token_array(ids, str(r.get("id"))))
                offsets.append(len(flat))
            values = pa.Array.from_buffers(pa.uint32(), len(flat), [None, pa.py_buffer(flat)])
            offs = pa.Array.from_buffers(
                pa.uint32(), len(offsets), [None, pa.py_buffer(offsets)]
            ).cast(pa.int32())
            columns.append(pa.ListArray.from_arrays(offs, values, type=f.type))
        elif name == "metadata":
            columns.append(
                pa.array(
                    [
                        json_text(r.get("metadata"), separators=(", ", ": "), ensure_ascii=False)
                        for r in batch
                    ],
                    type=pa.string(),
                )
            )
        else:
            columns.append(pa.array([r.get(name) for r in batch], type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


#: The Parquet columns whose values repeat, the only ones dictionary-encoded (token ids
#: repeat too: a 128k vocabulary). ``id``, ``identifier``, ``text``, ``blake2b`` and
#: ``metadata`` are nearly unique per row: a dictionary there only costs memory and CPU until
#: the writer falls back to plain encoding.
DICTIONARY_COLUMNS = ("dataset", "mime_type", "encoding", "tokens.list.element")


def _release_arrow_memory() -> None:
    """Hand the freed memory of pyarrow's default pool back to the OS."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


class ParquetWriter(PartWriter):
    """Parquet (zstd or snappy), one row group per batch.

    After each row group the memory pool returns what the batch used: mimalloc and jemalloc
    keep freed pages for reuse, and a documents -> Parquet export peaked ~30 MB higher
    without this (it costs ~1-2% CPU: the next batch faults its pages in again).
    """

    def __init__(self, final: Path, compression: str, stage: str, content: str) -> None:
        super().__init__(final)
        import pyarrow.parquet as pq

        self.schema = parquet_schema(stage, content)
        names = set(self.schema.names)
        self._writer = pq.ParquetWriter(
            self.sink,
            self.schema,
            compression=compression,
            use_dictionary=[c for c in DICTIONARY_COLUMNS if c.split(".")[0] in names],
            use_compliant_nested_type=True,  # list columns: ``tokens.list.element``
        )

    def add(self, record: Record, line: bytes | None = None) -> bool:
        tokens = record.get("tokens")
        if tokens is not None and type(tokens) is not array:
            # a batch holds up to BATCH_UNITS tokens: 4 bytes each in a uint32 array, ~40 as
            # a list of Python ints (160 MB per batch)
            record = {**record, "tokens": token_array(tokens, str(record.get("id")))}
        return super().add(record)

    def write_batch(self, batch: list[Record]) -> None:
        if batch:
            table = records_to_table(batch, self.schema)
            self._writer.write_table(table)
            del table
            _release_arrow_memory()

    def _close_encoder(self) -> None:
        self._writer.close()
        _release_arrow_memory()


def open_part(final: Path, fmt: str, compression: str, stage: str, content: str) -> PartWriter:
    """A writer of the part ``final``."""
    if fmt == "parquet":
        return ParquetWriter(final, compression, stage, content)
    return JsonlWriter(final, compression)


def read_part(path: Path, fmt: str, compression: str) -> Iterator[Record]:
    """The records of a finished part (used to rebuild deduplication state on resume)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            yield from table.to_pylist()
        return
    if compression == "gzip":
        fh: Any = gzip.open(path, "rb")  # noqa: SIM115
    elif compression == "zstd":
        import zstandard

        fh = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
    else:
        fh = open(path, "rb")  # noqa: SIM115
    import io

    with fh, io.TextIOWrapper(fh, encoding="utf-8") as text:
        for line in text:
            if line.strip():
                yield json.loads(line)
