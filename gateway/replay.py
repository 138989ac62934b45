"""Replay stores: a replay key is reserved atomically before forwarding, then committed for the
token's remaining lifetime, or released when the backend could not take the push.

A reservation and a commit are told apart, so that each answer means one thing to the sender:

- ``reserve`` True: ours, forward the push;
- ``reserve`` False: the push was delivered (the backend answered it): 409 ``replayed``;
- ``Rejection("replay_in_flight")`` (503, Retry-After): another attempt holds the key now, or held
  it and died (an orphaned reservation). Either way nobody has told the sender "delivered" yet, so
  the sender must retry; once the hold ends the key is reservable again.

The store is behind the small ``ReplayStore`` interface so that one replica can use memory and many
replicas can share Redis. A full store refuses new keys (503 ``replay_store_full``) rather than
evicting live ones: evicting would reopen exactly the replays the store exists to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import Callable
from typing import Protocol

from gateway.errors import Rejection

__all__ = ["MemoryReplayStore", "ReplayStore", "in_flight"]


def in_flight(remaining_seconds: float) -> Rejection:
    """The answer for a key another attempt holds: retry once its hold can have ended."""
    return Rejection(
        "replay_in_flight",
        "this push is being delivered by another attempt; retry later",
        retry_after=max(1, math.ceil(remaining_seconds)),
    )


class ReplayStore(Protocol):
    name: str

    async def reserve(self, key: bytes, hold_seconds: float) -> bool:
        """Atomically claim ``key`` for ``hold_seconds``: True when claimed, False when the push
        was already delivered (committed).

        Raises ``Rejection``: ``replay_in_flight`` while another attempt holds the key (with the
        seconds its hold can still last as ``retry_after``); ``replay_store_full`` or
        ``replay_store_unavailable`` when the store cannot decide.
        """
        ...

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        """Keep a reserved key for ``ttl_seconds`` (the push was delivered). Carried through
        even when the caller is cancelled meanwhile (the request's task: the drain's grace),
        in the background if it must wait: callers await it with no shield."""
        ...

    async def release(self, key: bytes) -> None:
        """Drop a reservation so that the sender's retry of the same token is accepted;
        carried through even when the caller is cancelled, as ``commit``."""
        ...

    async def ready(self) -> str | None:
        """None when the store answers, else why not."""
        ...

    def entries(self) -> int:
        """Entries held now (-1 when the store cannot tell cheaply)."""
        ...

    async def close(self) -> None: ...


class MemoryReplayStore:
    """An in-process store for a single replica: a dict of key -> expiry, bounded.

    Keys reserved and not yet committed are also in ``_reserved`` (a handful: the requests in
    flight), which is what tells "in flight" from "delivered". Keys are 32-byte digests.

    Each key is also filed under the whole second its expiry falls in (``_due``, with a heap of
    those seconds), so that a sweep visits only the seconds that are due: the keys that expire
    there, and the old filings of keys released or given a newer expiry since (skipped).
    Walking and copying every entry instead cost about 200 ms of CPU and a 15 ms stall of the
    event loop every 10 s with a million entries. The background sweep yields to the loop
    between slices; a full store sweeps what is due at once, at most once a second.
    """

    name = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self._reserved: set[bytes] = set()
        # second -> the keys whose expiry fell in it when it was set; a heap of those seconds.
        self._due: dict[int, list[bytes]] = {}
        self._seconds: list[int] = []
        self._last_full_sweep = -math.inf
        self._sweeper: asyncio.Task[None] | None = None

    async def reserve(self, key: bytes, hold_seconds: float) -> bool:
        now = self._clock()
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            if key in self._reserved:
                raise in_flight(expiry - now)
            return False
        if expiry is None and len(self._expiry) >= self.max_entries:
            # A full store sweeps what is due at most once a second: a flood of new keys
            # must not sweep on every request.
            if now - self._last_full_sweep >= 1.0:
                self._last_full_sweep = now
                self._sweep_all(now)
            if len(self._expiry) >= self.max_entries:
                raise Rejection(
                    "replay_store_full",
                    "the replay store is full; retry after entries expire",
                    retry_after=5,
                )
        self._expire_at(key, now + hold_seconds)
        self._reserved.add(key)
        return True

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        self._expire_at(key, self._clock() + ttl_seconds)
        self._reserved.discard(key)

    async def release(self, key: bytes) -> None:
        self._expiry.pop(key, None)
        self._reserved.discard(key)

    async def ready(self) -> str | None:
        return None

    def entries(self) -> int:
        return len(self._expiry)

    def _expire_at(self, key: bytes, expiry: float) -> None:
        self._expiry[key] = expiry
        second = int(expiry)
        filed = self._due.get(second)
        if filed is None:
            self._due[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            filed.append(key)

    def _sweep_earliest(self, now: float) -> int:
        """Drop the expired keys of the earliest second on the heap (due by ``now``); returns
        how many. The second leaves the heap with its last key: only the current one, some of
        its keys still alive, stays."""
        second = self._seconds[0]
        removed = 0
        alive: list[bytes] = []
        for key in self._due[second]:
            expiry = self._expiry.get(key)
            if expiry is None or int(expiry) != second:
                continue  # released, or filed under the second of its newer expiry
            if expiry <= now:
                del self._expiry[key]
                self._reserved.discard(key)
                removed += 1
            else:
                alive.append(key)
        if alive:
            self._due[second] = list(dict.fromkeys(alive))
        else:
            del self._due[second]
            heapq.heappop(self._seconds)
        return removed

    def _sweep_all(self, now: float) -> int:
        """Every due second at once; returns how many keys were dropped."""
        removed = 0
        while self._seconds and self._seconds[0] <= now:
            second = self._seconds[0]
            removed += self._sweep_earliest(now)
            if self._seconds and self._seconds[0] == second:
                break  # the current second stays: every later one is still to come
        return removed

    async def sweep(self, slice_size: int = 10_000) -> int:
        """Remove expired entries, yielding to the loop between slices; returns how many. The
        seconds before the current one are wholly expired; the current one goes last."""
        removed = visited = 0
        now = self._clock()
        while self._seconds and self._seconds[0] < int(now):
            visited += len(self._due[self._seconds[0]])
            removed += self._sweep_earliest(now)
            if visited >= slice_size:
                visited = 0
                await asyncio.sleep(0)
                now = self._clock()
        return removed + self._sweep_all(self._clock())

    def start(self, interval: float = 10.0) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.sweep()

        self._sweeper = asyncio.ensure_future(loop())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
