"""The shared replay store for many replicas: Redis (standalone or Cluster) via ``redis.asyncio``.

- reserve: ``SET key owner NX PX hold``, atomic across every replica;
- commit: ``PEXPIRE`` to the token's remaining lifetime, only while we still own the key;
- release: compare-and-delete, so a late release never frees somebody else's reservation;
- a reserve that failed (its SET may still run, e.g. when a stalled Redis resumes) or a release
  that failed is released in the background, so the sender's retry is not refused as a replay.

Keys are ``<prefix><issuer>:<sha256 hex>``: namespaced, and never a raw jti (which could be long
or contain anything). Any Redis failure is bounded by ``redis_timeout_seconds`` and becomes 503
``replay_store_unavailable`` (fail closed), unless ``on_store_error: allow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.config import ReplayConfig
from gateway.errors import Rejection
from gateway.metrics import Metrics

__all__ = ["RedisReplayStore"]

log = logging.getLogger("jwksgate.replay")

# KEYS[1] = key, ARGV[1] = owner: delete only our own reservation.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] = key, ARGV[1] = owner, ARGV[2] = ttl ms: keep the key for the token's lifetime.
_COMMIT = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class RedisReplayStore:
    name = "redis"

    def __init__(self, cfg: ReplayConfig, metrics: Metrics) -> None:
        assert cfg.redis_url is not None
        self.cfg = cfg
        self._metrics = metrics
        self._owners: dict[bytes, str] = {}
        # Reservations whose SET failed with an unknown outcome (redis key -> owners), until
        # released in the background.
        self._orphans: dict[str, set[str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._last_allow_log = 0.0
        kwargs: dict[str, Any] = {
            "socket_timeout": cfg.redis_timeout_seconds,
            "socket_connect_timeout": cfg.redis_timeout_seconds,
            # One quick retry on a broken pooled connection (e.g. after a Redis restart); the
            # timeout still bounds every attempt.
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
            "health_check_interval": 30,
        }
        if cfg.redis_url.startswith("rediss://") and cfg.redis_ca_file:
            kwargs["ssl_ca_certs"] = cfg.redis_ca_file
            kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        self.client: Any
        if cfg.redis_mode == "cluster":
            self.client = RedisCluster.from_url(
                cfg.redis_url, max_connections=cfg.redis_pool_size, **kwargs
            )
        else:
            self.client = aioredis.Redis.from_url(
                cfg.redis_url, max_connections=cfg.redis_pool_size, **kwargs
            )
        self._release_script = self.client.register_script(_RELEASE)
        self._commit_script = self.client.register_script(_COMMIT)

    def redis_key(self, key: bytes) -> str:
        # key = b"<issuer name>:" + 32-byte digest (gateway.verify.replay_key)
        issuer, digest = key[:-33], key[-32:]
        return f"{self.cfg.key_prefix}{issuer.decode()}:{digest.hex()}"

    async def _call(self, op: str, coro: Any) -> Any:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.cfg.redis_timeout_seconds * 3):
                return await coro
        except (RedisError, OSError, TimeoutError) as e:
            self._metrics.replay_store_errors.labels(store=self.name).inc()
            raise _StoreDown(f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            self._metrics.replay_store_duration.labels(store=self.name, op=op).observe(
                time.perf_counter() - started
            )

    async def reserve(self, key: bytes, hold_seconds: float) -> bool:
        owner = uuid.uuid4().hex
        rkey = self.redis_key(key)
        try:
            ok = await self._call(
                "reserve", self.client.set(rkey, owner, nx=True, px=_ms(hold_seconds))
            )
            stale = self._orphans.get(rkey)
            if not ok and stale:
                # Perhaps one of our own reservations that timed out (answered 503) but ran in
                # Redis afterwards: free it, then try once more. Another owner's stays.
                for old in list(stale):
                    await self._call("release", self._release_script(keys=[rkey], args=[old]))
                ok = await self._call(
                    "reserve", self.client.set(rkey, owner, nx=True, px=_ms(hold_seconds))
                )
        except asyncio.CancelledError:
            # Cut off (the drain's grace ran out) with the SET perhaps run: nobody would hold
            # that reservation, and the sender's retry on another replica would get 409.
            self._abandon(rkey, owner)
            raise
        except _StoreDown as e:
            if self.cfg.on_store_error == "allow":
                self._log_allow(str(e))
                return True
            # The SET may have reached Redis and run, or still run when a stalled Redis resumes:
            # a reservation nobody holds, which would refuse the sender's retry (409) for the
            # whole hold, and the push would be lost. Remove it as soon as Redis answers.
            self._abandon(rkey, owner)
            log.warning("replay store unavailable: %s", e)
            raise Rejection(
                "replay_store_unavailable",
                "the replay store cannot be reached; retry later",
                retry_after=2,
            ) from None
        if ok:
            self._owners[key] = owner
        return bool(ok)

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        owner = self._owners.pop(key, None)
        if owner is None:
            return
        rkey = self.redis_key(key)
        for attempt in range(3):
            try:
                await self._call(
                    "commit", self._commit_script(keys=[rkey], args=[owner, _ms(ttl_seconds)])
                )
                return
            except _StoreDown as e:
                if attempt == 2:
                    # Delivered, but the key will expire with the reservation: a replay window.
                    log.error("replay store: could not commit a delivered token: %s", e)
                    return
                await asyncio.sleep(0.05 * (attempt + 1))

    async def release(self, key: bytes) -> None:
        owner = self._owners.pop(key, None)
        if owner is None:
            return
        rkey = self.redis_key(key)
        try:
            await self._call("release", self._release_script(keys=[rkey], args=[owner]))
        except _StoreDown:
            # Keep trying in the background: while the reservation stands, the sender's retry of
            # this token would be refused as in flight.
            self._abandon(rkey, owner)

    def _abandon(self, rkey: str, owner: str) -> None:
        """A reservation no request holds any more (or may hold, if its SET ran after all):
        released in the background, and freed on the spot by this process's next reserve of
        the same key (a sender's retry) if that comes first."""
        if len(self._background) >= _MAX_BACKGROUND_RELEASES:
            log.error("replay store: too many pending releases; a reservation will expire alone")
            return
        self._orphans.setdefault(rkey, set()).add(owner)
        task = asyncio.ensure_future(self._release_later(rkey, owner))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_later(self, rkey: str, owner: str) -> None:
        # Retry soon (a sender retries after Retry-After: 2 s, after a 502 at once). Release
        # twice: the second time after Redis has answered the first, so after it has run any
        # command still queued from before a stall (a SET that timed out here).
        delay = 0.1
        passes = 2
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                try:
                    await self._call("release", self._release_script(keys=[rkey], args=[owner]))
                except _StoreDown:
                    delay = min(delay * 2, 0.5)
                    continue
                passes -= 1
                if passes == 0:
                    return
                delay = 0.05
        finally:
            self._forget_orphan(rkey, owner)

    def _forget_orphan(self, rkey: str, owner: str) -> None:
        owners = self._orphans.get(rkey)
        if owners is not None:
            owners.discard(owner)
            if not owners:
                del self._orphans[rkey]

    async def ready(self) -> str | None:
        try:
            await self._call("ping", self.client.ping())
        except _StoreDown as e:
            return f"redis unavailable: {e}"
        return None

    def entries(self) -> int:
        return -1

    def _log_allow(self, error: str) -> None:
        now = time.monotonic()
        if now - self._last_allow_log > 5:
            self._last_allow_log = now
            log.error(
                "replay store unavailable and on_store_error is allow: forwarding WITHOUT "
                "replay protection (%s)",
                error,
            )

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.client.aclose()


_MAX_BACKGROUND_RELEASES = 10_000


class _StoreDown(Exception):
    pass


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
