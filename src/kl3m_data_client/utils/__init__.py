"""Low-level utilities (documented path: ``kl3m_data_client.utils.s3``)."""
