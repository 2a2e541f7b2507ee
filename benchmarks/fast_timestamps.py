"""Prototype (benchmarks only): a faster botocore timestamp parser for the S3 seam.

botocore parses every ``Last-Modified`` (GET/HEAD header, RFC 1123) and every listed
``LastModified`` (ISO 8601) with ``dateutil``: ~20-40 us each. S3 writes exactly two
formats, which ``datetime`` parses in ~1-2 us; anything else falls back to botocore's own
parser. ``session_with_fast_timestamps()`` is an ``AioSession`` for
``AsyncKL3MClient(session=...)``; the proposal for ``_store.py`` is the two lines of
``install(session)`` in ``S3Store._create``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from botocore.utils import parse_timestamp

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def fast_parse_timestamp(value: Any) -> datetime:
    """S3's ISO 8601 (``2024-05-01T12:00:00.000Z``) or RFC 1123 (``Wed, 01 May 2024
    12:00:00 GMT``) timestamps, as aware UTC datetimes; botocore's parser otherwise."""
    if isinstance(value, str):
        try:
            if len(value) == 29 and value.endswith(" GMT") and value[3] == ",":
                # 'Wed, 21 Oct 2015 07:28:00 GMT'
                return datetime(
                    int(value[12:16]),
                    _MONTHS[value[8:11]],
                    int(value[5:7]),
                    int(value[17:19]),
                    int(value[20:22]),
                    int(value[23:25]),
                    tzinfo=timezone.utc,
                )
            if value.endswith("Z") and value[10:11] == "T":
                return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)
        except (KeyError, ValueError):
            pass
    return parse_timestamp(value)  # type: ignore[no-any-return]


def install(session: Any) -> None:
    """Make ``session``'s clients parse timestamps with :func:`fast_parse_timestamp`."""
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=fast_parse_timestamp)


def session_with_fast_timestamps() -> Any:
    from aiobotocore.session import AioSession

    session = AioSession()
    install(session)
    return session


if __name__ == "__main__":  # equality with botocore's parser, and the speed of both
    import functools
    import timeit

    samples = ["Wed, 21 Oct 2015 07:28:00 GMT", "2024-05-01T12:00:00.000Z", "2024-05-01T12:00:00Z"]
    for s in samples:
        assert fast_parse_timestamp(s) == parse_timestamp(s), s
        fast = timeit.timeit(functools.partial(fast_parse_timestamp, s), number=20000) / 20000
        slow = timeit.timeit(functools.partial(parse_timestamp, s), number=20000) / 20000
        print(f"{s!r}: botocore {slow * 1e6:.1f} us, fast {fast * 1e6:.1f} us")
