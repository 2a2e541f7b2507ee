"""``kl3m_data_client.cli.commands``, the import path of 0.2.0's CLI entry point."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kl3m_data_client.cli import main
from kl3m_data_client.cli._parser import build_parser

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``kl3m-client`` arguments (``sys.argv`` by default)."""
    return build_parser().parse_args(argv)
