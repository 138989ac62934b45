"""The JWKS cache seen from outside: rotation, kid-miss flooding, a JWKS that is
down, stale, hostile or redirecting, Cache-Control and ETag, and the metrics an operator watches.

End to end through the gateway unless a test says otherwise; the JWKS server counts fetches and
the gateway's clock is a ``FakeClock``, so refetch intervals and staleness are crossed by advancing
it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Gateway
from gateway.jwks_cache import JwksCache
from gateway.metrics import Metrics
from tests.httpkit import Reply, config_with, forge, get, push, scrape
from tests.support import (
    FakeClock,
    JwksServer,
    SigningKey,
    World,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    wait_until,
    world,
)

BODY = b'{"event":"ping"}'
PATH = "/.well-known/jwks.json"


class ScriptedJwks(JwksServer):
    """A JWKS server that can also hold fetches (``gate``), stream without Content-Length,
    serve an ``ETag`` and answer ``If-None-Match`` with 304."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = 0
        self.chunked = False
        self.etag: str | None = None
        self.not_modified = 0

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.StreamResponse:
            self.arrived += 1
            await self.gate.wait()
            self.fetches += 1
            if self.status != 200:
                return web.Response(status=self.status, text="unavailable")
            headers = dict(self.headers)
            if self.etag is not None:
                headers["ETag"] = self.etag
                if request.headers.get("If-None-Match") == self.etag:
                    self.not_modified += 1
                    return web.Response(status=304, headers=headers)
            if not self.chunked:
                return web.Response(
                    body=self.document(), content_type="application/json", headers=headers
                )
            resp = web.StreamResponse(headers={"Content-Type": "application/json", **headers})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            doc = self.document()
            for i in range(0, len(doc), 65536):
                await resp.write(doc[i : i + 65536])
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_get(PATH, jwks)
        return app


def jwks_config(**jwks: Any) -> Callable[[World], Any]:
    return config_with(issuer={"jwks": jwks})


def gateway(w: World) -> Gateway:
    assert w.running is not None
    return w.running.gateway


def cache(w: World) -> JwksCache:
    return gateway(w).caches["sender"]


def ghost_key(w: World) -> SigningKey:
    """A well-formed key the issuer does not publish."""
    key = w.jwks.add_key()
    w.jwks.keys.remove(key)
    return key


def forged(w: World, kid: str) -> str:
    """A token naming ``kid``, with valid claims and a signature nothing verifies (cheap)."""
    return forge({"alg": "RS256", "typ": "JWT", "kid": kid}, claims_for(BODY, w.clock()))


async def fetches(http: aiohttp.ClientSession, w: World) -> dict[str, float]:
    m = await scrape(http, w.admin_url)
    return {
        r: m.value("jwksgate_jwks_fetches_total", issuer="sender", result=r)
        for r in ("success", "failure", "not_modified")
    }


# -- rotation and kid-miss flooding --------------------------------------------------------------
async def test_rotated_key_triggers_exactly_one_refetch_and_is_accepted(
    w: World, http: aiohttp.ClientSession
) -> None:
    assert w.jwks.fetches == 1
    new = w.jwks.add_key()
    w.clock.advance(11)  # past min_refresh_interval_seconds (10)
    reply = await push(http, w, BODY, token=w.token(BODY, key=new))
    assert reply.status == 200, reply.body
    assert w.jwks.fetches == 2
    # Now cached: neither the new nor the old key costs another fetch.
    for key in (new, w.key, new):
        assert (await push(http, w, BODY, token=w.token(BODY, key=key))).status == 200
    assert w.jwks.fetches == 2


async def test_new_kid_right_after_a_successful_fetch_is_unknown_until_the_interval(
    w: World, http: aiohttp.ClientSession
) -> None:
    new = w.jwks.add_key()
    reply = await push(http, w, BODY, token=w.token(BODY, key=new))
    # The set was fetched successfully less than min_refresh_interval ago: truly absent.
    assert reply.outcome == (401, "unknown_kid")
    assert reply.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert w.jwks.fetches == 1
    w.clock.advance(10.5)
    assert (await push(http, w, BODY, token=w.token(BODY, key=new))).status == 200
    assert w.jwks.fetches == 2


async def test_random_kid_flood_causes_at_most_a_handful_of_fetches(
    w: World, http: aiohttp.ClientSession
) -> None:
    w.clock.advance(11)  # a refetch is allowed: the flood may use it once, not 1,000 times
    tokens = [forged(w, uuid.uuid4().hex) for _ in range(1000)]
    replies: list[Reply] = []
    for start in range(0, len(tokens), 50):
        batch = tokens[start : start + 50]
        replies += await asyncio.gather(*(push(http, w, BODY, token=t) for t in batch))
    assert {r.outcome for r in replies} == {(401, "unknown_kid")}
    assert len(replies) == 1000
    assert w.jwks.fetches <= 3
    m = await scrape(http, w.admin_url)
    suppressed = m.value("jwksgate_jwks_refetches_suppressed_total", issuer="sender")
    assert suppressed >= 1000 - 50  # all but the first batch, which shared the one refetch
    assert w.backend.received == []


async def test_concurrent_requests_with_one_new_kid_share_one_fetch() -> None:
    jwks = ScriptedJwks()
    # No refetch interval at all: only coalescing can keep this to one fetch.
    configure = jwks_config(min_refresh_interval_seconds=0)
    async with world(configure, jwks=jwks) as w, aiohttp.ClientSession() as http:
        assert jwks.arrived == 1
        new = jwks.add_key()
        jwks.gate.clear()
        pushes = [
            asyncio.ensure_future(push(http, w, BODY, token=w.token(BODY, key=new)))
            for _ in range(10)
        ]
        await wait_until(lambda: jwks.arrived == 2)
        # All ten are now parked on the one fetch that the gate holds.
        await wait_until(lambda: gateway(w).inflight == 10)
        jwks.gate.set()
        replies = await asyncio.gather(*pushes)
        assert [r.status for r in replies] == [200] * 10
        assert jwks.arrived == 2
        assert len(w.backend.received) == 10


# -- the JWKS is down ----------------------------------------------------------------------------
async def test_jwks_down_at_startup_then_recovering() -> None:
    def configure(w: World) -> Any:
        w.jwks.status = 500  # before the gateway's first fetch
        return gateway_config(w.jwks_url, w.backend_url)

    async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
        await wait_until(lambda: cache(w).failures >= 1)
        assert (await get(http, w.admin_url + "/livez")).status == 200
        ready = await get(http, w.admin_url + "/readyz")
        # The first fetch was tried: the pod is ready, the issuer is not (readiness: per_issuer).
        assert ready.status == 200
        assert ready.json()["issuers_ready"] == {"sender": False}
        status = ready.json()["issuers"]["sender"]
        assert status != "ok" and "500" in status
        reply = await push(http, w, BODY)
        assert reply.outcome == (503, "jwks_unavailable")
        assert int(reply.headers["Retry-After"]) >= 1
        assert w.backend.received == []

        w.jwks.status = 200
        w.clock.advance(11)
        reply = await push(http, w, BODY)
        assert reply.status == 200, reply.body
        assert (await get(http, w.admin_url + "/readyz")).json()["issuers_ready"]["sender"] is True
        assert len(w.backend.received) == 1


async def test_jwks_down_after_first_fetch_keeps_cached_keys_and_answers_503_for_unknown(
    w: World, http: aiohttp.ClientSession
) -> None:
    w.jwks.status = 503
    w.clock.advance(11)
    ghost = ghost_key(w)
    reply = await push(http, w, BODY, token=w.token(BODY, key=ghost))
    # The fetch failed: the kid may be a new key the gateway cannot see yet.
    assert reply.outcome == (503, "jwks_unavailable")
    assert int(reply.headers["Retry-After"]) >= 1
    assert (await fetches(http, w))["failure"] == 1
    # Still within the interval, and the last fetch failed: still 503, never 401.
    reply = await push(http, w, BODY, token=w.token(BODY, key=ghost))
    assert reply.outcome == (503, "jwks_unavailable")
    # The last good set keeps verifying.
    assert (await push(http, w, BODY)).status == 200
    assert (await get(http, w.admin_url + "/readyz")).status == 200


async def test_key_set_older_than_max_stale_is_not_used() -> None:
    async with world(jwks_config(max_stale_seconds=60)) as w, aiohttp.ClientSession() as http:
        assert (await push(http, w, BODY)).status == 200
        w.jwks.status = 500
        w.clock.advance(61)
        reply = await push(http, w, BODY)
        assert reply.outcome == (503, "jwks_unavailable")
        ready = await get(http, w.admin_url + "/readyz")
        assert (ready.status, ready.json()["issuers_ready"]) == (200, {"sender": False})
        assert "max_stale" in ready.json()["issuers"]["sender"]
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 61
        # The issuer comes back: a fresh set is usable again.
        w.jwks.status = 200
        w.clock.advance(11)
        assert (await push(http, w, BODY)).status == 200
        assert (await get(http, w.admin_url + "/readyz")).json()["issuers_ready"]["sender"] is True


async def test_slow_jwks_times_out_into_503_not_a_hang() -> None:
    async with world(jwks_config(timeout_seconds=0.2)) as w, aiohttp.ClientSession() as http:
        w.jwks.delay = 1.0
        w.clock.advance(11)
        reply = await push(http, w, BODY, token=w.token(BODY, key=ghost_key(w)))
        assert reply.outcome == (503, "jwks_unavailable")
        assert (await push(http, w, BODY)).status == 200
        assert (await fetches(http, w))["failure"] == 1


# -- hostile JWKS contents -----------------------------------------------------------------------
def _hostile_documents(good: dict[str, Any]) -> dict[str, bytes]:
    many = [{**good, "kid": f"k{i}"} for i in range(101)]
    return {
        "over_1_MiB": json.dumps({"keys": [good], "pad": "x" * (1 << 20)}).encode(),
        "not_json": b"<html><body>Service Unavailable</body></html>",
        "json_array": b"[]",
        "keys_not_a_list": b'{"keys": {"a": 1}}',
        "no_keys_member": b'{"jwks": []}',
        "empty_key_list": b'{"keys": []}',
        "duplicate_members": b'{"keys": [%s], "keys": []}' % json.dumps(good).encode(),
        "101_keys": json.dumps({"keys": many}).encode(),
        "only_unusable_keys": json.dumps(
            {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}, {"kty": "RSA", "kid": "x"}]}
        ).encode(),
        "invalid_utf8": b'{"keys": ["\xff\xfe"]}',
        "deeply_nested": b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }


HOSTILE = sorted(_hostile_documents({}))


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_jwks_is_a_failed_fetch_and_the_last_good_set_stays(
    name: str, chunked: bool
) -> None:
    jwks = ScriptedJwks()
    jwks.chunked = chunked
    async with world(jwks=jwks) as w, aiohttp.ClientSession() as http:
        jwks.raw = _hostile_documents(w.key.published)[name]
        w.clock.advance(11)
        reply = await push(http, w, BODY, token=w.token(BODY, key=ghost_key(w)))
        assert reply.outcome == (503, "jwks_unavailable")
        assert (await push(http, w, BODY)).status == 200
        counts = await fetches(http, w)
        assert (counts["success"], counts["failure"]) == (1, 1)
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_keys", issuer="sender") == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
async def test_jwks_of_exactly_the_limits_is_accepted(chunked: bool) -> None:
    jwks = ScriptedJwks()
    jwks.chunked = chunked
    async with world(jwks=jwks) as w, aiohttp.ClientSession() as http:
        keys = [{**w.key.published, "kid": f"k{i}"} for i in range(99)] + [w.key.published]
        doc = json.dumps({"keys": keys, "pad": ""}).encode()
        jwks.raw = doc[:-2] + b"x" * ((1 << 20) - len(doc)) + doc[-2:]
        assert len(jwks.raw) == 1 << 20  # max_bytes, with max_keys keys
        w.clock.advance(11)
        reply = await push(http, w, BODY, token=w.token(BODY, key=ghost_key(w)))
        assert reply.outcome == (401, "unknown_kid")  # the fetch succeeded: truly absent
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_keys", issuer="sender") == 100
        assert (await fetches(http, w))["success"] == 2


@pytest.mark.parametrize("name", ["over_1_MiB", "not_json", "101_keys", "only_unusable_keys"])
async def test_hostile_jwks_at_startup_leaves_the_gateway_unready(name: str) -> None:
    def configure(w: World) -> Any:
        w.jwks.raw = _hostile_documents(w.key.published)[name]
        return gateway_config(w.jwks_url, w.backend_url)

    async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
        await wait_until(lambda: cache(w).failures >= 1)
        assert (await get(http, w.admin_url + "/readyz")).json()["issuers_ready"]["sender"] is False
        assert (await push(http, w, BODY)).outcome == (503, "jwks_unavailable")
        assert (await get(http, w.admin_url + "/livez")).status == 200


async def test_malformed_keys_among_good_ones_do_not_spoil_the_good_ones() -> None:
    def configure(w: World) -> Any:
        second = w.jwks.add_key(kty="EC")
        bad: list[Any] = [
            {"kty": "RSA", "kid": "broken-n", "n": "!!!", "e": "AQAB"},
            {"kty": "RSA", "kid": "no-e", "n": w.key.published["n"]},
            {"kty": "oct", "kid": "symmetric", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "OKP", "kid": "okp", "crv": "Ed25519", "x": "AA"},
            {**w.key.published, "kid": "for-encryption", "use": "enc"},
            {**w.key.published, "kid": 12},
            "not an object",
            None,
        ]
        keys = [bad[0], w.key.published, *bad[1:], second.published]
        w.jwks.raw = json.dumps({"keys": keys}).encode()
        return gateway_config(w.jwks_url, w.backend_url)

    async with world(configure) as w, aiohttp.ClientSession() as http:
        second = w.jwks.keys[-1]
        assert (await push(http, w, BODY)).status == 200
        assert (await push(http, w, BODY, token=w.token(BODY, key=second))).status == 200
        # A dropped key is absent, and the fetch succeeded: 401, not 503.
        reply = await push(http, w, BODY, token=forged(w, "for-encryption"))
        assert reply.outcome == (401, "unknown_kid")
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_keys", issuer="sender") == 2
        dropped = sum(m.samples["jwksgate_jwks_keys_dropped_total"].values())
        assert dropped == 9


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(status: int) -> None:
    async with world() as origin:

        async def redirect(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": origin.jwks_url})

        app = web.Application()
        app.router.add_get(PATH, redirect)
        async with serve_app(app) as base:

            def configure(w: World) -> Any:
                return gateway_config(base + PATH, w.backend_url)

            async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
                await wait_until(lambda: cache(w).failures >= 1)
                assert origin.jwks.fetches == 1  # its own gateway's; the redirect was not followed
                assert (await get(http, w.admin_url + "/readyz")).json()["issuers_ready"][
                    "sender"
                ] is False
                reply = await push(http, w, BODY, token=w.token(BODY, key=origin.key))
                assert reply.outcome == (503, "jwks_unavailable")
                assert (await fetches(http, w))["success"] == 0


# -- Cache-Control and ETag ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        (None, 300),
        ("max-age=60", 60),
        ("public, max-age=120", 120),
        ("MAX-AGE=45, must-revalidate", 45),
        ("max-age=5", 10),  # never below min_refresh_interval_seconds
        ("max-age=0", 10),
        ("max-age=100000", 300),  # never above ttl_seconds
        ("no-store", 10),
        ("no-cache", 10),
        ("private", 300),
        ("s-maxage=30", 300),
    ],
)
async def test_cache_control_max_age_is_honoured_within_bounds(
    cache_control: str | None, expected: float
) -> None:
    jwks = JwksServer()
    jwks.add_key()
    if cache_control is not None:
        jwks.headers = {"Cache-Control": cache_control}
    async with serve_app(jwks.app()) as base, aiohttp.ClientSession() as session:
        config = gateway_config(
            base + PATH,
            "http://127.0.0.1:9",
            issuer={"jwks": {"ttl_seconds": 300, "min_refresh_interval_seconds": 10}},
        )
        c = JwksCache(config.issuers[0], session, Metrics(["sender"]), FakeClock())
        await c.refresh()
        assert c.ready()
        assert c.refresh_after == expected


async def test_failed_fetches_back_off_then_the_ttl_resumes() -> None:
    jwks = JwksServer()
    jwks.add_key()
    jwks.status = 500
    async with serve_app(jwks.app()) as base, aiohttp.ClientSession() as session:
        config = gateway_config(base + PATH, "http://127.0.0.1:9")
        c = JwksCache(config.issuers[0], session, Metrics(["sender"]), FakeClock())
        afters = []
        for _ in range(4):
            await c.refresh()
            afters.append(c.refresh_after)
        assert afters == [1, 2, 4, 8]
        assert not c.ready()
        jwks.status = 200
        await c.refresh()
        assert c.ready()
        assert c.refresh_after == 300


async def test_etag_revalidation_is_counted_as_not_modified() -> None:
    jwks = ScriptedJwks()
    jwks.etag = '"v1"'
    async with world(jwks=jwks) as w, aiohttp.ClientSession() as http:
        w.clock.advance(100)
        await cache(w).refresh()
        assert jwks.not_modified == 1
        counts = await fetches(http, w)
        assert counts == {"success": 1, "failure": 0, "not_modified": 1}
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 0  # revalidated now
        assert m.value("jwksgate_jwks_keys", issuer="sender") == 1
        assert (await push(http, w, BODY)).status == 200
        # A changed set under a new ETag is fetched whole.
        new = jwks.add_key()
        jwks.etag = '"v2"'
        w.clock.advance(11)
        assert (await push(http, w, BODY, token=w.token(BODY, key=new))).status == 200
        assert (await fetches(http, w))["success"] == 2


async def test_etag_of_a_rejected_document_does_not_revalidate_the_old_set() -> None:
    # The issuer publishes a set the gateway refuses. Its ETag must not be remembered: a 304
    # for it would otherwise refresh the *old* set, hiding the failure (401 instead of 503)
    # and keeping a set the issuer no longer publishes past max_stale_seconds.
    jwks = ScriptedJwks()
    jwks.etag = '"v1"'
    configure = jwks_config(max_stale_seconds=60)
    async with world(configure, jwks=jwks) as w, aiohttp.ClientSession() as http:
        jwks.raw = b"not json"
        jwks.etag = '"v2"'
        ghost = ghost_key(w)
        for _ in range(3):
            w.clock.advance(11)
            reply = await push(http, w, BODY, token=w.token(BODY, key=ghost))
            assert reply.outcome == (503, "jwks_unavailable")
        counts = await fetches(http, w)
        assert counts == {"success": 1, "failure": 3, "not_modified": 0}
        w.clock.advance(61 - 33)
        assert (await push(http, w, BODY)).outcome == (503, "jwks_unavailable")
        assert (await get(http, w.admin_url + "/readyz")).json()["issuers_ready"]["sender"] is False


# -- metrics -------------------------------------------------------------------------------------
async def test_jwks_metrics_follow_fetches_keys_age_and_suppressed_refetches(
    w: World, http: aiohttp.ClientSession
) -> None:
    m = await scrape(http, w.admin_url)
    assert await fetches(http, w) == {"success": 1, "failure": 0, "not_modified": 0}
    assert m.value("jwksgate_jwks_keys", issuer="sender") == 1
    assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 0
    assert m.value("jwksgate_jwks_refetches_suppressed_total", issuer="sender") == 0

    w.clock.advance(42)
    m = await scrape(http, w.admin_url)
    assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 42

    # Rotation: two more keys, fetched by the first token that names one.
    new = [w.jwks.add_key(), w.jwks.add_key(kty="EC")]
    assert (await push(http, w, BODY, token=w.token(BODY, key=new[0]))).status == 200
    m = await scrape(http, w.admin_url)
    assert m.value("jwksgate_jwks_keys", issuer="sender") == 3
    assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 0
    assert await fetches(http, w) == {"success": 2, "failure": 0, "not_modified": 0}

    # Unknown kids within the interval: each refetch is suppressed and counted.
    for _ in range(3):
        assert (await push(http, w, BODY, token=forged(w, "nope"))).outcome == (
            401,
            "unknown_kid",
        )
    m = await scrape(http, w.admin_url)
    assert m.value("jwksgate_jwks_refetches_suppressed_total", issuer="sender") == 3

    # A failure is counted; the key count and age still describe the last good set.
    w.jwks.status = 500
    w.clock.advance(20)
    assert (await push(http, w, BODY, token=forged(w, "nope"))).outcome == (
        503,
        "jwks_unavailable",
    )
    m = await scrape(http, w.admin_url)
    assert await fetches(http, w) == {"success": 2, "failure": 1, "not_modified": 0}
    assert m.value("jwksgate_jwks_keys", issuer="sender") == 3
    assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 20


async def test_jwks_age_is_minus_one_before_the_first_success() -> None:
    def configure(w: World) -> Any:
        w.jwks.status = 500
        return gateway_config(w.jwks_url, w.backend_url)

    async with world(configure, wait_ready=False) as w, aiohttp.ClientSession() as http:
        await wait_until(lambda: cache(w).failures >= 1)
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == -1
        assert m.value("jwksgate_jwks_keys", issuer="sender") == 0
        assert m.value("jwksgate_jwks_fetches_total", issuer="sender", result="failure") >= 1


async def test_kidless_issuer_follows_a_key_rotation() -> None:
    jwks = JwksServer()
    first = jwks.add_key(kid=None)

    def configure(w: World) -> object:
        return gateway_config(
            w.jwks_url,
            w.backend_url,
            issuer={"require_kid": False, "replay_key": "token", "require_claims": ["iat"]},
        )

    async with world(configure, jwks=jwks) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]

        async def push(key: SigningKey) -> tuple[int, str]:
            token = sign(key, claims_for(BODY, w.clock()), omit_kid=True)
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                return resp.status, answer.get("error", "") if isinstance(answer, dict) else ""

        assert (await push(first))[0] == 200
        fetches = jwks.fetches
        rotated = jwks.add_key(kid=None)  # the sender rotates: a new key, signs with it
        assert await push(rotated) == (401, "bad_signature")  # within the refetch interval
        assert jwks.fetches == fetches
        w.clock.advance(11)
        assert (await push(rotated))[0] == 200  # one refetch, then the new key verifies
        assert jwks.fetches == fetches + 1
        w.clock.advance(11)
        jwks.status = 500
        again = jwks.add_key(kid=None)
        assert await push(again) == (503, "jwks_unavailable")  # cannot know: not a 401
