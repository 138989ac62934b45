"""The reserve script run twice for one call (issue 14's soak, on a starved machine): Redis ran
it, its answer did not arrive within ``redis_timeout_seconds``, and the client ran the same command
again. redis-py's Cluster client does that (its retry loop re-executes a command after a
TimeoutError); the second run finds the key holding this very call's owner value. That is our
reservation, not another attempt's: the answer must be "reserved", not 503 ``replay_in_flight``
for a hold nobody would end early.

Against a real redis-server, with the script exactly as the store sends it.
"""

from __future__ import annotations

from redis import asyncio as aioredis

from gateway.redis_store import _RESERVE, ALREADY_DELIVERED, RESERVED, reserve_outcome
from tests.redis_support import redis_server


async def test_the_same_reserve_call_run_twice_is_still_ours() -> None:
    with redis_server() as r:
        raw = aioredis.Redis.from_url(r.url)
        try:
            key = "jwksgate:replay:x:" + "ab" * 32
            ours, theirs = "r:0123456789abcdef.1", "r:fedcba9876543210.7"
            assert await raw.eval(_RESERVE, 1, key, ours, 5000) == RESERVED
            # The client resends the very same command: still ours.
            assert await raw.eval(_RESERVE, 1, key, ours, 5000) == RESERVED
            assert reserve_outcome(RESERVED) is True
            # Any other attempt is told the key is held, for about the hold.
            held = await raw.eval(_RESERVE, 1, key, theirs, 5000)
            assert 0 < held <= 5000
            # Once delivered, neither is taken.
            await raw.set(key, "d", px=60_000)
            for owner in (ours, theirs):
                assert await raw.eval(_RESERVE, 1, key, owner, 5000) == ALREADY_DELIVERED
        finally:
            await raw.aclose()
