"""Riding through outages: one clock shared by every request of an export.

A *systemic* failure (``is_per_object(exc)`` is False: connection failures, 5xx/throttling
after the client's retries, deadlines, credentials, access denied, a missing bucket) is never
recorded as the failure of a document. The request waits with jittered, capped exponential
backoff and is retried; every request failing meanwhile waits on the same clock, started by
the first failure and reset by the first success. When the outage has lasted
``outage_timeout`` seconds, every waiting request raises :class:`ExportStoppedError` and the
export stops where its last checkpoint is: rerunning it resumes.

Access denied and a missing bucket before anything has succeeded are configuration errors,
not outages: they are raised at once (waiting would not fix a typo in a bucket name); so is
an :class:`UntrustedResponseError` (a lying listing, a redirect to another host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kl3m_data_client._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ClientClosedError,
    KL3MError,
    UntrustedResponseError,
    is_per_object,
)

logger = logging.getLogger("kl3m_data_client.export")

T = TypeVar("T")

#: Default seconds an export waits for the service to come back before it stops.
DEFAULT_OUTAGE_TIMEOUT = 300.0
#: First backoff (seconds) of a request waiting for the service, and the cap.
BACKOFF_FIRST = 0.25
BACKOFF_CAP = 15.0


def _rebuild_stopped(
    cls: type[ExportStoppedError], args: tuple[Any, ...], state: dict[str, Any]
) -> ExportStoppedError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    exc.__cause__ = exc.last_error  # the cause does not survive pickling on its own
    return exc


class ExportStoppedError(KL3MError):
    """The export stopped before finishing on a systemic failure; rerunning it resumes.

    Raised when an outage (connection failures, throttling, 5xx, credentials...) outlasted
    ``outage_timeout``, or when a worker process died. ``last_error`` (also ``__cause__``) is
    the failure that stopped it, with its own type; ``key``/``status``/``request_id`` are
    copied from it. Nothing past the last checkpoint is recorded as done.
    """

    def __init__(self, message: str, *, last_error: BaseException | None = None) -> None:
        typed = last_error if isinstance(last_error, KL3MError) else None
        super().__init__(
            message,
            key=typed.key if typed else None,
            status=typed.status if typed else None,
            request_id=typed.request_id if typed else None,
            per_object=False,
        )
        self.last_error = last_error
        self.__cause__ = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_stopped, (type(self), self.args, dict(self.__dict__)))


class Outage:
    """The outage clock of one export run (one per process; shared by all its requests)."""

    def __init__(self, timeout: float = DEFAULT_OUTAGE_TIMEOUT) -> None:
        self.timeout = float(timeout)
        #: monotonic time the current outage started, or None while the service answers
        self.started: float | None = None
        self.succeeded = False
        self.stopped: ExportStoppedError | None = None
        self._change: asyncio.Event | None = None

    def waitable(self, exc: BaseException) -> bool:
        """True for a systemic failure worth waiting for (see the module docstring)."""
        if not isinstance(exc, KL3MError) or is_per_object(exc):
            return False
        if isinstance(exc, (ClientClosedError, UntrustedResponseError)):
            return False
        configuration = isinstance(exc, (AccessDeniedError, BucketNotFoundError))
        return self.succeeded or not configuration

    def _event(self) -> asyncio.Event:
        if self._change is None:
            self._change = asyncio.Event()
        return self._change

    def _notify(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = None

    def ok(self) -> None:
        """The service answered (a success, or a per-object failure): the outage is over."""
        self.succeeded = True
        if self.started is not None and self.stopped is None:
            logger.info(
                "the service answers again after %.1f s; the export goes on",
                time.monotonic() - self.started,
            )
            self.started = None
            self._notify()  # waiting requests retry now

    async def wait(self, exc: KL3MError, attempt: int) -> None:
        """Back off after the systemic failure ``exc``; raises ExportStoppedError when spent."""
        if self.stopped is not None:
            raise self._stop_error()
        now = time.monotonic()
        if self.started is None:
            self.started = now
            logger.warning(
                "%s: %s; the export waits up to %g s for the service to come back",
                type(exc).__name__,
                exc,
                self.timeout,
            )
        remaining = self.started + self.timeout - now
        if remaining <= 0:
            elapsed = now - self.started
            self.stopped = ExportStoppedError(
                f"the export stopped after {elapsed:.0f} s of a systemic failure "
                f"(outage_timeout={self.timeout:g} s): {type(exc).__name__}: {exc}; "
                "rerun the same export to resume it",
                last_error=exc,
            )
            logger.warning("%s", self.stopped)
            self._notify()
            raise self._stop_error()
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt) * (0.5 + random.random())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event().wait(), min(delay, remaining))
        if self.stopped is not None:
            raise self._stop_error()

    def _stop_error(self) -> ExportStoppedError:
        assert self.stopped is not None
        # a fresh object per raise: one exception object raised by many tasks would pile up
        # their tracebacks
        return ExportStoppedError(str(self.stopped), last_error=self.stopped.last_error)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, retried through systemic failures until it answers or time is up.

        Per-object failures are raised as they are (they prove the service answers).
        """
        attempt = 0
        while True:
            if self.stopped is not None:
                raise self._stop_error()
            try:
                result = await fn()
            except KL3MError as exc:
                if not self.waitable(exc):
                    if is_per_object(exc):
                        self.ok()
                    raise
                await self.wait(exc, attempt)
                attempt += 1
                continue
            self.ok()
            return result
