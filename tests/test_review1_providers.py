"""Review findings on provider webhooks (review1): each test fails on main.

GitHub and Shopify sign the body alone; their delivery id headers are not signed. The gateway
keys replays on those unsigned ids, so a captured delivery is accepted again and again under a
new id header.
"""

from __future__ import annotations

import hashlib
import hmac

from tests.test_providers_e2e import SECRETS, body_for, gateway, issuers, new_id, sign


def github_headers(body: bytes, ident: str, event: str = "push") -> dict[str, str]:
    """GitHub's headers, signed here with hmac (the octokit signer needs node)."""
    mac = hmac.new(SECRETS["github"][1].encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={mac}",
        "X-GitHub-Delivery": ident,
        "X-GitHub-Event": event,
    }


async def test_github_captured_delivery_with_a_new_delivery_id_is_a_replay() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("github", ident)
        captured = github_headers(body, ident)
        assert (await g.post("/github/strip", body, captured))[0] == 200
        # The attacker changes only the unsigned X-GitHub-Delivery header.
        forged = {**captured, "X-GitHub-Delivery": new_id()}
        status, _answer = await g.post("/github/strip", body, forged)
        assert status == 409, "the same signed body was delivered twice"
        assert len(g.backend.received) == 1


async def test_shopify_captured_delivery_with_a_new_webhook_id_is_a_replay() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("shopify", ident)
        captured = sign("shopify", body, SECRETS["shopify"][1], ident, 0)
        assert (await g.post("/shopify/strip", body, captured))[0] == 200
        forged = {**captured, "X-Shopify-Webhook-Id": new_id()}
        status, _answer = await g.post("/shopify/strip", body, forged)
        assert status == 409, "the same signed body was delivered twice"
        assert len(g.backend.received) == 1


async def test_github_event_header_is_not_signed_but_forwarded_as_a_verified_claim() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("github", ident)
        headers = github_headers(body, ident)
        headers["X-GitHub-Event"] = "release"  # the body is a push; nobody signed "release"
        assert (await g.post("/github/strip", body, headers))[0] == 200
        got = g.backend.received[-1].headers
        # forward_claims maps event -> X-Webhook-Event: the backend is told "release" is verified.
        assert got.get("x-webhook-event") != "release"
