"""Real loopback servers and a token signer for the tests.

The signer is written from the specifications with jwcrypto's high-level API, independently of
the gateway's verification code, so the two can disagree and a test can notice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from hypothesis import HealthCheck, settings
from jwcrypto import jwk, jws

from gateway.config import Config, parse_config
from gateway.lifecycle import RunningGateway, run_gateway
from gateway.logs import configure_logging


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def free_port() -> int:
    """A port that was free a moment ago: only for processes that must be restarted on the same
    address (their start fails loudly if another took it). In-process servers bind port 0, and a
    test that needs an address where nothing listens takes :func:`refused_port`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_HELD: list[socket.socket] = []


def bound_socket() -> socket.socket:
    """A loopback socket bound to a port of its own and not listening: connections to it are
    refused, and no other process can take the port while it is held. Hand it to
    ``serve_app(app, sock=...)`` to start listening on that very port later."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def refused_port() -> int:
    """A loopback port where nothing listens and nothing will, for the whole test session."""
    s = bound_socket()
    _HELD.append(s)
    port: int = s.getsockname()[1]
    return port


class FakeClock:
    """The gateway's injected wall clock: tests move time instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def serve_app(
    app: web.Application, port: int = 0, *, sock: socket.socket | None = None, **options: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on loopback (``port`` 0: a free one; or on ``sock``, a socket bound by
    :func:`bound_socket`); ``options`` go to ``web.AppRunner`` (e.g. ``auto_decompress=False``
    for a backend that must see bodies as sent)."""
    runner = web.AppRunner(app, access_log=None, **options)
    await runner.setup()
    site: web.BaseSite
    site = web.SockSite(runner, sock) if sock else web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def public_jwk(key: jwk.JWK, kid: str | None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(key.export_public())
    data.pop("kid", None)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


@dataclass
class SigningKey:
    key: jwk.JWK
    kid: str | None
    alg: str
    published: dict[str, Any]


class JwksServer:
    """A real JWKS endpoint: counts fetches, rotates keys, can fail or serve arbitrary bytes."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.fetches = 0
        self.status = 200
        self.raw: bytes | None = None
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.url = ""

    def add_key(
        self, kty: str = "RSA", kid: str | None = "auto", alg: str | None = None, **extra: Any
    ) -> SigningKey:
        kid = uuid.uuid4().hex if kid == "auto" else kid
        key = (
            jwk.JWK.generate(kty="RSA", size=extra.pop("size", 2048))
            if kty == "RSA"
            else jwk.JWK.generate(kty="EC", crv=extra.pop("crv", "P-256"))
        )
        if alg is None:
            alg = "RS256" if kty == "RSA" else {"P-256": "ES256", "P-384": "ES384"}[key.get("crv")]
        published = public_jwk(key, kid, **extra)
        sk = SigningKey(key=key, kid=kid, alg=alg, published=published)
        self.keys.append(sk)
        return sk

    def document(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps({"keys": [k.published for k in self.keys]}).encode()

    def app(self) -> web.Application:
        async def jwks(_: web.Request) -> web.Response:
            self.fetches += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status != 200:
                return web.Response(status=self.status, text="unavailable")
            return web.Response(
                body=self.document(), content_type="application/json", headers=self.headers
            )

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        return app


@dataclass
class Received:
    method: str
    path_qs: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class Backend:
    """A real upstream that records what it receives and answers as told."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    response_body: bytes = b'{"ok":true}'
    response_headers: dict[str, str] = field(default_factory=dict)

    def app(self) -> web.Application:
        async def any_request(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers: dict[str, list[str]] = {}
            for k, v in request.headers.items():
                headers.setdefault(k.lower(), []).append(v)
            self.received.append(Received(request.method, request.path_qs, headers, body))
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(
                status=self.status,
                body=self.response_body,
                headers={"Content-Type": "application/json", **self.response_headers},
            )

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", any_request)
        return app


def sign(
    key: SigningKey,
    claims: dict[str, Any] | bytes,
    *,
    header: dict[str, Any] | None = None,
    alg: str | None = None,
    omit_kid: bool = False,
) -> str:
    """A compact JWS signed with jwcrypto, from header fields given explicitly."""
    protected: dict[str, Any] = {"alg": alg or key.alg, "typ": "JWT"}
    if key.kid is not None and not omit_kid:
        protected["kid"] = key.kid
    protected.update(header or {})
    protected = {k: v for k, v in protected.items() if v is not None}
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    token = jws.JWS(payload)
    token.add_signature(key.key, alg=None, protected=json.dumps(protected))
    return str(token.serialize(compact=True))


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def claims_for(
    body: bytes, now: float, issuer: str | None = "https://sender.test", **extra: Any
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": uuid.uuid4().hex,
        "request_body_sha256": body_hash(body),
    }
    if issuer is not None:
        claims["iss"] = issuer
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def gateway_config(
    jwks_url: str, upstream_url: str, *, issuer: dict[str, Any] | None = None, **top: Any
) -> Config:
    return parse_config(gateway_config_data(jwks_url, upstream_url, issuer=issuer, **top))


def gateway_config_data(
    jwks_url: str, upstream_url: str, *, issuer: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    """The YAML-shaped test config: one issuer "sender", loopback listeners on free ports."""
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "upstream": {"url": upstream_url, "timeout_seconds": 5},
        "issuers": [
            {
                "name": "sender",
                "issuer": "https://sender.test",
                "jwks_url": jwks_url,
                "algorithms": ["RS256", "ES256"],
                "body_hash": {"claim": "request_body_sha256"},
                "forward_claims": {"sub": "X-Jwt-Sub"},
                **(issuer or {}),
            }
        ],
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@dataclass
class World:
    """One JWKS server, one backend and one gateway, all on loopback."""

    jwks: JwksServer
    backend: Backend
    jwks_url: str
    backend_url: str
    clock: FakeClock
    key: SigningKey
    running: RunningGateway | None = None

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    @property
    def admin_url(self) -> str:
        assert self.running is not None
        return self.running.admin_url

    def token(self, body: bytes, key: SigningKey | None = None, **claims: Any) -> str:
        return sign(key or self.key, claims_for(body, self.clock(), **claims))


@asynccontextmanager
async def world(
    configure: Callable[[World], Config] | None = None,
    wait_ready: bool = True,
    *,
    jwks: JwksServer | None = None,
    backend: Backend | None = None,
) -> AsyncIterator[World]:
    """``jwks`` and ``backend`` let a test bring a scripted subclass (gated, failing, ...)."""
    jwks = jwks or JwksServer()
    backend = backend or Backend()
    key = jwks.add_key()
    async with serve_app(jwks.app()) as jwks_base, serve_app(backend.app()) as backend_url:
        jwks_url = jwks_base + "/.well-known/jwks.json"
        w = World(jwks, backend, jwks_url, backend_url, FakeClock(), key)
        config = configure(w) if configure else gateway_config(jwks_url, backend_url)
        async with run_gateway(config, clock=w.clock) as running:
            w.running = running
            if wait_ready:
                await wait_until(lambda: all(c.ready() for c in running.gateway.caches.values()))
            yield w


@contextmanager
def captured_log(name: str = "jwksgate") -> Iterator[list[logging.LogRecord]]:
    """The records of ``name`` and its children, whatever propagation another test set up."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(name)
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def process_logging(stream: IO[str] | None = None) -> Iterator[None]:
    """The process's own logging setup (``configure_logging``, to ``stream`` or stdout), with
    the loggers' handlers, filters, propagation and levels put back afterwards."""
    loggers = [logging.getLogger(n) for n in ("jwksgate", "jwksgate.access")]
    saved = [(lg.handlers[:], lg.filters[:], lg.propagate, lg.level) for lg in loggers]
    configure_logging("INFO", stream=stream)
    try:
        yield
    finally:
        for logger, (handlers, filters, propagate, level) in zip(loggers, saved, strict=True):
            for h in logger.handlers:
                if h not in handlers:
                    h.close()
            logger.handlers[:] = handlers
            logger.filters[:] = filters
            logger.propagate = propagate
            logger.setLevel(level)
        sys.stdout.flush()


@contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """``process_logging`` writing to ``path``, as it would to stdout."""
    with path.open("w") as stream, process_logging(stream):
        yield


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll a condition (a readiness flag, a counter); fails the test if it never holds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def fuzz(max_examples: int, *also_suppress: HealthCheck) -> settings:
    """The suite's Hypothesis settings: the same examples every run (derandomized, no example
    database), no per-example deadline (the machines are shared and noisy), slow data allowed."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, *also_suppress],
    )
