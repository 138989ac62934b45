"""`jwksgate explain`: the operator's first tool when a sender says "you reject us"."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import parse_config
from gateway.explain import explain
from tests.support import JwksServer, body_hash, claims_for, sign


def setup() -> tuple[JwksServer, bytes]:
    jwks = JwksServer()
    jwks.add_key()
    return jwks, jwks.document()


CONFIG = parse_config(
    {
        "issuers": [
            {
                "name": "orders",
                "issuer": "https://sender.test",
                "jwks_url": "https://sender.test/jwks",
                "body_hash": {"claim": "request_body_sha256", "over": "raw_or_json"},
            }
        ]
    }
)


def test_accepting_token_is_explained_step_by_step() -> None:
    jwks, doc = setup()
    body = b'{"a": 1}'
    now = time.time()
    token = sign(jwks.keys[0], claims_for(body, now))
    ex = explain(token, config=CONFIG, body=body, jwks=doc, now=now)
    assert ex.verdict is None and not ex.skipped_signature
    steps = {s: status for s, status, _ in ex.steps}
    for step in ("token shape", "routing", "header checks", "signature", "claims checks"):
        assert steps[step] == "ok", ex.render()
    assert steps["body hash"] == "ok"
    assert "ACCEPT" in ex.render()


def test_each_failure_is_the_gateways_reason() -> None:
    jwks, doc = setup()
    body = b"{}"
    now = time.time()
    key = jwks.keys[0]
    cases = {
        "expired": sign(key, claims_for(body, now - 4000, iat=int(now) - 4000)),
        "bad_signature": sign(JwksServer().add_key(kid=key.kid), claims_for(body, now)),
        "unknown_issuer": sign(key, claims_for(body, now, issuer="https://evil.test")),
        "disallowed_algorithm": sign(key, claims_for(body, now), alg="PS256"),
        "malformed_token": "abc.def",
    }
    for reason, token in cases.items():
        ex = explain(token, config=CONFIG, body=body, jwks=doc, now=now)
        assert ex.verdict is not None and ex.verdict.reason == reason, ex.render()
        assert f"REJECT: 401 {reason}" in ex.render()
    tampered = explain(
        sign(key, claims_for(body, now)), config=CONFIG, body=b'{"x":2}', jwks=doc, now=now
    )
    assert tampered.verdict is not None and tampered.verdict.reason == "body_hash_mismatch"
    assert body_hash(b'{"x":2}') in tampered.render()  # the operator sees both hashes


def test_without_keys_the_signature_is_skipped_not_guessed() -> None:
    jwks, _ = setup()
    now = time.time()
    ex = explain(sign(jwks.keys[0], claims_for(b"{}", now)), config=CONFIG, now=now)
    assert ex.verdict is None and ex.skipped_signature
    assert "if the signature verifies" in ex.render()


def test_cli_explain_exit_codes(tmp_path: Path) -> None:
    jwks, doc = setup()
    (tmp_path / "jwks.json").write_bytes(doc)
    (tmp_path / "body.json").write_bytes(b"{}")
    (tmp_path / "c.yaml").write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "name": "orders",
                        "issuer": "https://sender.test",
                        "jwks_url": "https://sender.test/jwks",
                        "body_hash": {"claim": "request_body_sha256"},
                    }
                ]
            }
        )
    )
    token = sign(jwks.keys[0], claims_for(b"{}", time.time()))
    args = [
        sys.executable, "-m", "gateway", "explain", "-", "--config", str(tmp_path / "c.yaml"),
        "--jwks", str(tmp_path / "jwks.json"), "--body", str(tmp_path / "body.json"),
    ]  # fmt: skip
    ok = subprocess.run(args, input=f"Bearer {token}\n", capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ACCEPT" in ok.stdout
    (tmp_path / "body.json").write_bytes(b'{"changed":true}')
    bad = subprocess.run(args, input=token, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "REJECT: 401 body_hash_mismatch" in bad.stdout
