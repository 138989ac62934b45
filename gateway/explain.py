"""``jwksgate explain``: why would the gateway accept or reject this token? Offline, check by check.

It runs the very functions the request path runs (``gateway.verify`` for the token, the header
and the claims; ``jwks.parse_jwks`` and ``jwks.check_signature`` for the key set, the key
selection and the signature), in the same order, and prints each step; the verdict is the first
failure, as in the gateway. Keys come from a JWKS file (``--jwks``), or only when asked
(``--fetch``) from the issuer's JWKS URL or discovery document, through the gateway's own
fetcher (same size cap, timeout, TLS trust and no redirects); without keys the signature step
says it was skipped rather than guessing. Without a config the token is checked against an
issuer made from itself: what needs the operator's config (trusted issuer, audience, required
claims, body hash) is not judged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import verify
from gateway.config import SUPPORTED_ALGORITHMS, Config, IssuerConfig, parse_config
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact, loads_strict
from gateway.jwks import JwksError, check_signature, parse_jwks

__all__ = ["Explanation", "explain", "fetch_jwks"]


@dataclass
class Explanation:
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, ok|FAIL|skip, text)
    verdict: Rejection | None = None
    skipped_signature: bool = False
    skipped_why: str = "no keys were given"

    def add(self, step: str, status: str, text: str) -> None:
        self.steps.append((step, status, text))

    def render(self) -> str:
        width = max(len(s) for s, _, _ in self.steps) + 2
        lines = [f"{step:.<{width}} {status:<4} {text}" for step, status, text in self.steps]
        if self.verdict is None:
            tail = "ACCEPT: the gateway would forward this push"
            if self.skipped_signature:
                tail += f" (if the signature verifies: {self.skipped_why})"
        else:
            v = self.verdict
            tail = f"REJECT: {v.status} {v.reason} ({v.detail})"
        return "\n".join([*lines, "", tail])


def _when(ts: Any) -> str:
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        try:
            stamp = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
        except (OverflowError, ValueError, OSError):
            return str(ts)
        return f"{ts} ({stamp})"
    return repr(ts)


def _config_from_token(parsed: verify.ParsedToken) -> Config:
    """No --config: one issuer that trusts the token's own iss and aud, takes every supported
    algorithm and no kid, and requires no claim, so the checks left are the token's own."""
    iss, aud = parsed.claims.get("iss"), parsed.claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    issuer: dict[str, Any] = {
        "name": "token",
        "jwks_url": "http://127.0.0.1/unused",
        "algorithms": list(SUPPORTED_ALGORITHMS),
        "require_kid": False,
        "require_claims": [],
        "replay_key": "token",
        "audiences": [a for a in audiences if isinstance(a, str)],
    }
    if isinstance(iss, str):
        issuer["issuer"] = iss
    return parse_config({"issuers": [issuer]})


def fetch_jwks(issuer: IssuerConfig) -> bytes:
    """The issuer's JWKS, fetched once by the gateway's own fetcher (``--fetch``)."""
    from gateway.jwks_fetch import fetch_issuer_jwks

    return asyncio.run(fetch_issuer_jwks(issuer))


def explain(
    token: str,
    *,
    config: Config | None = None,
    path: str = "/",
    body: bytes | None = None,
    jwks: bytes | None = None,
    fetch: Callable[[IssuerConfig], bytes] | None = None,
    now: float | None = None,
) -> Explanation:
    """Every check of the request path for ``token``; stops where the gateway would."""
    ex = Explanation()
    now = time.time() if now is None else now
    token = token.strip()
    if token.lower().startswith("authorization:"):
        token = token.split(":", 1)[1].strip()
    try:
        token = verify.extract_bearer([token if " " in token else f"Bearer {token}"])
        parsed = verify.parse_token(token)
        ex.add(
            "token shape",
            "ok",
            f"compact JWS, {len(token)} chars, signature {len(parsed.signature)} bytes",
        )
        ex.add("header", "", json.dumps(parsed.header, ensure_ascii=True))
        ex.add("claims", "", json.dumps(parsed.claims, ensure_ascii=True)[:600])
        for name in ("iat", "nbf", "exp"):
            if name in parsed.claims:
                ex.add(f"  {name}", "", _when(parsed.claims[name]))
        ex.add("  now", "", _when(int(now)))
        if config is None:
            config = _config_from_token(parsed)
            ex.add(
                "config",
                "skip",
                "none given: the token's own iss and aud are trusted, any supported alg; "
                "pass --config to check it as a gateway would",
            )
        cands = [c for c in verify.candidates(config.issuers, path) if c.type == "jwt"]
        issuer = verify.route(cands, config.issuers, parsed.claims)
        ex.add("routing", "ok", f"issuer {issuer.name!r} (path {path}, iss {issuer.issuer!r})")
        alg, kid = verify.check_header(parsed.header, issuer)
        ex.add("header checks", "ok", f"alg {alg} allowed, kid {kid!r}")
        _signature(ex, issuer, parsed, alg, kid, jwks, fetch)
        verify.check_claims(parsed.claims, issuer, now)
        ex.add(
            "claims checks",
            "ok",
            f"time window (skew {issuer.clock_skew_seconds:g}s, max age "
            f"{issuer.max_token_age_seconds:g}s), required {list(issuer.require_claims)}",
        )
        _body(ex, issuer, parsed, body)
        key = verify.replay_key(issuer, parsed)
        ttl = verify.replay_ttl(parsed.claims, issuer, now)
        ex.add(
            "replay key",
            "ok",
            f"{issuer.replay_key}: sha256 {key[-32:].hex()[:16]}..., kept {ttl:.0f}s "
            "(a second delivery of this token would be 409 replayed)",
        )
    except Rejection as r:
        ex.verdict = r
        ex.add("FAILED", "FAIL", f"{r.reason}: {r.detail}")
    return ex


def _signature(
    ex: Explanation,
    issuer: IssuerConfig,
    parsed: verify.ParsedToken,
    alg: str,
    kid: str | None,
    jwks: bytes | None,
    fetch: Callable[[IssuerConfig], bytes] | None,
) -> None:
    if jwks is None and fetch is not None:
        where = issuer.discovery_url or issuer.jwks_url
        try:
            jwks = fetch(issuer)
        except (OSError, JwksError) as e:
            raise Rejection("jwks_unavailable", f"fetching from {where} failed: {e}") from e
    if jwks is None:
        ex.skipped_signature = True
        ex.add("signature", "skip", "no keys: pass --jwks FILE or --fetch")
        return
    try:
        keyset, dropped = parse_jwks(jwks, issuer.algorithms, issuer.jwks.max_keys)
    except JwksError as e:
        raise Rejection("jwks_unavailable", f"the JWKS is unusable: {e}") from e
    for reason, detail in dropped:
        ex.add("  jwks key dropped", "", f"{detail} ({reason})")
    if kid is not None and kid not in keyset.by_kid:
        ex.add("  kids in the set", "", ", ".join(sorted(keyset.by_kid)[:10]) or "none")
    key = check_signature(keyset, alg, kid, parsed.signing_input, parsed.signature)
    accepts = ", ".join(sorted(key.algs))
    ex.add("signature", "ok", f"verifies with kid {key.kid!r} as {key.alg} (key accepts {accepts})")


def _body(
    ex: Explanation, issuer: IssuerConfig, parsed: verify.ParsedToken, body: bytes | None
) -> None:
    rule = issuer.body_hash
    if rule is None:
        ex.add("body hash", "skip", "not configured for this issuer")
        return
    if body is None:
        ex.add("body hash", "skip", f"claim {rule.claim!r} present; pass --body FILE to check it")
        return
    claimed = parsed.claims.get(rule.claim)
    raw = hashlib.sha256(body).hexdigest()
    try:
        compact = hashlib.sha256(dumps_compact(loads_strict(body))).hexdigest()
    except ValueError as e:
        compact = f"(not strict JSON: {e})"
    ex.add("  claimed", "", repr(claimed))
    ex.add("  sha256(raw body)", "", raw)
    ex.add("  sha256(compact JSON)", "", compact)
    verify.check_body_hash(parsed.claims, body, rule)
    ex.add("body hash", "ok", f"matches ({rule.encoding} over {rule.over})")
