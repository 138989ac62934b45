"""JWT bearer tokens: the token's shape, routing by path and ``iss``, the header, the signature
against the issuer's key set, the claims; then the body hash. The decisions are ``verify``'s pure
functions; this module orders them and asks the key source (the JWKS cache) for keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway import token_from, verify
from gateway.authn import Headers, Pending, Verified, attributed
from gateway.config import IssuerConfig, TokenFromConfig
from gateway.errors import Rejection

__all__ = ["JwtAuthenticator", "KeySource", "PendingJwt", "VerifyingKey"]


class VerifyingKey(Protocol):
    @property
    def alg(self) -> str: ...

    def verify(self, signing_input: bytes, signature: bytes) -> bool: ...


K = TypeVar("K", bound=VerifyingKey)
_DEFAULT_LOCATION = TokenFromConfig()


class KeySource(Protocol[K]):
    """One issuer's keys (``jwks_cache.JwksCache``): lookups that may refetch, rate limited."""

    async def key_for(self, kid: str, alg: str) -> K: ...

    async def kidless_candidates(self, alg: str) -> list[K]: ...

    async def kidless_after_miss(self, alg: str, tried: list[K]) -> list[K]: ...


@dataclass(frozen=True, slots=True)
class PendingJwt(Pending):
    token: verify.ParsedToken | None = None


def check_key(key: VerifyingKey, alg: str, token: verify.ParsedToken) -> None:
    """The token's signature under the key its kid names."""
    if key.alg != alg:
        raise Rejection("disallowed_algorithm", "the token's alg is not the algorithm of its key")
    if not key.verify(token.signing_input, token.signature):
        raise Rejection("bad_signature", "the token's signature does not verify")


def first_verifying(token: verify.ParsedToken, keys: Sequence[VerifyingKey]) -> tuple[bool, int]:
    """Whether any of ``keys`` verifies a kid-less token, and how many were tried."""
    for tried, key in enumerate(keys, 1):
        if key.verify(token.signing_input, token.signature):
            return True, tried
    return False, len(keys)


class JwtAuthenticator:
    """Every ``type: jwt`` issuer of one config, with their key sources.

    ``count_kidless`` is told how many signature checks a kid-less token cost its issuer.
    """

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        keys: Mapping[str, KeySource[Any]],
        count_kidless: Callable[[str, int], None],
    ) -> None:
        self.issuers = issuers
        self.keys = keys
        self.count_kidless = count_kidless

    async def authenticate(
        self, headers: Headers, path: str, now: float, query: str = ""
    ) -> PendingJwt:
        jwt_cands = [c for c in verify.candidates(self.issuers, path) if c.type == "jwt"]
        # The issuers of one path share token_from (config.py checks it): the token is found
        # before its iss can say which of them sent it.
        token = verify.parse_token(
            token_from.extract_token(
                jwt_cands[0].token_from if jwt_cands else _DEFAULT_LOCATION,
                headers.getall("Authorization", []),
                headers.getall(jwt_cands[0].token_from.header or "", []) if jwt_cands else [],
                query,
            )
        )
        issuer = verify.route(jwt_cands, self.issuers, token.claims)
        kid: str | None = None
        try:
            alg, kid = verify.check_header(token.header, issuer)
            await self._check_signature(issuer, token, alg, kid)
            verify.check_claims(token.claims, issuer, now)
        except Rejection as r:
            raise attributed(r, issuer, kid) from None
        return PendingJwt(issuer=issuer, kid=kid, token=token)

    async def _check_signature(
        self, issuer: IssuerConfig, token: verify.ParsedToken, alg: str, kid: str | None
    ) -> None:
        source = self.keys[issuer.name]
        if kid is not None:
            check_key(await source.key_for(kid, alg), alg, token)
            return
        keys = await source.kidless_candidates(alg)
        ok, tried = first_verifying(token, keys)
        self.count_kidless(issuer.name, tried)
        if ok:
            return
        # No key verified: perhaps the sender rotated. The source refetches (rate limited).
        fresh = await source.kidless_after_miss(alg, keys)
        ok, tried = first_verifying(token, fresh)
        self.count_kidless(issuer.name, tried)
        if not ok:
            raise Rejection("bad_signature", "the token's signature does not verify with any key")

    def verify_body(self, pending: PendingJwt, body: bytes, now: float) -> Verified:
        issuer, token = pending.issuer, pending.token
        assert token is not None
        try:
            if issuer.body_hash is not None:
                verify.check_body_hash(token.claims, body, issuer.body_hash)
            key = verify.replay_key(issuer, token)
        except Rejection as r:
            raise attributed(r, issuer, pending.kid) from None
        return Verified(
            issuer=issuer,
            claims=token.claims,
            claims_segment=token.payload_segment,
            replay_key=key,
            replay_ttl=verify.replay_ttl(token.claims, issuer, now),
            kid=pending.kid,
        )
