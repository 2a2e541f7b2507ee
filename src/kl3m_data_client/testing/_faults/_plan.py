"""The declarations of the fault proxy: the fault kinds, what a decision sees, the plan."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs


class Fault(str, enum.Enum):
    """The kinds of injected faults."""

    SLOWDOWN_503 = "slowdown_503"
    ERROR_500 = "error_500"
    THROTTLE_429 = "throttle_429"
    RESET_BEFORE = "reset_before"
    RESET_MID_BODY = "reset_mid_body"
    TRUNCATE = "truncate"
    STALL = "stall"
    DRIP = "drip"
    CORRUPT_BYTE = "corrupt_byte"
    BAD_LIST_XML = "bad_list_xml"
    REDIRECT_OTHER_HOST = "redirect_other_host"
    REDIRECT_OTHER_PORT = "redirect_other_port"
    REDIRECT_SAME_HOST = "redirect_same_host"
    LIST_TOKEN_LOOP = "list_token_loop"
    LIST_NO_TOKEN = "list_no_token"
    LIST_EMPTY_PAGES = "list_empty_pages"
    LIST_REPEAT_KEY = "list_repeat_key"
    LIST_OUT_OF_ORDER = "list_out_of_order"
    LIST_FOREIGN_KEY = "list_foreign_key"
    CHUNKED_OVERSIZE = "chunked_oversize"
    LENGTH_SHORT = "length_short"
    LENGTH_LONG = "length_long"
    ECHO_HEADERS = "echo_headers"


#: The hostile misbehaviours of a ListObjectsV2 page.
_HOSTILE_LISTING = frozenset(
    {
        Fault.LIST_TOKEN_LOOP,
        Fault.LIST_NO_TOKEN,
        Fault.LIST_EMPTY_PAGES,
        Fault.LIST_REPEAT_KEY,
        Fault.LIST_OUT_OF_ORDER,
        Fault.LIST_FOREIGN_KEY,
    }
)
#: The hostile misbehaviours of a GetObject answer.
_HOSTILE_GET = frozenset({Fault.CHUNKED_OVERSIZE, Fault.LENGTH_SHORT, Fault.LENGTH_LONG})
#: The misbehaviours of a hostile server (chosen only when listed in ``FaultPlan.kinds``).
HOSTILE_FAULTS: frozenset[Fault] = (
    frozenset(
        {
            Fault.REDIRECT_OTHER_HOST,
            Fault.REDIRECT_OTHER_PORT,
            Fault.REDIRECT_SAME_HOST,
            Fault.ECHO_HEADERS,
        }
    )
    | _HOSTILE_LISTING
    | _HOSTILE_GET
)
#: The transient faults of an honest but unreliable server (the default ``kinds``).
ALL_FAULTS: frozenset[Fault] = frozenset(Fault) - HOSTILE_FAULTS
#: Faults only a ListObjectsV2 request can get.
LIST_FAULTS = frozenset({Fault.BAD_LIST_XML}) | _HOSTILE_LISTING
#: Faults only a GetObject request can get.
GET_FAULTS = frozenset({Fault.CORRUPT_BYTE}) | _HOSTILE_GET
#: Faults that need a response body to act on.
BODY_FAULTS = frozenset({Fault.RESET_MID_BODY, Fault.TRUNCATE, Fault.DRIP})


@dataclass(frozen=True)
class RequestInfo:
    """What a fault decision and a credential check see of a request."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    attempt: int
    """1 for the first request of this (method, path?query), 2 for its first repeat, ..."""

    @property
    def operation(self) -> str:
        """A best guess of the S3 operation (ListObjectsV2, GetObject, HeadObject, ...)."""
        q = parse_qs(self.query, keep_blank_values=True)
        parts = [p for p in self.path.split("/") if p]
        if self.method == "GET" and "list-type" in q:
            return "ListObjectsV2"
        if self.method == "GET" and len(parts) >= 2:
            return "GetObject"
        if self.method == "HEAD" and len(parts) >= 2:
            return "HeadObject"
        return f"{self.method} {'bucket' if len(parts) <= 1 else 'object'}"


@dataclass
class FaultPlan:
    """Which requests get which faults.

    Args:
        rate: probability that a request gets a fault (0 disables random faults, 1 faults all).
        kinds: the faults to choose from (each request gets one that applies to it).
        seed: the seed of every decision.
        ensure_each: inject each enabled kind on the first request it applies to, so a test
            of a few hundred requests is sure to hit every kind.
        max_faults_per_request: faults injected at most this many times for the same
            (method, path?query); ``None`` for no limit (an endpoint where everything fails).
        select: only requests for which this returns True can get a fault.
        stall_seconds: how long a stall lasts (make it longer than the client's read timeout).
        drip_delay: pause between drip pieces; ``drip_pieces``: how many pieces.
        credential_check: called with the request; returning an S3 error code (for example
            ``"ExpiredToken"``) answers 403 with that code instead of forwarding.
        latency: seconds every answer is delayed by (a fixed-latency endpoint).
        redirect_status: the status of the redirect misbehaviours (301, 302, 307, 308).
        redirect_body: what the other host of ``redirect_other_host`` answers.
        foreign_key: the key ``list_foreign_key`` adds to listing pages.
        oversize_bytes: the length of a ``chunked_oversize`` body.
        echo_status, echo_code: the error answered by ``echo_headers``.
    """

    rate: float = 0.1
    kinds: Collection[Fault] = ALL_FAULTS
    seed: int = 0
    ensure_each: bool = False
    max_faults_per_request: int | None = 2
    select: Callable[[RequestInfo], bool] | None = None
    stall_seconds: float = 3.0
    drip_delay: float = 0.005
    drip_pieces: int = 16
    credential_check: Callable[[RequestInfo], str | None] | None = None
    latency: float = 0.0
    redirect_status: int = 307
    redirect_body: bytes = b'{"substituted": "by another host"}'
    foreign_key: str = "private/secret.json"
    oversize_bytes: int = 64 << 20
    echo_status: int = 400
    echo_code: str = "InvalidArgument"


def draw(seed: int, info: RequestInfo, salt: str) -> float:
    """A number in [0, 1) fixed by the seed, the salt and the request's identity and attempt."""
    h = hashlib.blake2b(
        f"{seed}|{salt}|{info.method}|{info.path}?{info.query}|{info.attempt}".encode(),
        digest_size=8,
    ).digest()
    return int.from_bytes(h, "big") / 2**64


def applicable(kinds: Collection[Fault], info: RequestInfo) -> list[Fault]:
    """The faults of ``kinds`` that can act on the request ``info`` (sorted by name)."""
    op = info.operation
    out: list[Fault] = []
    for kind in sorted(kinds, key=lambda k: k.value):
        if kind in LIST_FAULTS and op != "ListObjectsV2":
            continue
        if kind in GET_FAULTS and op != "GetObject":
            continue
        if kind in BODY_FAULTS and info.method == "HEAD":
            continue
        out.append(kind)
    return out
