"""The shared replay store for many replicas: Redis (standalone or Cluster) via ``redis.asyncio``.

A key's value says what it is: ``r:<owner>`` while an attempt holds it (reserved, not yet
delivered), ``d`` once delivered. Two round trips on the happy path, each one command:

- reserve: one script, ``SET key r:<owner> NX PX hold`` and, if the key exists, its state in the
  same trip: ``d`` is delivered (409); a reservation is in flight (503 ``replay_in_flight`` with
  its remaining hold as Retry-After) unless it is one of our own abandoned ones, which is taken
  over on the spot;
- commit: ``SET key d PX ttl``, unconditionally: the backend answered, so the push is delivered
  whoever holds the key now. Retried within the reservation's hold, so a slow Redis delays the
  answer rather than opening a replay window;
- release: compare-and-delete of our own reservation, so a late release never frees somebody
  else's reservation, nor a delivered key;
- a reserve that failed (its SET may still run, e.g. when a stalled Redis resumes) or a release
  that failed is released in the background, so the sender's retry is not refused.

Keys are ``<prefix><issuer>:<sha256 hex>``: namespaced, and never a raw jti (which could be long
or contain anything). Any Redis failure is bounded by ``redis_timeout_seconds`` (each call, its
wait for a connection included, plus the wait for one of the ``redis_pool_size`` slots) and becomes
503 ``replay_store_unavailable`` (fail closed), unless ``on_store_error: allow``.

A standalone Redis is reached over one pipelined connection (``gateway.redis_conn``): the calls of
concurrent pushes made in one event-loop iteration share one write and one read, each with its own
reply, error and bound; a connection that breaks or leaves its oldest call unanswered fails every
call on it, which is then handled as any failed call above. A Cluster goes through redis-py's
``RedisCluster`` (slots, redirections, topology refresh), the whole call bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.config import ReplayConfig
from gateway.errors import Rejection
from gateway.metrics import Metrics
from gateway.redis_conn import Endpoint, RedisLink, ReplyError, uses_tls
from gateway.replay import in_flight

__all__ = ["RedisReplayStore", "reserve_outcome"]

log = logging.getLogger("jwksgate.replay")

DELIVERED = "d"
_RESERVED_PREFIX = "r:"

# What the reserve script answers (an integer, the cheapest reply to parse).
RESERVED = -1
ALREADY_DELIVERED = -2
# >= 0: held by another attempt for that many more milliseconds.

# KEYS[1] = key, ARGV[1] = "r:<owner>", ARGV[2] = hold ms, ARGV[3..] = our own abandoned
# reservations of this key (their SET timed out here but may have run in Redis): taken over.
# A value equal to ARGV[1] is this very call run twice (redis-py's Cluster client re-executes a
# command whose answer timed out, after the first run set the key): ours, not "in flight".
# A value neither "d" nor "r:..." was written by jwksgate 0.1.0, which kept the owner for both
# states: a TTL beyond the hold can only be a commit.
_RESERVE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local v = redis.call('GET', KEYS[1])
if v == 'd' then return -2 end
if v == ARGV[1] then return -1 end
for i = 3, #ARGV do
  if v == ARGV[i] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return -1
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  if ttl == -2 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return -1
  end
  return -2
end
if string.sub(v, 1, 2) ~= 'r:' and ttl > tonumber(ARGV[2]) then return -2 end
return ttl
"""
# KEYS[1] = key, ARGV[1] = "r:<owner>": delete only our own reservation, never a delivered key.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SHA1 = {s: hashlib.sha1(s.encode()).hexdigest() for s in (_RESERVE, _RELEASE)}  # noqa: S324


def reserve_outcome(answer: int) -> bool:
    """The reserve script's answer as ``ReplayStore.reserve`` returns it (raises while held)."""
    if answer == RESERVED:
        return True
    if answer == ALREADY_DELIVERED:
        return False
    raise in_flight(answer / 1000)


def commit_backoff(attempt: int) -> float:
    """Seconds before commit attempt ``attempt + 1``: quick at first, then twice a second."""
    return min(0.5, 0.05 * 2.0**attempt)


class RedisReplayStore:
    name = "redis"

    def __init__(self, cfg: ReplayConfig, metrics: Metrics) -> None:
        assert cfg.redis_url is not None
        self.cfg = cfg
        self._metrics = metrics
        # Owner tokens only need to be unique among the replicas' live reservations: a random
        # per-process prefix and a counter (a uuid4 per push cost a urandom call each time).
        self._owner_prefix = f"{_RESERVED_PREFIX}{secrets.token_hex(8)}."
        self._counter = itertools.count()
        # key -> (our reservation's value, monotonic time its hold ends)
        self._owners: dict[bytes, tuple[str, float]] = {}
        # Reservations whose SET failed with an unknown outcome (redis key -> owners), until
        # released in the background.
        self._orphans: dict[str, set[str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._last_allow_log = 0.0
        self._errors = metrics.replay_store_errors.labels(store=self.name)
        self._durations = {
            op: metrics.replay_store_duration.labels(store=self.name, op=op)
            for op in ("reserve", "commit", "release", "ping")
        }
        self._commit_failures = metrics.replay_commit_failures.labels(store=self.name)
        # At most redis_pool_size calls in flight; past it a call waits for a slot (within the
        # timeout) instead of redis-py raising MaxConnectionsError at once. One semaphore for both
        # modes: redis-py's Cluster has no blocking pool, and it costs less per call than
        # BlockingConnectionPool's lock, condition and timeout scope.
        self._slots = asyncio.Semaphore(cfg.redis_pool_size)
        # Standalone: one pipelined connection (gateway.redis_conn): the calls of one event-loop
        # iteration share one write and one read, and each is bounded by the timeout on its own.
        # Cluster: redis-py's client, which follows the slots and redirections; a failure can
        # trigger a topology refresh and retries on other nodes, so the whole call is bounded too.
        self._link: RedisLink | None = None
        self.client: Any = None
        self._call_limit: float | None = None
        if cfg.redis_mode == "cluster":
            kwargs: dict[str, Any] = {
                "socket_timeout": cfg.redis_timeout_seconds,
                "socket_connect_timeout": cfg.redis_timeout_seconds,
                # One quick retry on a broken pooled connection (e.g. after a Redis restart); the
                # timeout still bounds every attempt.
                "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
                "health_check_interval": 30,
            }
            if uses_tls(cfg.redis_url) and cfg.redis_ca_file:
                kwargs["ssl_ca_certs"] = cfg.redis_ca_file
                kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            self.client = RedisCluster.from_url(
                cfg.redis_url, max_connections=cfg.redis_pool_size, **kwargs
            )
            self._call_limit = cfg.redis_timeout_seconds * 3
            self._cluster_reserve = self.client.register_script(_RESERVE)
            self._cluster_release = self.client.register_script(_RELEASE)
        else:
            endpoint = Endpoint.from_url(cfg.redis_url, cfg.redis_ca_file)
            self._link = RedisLink(endpoint, cfg.redis_timeout_seconds)

    def redis_key(self, key: bytes) -> str:
        # key = b"<issuer name>:" + 32-byte digest (gateway.verify.replay_key)
        issuer, digest = key[:-33], key[-32:]
        return f"{self.cfg.key_prefix}{issuer.decode()}:{digest.hex()}"

    async def _script(self, script: str, rkey: str, args: list[str | int]) -> Any:
        link = self._link
        if link is None:
            runner = self._cluster_reserve if script is _RESERVE else self._cluster_release
            return await runner(keys=[rkey], args=args)
        deadline = link.deadline()
        try:
            return await link.call("EVALSHA", _SHA1[script], 1, rkey, *args, deadline=deadline)
        except ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        # Not in Redis's script cache (a restarted or flushed Redis): EVAL caches it again.
        return await link.call("EVAL", script, 1, rkey, *args, deadline=deadline)

    async def _set(self, rkey: str, value: str, ttl_ms: int) -> Any:
        if self._link is None:
            return await self.client.set(rkey, value, px=ttl_ms)
        return await self._link.call("SET", rkey, value, "PX", ttl_ms)

    async def _ping(self) -> Any:
        if self._link is None:
            return await self.client.ping()
        return await self._link.call("PING")

    async def _call(self, op: str, coro: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            try:
                if self._slots.locked():
                    async with asyncio.timeout(self.cfg.redis_timeout_seconds):
                        await self._slots.acquire()
                else:
                    await self._slots.acquire()
            except BaseException as e:
                _close(coro)
                if isinstance(e, TimeoutError):
                    self._errors.inc()
                    raise _StoreDown("every pooled Redis connection stayed busy") from None
                raise
            try:
                if self._call_limit is None:
                    return await coro
                async with asyncio.timeout(self._call_limit):
                    return await coro
            except (RedisError, OSError, TimeoutError) as e:
                self._errors.inc()
                raise _StoreDown(f"{type(e).__name__}: {e}"[:200]) from None
            finally:
                self._slots.release()
        finally:
            self._durations[op].observe(time.perf_counter() - started)

    async def reserve(self, key: bytes, hold_seconds: float) -> bool:
        owner = f"{self._owner_prefix}{next(self._counter)}"
        rkey = self.redis_key(key)
        hold_ms = _ms(hold_seconds)
        until = time.monotonic() + hold_seconds
        stale = self._orphans.get(rkey)
        args: list[str | int] = [owner, hold_ms, *stale] if stale else [owner, hold_ms]
        try:
            answer = await self._call("reserve", self._script(_RESERVE, rkey, args))
        except asyncio.CancelledError:
            # Cut off (the drain's grace ran out) with the SET perhaps run: nobody would hold
            # that reservation, and the sender's retry on another replica would be refused.
            self._abandon(rkey, owner)
            raise
        except _StoreDown as e:
            if self.cfg.on_store_error == "allow":
                self._log_allow(str(e))
                return True
            # The SET may have reached Redis and run, or still run when a stalled Redis resumes:
            # a reservation nobody holds, which would refuse the sender's retry for the whole
            # hold. Remove it as soon as Redis answers.
            self._abandon(rkey, owner)
            log.warning("replay store unavailable: %s", e)
            raise Rejection(
                "replay_store_unavailable",
                "the replay store cannot be reached; retry later",
                retry_after=2,
            ) from None
        reserved = reserve_outcome(int(answer))
        if reserved:
            self._owners[key] = (owner, until)
        return reserved

    async def commit(self, key: bytes, ttl_seconds: float) -> None:
        held = self._owners.pop(key, None)
        if held is None:
            return
        _, until = held
        rkey = self.redis_key(key)
        ttl_ms = _ms(ttl_seconds)
        try:
            await self._commit(rkey, ttl_ms, until)
        except asyncio.CancelledError:
            # The request was cancelled (the drain's grace ran out): the push was delivered all
            # the same, so its commit goes on without it (a SET: running it twice is harmless).
            self._in_background(
                self._commit(rkey, ttl_ms, until),
                "a replay of a delivered push will be forwarded once its hold ends",
            )
            raise

    async def _commit(self, rkey: str, ttl_ms: int, until: float) -> None:
        # Delivered: until this lands, a retry is answered "in flight" (never lost), and once the
        # hold ends it would be forwarded again. So keep trying for as long as the hold lasts:
        # a merely slow Redis only delays the answer.
        for attempt in itertools.count():
            try:
                await self._call("commit", self._set(rkey, DELIVERED, ttl_ms))
                return
            except _StoreDown as e:
                pause = commit_backoff(attempt)
                if time.monotonic() + pause >= until:
                    self._commit_failures.inc()
                    log.error(
                        "replay store: could not commit a delivered token within its hold; a "
                        "replay of it will be forwarded once the hold ends: %s",
                        e,
                    )
                    return
                await asyncio.sleep(pause)

    async def release(self, key: bytes) -> None:
        held = self._owners.pop(key, None)
        if held is None:
            return
        owner, _ = held
        rkey = self.redis_key(key)
        try:
            await self._call("release", self._script(_RELEASE, rkey, [owner]))
        except _StoreDown:
            # Keep trying in the background: while the reservation stands, the sender's retry of
            # this token is answered "in flight".
            self._abandon(rkey, owner)
        except asyncio.CancelledError:
            self._abandon(rkey, owner)  # the request was cancelled: released all the same
            raise

    def _abandon(self, rkey: str, owner: str) -> None:
        """A reservation no request holds any more (or may hold, if its SET ran after all):
        released in the background, and taken over on the spot by this process's next reserve
        of the same key (a sender's retry) if that comes first."""
        if self._in_background(self._release_later(rkey, owner), "the reservation expires alone"):
            self._orphans.setdefault(rkey, set()).add(owner)

    def _in_background(self, work: Coroutine[Any, Any, None], if_full: str) -> bool:
        """Run a store operation no request waits for any more, within a bound; False (and
        ``if_full`` logged) when too many are pending already."""
        if len(self._background) >= _MAX_BACKGROUND_RELEASES:
            work.close()
            log.error("replay store: too many pending background operations; %s", if_full)
            return False
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

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
                    await self._call("release", self._script(_RELEASE, rkey, [owner]))
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
            await self._call("ping", self._ping())
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
        if self._link is not None:
            await self._link.close()
        else:
            with contextlib.suppress(Exception):
                await self.client.aclose()


_MAX_BACKGROUND_RELEASES = 10_000


class _StoreDown(Exception):
    pass


def _close(coro: Awaitable[Any]) -> None:
    """A call that never started: close its coroutine, or Python warns it was never awaited."""
    close = getattr(coro, "close", None)
    if close is not None:
        close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
