"""``kl3m_data_client.client``, the import path of 0.2.0's ``KL3MClient`` (re-export)."""

from kl3m_data_client._sync import Document, KL3MClient

__all__ = ["Document", "KL3MClient"]
