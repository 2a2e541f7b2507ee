"""The low-level S3 helpers of 0.2.0 (``kl3m_data_client.utils.s3``), blocking and async.

The blocking helpers take any boto3/botocore S3 client (``get_s3_client`` makes one) with
0.2.0's signatures and positional order; the ``async_*`` twins take an aiobotocore client
(the S3 client of an ``AsyncKL3MClient``). A missing object gives ``None``/``False``;
every other failure raises a :class:`~kl3m_data_client.KL3MError` subclass (access denied,
missing bucket, connection failure, ...) whose ``__cause__`` is the botocore exception.
0.2.0 logged and returned ``None``/``False`` for those too, hiding outages as absence.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kl3m_data_client._boto3_store import (
    boto_error,
    botocore_errors,
    client_from_config,
    iter_pages,
    list_params,
)
from kl3m_data_client._errors import CorruptObjectError, InvalidInputError
from kl3m_data_client._formats import (
    DEFAULT_LIMITS,
    bytes_to_content,
    decode_content_field,
    inflate,
)
from kl3m_data_client._keys import stage_prefix
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_TIMEOUT",
    "async_check_object_exists",
    "async_get_object_bytes",
    "async_iter_prefix",
    "async_list_dataset_ids",
    "check_object_exists",
    "check_prefix_exists",
    "check_stage_exists",
    "convert_key_to_stage",
    "decompress_content",
    "get_document_key",
    "get_index_key",
    "get_object",
    "get_object_bytes",
    "get_parquet_key",
    "get_representation_key",
    "get_s3_client",
    "get_s3_config",
    "get_stage_prefix",
    "iter_pages",
    "iter_prefix",
    "list_common_prefixes",
    "list_dataset_ids",
    "put_object_bytes",
    "put_object_path",
]

#: Read timeout (seconds) of 0.2.0's clients; ``get_s3_config`` uses 60 like our client.
DEFAULT_TIMEOUT = 600

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


# -- clients -------------------------------------------------------------------------------
def get_s3_config(
    pool_size: int = 25,
    connect_timeout: float = 10,
    read_timeout: float = 60,
    retry_count: int = 3,
    retry_mode: str = "adaptive",
    region_name: str | None = None,
) -> Any:
    """A ``botocore.config.Config``: pool size, timeouts, retries, path-style addressing."""
    from botocore.config import Config

    return Config(
        max_pool_connections=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": retry_count, "mode": retry_mode},
        region_name=region_name,
        s3={"addressing_style": "path"},
    )


def get_s3_client(
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    config: Any = None,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    anonymous: bool = False,
    max_pool_connections: int = 64,
) -> Any:
    """A blocking botocore S3 client (0.2.0's positional order; ``region=`` is an alias).

    ``config`` (a ``botocore.config.Config``, e.g. from :func:`get_s3_config`) is merged
    over the client's defaults (path-style addressing for the dotted KL3M bucket, timeouts,
    retries). Credentials not given come from botocore's chain.
    """
    from kl3m_data_client._config import ClientConfig

    return client_from_config(
        ClientConfig.from_kwargs(
            region=region,
            region_name=region_name,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            endpoint_url=endpoint_url,
            profile=profile,
            anonymous=anonymous,
            max_concurrency=max_pool_connections,
        ),
        config,
    )


# -- errors --------------------------------------------------------------------------------
def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: BaseException) -> bool:
    return _error_code(exc) in _MISSING_CODES


# -- listing -------------------------------------------------------------------------------
def iter_prefix(
    client: Any,
    bucket: str,
    prefix: str,
    page_size: int = 1000,
    max_items: int | None = None,
) -> Iterator[str]:
    """Stream the keys under ``prefix``, page by page (at most ``max_items`` keys)."""
    if max_items is not None and max_items <= 0:
        return
    count = 0
    for page in iter_pages(client, bucket, prefix, page_size=page_size):
        for item in page.get("Contents", ()):
            yield item["Key"]
            count += 1
            if max_items is not None and count >= max_items:
                return


def list_common_prefixes(client: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" directly under ``prefix`` (``documents/usc/``, ...)."""
    return [
        p["Prefix"]
        for page in iter_pages(client, bucket, prefix, delimiter="/")
        for p in page.get("CommonPrefixes", ())
    ]


def check_prefix_exists(client: Any, bucket: str, prefix: str) -> bool:
    """True if at least one object has a key under ``prefix``."""
    for page in iter_pages(client, bucket, prefix, page_size=1):
        return bool(page.get("Contents"))
    return False


def list_dataset_ids(client: Any, bucket: str, stage: Stage | str = Stage.DOCUMENTS) -> list[str]:
    """The dataset ids (first-level folders) of ``stage`` (default: documents)."""
    prefix = get_stage_prefix(stage)
    return [p[len(prefix) :].rstrip("/") for p in list_common_prefixes(client, bucket, prefix)]


# -- objects -------------------------------------------------------------------------------
def check_object_exists(
    client: Any, bucket: str, key: str, retry_count: int = 2, retry_delay: float = 0.5
) -> bool:
    """True if ``key`` exists (HEAD); False if not; other errors raise.

    ``retry_count``/``retry_delay`` are accepted for 0.2.0's signature; retries are the
    client's own (``get_s3_config(retry_count=...)``).
    """
    try:
        client.head_object(Bucket=bucket, Key=key)
    except botocore_errors() as exc:
        if _is_missing(exc):
            return False
        raise boto_error(exc, f"object {key!r}", bucket=bucket, key=key, client=client) from exc
    return True


def get_object_bytes(
    client: Any, bucket: str, key: str, retry_count: int = 3, retry_delay: float = 1.0
) -> bytes | None:
    """The object's bytes, or None if it does not exist; other errors raise.

    ``retry_count``/``retry_delay`` are accepted for 0.2.0's signature; retries are the
    client's own (``get_s3_config(retry_count=...)``).
    """
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
    except botocore_errors() as exc:
        if _is_missing(exc):
            return None
        raise boto_error(exc, f"object {key!r}", bucket=bucket, key=key, client=client) from exc
    return data


def get_object(
    client: Any, bucket: str, key: str, retry_count: int = 3, retry_delay: float = 1.0
) -> str | None:
    """The object decoded as UTF-8 text, or None if it does not exist."""
    data = get_object_bytes(client, bucket, key, retry_count, retry_delay)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptObjectError(key, f"not UTF-8 text: {exc}") from exc


def put_object_bytes(
    client: Any,
    bucket: str,
    key: str,
    data: str | bytes,
    retry_count: int = 3,
    retry_delay: float = 1.0,
) -> bool:
    """Upload ``data`` (text is UTF-8 encoded) to ``key``; True on success, errors raise."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    except botocore_errors() as exc:
        raise boto_error(exc, f"upload of {key!r}", bucket=bucket, key=key, client=client) from exc
    return True


def put_object_path(client: Any, bucket: str, key: str, path: str | os.PathLike[str]) -> bool:
    """Upload the file at ``path`` to ``key``; True on success, errors raise."""
    return put_object_bytes(client, bucket, key, Path(path).read_bytes())


# -- keys ----------------------------------------------------------------------------------
def get_stage_prefix(stage: Stage | str, dataset_id: str | None = None) -> str:
    """``"documents/"`` or ``"documents/usc/"`` (a dataset id may have a sub-path)."""
    return stage_prefix(Stage.coerce(stage), dataset_id)


def convert_key_to_stage(key: str, target_stage: Stage | str) -> str:
    """The key of the same document in ``target_stage`` (``.json`` dropped for parquet,
    added for documents/representations)."""
    stage = Stage.coerce(target_stage)
    first, sep, rest = key.partition("/")
    if not sep or not first:
        raise InvalidInputError(f"key {key!r} has no stage prefix")
    converted = f"{stage.value}/{rest}"
    if stage is Stage.PARQUET and converted.endswith(".json"):
        return converted[: -len(".json")]
    if (
        stage in (Stage.DOCUMENTS, Stage.REPRESENTATIONS)
        and first == Stage.PARQUET.value
        and not converted.endswith(".json")
    ):
        return converted + ".json"
    return converted


def get_document_key(key: str) -> str:
    """:func:`convert_key_to_stage` to documents."""
    return convert_key_to_stage(key, Stage.DOCUMENTS)


def get_representation_key(key: str) -> str:
    """:func:`convert_key_to_stage` to representations."""
    return convert_key_to_stage(key, Stage.REPRESENTATIONS)


def get_parquet_key(key: str) -> str:
    """:func:`convert_key_to_stage` to parquet."""
    return convert_key_to_stage(key, Stage.PARQUET)


def get_index_key(dataset_id: str, key_prefix: str | None = None) -> str:
    """``index/{dataset_id}.json.gz`` (or the index of a key prefix)."""
    from kl3m_data_client._keys import index_key

    return index_key(dataset_id, key_prefix)


def check_stage_exists(
    client: Any,
    bucket: str,
    key: str,
    stage: Stage | str,
    retry_count: int = 2,
    retry_delay: float = 0.5,
) -> bool:
    """True if the document of ``key`` (any stage) has an object in ``stage``."""
    return check_object_exists(client, bucket, convert_key_to_stage(key, stage))


# -- content -------------------------------------------------------------------------------
def decompress_content(content: str | bytes, binary: bool = False) -> str | bytes:
    """Invert the bucket's encodings: ``base64(zlib(raw))`` strings and gzip bytes.

    Returns text when the result is UTF-8 (unless ``binary=True``), else bytes. Raises
    CorruptObjectError when ``content`` is neither.
    """
    mime = "application/octet-stream" if binary else None
    if isinstance(content, bytes):
        if content[:2] == b"\x1f\x8b":
            raw = inflate(
                content, "<content>", limit=DEFAULT_LIMITS.max_inflated_bytes, what="gzip", wbits=31
            )
            return bytes_to_content(raw, mime)
        try:
            content = content.decode("ascii", errors="strict")
        except UnicodeDecodeError as exc:
            raise CorruptObjectError(
                "<content>", f"neither gzip nor base64 (not ASCII): {exc}"
            ) from exc
    return decode_content_field(content, "<content>", mime_type=mime)


# -- async twins ---------------------------------------------------------------------------
async def async_iter_pages(
    client: Any, bucket: str, prefix: str, *, delimiter: str | None = None, page_size: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Async :func:`iter_pages` for an aiobotocore client."""
    params = list_params(bucket, prefix, delimiter, page_size)
    pages = client.get_paginator("list_objects_v2").paginate(**params).__aiter__()
    while True:
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return
        except botocore_errors() as exc:
            raise boto_error(exc, f"listing of {prefix!r}", bucket=bucket, client=client) from exc
        yield page


async def async_iter_prefix(
    client: Any, bucket: str, prefix: str, page_size: int = 1000, max_items: int | None = None
) -> AsyncIterator[str]:
    """Async :func:`iter_prefix` for an aiobotocore client."""
    if max_items is not None and max_items <= 0:
        return
    count = 0
    async for page in async_iter_pages(client, bucket, prefix, page_size=page_size):
        for item in page.get("Contents", ()):
            yield item["Key"]
            count += 1
            if max_items is not None and count >= max_items:
                return


async def async_list_dataset_ids(
    client: Any, bucket: str, stage: Stage | str = Stage.DOCUMENTS
) -> list[str]:
    """Async :func:`list_dataset_ids` for an aiobotocore client."""
    prefix = get_stage_prefix(stage)
    ids: list[str] = []
    async for page in async_iter_pages(client, bucket, prefix, delimiter="/"):
        ids.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
    return ids


async def async_check_object_exists(client: Any, bucket: str, key: str) -> bool:
    """Async :func:`check_object_exists` for an aiobotocore client."""
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except botocore_errors() as exc:
        if _is_missing(exc):
            return False
        raise boto_error(exc, f"object {key!r}", bucket=bucket, key=key, client=client) from exc
    return True


async def async_get_object_bytes(client: Any, bucket: str, key: str) -> bytes | None:
    """Async :func:`get_object_bytes` for an aiobotocore client."""
    try:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
    except botocore_errors() as exc:
        if _is_missing(exc):
            return None
        raise boto_error(exc, f"object {key!r}", bucket=bucket, key=key, client=client) from exc
    return data
