"""TLS (issue 5, item 3), with certificates made in the tests: the listener serves https and
takes a rotated certificate without dropping connections; the JWKS and the backend are reached
over verified https (a CA bundle, a client certificate), and a certificate failure is a failure,
never a silent downgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config import Config
from gateway.lifecycle import RunningGateway, run_gateway
from gateway.watch import Watcher
from tests.httpkit import Reply, get, push, request_bytes, scrape, send
from tests.support import (
    Backend,
    FakeClock,
    JwksServer,
    SigningKey,
    World,
    captured_log,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    wait_until,
    world,
)
from tests.tls_support import (
    TestCA,
    client_context,
    serial_of,
    serve_tls_app,
    server_context,
    write_pem,
)

BODY = b'{"event":"cert.rotated"}'
TIMEOUT = 10.0


# -- a raw TLS client: one connection, several requests, its own peer certificate ---------------
class TlsConnection:
    """One TLS connection to the gateway, kept open across requests (HTTP/1.1 keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, ctx: ssl.SSLContext) -> TlsConnection:
        m = re.fullmatch(r"https://([^:/]+):(\d+)", url)
        assert m is not None, url
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(m.group(1), int(m.group(2)), ssl=ctx)
        return cls(reader, writer)

    @property
    def serial(self) -> int:
        """The serial of the certificate the server presented in this connection's handshake."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return serial_of(ssl_object.getpeercert(binary_form=True))

    async def post(self, path: str, body: bytes, token: str) -> int:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        self.writer.write(request_bytes("POST", path, headers, body, host="127.0.0.1"))
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"\r\ncontent-length: *(\d+)\r\n", head.lower())
            await self.reader.readexactly(int(m.group(1)) if m else 0)
        assert b"connection: close" not in head.lower(), head
        return int(head.split(b" ", 2)[1])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()


async def served_serial(url: str, ctx: ssl.SSLContext) -> int:
    """The serial a NEW connection is shown."""
    conn = await TlsConnection.open(url, ctx)
    try:
        return conn.serial
    finally:
        await conn.close()


# -- (a) the listener -----------------------------------------------------------------------------
@dataclass
class Pki:
    ca: TestCA
    ca_file: str
    cert_file: str
    key_file: str
    serial: int
    directory: Path


def make_pki(tmp_path: Path) -> Pki:
    ca = TestCA()
    issued = ca.server_cert()
    cert_file, key_file = issued.write(tmp_path, "server")
    return Pki(ca, ca.write(tmp_path), cert_file, key_file, issued.serial, tmp_path)


def tls_listener(pki: Pki) -> Any:
    def configure(w: World) -> Config:
        return gateway_config(
            w.jwks_url,
            w.backend_url,
            tls={"cert_file": pki.cert_file, "key_file": pki.key_file},
        )

    return configure


async def test_listener_serves_https_to_a_client_trusting_the_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with world(tls_listener(pki)) as w:
        assert w.url.startswith("https://127.0.0.1:")
        trusting = aiohttp.TCPConnector(ssl=client_context(pki.ca_file))
        async with aiohttp.ClientSession(connector=trusting) as http:
            reply = await push(http, w, BODY, sub="agent-1")
            assert reply.status == 200, reply.body
            assert reply.body == b'{"ok":true}'
        assert len(w.backend.received) == 1
        got = w.backend.received[0]
        assert got.header("X-Forwarded-Proto") == "https"
        assert got.header("X-Jwt-Sub") == "agent-1"
        assert got.body == BODY
        assert await served_serial(w.url, client_context(pki.ca_file)) == pki.serial

        # Default trust (system CAs) does not know the test CA: the handshake fails, nothing is
        # forwarded.
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await push(http, w, BODY)
        assert len(w.backend.received) == 1


# -- (b) certificate rotation ---------------------------------------------------------------------
async def test_rotated_certificate_is_served_to_new_connections_without_dropping_old_ones(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    ctx = client_context(pki.ca_file)
    created: list[object] = []

    async def on_create(_: aiohttp.ClientSession, __: SimpleNamespace, params: Any) -> None:
        created.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    async with world(tls_listener(pki)) as w:
        assert w.running is not None
        watcher = Watcher(w.running, None, interval=0.1)
        keepalive = aiohttp.TCPConnector(limit=1, ssl=ctx)
        async with aiohttp.ClientSession(connector=keepalive, trace_configs=[trace]) as http:
            assert (await push(http, w, BODY)).status == 200
            old = await TlsConnection.open(w.url, ctx)
            try:
                assert old.serial == pki.serial
                assert await old.post("/hook", BODY, w.token(BODY)) == 200

                rotated = pki.ca.server_cert()
                assert rotated.serial != pki.serial
                rotated.write(tmp_path, "server")  # same paths, new pair (cert-manager)
                watching = asyncio.ensure_future(watcher.run())
                try:
                    for _ in range(int(TIMEOUT / 0.05)):
                        if await served_serial(w.url, ctx) == rotated.serial:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("the rotated certificate was never served")
                finally:
                    watching.cancel()
                    await asyncio.gather(watching, return_exceptions=True)

                fresh = await TlsConnection.open(w.url, ctx)
                try:
                    assert fresh.serial == rotated.serial
                    assert await fresh.post("/hook", BODY, w.token(BODY)) == 200
                finally:
                    await fresh.close()
                # The connection established before the rotation is still the same one, still
                # under the old certificate, and still answered.
                assert old.serial == pki.serial
                assert await old.post("/hook", BODY, w.token(BODY)) == 200
                # So is the pooled keep-alive connection of the aiohttp client.
                assert (await push(http, w, BODY)).status == 200
                assert len(created) == 1
            finally:
                await old.close()
        assert len(w.backend.received) == 5

        # A broken pair is refused whole; the rotated certificate keeps being served.
        stranger = pki.ca.server_cert()
        cases = {
            "key of another certificate": (pki.ca.server_cert().cert_pem(), stranger.key_pem()),
            "not a key at all": (stranger.cert_pem(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n"),
            "empty certificate": (b"", stranger.key_pem()),
        }
        for case, (cert_pem, key_pem) in cases.items():
            write_pem(Path(pki.cert_file), cert_pem)
            write_pem(Path(pki.key_file), key_pem)
            with captured_log() as records:
                assert watcher.reload_tls() is False, case
            assert any(
                r.levelno == logging.ERROR and "TLS certificate reload failed" in r.getMessage()
                for r in records
            ), case
            assert await served_serial(w.url, ctx) == rotated.serial, case
            conn = await TlsConnection.open(w.url, ctx)
            try:
                assert await conn.post("/hook", BODY, w.token(BODY)) == 200, case
            finally:
                await conn.close()

        # And a good pair after the broken ones is taken again.
        again = pki.ca.server_cert()
        again.write(tmp_path, "server")
        assert watcher.reload_tls() is True
        assert await served_serial(w.url, ctx) == again.serial


# -- (c) JWKS over https --------------------------------------------------------------------------
@asynccontextmanager
async def jwks_over_https(
    tmp_path: Path, jwks_tls: dict[str, Any]
) -> AsyncIterator[tuple[RunningGateway, JwksServer, Backend, SigningKey, FakeClock]]:
    pki = make_pki(tmp_path)
    jwks, backend, clock = JwksServer(), Backend(), FakeClock()
    key = jwks.add_key()
    served = server_context(pki.cert_file, pki.key_file)
    async with (
        serve_tls_app(jwks.app(), served) as jwks_base,
        serve_app(backend.app()) as backend_url,
    ):
        extra = {k: (pki.ca_file if v == "CA" else v) for k, v in jwks_tls.items()}
        config = gateway_config(
            jwks_base + "/.well-known/jwks.json", backend_url, issuer={"jwks": extra}
        )
        async with run_gateway(config, clock=clock) as running:
            yield running, jwks, backend, key, clock


async def test_jwks_is_fetched_over_https_with_the_configured_ca(tmp_path: Path) -> None:
    async with (
        jwks_over_https(tmp_path, {"ca_file": "CA"}) as (running, jwks, backend, key, clock),
        aiohttp.ClientSession() as http,
    ):
        assert running.gateway.config.issuers[0].jwks_url.startswith("https://")
        cache = running.gateway.caches["sender"]
        await wait_until(cache.ready, TIMEOUT)
        assert jwks.fetches == 1
        assert (await get(http, running.admin_url + "/readyz")).status == 200
        token = sign(key, claims_for(BODY, clock()))
        reply = await send(http, running.url + "/hook", body=BODY, token=token)
        assert reply.status == 200, reply.body
        assert len(backend.received) == 1
        metrics = await scrape(http, running.admin_url)
        fetches = "jwksgate_jwks_fetches_total"
        assert metrics.value(fetches, issuer="sender", result="success") == 1
        assert metrics.value(fetches, issuer="sender", result="failure") == 0


async def test_jwks_certificate_failure_is_a_fetch_failure_never_a_downgrade(
    tmp_path: Path,
) -> None:
    # No ca_file: the system CAs, which do not know the test CA.
    async with (
        jwks_over_https(tmp_path, {}) as (running, jwks, backend, key, clock),
        aiohttp.ClientSession() as http,
    ):
        fetches = "jwksgate_jwks_fetches_total"

        async def failures() -> float:
            m = await scrape(http, running.admin_url)
            return m.get(fetches, issuer="sender", result="failure")

        for _ in range(int(TIMEOUT / 0.02)):
            if await failures() >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the JWKS fetch never failed")
        metrics = await scrape(http, running.admin_url)
        assert metrics.value(fetches, issuer="sender", result="success") == 0
        cache = running.gateway.caches["sender"]
        assert not cache.ready()
        assert cache.last_error is not None and "certificate" in cache.last_error.lower()
        # The handshake failed: no request ever reached the JWKS handler (no plain-http retry).
        assert jwks.fetches == 0

        ready = await get(http, running.admin_url + "/readyz")
        # The issuer has no keys; the pod is ready (readiness: per_issuer): its fetch was tried.
        assert ready.status == 200
        assert ready.json()["issuers_ready"] == {"sender": False}
        assert ready.json()["issuers"]["sender"] != "ok"
        token = sign(key, claims_for(BODY, clock()))
        reply = await send(http, running.url + "/hook", body=BODY, token=token)
        assert reply.status == 503, reply.body
        assert reply.reason == "jwks_unavailable"
        assert backend.received == []
        assert jwks.fetches == 0


# -- (d) upstream over https with a client certificate ---------------------------------------------
@dataclass
class MtlsBackend(Backend):
    """A backend behind a listener that requires a client certificate; records its subject."""

    client_subjects: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def who(request: web.Request, handler: Any) -> web.StreamResponse:
            assert request.transport is not None
            peer = request.transport.get_extra_info("peercert")
            subject = dict(item[0] for item in peer["subject"]) if peer else {}
            self.client_subjects.append(str(subject.get("commonName")))
            result: web.StreamResponse = await handler(request)
            return result

        app.middlewares.append(who)
        return app


@dataclass
class MtlsSetup:
    pki: Pki
    client_cert_file: str
    client_key_file: str
    backend: MtlsBackend
    backend_url: str
    jwks: JwksServer
    jwks_url: str
    key: SigningKey

    def config(self, *, client_cert: bool) -> Config:
        upstream: dict[str, Any] = {"url": self.backend_url, "ca_file": self.pki.ca_file}
        if client_cert:
            upstream["client_cert_file"] = self.client_cert_file
            upstream["client_key_file"] = self.client_key_file
        return gateway_config(self.jwks_url, self.backend_url, upstream=upstream)


@asynccontextmanager
async def mtls_backend(tmp_path: Path) -> AsyncIterator[MtlsSetup]:
    pki = make_pki(tmp_path)
    client_cert, client_key = pki.ca.client_cert("jwksgate-sidecar").write(tmp_path, "client")
    served = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
    backend, jwks = MtlsBackend(), JwksServer()
    key = jwks.add_key()
    async with (
        serve_tls_app(backend.app(), served) as backend_url,
        serve_app(jwks.app()) as jwks_base,
    ):
        yield MtlsSetup(
            pki,
            client_cert,
            client_key,
            backend,
            backend_url,
            jwks,
            jwks_base + "/.well-known/jwks.json",
            key,
        )


async def _ready_push(http: aiohttp.ClientSession, running: RunningGateway, token: str) -> Reply:
    await wait_until(lambda: all(c.ready() for c in running.gateway.caches.values()), TIMEOUT)
    return await send(http, running.url + "/hook", body=BODY, token=token)


async def test_upstream_over_https_with_a_client_certificate(tmp_path: Path) -> None:
    async with mtls_backend(tmp_path) as s, aiohttp.ClientSession() as http:
        clock = FakeClock()
        async with run_gateway(s.config(client_cert=True), clock=clock) as running:
            reply = await _ready_push(http, running, sign(s.key, claims_for(BODY, clock())))
            assert reply.status == 200, reply.body
        assert len(s.backend.received) == 1
        assert s.backend.received[0].body == BODY
        assert s.backend.client_subjects == ["jwksgate-sidecar"]


async def test_upstream_refusing_the_gateway_without_client_cert_keeps_the_token(
    tmp_path: Path,
) -> None:
    async with mtls_backend(tmp_path) as s, aiohttp.ClientSession() as http:
        clock = FakeClock()
        async with run_gateway(s.config(client_cert=False), clock=clock) as running:
            token = sign(s.key, claims_for(BODY, clock()))
            reply = await _ready_push(http, running, token)
            assert reply.status == 502, reply.body
            assert reply.reason == "upstream_unavailable"
            assert s.backend.received == []

            # The operator adds the client certificate: the sender's retry of the very same
            # token is delivered, once.
            await running.gateway.reload(s.config(client_cert=True))
            reply = await send(http, running.url + "/hook", body=BODY, token=token)
            assert reply.status == 200, reply.body
            reply = await send(http, running.url + "/hook", body=BODY, token=token)
            assert reply.status == 409
            assert reply.reason == "replayed"
        assert len(s.backend.received) == 1
        assert s.backend.client_subjects == ["jwksgate-sidecar"]
