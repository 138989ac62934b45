"""The composition root: one ``Gateway`` builds the replay store, the JWKS session and key caches
(inside ``Runtimes``), the upstream session, the access recorder and the request ``Pipeline``, and
answers the admin port's readiness and metrics. It decides nothing itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.access import Recorder
from gateway.config import Config
from gateway.jwks_cache import JwksCache
from gateway.logs import AccessLog
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.pipeline import Pipeline
from gateway.replay import MemoryReplayStore, ReplayStore
from gateway.runtime import Runtime, Runtimes
from gateway.upstream import Upstream

__all__ = ["Gateway", "ready"]


def ready(
    mode: str, draining: bool, store_ok: bool, tried: bool, keys_ready: dict[str, bool]
) -> bool:
    """Whether this pod can serve. ``per_issuer``: the replay store answers and every
    issuer's first key fetch was tried (an issuer without keys answers its own pushes 503, the
    others keep working); ``all_issuers``: every issuer has usable keys too."""
    if draining or not store_ok or not tried:
        return False
    return mode != "all_issuers" or all(keys_ready.values())


def _store(config: Config, metrics: Metrics, clock: Callable[[], float]) -> ReplayStore:
    if config.replay.store == "redis":
        from gateway.redis_store import RedisReplayStore

        return RedisReplayStore(config.replay, metrics)
    return MemoryReplayStore(config.replay.max_entries, clock)


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        store: ReplayStore | None = None,
    ) -> None:
        self.metrics = metrics or Metrics(config.issuer_names())
        self.store = store or _store(config, self.metrics, clock)
        self.jwks_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=max(i.jwks.timeout_seconds for i in config.issuers)
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.runtimes = Runtimes(config, self.jwks_session, self.metrics, clock)
        self.recorder = Recorder(self.metrics, AccessLog())
        self.pipeline = Pipeline(
            self.runtimes,
            self.store,
            self.metrics,
            self.recorder,
            clock,
            tls=config.tls is not None,
        )
        self._gauges: asyncio.Task[None] | None = None

    @classmethod
    async def create(
        cls,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        store: ReplayStore | None = None,
    ) -> Gateway:
        # A coroutine because the client sessions want a running loop.
        return cls(config, clock=clock, metrics=metrics, store=store)

    # What tests and the lifecycle look at: the current runtime's parts and the bounds.
    @property
    def rt(self) -> Runtime:
        return self.runtimes.current

    @property
    def config(self) -> Config:
        return self.runtimes.current.config

    @property
    def caches(self) -> dict[str, JwksCache]:
        return self.runtimes.current.caches

    @property
    def upstream(self) -> Upstream:
        return self.runtimes.current.upstream

    @property
    def inflight(self) -> int:
        return self.pipeline.admission.inflight

    @property
    def draining(self) -> bool:
        return self.pipeline.admission.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.pipeline.admission.draining = value

    @property
    def access(self) -> AccessLog:
        return self.recorder.access

    @access.setter
    def access(self, value: AccessLog) -> None:
        self.recorder.access = value

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self.pipeline.handle(request)

    async def reload(self, new: Config) -> None:
        await self.runtimes.reload(new)

    def start_background(self) -> None:
        """First JWKS fetch for every issuer now, then periodic refresh; replay sweeping."""
        self.runtimes.start()
        if isinstance(self.store, MemoryReplayStore):
            self.store.start()
        self._gauges = asyncio.ensure_future(self._refresh_gauges())

    async def refresh_gauges(self) -> None:
        """Gauges that are derived rather than counted: JWKS age, store size, readiness."""
        for cache in self.caches.values():
            cache.update_age_metric()
        self.metrics.replay_entries.labels(store=self.store.name).set(self.store.entries())
        await self.readiness()

    async def _refresh_gauges(self) -> None:
        # Scrapes refresh them too; this keeps them current where another process exports
        # them (workers > 1).
        while True:
            await self.refresh_gauges()
            await asyncio.sleep(1.0)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        caches = self.caches
        issuers = {name: cache.status() for name, cache in caches.items()}
        keys_ready = {name: cache.ready() for name, cache in caches.items()}
        tried = all(cache.tried for cache in caches.values())
        store = await self.store.ready()
        ok = ready(self.config.readiness, self.draining, store is None, tried, keys_ready)
        detail: dict[str, Any] = {
            "status": "ready" if ok else "not ready",
            "draining": self.draining,
            "issuers": issuers,
            "issuers_ready": keys_ready,
            "first_fetches_tried": tried,
            "readiness": self.config.readiness,
            "replay_store": store or "ok",
        }
        self.metrics.ready.set(1 if ok else 0)
        return ok, detail

    async def exposition(self) -> tuple[bytes, str]:
        await self.refresh_gauges()
        return self.metrics.exposition(), CONTENT_TYPE

    async def close(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
            await asyncio.gather(self._gauges, return_exceptions=True)
        await self.runtimes.close()
        await self.store.close()
        await self.jwks_session.close()
