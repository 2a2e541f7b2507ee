"""What the Ray reader and the Ray export share: client settings and the secrets rule.

Explicit credentials serve the driver only; workers get ``config.without_secrets()`` and
resolve their own through botocore's chain.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from kl3m_data_client._config import ClientConfig

logger = logging.getLogger("kl3m_data_client.ray")

#: What a read does with a bad or missing object: raise its typed error, or log and skip it.
OnError = Literal["skip", "raise"]

#: Keyword arguments that are client settings (the rest are export or read options).
CLIENT_KWARGS = frozenset(f.name for f in dataclasses.fields(ClientConfig)) | {
    "bucket_name",
    "region_name",
}


def client_config(config: ClientConfig | None, kwargs: dict[str, Any]) -> ClientConfig:
    """``config``, or one built from client keyword arguments (not both)."""
    if config is not None:
        if kwargs:
            raise TypeError(
                f"pass either config or client keyword arguments, not both: {sorted(kwargs)}"
            )
        return config
    return ClientConfig.from_kwargs(**kwargs)


def warn_secrets(config: ClientConfig) -> None:
    """Log (once per call) that explicit credentials stay on the driver."""
    if config.aws_secret_access_key or config.aws_session_token:
        logger.warning(
            "explicit AWS credentials are used on the driver only and never sent to Ray "
            "workers; the workers resolve their own through botocore's chain (set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the cluster's environment or "
            "runtime_env, or use instance/pod roles); see docs/scale-out.md"
        )
