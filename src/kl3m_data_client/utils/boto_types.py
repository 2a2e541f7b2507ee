"""Typing aliases of 0.2.0 for boto3 S3 clients (``kl3m_data_client.utils.boto_types``)."""

from __future__ import annotations

from typing import Any, Protocol, Union

__all__ = ["S3Client", "S3ClientType"]


class S3Client(Protocol):
    """The boto3 S3 client methods the blocking helpers use."""

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_paginator(self, operation_name: str) -> Any: ...


S3ClientType = Union[S3Client, Any]  # noqa: UP007 (a runtime alias, as in 0.2.0)
