"""Byte sizes: the default memory budget and ``parse_size`` (``512MiB``, ``1.5GB``...).

Re-exported by :mod:`kl3m_data_client._budget`, the memory budget they size.
"""

from __future__ import annotations

import re

MiB = 1024 * 1024
#: The default budget of a client, an export and the CLI.
DEFAULT_MEMORY_BUDGET = 1024 * MiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: str | int) -> int:
    """Bytes of ``512MiB``, ``1.5GB``, ``1048576`` (ValueError for anything else)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value))
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 512MiB, 2GiB, 1000000)")
    return int(float(match.group(1)) * unit)
