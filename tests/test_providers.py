"""The provider webhook verifiers, with requests signed by the providers' own libraries.

Stripe's SDK (``WebhookSignature.generate_signature_header``), Slack's SDK
(``SignatureVerifier.generate_signature``) and GitHub's ``@octokit/webhooks-methods`` (through
``tests/node-providers/octokit.mjs``) sign the requests; Shopify publishes no signer, so a
signature computed here is first shown to pass Shopify's own ``verify_webhook_req``. When a
request is forwarded with its signature kept, the provider's own verify function is asked to
accept it again, as a backend that still checks would.

These are unit tests of pure functions: ``now`` is a fixed number, never the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event
from multidict import CIMultiDict, CIMultiDictProxy
from shopify_app.verify.webhook import verify_webhook_req
from slack_sdk.signature import Clock, SignatureVerifier

from gateway import providers
from gateway.errors import Rejection
from gateway.providers import (
    GitHubConfig,
    GitLabConfig,
    ProviderResult,
    ShopifyConfig,
    SlackConfig,
    StripeConfig,
)
from tests.octokit_support import octokit

NOW = 1_800_000_000


def hdrs(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def reason(fn: Callable[[], object]) -> str:
    with pytest.raises(Rejection) as info:
        fn()
    return info.value.reason


def check_key_shape(result: ProviderResult, namespace: bytes) -> bytes:
    key = result.replay_key
    assert key is not None
    assert key.startswith(namespace + b":")
    assert len(key) == len(namespace) + 1 + 32
    return key


# --- GitHub, signed by @octokit/webhooks-methods ---------------------------------------------


def gh_sign(secret: str, payload: str) -> str:
    signature: str = octokit([{"op": "sign", "secret": secret, "payload": payload}])[0]
    return signature


GH_SECRET = "It's a Secret to Everybody"
GH_OLD = "the previous secret"
# Not canonical JSON on purpose: spaces and a \u escape that a re-serialisation would change.
GH_BODY = '{"zen": "Keep it logically awesome.",  "hook_id": 1, "name": "caf\\u00e9"}'


def gh_cfg(**kw: Any) -> GitHubConfig:
    kw.setdefault("secrets", (GH_SECRET.encode(),))
    return GitHubConfig(namespace=b"gh-hooks", **kw)


def gh_headers(signature: str, delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958") -> Any:
    return hdrs(
        ("X-Hub-Signature-256", signature),
        ("X-GitHub-Delivery", delivery),
        ("X-GitHub-Event", "ping"),
    )


def test_github_octokit_signature_verifies_and_forwards_the_delivery() -> None:
    sig = gh_sign(GH_SECRET, GH_BODY)
    result = providers.verify(gh_headers(sig), GH_BODY.encode(), gh_cfg(), NOW)
    assert result.provider == "github"
    # ping passes like any other event; the event type and delivery id are forwarded, as
    # unsigned (GitHub's MAC covers the body alone).
    assert result.claims == {
        "provider": "github",
        "unsigned": {"id": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "ping"},
    }
    assert result.add_headers == (("X-Webhook-Id", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),)
    assert set(result.strip_headers) == {"X-Hub-Signature-256", "X-Hub-Signature", "X-Webhook-Id"}
    assert result.replay_ttl_seconds == 259_200.0
    check_key_shape(result, b"gh-hooks")


def test_github_kept_signature_still_verifies_with_octokit_and_gidgethub() -> None:
    sig = gh_sign(GH_SECRET, GH_BODY)
    result = providers.verify(gh_headers(sig), GH_BODY.encode(), gh_cfg(keep_signature=True), NOW)
    assert "X-Hub-Signature-256" not in result.strip_headers
    # What the backend receives is the same bytes with the same header: both libraries agree.
    ok = octokit([{"op": "verify", "secret": GH_SECRET, "payload": GH_BODY, "signature": sig}])
    assert ok == [True]
    validate_event(GH_BODY.encode(), signature=sig, secret=GH_SECRET)


def test_github_tampered_body_wrong_secret_and_reserialised_body_are_bad_signatures() -> None:
    sig = gh_sign(GH_SECRET, GH_BODY)
    tampered = GH_BODY.replace("awesome", "awesomer").encode()
    assert reason(lambda: providers.verify(gh_headers(sig), tampered, gh_cfg(), NOW)) == (
        "bad_signature"
    )
    # The same JSON value, re-serialised: not the bytes GitHub signed.
    reserialised = json.dumps(json.loads(GH_BODY)).encode()
    assert reserialised != GH_BODY.encode()
    assert reason(lambda: providers.verify(gh_headers(sig), reserialised, gh_cfg(), NOW)) == (
        "bad_signature"
    )
    wrong = gh_sign("another secret", GH_BODY)
    assert reason(lambda: providers.verify(gh_headers(wrong), GH_BODY.encode(), gh_cfg(), NOW)) == (
        "bad_signature"
    )
    # The provider's own check agrees that these are refused.
    with pytest.raises(ValidationFailure):
        validate_event(tampered, signature=sig, secret=GH_SECRET)


def test_github_rotation_accepts_old_and_new_secret() -> None:
    cfg = gh_cfg(secrets=(GH_SECRET.encode(), GH_OLD.encode()))
    for secret in (GH_SECRET, GH_OLD):
        sig = gh_sign(secret, GH_BODY)
        assert providers.verify(gh_headers(sig), GH_BODY.encode(), cfg, NOW).claims["unsigned"][
            "id"
        ]
    sig = gh_sign(GH_OLD, GH_BODY)
    # Once the old secret is retired, its signatures stop verifying.
    assert reason(lambda: providers.verify(gh_headers(sig), GH_BODY.encode(), gh_cfg(), NOW)) == (
        "bad_signature"
    )


@pytest.mark.parametrize(
    ("pairs", "want"),
    [
        ((("X-GitHub-Delivery", "d1"),), "missing_token"),
        # GitHub's SHA-1 header alone is not accepted.
        ((("X-Hub-Signature", "sha1=" + "0" * 40), ("X-GitHub-Delivery", "d1")), "missing_token"),
        ((("X-Hub-Signature-256", "sha256=" + "a" * 64),), "missing_token"),
        (
            (("X-Hub-Signature-256", "sha1=" + "a" * 64), ("X-GitHub-Delivery", "d1")),
            "malformed_token",
        ),
        (
            (("X-Hub-Signature-256", "sha256=" + "A" * 64), ("X-GitHub-Delivery", "d1")),
            "malformed_token",
        ),
        (
            (("X-Hub-Signature-256", "sha256=" + "a" * 63), ("X-GitHub-Delivery", "d1")),
            "malformed_token",
        ),
        ((("X-Hub-Signature-256", "a" * 64), ("X-GitHub-Delivery", "d1")), "malformed_token"),
        (
            (
                ("X-Hub-Signature-256", "sha256=" + "a" * 64),
                ("X-Hub-Signature-256", "sha256=" + "b" * 64),
                ("X-GitHub-Delivery", "d1"),
            ),
            "malformed_token",
        ),
        (
            (("X-Hub-Signature-256", "sha256=" + "a" * 64), ("X-GitHub-Delivery", "a b")),
            "malformed_token",
        ),
        (
            (
                ("X-Hub-Signature-256", "sha256=" + "a" * 64),
                ("X-GitHub-Delivery", "d1"),
                ("X-GitHub-Event", "x" * 129),
            ),
            "malformed_token",
        ),
    ],
)
def test_github_precheck_refuses_missing_and_malformed_headers_before_the_body(
    pairs: tuple[tuple[str, str], ...], want: str
) -> None:
    # The headers-only phase: no body exists yet, and none is needed to refuse.
    assert reason(lambda: providers.precheck(hdrs(*pairs), gh_cfg(), NOW)) == want
    assert reason(lambda: providers.verify(hdrs(*pairs), b"{}", gh_cfg(), NOW)) == want


def test_github_without_node_a_local_signature_that_gidgethub_accepts() -> None:
    # So that GitHub keeps coverage where npm is missing: the signature is computed here, and
    # first shown to be GitHub's format by gidgethub's validate_event.
    sig = "sha256=" + hmac.new(GH_OLD.encode(), GH_BODY.encode(), hashlib.sha256).hexdigest()
    validate_event(GH_BODY.encode(), signature=sig, secret=GH_OLD)
    cfg = gh_cfg(secrets=(GH_SECRET.encode(), GH_OLD.encode()))
    got = providers.verify(gh_headers(sig), GH_BODY.encode(), cfg, NOW)
    assert got.claims["unsigned"]["event"] == "ping"
    assert reason(lambda: providers.verify(gh_headers(sig), GH_BODY.encode(), gh_cfg(), NOW)) == (
        "bad_signature"
    )
    tampered = GH_BODY.encode() + b" "
    assert reason(lambda: providers.verify(gh_headers(sig), tampered, cfg, NOW)) == "bad_signature"


def test_github_replay_key_is_the_signed_body() -> None:
    sig = gh_sign(GH_SECRET, GH_BODY)
    first = providers.verify(gh_headers(sig, "d-1"), GH_BODY.encode(), gh_cfg(), NOW)
    # A redelivery (days later: GitHub sends no timestamp) keeps its body and so its key.
    again = providers.verify(gh_headers(sig, "d-1"), GH_BODY.encode(), gh_cfg(), NOW + 86_400)
    # The delivery id is unsigned: a new one on the same signed body is the same delivery.
    relabelled = providers.verify(gh_headers(sig, "d-2"), GH_BODY.encode(), gh_cfg(), NOW)
    assert relabelled.replay_key == first.replay_key
    other_body = GH_BODY + " "
    other = providers.verify(
        gh_headers(gh_sign(GH_SECRET, other_body), "d-1"), other_body.encode(), gh_cfg(), NOW
    )
    elsewhere = providers.verify(
        gh_headers(sig, "d-1"),
        GH_BODY.encode(),
        GitHubConfig(namespace=b"other", secrets=(GH_SECRET.encode(),)),
        NOW,
    )
    assert check_key_shape(first, b"gh-hooks") == again.replay_key
    assert first.replay_key != other.replay_key
    assert first.replay_key is not None and elsewhere.replay_key is not None
    assert first.replay_key[-32:] != elsewhere.replay_key[-32:]


# --- Stripe, signed by stripe.WebhookSignature -----------------------------------------------

ST_SECRET = "whsec_test_secret_current"
ST_OLD = "whsec_test_secret_previous"
ST_BODY = (
    '{\n  "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",\n  "object": "event",\n'
    '  "type": "charge.succeeded"\n}'
)


def st_cfg(**kw: Any) -> StripeConfig:
    kw.setdefault("secrets", (ST_SECRET.encode(),))
    return StripeConfig(namespace=b"stripe", **kw)


def st_sign(secret: str = ST_SECRET, body: str = ST_BODY, t: int = NOW) -> str:
    header: str = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=t)
    return header


def st_verify(header: str, body: str = ST_BODY, cfg: StripeConfig | None = None) -> ProviderResult:
    h = hdrs(("Stripe-Signature", header))
    return providers.verify(h, body.encode(), cfg or st_cfg(), NOW)


def test_stripe_sdk_signature_verifies_and_forwards_the_event() -> None:
    result = st_verify(st_sign())
    assert result.claims == {
        "provider": "stripe",
        "timestamp": NOW,
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "event": "charge.succeeded",
    }
    assert result.add_headers == (("X-Webhook-Id", "evt_1NG8Du2eZvKYlo2CUI79vXWy"),)
    assert set(result.strip_headers) == {"Stripe-Signature", "X-Webhook-Id"}
    assert result.replay_ttl_seconds == 600.0
    check_key_shape(result, b"stripe")


def test_stripe_kept_signature_still_verifies_with_the_sdk() -> None:
    header = st_sign()
    result = st_verify(header, cfg=st_cfg(keep_signature=True))
    assert "Stripe-Signature" not in result.strip_headers
    # tolerance=None: the SDK would read the wall clock; the signature is what is checked here.
    assert stripe.WebhookSignature.verify_header(ST_BODY.encode(), header, ST_SECRET, None)


def test_stripe_tampered_body_and_wrong_secret_are_bad_signatures() -> None:
    header = st_sign()
    assert reason(lambda: st_verify(header, ST_BODY.replace("succeeded", "refunded"))) == (
        "bad_signature"
    )
    assert reason(lambda: st_verify(st_sign(secret="whsec_someone_else"))) == "bad_signature"
    # Stripe signs the body bytes; the same JSON re-serialised is another message.
    assert reason(lambda: st_verify(header, json.dumps(json.loads(ST_BODY)))) == "bad_signature"


def test_stripe_rotation_header_with_two_v1_and_config_with_two_secrets() -> None:
    # During a roll Stripe sends one v1 per live secret; the config may hold either.
    new, old = st_sign(ST_SECRET), st_sign(ST_OLD)
    both = new + ",v1=" + old.split("v1=")[1]
    assert st_verify(both, cfg=st_cfg(secrets=(ST_OLD.encode(),))).claims["timestamp"] == NOW
    assert st_verify(both).claims["timestamp"] == NOW
    two_secrets = st_cfg(secrets=(ST_SECRET.encode(), ST_OLD.encode()))
    assert st_verify(old, cfg=two_secrets).claims["timestamp"] == NOW
    assert reason(lambda: st_verify(old)) == "bad_signature"


def test_stripe_unknown_schemes_are_ignored() -> None:
    header = st_sign() + ",v0=" + "0" * 64 + ",v2=whatever"
    assert st_verify(header).claims["provider"] == "stripe"
    # ...but a header with nothing but unknown schemes has no signature to check.
    only_v0 = f"t={NOW},v0=" + "0" * 64
    assert reason(lambda: st_verify(only_v0)) == "malformed_token"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"t={NOW}",
        f"t=soon,v1={'a' * 64}",
        f"v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=ABC",
        f"t={NOW},v1={'A' * 64}",
        f"t={NOW},,v1={'a' * 64}",
        f"t={NOW},v1=",
        f"t={NOW}," + ",".join([f"v1={'a' * 64}"] * 16),
        f"t={NOW},v0=" + "0" * 5000 + f",v1={'a' * 64}",
    ],
)
def test_stripe_malformed_headers_are_refused_by_precheck(header: str) -> None:
    h = hdrs(("Stripe-Signature", header))
    assert reason(lambda: providers.precheck(h, st_cfg(), NOW)) == "malformed_token"


def test_stripe_missing_and_duplicated_header() -> None:
    assert reason(lambda: providers.precheck(hdrs(), st_cfg(), NOW)) == "missing_token"
    twice = hdrs(("Stripe-Signature", st_sign()), ("Stripe-Signature", st_sign()))
    assert reason(lambda: providers.precheck(twice, st_cfg(), NOW)) == "malformed_token"


def test_stripe_timestamp_window() -> None:
    assert st_verify(st_sign(t=NOW - 300)).claims["timestamp"] == NOW - 300
    assert st_verify(st_sign(t=NOW + 300)).claims["timestamp"] == NOW + 300
    stale = hdrs(("Stripe-Signature", st_sign(t=NOW - 301)))
    future = hdrs(("Stripe-Signature", st_sign(t=NOW + 301)))
    # Refused from the headers alone, before any body is read.
    assert reason(lambda: providers.precheck(stale, st_cfg(), NOW)) == "token_too_old"
    assert reason(lambda: providers.precheck(future, st_cfg(), NOW)) == "not_yet_valid"
    wide = st_cfg(tolerance_seconds=600.0)
    assert providers.verify(stale, ST_BODY.encode(), wide, NOW).claims["timestamp"] == NOW - 301


def test_stripe_replay_key() -> None:
    header = st_sign()
    first = check_key_shape(st_verify(header), b"stripe")
    assert st_verify(header).replay_key == first
    # An extra v1 appended to a captured header does not make the same delivery new.
    assert st_verify(header + ",v1=" + "b" * 64).replay_key == first
    other_body = ST_BODY.replace("evt_1NG8Du2eZvKYlo2CUI79vXWy", "evt_2")
    assert st_verify(st_sign(body=other_body), other_body).replay_key != first
    # Stripe's own retry is signed afresh with a new t: a new key, the same forwarded event id.
    retry = st_verify(st_sign(t=NOW + 60))
    assert retry.replay_key != first
    assert retry.claims["id"] == "evt_1NG8Du2eZvKYlo2CUI79vXWy"


def test_stripe_body_that_is_not_json_verifies_without_an_event_id() -> None:
    body = "not json at all"
    result = st_verify(st_sign(body=body), body)
    assert "id" not in result.claims
    assert result.add_headers == ()


# --- Slack, signed by slack_sdk's SignatureVerifier ------------------------------------------


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


SL_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SL_OLD = "0123456789abcdef0123456789abcdef"
SL_BODY = (
    '{"token":"x","team_id":"T1","type":"event_callback","event_id":"Ev08MFMKH6",'
    '"event":{"type":"app_mention","text":"caf\u00e9"}}'
)
SL_FORM = "token=x&team_id=T1&command=%2Fweather&text=94070&trigger_id=13345224609.738"


def sl_cfg(**kw: Any) -> SlackConfig:
    kw.setdefault("secrets", (SL_SECRET.encode(),))
    return SlackConfig(namespace=b"slack", **kw)


def sl_headers(ts: int = NOW, body: str = SL_BODY, secret: str = SL_SECRET) -> Any:
    verifier = SignatureVerifier(secret, clock=FixedClock(NOW))
    sig = verifier.generate_signature(timestamp=str(ts), body=body)
    assert sig is not None
    return hdrs(("X-Slack-Signature", sig), ("X-Slack-Request-Timestamp", str(ts)))


def test_slack_sdk_signature_verifies_and_forwards_the_event() -> None:
    result = providers.verify(sl_headers(), SL_BODY.encode(), sl_cfg(), NOW)
    assert result.claims == {
        "provider": "slack",
        "timestamp": NOW,
        "id": "Ev08MFMKH6",
        "event": "event_callback",
    }
    assert result.add_headers == (("X-Webhook-Id", "Ev08MFMKH6"),)
    assert set(result.strip_headers) == {"X-Slack-Signature", "X-Webhook-Id"}
    assert result.replay_ttl_seconds == 600.0
    check_key_shape(result, b"slack")


def test_slack_form_encoded_body_verifies_and_forwarded_request_passes_is_valid() -> None:
    h = sl_headers(body=SL_FORM)
    result = providers.verify(h, SL_FORM.encode(), sl_cfg(keep_signature=True), NOW)
    assert result.claims == {"provider": "slack", "timestamp": NOW}
    assert "X-Slack-Signature" not in result.strip_headers
    verifier = SignatureVerifier(SL_SECRET, clock=FixedClock(NOW))
    assert verifier.is_valid(
        SL_FORM.encode(), h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"]
    )


def test_slack_tampered_body_and_wrong_secret_are_bad_signatures() -> None:
    tampered = SL_BODY.replace("app_mention", "message").encode()
    assert reason(lambda: providers.verify(sl_headers(), tampered, sl_cfg(), NOW)) == (
        "bad_signature"
    )
    wrong = sl_headers(secret="not-the-signing-secret")
    assert reason(lambda: providers.verify(wrong, SL_BODY.encode(), sl_cfg(), NOW)) == (
        "bad_signature"
    )


def test_slack_rotation_accepts_either_secret() -> None:
    cfg = sl_cfg(secrets=(SL_SECRET.encode(), SL_OLD.encode()))
    for secret in (SL_SECRET, SL_OLD):
        h = sl_headers(secret=secret)
        assert providers.verify(h, SL_BODY.encode(), cfg, NOW).claims["id"] == "Ev08MFMKH6"


def test_slack_timestamp_window_matches_the_sdk() -> None:
    verifier = SignatureVerifier(SL_SECRET, clock=FixedClock(NOW))
    for ts, ok, want in [
        (NOW - 300, True, ""),
        (NOW + 300, True, ""),
        (NOW - 301, False, "token_too_old"),
        (NOW + 301, False, "not_yet_valid"),
    ]:
        h = sl_headers(ts=ts)
        sdk_ok = verifier.is_valid(SL_BODY, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"])
        assert sdk_ok is ok
        if ok:
            assert providers.verify(h, SL_BODY.encode(), sl_cfg(), NOW).claims["timestamp"] == ts
        else:
            with pytest.raises(Rejection) as info:
                providers.precheck(h, sl_cfg(), NOW)
            assert info.value.reason == want


@pytest.mark.parametrize(
    ("pairs", "want"),
    [
        ((("X-Slack-Request-Timestamp", str(NOW)),), "missing_token"),
        ((("X-Slack-Signature", "v0=" + "a" * 64),), "missing_token"),
        (
            (("X-Slack-Signature", "v1=" + "a" * 64), ("X-Slack-Request-Timestamp", str(NOW))),
            "malformed_token",
        ),
        (
            (("X-Slack-Signature", "v0=" + "g" * 64), ("X-Slack-Request-Timestamp", str(NOW))),
            "malformed_token",
        ),
        (
            (("X-Slack-Signature", "a" * 64), ("X-Slack-Request-Timestamp", str(NOW))),
            "malformed_token",
        ),
        (
            (("X-Slack-Signature", "v0=" + "a" * 64), ("X-Slack-Request-Timestamp", "now")),
            "malformed_token",
        ),
        (
            (("X-Slack-Signature", "v0=" + "a" * 64), ("X-Slack-Request-Timestamp", "-5")),
            "malformed_token",
        ),
        (
            (
                ("X-Slack-Signature", "v0=" + "a" * 64),
                ("X-Slack-Signature", "v0=" + "b" * 64),
                ("X-Slack-Request-Timestamp", str(NOW)),
            ),
            "malformed_token",
        ),
    ],
)
def test_slack_missing_and_malformed_headers(pairs: tuple[tuple[str, str], ...], want: str) -> None:
    assert reason(lambda: providers.precheck(hdrs(*pairs), sl_cfg(), NOW)) == want


def test_slack_replay_key() -> None:
    first = check_key_shape(
        providers.verify(sl_headers(), SL_BODY.encode(), sl_cfg(), NOW), b"slack"
    )
    assert providers.verify(sl_headers(), SL_BODY.encode(), sl_cfg(), NOW).replay_key == first
    other = SL_BODY.replace("Ev08MFMKH6", "Ev08MFMKH7")
    h = sl_headers(body=other)
    assert providers.verify(h, other.encode(), sl_cfg(), NOW).replay_key != first
    later = providers.verify(sl_headers(ts=NOW + 1), SL_BODY.encode(), sl_cfg(), NOW)
    assert later.replay_key != first


def test_slack_url_verification_challenge() -> None:
    body = (
        '{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl",'
        '"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",'
        '"type":"url_verification"}'
    )
    h = sl_headers(body=body)
    # Slack signs the handshake too: verify first, then answer it.
    result = providers.verify(h, body.encode(), sl_cfg(answer_challenge=True), NOW)
    assert result.claims["event"] == "url_verification"
    assert providers.slack_challenge(body.encode()) == (
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    )
    assert providers.slack_challenge(SL_BODY.encode()) is None
    assert providers.slack_challenge(SL_FORM.encode()) is None
    assert providers.slack_challenge(b'["url_verification"]') is None
    assert providers.slack_challenge(b"\xff") is None
    for bad in ['"<script>"', '""', "12", '"a' + "b" * 300 + '"']:
        doc = '{"type":"url_verification","challenge":' + bad + "}"
        with pytest.raises(Rejection) as info:
            providers.slack_challenge(doc.encode())
        assert info.value.reason == "malformed_request"


# --- Shopify: signed here, the signer checked against Shopify's verify_webhook_req -----------

SH_SECRET = "hush-shopify-app-secret"
SH_OLD = "hush-shopify-old-secret"
SH_BODY = '{"id":820982911946154508,"email":"jon@example.com","note":"caf\u00e9 \\u00e9"}'


def sh_sign(body: str = SH_BODY, secret: str = SH_SECRET) -> str:
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def shopify_accepts(
    headers: dict[str, str], body: str, secret: str, old: str | None = None
) -> bool:
    result = verify_webhook_req(
        {"method": "POST", "headers": headers, "url": "https://app.example/webhooks", "body": body},
        {"client_id": "app", "client_secret": secret, "old_client_secret": old},
    )
    return bool(result.ok)


def sh_cfg(**kw: Any) -> ShopifyConfig:
    kw.setdefault("secrets", (SH_SECRET.encode(),))
    return ShopifyConfig(namespace=b"shop", **kw)


def sh_headers(
    mac: str, webhook_id: str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
) -> dict[str, str]:
    return {
        "X-Shopify-Hmac-Sha256": mac,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "example.myshopify.com",
    }


def sh_verify(
    h: dict[str, str], body: str = SH_BODY, cfg: ShopifyConfig | None = None
) -> ProviderResult:
    return providers.verify(hdrs(*h.items()), body.encode(), cfg or sh_cfg(), NOW)


def test_shopify_signature_is_shopifys_format_and_verifies() -> None:
    h = sh_headers(sh_sign())
    assert shopify_accepts(h, SH_BODY, SH_SECRET)
    result = sh_verify(h)
    assert result.claims == {
        "provider": "shopify",
        "unsigned": {
            "id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "event": "orders/create",
            "shop": "example.myshopify.com",
        },
    }
    assert result.add_headers == (("X-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),)
    assert set(result.strip_headers) == {"X-Shopify-Hmac-Sha256", "X-Webhook-Id"}
    assert result.replay_ttl_seconds == 86_400.0
    check_key_shape(result, b"shop")


def test_shopify_kept_signature_still_verifies_with_shopifys_library() -> None:
    h = sh_headers(sh_sign())
    result = sh_verify(h, cfg=sh_cfg(keep_signature=True))
    forwarded = {k: v for k, v in h.items() if k not in result.strip_headers}
    assert "X-Shopify-Hmac-Sha256" in forwarded
    assert shopify_accepts(forwarded, SH_BODY, SH_SECRET)


def test_shopify_tampered_wrong_secret_and_rotation() -> None:
    tampered = SH_BODY.replace("jon", "eve")
    assert not shopify_accepts(sh_headers(sh_sign()), tampered, SH_SECRET)
    assert reason(lambda: sh_verify(sh_headers(sh_sign()), tampered)) == "bad_signature"
    wrong = sh_headers(sh_sign(secret="someone else"))
    assert not shopify_accepts(wrong, SH_BODY, SH_SECRET)
    assert reason(lambda: sh_verify(wrong)) == "bad_signature"
    old = sh_headers(sh_sign(secret=SH_OLD))
    assert shopify_accepts(old, SH_BODY, SH_SECRET, SH_OLD)
    rotating = sh_cfg(secrets=(SH_SECRET.encode(), SH_OLD.encode()))
    assert sh_verify(old, cfg=rotating).claims["unsigned"]["id"]
    assert reason(lambda: sh_verify(old)) == "bad_signature"


@pytest.mark.parametrize(
    ("pairs", "want"),
    [
        ((("X-Shopify-Webhook-Id", "w1"),), "missing_token"),
        ((("X-Shopify-Hmac-Sha256", base64.b64encode(b"x" * 32).decode()),), "missing_token"),
        (
            (("X-Shopify-Hmac-Sha256", "not base64!"), ("X-Shopify-Webhook-Id", "w1")),
            "malformed_token",
        ),
        (
            (
                ("X-Shopify-Hmac-Sha256", base64.b64encode(b"x" * 20).decode()),
                ("X-Shopify-Webhook-Id", "w1"),
            ),
            "malformed_token",
        ),
        ((("X-Shopify-Hmac-Sha256", "a" * 64), ("X-Shopify-Webhook-Id", "w1")), "malformed_token"),
        (
            (
                ("X-Shopify-Hmac-Sha256", base64.b64encode(b"x" * 32).decode()),
                ("X-Shopify-Hmac-Sha256", base64.b64encode(b"y" * 32).decode()),
                ("X-Shopify-Webhook-Id", "w1"),
            ),
            "malformed_token",
        ),
        (
            (
                ("X-Shopify-Hmac-Sha256", base64.b64encode(b"x" * 32).decode()),
                ("X-Shopify-Webhook-Id", "w1"),
                ("X-Shopify-Shop-Domain", "evil.example/path"),
            ),
            "malformed_token",
        ),
    ],
)
def test_shopify_missing_and_malformed_headers(
    pairs: tuple[tuple[str, str], ...], want: str
) -> None:
    assert reason(lambda: providers.precheck(hdrs(*pairs), sh_cfg(), NOW)) == want


def test_shopify_replay_key_is_the_signed_body() -> None:
    mac = sh_sign()
    first = check_key_shape(sh_verify(sh_headers(mac, "w-1")), b"shop")
    # Shopify's retries keep the body: the same key, at any later time; the webhook id is
    # unsigned, so a new one does not make a new delivery.
    assert sh_verify(sh_headers(mac, "w-1")).replay_key == first
    assert sh_verify(sh_headers(mac, "w-2")).replay_key == first
    # A GitHub delivery of the same body lives under another tag: no collision across providers.
    gh = GitHubConfig(namespace=b"shop", secrets=(b"s",))
    body = SH_BODY.encode()
    gh_mac = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    gh_h = hdrs(("X-Hub-Signature-256", gh_mac), ("X-GitHub-Delivery", "w-1"))
    assert providers.verify(gh_h, body, gh, NOW).replay_key != first


# --- GitLab: a static token -----------------------------------------------------------------


def gl_cfg(**kw: Any) -> GitLabConfig:
    kw.setdefault("secrets", (b"glpat-current-token", b"glpat-previous-token"))
    return GitLabConfig(namespace=b"gitlab", **kw)


GL_TOKEN = "glpat-current-token"


def gl_headers(token: str = GL_TOKEN, *extra: tuple[str, str]) -> Any:
    return hdrs(("X-Gitlab-Token", token), ("X-Gitlab-Event", "Push Hook"), *extra)


def test_gitlab_token_matches_either_secret_and_is_stripped() -> None:
    for token in ("glpat-current-token", "glpat-previous-token"):
        uuid = ("X-Gitlab-Event-UUID", "4e3bcbb1-6a2a-4b08-8e1d-4a7e3b6c1a2f")
        result = providers.verify(gl_headers(token, uuid), b"{}", gl_cfg(), NOW)
        assert result.claims == {
            "provider": "gitlab",
            "event": "Push Hook",
            "id": "4e3bcbb1-6a2a-4b08-8e1d-4a7e3b6c1a2f",
        }
        # The token is a credential: the backend never sees it unless told to.
        assert set(result.strip_headers) == {"X-Gitlab-Token", "X-Webhook-Id"}
    kept = providers.verify(gl_headers(), b"{}", gl_cfg(keep_signature=True), NOW)
    assert kept.strip_headers == ("X-Webhook-Id",)


def test_gitlab_wrong_missing_empty_and_duplicated_token() -> None:
    assert reason(
        lambda: providers.verify(gl_headers("glpat-current-tokeN"), b"", gl_cfg(), NOW)
    ) == ("bad_signature")
    assert reason(lambda: providers.verify(gl_headers("glpat-current"), b"", gl_cfg(), NOW)) == (
        "bad_signature"
    )
    # A header aiohttp decoded from bytes that are not UTF-8 is refused, not an exception.
    assert reason(lambda: providers.verify(gl_headers("tok\udcff"), b"", gl_cfg(), NOW)) == (
        "bad_signature"
    )
    assert reason(lambda: providers.precheck(hdrs(), gl_cfg(), NOW)) == "missing_token"
    assert reason(lambda: providers.precheck(gl_headers(""), gl_cfg(), NOW)) == "missing_token"
    twice = gl_headers("glpat-current-token", ("X-Gitlab-Token", "glpat-previous-token"))
    assert reason(lambda: providers.precheck(twice, gl_cfg(), NOW)) == "malformed_token"


def test_gitlab_compares_against_every_secret_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    cfg = gl_cfg(secrets=(b"glpat-current-token", b"second", b"third"))
    providers.verify(gl_headers(), b"", cfg, NOW)
    # The first secret matched; the other two were still compared, in constant time.
    assert [b for _a, b in calls] == [b"glpat-current-token", b"second", b"third"]


def test_gitlab_dedupe_prefers_idempotency_key_and_is_optional() -> None:
    uuid = ("X-Gitlab-Event-UUID", "event-uuid-1")
    idem = ("Idempotency-Key", "idem-1")
    with_both = providers.verify(
        gl_headers("glpat-current-token", uuid, idem), b"{}", gl_cfg(), NOW
    )
    assert with_both.claims["id"] == "idem-1"
    assert with_both.add_headers == (("X-Webhook-Id", "idem-1"),)
    check_key_shape(with_both, b"gitlab")
    # Older GitLab: no id at all means nothing to de-duplicate on, and nothing added.
    bare = providers.verify(gl_headers(), b"{}", gl_cfg(), NOW)
    assert bare.replay_key is None
    assert bare.add_headers == ()
    assert "id" not in bare.claims
    bad = gl_headers("glpat-current-token", ("Idempotency-Key", "has space"))
    assert reason(lambda: providers.precheck(bad, gl_cfg(), NOW)) == "malformed_token"


def test_gitlab_replay_key_stable_on_retry_distinct_for_recursive_events() -> None:
    uuid = ("X-Gitlab-Event-UUID", "event-uuid-1")
    first = providers.verify(gl_headers("glpat-current-token", uuid), b'{"a":1}', gl_cfg(), NOW)
    retry = providers.verify(gl_headers("glpat-current-token", uuid), b'{"a":1}', gl_cfg(), NOW)
    assert first.replay_key == retry.replay_key
    # A webhook triggered by the first event's handling carries the same X-Gitlab-Event-UUID,
    # but it is another request: it must not be refused as a replay.
    chained = providers.verify(gl_headers("glpat-current-token", uuid), b'{"a":2}', gl_cfg(), NOW)
    assert chained.replay_key != first.replay_key
    other = providers.verify(
        gl_headers("glpat-current-token", ("X-Gitlab-Event-UUID", "event-uuid-2")),
        b'{"a":1}',
        gl_cfg(),
        NOW,
    )
    assert other.replay_key != first.replay_key


# --- the dispatch --------------------------------------------------------------------------


def test_id_header_is_configurable_and_can_be_turned_off() -> None:
    mac = sh_sign()
    named = sh_verify(sh_headers(mac), cfg=sh_cfg(id_header="X-Shopify-Delivery"))
    assert named.add_headers == (("X-Shopify-Delivery", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),)
    assert "X-Shopify-Delivery" in named.strip_headers
    off = sh_verify(sh_headers(mac), cfg=sh_cfg(id_header=""))
    assert off.add_headers == ()
    assert off.strip_headers == ("X-Shopify-Hmac-Sha256",)


def test_configs_are_frozen_and_need_a_namespace() -> None:
    cfg = gh_cfg()
    with pytest.raises(AttributeError):
        cfg.secrets = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        GitHubConfig(secrets=(b"s",))  # type: ignore[call-arg]
