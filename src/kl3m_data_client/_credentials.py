"""Credentials resolved by the aiobotocore session: remembered for redaction, lent to obstore.

Only public botocore API is used: ``session.get_credentials()`` and the credential object's
``get_frozen_credentials()`` (which refreshes refreshable credentials when botocore's own
rules say so).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from kl3m_data_client._http import header_text
from kl3m_data_client._redact import remember_secrets

_CREDENTIAL_IN_AUTH = re.compile(r"Credential=([^/,\s]+)/")
#: The lifetime announced to obstore for credentials lent by the session. obstore asks again
#: once fewer than its refresh threshold (5 minutes) remain -- at most every 100 ms with this
#: lifetime -- so each use is at most that old, and botocore decides when to refresh.
LEND_FOR = timedelta(minutes=5)


async def watch_credentials(session: Any, client: Any) -> None:
    """Remember the secret key and token ``session`` resolved, and every refresh of them.

    Explicit keys are remembered by the store itself; others come from botocore's chain
    (environment, profile, SSO, IMDS...) and refreshable ones change during a run. A
    ``before-send`` hook of ``client`` notices a new access key id or token in a signed
    request and remembers the new values before anything is sent.
    """
    credentials = await session.get_credentials()
    if credentials is None:
        return

    async def freeze() -> None:
        frozen = await credentials.get_frozen_credentials()
        remember_secrets(frozen.secret_key, frozen.token)

    await freeze()
    signed: list[tuple[str, str]] = [("", "")]

    async def on_send(request: Any, **_: Any) -> None:
        headers = request.headers
        token = header_text(headers.get("X-Amz-Security-Token")) or ""
        match = _CREDENTIAL_IN_AUTH.search(header_text(headers.get("Authorization")) or "")
        signed_with = (match.group(1) if match else "", token)
        if signed_with != signed[0]:
            signed[0] = signed_with
            remember_secrets(token)
            await freeze()

    client.meta.events.register("before-send.s3", on_send, unique_id="kl3m-remember-creds")


class SessionCredentials:
    """obstore's ``credential_provider``: the credentials of an aiobotocore session.

    Each call returns ``await credentials.get_frozen_credentials()`` (botocore refreshes
    refreshable credentials there, by its own rules) with an ``expires_at`` of
    :data:`LEND_FOR` from now, so that obstore asks again soon: it never keeps credentials
    longer than botocore would. Every secret handed out is remembered for redaction.
    """

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    async def __call__(self) -> dict[str, Any]:
        frozen = await self._credentials.get_frozen_credentials()
        remember_secrets(frozen.secret_key, frozen.token)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(timezone.utc) + LEND_FOR,
        }
