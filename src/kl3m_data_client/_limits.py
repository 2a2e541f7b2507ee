"""Size caps on what one object may cost: part of the client configuration.

They live below the decoders (``_formats`` takes a :class:`Limits` to enforce) so that the
configuration does not import the decoders it configures.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Size caps: ``max_object_bytes`` per GET, ``max_inflated_bytes`` per decompression."""

    max_object_bytes: int = 512 * MiB
    max_inflated_bytes: int = 1024 * MiB


DEFAULT_LIMITS = Limits()
