"""The exception tree of kl3m-data-client.

::

    KL3MError
     ├── InvalidInputError (also ValueError)   bad dataset id, document id, prefix, option
     ├── NotFoundError                         the object does not exist (per object)
     │    └── BucketNotFoundError              the bucket does not exist (systemic)
     ├── AccessDeniedError                     credentials, region or requester pays
     ├── CorruptObjectError                    an object failed to decode (names key and reason)
     │    └── SizeLimitExceededError           an object (or its inflated content) is too large
     ├── ServiceError                          S3 answered with another error, after retries
     │    └── UntrustedResponseError           an answer refused as untrustworthy (systemic)
     ├── ConnectionFailedError                 the endpoint could not be reached, after retries
     └── ClientClosedError                     the client was used after close()

Every error carries ``key``, ``status`` (HTTP) and ``request_id`` (S3's) where known, and
``per_object``: True when the failure belongs to one object (its bytes, its key, its size,
its absence) so that a bulk job records it and goes on; False when it is systemic or
transient (outage, throttling, credentials, access, missing bucket), so that a bulk job
waits, retries and, if it must, stops resumably. Messages are redacted of every configured
secret when the error is built.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kl3m_data_client._redact import redact

__all__ = [
    "AccessDeniedError",
    "BucketNotFoundError",
    "ClientClosedError",
    "ConnectionFailedError",
    "CorruptObjectError",
    "InvalidInputError",
    "KL3MError",
    "NotFoundError",
    "ServiceError",
    "SizeLimitExceededError",
    "UntrustedResponseError",
    "is_per_object",
]


def _rebuild(cls: type[KL3MError], args: tuple[Any, ...], state: dict[str, Any]) -> KL3MError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class KL3MError(Exception):
    """Base class of the errors kl3m-data-client raises for what it detects: bad input, the
    network, S3's answers, an object's bytes (not ``TypeError``, local ``OSError``, ...)."""

    #: The default of :attr:`per_object` for this class.
    PER_OBJECT: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        per_object: bool | None = None,
    ) -> None:
        super().__init__(redact(str(message)))
        self.key = key
        self.status = status
        self.request_id = request_id
        self.per_object: bool = type(self).PER_OBJECT if per_object is None else per_object

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles (worker processes, Ray) keep the class, the message and every attribute
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def is_per_object(exc: BaseException) -> bool:
    """True if ``exc`` is the failure of one object (record it, go on), not of the service."""
    return isinstance(exc, KL3MError) and exc.per_object


class InvalidInputError(KL3MError, ValueError):
    """An argument (dataset id, document id, prefix, option) is not acceptable."""

    PER_OBJECT = True


class NotFoundError(KL3MError):
    """The object (or dataset) does not exist."""

    PER_OBJECT = True


class BucketNotFoundError(NotFoundError):
    """The bucket does not exist: nothing in it can be read (systemic)."""

    PER_OBJECT = False


class AccessDeniedError(KL3MError):
    """S3 refused the request (403) or no usable credentials were found."""


class CorruptObjectError(KL3MError):
    """An object could not be decoded; ``key`` and ``reason`` say which and why."""

    PER_OBJECT = True

    def __init__(self, key: str, reason: str, **info: Any) -> None:
        super().__init__(f"corrupt object {key!r}: {reason}", key=key, **info)
        self.reason = redact(reason)


class SizeLimitExceededError(CorruptObjectError):
    """An object or its decompressed content is larger than the configured limit."""


class ServiceError(KL3MError):
    """S3 answered with an error that is neither 'not found' nor 'access denied'."""

    def __init__(self, message: str, *, code: str | None = None, **info: Any) -> None:
        super().__init__(message, **info)
        self.code = code


class UntrustedResponseError(ServiceError):
    """The server answered something refused as untrustworthy: a redirect to another host, a
    listing that loops, repeats keys or goes backwards. Systemic, and waiting will not fix it."""


class ConnectionFailedError(KL3MError):
    """The S3 endpoint could not be reached, or kept failing mid-response, after retries."""


class ClientClosedError(KL3MError):
    """The client was used after it was closed."""
