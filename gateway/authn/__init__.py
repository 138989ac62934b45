"""Authenticators: one per kind of sender credential, peers behind one protocol.

::

    jwt.py                 a JWT bearer token verified against the issuer's JWKS
    static_token.py        a fixed shared secret in a header
    standard_webhooks.py   a Standard Webhooks signature over id.timestamp.body
    provider.py            GitHub, Stripe, Slack, Shopify and GitLab webhook signatures

Two phases, so that the cheap checks come before the body is read: ``authenticate`` decides what
the headers alone can decide and returns a pending result (it knows the issuer, perhaps the kid);
``verify_body`` finishes with the body bytes and returns the ``Verified`` record the rest of the
request path needs. Authenticators know no HTTP framework: they take a headers mapping, the path,
the body bytes and ``now``, and raise ``Rejection``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import IssuerConfig
from gateway.errors import Rejection

__all__ = ["Authenticator", "Headers", "Pending", "Verified", "attributed"]


# The request headers, case-insensitive, with repeated fields kept.
Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@dataclass(frozen=True, slots=True)
class Verified:
    """A push whose credential and body verified: everything forwarding and replay need."""

    issuer: IssuerConfig
    claims: Mapping[str, Any]
    # base64url of the claims JSON, sent in the claims header: for a JWT the signed bytes.
    claims_segment: str
    # None: the scheme has no replay protection (a static token carries no per-push id).
    replay_key: bytes | None
    # How long the key stays consumed once delivered, counted from the body's verification.
    replay_ttl: float
    kid: str | None = None
    # Provider webhooks: headers removed from the forwarded request (the signature) and set on
    # it (the verified delivery id), and an answer the gateway gives itself instead of
    # forwarding (Slack's url_verification challenge).
    strip_headers: tuple[str, ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """What the headers decided; each authenticator extends it with what its body phase needs."""

    issuer: IssuerConfig
    kid: str | None = None
    # False when the credential is a signature over the body: until the body is read and
    # checked, the request is unauthenticated (it waits for its body in a smaller pool).
    authenticated: ClassVar[bool] = True


P = TypeVar("P", bound=Pending)


class Authenticator(Protocol[P]):
    async def authenticate(self, headers: Headers, path: str, now: float, query: str = "") -> P:
        """Check what the headers (and the raw query string, for a token carried there) can
        decide; raise ``Rejection`` naming the issuer."""
        ...

    def verify_body(self, pending: P, body: bytes, now: float) -> Verified:
        """Finish with the body; raise ``Rejection``."""
        ...


def attributed(r: Rejection, issuer: IssuerConfig, kid: str | None = None) -> Rejection:
    """``r``, marked as decided for ``issuer`` (the access record and metrics name it)."""
    r.issuer = issuer.name
    if kid is not None:
        r.kid = kid
    return r


def responsible(issuers: Sequence[IssuerConfig]) -> str:
    """Which kind of authenticator owns a request, from the issuers its path matches (longest
    prefix first): the first one's type; a path no issuer owns goes to JWT routing, which
    answers ``unknown_issuer``."""
    return issuers[0].type if issuers else "jwt"
