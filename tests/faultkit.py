"""Shared pieces of the fault-injection tests."""

from __future__ import annotations

from typing import Any

from kl3m_data_client import ConnectionFailedError, ServiceError
from kl3m_data_client.testing import LocalBucket
from kl3m_data_client.testing._faults import Fault, FaultProxy

#: Short timeouts and few attempts so that failing runs end quickly.
FAST = {"read_timeout": 1.0, "connect_timeout": 1.0, "max_attempts": 4, "max_concurrency": 16}

#: Each fault, injected on every request, and the error the client must end with.
ALL_FAILING: list[tuple[Fault, type[Exception]]] = [
    (Fault.SLOWDOWN_503, ServiceError),
    (Fault.ERROR_500, ServiceError),
    (Fault.THROTTLE_429, ServiceError),
    (Fault.RESET_BEFORE, ConnectionFailedError),
    (Fault.RESET_MID_BODY, ConnectionFailedError),
    (Fault.TRUNCATE, ConnectionFailedError),
    (Fault.STALL, ConnectionFailedError),
]


def proxied_kwargs(bucket: LocalBucket, proxy: FaultProxy, **over: Any) -> dict[str, Any]:
    """Client arguments for ``bucket`` reached through ``proxy``, with :data:`FAST` settings."""
    return {**bucket.client_kwargs(), **FAST, "endpoint_url": proxy.endpoint_url, **over}
