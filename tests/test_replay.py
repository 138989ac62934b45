"""What each replay answer means (issue 14, item 1): 409 ``replayed`` only once a push was
delivered; a key held by an attempt in flight, or by one that died, is 503 ``replay_in_flight``
with a Retry-After that fits its hold, and reservable again once the hold ends.

The memory store runs on a FakeClock; the end-to-end case runs through real sockets, against both
stores (a real redis-server for the Redis one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.errors import REASONS, Rejection
from gateway.replay import MemoryReplayStore
from tests.httpkit import Reply, config_with, push, scrape
from tests.redis_support import redis_server
from tests.support import Backend, FakeClock, World, wait_until, world

BODY = b'{"event":"invoice.paid","id":"evt_9"}'
KEY = b"sender:" + bytes(range(32))


def test_replay_in_flight_is_a_retryable_503() -> None:
    assert REASONS["replay_in_flight"].status == 503
    assert REASONS["replayed"].status == 409


async def test_memory_store_tells_in_flight_from_delivered() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(100, clock)
    assert await store.reserve(KEY, 10.0) is True
    clock.advance(3.5)
    with pytest.raises(Rejection) as held:
        await store.reserve(KEY, 10.0)
    assert (held.value.reason, held.value.status) == ("replay_in_flight", 503)
    assert held.value.retry_after == 7  # 6.5 s of hold left, rounded up
    await store.commit(KEY, 600.0)
    assert await store.reserve(KEY, 10.0) is False  # delivered: 409
    clock.advance(601)
    assert await store.reserve(KEY, 10.0) is True  # the token's lifetime is over


async def test_memory_store_released_key_is_reservable_and_orphan_expires() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(100, clock)
    assert await store.reserve(KEY, 10.0) is True
    await store.release(KEY)
    assert await store.reserve(KEY, 10.0) is True  # the retry after a 5xx is taken
    # Nobody commits nor releases it (its request vanished): in flight until the hold ends...
    clock.advance(9.9)
    with pytest.raises(Rejection) as held:
        await store.reserve(KEY, 10.0)
    assert held.value.retry_after == 1
    # ... then reservable again, never "delivered".
    clock.advance(0.2)
    assert await store.reserve(KEY, 10.0) is True
    assert store.entries() == 1


async def test_memory_store_sweep_forgets_expired_reservations() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(100, clock)
    assert await store.reserve(KEY, 1.0) is True
    clock.advance(2)
    assert await store.sweep() == 1
    assert store.entries() == 0 and not store._reserved


# -- end to end: the sender's timeout is shorter than the backend's stall --------------------------


@dataclass
class StallingBackend(Backend):
    """Holds every request until ``gate`` is set, then answers the next of ``answers`` (then
    ``status``); counts arrivals."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    answers: list[int] = field(default_factory=list)
    arrived: int = 0

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def stall(request: web.Request, handler: Any) -> web.StreamResponse:
            self.arrived += 1
            await self.gate.wait()
            if self.answers:
                self.status = self.answers.pop(0)
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(stall)
        return app


@contextlib.contextmanager
def replay_section(store: str) -> Iterator[dict[str, Any]]:
    if store == "memory":
        yield {"store": "memory"}
        return
    with redis_server() as r:
        yield {"store": "redis", "redis_url": r.url}


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_retry_while_the_first_attempt_stalls_is_told_in_flight_not_delivered(
    store: str,
) -> None:
    """Issue 14's loss with no fault at all: the sender gives up on its first attempt while the
    backend still works on it and retries. That retry used to be answered 409 (the sender stops),
    then the first attempt failed and released the token: nobody delivered the push."""
    backend = StallingBackend()
    with replay_section(store) as replay:
        configure = config_with(replay=replay)
        async with world(configure, backend=backend) as w, aiohttp.ClientSession() as http:
            try:
                token = w.token(BODY)
                impatient = aiohttp.ClientTimeout(total=0.3)  # shorter than the stall (unbounded)
                with pytest.raises(TimeoutError):
                    async with http.post(
                        w.url + "/hook",
                        data=BODY,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=impatient,
                    ) as resp:
                        await resp.read()
                # The first attempt reaches the backend and stays held there.
                await wait_until(lambda: backend.arrived == 1)

                retry = await push(http, w, BODY, token=token)
                assert retry.outcome == (503, "replay_in_flight"), retry.body
                hold = 5 + 5  # upstream.timeout_seconds + the gateway's margin
                assert 1 <= int(retry.headers["Retry-After"]) <= hold

                # The first attempt now fails at the backend: its reservation is released.
                backend.answers = [500, 200]
                backend.gate.set()
                await wait_until(lambda: len(backend.received) == 1)
                delivered = await retry_until_answered(http, w, token)
                assert (delivered.status, delivered.body) == (200, b'{"ok":true}')
                again = await push(http, w, BODY, token=token)
                assert again.outcome == (409, "replayed")  # now, and only now, delivered
                # The backend saw the stalled attempt (answered 500) and the delivery: no more.
                assert [r.body for r in backend.received] == [BODY, BODY]
                assert backend.answers == []
            finally:
                backend.gate.set()  # never leave a request held for the teardown
            m = await scrape(http, w.admin_url)
            in_flight = {"issuer": "sender", "outcome": "rejected", "reason": "replay_in_flight"}
            assert m.value("jwksgate_requests_total", **in_flight) >= 1


async def retry_until_answered(http: aiohttp.ClientSession, w: World, token: str) -> Reply:
    """The sender's next retries: while the 500's release is on its way the key may still be
    held for a moment; bounded."""
    for _ in range(200):
        reply = await push(http, w, BODY, token=token)
        if reply.outcome != (503, "replay_in_flight"):
            return reply
        await asyncio.sleep(0.02)
    raise AssertionError("the key stayed in flight after the first attempt failed")


async def test_a_full_memory_store_sweeps_at_most_once_a_second() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(max_entries=3, clock=clock)
    sweeps = 0
    original = store._sweep_all

    def counting(now: float) -> int:
        nonlocal sweeps
        sweeps += 1
        return original(now)

    store._sweep_all = counting  # type: ignore[method-assign]
    for i in range(3):
        assert await store.reserve(bytes([i]) * 32, 60.0)
    for i in range(50):
        with pytest.raises(Exception, match="full"):
            await store.reserve(bytes([100 + i]) * 32, 60.0)
    assert sweeps == 1
    clock.advance(61)  # the entries expire; the next sweep (a second later) frees them
    assert await store.reserve(b"\x01" * 32 + b"new", 60.0)
    assert sweeps == 2


async def test_replays_are_refused_across_entries_for_the_same_sender() -> None:
    # Two issuer entries for one sender (same iss) on two paths: one jti space, not two.
    def configure(w: World) -> object:
        entry = {"issuer": "https://sender.test", "jwks_url": w.jwks_url}
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url},
                "issuers": [
                    {"name": "a", "path_prefix": "/a", **entry},
                    {"name": "b", "path_prefix": "/b", **entry},
                ],
            }
        )

    async with world(configure) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {w.token(BODY)}"}
        statuses = []
        for path in ("/a/hook", "/a/hook", "/b/hook"):
            async with http.post(w.url + path, data=BODY, headers=headers) as resp:
                statuses.append(resp.status)
        assert statuses == [200, 409, 409]
        assert len(w.backend.received) == 1
