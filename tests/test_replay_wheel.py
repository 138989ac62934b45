"""The memory store's sweep visits only what is due (its keys filed by the second they expire
in), where it used to copy and walk every entry: it must keep and drop exactly what the full
walk did, and answer every reserve the same, through any mix of reserves, commits, releases,
sweeps, a full store and a wall clock that steps back.

The full walk (the store as it was) is written out here as the oracle.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import Rejection
from gateway.replay import MemoryReplayStore, in_flight
from tests.support import FakeClock, fuzz


class WalkingStore:
    """The memory store before the sweep was keyed by time."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self._reserved: set[bytes] = set()
        self._last_full_sweep = -math.inf

    async def reserve(self, key: bytes, hold_seconds: float) -> bool:
        now = self._clock()
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            if key in self._reserved:
                raise in_flight(expiry - now)
            return False
        if expiry is None and len(self._expiry) >= self.max_entries:
            if now - self._last_full_sweep >= 1.0:
                self._last_full_sweep = now
                self._sweep_all(now)
            if len(self._expiry) >= self.max_entries:
                raise Rejection("replay_store_full", "full", retry_after=5)
        self._expiry[key] = now + hold_seconds
        self._reserved.add(key)
        return True

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        self._expiry[key] = self._clock() + ttl_seconds
        self._reserved.discard(key)

    async def release(self, key: bytes) -> None:
        self._expiry.pop(key, None)
        self._reserved.discard(key)

    def entries(self) -> int:
        return len(self._expiry)

    def _sweep_all(self, now: float) -> None:
        for key in [k for k, e in self._expiry.items() if e <= now]:
            del self._expiry[key]
            self._reserved.discard(key)

    async def sweep(self) -> int:
        before = len(self._expiry)
        self._sweep_all(self._clock())
        return before - len(self._expiry)


KEYS = [bytes([i]) * 32 for i in range(6)]
# Clock steps, a wall clock stepping back among them.
STEPS = [0.1, 0.5, 0.999, 1.0, 7.3, -2.5]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.sampled_from(KEYS), st.sampled_from([0.5, 1.0, 10.0])),
        st.tuples(st.just("commit"), st.sampled_from(KEYS), st.sampled_from([0.3, 5.0, 600.0])),
        st.tuples(st.just("release"), st.sampled_from(KEYS), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(b""), st.sampled_from(STEPS)),
        st.tuples(st.just("sweep"), st.just(b""), st.just(0.0)),
    ),
    max_size=60,
)


async def outcome(store: MemoryReplayStore | WalkingStore, op: str, key: bytes, n: float) -> object:
    try:
        if op == "reserve":
            return await store.reserve(key, n)
        if op == "commit":
            await store.commit(key, n)
        elif op == "release":
            await store.release(key)
        else:
            return await store.sweep()
        return None
    except Rejection as r:
        return (r.reason, r.retry_after)


@fuzz(500)
@given(ops=OPS, max_entries=st.sampled_from([2, 4, 100]))
def test_the_timed_sweep_keeps_and_drops_what_the_full_walk_did(
    ops: list[tuple[str, bytes, float]], max_entries: int
) -> None:
    async def run() -> None:
        clock = FakeClock(1000.25)
        store = MemoryReplayStore(max_entries, clock)
        oracle = WalkingStore(max_entries, clock)
        for op, key, n in ops:
            if op == "advance":
                clock.advance(n)
                continue
            assert await outcome(store, op, key, n) == await outcome(oracle, op, key, n), op
            assert store.entries() == oracle.entries()
            assert store._reserved == oracle._reserved

    asyncio.run(run())


async def test_a_sweep_with_nothing_due_visits_nothing() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(10_000, clock)
    for i in range(5000):
        await store.reserve(i.to_bytes(32, "big"), 30.0)
    filed = sum(len(keys) for keys in store._due.values())
    assert await store.sweep() == 0
    assert sum(len(keys) for keys in store._due.values()) == filed  # nothing was walked
    clock.advance(31)
    assert await store.sweep() == 5000
    assert store.entries() == 0 and not store._due
