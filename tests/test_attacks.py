"""Token attacks end to end (T numbers name the attacks): real JWKS server, backend and gateway.

Each 401 reason code of gateway/errors.py has a test that asserts, through real sockets, the status,
the JSON ``error``, the ``WWW-Authenticate`` header, that the backend received nothing, and that the
rejection was counted on the admin ``/metrics`` under its issuer and reason. The attacks come from
RFC 8725, OWASP, PortSwigger and the jwt_tool playbook; the last tests fuzz tokens and check that
no hostile input turns into a 5xx (a 5xx makes a sender retry the same poison push for days).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import string
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Config, parse_config
from gateway.errors import REASONS
from tests.support import (
    JwksServer,
    SigningKey,
    World,
    b64url,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    wait_until,
    world,
)
from tests.test_delivery import GatedBackend

BODY = b'{"event":"order.paid","id":42}'
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
UNAUTHORIZED = frozenset(r for r, status in REASONS.items() if status.status == 401)


# --- helpers -----------------------------------------------------------------------------------


async def requests_total(
    http: aiohttp.ClientSession, w: World, *, issuer: str, reason: str, outcome: str = "rejected"
) -> float:
    """``jwksgate_requests_total{issuer, outcome, reason}`` from the admin port (0 if absent)."""
    async with http.get(w.admin_url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    wanted = {"issuer": issuer, "outcome": outcome, "reason": reason}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jwksgate_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


async def internal_errors(http: aiohttp.ClientSession, w: World) -> float:
    async with http.get(w.admin_url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jwksgate_requests_total" and sample.labels.get("outcome") == "error":
                total += sample.value
    return total


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def expect_rejected(
    http: aiohttp.ClientSession,
    w: World,
    reason: str,
    *,
    issuer: str,
    headers: dict[str, str] | CIMultiDict[str] | None = None,
    token: str | None = None,
    body: bytes = BODY,
    path: str = "/hook",
) -> None:
    """Send one push; it must be refused with ``reason``, counted, and never reach the backend."""
    status = REASONS[reason].status
    if token is not None:
        headers = bearer(token)
    received = len(w.backend.received)
    before = await requests_total(http, w, issuer=issuer, reason=reason)
    async with http.post(w.url + path, data=body, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == status, text
        assert resp.content_type == "application/json"
        payload = json.loads(text)
        assert payload["error"] == reason, payload
        assert isinstance(payload["detail"], str) and payload["detail"]
        challenges = resp.headers.getall("WWW-Authenticate", [])
        if status == 401:
            assert challenges == [f'Bearer error="invalid_token", error_description="{reason}"']
        else:
            assert challenges == []
    assert len(w.backend.received) == received, "the backend received a refused push"
    after = await requests_total(http, w, issuer=issuer, reason=reason)
    assert after == before + 1


async def expect_forwarded(
    http: aiohttp.ClientSession, w: World, token: str, body: bytes = BODY
) -> None:
    received = len(w.backend.received)
    async with http.post(w.url + "/hook", data=body, headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
    assert len(w.backend.received) == received + 1


def segment(value: dict[str, Any] | bytes) -> str:
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


def rs256(key: SigningKey, header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes) -> str:
    """An RS256 signature over an arbitrary header: for headers jwcrypto refuses to write."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    private = key.key.get_op_key("sign")
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def fresh_claims(w: World, body: bytes = BODY, **extra: Any) -> dict[str, Any]:
    return claims_for(body, w.clock(), **extra)


def std_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def malleate(token: str) -> str:
    """The other valid ES256 signature of the same message: (r, n - s)."""
    h, p, s = token.split(".")
    raw = decode(s)
    r, sv = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{h}.{p}.{b64url(r + (P256_ORDER - sv).to_bytes(32, 'big'))}"


def configured(**issuer: Any) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        return gateway_config(w.jwks_url, w.backend_url, issuer=issuer)

    return configure


@asynccontextmanager
async def attacker_jwks() -> AsyncIterator[tuple[JwksServer, str, SigningKey]]:
    """A second, real JWKS server holding the attacker's key; it counts what it is asked."""
    attacker = JwksServer()
    key = attacker.add_key(kid="attacker")
    async with serve_app(attacker.app()) as base:
        yield attacker, base + "/.well-known/jwks.json", key


# --- one test per 401 reason code --------------------------------------------------------------


async def test_missing_token(w: World, http: aiohttp.ClientSession) -> None:
    await expect_rejected(http, w, "missing_token", issuer="unknown", headers={})
    token = w.token(BODY)
    for value in (f"Basic {token}", token, f"Token {token}"):
        await expect_rejected(
            http, w, "missing_token", issuer="unknown", headers={"Authorization": value}
        )
    # A token in the query string is not a credential (RFC 6750 2.3: URLs leak).
    await expect_rejected(
        http,
        w,
        "missing_token",
        issuer="unknown",
        headers={},
        path=f"/hook?access_token={token}",
    )


def _standard_base64(token: str) -> str:
    return ".".join(std_b64(decode(s)) for s in token.split("."))


def _padded(token: str) -> str:
    return ".".join(base64.urlsafe_b64encode(decode(s)).decode() for s in token.split("."))


def _non_canonical(token: str) -> str:
    h, p, s = token.split(".")
    raw = decode(s)
    for c in string.ascii_letters + string.digits + "-_":
        candidate = s[:-1] + c
        if candidate != s and decode(candidate) == raw:
            return f"{h}.{p}.{candidate}"
    raise AssertionError("the signature segment has no spare bits")


def _json_serialization(token: str) -> str:
    h, p, s = token.split(".")
    return json.dumps({"payload": p, "protected": h, "signature": s})


@pytest.mark.parametrize(
    "mangle",
    [
        _standard_base64,
        _padded,
        _non_canonical,
        _json_serialization,
        lambda t: t.rsplit(".", 1)[0],  # two segments
        lambda t: t + ".c2ln",  # four segments
        lambda t: t + "." + t,  # two tokens glued
        lambda t: "..",
    ],
    ids=[
        "standard-base64",
        "padded",
        "non-canonical",
        "jws-json",
        "2-seg",
        "4-seg",
        "glued",
        "dots",
    ],
)
async def test_malformed_token(
    mangle: Callable[[str], str], w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    # RS256 signatures are 256 bytes: the last base64url character has spare bits, and
    # the standard alphabet or padding changes the text of some segment.
    bad = mangle(token)
    assert bad != token
    await expect_rejected(http, w, "malformed_token", issuer="unknown", token=bad)
    # The well-formed original still goes through: only the encoding was refused.
    await expect_forwarded(http, w, token)


async def test_oversized_token_is_the_gateways_own_malformed_token(
    w: World, http: aiohttp.ClientSession
) -> None:
    # The listener admits header fields a little longer than the token cap (8192), so the
    # gateway itself refuses the token: JSON answer, WWW-Authenticate and a counted metric.
    token = w.token(BODY)
    token += "A" * (8193 - len(token))  # one character over the cap
    await expect_rejected(http, w, "malformed_token", issuer="unknown", token=token)
    assert w.backend.received == []


async def test_header_beyond_the_listener_limit_is_a_plain_400(
    w: World, http: aiohttp.ClientSession
) -> None:
    token = "A" * 9000
    async with http.post(w.url + "/hook", data=BODY, headers=bearer(token)) as resp:
        assert resp.status == 400
    assert w.backend.received == []


async def test_unknown_issuer(w: World, http: aiohttp.ClientSession) -> None:
    for iss in ("https://evil.test", "https://sender.test/", "HTTPS://SENDER.TEST"):
        token = w.token(BODY, iss=iss)
        await expect_rejected(http, w, "unknown_issuer", issuer="unknown", token=token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_disallowed_algorithm_alg_none(
    alg: str, w: World, http: aiohttp.ClientSession
) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": w.key.kid}
    token = f"{segment(header)}.{segment(fresh_claims(w))}."  # empty signature
    await expect_rejected(http, w, "disallowed_algorithm", issuer="sender", token=token)
    # Also with the real signature left on (a "stripped alg" rather than stripped signature).
    signed = w.token(BODY)
    _, p, s = signed.split(".")
    await expect_rejected(
        http, w, "disallowed_algorithm", issuer="sender", token=f"{segment(header)}.{p}.{s}"
    )


@pytest.mark.parametrize("secret_of", ["pem", "jwk", "jwks", "n"])
async def test_disallowed_algorithm_hs256_keyed_with_the_public_key(
    secret_of: str, w: World, http: aiohttp.ClientSession
) -> None:
    """RS -> HS confusion (T2): the public key, as the attacker can fetch it, as the MAC secret."""
    async with http.get(w.jwks_url) as resp:
        jwks_bytes = await resp.read()
    secret = {
        "pem": w.key.key.export_to_pem(),
        "jwk": json.dumps(w.key.published).encode(),
        "jwks": jwks_bytes,
        "n": decode(w.key.published["n"]),
    }[secret_of]
    header = {"alg": "HS256", "typ": "JWT", "kid": w.key.kid}
    token = hs256(secret, header, fresh_claims(w))
    await expect_rejected(http, w, "disallowed_algorithm", issuer="sender", token=token)


async def test_disallowed_algorithm_rs256_key_used_for_ps256() -> None:
    """Right key, wrong alg (T3): PS256 is allowed for the issuer, but this key declares RS256.
    (A key without alg may verify every allowed RSA alg: tests/test_interop_*.py.)"""

    def configure(w: World) -> Config:
        w.key.published["alg"] = "RS256"
        return gateway_config(w.jwks_url, w.backend_url, issuer={"algorithms": ["RS256", "PS256"]})

    async with world(configure) as w, aiohttp.ClientSession() as http:
        swapped = sign(w.key, fresh_claims(w), alg="PS256")
        assert json.loads(decode(swapped.split(".")[0]))["alg"] == "PS256"
        await expect_rejected(http, w, "disallowed_algorithm", issuer="sender", token=swapped)
        await expect_forwarded(http, w, sign(w.key, fresh_claims(w), alg="RS256"))


@pytest.mark.parametrize(
    "header",
    [{"typ": "dpop+jwt"}, {"typ": "at+jwt"}, {"typ": "secevent+jwt"}, {"cty": "JWT"}],
)
async def test_disallowed_type(
    header: dict[str, Any], w: World, http: aiohttp.ClientSession
) -> None:
    token = sign(w.key, fresh_claims(w), header=header)
    await expect_rejected(http, w, "disallowed_type", issuer="sender", token=token)


async def test_disallowed_type_null_typ(w: World, http: aiohttp.ClientSession) -> None:
    header = {"alg": "RS256", "typ": None, "kid": w.key.kid}
    await expect_rejected(
        http, w, "disallowed_type", issuer="sender", token=rs256(w.key, header, fresh_claims(w))
    )


async def test_missing_kid(w: World, http: aiohttp.ClientSession) -> None:
    token = sign(w.key, fresh_claims(w), omit_kid=True)
    await expect_rejected(http, w, "missing_kid", issuer="sender", token=token)


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("../../dev/null", "unknown_kid"),
        ("/dev/null", "unknown_kid"),
        ("/invalid_path", "unknown_kid"),
        ("x' UNION SELECT '1';--", "unknown_kid"),
        ("| sleep 10", "unknown_kid"),
        ("$(sleep 10)", "unknown_kid"),
        ("a\r\nX-Injected: 1", "unknown_kid"),
        ("kid\u0000", "unknown_kid"),
        ("\ud800\u202e", "unknown_kid"),
        ("k" * 256, "unknown_kid"),
        ("k" * 4096, "malformed_token"),
        ("", "malformed_token"),
        ({"$ne": None}, "malformed_token"),
        (["a", "b"], "malformed_token"),
        (7, "malformed_token"),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_unknown_kid_and_kid_injection(
    kid: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jwksgate.access")
    async with world() as w, aiohttp.ClientSession() as http:
        fetches = w.jwks.fetches
        token = sign(w.key, fresh_claims(w), header={"kid": kid})
        await expect_rejected(http, w, reason, issuer="sender", token=token)
        # Within the refetch interval after a good fetch, an unknown kid costs no fetch at all.
        assert w.jwks.fetches == fetches
    # The access log line: one line, the kid escaped and clipped, never the token.
    [line] = [r.getMessage() for r in caplog.records if r.name == "jwksgate.access"]
    assert "\r" not in line and "\n" not in line and "\x00" not in line
    assert line.isascii()
    assert token.split(".")[2] not in line and token.split(".")[1] not in line
    entry = json.loads(line)
    assert entry["jwksgate.reason"] == reason
    if reason == "unknown_kid":
        assert entry["jwksgate.kid"] == kid[:64]


async def test_unknown_kid_refetches_once_per_interval(
    w: World, http: aiohttp.ClientSession
) -> None:
    fetches = w.jwks.fetches
    w.clock.advance(11)  # past min_refresh_interval_seconds (10)
    for i in range(5):
        token = sign(w.key, fresh_claims(w), header={"kid": f"rotated-{i}"})
        await expect_rejected(http, w, "unknown_kid", issuer="sender", token=token)
    assert w.jwks.fetches == fetches + 1


async def test_bad_signature(w: World, http: aiohttp.ClientSession) -> None:
    token = w.token(BODY)
    h, p, s = token.split(".")
    raw = bytearray(decode(s))
    raw[100] ^= 0x01
    flipped = f"{h}.{p}.{b64url(bytes(raw))}"
    await expect_rejected(http, w, "bad_signature", issuer="sender", token=flipped)
    await expect_rejected(http, w, "bad_signature", issuer="sender", token=f"{h}.{p}.")
    tampered = fresh_claims(w, sub="admin")
    await expect_rejected(
        http, w, "bad_signature", issuer="sender", token=f"{h}.{segment(tampered)}.{s}"
    )
    other = w.token(BODY)
    spliced = f"{h}.{p}.{other.split('.')[2]}"
    await expect_rejected(http, w, "bad_signature", issuer="sender", token=spliced)
    # A key nobody published, under the published kid.
    forger = JwksServer().add_key(kid=w.key.kid)
    await expect_rejected(
        http, w, "bad_signature", issuer="sender", token=w.token(BODY, key=forger)
    )
    await expect_forwarded(http, w, token)


async def test_expired(w: World, http: aiohttp.ClientSession) -> None:
    token = w.token(BODY)  # exp = now + 300, skew 30
    w.clock.advance(331)
    await expect_rejected(http, w, "expired", issuer="sender", token=token)


async def test_expired_boundary_is_exp_plus_skew(w: World, http: aiohttp.ClientSession) -> None:
    now = int(w.clock())
    w.clock.now = now
    token = sign(w.key, fresh_claims(w, iat=now - 200, exp=now + 10))
    w.clock.advance(40)  # now == exp + skew: still valid
    await expect_forwarded(http, w, token)
    late = sign(w.key, fresh_claims(w, iat=now - 200, exp=now + 10))
    w.clock.advance(0.5)
    await expect_rejected(http, w, "expired", issuer="sender", token=late)


async def test_not_yet_valid(w: World, http: aiohttp.ClientSession) -> None:
    now = int(w.clock())
    nbf = sign(w.key, fresh_claims(w, nbf=now + 60))
    await expect_rejected(http, w, "not_yet_valid", issuer="sender", token=nbf)
    future = sign(w.key, fresh_claims(w, iat=now + 60, exp=now + 360))
    await expect_rejected(http, w, "not_yet_valid", issuer="sender", token=future)
    w.clock.advance(60)  # the same token becomes valid with time
    await expect_forwarded(http, w, future)


async def test_token_too_old(w: World, http: aiohttp.ClientSession) -> None:
    now = int(w.clock())
    token = sign(w.key, fresh_claims(w, iat=now - 331, exp=now + 60))
    await expect_rejected(http, w, "token_too_old", issuer="sender", token=token)


async def test_lifetime_too_long(w: World, http: aiohttp.ClientSession) -> None:
    now = int(w.clock())
    token = sign(w.key, fresh_claims(w, iat=now, exp=now + 3601))
    await expect_rejected(http, w, "lifetime_too_long", issuer="sender", token=token)


def _two_issuers(billing_jwks_url: str) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        common = {"algorithms": ["RS256"], "body_hash": {"claim": "request_body_sha256"}}
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url, "timeout_seconds": 5},
                "issuers": [
                    {
                        "name": "orders",
                        "issuer": "https://orders.test",
                        "jwks_url": w.jwks_url,
                        "path_prefix": "/orders",
                        **common,
                    },
                    {
                        "name": "billing",
                        "issuer": "https://billing.test",
                        "jwks_url": billing_jwks_url,
                        "path_prefix": "/billing",
                        **common,
                    },
                ],
            }
        )

    return configure


async def test_bad_issuer_token_of_issuer_a_on_issuer_b_path() -> None:
    billing = JwksServer()
    billing_key = billing.add_key(kid="billing-1")
    async with serve_app(billing.app()) as billing_base:
        configure = _two_issuers(billing_base + "/.well-known/jwks.json")
        async with world(configure) as w, aiohttp.ClientSession() as http:
            orders_token = w.token(BODY, iss="https://orders.test")
            await expect_rejected(
                http, w, "bad_issuer", issuer="unknown", token=orders_token, path="/billing/x"
            )
            # A billing token signed with the orders key: routed to billing, whose key set has
            # no such kid. It never verifies against the keys of an issuer it was not routed to.
            cross = sign(w.key, fresh_claims(w, iss="https://billing.test"))
            await expect_rejected(
                http, w, "unknown_kid", issuer="billing", token=cross, path="/billing/x"
            )
            forged = sign(
                w.key, fresh_claims(w, iss="https://billing.test"), header={"kid": "billing-1"}
            )
            await expect_rejected(
                http, w, "bad_signature", issuer="billing", token=forged, path="/billing/x"
            )
            # Each token on its own issuer's path is forwarded.
            async with http.post(w.url + "/orders/x", data=BODY, headers=bearer(orders_token)) as r:
                assert r.status == 200
            good = sign(billing_key, fresh_claims(w, iss="https://billing.test"))
            async with http.post(w.url + "/billing/x", data=BODY, headers=bearer(good)) as r:
                assert r.status == 200
            assert [r.header("X-Jwt-Issuer") for r in w.backend.received] == ["orders", "billing"]


@pytest.mark.parametrize("aud", ["https://other.test", ["https://other.test"], [], ...])
async def test_bad_audience(aud: Any) -> None:
    async with (
        world(configured(audiences=["https://hooks.test"])) as w,
        aiohttp.ClientSession() as http,
    ):
        claims = fresh_claims(w) if aud is ... else fresh_claims(w, aud=aud)
        await expect_rejected(http, w, "bad_audience", issuer="sender", token=sign(w.key, claims))
        await expect_forwarded(http, w, w.token(BODY, aud=["https://x.test", "https://hooks.test"]))


@pytest.mark.parametrize("claim", ["jti", "iat", "request_body_sha256"])
async def test_missing_claim(claim: str, w: World, http: aiohttp.ClientSession) -> None:
    claims = fresh_claims(w)
    del claims[claim]
    token = sign(w.key, claims)
    await expect_rejected(http, w, "missing_claim", issuer="sender", token=token)


def _raw_claims(w: World, **raw: str) -> bytes:
    """Claims JSON with some values written literally (numbers no float can hold)."""
    claims = fresh_claims(w)
    for name in raw:
        claims[name] = f"@@{name}@@"
    text = json.dumps(claims)
    for name, literal in raw.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": "j" * 257},
        {"jti": 42},
        {"jti": None},
        {"exp": "2099-01-01"},
        {"iat": True},
        {"iat": None},
        {"nbf": "0"},
        {"sub": ["root"]},
        {"request_body_sha256": 0},
        {"request_body_sha256": "abc"},
    ],
    ids=lambda c: repr(c)[:30],
)
async def test_invalid_claim(claims: dict[str, Any], w: World, http: aiohttp.ClientSession) -> None:
    payload = json.dumps({**fresh_claims(w), **claims}).encode()
    await expect_rejected(http, w, "invalid_claim", issuer="sender", token=sign(w.key, payload))


@pytest.mark.parametrize(
    "literal",
    ["1" + "0" * 400, "-" + "1" + "0" * 400, "1e400", "-1e400"],
    ids=["huge-int", "huge-negative-int", "1e400", "-1e400"],
)
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_invalid_claim_numbers_no_float_can_hold(
    claim: str, literal: str, w: World, http: aiohttp.ClientSession
) -> None:
    token = sign(w.key, _raw_claims(w, **{claim: literal}))
    await expect_rejected(http, w, "invalid_claim", issuer="sender", token=token)


async def test_body_hash_mismatch(w: World, http: aiohttp.ClientSession) -> None:
    token = w.token(BODY)
    await expect_rejected(
        http, w, "body_hash_mismatch", issuer="sender", token=token, body=BODY + b" "
    )
    await expect_rejected(
        http, w, "body_hash_mismatch", issuer="sender", token=token, body=b'{"id":43}'
    )
    await expect_forwarded(http, w, token)


async def test_body_hash_mismatch_for_bodies_nested_to_the_recursion_limit() -> None:
    """json mode re-serialises the body: a body that parses but cannot be re-serialised (nested
    just below the recursion limit, wherever the handler's stack puts it) is still a 401."""
    configure = configured(body_hash={"claim": "request_body_sha256", "over": "json"})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        statuses: dict[int, int] = {}
        for depth in range(600, 1000):
            body = b"[" * depth + b"]" * depth
            token = sign(
                w.key, fresh_claims(w, request_body_sha256=hashlib.sha256(b"x").hexdigest())
            )
            async with http.post(w.url + "/hook", data=body, headers=bearer(token)) as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                assert resp.status == 401, (depth, resp.status, await resp.text())
                assert (await resp.json())["error"] == "body_hash_mismatch"
        assert w.backend.received == []
        assert await internal_errors(http, w) == 0


def test_every_401_reason_has_an_end_to_end_test() -> None:
    tested = {
        "missing_token", "malformed_token", "unknown_issuer", "disallowed_algorithm",
        "disallowed_type", "missing_kid", "unknown_kid", "bad_signature", "expired",
        "not_yet_valid", "token_too_old", "lifetime_too_long", "bad_issuer", "bad_audience",
        "missing_claim", "invalid_claim", "body_hash_mismatch",
    }  # fmt: skip
    assert tested == UNAUTHORIZED


# --- key-source attacks: jku, x5u, embedded jwk (T5, T6, T7) -----------------------------------


@pytest.mark.parametrize("param", ["jku", "x5u", "jwk", "x5c"])
async def test_keys_named_in_the_token_are_never_used_nor_fetched(param: str) -> None:
    async with attacker_jwks() as (attacker, attacker_url, evil), world() as w:
        async with aiohttp.ClientSession() as http:
            values: dict[str, Any] = {
                "jku": attacker_url,
                "x5u": attacker_url,
                "jwk": evil.published,
                "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
            }
            # The attacker's own kid: not in the issuer's set.
            token = sign(evil, fresh_claims(w), header={param: values[param]})
            await expect_rejected(http, w, "unknown_kid", issuer="sender", token=token)
            # The issuer's kid with the attacker's signature.
            token = sign(evil, fresh_claims(w), header={param: values[param], "kid": w.key.kid})
            await expect_rejected(http, w, "bad_signature", issuer="sender", token=token)
            # Even when an unknown kid is allowed to refetch, only the configured URL is asked.
            fetches = w.jwks.fetches
            w.clock.advance(11)
            token = sign(evil, fresh_claims(w), header={param: values[param]})
            await expect_rejected(http, w, "unknown_kid", issuer="sender", token=token)
            assert w.jwks.fetches == fetches + 1
        assert attacker.fetches == 0, "the gateway fetched a key URL named in a token"


# --- signature malleability (T20) --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["token", "jti"])
async def test_ecdsa_high_s_malleated_signature_is_still_a_replay(mode: str) -> None:
    ec_key: list[SigningKey] = []

    def configure(w: World) -> Config:
        ec_key.append(w.jwks.add_key("EC", kid="ec-1"))
        issuer: dict[str, Any] = {"algorithms": ["ES256"], "replay_key": mode}
        if mode == "token":
            issuer["require_claims"] = ["iat"]
        return gateway_config(w.jwks_url, w.backend_url, issuer=issuer)

    async with world(configure) as w, aiohttp.ClientSession() as http:
        jti = None if mode == "token" else "delivery-1"
        token = sign(ec_key[0], fresh_claims(w, jti=jti))
        twin = malleate(token)
        assert twin != token
        await expect_forwarded(http, w, token)
        # The twin's signature is valid (or this would be 401 bad_signature), and its replay key
        # is the original's: 409, and the backend got the push once.
        await expect_rejected(http, w, "replayed", issuer="sender", token=twin)
        await expect_rejected(http, w, "replayed", issuer="sender", token=token)
        assert len(w.backend.received) == 1


async def test_ecdsa_out_of_range_signatures_are_bad_signatures() -> None:
    ec_key: list[SigningKey] = []

    def configure(w: World) -> Config:
        ec_key.append(w.jwks.add_key("EC", kid="ec-1"))
        return gateway_config(w.jwks_url, w.backend_url, issuer={"algorithms": ["ES256"]})

    async with world(configure) as w, aiohttp.ClientSession() as http:
        h, p, _ = sign(ec_key[0], fresh_claims(w)).split(".")
        zero = b"\x00" * 64
        order = P256_ORDER.to_bytes(32, "big") * 2
        for signature in (zero, order):
            token = f"{h}.{p}.{b64url(signature)}"
            await expect_rejected(http, w, "bad_signature", issuer="sender", token=token)


# --- request shape -----------------------------------------------------------------------------


async def test_two_authorization_headers_are_a_malformed_request(
    w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("Authorization", f"Bearer {token}")
    headers.add("Authorization", f"Bearer {w.token(BODY)}")
    await expect_rejected(http, w, "malformed_request", issuer="unknown", headers=headers)
    # The same token in one header is fine: the refusal was about the duplicate.
    await expect_forwarded(http, w, token)


# --- fuzzing: library exceptions become 401, never 500 (T26) -----------------------------------

_URLSAFE = string.ascii_letters + string.digits + "-_"
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, "", "jwt_tool", [], {}, [None], {"a": {"b": []}},
    "\u0000", "\ud800", "A" * 2000, 1.5, 2**64, 10**400, -(10**400),
]  # fmt: skip


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 5)
    if choice == 0:
        return rng.choice(_HOSTILE_VALUES)
    if choice == 1:
        return rng.randint(-(2**70), 2**70)
    if choice == 2:
        return rng.random() * 10 ** rng.randint(0, 300)
    if choice == 3:
        return "".join(rng.choice(_PRINTABLE) for _ in range(rng.randint(0, 30)))
    if choice == 4:
        return rng.choice(
            ["RS256", "none", "HS256", "ES256", "PS256", "JWT", "https://sender.test"]
        )
    if choice == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["alg", "kid", "typ", "cty", "crit", "jku", "jwk", "b64", "iss", "exp", "iat", "nbf",
            "jti", "aud", "sub", "request_body_sha256", "x"]  # fmt: skip
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _mutants(rng: random.Random, valid: str, w: World, n: int) -> list[str]:
    h, p, s = valid.split(".")
    out: list[str] = []
    while len(out) < n:
        kind = rng.randrange(10)
        t: str
        if kind == 0:  # random printable text
            t = "".join(rng.choice(_PRINTABLE + " ") for _ in range(rng.randint(0, 300)))
        elif kind == 1:  # random base64url, 1-6 segments
            t = ".".join(
                "".join(rng.choice(_URLSAFE) for _ in range(rng.randint(0, 400)))
                for _ in range(rng.randint(1, 6))
            )
        elif kind == 2:  # a few characters of the valid token replaced
            chars = list(valid)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(_URLSAFE + ".=+/ ")
            t = "".join(chars)
        elif kind == 3:  # a slice deleted
            i = rng.randrange(len(valid))
            t = valid[:i] + valid[i + rng.randint(1, 50) :]
        elif kind == 4:  # characters inserted
            i = rng.randrange(len(valid))
            t = (
                valid[:i]
                + "".join(rng.choice(_URLSAFE + ".") for _ in range(rng.randint(1, 5)))
                + valid[i:]
            )
        elif kind == 5:  # segments shuffled or repeated
            parts = [h, p, s]
            t = ".".join(rng.choice(parts) for _ in range(rng.choice([2, 3, 3, 4])))
        elif kind == 6:  # random JSON header, real payload and signature
            t = f"{segment(json.dumps(_random_json(rng)).encode())}.{p}.{s}"
        elif kind == 7:  # real header, random JSON payload, real signature
            t = f"{h}.{segment(json.dumps(_random_json(rng)).encode())}.{s}"
        elif kind == 8:  # random JSON header and payload, properly signed with the real key
            header = _random_json(rng)
            if isinstance(header, dict) and rng.random() < 0.7:
                header = {**header, "alg": "RS256", "kid": w.key.kid}
            claims = _random_json(rng)
            if isinstance(claims, dict) and rng.random() < 0.7:
                claims = {**fresh_claims(w), **claims}
            t = rs256(w.key, json.dumps(header).encode(), json.dumps(claims).encode())
        else:  # truncated
            t = valid[: rng.randrange(len(valid))]
        if t != valid:
            out.append(t)
    return out


async def test_library_exceptions_become_401_never_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jwksgate.access")  # the log path sees hostile input too
    rng = random.Random(0x5EED)
    async with world() as w, aiohttp.ClientSession() as http:
        valid = w.token(BODY)
        statuses: dict[int, int] = {}
        for candidate in _mutants(rng, valid, w, 200):
            headers = {"Authorization": f"Bearer {candidate}"}
            async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
                body = await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                assert resp.status in (400, 401), (resp.status, body, candidate[:200])
                if resp.status == 401:
                    assert json.loads(body)["error"] in UNAUTHORIZED
        assert w.backend.received == []
        assert await internal_errors(http, w) == 0
        assert statuses.get(401, 0) > 150, statuses


# jwt_tool -M er injects null, true, false, "jwt_tool" and 0; the rest are this gateway's edges.
_FORCED_ERRORS: list[Any] = [None, True, False, "jwt_tool", 0, [], {}, -1, "", 2**64, 10**400]


@pytest.mark.parametrize("part", ["header", "claims"])
async def test_forced_errors_in_every_member_are_401(
    part: str, w: World, http: aiohttp.ClientSession
) -> None:
    """jwt_tool's forced-error mode: each member of a properly signed token replaced in turn."""
    header_base: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": w.key.kid}
    sent = accepted = 0
    for name in list(header_base if part == "header" else fresh_claims(w)):
        for value in _FORCED_ERRORS:
            header, claims = dict(header_base), fresh_claims(w)
            (header if part == "header" else claims)[name] = value
            token = rs256(w.key, header, claims)
            async with http.post(w.url + "/hook", data=BODY, headers=bearer(token)) as resp:
                body = await resp.read()
                sent += 1
                if (name, value) == ("jti", "jwt_tool"):
                    # A jti is any string: this one is a valid push, delivered.
                    assert resp.status == 200, body
                    accepted += 1
                    continue
                assert resp.status == 401, (name, value, resp.status, body)
                assert json.loads(body)["error"] in UNAUTHORIZED
    assert sent >= 30
    assert len(w.backend.received) == accepted
    assert await internal_errors(http, w) == 0


@pytest.mark.parametrize(
    "path", ["/billing/..%2Forders/hook", "/billing/%2e%2e%2forders/hook", "/b/..%5Co", "/a\\b"]
)
async def test_escaped_slashes_in_the_path_are_refused(
    path: str, w: World, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {w.token(BODY)}"}
    async with http.post(w.url + path, data=BODY, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "malformed_request"
    assert w.backend.received == []


async def test_a_pipelined_request_gets_its_own_header_deadline() -> None:
    backend = GatedBackend()

    def configure(w: World) -> object:
        return gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 0.3})

    async with world(configure, backend=backend) as w:  # type: ignore[arg-type]
        host, port = w.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        token = w.token(BODY)
        first = (
            f"POST /hook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        writer.write(first)
        await wait_until(lambda: backend.arrived == 1)
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # pipelined, never finished
        await asyncio.sleep(0.1)
        backend.gate.set()
        # The first answer, then a 408 for the dribbling second one (not the 75 s keep-alive).
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 408" in answer


async def test_connections_beyond_the_bound_get_503_at_once() -> None:
    def configure(w: World) -> object:
        return gateway_config(w.jwks_url, w.backend_url, limits={"max_connections": 2})

    async with world(configure) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        host, port = w.url.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        await wait_until(lambda: len(w.running.server_guards()) == 2)  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))
        answer = await asyncio.wait_for(reader.read(), 10)  # answered and closed at once
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: 1" in answer and b'"overloaded"' in answer
        for _, held_writer in held:
            held_writer.close()
        await wait_until(lambda: len(w.running.server_guards()) == 0)  # type: ignore[union-attr]
        headers = {"Authorization": f"Bearer {w.token(BODY)}"}
        async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
            assert resp.status == 200
        async with http.get(w.admin_url + "/metrics") as resp:
            text = await resp.text()
        assert 'reason="overloaded"} 1.0' in text
