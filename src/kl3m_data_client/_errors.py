"""The exception tree of kl3m-data-client.

::

    KL3MError
     ├── InvalidInputError (also ValueError)   bad dataset id, document id, prefix, option
     ├── NotFoundError                         bucket, dataset or object does not exist
     ├── AccessDeniedError                     credentials, region or requester pays
     ├── CorruptObjectError                    an object failed to decode (names key and reason)
     │    └── SizeLimitExceededError           an object (or its inflated content) is too large
     ├── ServiceError                          S3 answered with another error, after retries
     ├── ConnectionFailedError                 the endpoint could not be reached, after retries
     └── ClientClosedError                     the client was used after close()

No error text ever carries credentials.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ClientClosedError",
    "ConnectionFailedError",
    "CorruptObjectError",
    "InvalidInputError",
    "KL3MError",
    "NotFoundError",
    "ServiceError",
    "SizeLimitExceededError",
]


class KL3MError(Exception):
    """Base class of every error raised by kl3m-data-client."""


class InvalidInputError(KL3MError, ValueError):
    """An argument (dataset id, document id, prefix, option) is not acceptable."""


class NotFoundError(KL3MError):
    """The bucket, dataset or object does not exist."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class AccessDeniedError(KL3MError):
    """S3 refused the request (403)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CorruptObjectError(KL3MError):
    """An object could not be decoded; ``key`` and ``reason`` say which and why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt object {key!r}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[CorruptObjectError], tuple[str, str]]:
        return (type(self), (self.key, self.reason))


class SizeLimitExceededError(CorruptObjectError):
    """An object or its decompressed content is larger than the configured limit."""


class ServiceError(KL3MError):
    """S3 answered with an error that is neither 'not found' nor 'access denied'."""

    def __init__(self, message: str, *, key: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.code = code


class ConnectionFailedError(KL3MError):
    """The S3 endpoint could not be reached or kept failing mid-response."""


class ClientClosedError(KL3MError):
    """The client was used after it was closed."""
