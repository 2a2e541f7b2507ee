"""Checks of single export option values (raise InvalidInputError naming the option)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kl3m_data_client._budget import DEFAULT_MEMORY_BUDGET, parse_size
from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client.models.common import Stage

FORMATS = ("jsonl", "parquet")
JSONL_COMPRESSIONS = ("none", "gzip", "zstd")
PARQUET_COMPRESSIONS = ("zstd", "snappy")


def opt_int(name: str, value: Any, minimum: int) -> int | None:
    """``value`` if None or an integer >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def shard_of(value: Any) -> tuple[int, int] | None:
    """``(index, count)`` of a shard given as a pair or as ``"I/N"``."""
    if value is None:
        return None
    if isinstance(value, str) and "/" in value:
        a, _, b = value.partition("/")
        try:
            value = (int(a), int(b))
        except ValueError:
            raise InvalidInputError(f"shard must look like 'I/N', got {value!r}") from None
    try:
        index, count = value
    except (TypeError, ValueError):
        raise InvalidInputError(f"shard must be (index, count), got {value!r}") from None
    if (
        not isinstance(index, int)
        or not isinstance(count, int)
        or count < 1
        or not 0 <= index < count
    ):
        raise InvalidInputError(f"shard must be (index, count) with 0 <= index < count: {value!r}")
    return (index, count)


def format_of(format: str, compression: str | None) -> tuple[str, str]:
    """``(format, compression)`` checked, with the format's default compression."""
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if fmt == "parquet":
        comp = "zstd" if compression is None else str(compression).lower()
        if comp not in PARQUET_COMPRESSIONS:
            raise InvalidInputError(
                f"parquet compression must be one of {', '.join(PARQUET_COMPRESSIONS)}, "
                f"got {compression!r}"
            )
        return fmt, comp
    comp = "none" if compression is None else str(compression).lower()
    comp = {"gz": "gzip", "zst": "zstd"}.get(comp, comp)
    if comp not in JSONL_COMPRESSIONS:
        raise InvalidInputError(
            f"jsonl compression must be one of {', '.join(JSONL_COMPRESSIONS)}, got {compression!r}"
        )
    if comp == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise InvalidInputError(
                "zstd compression needs the 'zstandard' package: "
                "pip install 'kl3m-data-client[zstd]'"
            ) from None
    return fmt, comp


def content_of(stage: Stage, content: str | None) -> str:
    """``tokens`` or ``text``, what ``stage`` has (its default when None)."""
    if content is None:
        content = "text" if stage is Stage.DOCUMENTS else "tokens"
    content = str(content).lower()
    if content not in ("tokens", "text"):
        raise InvalidInputError(f"content must be 'tokens' or 'text', got {content!r}")
    if stage is Stage.DOCUMENTS and content == "tokens":
        raise InvalidInputError("the documents stage has no tokens; use content='text'")
    if stage is Stage.PARQUET and content == "text":
        raise InvalidInputError("the parquet stage has no text; use content='tokens'")
    return content


def token_range(
    stage: Stage, min_tokens: int | None, max_tokens: int | None
) -> tuple[int | None, int | None]:
    """``(min_tokens, max_tokens)`` checked against each other and the stage."""
    min_t = opt_int("min_tokens", min_tokens, 0)
    max_t = opt_int("max_tokens", max_tokens, 0)
    if stage is Stage.DOCUMENTS and (min_t is not None or max_t is not None):
        raise InvalidInputError("the documents stage has no tokens to count (min/max_tokens)")
    if min_t is not None and max_t is not None and min_t > max_t:
        raise InvalidInputError(f"min_tokens ({min_t}) is above max_tokens ({max_t})")
    return min_t, max_t


def mime_types_of(mime_types: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The MIME types (a list or a comma-separated string), sorted and de-duplicated."""
    if mime_types is None:
        return None
    if isinstance(mime_types, str):
        mime_types = mime_types.split(",")
    mimes = tuple(sorted({str(m).strip() for m in mime_types if str(m).strip()}))
    if not mimes:
        raise InvalidInputError("mime_types is empty")
    return mimes


def seconds_of(name: str, value: object, default: float) -> float:
    """Seconds >= 0 (``default`` when None)."""
    seconds = default if value is None else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 <= seconds < float("inf")
    ):
        raise InvalidInputError(f"{name} must be seconds >= 0, got {value!r}")
    return float(seconds)


def budget_of(value: int | str | None) -> int:
    """A memory budget in bytes (an int, or a size such as ``"512MiB"``)."""
    if isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError as exc:
            raise InvalidInputError(f"memory_budget: {exc}") from exc
    return opt_int("memory_budget", value, 1) or DEFAULT_MEMORY_BUDGET
