"""``python -m kl3m_data_client.cli``: same as ``kl3m-client``."""

from kl3m_data_client.cli import console

console()
