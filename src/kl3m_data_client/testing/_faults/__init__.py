"""A fault-injecting HTTP proxy for S3 endpoints (tests and benchmarks).

:class:`FaultProxy` listens on a free loopback port and forwards every request to an
upstream S3 endpoint (typically the local moto server), keeping the method, the raw path and
query, the body and every header -- including ``Host`` and ``Authorization``: point the
client's ``endpoint_url`` at the proxy, it signs for the proxy's host, and the upstream sees
the very request that was signed.

On a seeded selection of requests it injects one fault of :class:`Fault`:

==================  ==========================================================================
``slowdown_503``    503 with an S3 ``SlowDown`` XML error body
``error_500``       500 with an S3 ``InternalError`` XML error body
``throttle_429``    429 with a ``TooManyRequestsException`` XML error body
``reset_before``    TCP reset (SO_LINGER 0) before any response byte
``reset_mid_body``  headers and part of the body, then a TCP reset
``truncate``        correct ``Content-Length``, part of the body, then a clean close (EOF)
``stall``           part of the body (or nothing, for bodiless answers), then silence past
                    the client's read timeout
``drip``            the whole, correct body in small pieces with pauses (must succeed)
``corrupt_byte``    one byte of a GetObject body flipped, length unchanged
``bad_list_xml``    a ListObjectsV2 page replaced by invalid XML (status 200)
==================  ==========================================================================

Hostile misbehaviours (:data:`HOSTILE_FAULTS`, never chosen unless listed in ``kinds``):

=======================  =====================================================================
``redirect_other_host``  ``redirect_status`` (307) to the same path on a second loopback
                         listener (:attr:`FaultProxy.other`) under another host name
                         (``localhost`` for ``127.0.0.1``), which records every request it
                         gets, with its headers, and answers ``redirect_body``
``redirect_other_port``  the same, to that listener under the proxy's own host name (the
                         endpoint's host on another port)
``redirect_same_host``   ``redirect_status`` to the proxy itself, with ``x-amz-bucket-region``
                         (S3's region redirect: botocore's own handling re-sends it)
``list_token_loop``      every ListObjectsV2 page is the first one, truncated, with the same
                         ``NextContinuationToken``
``list_no_token``        a ListObjectsV2 page marked truncated without a continuation token
``list_empty_pages``     endless empty truncated pages, each with a fresh token
``list_repeat_key``      the first key of a page listed twice
``list_out_of_order``    the first and last keys of a page swapped
``list_foreign_key``     ``foreign_key`` (outside the requested prefix) added to the page
``chunked_oversize``     a GetObject answered with a chunked body (no Content-Length) of
                         ``oversize_bytes`` bytes; ``oversize_sent`` counts what was written
``length_short``         the whole body sent under a ``Content-Length`` 7 bytes too short
``length_long``          the whole body sent under a ``Content-Length`` 7 bytes too long, then
                         the connection is closed
``echo_headers``         ``echo_status`` / ``echo_code`` error whose message repeats every
                         request header (``name is value``), session token included
=======================  =====================================================================

``latency`` delays every answer by a fixed number of seconds.

Decisions are deterministic: the n-th request for a given ``(method, path?query)`` gets the
same decision for the same seed, whatever the order in which concurrent requests arrive.
``fired`` counts injected faults per kind, so a test can prove that its faults were hit.

Use it as ``async with FaultProxy(upstream, plan) as proxy:`` on a running loop, or from
blocking code as ``with run_fault_proxy(upstream, plan) as proxy:`` (its own loop thread).
"""

from kl3m_data_client.testing._faults._hostile import OtherRequest
from kl3m_data_client.testing._faults._plan import (
    ALL_FAULTS,
    HOSTILE_FAULTS,
    Fault,
    FaultPlan,
    RequestInfo,
)
from kl3m_data_client.testing._faults._proxy import FaultProxy, run_fault_proxy

__all__ = [
    "ALL_FAULTS",
    "HOSTILE_FAULTS",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "OtherRequest",
    "RequestInfo",
    "run_fault_proxy",
]
