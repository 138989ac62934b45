"""OIDC discovery end to end against a real loopback provider: the configuration document gives
``jwks_uri``, the key set it names verifies a push signed by PyJWT; the document's ``issuer`` must
be the configured one (OIDC Discovery 1.0 section 4.3); the document is fetched under the JWKS
fetch's rules (size cap, timeout, no redirect, TLS with ``jwks.ca_file``) and a provider outage
keeps the last good key set. Discovery works with sender profiles, which otherwise ask for
``jwks_url``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from gateway.config import Config, parse_config
from tests.httpkit import Reply, get, push
from tests.support import World, claims_for, gateway_config_data, serve_app, wait_until, world
from tests.tls_support import TestCA, serve_tls_app, server_context

BODY = b'{"event":"discovered"}'
WELL_KNOWN = "/.well-known/openid-configuration"


class Provider:
    """An OpenID provider's two documents: the configuration and the key set it names."""

    def __init__(self) -> None:
        self.base = ""
        self.keys: list[dict[str, Any]] = []
        self.document: dict[str, Any] | None = None  # None: the right one
        self.padding = 0  # bytes of whitespace appended to the document
        self.status = 200
        self.delay = 0.0
        self.redirect = False
        self.fetches = 0

    def app(self) -> web.Application:
        async def configuration(_: web.Request) -> web.StreamResponse:
            self.fetches += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.redirect:
                raise web.HTTPFound(self.base + "/elsewhere" + WELL_KNOWN)
            if self.status != 200:
                return web.Response(status=self.status, text="down")
            doc = self.document or {"issuer": self.base, "jwks_uri": self.base + "/keys"}
            body = json.dumps(doc) + " " * self.padding
            return web.Response(text=body, content_type="application/json")

        async def elsewhere(_: web.Request) -> web.Response:
            doc = {"issuer": self.base, "jwks_uri": self.base + "/keys"}
            return web.json_response(doc)

        async def keys(_: web.Request) -> web.Response:
            return web.json_response({"keys": self.keys})

        app = web.Application()
        app.router.add_get(WELL_KNOWN, configuration)
        app.router.add_get("/elsewhere" + WELL_KNOWN, elsewhere)
        app.router.add_get("/keys", keys)
        return app


@asynccontextmanager
async def provider(tls: TestCA | None = None, tmp: Path | None = None) -> AsyncIterator[Provider]:
    p = Provider()
    if tls is None:
        async with serve_app(p.app()) as base:
            p.base = base
            yield p
        return
    assert tmp is not None
    cert, key = tls.server_cert().write(tmp, "provider")
    async with serve_tls_app(p.app(), server_context(cert, key)) as base:
        p.base = base
        yield p


def discovering(p: Provider, **issuer: Any) -> Callable[[World], Config]:
    """The sender's issuer found through discovery (``discovery: true``); the provider serves
    the world's public key."""

    def configure(w: World) -> Config:
        p.keys = [w.key.published]
        data = gateway_config_data(w.jwks_url, w.backend_url)
        entry = data["issuers"][0]
        del entry["jwks_url"]
        entry.update({"issuer": p.base, "discovery": True, **issuer})
        return parse_config(data)

    return configure


def pyjwt_token(w: World, iss: str, **extra: Any) -> str:
    pem = w.key.key.export_to_pem(private_key=True, password=None)
    claims = claims_for(BODY, w.clock(), issuer=iss, **extra)
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": w.key.kid})


async def delivered(http: aiohttp.ClientSession, w: World, p: Provider, **extra: Any) -> Reply:
    return await push(http, w, BODY, token=pyjwt_token(w, p.base, **extra))


async def tried(w: World) -> None:
    assert w.running is not None
    caches = w.running.gateway.caches
    await wait_until(lambda: all(c.tried for c in caches.values()))


def sender_status(w: World) -> str:
    assert w.running is not None
    return w.running.gateway.caches["sender"].status()


async def test_discovery_document_to_jwks_uri_to_keys_to_a_verified_push() -> None:
    async with (
        provider() as p,
        world(discovering(p)) as w,
        aiohttp.ClientSession() as http,
    ):
        r = await delivered(http, w, p)
        assert r.status == 200, r.body
        assert w.backend.received[-1].body == BODY
        assert p.fetches >= 1
        # A token of another issuer is not accepted because the document named these keys.
        other = await push(http, w, BODY, token=pyjwt_token(w, "https://other.test"))
        assert other.status == 401


async def test_a_profile_works_with_discovery_instead_of_jwks_url() -> None:
    async with provider() as p:

        def configure(w: World) -> Config:
            p.keys = [w.key.published]
            data = gateway_config_data(w.jwks_url, w.backend_url)
            data["issuers"] = [
                {
                    "name": "sender",
                    "profile": "a2a-spec",
                    "issuer": p.base,
                    "discovery_url": p.base + WELL_KNOWN,
                    "audiences": ["https://receiver.test"],
                }
            ]
            return parse_config(data)

        async with world(configure) as w, aiohttp.ClientSession() as http:
            r = await delivered(http, w, p, aud="https://receiver.test")
            assert r.status == 200, r.body


async def test_a_document_for_another_issuer_is_refused() -> None:
    async with provider() as p:
        p.document = {"issuer": "https://attacker.test", "jwks_uri": "https://attacker.test/k"}
        async with (
            world(discovering(p), wait_ready=False) as w,
            aiohttp.ClientSession() as http,
        ):
            await tried(w)
            assert "is not the configured issuer" in sender_status(w)
            assert (await delivered(http, w, p)).outcome == (503, "jwks_unavailable")
            ready = (await get(http, w.admin_url + "/readyz")).json()
            assert ready["issuers_ready"] == {"sender": False}
            assert w.backend.received == []


async def test_a_document_over_the_size_cap_is_refused() -> None:
    async with provider() as p:
        p.padding = 5000
        configure = discovering(p, jwks={"max_bytes": 4096})
        async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
            await tried(w)
            assert "exceeds 4096" in sender_status(w) or "larger than 4096" in sender_status(w)
            assert (await delivered(http, w, p)).outcome == (503, "jwks_unavailable")


async def test_a_document_that_does_not_come_in_time_is_a_failed_fetch() -> None:
    async with provider() as p:
        p.delay = 3.0
        configure = discovering(p, jwks={"timeout_seconds": 0.2})
        async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
            await tried(w)
            assert not w.running or not w.running.gateway.caches["sender"].ready()
            assert (await delivered(http, w, p)).outcome == (503, "jwks_unavailable")


async def test_a_redirected_document_is_not_followed() -> None:
    async with provider() as p:
        p.redirect = True
        async with (
            world(discovering(p), wait_ready=False) as w,
            aiohttp.ClientSession() as http,
        ):
            await tried(w)
            assert "HTTP 302" in sender_status(w)
            assert (await delivered(http, w, p)).outcome == (503, "jwks_unavailable")


async def test_a_provider_outage_keeps_the_last_good_key_set() -> None:
    async with (
        provider() as p,
        world(discovering(p)) as w,
        aiohttp.ClientSession() as http,
    ):
        assert (await delivered(http, w, p)).status == 200
        p.status = 503
        assert w.running is not None
        cache = w.running.gateway.caches["sender"]
        w.clock.advance(11)
        await cache.refresh()
        assert cache.last_failed and cache.ready()
        r = await delivered(http, w, p)
        assert r.status == 200, r.body
        ready = (await get(http, w.admin_url + "/readyz")).json()
        assert ready["issuers_ready"] == {"sender": True}


async def test_discovery_over_https_with_the_configured_ca(tmp_path: Path) -> None:
    ca = TestCA()
    ca_file = ca.write(tmp_path)
    async with provider(ca, tmp_path) as p:
        assert p.base.startswith("https://")
        async with (
            world(discovering(p, jwks={"ca_file": ca_file})) as w,
            aiohttp.ClientSession() as http,
        ):
            assert (await delivered(http, w, p)).status == 200
        # Without the CA the provider's certificate is not trusted: never a plain-http retry.
        async with (
            world(discovering(p), wait_ready=False) as w,
            aiohttp.ClientSession() as http,
        ):
            await tried(w)
            assert "certificate" in sender_status(w).lower()
            assert (await delivered(http, w, p)).outcome == (503, "jwks_unavailable")
