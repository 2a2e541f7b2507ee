"""``kl3m_data_client.document``, the import path of 0.2.0's ``Document`` (re-export).

The S3 helpers 0.2.0's module imported are importable from here too (the same objects as
in :mod:`kl3m_data_client.utils.s3`).
"""

from kl3m_data_client._sync import Document
from kl3m_data_client.utils.s3 import check_object_exists, decompress_content, get_object_bytes

__all__ = ["Document", "check_object_exists", "decompress_content", "get_object_bytes"]
