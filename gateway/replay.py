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
        """Keep a reserved key for ``ttl_seconds`` (the push was delivered)."""
        ...

    async def release(self, key: bytes) -> None:
        """Drop a reservation so that the sender's retry of the same token is accepted."""
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
    flight), which is what tells "in flight" from "delivered". Keys are 32-byte digests; expired
    entries are swept in slices in the background so that a million entries never stall the
    event loop, and all at once only when the store is full.
    """

    name = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self._reserved: set[bytes] = set()
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
            # A full sweep walks every entry: at most once a second, or a full store would
            # stall the event loop (and the admin port with it) on every request.
            if now - self._last_full_sweep >= 1.0:
                self._last_full_sweep = now
                self._sweep_all(now)
            if len(self._expiry) >= self.max_entries:
                raise Rejection(
                    "replay_store_full",
                    "the replay store is full; retry after entries expire",
                    retry_after=5,
                )
        self._expiry[key] = now + hold_seconds
        self._reserved.add(key)
        return True

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        self._expiry[key] = self._clock() + ttl_seconds
        self._reserved.discard(key)

    async def release(self, key: bytes) -> None:
        self._expiry.pop(key, None)
        self._reserved.discard(key)

    async def ready(self) -> str | None:
        return None

    def entries(self) -> int:
        return len(self._expiry)

    def _sweep_all(self, now: float) -> None:
        for key in [k for k, e in self._expiry.items() if e <= now]:
            del self._expiry[key]
            self._reserved.discard(key)

    async def sweep(self, slice_size: int = 10_000) -> int:
        """Remove expired entries, yielding to the loop between slices; returns how many."""
        removed = 0
        keys = list(self._expiry)
        for start in range(0, len(keys), slice_size):
            now = self._clock()
            for key in keys[start : start + slice_size]:
                expiry = self._expiry.get(key)
                if expiry is not None and expiry <= now:
                    del self._expiry[key]
                    self._reserved.discard(key)
                    removed += 1
            await asyncio.sleep(0)
        return removed

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
