"""The Redis replay store against a real redis-server (and a real 3-node Redis Cluster)."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from redis import asyncio as aioredis

from gateway.config import Config, parse_config
from gateway.errors import Rejection
from gateway.lifecycle import RunningGateway, run_gateway
from gateway.metrics import Metrics
from gateway.redis_store import RedisReplayStore
from tests.redis_support import RedisProcess, redis_cluster, redis_server, start_redis
from tests.support import World, free_port, gateway_config, wait_until, world
from tests.tls_support import TestCA


def store_for(url: str, **extra: object) -> RedisReplayStore:
    cfg = parse_config(
        {
            "replay": {"store": "redis", "redis_url": url, **extra},
            "issuers": [{"name": "x", "jwks_url": "http://127.0.0.1:1/j", "issuer": "x"}],
        }
    ).replay
    return RedisReplayStore(cfg, Metrics())


def redis_world(url: str, **replay: object) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        return gateway_config(
            w.jwks_url, w.backend_url, replay={"store": "redis", "redis_url": url, **replay}
        )

    return configure


async def post(http: aiohttp.ClientSession, url: str, token: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(url + "/hook", data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_reserve_commit_release_semantics() -> None:
    with redis_server() as r:
        store = store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            key = b"sender:" + bytes(range(32))
            assert await store.reserve(key, 5.0) is True
            with pytest.raises(Rejection) as held:
                await store.reserve(key, 5.0)  # in flight elsewhere: retry, not "delivered"
            assert (held.value.reason, held.value.status) == ("replay_in_flight", 503)
            assert held.value.retry_after in (1, 2, 3, 4, 5)
            name = store.redis_key(key)
            assert name == "jwksgate:replay:sender:" + bytes(range(32)).hex()
            assert 0 < await raw.pttl(name) <= 5000
            held_value = await raw.get(name)
            assert isinstance(held_value, bytes) and held_value.startswith(b"r:")
            await store.commit(key, 600.0)
            assert 595_000 < await raw.pttl(name) <= 600_000
            assert await raw.get(name) == b"d"
            assert await store.reserve(key, 5.0) is False  # delivered: refused
            other = b"sender:" + bytes(32)
            assert await store.reserve(other, 5.0) is True
            await store.release(other)
            assert await raw.exists(store.redis_key(other)) == 0
            assert await store.reserve(other, 5.0) is True  # the retry is accepted
        finally:
            await store.close()
            await raw.aclose()


async def test_release_never_frees_another_owners_reservation() -> None:
    with redis_server() as r:
        a, b = store_for(r.url), store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            key = b"sender:" + bytes(32)
            assert await a.reserve(key, 5.0)
            await raw.delete(a.redis_key(key))  # a's reservation expired meanwhile
            assert await b.reserve(key, 5.0)
            await a.release(key)  # late release by a
            assert await raw.exists(b.redis_key(key)) == 1
            with pytest.raises(Rejection) as held:
                await a.reserve(key, 5.0)
            assert held.value.reason == "replay_in_flight"
            # Nor a delivered key: b commits, a late release by anybody leaves it delivered.
            await b.commit(key, 600.0)
            assert await raw.get(b.redis_key(key)) == b"d"
            await a.release(key)
            assert await a.reserve(key, 5.0) is False
        finally:
            await a.close()
            await b.close()
            await raw.aclose()


async def test_push_through_redis_store_and_replay_refused() -> None:
    with redis_server() as r:
        async with world(redis_world(r.url)) as w, aiohttp.ClientSession() as http:
            body = b'{"n":1}'
            token = w.token(body)
            assert await post(http, w.url, token, body) == 200
            assert await post(http, w.url, token, body) == 409
            assert len(w.backend.received) == 1
            raw = aioredis.Redis.from_url(r.url)
            keys = [k.decode() async for k in raw.scan_iter("jwksgate:replay:*")]
            await raw.aclose()
            assert len(keys) == 1 and keys[0].startswith("jwksgate:replay:https://sender.test:")


@asynccontextmanager
async def two_gateways(w: World, url: str) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    config = gateway_config(w.jwks_url, w.backend_url, replay={"store": "redis", "redis_url": url})
    async with AsyncExitStack() as stack:
        g1 = await stack.enter_async_context(run_gateway(config, clock=w.clock))
        g2 = await stack.enter_async_context(run_gateway(config, clock=w.clock))
        for g in (g1, g2):
            await wait_until(lambda g=g: all(c.ready() for c in g.gateway.caches.values()))  # type: ignore[misc]
        yield g1, g2


async def test_two_replicas_share_replay_state() -> None:
    with redis_server() as r:
        async with (
            world() as w,
            two_gateways(w, r.url) as (g1, g2),
            aiohttp.ClientSession() as http,
        ):
            body = b'{"event":"paid"}'
            token = w.token(body)
            assert await post(http, g1.url, token, body) == 200
            assert await post(http, g2.url, token, body) == 409
            # The same token sent to both replicas at the same instant: forwarded once.
            racing = w.token(body)
            before = len(w.backend.received)
            statuses = await asyncio.gather(
                *(post(http, g.url, racing, body) for g in (g1, g2) for _ in range(10))
            )
            # The others are told "delivered" (409) once it was, "in flight" (503) before.
            assert sorted(statuses).count(200) == 1
            assert set(statuses) <= {200, 409, 503}
            assert len(w.backend.received) == before + 1


async def test_redis_down_fails_closed_then_recovers_without_restart() -> None:
    with redis_server() as r:
        async with world(redis_world(r.url)) as w, aiohttp.ClientSession() as http:
            body = b"{}"
            assert await post(http, w.url, w.token(body), body) == 200
            r.stop()
            token = w.token(body)
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(w.url + "/hook", data=body, headers=headers) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"] == "replay_store_unavailable"
                assert int(resp.headers["Retry-After"]) >= 1
            async with http.get(w.admin_url + "/readyz") as resp:
                assert resp.status == 503
                assert "redis" in (await resp.json())["replay_store"]
            assert len(w.backend.received) == 1
            r.start()  # same port, empty: the gateway reconnects by itself
            assert await post(http, w.url, token, body) == 200  # the refused push, retried
            async with http.get(w.admin_url + "/readyz") as resp:
                assert resp.status == 200
            async with http.get(w.admin_url + "/metrics") as resp:
                text = await resp.text()
            assert 'jwksgate_replay_store_errors_total{store="redis"}' in text
            refused = 'outcome="rejected",reason="replay_store_unavailable"} 1.0'
            assert 'jwksgate_requests_total{issuer="sender",' + refused in text


async def test_on_store_error_allow_forwards_without_replay_protection() -> None:
    with redis_server() as r:
        configure = redis_world(r.url, on_store_error="allow")
        async with world(configure) as w, aiohttp.ClientSession() as http:
            r.stop()
            body = b"{}"
            token = w.token(body)
            assert await post(http, w.url, token, body) == 200
            assert len(w.backend.received) == 1


@pytest.mark.slow
async def test_redis_cluster_mode() -> None:
    with redis_cluster(3) as nodes:
        url = f"redis://127.0.0.1:{nodes[0].port}/0"
        async with (
            world(redis_world(url, redis_mode="cluster")) as w,
            aiohttp.ClientSession() as http,
        ):
            body = b'{"x":1}'
            tokens = [w.token(body) for _ in range(20)]
            assert [await post(http, w.url, t, body) for t in tokens] == [200] * 20
            assert [await post(http, w.url, t, body) for t in tokens] == [409] * 20
            assert len(w.backend.received) == 20
            # The keys landed on more than one node: the store really is sharded.
            per_node = []
            for node in nodes:
                raw = aioredis.Redis(port=node.port)
                per_node.append(await raw.dbsize())
                await raw.aclose()
            assert sum(per_node) == 20
            assert sum(1 for n in per_node if n) >= 2


def test_redis_process_helper_uses_a_free_port() -> None:
    with redis_server() as r:
        assert isinstance(r, RedisProcess) and r.port not in (6379, 8080)
        assert r.proc is not None and r.answering_pid() == r.proc.pid


def test_a_port_taken_before_redis_binds_it_is_detected_and_another_is_tried(
    tmp_path: Path,
) -> None:
    # The free_port() race: between choosing a port and binding it, another server takes it.
    with redis_server() as taken:
        ports = iter([taken.port])
        r = start_redis(tmp_path, [], lambda: next(ports, None) or free_port())
        try:
            assert r.port != taken.port
            assert r.proc is not None and r.answering_pid() == r.proc.pid
        finally:
            r.stop()


async def test_rediss_with_acl_user_and_ca_bundle(tmp_path: Path) -> None:
    ca = TestCA()
    cert, key = ca.server_cert().write(tmp_path, "redis")
    ca_file = ca.write(tmp_path)
    port = free_port()
    tls = [
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca_file,
        "--tls-auth-clients", "no",
        "--user", "default", "off",
        "--user", "jwksgate", "on", ">s3cret-pass", "~jwksgate:*", "+@all",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        r = RedisProcess(port=port, workdir=Path(d), extra=tls)
        r.start()
        try:
            url = f"rediss://jwksgate:s3cret-pass@127.0.0.1:{port}/0"
            trusted = store_for(url, redis_ca_file=ca_file)
            untrusted = store_for(url)  # system CAs do not know the test CA
            wrong_password = store_for(url.replace("s3cret", "wrong"), redis_ca_file=ca_file)
            try:
                key_bytes = b"sender:" + bytes(32)
                assert await trusted.ready() is None
                assert await trusted.reserve(key_bytes, 5.0) is True
                await trusted.commit(key_bytes, 60.0)
                assert await trusted.reserve(key_bytes, 5.0) is False
                for bad in (untrusted, wrong_password):
                    assert await bad.ready() is not None
                    with pytest.raises(Rejection) as refused:
                        await bad.reserve(b"sender:" + bytes(range(32)), 5.0)
                    assert refused.value.reason == "replay_store_unavailable"
            finally:
                for s in (trusted, untrusted, wrong_password):
                    await s.close()
        finally:
            r.stop()


# -- issue 14: orphans, the commit window, the pool ----------------------------------------------


async def test_an_orphaned_reservation_is_in_flight_until_its_hold_ends() -> None:
    """A replica that died holding a key: the others answer "in flight" (retry), never 409, and
    take the key once the hold has run out."""
    with redis_server() as r:
        dead, alive = store_for(r.url), store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            key = b"sender:" + bytes(range(1, 33))
            assert await dead.reserve(key, 0.3) is True
            await dead.close()  # gone without a release or a commit
            with pytest.raises(Rejection) as held:
                await alive.reserve(key, 5.0)
            assert (held.value.reason, held.value.retry_after) == ("replay_in_flight", 1)
            for _ in range(300):  # Redis expires the hold (bounded poll, nothing timed)
                if not await raw.exists(alive.redis_key(key)):
                    break
                await asyncio.sleep(0.01)
            assert await alive.reserve(key, 5.0) is True
        finally:
            await alive.close()
            await raw.aclose()


async def test_keys_written_by_0_1_0_keep_their_meaning() -> None:
    """0.1.0 stored the owner for a reservation and a commit alike: a TTL beyond the hold can
    only be a commit (delivered); within it, a reservation (in flight)."""
    with redis_server() as r:
        store = store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            committed, reserved = b"sender:" + bytes(32), b"sender:" + bytes(range(32))
            await raw.set(store.redis_key(committed), "0" * 32, px=600_000)
            await raw.set(store.redis_key(reserved), "1" * 32, px=4_000)
            assert await store.reserve(committed, 5.0) is False
            with pytest.raises(Rejection) as held:
                await store.reserve(reserved, 5.0)
            assert held.value.reason == "replay_in_flight"
        finally:
            await store.close()
            await raw.aclose()


async def test_commit_outlasts_a_stalled_redis_within_the_hold() -> None:
    """Delivered while Redis is stalled (SIGSTOP): the commit keeps trying for as long as the
    reservation holds, not three quick tries, so the key ends up delivered, not expired."""
    with redis_server() as r:
        assert r.proc is not None
        store = store_for(r.url, redis_timeout_seconds=0.1)
        metrics = store._metrics
        raw = aioredis.Redis.from_url(r.url)
        try:
            key = b"sender:" + bytes(range(2, 34))
            assert await store.reserve(key, 30.0) is True
            errors = metrics.replay_store_errors.labels(store="redis")
            r.proc.send_signal(signal.SIGSTOP)
            try:
                commit = asyncio.ensure_future(store.commit(key, 600.0))
                # Past the three attempts 0.1.0 made before giving up (bounded poll).
                for _ in range(3000):
                    if errors._value.get() >= 5 or commit.done():
                        break
                    await asyncio.sleep(0.01)
                assert not commit.done(), "the commit gave up while the hold still lasted"
            finally:
                r.proc.send_signal(signal.SIGCONT)
            await asyncio.wait_for(commit, 30)
            assert await raw.get(store.redis_key(key)) == b"d"
            assert await raw.pttl(store.redis_key(key)) > 30_000
            assert metrics.replay_commit_failures.labels(store="redis")._value.get() == 0
        finally:
            await store.close()
            await raw.aclose()


async def test_more_calls_than_the_pool_wait_for_a_connection() -> None:
    """50 reservations at once through a pool of 2: they queue for a connection (within the
    timeout) instead of failing at once with 503 replay_store_unavailable."""
    with redis_server() as r:
        store = store_for(r.url, redis_pool_size=2)
        try:
            keys = [b"sender:" + bytes([i]) * 32 for i in range(50)]
            assert await asyncio.gather(*(store.reserve(k, 5.0) for k in keys)) == [True] * 50
            await asyncio.gather(*(store.commit(k, 60.0) for k in keys))
            assert await asyncio.gather(*(store.reserve(k, 5.0) for k in keys)) == [False] * 50
            assert store._metrics.replay_store_errors.labels(store="redis")._value.get() == 0
        finally:
            await store.close()


async def test_more_concurrent_pushes_than_the_pool_are_all_delivered() -> None:
    with redis_server() as r:
        async with (
            world(redis_world(r.url, redis_pool_size=1)) as w,
            aiohttp.ClientSession() as http,
        ):
            bodies = [b'{"n":%d}' % i for i in range(40)]
            tokens = [w.token(b) for b in bodies]
            statuses = await asyncio.gather(
                *(post(http, w.url, t, b) for t, b in zip(tokens, bodies, strict=True))
            )
            assert statuses == [200] * 40
            assert len(w.backend.received) == 40
