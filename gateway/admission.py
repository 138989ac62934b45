"""Admission: what is refused before any credential is looked at.

``check_request`` is pure (the request target, the header bytes, the declared length);
``Admission`` holds the process-wide bounds (draining, requests in flight, and among them the
requests waiting for a body before their credential can be checked). ``refetch_waiters`` bounds,
per issuer, the requests that wait for a JWKS refetch (counted by ``jwks_cache``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from gateway.config import LimitsConfig
from gateway.errors import Rejection

__all__ = [
    "Admission",
    "check_request",
    "origin_form",
    "refetch_waiters",
    "route_path",
    "unverified_cap",
]


# A dot segment in any escaped form, also when ";params" follow it: servlet containers strip
# the parameters of each segment and then resolve "..;x" as "..".
_DOT_SEGMENT_RE = re.compile(r"(^|/)(\.|%2e){1,2}(/|;|$)", re.IGNORECASE)
# "%2F", "%5C", a backslash, or an empty segment ("//"): proxies and frameworks that merge
# slashes (nginx's default) would serve "/hooks//payments" from "/hooks/payments".
_ESCAPED_SEPARATOR_RE = re.compile(r"%2f|%5c|\\|//", re.IGNORECASE)
# RFC 9112 3.2.2 absolute-form: scheme "://" authority, then the path and query.
_ABSOLUTE_FORM_RE = re.compile(r"https?://([^/?#]*)(.*)", re.IGNORECASE | re.DOTALL)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def origin_form(raw_target: str) -> str | None:
    """The origin-form of an absolute-form target (``http://host/hook?x`` -> ``/hook?x``), or
    None when ``raw_target`` is not one. The authority is dropped, never used: the upstream is
    always the configured one (RFC 9112 3.2.2 says a server MUST accept this form)."""
    m = _ABSOLUTE_FORM_RE.fullmatch(raw_target)
    if m is None or not m.group(1):
        return None
    rest = m.group(2)
    return rest if rest.startswith("/") else "/" + rest


def route_path(raw_target: str) -> str:
    """The path part of an origin-form request target, as received (never decoded)."""
    if not raw_target.startswith("/"):
        raise Rejection("malformed_request", "only origin-form request targets are accepted")
    if "#" in raw_target:
        # Not part of any request-target (RFC 9112 3.2). Routing would see "/a/..#x" as a
        # segment of /a while the client library forwarding it drops the fragment, and the
        # backend would resolve "/a/.." into another issuer's path.
        raise Rejection("malformed_request", "a request target cannot carry a #fragment")
    return raw_target.split("?", 1)[0]


def check_request(
    path: str, header_values: Iterable[str], content_length: int | None, max_body_bytes: int
) -> None:
    if _DOT_SEGMENT_RE.search(path) or _ESCAPED_SEPARATOR_RE.search(path):
        # Routing works on the path as received; a backend that decodes %2F or %5C before
        # resolving ".." would serve another issuer's path (Envoy rejects these too).
        raise Rejection(
            "malformed_request", "dot segments or escaped slashes in the path are not accepted"
        )
    if content_length is not None and content_length > max_body_bytes:
        raise Rejection("body_too_large", f"the body exceeds {max_body_bytes} bytes")
    for value in header_values:
        # Bytes that are not UTF-8 arrive as surrogates and the client would drop them:
        # refuse rather than forward a header other than the one received.
        if not value.isascii() and not _encodable(value):
            raise Rejection("malformed_request", "a header value is not valid UTF-8")


def unverified_cap(limits: LimitsConfig) -> int:
    """How many requests may wait for their body before their credential is checked (a
    signature over the body): ``limits.max_unverified_inflight``, by default a quarter of
    ``max_inflight``. The rest of ``max_inflight`` stays for pushes verified from headers."""
    cap = limits.max_unverified_inflight
    if cap is None:
        cap = max(1, limits.max_inflight // 4)
    return min(cap, limits.max_inflight)


def issuer_share(cap: int, body_signed_issuers: int) -> int:
    """How much of the unauthenticated body pool one issuer may hold: an equal share of
    ``cap`` among the issuers whose credential covers the body, at least one. Slow bodies
    sent to one issuer's path (anyone can forge a signature header of the right shape) then
    fill only that issuer's share and never refuse another issuer's valid push."""
    return max(1, cap // max(1, body_signed_issuers))


def refetch_waiters(limits: LimitsConfig, jwt_issuers: int) -> int:
    """How many requests of one JWT issuer may wait for its JWKS refetch, each holding a
    ``max_inflight`` slot for up to ``jwks.timeout_seconds``: an eighth of ``max_inflight``,
    shared evenly by the JWT issuers, at least one each. Anyone can send a token with an
    issuer's iss and a kid it never had; beyond these, such requests are answered 503
    ``jwks_unavailable`` at once (a sender that really rotated retries once the fetch is done),
    so forged tokens never hold more than this share of the slots, whatever the key hosts do."""
    return max(1, limits.max_inflight // (8 * max(1, jwt_issuers)))


class _Slot:
    """One ``max_inflight`` slot: taken on entry (or refused), given back on exit."""

    __slots__ = ("admission", "limits")

    def __init__(self, admission: Admission, limits: LimitsConfig) -> None:
        self.admission = admission
        self.limits = limits

    def __enter__(self) -> None:
        a = self.admission
        if a.draining:
            raise Rejection("shutting_down", "the gateway is shutting down; retry")
        if a.inflight >= self.limits.max_inflight:
            raise Rejection("overloaded", "too many requests in flight; retry shortly")
        a.inflight += 1

    def __exit__(self, *exc: object) -> None:
        self.admission.inflight -= 1


class _BodyWait:
    """A place in the unauthenticated body pool and in its issuer's share (``body_wait``)."""

    __slots__ = ("admission", "body_signed_issuers", "issuer", "limits")

    def __init__(
        self, admission: Admission, limits: LimitsConfig, issuer: str, body_signed_issuers: int
    ) -> None:
        self.admission = admission
        self.limits = limits
        self.issuer = issuer
        self.body_signed_issuers = body_signed_issuers

    def __enter__(self) -> None:
        a, issuer = self.admission, self.issuer
        cap = unverified_cap(self.limits)
        held = a.unverified_by_issuer.get(issuer, 0)
        if a.unverified >= cap or held >= issuer_share(cap, self.body_signed_issuers):
            raise Rejection(
                "overloaded", "too many unauthenticated request bodies in flight; retry shortly"
            )
        a.unverified += 1
        a.unverified_by_issuer[issuer] = held + 1

    def __exit__(self, *exc: object) -> None:
        a, issuer = self.admission, self.issuer
        a.unverified -= 1
        left = a.unverified_by_issuer[issuer] - 1
        if left:
            a.unverified_by_issuer[issuer] = left
        else:
            del a.unverified_by_issuer[issuer]


# A request whose credential verified from its headers waits for its body outside the pool.
_OUTSIDE_THE_POOL = nullcontext()


@dataclass
class Admission:
    """The process-wide bounds: nothing new while draining, at most ``max_inflight`` at once.

    The bounds are plain classes, not ``@contextmanager`` generators: two of them per request,
    a generator each cost about 1.5 us."""

    draining: bool = False
    inflight: int = 0
    unverified: int = 0
    unverified_by_issuer: dict[str, int] = field(default_factory=dict)

    def slot(self, limits: LimitsConfig) -> AbstractContextManager[None]:
        return _Slot(self, limits)

    def body_wait(
        self,
        limits: LimitsConfig,
        *,
        authenticated: bool,
        issuer: str = "",
        body_signed_issuers: int = 1,
    ) -> AbstractContextManager[None]:
        """Around the body read: a request not yet authenticated (its signature covers the
        body) waits in the smaller pool of ``unverified_cap``, and within it in ``issuer``'s
        share (:func:`issuer_share`); anyone can fill a share with slow bodies, but not another
        issuer's share nor the slots of senders whose credential already verified."""
        if authenticated:
            return _OUTSIDE_THE_POOL
        return _BodyWait(self, limits, issuer, body_signed_issuers)
