"""Low-level utilities (documented path: ``kl3m_data_client.utils.s3``)."""

from kl3m_data_client.utils.boto_types import S3ClientType

__all__ = ["S3ClientType"]
