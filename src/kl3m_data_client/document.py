"""``kl3m_data_client.document``, the import path of 0.2.0's ``Document`` (re-export)."""

from kl3m_data_client._sync import Document

__all__ = ["Document"]
