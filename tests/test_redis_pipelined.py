"""The standalone Redis store's pipelined connection (gateway.redis_conn), against a real
redis-server: the calls made in one event-loop iteration go out in one write and come back in
order, each with its own outcome; a Redis that dies or stalls under a batch fails every call in it
(503 ``replay_store_unavailable`` for a reserve) and the retries work once Redis is back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from redis import asyncio as aioredis

from gateway.errors import Rejection
from gateway.redis_conn import Endpoint, LinkDown, RedisLink, ReplyError, pack
from gateway.redis_store import RedisReplayStore
from tests.redis_support import redis_server
from tests.support import refused_port
from tests.test_redis_store import store_for

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Each test on both loops: the gateway runs on uvloop when it is installed, and uvloop's
    transports call the protocol back at other moments than asyncio's."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return lambda coro: uvloop.run(coro)
    return lambda coro: asyncio.run(coro)


def key(i: int) -> bytes:
    return b"sender:" + bytes([i]) * 32


def record_writes(link: RedisLink) -> list[int]:
    """How many calls each write to the connection carried (in order)."""
    sizes: list[int] = []
    write = link._write

    def counting(conn: Any, calls: list[Any]) -> None:
        sizes.append(len(calls))
        write(conn, calls)

    link._write = counting  # type: ignore[method-assign]
    return sizes


def link_of(store: RedisReplayStore) -> RedisLink:
    assert store._link is not None
    return store._link


def test_pack_is_resp() -> None:
    assert pack(["SET", "k", 12, b"\x00\r\n"]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n\x00\r\n\r\n"
    )


def test_concurrent_reserves_share_one_write_and_each_gets_its_own_outcome(run: Runner) -> None:
    run(_concurrent_reserves_share_one_write_and_each_gets_its_own_outcome())


async def _concurrent_reserves_share_one_write_and_each_gets_its_own_outcome() -> None:
    with redis_server() as r:
        store, other = store_for(r.url), store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            await raw.set(store.redis_key(key(1)), "d", px=60_000)  # delivered
            assert await other.reserve(key(2), 5.0)  # held by another replica
            writes = record_writes(link_of(store))
            outcomes = await asyncio.gather(
                store.reserve(key(1), 5.0),
                store.reserve(key(2), 5.0),
                store.reserve(key(3), 5.0),
                store.reserve(key(3), 5.0),  # the same key twice in one batch: one wins
                store.reserve(key(4), 5.0),
                return_exceptions=True,
            )
            assert writes == [5], writes  # one write for the five calls
            assert outcomes[0] is False
            assert isinstance(outcomes[1], Rejection)
            assert outcomes[1].reason == "replay_in_flight"
            assert outcomes[2] is True
            assert isinstance(outcomes[3], Rejection)
            assert outcomes[3].reason == "replay_in_flight"
            assert outcomes[4] is True
            # Commits batch too, and each lands on its own key.
            writes.clear()
            await asyncio.gather(store.commit(key(3), 60.0), store.commit(key(4), 60.0))
            assert writes == [2], writes
            for k in (key(3), key(4)):
                assert await raw.get(store.redis_key(k)) == b"d"
            assert await raw.get(store.redis_key(key(2))) != b"d"
        finally:
            for s in (store, other):
                await s.close()
            await raw.aclose()


@pytest.mark.parametrize("scheme", ["rediss", "REDISS", "Rediss"])
def test_a_rediss_url_is_tls_whatever_the_case_of_its_scheme(scheme: str) -> None:
    # The config accepts the scheme in any case (URL schemes are case-insensitive, RFC 3986
    # 3.1): a password must never go out in clear because of it.
    endpoint = Endpoint.from_url(f"{scheme}://:secret@redis.test:6380/2", None)
    assert endpoint.tls is not None
    assert (endpoint.host, endpoint.port, endpoint.db, endpoint.password) == (
        "redis.test",
        6380,
        2,
        "secret",
    )
    assert Endpoint.from_url("REDIS://redis.test:6379/0", None).tls is None


def test_an_error_reply_fails_only_its_own_call(run: Runner) -> None:
    run(_an_error_reply_fails_only_its_own_call())


async def _an_error_reply_fails_only_its_own_call() -> None:
    with redis_server() as r:
        link = RedisLink(Endpoint.from_url(r.url, None), 2.0)
        try:
            writes = record_writes(link)
            results = await asyncio.gather(
                link.call("SET", "a", "text"),
                link.call("INCR", "a"),  # not an integer: an error reply
                link.call("GET", "a"),
                link.call("GET", "missing"),
                link.call("PING"),
                return_exceptions=True,
            )
            assert writes == [5]
            assert results[0] == b"OK"
            assert isinstance(results[1], ReplyError)
            assert list(results[2:]) == [b"text", None, b"PONG"]
        finally:
            await link.close()


def test_a_cancelled_call_does_not_shift_the_others_replies(run: Runner) -> None:
    run(_a_cancelled_call_does_not_shift_the_others_replies())


async def _a_cancelled_call_does_not_shift_the_others_replies() -> None:
    with redis_server() as r:
        link = RedisLink(Endpoint.from_url(r.url, None), 2.0)
        try:
            await link.call("MSET", "x", "1", "y", "2", "z", "3")
            tasks = [asyncio.ensure_future(link.call("GET", k)) for k in ("x", "y", "z")]
            await asyncio.sleep(0)  # all three queued, none answered
            tasks[1].cancel()
            assert await tasks[0] == b"1"
            assert await tasks[2] == b"3"
            assert tasks[1].cancelled()
            assert await link.call("GET", "y") == b"2"
        finally:
            await link.close()


def test_a_redis_killed_under_a_batch_fails_every_call_and_the_retries_work(run: Runner) -> None:
    run(_a_redis_killed_under_a_batch_fails_every_call_and_the_retries_work())


async def _a_redis_killed_under_a_batch_fails_every_call_and_the_retries_work() -> None:
    with redis_server() as r:
        assert r.proc is not None
        store = store_for(r.url, redis_timeout_seconds=5.0)
        try:
            assert await store.reserve(key(9), 5.0)  # connected
            keys = [key(i) for i in range(10, 20)]
            r.proc.send_signal(signal.SIGSTOP)  # the batch is written and waits for replies
            batch = asyncio.gather(*(store.reserve(k, 5.0) for k in keys), return_exceptions=True)
            await asyncio.sleep(0.05)
            r.stop(signal.SIGKILL)  # dies under the batch: the connection breaks
            outcomes = await asyncio.wait_for(batch, 10)
            for o in outcomes:
                assert isinstance(o, Rejection), o
                assert (o.reason, o.status) == ("replay_store_unavailable", 503)
            r.start()  # same port, empty
            assert await asyncio.gather(*(store.reserve(k, 5.0) for k in keys)) == [True] * 10
        finally:
            await store.close()


def test_a_stalled_redis_times_out_the_whole_batch_and_no_retry_is_refused_for_good(
    run: Runner,
) -> None:
    run(_a_stalled_redis_times_out_the_whole_batch_and_no_retry_is_refused_for_good())


async def _a_stalled_redis_times_out_the_whole_batch_and_no_retry_is_refused_for_good() -> None:
    """SIGSTOP: the batch times out (503 each, bounded by the timeout). The SETs run once Redis
    resumes; those reservations nobody holds are released in the background, so each retry is
    answered "in flight" for a moment at most, then taken: never "delivered"."""
    with redis_server() as r:
        assert r.proc is not None
        store = store_for(r.url, redis_timeout_seconds=0.2)
        try:
            assert await store.reserve(key(30), 5.0)
            keys = [key(i) for i in range(31, 41)]
            r.proc.send_signal(signal.SIGSTOP)
            try:
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(store.reserve(k, 30.0) for k in keys), return_exceptions=True),
                    10,
                )
            finally:
                r.proc.send_signal(signal.SIGCONT)
            assert all(
                isinstance(o, Rejection) and o.reason == "replay_store_unavailable"
                for o in outcomes
            ), outcomes
            taken: set[bytes] = set()
            for _ in range(500):  # bounded poll: the background releases run
                for k in keys:
                    if k in taken:
                        continue
                    try:
                        assert await store.reserve(k, 30.0) is True
                        taken.add(k)
                    except Rejection as e:
                        assert e.reason in ("replay_in_flight", "replay_store_unavailable")
                if len(taken) == len(keys):
                    break
                await asyncio.sleep(0.02)
            assert taken == set(keys)
        finally:
            await store.close()


def test_a_flushed_script_cache_is_refilled(run: Runner) -> None:
    run(_a_flushed_script_cache_is_refilled())


async def _a_flushed_script_cache_is_refilled() -> None:
    with redis_server() as r:
        store = store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            assert await store.reserve(key(50), 5.0)
            await raw.script_flush()
            assert await store.reserve(key(51), 5.0)  # NOSCRIPT, then EVAL
            assert await store.reserve(key(52), 5.0)
            await store.release(key(51))
            assert await raw.exists(store.redis_key(key(51))) == 0
        finally:
            await store.close()
            await raw.aclose()


def test_the_url_database_is_selected(run: Runner) -> None:
    run(_the_url_database_is_selected())


async def _the_url_database_is_selected() -> None:
    with redis_server() as r:
        store = store_for(r.url.replace("/0", "/3"))
        raw = aioredis.Redis.from_url(r.url.replace("/0", "/3"))
        try:
            assert await store.reserve(key(60), 5.0)
            assert await raw.exists(store.redis_key(key(60))) == 1
        finally:
            await store.close()
            await raw.aclose()


def test_no_redis_fails_within_the_timeout(run: Runner) -> None:
    run(_no_redis_fails_within_the_timeout())


async def _no_redis_fails_within_the_timeout() -> None:
    link = RedisLink(Endpoint.from_url(f"redis://127.0.0.1:{refused_port()}/0", None), 0.5)
    try:
        with pytest.raises(LinkDown):
            await asyncio.wait_for(link.call("PING"), 5)
        with pytest.raises(LinkDown):  # and again: every call tries to connect anew
            await asyncio.wait_for(link.call("PING"), 5)
    finally:
        await link.close()


def test_a_commit_or_release_whose_caller_is_cancelled_still_lands(run: Runner) -> None:
    run(_a_commit_or_release_whose_caller_is_cancelled_still_lands())


async def _a_commit_or_release_whose_caller_is_cancelled_still_lands() -> None:
    # The pipeline awaits commits and releases in the request's own task (no shield task): a
    # cancellation of the request (the drain's grace running out) must not cut them short.
    with redis_server() as r:
        store = store_for(r.url)
        raw = aioredis.Redis.from_url(r.url)
        try:
            for k in (key(1), key(2)):
                assert await store.reserve(k, 30.0)
            assert r.proc is not None
            r.proc.send_signal(signal.SIGSTOP)  # Redis stalls: both calls go out, unanswered
            commit = asyncio.ensure_future(store.commit(key(1), 60.0))
            release = asyncio.ensure_future(store.release(key(2)))
            await asyncio.sleep(0.1)
            commit.cancel()
            release.cancel()
            for task in (commit, release):
                with pytest.raises(asyncio.CancelledError):
                    await task
            r.proc.send_signal(signal.SIGCONT)

            async def landed() -> bool:
                return (
                    await raw.get(store.redis_key(key(1))) == b"d"
                    and await raw.get(store.redis_key(key(2))) is None
                )

            for _ in range(200):
                if await landed():
                    break
                await asyncio.sleep(0.05)
            assert await landed()  # delivered stays delivered; released is reservable
            assert await store.reserve(key(2), 30.0)
        finally:
            await store.close()
            await raw.aclose()
