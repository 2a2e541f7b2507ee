"""Operations on whole datasets at the import path of 0.2.0 (``kl3m_data_client.operations``)."""
