"""Interop: for every sender profile, a sender written here from the wire-format table (not from
the gateway's code) signs real pushes, and the gateway forwards exactly the valid ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import parse_config, read_files
from gateway.lifecycle import RunningGateway, run_gateway
from tests.support import Backend, FakeClock, JwksServer, serve_app, sign, wait_until


@dataclass
class Setup:
    jwks: JwksServer
    backend: Backend
    running: RunningGateway
    clock: FakeClock
    http: aiohttp.ClientSession

    async def post(
        self, body: bytes, headers: dict[str, str], path: str = "/hook"
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.running.url + path, data=body, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text.startswith("{") else {"text": text})

    def forwarded(self) -> int:
        return len(self.backend.received)


@asynccontextmanager
async def setup(
    issuer: Callable[[str], dict[str, Any]], jwks: JwksServer | None = None
) -> AsyncIterator[Setup]:
    jwks, backend, clock = jwks or JwksServer(), Backend(), FakeClock()
    async with (
        serve_app(jwks.app()) as jwks_base,
        serve_app(backend.app()) as backend_url,
        aiohttp.ClientSession() as http,
    ):
        config = parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": backend_url},
                "issuers": [{"name": "sender", **issuer(jwks_base + "/.well-known/jwks.json")}],
            }
        )
        config = read_files(config)  # a static token issuer may name token files
        async with run_gateway(config, clock=clock) as running:
            caches = running.gateway.caches.values()
            await wait_until(lambda: all(c.ready() for c in caches))
            yield Setup(jwks, backend, running, clock, http)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


# -- a2a-samples ---------------------------------------------------------------------------------


def a2a_samples_hash(data: Any) -> str:
    # The samples' PushNotificationAuth: compact, non-ASCII kept, key order as in the dict.
    dumped = json.dumps(
        data, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )
    return hashlib.sha256(dumped.encode()).hexdigest()


async def test_a2a_samples_profile() -> None:
    jwks = JwksServer()
    key = jwks.add_key(kid=str(uuid.uuid4()), use="sig")  # no alg, as the samples publish
    assert "alg" not in key.published
    async with setup(lambda url: {"profile": "a2a-samples", "jwks_url": url}, jwks) as s:
        task = {"id": "task-1", "status": {"state": "completed", "message": "résumé ✓"}}

        def push(data: Any, legacy: bool, signer: Any = None) -> tuple[bytes, dict[str, str]]:
            claims = {"iat": int(s.clock()), "request_body_sha256": a2a_samples_hash(data)}
            token = sign(signer or key, claims)
            # httpx >= 0.28 sends exactly the hashed bytes; <= 0.27 sends json.dumps defaults.
            wire = (
                json.dumps(data).encode()
                if legacy
                else json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
            )
            return wire, bearer(token)

        for legacy in (False, True):
            # No jti in this format: the replay key is the signed header.payload, so the same
            # task state pushed twice within one second is one notification. Move a second on.
            s.clock.advance(1)
            body, headers = push(task, legacy)
            assert (await s.post(body, headers))[0] == 200
            status, answer = await s.post(body, headers)  # the same push again
            assert (status, answer["error"]) == (409, "replayed")
        assert b" " in s.backend.received[1].body  # the legacy body arrived unchanged
        assert s.backend.received[1].body == json.dumps(task).encode()
        # Tampering: the parsed JSON differs, so neither raw nor compact hash matches.
        body, headers = push(task, legacy=True)
        status, answer = await s.post(body.replace(b"completed", b"failed"), headers)
        assert (status, answer["error"]) == (401, "body_hash_mismatch")
        # Key rotation mid-stream: the sender appends a new key and signs with it.
        new = s.jwks.add_key(kid=str(uuid.uuid4()), use="sig")
        s.clock.advance(30)  # past min_refresh_interval_seconds since the first fetch
        body, headers = push({"id": "task-2"}, legacy=False, signer=new)
        assert (await s.post(body, headers))[0] == 200
        # A future iat is refused; an iat older than 300 s is refused.
        claims = {"iat": int(s.clock()) + 60, "request_body_sha256": a2a_samples_hash(task)}
        status, answer = await s.post(json.dumps(task).encode(), bearer(sign(key, claims)))
        assert answer["error"] == "not_yet_valid"
        claims = {"iat": int(s.clock()) - 400, "request_body_sha256": a2a_samples_hash(task)}
        status, answer = await s.post(json.dumps(task).encode(), bearer(sign(key, claims)))
        assert answer["error"] == "token_too_old"
        assert s.forwarded() == 3


async def test_handshake_echo_is_answered_by_the_gateway() -> None:
    issuer = {"profile": "a2a-samples", "handshake": "echo"}
    jwks = JwksServer()
    jwks.add_key()
    async with setup(lambda url: {**issuer, "jwks_url": url}, jwks) as s:
        challenge = str(uuid.uuid4())
        async with s.http.get(s.running.url + "/hook", params={"validationToken": challenge}) as r:
            assert r.status == 200
            assert await r.text() == challenge
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with s.http.get(s.running.url + "/hook", params={"validationToken": "<script>"}) as r:
            assert r.status == 400
        assert s.forwarded() == 0
        async with s.http.get(s.running.admin_url + "/metrics") as r:
            assert 'outcome="handshake"' in await r.text()


async def test_handshake_is_off_by_default() -> None:
    jwks = JwksServer()
    jwks.add_key()
    async with setup(lambda url: {"profile": "a2a-samples", "jwks_url": url}, jwks) as s:
        async with s.http.get(s.running.url + "/hook?validationToken=abc") as r:
            assert r.status == 401  # a GET without a token is just an unauthenticated request
        assert s.forwarded() == 0


# -- trpc-a2a-go ---------------------------------------------------------------------------------


def go_marshal(data: dict[str, Any]) -> bytes:
    # encoding/json: sorted map keys, compact, and <, >, & escaped.
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


async def test_trpc_a2a_go_profile() -> None:
    jwks = JwksServer()
    key = jwks.add_key(kid=f"key-{int(time.time())}", alg="RS256", use="sig")
    async with setup(lambda url: {"profile": "trpc-a2a-go", "jwks_url": url}, jwks) as s:
        body = go_marshal({"task_id": "t<1>", "status": "done & dusted", "timestamp": "now"})
        claims = {"iat": int(s.clock()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
        headers = bearer(sign(key, claims))
        assert (await s.post(body, headers))[0] == 200
        assert (await s.post(body, headers))[1]["error"] == "replayed"
        assert s.backend.received[0].body == body  # escapes intact
        # Re-serialising would not have matched: the profile hashes raw bytes only.
        reserialised = json.dumps(json.loads(body), separators=(",", ":")).encode()
        assert hashlib.sha256(reserialised).digest() != hashlib.sha256(body).digest()
        later = {**claims, "iat": int(s.clock()) + 1}
        status, answer = await s.post(reserialised, bearer(sign(key, later)))
        assert (status, answer["error"]) == (401, "body_hash_mismatch")
        # Rotation: GenerateKeyPair appends a key with a new kid and switches to it.
        new = s.jwks.add_key(kid=f"key-{int(time.time()) + 1}", alg="RS256", use="sig")
        s.clock.advance(30)
        claims = {"iat": int(s.clock()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
        assert (await s.post(body, bearer(sign(new, claims))))[0] == 200
        assert s.forwarded() == 2


# -- a2a4j ---------------------------------------------------------------------------------------


async def test_a2a4j_profile() -> None:
    issuer = {"profile": "a2a4j", "issuer": "https://agent.example"}
    jwks = JwksServer()
    key = jwks.add_key()
    async with setup(lambda url: {**issuer, "jwks_url": url}, jwks) as s:
        body = b'{"id":"task-9","status":{"state":"working"}}'
        now = int(s.clock())
        claims = {
            "sub": "agent-x",
            "iss": "https://agent.example",
            "iat": now,
            "exp": now + 60,
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
        }
        headers = bearer(sign(key, claims))
        assert (await s.post(body, headers))[0] == 200
        assert s.backend.received[0].header("X-Jwt-Sub") == "agent-x"
        assert (await s.post(body, headers))[1]["error"] == "replayed"
        s.clock.advance(120)  # exp is enforced
        _, answer = await s.post(body, bearer(sign(key, {**claims, "jti": "x"})))
        assert answer["error"] == "expired"
        assert s.forwarded() == 1


# -- a2a-nokid -----------------------------------------------------------------------------------


async def test_a2a_nokid_profile_tries_each_key() -> None:
    jwks = JwksServer()
    jwks.add_key(kid=None)
    key = jwks.add_key(kid=None)  # the signing key is the second one
    async with setup(lambda url: {"profile": "a2a-nokid", "jwks_url": url}, jwks) as s:
        body = b'{"taskId":"t","state":"completed"}'
        claims = {
            "iat": int(s.clock()),
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
            "agent_name": "Météo agent",
        }
        headers = bearer(sign(key, claims))
        assert "kid" not in json.loads(
            base64.urlsafe_b64decode(headers["Authorization"][7:].split(".")[0] + "==")
        )
        assert (await s.post(body, headers))[0] == 200
        assert s.backend.received[0].header("X-Jwt-Agent-Name") == '"M\\u00e9t\\u00e9o agent"'
        assert (await s.post(body, headers))[1]["error"] == "replayed"
        intruder = JwksServer().add_key(kid=None)
        later = {**claims, "iat": int(s.clock()) + 1}
        status, answer = await s.post(body, bearer(sign(intruder, later)))
        assert (status, answer["error"]) == (401, "bad_signature")
        async with s.http.get(s.running.admin_url + "/metrics") as r:
            text = await r.text()
        assert 'jwksgate_kidless_verify_attempts_total{issuer="sender"}' in text
        assert s.forwarded() == 1


# -- a2a-spec ------------------------------------------------------------------------------------


async def test_a2a_spec_profile() -> None:
    issuer = {
        "profile": "a2a-spec",
        "issuer": "https://agent.example",
        "audiences": ["https://receiver.example/hook"],
        "body_hash": {"claim": "request_body_sha256"},
    }
    jwks = JwksServer()
    key = jwks.add_key("EC")
    async with setup(lambda url: {**issuer, "jwks_url": url}, jwks) as s:
        body = b'{"statusUpdate":{"taskId":"t-1"}}'
        now = int(s.clock())
        claims = {
            "iss": "https://agent.example",
            "aud": "https://receiver.example/hook",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "taskId": "t-1",
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
        }
        assert (await s.post(body, bearer(sign(key, claims))))[0] == 200
        assert s.backend.received[0].header("X-Jwt-Task-Id") == "t-1"
        # Same jti, freshly signed: still a replay (keyed on iss + jti).
        status, answer = await s.post(body, bearer(sign(key, {**claims, "iat": now + 1})))
        assert (status, answer["error"]) == (409, "replayed")
        status, answer = await s.post(
            body, bearer(sign(key, {**claims, "jti": "j2", "aud": "other"}))
        )
        assert answer["error"] == "bad_audience"
        no_jti = {k: v for k, v in claims.items() if k != "jti"}
        assert (await s.post(body, bearer(sign(key, no_jti))))[1]["error"] == "missing_claim"
        assert s.forwarded() == 1


# -- a2a-static-token ----------------------------------------------------------------------------


async def test_a2a_static_token_profile_with_rotation(tmp_path: Path) -> None:
    old, new = "old-token-" + uuid.uuid4().hex, "new-token-" + uuid.uuid4().hex
    (tmp_path / "token").write_text(new + "\n")
    issuer = {
        "profile": "a2a-static-token",
        "static_token": {"tokens": [old], "token_files": [str(tmp_path / "token")]},
    }
    async with setup(lambda _url: issuer) as s:
        body = b'{"task":{"id":"t"}}'
        # a2a-sdk: X-A2A-Notification-Token; newer Go/Rust SDKs: A2A-Notification-Token;
        # the v1.0 spec: Authorization: <scheme> <credentials>.
        for headers in (
            {"X-A2A-Notification-Token": old},
            {"A2A-Notification-Token": new},
            {"Authorization": f"Bearer {new}"},
        ):
            status, _ = await s.post(body, headers)
            assert status == 200
        status, answer = await s.post(body, {"X-A2A-Notification-Token": "wrong-" + old})
        assert (status, answer["error"]) == (401, "bad_signature")
        status, answer = await s.post(body, {})
        assert (status, answer["error"]) == (401, "missing_token")
        assert s.forwarded() == 3
        assert s.backend.received[0].header("X-Jwt-Issuer") == "sender"
        assert s.backend.received[2].header("Authorization") is None


# -- Standard Webhooks ---------------------------------------------------------------------------


def whsec() -> tuple[str, bytes]:
    raw = uuid.uuid4().bytes + uuid.uuid4().bytes
    return "whsec_" + base64.b64encode(raw).decode(), raw


def swh_headers(
    msg_id: str, ts: int, body: bytes, v1: list[bytes], v1a: list[Ed25519PrivateKey]
) -> dict[str, str]:
    content = f"{msg_id}.{ts}.".encode() + body
    sigs = [
        "v1," + base64.b64encode(hmac.new(k, content, hashlib.sha256).digest()).decode() for k in v1
    ] + ["v1a," + base64.b64encode(k.sign(content)).decode() for k in v1a]
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": " ".join(sigs)}


async def test_standard_webhooks_v1_and_v1a_with_rotation_and_replay() -> None:
    (s1, raw1), (s2, raw2) = whsec(), whsec()
    ed = Ed25519PrivateKey.generate()
    whpk = (
        "whpk_"
        + base64.b64encode(ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    )
    issuer = {
        "type": "standard_webhooks",
        "standard_webhooks": {"secrets": [s1, s2], "public_keys": [whpk]},
    }
    async with setup(lambda _url: issuer) as s:
        body = b'{"type":"invoice.paid","data":{"id":"in_1"}}'
        now = int(s.clock())
        # Rotation: the sender signs with a retired secret and the new one; one must verify.
        unknown = uuid.uuid4().bytes * 2
        cases = [
            swh_headers("msg_1", now, body, [raw1], []),
            swh_headers("msg_2", now, body, [unknown, raw2], []),
            swh_headers("msg_3", now, body, [], [ed]),
        ]
        for headers in cases:
            assert (await s.post(body, headers))[0] == 200
        # A retry of msg_1 with a new timestamp and signature is the same webhook: deduped.
        status, answer = await s.post(body, swh_headers("msg_1", now + 5, body, [raw1], []))
        assert (status, answer["error"]) == (409, "replayed")
        status, answer = await s.post(body + b" ", swh_headers("msg_4", now, body, [raw1], []))
        assert (status, answer["error"]) == (401, "bad_signature")
        status, answer = await s.post(body, swh_headers("msg_5", now - 301, body, [raw1], []))
        assert answer["error"] == "token_too_old"
        status, answer = await s.post(body, swh_headers("msg_6", now + 301, body, [raw1], []))
        assert answer["error"] == "not_yet_valid"
        status, answer = await s.post(body, {"webhook-id": "x"})
        assert (status, answer["error"]) == (401, "missing_token")
        assert s.forwarded() == 3
        got = s.backend.received[0]
        assert got.header("webhook-id") == "msg_1"
        claims = json.loads(base64.urlsafe_b64decode(got.header("X-Jwt-Claims") + "=="))  # type: ignore[operator]
        assert claims == {"webhook-id": "msg_1", "webhook-timestamp": now}


def test_check_config_shows_the_effective_profile_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "issuers:\n"
        "  - name: agent\n"
        "    profile: a2a-samples\n"
        "    jwks_url: https://agent.example/.well-known/jwks.json\n"
        "    max_token_age_seconds: 120\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(cfg)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "profile a2a-samples" in out.stdout
    assert "max age 120s" in out.stdout  # the explicit value wins
    assert "replay key token" in out.stdout
    assert "request_body_sha256 hex over raw_or_json" in out.stdout


def test_profile_required_fields_and_unknown_profile(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "issuers:\n  - {name: a, profile: a2a-spec, jwks_url: 'https://a.example/j'}\n"
        "  - {name: b, profile: nonsense, jwks_url: 'https://b.example/j'}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(cfg)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "issuers[0].issuer: is required with profile a2a-spec" in out.stderr
    assert "issuers[0].audiences: is required with profile a2a-spec" in out.stderr
    assert "issuers[1].profile: must be one of" in out.stderr
