"""Where obstore's requests for any host but the endpoint's end: a refused connection.

obstore (reqwest underneath) follows redirects to any host and has no switch to stop it: a
hostile or buggy endpoint's 3xx would send the request -- with the session token -- to
another host and hand that host's body back as the object. So the plane gives obstore two
client options:

* ``proxy_excludes``: the endpoint's host name, so obstore's own requests go straight to
  the endpoint (no Python code on the data path);
* ``proxy_url``: :class:`DeadEnd`, a loopback port that is bound but not listening, so a
  request for any other host is refused at connect, before a byte (or a header) is sent.

obstore then fails that GET and the plane makes it again through aiobotocore, which refuses
the redirect with its usual error. ``proxy_excludes`` matches host names, not ports, and
(``NO_PROXY`` rules) includes their subdomains: a redirect to the endpoint's own host on
another port, or to a subdomain of it, is followed by obstore (docs/aws.md).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit


def endpoint_host(url: str) -> str:
    """The host name of ``url`` as ``proxy_excludes`` takes it: lower-case, IPv6 unbracketed."""
    return (urlsplit(url).hostname or "").lower()


class DeadEnd:
    """A loopback port held bound and never listened on; :attr:`url` is a proxy URL whose
    every connection is refused by the operating system. Closing releases the port."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind(("127.0.0.1", 0))
        except OSError:
            self._sock.close()
            raise
        port = self._sock.getsockname()[1]
        self._pid = os.getpid()
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        """Release the port (a forked child leaves its parent's socket alone)."""
        sock, self._sock = self._sock, None
        if sock is not None and os.getpid() == self._pid:
            sock.close()

    def __repr__(self) -> str:
        return f"<DeadEnd {self.url}>"
