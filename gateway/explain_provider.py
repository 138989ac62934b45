"""``jwksgate explain --issuer NAME --header 'Name: value' ... --body FILE``: why would the
gateway accept or reject this provider webhook (GitHub, Stripe, Slack, Shopify, GitLab)?

It runs the request path's own functions (``providers.precheck`` on the headers, then
``providers.verify`` on the raw body bytes) and prints each step; the verdict is the first
failure, as in the gateway. Offline: nothing is sent, no replay store is asked (the replay key
is shown, with how long a delivery keeps it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import replace

from multidict import CIMultiDict, CIMultiDictProxy

from gateway import providers, verify
from gateway.config import IssuerConfig
from gateway.errors import Rejection
from gateway.explain import Explanation, _when
from gateway.providers import GitLabConfig, ProviderConfig, SlackConfig, StripeConfig

__all__ = ["explain_provider", "parse_header_lines"]


def parse_header_lines(lines: Iterable[str]) -> CIMultiDictProxy[str]:
    """``Name: value`` lines (as ``curl -H`` takes them) as the request's headers, repeats kept."""
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"not a header line (Name: value): {line!r}")
        headers.add(name.strip(), value.strip())
    return CIMultiDictProxy(headers)


def _shown(cfg: ProviderConfig, name: str, value: str) -> str:
    # GitLab's header is the secret itself: never printed.
    if isinstance(cfg, GitLabConfig) and name.lower() == cfg.token_header.lower():
        return f"({len(value)} characters, not shown)"
    return value if len(value) <= 120 else value[:117] + "..."


def _which_secret(
    headers: CIMultiDictProxy[str], body: bytes, cfg: ProviderConfig, now: float
) -> str:
    """Which configured secret verifies (a rotation: is the sender on the new one yet?)."""
    for i in range(len(cfg.secrets)):
        try:
            providers.verify(headers, body, replace(cfg, secrets=(cfg.secrets[i],)), now)
        except Rejection:
            continue
        return f"secret {i + 1} of {len(cfg.secrets)}"
    return "no secret"  # pragma: no cover - verify accepted with all of them together


def explain_provider(
    issuer: IssuerConfig,
    headers: CIMultiDictProxy[str],
    body: bytes | None,
    *,
    now: float | None = None,
) -> Explanation:
    """Every check of the request path for a provider webhook; stops where the gateway would."""
    ex = Explanation()
    now = time.time() if now is None else now
    cfg = issuer.provider
    assert cfg is not None
    cfg = replace(cfg, namespace=verify.replay_namespace(issuer))
    ex.add("issuer", "ok", f"{issuer.name!r}: type {issuer.type}, path {issuer.path_prefix}")
    for name, value in headers.items():
        ex.add(f"  {name}", "", _shown(cfg, name, value))
    ex.add("  now", "", _when(int(now)))
    try:
        providers.precheck(headers, cfg, now)
        window = (
            f", timestamp within {cfg.tolerance_seconds:g}s"
            if isinstance(cfg, StripeConfig | SlackConfig)
            else ""
        )
        ex.add("headers", "ok", f"present and well formed{window}")
        if body is None:
            ex.skipped_signature = True
            ex.skipped_why = "no body was given"
            ex.add("signature", "skip", "pass --body FILE (the raw bytes as sent) to check it")
            return ex
        ex.add("  sha256(raw body)", "", f"{hashlib.sha256(body).hexdigest()} ({len(body)} bytes)")
        result = providers.verify(headers, body, cfg, now)
        ex.add("signature", "ok", f"verifies with {_which_secret(headers, body, cfg, now)}")
        ex.add("claims", "", ", ".join(f"{k}={v!r}" for k, v in result.claims.items()))
        if isinstance(cfg, SlackConfig) and cfg.answer_challenge:
            challenge = providers.slack_challenge(body)
            if challenge is not None:
                ex.add("url_verification", "ok", f"answered by the gateway: {challenge!r}")
                return ex
        if result.replay_key is None:
            ex.add("replay key", "skip", "none: this request carries no id to de-duplicate on")
        else:
            ex.add(
                "replay key",
                "ok",
                f"sha256 {result.replay_key[-32:].hex()[:16]}..., kept "
                f"{result.replay_ttl_seconds:.0f}s (a second delivery would be 409 replayed)",
            )
        ex.add("stripped", "", ", ".join(result.strip_headers) or "nothing")
        ex.add("added", "", ", ".join(f"{k}: {v}" for k, v in result.add_headers) or "nothing")
    except Rejection as r:
        ex.verdict = r
        ex.add("FAILED", "FAIL", f"{r.reason}: {r.detail}")
    return ex
