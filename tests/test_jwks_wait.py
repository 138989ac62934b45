"""Forged tokens cannot hold the gateway's slots waiting for a JWKS refetch (issue 13, item 4's
sibling): a token with an issuer's ``iss`` and a kid that issuer never had (or no kid, and no
key that verifies it) makes the gateway refetch the issuer's keys. While that fetch hangs (a
slow or black-holed JWKS host), at most ``admission.refetch_waiters`` such requests wait for it,
each in a ``max_inflight`` slot; the rest are answered 503 ``jwks_unavailable`` at once, so that
valid pushes of every issuer still find a slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.admission import refetch_waiters
from gateway.config import LimitsConfig, parse_config
from tests.httpkit import Reply, forge, push, scrape
from tests.support import (
    JwksServer,
    World,
    captured_log,
    claims_for,
    gateway_config_data,
    serve_app,
    sign,
    wait_until,
    world,
)

MAX_INFLIGHT = 32
# More forged tokens than slots: without the bound they would hold every one of them.
FORGED = MAX_INFLIGHT + 8
# An eighth of the slots, shared by the two JWT issuers.
WAITERS = refetch_waiters(LimitsConfig(max_inflight=MAX_INFLIGHT), 2)
OTHER_ISS = "https://other.test"
WAITING_LOG = "already wait for its JWKS fetch"


class StallingJwks(JwksServer):
    """A JWKS host that, once told to stall, takes requests and never answers them (until
    released): what a black-holed or overloaded key host looks like to the gateway."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = False
        self.stalled = 0
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        async def jwks(_: web.Request) -> web.Response:
            self.fetches += 1
            if self.stall:
                self.stalled += 1
                await self.release.wait()
            return web.Response(body=self.document(), content_type="application/json")

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        return app


@asynccontextmanager
async def two_issuers(require_kid: bool) -> AsyncIterator[tuple[World, JwksServer]]:
    """``sender`` (on /hook, its JWKS host can stall) and ``other`` (on /other, its own host),
    with few slots so that waiting requests would soon hold them all."""
    other = JwksServer()
    other_key = other.add_key()
    async with serve_app(other.app()) as other_base:

        def configure(w: World) -> Any:
            data = gateway_config_data(
                w.jwks_url,
                w.backend_url,
                issuer={
                    "path_prefix": "/hook",
                    "require_kid": require_kid,
                    # Longer than the test: the stalled fetch is still in flight at its end.
                    "jwks": {"timeout_seconds": 600},
                },
                limits={"max_inflight": MAX_INFLIGHT},
            )
            data["issuers"].append(
                {
                    "name": "other",
                    "issuer": OTHER_ISS,
                    "jwks_url": other_base + "/.well-known/jwks.json",
                    "path_prefix": "/other",
                    "algorithms": ["RS256"],
                    "body_hash": {"claim": "request_body_sha256"},
                }
            )
            return parse_config(data)

        async with world(configure, jwks=StallingJwks()) as w:
            other.keys = [other_key]
            yield w, other


def forged(w: World, body: bytes, *, kid: str | None) -> str:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return forge(header, claims_for(body, w.clock()))


@pytest.mark.parametrize("kid", ["never-published", None], ids=["unknown_kid", "no_kid"])
async def test_forged_tokens_waiting_for_a_stalled_jwks_host_leave_slots_for_valid_pushes(
    http: aiohttp.ClientSession, kid: str | None
) -> None:
    async with two_issuers(require_kid=kid is not None) as (w, other):
        jwks = w.jwks
        assert isinstance(jwks, StallingJwks)
        body = b'{"event":"forged"}'
        assert w.running is not None and WAITERS == 2
        assert w.running.gateway.caches["sender"].max_waiters == WAITERS
        jwks.stall = True
        w.clock.advance(11)  # past min_refresh_interval_seconds: the next miss refetches
        with captured_log() as records:
            try:
                flood = [
                    asyncio.create_task(
                        push(http, w, body, path="/hook", token=forged(w, body, kid=kid))
                    )
                    for _ in range(FORGED)
                ]
                # All but the few waiting for the fetch are answered at once, without it.
                await wait_until(lambda: sum(t.done() for t in flood) == FORGED - WAITERS)
                await wait_until(lambda: jwks.stalled == 1)
                refused = [t.result() for t in flood if t.done()]
                assert {r.outcome for r in refused} == {(503, "jwks_unavailable")}
                assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)

                # The fetch still hangs, the forged ones still wait; valid pushes find slots.
                assert sum(not t.done() for t in flood) == WAITERS
                ok_body = b'{"event":"valid"}'
                other_token = sign(other.keys[0], claims_for(ok_body, w.clock(), issuer=OTHER_ISS))
                mine = await push(http, w, ok_body, path="/other", token=other_token)
                same = await push(http, w, ok_body, path="/hook")  # sender's own, known kid
                assert (mine.status, same.status) == (200, 200)
                assert [r.body for r in w.backend.received] == [ok_body, ok_body]
                assert jwks.stalled == 1  # still the one fetch: refusals start none

                metrics = await scrape(http, w.admin_url)
                refused_metric = "jwksgate_jwks_waits_refused_total"
                assert metrics.value(refused_metric, issuer="sender") == FORGED - WAITERS
                assert metrics.value(refused_metric, issuer="other") == 0
                requests = metrics.samples["jwksgate_requests_total"]
                by_reason = {
                    dict(labels).get("reason"): v
                    for labels, v in requests.items()
                    if dict(labels).get("issuer") == "sender"
                }
                assert by_reason.get("jwks_unavailable") == FORGED - WAITERS
                assert "overloaded" not in by_reason

                # The host answers at last: the waiters learn the kid (or key) is not there.
                waiting = [t for t in flood if not t.done()]
                jwks.release.set()
                waited: list[Reply] = list(await asyncio.gather(*waiting))
            finally:
                jwks.release.set()  # also when an assertion failed: the gateway stops at once
        expected = (401, "unknown_kid") if kid is not None else (401, "bad_signature")
        assert {r.outcome for r in waited} == {expected}
        # One warning for the overflow of the one fetch, naming the issuer and the metric.
        lines = [r.getMessage() for r in records if WAITING_LOG in r.getMessage()]
        assert len(lines) == 1
        assert "issuer sender" in lines[0] and refused_metric in lines[0]
        assert all(r.name == "jwksgate.keys" for r in records if WAITING_LOG in r.getMessage())


@pytest.mark.parametrize(
    ("max_inflight", "jwt_issuers", "each"),
    [(1024, 1, 128), (1024, 10, 12), (32, 2, 2), (8, 2, 1), (8, 0, 1), (1, 50, 1)],
)
def test_refetch_waiters_is_an_eighth_of_the_slots_shared_by_the_jwt_issuers(
    max_inflight: int, jwt_issuers: int, each: int
) -> None:
    assert refetch_waiters(LimitsConfig(max_inflight=max_inflight), jwt_issuers) == each
