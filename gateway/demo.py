"""``jwksgate demo``: an embedded issuer (keys, JWKS, a token minting endpoint), an echo backend and
the gateway, all on loopback; a scripted mix of valid and hostile pushes; then curl lines to try.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from jwcrypto import jwk, jws

from gateway.bind import BindError, bindable
from gateway.bind import reason as bind_reason
from gateway.config import Config, parse_config
from gateway.lifecycle import run_gateway

__all__ = ["run_demo"]

ISSUER = "https://demo-issuer.local"


@dataclass
class DemoIssuer:
    key: jwk.JWK
    kid: str
    intruder: jwk.JWK

    @classmethod
    def generate(cls) -> DemoIssuer:
        return cls(
            key=jwk.JWK.generate(kty="RSA", size=2048),
            kid=str(uuid.uuid4()),
            intruder=jwk.JWK.generate(kty="RSA", size=2048),
        )

    def jwks(self) -> dict[str, Any]:
        public = json.loads(self.key.export_public())
        public.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [public]}

    def claims(self, body: bytes, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "demo-agent",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
        }
        claims.update(extra)
        return claims

    def sign(
        self, claims: dict[str, Any], *, header: dict[str, Any] | None = None, key: Any = None
    ) -> str:
        protected = {"alg": "RS256", "typ": "JWT", "kid": self.kid, **(header or {})}
        token = jws.JWS(json.dumps(claims).encode())
        token.add_signature(key or self.key, alg=None, protected=json.dumps(protected))
        return str(token.serialize(compact=True))

    def app(self) -> web.Application:
        async def jwks_doc(_: web.Request) -> web.Response:
            return web.json_response(self.jwks())

        async def mint(request: web.Request) -> web.Response:
            body = await request.read()
            return web.Response(text=self.sign(self.claims(body)) + "\n")

        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/.well-known/jwks.json", jwks_doc)
        app.router.add_post("/mint", mint)
        return app


def _echo_app(seen: list[dict[str, str]]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        verified = {k: v for k, v in request.headers.items() if k.lower().startswith("x-jwt-")}
        seen.append(verified)
        return web.json_response(
            {"backend": "echo", "received_bytes": len(body), "verified_headers": verified}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def _start(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def demo_config(port: int, jwks_url: str, backend_url: str) -> Config:
    return parse_config(
        {
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{port + 1 if port else 0}",
            "upstream": {"url": backend_url, "timeout_seconds": 10},
            "limits": {"max_body_bytes": 65536},
            "issuers": [
                {
                    "name": "demo",
                    "issuer": ISSUER,
                    "path_prefix": "/webhook",
                    "jwks_url": jwks_url,
                    "algorithms": ["RS256"],
                    "body_hash": {"claim": "request_body_sha256", "over": "raw_or_json"},
                    "forward_claims": {"sub": "X-Jwt-Sub"},
                },
                {
                    # An A2A Python-samples sender: no iss, no jti, hash of compact JSON.
                    "name": "a2a",
                    "profile": "a2a-samples",
                    "path_prefix": "/a2a",
                    "jwks_url": jwks_url,
                    "handshake": "echo",
                },
            ],
        }
    )


Case = tuple[str, Callable[[DemoIssuer, bytes], tuple[dict[str, str], bytes]]]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _cases() -> list[Case]:
    def valid(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        return _bearer(i.sign(i.claims(body))), body

    def tampered(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        return _bearer(i.sign(i.claims(body))), body.replace(b"completed", b"failed")

    def expired(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        now = int(time.time())
        return _bearer(i.sign(i.claims(body, iat=now - 900, exp=now - 600))), body

    def alg_none(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        seg = jws.base64url_encode
        header = seg(json.dumps({"alg": "none", "typ": "JWT"}))
        return _bearer(f"{header}.{seg(json.dumps(i.claims(body)))}."), body

    def forged(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        return _bearer(i.sign(i.claims(body), key=i.intruder)), body

    def jku(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        header = {"kid": "attacker", "jku": "http://127.0.0.1:9/attacker-jwks.json"}
        return _bearer(i.sign(i.claims(body), header=header, key=i.intruder)), body

    def other_issuer(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        return _bearer(i.sign(i.claims(body, iss="https://evil.example"))), body

    def no_token(_: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        return {"Content-Type": "application/json"}, body

    def a2a_legacy(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        # The samples hash json.dumps(..., separators=(",", ":"), ensure_ascii=False) of the
        # parsed body; senders on httpx <= 0.27 put the spaced json.dumps default on the wire.
        data = json.loads(body)
        compact = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        claims = {"iat": int(time.time()), "request_body_sha256": _sha256(compact)}
        return _bearer(i.sign(claims)), json.dumps(data).encode()

    def spoofed(i: DemoIssuer, body: bytes) -> tuple[dict[str, str], bytes]:
        headers = _bearer(i.sign(i.claims(body)))
        headers["X-Jwt-Sub"] = "admin"
        return headers, body

    return [
        ("valid push", valid),
        ("replay of a delivered push", valid),
        ("body tampered after signing", tampered),
        ("expired token", expired),
        ('alg "none"', alg_none),
        ("signed by an unknown key", forged),
        ("jku pointing at an attacker", jku),
        ("token from another issuer", other_issuer),
        ("no token at all", no_token),
        ("spoofed X-Jwt-Sub header", spoofed),
        ("A2A sample push, old-httpx spacing", a2a_legacy),
    ]


# The demo listens on --port (gateway), --port + 1 (admin) and --port + 2 (issuer).
_ROLES = ("the gateway, --port", "its admin port, --port + 1", "its issuer, --port + 2")


def _free_base(port: int) -> int | None:
    """A --port whose three ports all bind now, above ``port``."""
    for base in range(port + 10, min(port + 200, 65533), 10):
        try:
            for offset in range(3):
                bindable("127.0.0.1", base + offset)
        except OSError:
            continue
        return base
    return None


def _port_error(port: int, offset: int, reason: str) -> BindError:
    base = _free_base(port)
    hint = "pass --port to use other ports"
    if base is not None:
        hint += f", e.g. --port {base} (the demo uses it and the next two)"
    address = f"127.0.0.1:{port + offset} ({_ROLES[offset]})"
    return BindError(f"demo --port {port}", address, reason, hint)


async def run_demo(port: int = 8480, *, wait: bool = True) -> int:
    """``BindError`` when one of the demo's fixed ports is taken."""
    try:
        return await _run_demo(port, wait)
    except BindError as e:
        if e.key not in ("listen", "admin_listen"):
            raise
        # The gateway's config keys come from --port here: name that instead.
        raise _port_error(port, 1 if e.key == "admin_listen" else 0, e.reason) from None


async def _run_demo(port: int, wait: bool) -> int:
    issuer = DemoIssuer.generate()
    seen: list[dict[str, str]] = []
    # Fixed ports next to the gateway's, so the printed curl lines stay the same run to run.
    try:
        issuer_runner, issuer_port = await _start(issuer.app(), port + 2 if port else 0)
    except OSError as e:
        raise _port_error(port, 2, bind_reason(e)) from None
    backend_runner, backend_port = await _start(_echo_app(seen), 0)
    jwks_url = f"http://127.0.0.1:{issuer_port}/.well-known/jwks.json"
    config = demo_config(port, jwks_url, f"http://127.0.0.1:{backend_port}")
    try:
        async with run_gateway(config) as running, aiohttp.ClientSession() as http:
            for _ in range(500):
                if all(c.ready() for c in running.gateway.caches.values()):
                    break
                await asyncio.sleep(0.01)
            print(f"jwksgate demo: gateway {running.url}  admin {running.admin_url}")
            print(f"  issuer {ISSUER} (JWKS {jwks_url}), echo backend :{backend_port}\n")
            body = b'{"taskId":"task-42","status":{"state":"completed"}}'
            replay_of: tuple[dict[str, str], bytes] | None = None
            rows = []
            for name, make in _cases():
                if name.startswith("replay") and replay_of is not None:
                    headers, data = replay_of
                else:
                    headers, data = make(issuer, body)
                    replay_of = (headers, data)
                before = len(seen)
                path = "/a2a/notify" if name.startswith("A2A") else "/webhook"
                async with http.post(running.url + path, data=data, headers=headers) as r:
                    answer = await r.json(content_type=None)
                forwarded = len(seen) > before
                reason = answer.get("error", "-") if r.status >= 300 else "-"
                note = ""
                if forwarded and seen[-1].get("X-Jwt-Sub"):
                    note = f"backend saw X-Jwt-Sub: {seen[-1]['X-Jwt-Sub']}"
                rows.append((name, r.status, reason, "yes" if forwarded else "no", note))
            _print_table(rows)
            print(
                "\nThe spoofed X-Jwt-Sub was stripped: the backend saw the verified sub only.\n"
                "Try it by hand (each token is valid for 5 minutes and for one delivery):\n"
            )
            print(f"  BODY='{body.decode()}'")
            print(
                f'  TOKEN=$(curl -s -X POST --data-binary "$BODY" '
                f"http://127.0.0.1:{issuer_port}/mint)"
            )
            print(
                f'  curl -i -X POST {running.url}/webhook -H "Authorization: Bearer $TOKEN" '
                f'-H "Content-Type: application/json" --data-binary "$BODY"'
            )
            print(
                "  # the same command again: 409 replayed; change the body: 401 body_hash_mismatch"
            )
            print(f"  curl -s {running.admin_url}/metrics | grep jwksgate_requests_total")
            print(f"  curl -s {running.admin_url}/readyz\n")
            async with http.get(
                running.url + "/a2a/notify", params={"validationToken": "demo-challenge"}
            ) as r:
                echoed = await r.text()
            print(f"A2A URL-ownership handshake: GET ?validationToken=demo-challenge -> {echoed}")
            forwarded_rows = [row for row in rows if row[3] == "yes"]
            ok = len(forwarded_rows) == 3 and rows[0][1] == 200 and echoed == "demo-challenge"
            if not wait:
                return 0 if ok else 1
            print("Running until Ctrl-C.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0
    finally:
        await backend_runner.cleanup()
        await issuer_runner.cleanup()


def _print_table(rows: list[tuple[str, int, str, str, str]]) -> None:
    head = ("push", "status", "reason", "forwarded", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    fmt = "  {{:<{}}}  {{:>{}}}  {{:<{}}}  {{:<{}}}  {{}}".format(*widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths), ""))
    for row in rows:
        print(fmt.format(*row))
