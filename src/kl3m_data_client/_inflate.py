"""Bounded inflation of zlib/gzip streams: the one place the decoders decompress.

Every step is checked against the caller's limit and charged to the memory budget of the
current decode (:func:`kl3m_data_client._budget.charge_inflated`). The inflater is ISA-L's
(``isal``, a dependency where it has wheels: the same streams and checksums, ~2x faster
than zlib) or the standard library's ``zlib``; ``tests/test_fast_decoders.py`` holds them
to the same output and the same refusals.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

from kl3m_data_client._budget import charge_inflated
from kl3m_data_client._errors import CorruptObjectError, SizeLimitExceededError

_inflater: Any
try:
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - platforms without isal wheels
    _inflater = zlib
#: What the inflater raises for a corrupt stream.
_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflater.error)


#: Output bytes inflated per step: the budget is charged and the cap checked per step.
INFLATE_STEP = 1 << 20


def inflate(data: bytes, key: str, *, limit: int, what: str = "zlib", wbits: int = 15) -> bytes:
    """Inflate a zlib (or gzip with ``wbits=31``) stream, refusing output above ``limit``.

    The output grows in one buffer (``BytesIO.getvalue`` hands it over without a copy), a
    step of at most :data:`INFLATE_STEP` bytes at a time, so refusing a bomb costs at most
    ``limit`` bytes and each step is charged to the memory budget of the current decode.
    """
    decompressor = _inflater.decompressobj(wbits)
    first = b""  # most objects inflate in one step: no buffer, no copy
    out: io.BytesIO | None = None
    pending: bytes = data
    size = 0
    try:
        while not decompressor.eof:
            chunk = decompressor.decompress(pending, min(INFLATE_STEP, limit + 1 - size))
            pending = decompressor.unconsumed_tail
            if not chunk:  # input exhausted before the end of the stream
                break
            size += len(chunk)
            if size > limit:
                break
            charge_inflated(len(chunk))
            if out is None and not first:
                first = chunk
                continue
            if out is None:
                out = io.BytesIO()
                out.write(first)
                first = b""
            out.write(chunk)
            del chunk
    except _ERRORS as exc:
        raise CorruptObjectError(key, f"invalid {what} data: {exc}") from exc
    if size > limit:
        raise SizeLimitExceededError(key, f"{what} data inflates beyond the limit of {limit} bytes")
    if not decompressor.eof:
        raise CorruptObjectError(key, f"truncated {what} data")
    return first if out is None else out.getvalue()


def has_zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
