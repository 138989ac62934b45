"""``type: static_token``: a fixed shared secret in a header (what the official A2A SDKs send),
compared in constant time against every configured token, so that several can be valid during a
rotation. The headers decide everything; there is no per-push id, hence no replay key."""

from __future__ import annotations

import hmac

from gateway import verify
from gateway.authn import Headers, Pending, Verified, attributed
from gateway.config import IssuerConfig, StaticTokenConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact

__all__ = ["StaticTokenAuthenticator", "check_static_token"]

_CLAIMS = {"scheme": "static_token"}
_SEGMENT = verify.b64url_encode(dumps_compact(_CLAIMS))


def check_static_token(headers: Headers, cfg: StaticTokenConfig) -> None:
    presented: list[str] = []
    for name in cfg.headers:
        for value in headers.getall(name, []):
            if name.lower() == "authorization":
                # "Authorization: <scheme> <credentials>": the credentials are the token.
                _scheme, sep, credentials = value.strip().partition(" ")
                value = credentials.strip() if sep else value
            presented.append(value)
    if not presented:
        raise Rejection("missing_token", "no notification token in " + ", ".join(cfg.headers))
    matched = False
    for value in presented:
        for token in cfg.tokens:
            # Every comparison runs, whatever matched: no timing hint about which token is close.
            matched |= hmac.compare_digest(value.encode(), token.encode())
    if not matched:
        raise Rejection("bad_signature", "the notification token does not match")


class StaticTokenAuthenticator:
    def __init__(self, issuer: IssuerConfig) -> None:
        assert issuer.static_token is not None
        self.issuer = issuer
        self.cfg = issuer.static_token

    async def authenticate(
        self, headers: Headers, path: str, now: float, query: str = ""
    ) -> Pending:
        try:
            check_static_token(headers, self.cfg)
        except Rejection as r:
            raise attributed(r, self.issuer) from None
        return Pending(issuer=self.issuer)

    def verify_body(self, pending: Pending, body: bytes, now: float) -> Verified:
        return Verified(
            issuer=self.issuer,
            claims=_CLAIMS,
            claims_segment=_SEGMENT,
            replay_key=None,
            replay_ttl=0.0,
        )
