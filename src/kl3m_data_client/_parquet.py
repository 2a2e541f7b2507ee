"""Parquet-stage helpers shared by the decoders (``_formats``) and the parquet model.

Both sides import this module; it imports neither, so the model can read its table with the
limits it was decoded under without importing the decoders.
"""

from __future__ import annotations

from typing import Any

from kl3m_data_client._errors import CorruptObjectError
from kl3m_data_client._inflate import has_zlib_header, inflate
from kl3m_data_client._limits import DEFAULT_LIMITS, Limits


def parquet_bytes(key: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The parquet file inside a parquet-stage object (zlib-compressed or plain)."""
    if data[:4] == b"PAR1":
        return data
    if has_zlib_header(data):
        return inflate(data, key, limit=limits.max_inflated_bytes)
    raise CorruptObjectError(key, "neither zlib-compressed nor plain parquet")


def read_parquet_table(key: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Read a parquet-stage object into a ``pyarrow.Table``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    payload = parquet_bytes(key, data, limits)
    try:
        # not pq.read_table: its dataset machinery and thread pool cost ~0.5 ms per
        # one-row object (4x the read) and ~70 MB more peak RSS in a parquet-stage export
        return pq.ParquetFile(pa.BufferReader(payload)).read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptObjectError(key, f"invalid parquet: {exc}") from exc


def table_tokens(key: str, table: Any) -> tuple[str, dict[str, list[int]]]:
    """The identifier and token ids per MIME type of a parquet-stage table's first row."""
    if table.num_rows == 0:
        raise CorruptObjectError(key, "parquet table has no rows")
    try:
        names = table.column_names
    except ValueError as exc:  # e.g. column names that are not UTF-8
        raise CorruptObjectError(key, f"unreadable parquet schema: {exc}") from exc
    if names.count("identifier") > 1 or names.count("representations") != 1:
        raise CorruptObjectError(
            key, "parquet table needs exactly one 'representations' column (and one identifier)"
        )
    identifier = ""
    try:
        if "identifier" in names:
            value = table.column("identifier")[0].as_py()
            identifier = "" if value is None else str(value)
        reps = table.column("representations")[0].as_py()
    except (pa_errors(), KeyError, ValueError, TypeError) as exc:
        raise CorruptObjectError(key, f"unreadable parquet row: {exc}") from exc
    return identifier, _token_map(key, reps)


def pa_errors() -> type[Exception]:
    import pyarrow as pa

    return pa.ArrowException  # type: ignore[no-any-return]


def _token_map(key: str, reps: Any) -> dict[str, list[int]]:
    """``{mime: [ids]}`` from a map column value (a dict or a list of (key, value) pairs)."""
    if reps is None:
        return {}
    if isinstance(reps, dict):
        pairs = list(reps.items())
    elif isinstance(reps, list) and all(isinstance(p, tuple) and len(p) == 2 for p in reps):
        pairs = reps
    else:
        raise CorruptObjectError(key, "'representations' is not a map of MIME type to token ids")
    out: dict[str, list[int]] = {}
    for mime, ids in pairs:
        if ids is None:
            ids = []
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise CorruptObjectError(key, f"tokens of {mime!r} are not a list of ids")
        out[str(mime)] = ids
    return out
