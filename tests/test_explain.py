"""`jwksgate explain`: the operator's first tool when a sender says "you reject us"."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.config import Config, parse_config
from gateway.explain import Explanation, explain, fetch_jwks
from tests.httpkit import push
from tests.support import (
    JwksServer,
    World,
    body_hash,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    world,
)
from tests.test_interop_pypi import make_signer
from tests.tls_support import TestCA, serve_tls_app, server_context


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


# --- explain and the gateway give the same verdict ---------------------------------------------
# The same token, config and key set through a running gateway and through explain (keys from
# the file the JWKS server serves, or fetched by explain itself with --fetch).


async def both_verdicts(
    w: World, token: str, *, fetch: bool = False
) -> tuple[tuple[int, str | None], Explanation]:
    assert w.running is not None
    config = w.running.gateway.config
    async with aiohttp.ClientSession() as http:
        reply = await push(http, w, BODY, token=token)
    jwks = None if fetch else w.jwks.document()
    # explain runs its own event loop for --fetch: off this test's loop, in a thread.
    ex = await asyncio.to_thread(
        explain,
        token,
        config=config,
        path="/hook",
        body=BODY,
        jwks=jwks,
        fetch=fetch_jwks if fetch else None,
        now=w.clock(),
    )
    return reply.outcome, ex


def explained(ex: Explanation) -> tuple[int, str | None]:
    if ex.verdict is None:
        assert not ex.skipped_signature, ex.render()
        return 200, None
    return ex.verdict.status, ex.verdict.reason


BODY = b'{"event":"explain"}'
ALGS = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize("fetch", [False, True])
@pytest.mark.parametrize(
    ("key_alg", "token_alg", "expected"),
    [
        ("ES512", "ES512", (200, None)),
        ("EdDSA", "EdDSA", (200, None)),
        ("PS256", "PS256", (200, None)),  # an RSA key published without alg
        ("EdDSA", "ES512", (401, "disallowed_algorithm")),
        ("ES512", "EdDSA", (401, "disallowed_algorithm")),
        ("ES512", "ES256", (401, "disallowed_algorithm")),
        ("ES512", "forged", (401, "bad_signature")),
        ("ES512", "unknown", (401, "unknown_kid")),
    ],
)
async def test_explain_and_the_gateway_agree(
    key_alg: str, token_alg: str, expected: tuple[int, str | None], fetch: bool
) -> None:
    published = make_signer("pyjwt", key_alg, kid="k1")
    if token_alg == "forged":
        signer = make_signer("pyjwt", key_alg, kid="k1")  # same kid and alg, another key
    elif token_alg == "unknown":
        signer = make_signer("pyjwt", key_alg, kid="k2")
    else:
        signer = published if token_alg == key_alg else make_signer("pyjwt", token_alg, "k1")

    def configure(w: World) -> Config:
        w.jwks.raw = published.jwks()
        return gateway_config(w.jwks_url, w.backend_url, issuer={"algorithms": ALGS})

    async with world(configure) as w:
        token = signer.sign(claims_for(BODY, w.clock()))
        gateway, ex = await both_verdicts(w, token, fetch=fetch)
        assert gateway == expected
        assert explained(ex) == expected, ex.render()


async def test_a_redirecting_jwks_url_is_refused_by_both() -> None:
    async with world() as origin:

        async def redirect(_: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": origin.jwks_url})

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", redirect)
        async with serve_app(app) as base:

            def configure(w: World) -> Config:
                return gateway_config(base + "/.well-known/jwks.json", w.backend_url)

            async with world(configure, wait_ready=False) as w:
                token = sign(origin.key, claims_for(BODY, w.clock()))
                gateway, ex = await both_verdicts(w, token, fetch=True)
                assert gateway == (503, "jwks_unavailable")
                assert explained(ex) == (503, "jwks_unavailable"), ex.render()
                assert "302" in ex.render()
                # What the redirect points at is a good key set: the gateway's own origin
                # fetched it once, nobody else did.
                assert origin.jwks.fetches == 1


@asynccontextmanager
async def https_jwks(tmp_path: Path, trust: bool) -> AsyncIterator[World]:
    ca = TestCA()
    cert_file, key_file = ca.server_cert().write(tmp_path, "server")
    ca_file = ca.write(tmp_path)
    jwks = JwksServer()
    jwks.add_key(kty="EC", crv="P-256")
    async with serve_tls_app(jwks.app(), server_context(cert_file, key_file)) as base:

        def configure(w: World) -> Config:
            tls = {"ca_file": ca_file} if trust else {}
            return gateway_config(
                base + "/.well-known/jwks.json", w.backend_url, issuer={"jwks": tls}
            )

        async with world(configure, wait_ready=trust, jwks=jwks) as w:
            yield w


@pytest.mark.parametrize("trust", [True, False])
async def test_an_https_jwks_with_ca_file_works_for_both_and_fails_for_both_without(
    tmp_path: Path, trust: bool
) -> None:
    async with https_jwks(tmp_path, trust) as w:
        token = sign(w.jwks.keys[-1], claims_for(BODY, w.clock()))
        gateway, ex = await both_verdicts(w, token, fetch=True)
        expected = (200, None) if trust else (503, "jwks_unavailable")
        assert gateway == expected
        assert explained(ex) == expected, ex.render()


# --- explain without --config ----------------------------------------------------------------
def test_without_a_config_the_token_is_checked_on_its_own() -> None:
    signer = make_signer("joserfc", "ES512", kid=None)
    now = time.time()
    claims = claims_for(b"{}", now, issuer="https://any-sender.example", aud="https://me")
    token = signer.sign(claims)
    ex = explain(token, jwks=signer.jwks(), now=now)
    assert ex.verdict is None, ex.render()
    steps = {s: status for s, status, _ in ex.steps}
    assert steps["config"] == "skip"
    assert steps["signature"] == "ok"
    # Without keys: decoded and checked, the signature said to be skipped.
    ex = explain(token, now=now)
    assert ex.verdict is None and ex.skipped_signature
    # What the token itself gets wrong is still found.
    assert explained(explain(token, now=now + 4000)) == (401, "expired")
    other = make_signer("joserfc", "ES512", kid=None)
    assert explained(explain(token, jwks=other.jwks(), now=now)) == (401, "bad_signature")
    ex = explain(signer.sign({**claims, "iss": 5}), now=now)
    assert explained(ex) == (401, "bad_issuer")


def test_cli_explain_without_config(tmp_path: Path) -> None:
    signer = make_signer("pyjwt", "EdDSA")
    (tmp_path / "jwks.json").write_bytes(signer.jwks())
    token = signer.sign(claims_for(b"{}", time.time(), issuer="https://unconfigured.example"))
    args = [
        sys.executable,
        "-m",
        "gateway",
        "explain",
        token,
        "--jwks",
        str(tmp_path / "jwks.json"),
    ]
    ok = subprocess.run(args, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "unknown_issuer" not in ok.stdout
    assert "ACCEPT" in ok.stdout
