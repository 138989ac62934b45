"""Per-issuer readiness: one sender's key trouble (a key set with no usable key, a JWKS host
down at start) answers that sender's pushes 503 ``jwks_unavailable`` with ``Retry-After`` while
every other sender keeps being delivered, and the pod stays ready (``readiness: per_issuer``, the
default): ready means the replay store answers and startup's first fetches were tried. With
``readiness: all_issuers`` the pod is ready only when every issuer has usable keys.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Config
from tests.httpkit import Reply, get, push, scrape
from tests.support import World, free_port, gateway_config, serve_app, wait_until, world

BODY = b'{"event":"readiness"}'
# Keys the gateway never uses: a symmetric key and an RSA key below 2048 bits are dropped.
UNUSABLE = {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}


def jwks_app(document: Callable[[], Any], gate: asyncio.Event | None = None) -> web.Application:
    async def jwks(_: web.Request) -> web.Response:
        if gate is not None:
            await gate.wait()
        return web.json_response(document())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    return app


@asynccontextmanager
async def other_jwks(
    document: Callable[[], Any], gate: asyncio.Event | None = None
) -> AsyncIterator[str]:
    async with serve_app(jwks_app(document, gate)) as base:
        yield base + "/jwks"


def two_issuers(other_url: str, **top: Any) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        issuers = [
            {
                "name": "sender",
                "issuer": "https://sender.test",
                "jwks_url": w.jwks_url,
                "path_prefix": "/sender",
            },
            {
                "name": "other",
                "issuer": "https://other.test",
                "jwks_url": other_url,
                "path_prefix": "/other",
            },
        ]
        return gateway_config(w.jwks_url, w.backend_url, issuers=issuers, **top)

    return configure


async def both_pushes(http: aiohttp.ClientSession, w: World) -> tuple[Reply, Reply]:
    sender = await push(http, w, BODY, path="/sender/x")
    other = await push(
        http, w, BODY, path="/other/x", token=w.token(BODY, issuer="https://other.test")
    )
    return sender, other


async def first_fetches_tried(w: World) -> None:
    assert w.running is not None
    caches = w.running.gateway.caches
    await wait_until(lambda: all(c.tried for c in caches.values()))


async def test_an_issuer_without_usable_keys_answers_only_its_own_pushes_503() -> None:
    async with (
        other_jwks(lambda: UNUSABLE) as url,
        world(two_issuers(url), wait_ready=False) as w,
        aiohttp.ClientSession() as http,
    ):
        await first_fetches_tried(w)
        sender, other = await both_pushes(http, w)
        assert sender.status == 200, sender.body
        assert other.outcome == (503, "jwks_unavailable")
        assert int(other.headers["Retry-After"]) >= 1
        ready = await get(http, w.admin_url + "/readyz")
        assert ready.status == 200
        body = ready.json()
        assert body["issuers_ready"] == {"sender": True, "other": False}
        assert body["first_fetches_tried"] is True
        assert "no usable key" in body["issuers"]["other"]
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_ready") == 1
        assert m.value("jwksgate_issuer_ready", issuer="sender") == 1
        assert m.value("jwksgate_issuer_ready", issuer="other") == 0
        assert len(w.backend.received) == 1


async def test_a_jwks_host_down_at_start_recovers_when_it_comes_up() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/jwks"
    async with world(two_issuers(url), wait_ready=False) as w, aiohttp.ClientSession() as http:
        await first_fetches_tried(w)
        assert (await get(http, w.admin_url + "/readyz")).status == 200
        sender, other = await both_pushes(http, w)
        assert sender.status == 200
        assert other.outcome == (503, "jwks_unavailable")
        # The host comes up serving the sender's keys; the next push past the refetch
        # interval fetches them.
        document = {"keys": [w.key.published]}
        async with serve_app(jwks_app(lambda: document), port=port):
            w.clock.advance(11)
            _, other = await both_pushes(http, w)
            assert other.status == 200, other.body
            m = await scrape(http, w.admin_url)
            assert m.value("jwksgate_issuer_ready", issuer="other") == 1


async def test_all_issuers_readiness_is_all_or_nothing() -> None:
    async with (
        other_jwks(lambda: UNUSABLE) as url,
        world(two_issuers(url, readiness="all_issuers"), wait_ready=False) as w,
        aiohttp.ClientSession() as http,
    ):
        await first_fetches_tried(w)
        ready = await get(http, w.admin_url + "/readyz")
        assert ready.status == 503
        assert ready.json()["readiness"] == "all_issuers"
        # Not ready is the pod's state for its Service; the healthy issuer is still served.
        sender, other = await both_pushes(http, w)
        assert (sender.status, other.outcome) == (200, (503, "jwks_unavailable"))
        assert (await scrape(http, w.admin_url)).value("jwksgate_ready") == 0


async def test_not_ready_until_the_first_fetches_were_tried() -> None:
    gate = asyncio.Event()
    document: dict[str, list[Any]] = {"keys": []}
    async with (
        other_jwks(lambda: document, gate) as url,
        world(two_issuers(url), wait_ready=False) as w,
        aiohttp.ClientSession() as http,
    ):
        assert w.running is not None
        await wait_until(lambda: w.running is not None and w.running.gateway.caches["sender"].tried)
        waiting = await get(http, w.admin_url + "/readyz")
        assert waiting.status == 503
        assert waiting.json()["first_fetches_tried"] is False
        document["keys"] = [w.key.published]
        gate.set()
        await first_fetches_tried(w)
        ready = await get(http, w.admin_url + "/readyz")
        assert ready.status == 200
        assert json.loads(ready.body)["issuers_ready"] == {"sender": True, "other": True}
