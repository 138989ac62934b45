"""``type: github | stripe | slack | shopify | gitlab``: a provider's own webhook signature.

The decisions are ``gateway.providers``' pure functions; this adapts them to the two phases of
the request path: ``providers.precheck`` on the headers before the body is read (presence,
shape, the timestamp window), ``providers.verify`` on the raw body bytes once read. Replay keys
live in the issuer's namespace (``verify.replay_namespace``), as every other issuer's do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from gateway import providers, verify
from gateway.authn import Headers, Pending, Verified, attributed
from gateway.config import IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact
from gateway.providers import SlackConfig

__all__ = ["PendingProvider", "ProviderAuthenticator"]


@dataclass(frozen=True, slots=True)
class PendingProvider(Pending):
    """The headers passed the precheck; ``verify_body`` reads them again with the body."""

    headers: Headers | None = None
    # Every provider's credential covers the body (GitLab's token is compared with it, in
    # verify): until then the request is unauthenticated and waits in the smaller pool.
    authenticated: ClassVar[bool] = False


class ProviderAuthenticator:
    def __init__(self, issuer: IssuerConfig) -> None:
        cfg = issuer.provider
        assert cfg is not None
        self.issuer = issuer
        # The loader derives the same namespace; taken from the one rule, so it cannot drift.
        self.cfg = replace(cfg, namespace=verify.replay_namespace(issuer))

    async def authenticate(
        self, headers: Headers, path: str, now: float, query: str = ""
    ) -> PendingProvider:
        try:
            providers.precheck(headers, self.cfg, now)
        except Rejection as r:
            raise attributed(r, self.issuer) from None
        return PendingProvider(issuer=self.issuer, headers=headers)

    def verify_body(self, pending: PendingProvider, body: bytes, now: float) -> Verified:
        assert pending.headers is not None
        try:
            result = providers.verify(pending.headers, body, self.cfg, now)
            answer = None
            if isinstance(self.cfg, SlackConfig) and self.cfg.answer_challenge:
                answer = providers.slack_challenge(body)
        except Rejection as r:
            raise attributed(r, self.issuer) from None
        return Verified(
            issuer=self.issuer,
            claims=result.claims,
            claims_segment=verify.b64url_encode(dumps_compact(result.claims)),
            replay_key=result.replay_key,
            replay_ttl=result.replay_ttl_seconds,
            strip_headers=result.strip_headers,
            add_headers=result.add_headers,
            answer=answer,
        )
