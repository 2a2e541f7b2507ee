"""Secrets never leave the library: one redaction rule for log records, error texts and files.

Every configured secret key and session token is remembered (:func:`remember_secrets`);
:func:`redact` replaces those values, and anything shaped like a credential, by ``***``;
:func:`redact_exception` does it to an exception chain (a server's echo in a cause).
Exception messages of :class:`KL3MError` pass through it when they are built, and a
:class:`logging.Filter` rewrites botocore's records before any handler sees them.
"""

from __future__ import annotations

import logging
import re

# -- secrets in logs ----------------------------------------------------------------------
# botocore's DEBUG records carry the signed request headers (X-Amz-Security-Token) and, for
# STS or container credentials, response bodies with keys. A logging.Filter on the botocore
# and aiobotocore loggers rewrites such records before any handler sees them; it adds no
# handler and changes no level.

_SECRET_PATTERNS = (
    re.compile(
        r"((?:x-amz-security-token|aws_secret_access_key|aws_session_token|secret_?access_?key"
        r"|session_?token|[\"']token[\"'])[\"']?\s*[:=]\s*b?[\"']?)([^\"'\s,&;}<>]+)",
        re.IGNORECASE,
    ),
    re.compile(r"(<(?:SecretAccessKey|SessionToken|Token)>)([^<]+)", re.IGNORECASE),
)
_KNOWN_SECRETS: set[str] = set()
_REDACTED_LOGGERS = ("botocore", "aiobotocore", "urllib3", "s3transfer")


def remember_secrets(*values: str | None) -> None:
    """Redact these values (secret keys, session tokens) wherever :func:`redact` runs."""
    _KNOWN_SECRETS.update(v for v in values if v and len(v) >= 8)


def redact(text: str) -> str:
    """``text`` with credentials (session tokens, secret keys) replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact_exception(exc: BaseException) -> BaseException:
    """Redact, in place, the texts of ``exc`` and of its causes; returns ``exc``.

    A server may repeat the request's headers (the session token) in an error message that
    botocore puts in ``ClientError``; errors of this package keep such exceptions as their
    ``__cause__``, which tracebacks print. Their string arguments and the ``Message`` of a
    botocore ``response`` are rewritten; class and other attributes are kept.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(isinstance(a, str) for a in current.args):
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        response = getattr(current, "response", None)
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and isinstance(error.get("Message"), str):
            error["Message"] = redact(error["Message"])
        current = current.__cause__ or current.__context__
    return exc


class RedactSecretsFilter(logging.Filter):
    """Rewrite log records that carry credentials (a filter: no handler, no level change)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecretsFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to every botocore/aiobotocore logger created so far.

    Logger filters only see records logged on that very logger (not ones propagated from
    children), so the filter goes on each module logger; it is called again whenever a
    client is created, which picks up modules imported since.
    """
    names = set(_REDACTED_LOGGERS)
    for name, obj in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(obj, logging.Logger) and name.split(".", 1)[0] in _REDACTED_LOGGERS:
            names.add(name)
    for name in names:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
