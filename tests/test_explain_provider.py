"""``jwksgate explain`` on provider webhooks: headers with --header, the raw body with --body."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import stripe
from slack_sdk.signature import SignatureVerifier

from gateway.cli import main

NOW = 1_800_000_000
ST_OLD, ST_NEW = "whsec_the_previous_secret_0001", "whsec_the_current_secret_00002"
SL_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
GL_TOKEN = "glpat-current-token-0001"
BODY = b'{\n  "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",  "type": "charge.succeeded"}'
CONFIG = f"""
issuers:
  - name: payments
    type: stripe
    path_prefix: /stripe
    stripe: {{secrets: ["{ST_OLD}", "{ST_NEW}"]}}
  - name: chat
    type: slack
    path_prefix: /slack
    slack: {{secrets: ["{SL_SECRET}"], answer_challenge: true}}
  - name: ci
    type: gitlab
    path_prefix: /gitlab
    gitlab: {{secrets: ["{GL_TOKEN}"]}}
  - name: orders
    jwks_url: https://sender.test/jwks.json
    path_prefix: /orders
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "c.yaml").write_text(CONFIG)
    (tmp_path / "body").write_bytes(BODY)
    return str(tmp_path / "c.yaml"), str(tmp_path / "body")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["explain", *argv, "--now", str(NOW)])
    out = capsys.readouterr()
    return code, out.out + out.err


def stripe_header(secret: str = ST_NEW, t: int = NOW, body: bytes = BODY) -> str:
    value: str = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=t
    )
    return value


def test_an_accepted_stripe_event_step_by_step(
    files: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, body = files
    code, out = run(
        capsys,
        "--config",
        config,
        "--issuer",
        "payments",
        "--header",
        f"Stripe-Signature: {stripe_header(ST_OLD)}",
        "--body-file",
        body,
    )
    assert code == 0, out
    assert re.search(r"^issuer\.+ ok +'payments': type stripe, path /stripe$", out, re.M)
    assert "timestamp within 300s" in out
    assert hashlib.sha256(BODY).hexdigest() in out
    # The rotation's state shows: the sender still signs with the first (older) secret.
    assert "verifies with secret 1 of 2" in out
    assert "id='evt_1NG8Du2eZvKYlo2CUI79vXWy'" in out
    assert "kept 600s (a second delivery would be 409 replayed)" in out
    assert "added" in out and "X-Webhook-Id: evt_1NG8Du2eZvKYlo2CUI79vXWy" in out
    assert out.rstrip().endswith("ACCEPT: the gateway would forward this push")


def test_each_failure_is_the_gateways_reason(
    files: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config, body = files
    (tmp_path / "tampered").write_bytes(BODY + b" ")
    cases = [
        (["--header", f"Stripe-Signature: {stripe_header()}"], "tampered", "bad_signature"),
        (["--header", f"Stripe-Signature: {stripe_header(t=NOW - 301)}"], body, "token_too_old"),
        (["--header", "Stripe-Signature: t=1,v9=x"], body, "malformed_token"),
        ([], body, "missing_token"),
    ]
    for headers, body_file, reason in cases:
        path = str(tmp_path / body_file) if body_file == "tampered" else body_file
        code, out = run(
            capsys, "--config", config, "--path", "/stripe/hook", *headers, "--body", path
        )
        assert code == 1, out
        assert f"REJECT: 401 {reason}" in out


def test_without_a_body_the_signature_is_skipped_not_guessed(
    files: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = files
    header = f"Stripe-Signature: {stripe_header()}"
    code, out = run(capsys, "--config", config, "--issuer", "payments", "--header", header)
    assert code == 0
    assert re.search(r"^signature\.+ skip pass --body FILE", out, re.M)
    assert "(if the signature verifies: no body was given)" in out


def test_slack_challenge_and_gitlab_token_not_printed(
    files: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config, _ = files
    challenge = b'{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595","type":"url_verification"}'
    (tmp_path / "challenge").write_bytes(challenge)
    sig = SignatureVerifier(SL_SECRET).generate_signature(timestamp=str(NOW), body=challenge)
    code, out = run(
        capsys,
        "--config",
        config,
        "--issuer",
        "chat",
        "--header",
        f"X-Slack-Signature: {sig}",
        "--header",
        f"X-Slack-Request-Timestamp: {NOW}",
        "--body",
        str(tmp_path / "challenge"),
    )
    assert code == 0, out
    assert "answered by the gateway: '3eZbrw1aBm2rZgRNFdxV2595'" in out

    code, out = run(
        capsys,
        "--config",
        config,
        "--path",
        "/gitlab",
        "--header",
        f"X-Gitlab-Token: {GL_TOKEN}",
        "--header",
        "X-Gitlab-Event: Push Hook",
        "--body",
        str(tmp_path / "challenge"),
    )
    assert code == 0, out
    assert GL_TOKEN not in out
    assert f"({len(GL_TOKEN)} characters, not shown)" in out
    assert re.search(r"^replay key\.+ skip none", out, re.M)


def test_usage_errors(files: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = files
    code, out = run(capsys, "--config", config, "--issuer", "orders")
    assert code == 2
    assert "no such provider issuer" in out and "payments, chat, ci" in out
    code, out = run(capsys, "--config", config, "--issuer", "payments", "--header", "nocolon")
    assert code == 2
    assert "not a header line (Name: value): 'nocolon'" in out
    # A JWT path without a token: the token is what is explained there.
    code, out = run(capsys, "--config", config, "--path", "/orders")
    assert code == 2
    assert "a token is needed" in out
