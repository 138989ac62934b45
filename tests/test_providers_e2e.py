"""Provider webhooks end to end: real sockets, requests signed by the providers' own libraries,
and a backend that checks what it receives with the providers' own verify functions.

One gateway serves every provider twice: on ``/<provider>/keep`` with ``keep_signature: true``,
where the backend re-verifies the forwarded request with the provider's SDK (so forwarding must
be byte-exact: body and signature headers as sent), and on ``/<provider>/strip`` with the
defaults, where the backend must see no signature header and the verified id in
``X-Webhook-Id``. Each issuer holds two secrets (a rotation): the old and the new one pass.

Signers and verifiers: GitHub ``@octokit/webhooks-methods`` ``sign``/``verify`` (node) and
gidgethub's ``validate_event``; Stripe ``WebhookSignature.generate_signature_header`` and
``verify_header``; Slack ``SignatureVerifier.generate_signature`` and ``is_valid``; Shopify has
no signer, its ``verify_webhook_req`` checks the backend's copy; GitLab sends a plain token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event
from shopify_app.verify.webhook import verify_webhook_req
from slack_sdk.signature import SignatureVerifier

from gateway.config import parse_config, read_files
from gateway.lifecycle import run_gateway
from tests.octokit_support import octokit
from tests.support import FakeClock, captured_log, serve_app

SECRETS: dict[str, tuple[str, str]] = {
    # (old, new): the issuer is configured with both, as during a rotation.
    "github": ("the previous github secret", "It's a Secret to Everybody"),
    "stripe": ("whsec_previous0123456789abcdef", "whsec_aW52YWxpZC1iYXNlNjQ_but-used-as-is"),
    "slack": ("0123456789abcdef0123456789abcdef", "8f742231b10e8888abcd99yyyzzz85a5"),
    "shopify": ("hush-shopify-old-secret", "hush-shopify-app-secret"),
    "gitlab": ("glpat-previous-token", "glpat-current-token-0001"),
}
WRONG = {
    "github": "not the github secret",
    "stripe": "whsec_not_the_endpoint_secret",
    "slack": "ffffffffffffffffffffffffffffffff",
    "shopify": "not-the-shopify-secret",
    "gitlab": "glpat-not-the-token",
}
SIGNATURE = {
    "github": "X-Hub-Signature-256",
    "stripe": "Stripe-Signature",
    "slack": "X-Slack-Signature",
    "shopify": "X-Shopify-Hmac-Sha256",
    "gitlab": "X-Gitlab-Token",
}
PROVIDERS = tuple(SECRETS)


# --- signing, with the providers' own libraries ----------------------------------------------


def body_for(provider: str, ident: str) -> bytes:
    """A body like the provider's, not canonical JSON (spaces, a \\u escape): a gateway that
    re-serialised it would break every signature."""
    docs = {
        "github": f'{{"zen": "Keep it logically awesome.",  "hook_id": 1, "x": "{ident}"}}',
        "stripe": f'{{\n  "id": "evt_{ident}",\n  "object": "event",  "type": "charge.succeeded"}}',
        "slack": (
            f'{{"token":"x","type":"event_callback","event_id":"Ev{ident}",'
            '"event":{"type":"app_mention","text":"caf\\u00e9"}}'
        ),
        "shopify": f'{{"id": 820982911946154508, "note": "caf\\u00e9 {ident}"}}',
        "gitlab": f'{{"object_kind": "push",  "ref": "refs/heads/{ident}"}}',
    }
    return docs[provider].encode()


def sign(provider: str, body: bytes, secret: str, ident: str, now: int) -> dict[str, str]:
    """The headers the provider would send with ``body``."""
    if provider == "github":
        signature = octokit([{"op": "sign", "secret": secret, "payload": body.decode()}])[0]
        return {
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": ident,
            "X-GitHub-Event": "push",
        }
    if provider == "stripe":
        header = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=now
        )
        return {"Stripe-Signature": header}
    if provider == "slack":
        sig = SignatureVerifier(secret).generate_signature(timestamp=str(now), body=body)
        assert sig is not None
        return {"X-Slack-Signature": sig, "X-Slack-Request-Timestamp": str(now)}
    if provider == "shopify":
        mac = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        return {
            "X-Shopify-Hmac-Sha256": mac.decode(),
            "X-Shopify-Webhook-Id": ident,
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Shop-Domain": "example.myshopify.com",
        }
    return {"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": ident}


def expected_id(provider: str, ident: str) -> str:
    """The id the gateway forwards: the delivery id, or the event id from the verified body."""
    return {"stripe": f"evt_{ident}", "slack": f"Ev{ident}"}.get(provider, ident)


# --- the backend: re-verifies with the providers' own verify functions ----------------------


def sdk_accepts(provider: str, headers: dict[str, str], body: bytes) -> bool:
    """What a backend that still checks the signature itself would decide, with either secret."""
    old, new = SECRETS[provider]
    if provider == "github":
        for secret in (old, new):
            try:
                validate_event(body, signature=headers["x-hub-signature-256"], secret=secret)
                return True
            except (ValidationFailure, KeyError):
                continue
        return False
    if provider == "stripe":
        for secret in (old, new):
            try:
                stripe.WebhookSignature.verify_header(
                    body, headers.get("stripe-signature"), secret, 300
                )
                return True
            except stripe.SignatureVerificationError:
                continue
        return False
    if provider == "slack":
        return any(
            SignatureVerifier(secret).is_valid(
                body, headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
            )
            for secret in (old, new)
        )
    if provider == "shopify":
        verdict = verify_webhook_req(
            {
                "method": "POST",
                "headers": {k.title(): v for k, v in headers.items()},
                "url": "https://app.example/webhooks",
                "body": body.decode(),
            },
            {"client_id": "app", "client_secret": new, "old_client_secret": old},
        )
        return bool(verdict.ok)
    token = headers.get("x-gitlab-token", "").encode()
    return any(hmac.compare_digest(token, s.encode()) for s in (old, new))


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    sdk_ok: bool | None


@dataclass
class ReVerifyingBackend:
    """Answers 200 to what arrives on /<provider>/strip; on /<provider>/keep only to what the
    provider's own verify function accepts (401 otherwise, as a checking backend would)."""

    received: list[Delivery] = field(default_factory=list)

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            provider, _, mode = request.path.strip("/").partition("/")
            ok = sdk_accepts(provider, headers, body) if mode.startswith("keep") else None
            self.received.append(Delivery(request.path, headers, body, ok))
            return web.json_response({"ok": ok is not False}, status=401 if ok is False else 200)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


# --- the gateway ----------------------------------------------------------------------------


def issuers(extra: Callable[[str, str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = []
    for provider in PROVIDERS:
        for mode in ("keep", "strip"):
            section: dict[str, Any] = {"secrets": list(SECRETS[provider])}
            if mode == "keep":
                section["keep_signature"] = True
            if extra is not None:
                section.update(extra(provider, mode))
            out.append(
                {
                    "name": f"{provider}-{mode}",
                    "type": provider,
                    "path_prefix": f"/{provider}/{mode}",
                    "forward_claims": {"event": "X-Webhook-Event"},
                    provider: section,
                }
            )
    return out


@dataclass
class Setup:
    url: str
    admin_url: str
    backend: ReVerifyingBackend
    clock: FakeClock
    session: aiohttp.ClientSession

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any] | str]:
        async with self.session.post(self.url + path, data=body, headers=headers) as resp:
            text = await resp.text()
            if resp.content_type == "application/json":
                answer: dict[str, Any] = json.loads(text)
                return resp.status, answer
            return resp.status, text

    async def metrics(self) -> str:
        async with self.session.get(self.admin_url + "/metrics") as resp:
            return await resp.text()


@asynccontextmanager
async def gateway(config_issuers: list[dict[str, Any]]) -> AsyncIterator[Setup]:
    backend = ReVerifyingBackend()
    # The wall clock's "now", moved by nobody: the SDKs at the backend read the real clock.
    clock = FakeClock()
    async with serve_app(backend.app()) as backend_url:
        config = read_files(
            parse_config(
                {
                    "listen": "127.0.0.1:0",
                    "admin_listen": "127.0.0.1:0",
                    "upstream": {"url": backend_url, "timeout_seconds": 5},
                    "issuers": config_issuers,
                }
            )
        )
        async with (
            run_gateway(config, clock=clock) as running,
            aiohttp.ClientSession() as session,
        ):
            yield Setup(running.url, running.admin_url, backend, clock, session)


def new_id() -> str:
    return str(uuid.uuid4())


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_forwarded_byte_exact_the_providers_own_verify_accepts_it(provider: str) -> None:
    async with gateway(issuers()) as g:
        now = int(g.clock())
        for secret in SECRETS[provider]:  # the old and the new secret of a rotation
            ident = new_id()
            body = body_for(provider, ident)
            headers = sign(provider, body, secret, ident, now)
            status, answer = await g.post(f"/{provider}/keep", body, headers)
            assert (status, answer) == (200, {"ok": True})
            got = g.backend.received[-1]
            assert got.sdk_ok is True
            assert got.body == body
            # keep_signature: every header the provider sent arrives as sent.
            for name, value in headers.items():
                assert got.headers[name.lower()] == value
            assert got.headers["x-webhook-id"] == expected_id(provider, ident)
        assert len(g.backend.received) == 2


async def test_github_forwarded_request_passes_octokit_verify() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("github", ident)
        headers = sign("github", body, SECRETS["github"][1], ident, int(g.clock()))
        headers["X-GitHub-Event"] = "ping"  # ping passes like any other event
        assert (await g.post("/github/keep", body, headers))[0] == 200
        got = g.backend.received[0]
        # The event header is unsigned: forwarded as GitHub's own header, never as a claim.
        assert got.headers["x-github-event"] == "ping"
        assert "x-webhook-event" not in got.headers
        verdict = octokit(
            [
                {
                    "op": "verify",
                    "secret": SECRETS["github"][1],
                    "payload": got.body.decode(),
                    "signature": got.headers["x-hub-signature-256"],
                }
            ]
        )
        assert verdict == [True]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_by_default_the_signature_is_stripped_and_the_id_forwarded(provider: str) -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for(provider, ident)
        headers = sign(provider, body, SECRETS[provider][1], ident, int(g.clock()))
        # A client's own X-Webhook-Id must never reach the backend as the verified one.
        headers["X-Webhook-Id"] = "forged"
        status, _ = await g.post(f"/{provider}/strip", body, headers)
        assert status == 200
        got = g.backend.received[0]
        assert got.body == body
        assert SIGNATURE[provider].lower() not in got.headers
        if provider == "github":  # the SHA-1 MAC goes with the SHA-256 one
            assert "x-hub-signature" not in got.headers
        assert got.headers["x-webhook-id"] == expected_id(provider, ident)
        claims = json.loads(base64.urlsafe_b64decode(got.headers["x-jwt-claims"] + "=="))
        assert claims["provider"] == provider
        # GitHub's and Shopify's ids are unsigned headers: kept apart from the verified claims.
        signed = claims["unsigned"] if provider in ("github", "shopify") else claims
        assert signed["id"] == expected_id(provider, ident)
        assert got.headers["x-jwt-issuer"] == f"{provider}-strip"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refusals_carry_their_reason_codes(provider: str) -> None:
    async with gateway(issuers()) as g:
        now = int(g.clock())
        path = f"/{provider}/keep"
        ident = new_id()
        body = body_for(provider, ident)
        good = sign(provider, body, SECRETS[provider][1], ident, now)
        assert (await g.post(path, body, good))[0] == 200

        async def reason(b: bytes, h: dict[str, str]) -> tuple[int, str]:
            status, answer = await g.post(path, b, h)
            assert isinstance(answer, dict), answer
            return status, str(answer["error"])

        # The very same delivery again: 409, whatever the provider's replay key is made of.
        assert await reason(body, good) == (409, "replayed")
        # Tampered: a space added after signing (the same JSON to a parser, not the same bytes).
        other = new_id()
        fresh = sign(provider, body_for(provider, other), SECRETS[provider][1], other, now)
        signed = body_for(provider, other)
        tampered = signed[:-1] + b" " + signed[-1:]
        if provider != "gitlab":  # GitLab's token signs nothing: its body cannot be checked
            assert await reason(tampered, fresh) == (401, "bad_signature")
        # Signed with a secret the issuer does not hold.
        wrong_id = new_id()
        wrong_body = body_for(provider, wrong_id)
        wrong = sign(provider, wrong_body, WRONG[provider], wrong_id, now)
        assert await reason(wrong_body, wrong) == (401, "bad_signature")
        # No signature header at all.
        missing = {k: v for k, v in fresh.items() if k != SIGNATURE[provider]}
        assert await reason(body_for(provider, other), missing) == (401, "missing_token")
        # A signature header that is not the provider's format.
        malformed = dict(fresh, **{SIGNATURE[provider]: "sha1=abc,not it"})
        if provider == "gitlab":  # a token has no format; two of them are ambiguous
            status, answer = await g.post(
                path,
                body_for(provider, other),
                [*fresh.items(), ("X-Gitlab-Token", "a second token")],
            )
            assert isinstance(answer, dict)
            assert (status, answer["error"]) == (401, "malformed_token")
        else:
            assert await reason(body_for(provider, other), malformed) == (401, "malformed_token")
        # Only the first delivery reached the backend.
        assert len(g.backend.received) == 1
        metrics = await g.metrics()
        for code in ("replayed", "bad_signature", "missing_token", "malformed_token"):
            assert f'issuer="{provider}-keep",outcome="rejected",reason="{code}"' in metrics


@pytest.mark.parametrize("provider", ["stripe", "slack"])
async def test_a_stale_or_future_timestamp_is_refused(provider: str) -> None:
    async with gateway(issuers()) as g:
        now = int(g.clock())
        # Margins of tens of seconds: the clock is the real one (the backend's SDK re-checks the
        # window too), and a loaded machine can take seconds between signing and checking.
        for offset, code in ((-330, "token_too_old"), (330, "not_yet_valid")):
            ident = new_id()
            body = body_for(provider, ident)
            headers = sign(provider, body, SECRETS[provider][1], ident, now + offset)
            status, answer = await g.post(f"/{provider}/keep", body, headers)
            assert isinstance(answer, dict)
            assert (status, answer["error"]) == (401, code)
        ident = new_id()
        body = body_for(provider, ident)
        inside = sign(provider, body, SECRETS[provider][1], ident, now - 240)
        assert (await g.post(f"/{provider}/keep", body, inside))[0] == 200
        assert len(g.backend.received) == 1


async def test_github_redelivery_keeps_its_id_and_is_not_delivered_twice() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("github", ident)
        first = sign("github", body, SECRETS["github"][1], ident, 0)
        assert (await g.post("/github/strip", body, first))[0] == 200
        # GitHub's "Redeliver" sends the same delivery id; even re-signed with the old secret.
        again = sign("github", body, SECRETS["github"][0], ident, 0)
        status, answer = await g.post("/github/strip", body, again)
        assert isinstance(answer, dict)
        assert (status, answer["error"]) == (409, "replayed")
        assert len(g.backend.received) == 1


SLACK_CHALLENGE = (
    b'{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":'
    b'"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}'
)


async def test_slack_challenge_is_answered_without_reaching_the_backend() -> None:
    answering = issuers(lambda p, m: {"answer_challenge": True} if p == "slack" else {})
    async with gateway(answering) as g:
        now = int(g.clock())
        headers = sign("slack", SLACK_CHALLENGE, SECRETS["slack"][1], "", now)
        status, text = await g.post("/slack/keep", SLACK_CHALLENGE, headers)
        assert (status, text) == (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        assert g.backend.received == []
        # Slack signs the handshake too: an unsigned (or wrongly signed) one is refused.
        forged = sign("slack", SLACK_CHALLENGE, WRONG["slack"], "", now)
        status, answer = await g.post("/slack/keep", SLACK_CHALLENGE, forged)
        assert isinstance(answer, dict)
        assert (status, answer["error"]) == (401, "bad_signature")
        # Other events still go to the backend.
        ident = new_id()
        body = body_for("slack", ident)
        assert (
            await g.post("/slack/keep", body, sign("slack", body, SECRETS["slack"][1], "", now))
        )[0] == 200
        assert len(g.backend.received) == 1


async def test_without_answer_challenge_the_backend_gets_the_challenge() -> None:
    async with gateway(issuers()) as g:
        headers = sign("slack", SLACK_CHALLENGE, SECRETS["slack"][1], "", int(g.clock()))
        assert (await g.post("/slack/keep", SLACK_CHALLENGE, headers))[0] == 200
        assert g.backend.received[0].body == SLACK_CHALLENGE
        assert g.backend.received[0].sdk_ok is True


async def test_secrets_from_files_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation across sources: the old secret in a mounted file, the new one from ${ENV}.
    Stripe's whsec_ secret is used as the literal string (never base64-decoded), as its SDK
    does: a file holding it works like the inline one."""
    (tmp_path / "old").write_text(SECRETS["stripe"][0] + "\n")
    monkeypatch.setenv("STRIPE_SECRET", SECRETS["stripe"][1])
    config = [
        {
            "name": "stripe-keep",
            "type": "stripe",
            "path_prefix": "/stripe/keep",
            "stripe": {
                "secrets": ["${STRIPE_SECRET}"],
                "secret_files": [str(tmp_path / "old")],
                "keep_signature": True,
            },
        }
    ]
    async with gateway(config) as g:
        for secret in SECRETS["stripe"]:
            ident = new_id()
            body = body_for("stripe", ident)
            headers = sign("stripe", body, secret, ident, int(g.clock()))
            assert (await g.post("/stripe/keep", body, headers)) == (200, {"ok": True})
        assert [d.sdk_ok for d in g.backend.received] == [True, True]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_backends_own_check_refuses_what_it_should(provider: str) -> None:
    """The re-verifying backend is a real check: a changed body (or, for GitLab, a wrong token)
    fails it, so its "True" above means the forwarded request is the signed one."""
    ident = new_id()
    body = body_for(provider, ident)
    now = int(FakeClock()())
    headers = {
        k.lower(): v for k, v in sign(provider, body, SECRETS[provider][1], ident, now).items()
    }
    assert sdk_accepts(provider, headers, body)
    if provider == "gitlab":
        assert not sdk_accepts(provider, dict(headers, **{"x-gitlab-token": WRONG[provider]}), body)
    else:
        assert not sdk_accepts(provider, headers, body + b" ")


async def test_access_log_names_the_issuer_reason_and_replay_key() -> None:
    async with gateway(issuers()) as g:
        ident = new_id()
        body = body_for("shopify", ident)
        headers = sign("shopify", body, SECRETS["shopify"][1], ident, 0)
        with captured_log("jwksgate.access") as records:
            assert (await g.post("/shopify/strip", body, headers))[0] == 200
            assert (await g.post("/shopify/strip", body, headers))[0] == 409
            wrong = sign("shopify", body, WRONG["shopify"], new_id(), 0)
            assert (await g.post("/shopify/strip", body, wrong))[0] == 401
        lines = [json.loads(r.getMessage()) for r in records]
        fields = ("jwksgate.issuer", "jwksgate.outcome", "jwksgate.reason")
        assert [tuple(x[f] for f in fields) for x in lines] == [
            ("shopify-strip", "forwarded", "none"),
            ("shopify-strip", "rejected", "replayed"),
            ("shopify-strip", "rejected", "bad_signature"),
        ]
        # The replay key is named (a digest's prefix), never the delivery id or a secret.
        digest = "jwksgate.replay_key_sha256"
        assert lines[0][digest] == lines[1][digest]
        assert ident not in json.dumps(lines)
        assert SECRETS["shopify"][1] not in json.dumps(lines)
