"""The low-level S3 helpers of the AWS integration guide, blocking and async.

The blocking helpers take any boto3/botocore S3 client (``get_s3_client`` makes one); the
``async_*`` twins take an aiobotocore client (``AsyncKL3MClient(...).store.client()``).
Missing objects give ``None``/``False``; every other failure raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from kl3m_data_client._errors import CorruptObjectError
from kl3m_data_client._formats import (
    DEFAULT_LIMITS,
    bytes_to_content,
    decode_content_field,
    inflate,
)
from kl3m_data_client._keys import stage_prefix
from kl3m_data_client.models.common import Stage

if TYPE_CHECKING:
    from kl3m_data_client._config import ClientConfig

__all__ = [
    "async_check_object_exists",
    "async_get_object_bytes",
    "async_iter_prefix",
    "async_list_dataset_ids",
    "check_object_exists",
    "decompress_content",
    "get_object_bytes",
    "get_s3_client",
    "get_stage_prefix",
    "iter_prefix",
    "list_dataset_ids",
]

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def get_s3_client(
    region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    anonymous: bool = False,
    max_pool_connections: int = 64,
) -> Any:
    """A blocking botocore S3 client (path-style addressing for the dotted KL3M bucket)."""
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
        )
    )


def client_from_config(config: ClientConfig) -> Any:
    """A blocking botocore S3 client with the settings of ``config``."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session(profile=config.profile)
    kwargs = config.create_client_kwargs(session)
    return session.create_client(
        "s3", config=Config(**config.botocore_options(session=session)), **kwargs
    )


def get_stage_prefix(stage: Stage | str, dataset_id: str | None = None) -> str:
    """``"documents/"`` or ``"documents/usc/"``."""
    return stage_prefix(Stage.coerce(stage), dataset_id)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def iter_prefix(s3_client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """Stream the keys under ``prefix``, page by page."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        response = s3_client.list_objects_v2(**params)
        for item in response.get("Contents", ()):
            yield item["Key"]
        if not response.get("IsTruncated"):
            return
        params["ContinuationToken"] = response["NextContinuationToken"]


def list_dataset_ids(s3_client: Any, bucket: str, stage: Stage | str) -> list[str]:
    """The dataset ids (first-level folders) of ``stage``."""
    prefix = get_stage_prefix(stage)
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    ids: list[str] = []
    while True:
        response = s3_client.list_objects_v2(**params)
        ids.extend(
            p["Prefix"][len(prefix) :].rstrip("/") for p in response.get("CommonPrefixes", ())
        )
        if not response.get("IsTruncated"):
            return ids
        params["ContinuationToken"] = response["NextContinuationToken"]


def check_object_exists(s3_client: Any, bucket: str, key: str) -> bool:
    """True if ``key`` exists (HEAD); False if not; other errors raise."""
    try:
        s3_client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _error_code(exc) in _MISSING_CODES:
            return False
        raise
    return True


def get_object_bytes(s3_client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if it does not exist; other errors raise."""
    try:
        response = s3_client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _error_code(exc) in _MISSING_CODES:
            return None
        raise
    body = response["Body"]
    try:
        data: bytes = body.read()
    finally:
        body.close()
    return data


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


async def async_iter_prefix(s3_client: Any, bucket: str, prefix: str) -> AsyncIterator[str]:
    """Async :func:`iter_prefix` for an aiobotocore client."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        response = await s3_client.list_objects_v2(**params)
        for item in response.get("Contents", ()):
            yield item["Key"]
        if not response.get("IsTruncated"):
            return
        params["ContinuationToken"] = response["NextContinuationToken"]


async def async_list_dataset_ids(s3_client: Any, bucket: str, stage: Stage | str) -> list[str]:
    """Async :func:`list_dataset_ids` for an aiobotocore client."""
    prefix = get_stage_prefix(stage)
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    ids: list[str] = []
    while True:
        response = await s3_client.list_objects_v2(**params)
        ids.extend(
            p["Prefix"][len(prefix) :].rstrip("/") for p in response.get("CommonPrefixes", ())
        )
        if not response.get("IsTruncated"):
            return ids
        params["ContinuationToken"] = response["NextContinuationToken"]


async def async_check_object_exists(s3_client: Any, bucket: str, key: str) -> bool:
    """Async :func:`check_object_exists` for an aiobotocore client."""
    try:
        await s3_client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _error_code(exc) in _MISSING_CODES:
            return False
        raise
    return True


async def async_get_object_bytes(s3_client: Any, bucket: str, key: str) -> bytes | None:
    """Async :func:`get_object_bytes` for an aiobotocore client."""
    try:
        response = await s3_client.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _error_code(exc) in _MISSING_CODES:
            return None
        raise
    async with response["Body"] as body:
        data: bytes = await body.read()
    return data
