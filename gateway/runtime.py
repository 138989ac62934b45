"""The runtime: everything a request needs that a config reload replaces, swapped as one
reference, and the hot swap itself (key caches of unchanged issuers kept, replaced upstream
sessions closed once unused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway import verify
from gateway.admission import refetch_waiters
from gateway.authn import Authenticator
from gateway.authn.jwt import JwtAuthenticator, KeySource
from gateway.authn.provider import ProviderAuthenticator
from gateway.authn.standard_webhooks import StandardWebhooksAuthenticator
from gateway.authn.static_token import StaticTokenAuthenticator
from gateway.config import Config, IssuerConfig
from gateway.errors import ConfigError
from gateway.forward_headers import gateway_header_names
from gateway.jwks_cache import JwksCache
from gateway.metrics import Metrics
from gateway.upstream import Upstream

__all__ = ["RESTART_ONLY", "Runtime", "Runtimes", "authenticators"]

# Config sections a running process cannot change: sockets, process model, the replay store.
RESTART_ONLY = ("listen", "admin_listen", "workers", "tls", "replay", "shutdown_grace_seconds")
# How long a reservation is held while the backend works on the push, beyond its timeout.
HOLD_MARGIN_SECONDS = 5.0


def authenticators(
    issuers: tuple[IssuerConfig, ...],
    keys: Mapping[str, KeySource[Any]],
    count_kidless: Callable[[str, int], None],
) -> dict[str, Authenticator[Any]]:
    """One authenticator per issuer name; every JWT issuer shares the one that routes by iss."""
    jwt = JwtAuthenticator(issuers, keys, count_kidless)
    out: dict[str, Authenticator[Any]] = {}
    for issuer in issuers:
        if issuer.static_token is not None:
            out[issuer.name] = StaticTokenAuthenticator(issuer)
        elif issuer.standard_webhooks is not None:
            out[issuer.name] = StandardWebhooksAuthenticator(issuer)
        elif issuer.provider is not None:
            out[issuer.name] = ProviderAuthenticator(issuer)
        else:
            out[issuer.name] = jwt
    out[""] = jwt  # a path no issuer owns: JWT routing answers unknown_issuer
    return out


@dataclass(eq=False)
class Runtime:
    """Swapped as one reference: a request captures it once at its start and finishes under
    it, whatever reloads meanwhile. ``users`` counts those requests, so that a replaced
    upstream session is closed only once nobody uses it."""

    config: Config
    caches: dict[str, JwksCache]
    upstream: Upstream
    gateway_headers: frozenset[str]
    authenticators: dict[str, Authenticator[Any]] = field(default_factory=dict)
    users: int = 0

    def authenticator(self, owners: list[IssuerConfig]) -> Authenticator[Any]:
        """The authenticator for a request whose path the ``owners`` match, longest first."""
        return self.authenticators[owners[0].name if owners else ""]

    def owners(self, path: str) -> list[IssuerConfig]:
        return verify.candidates(self.config.issuers, path)

    @property
    def body_signed_issuers(self) -> int:
        """How many issuers share the unauthenticated body pool: every one that is not a JWT
        issuer (Standard Webhooks and provider webhooks check a credential over the body)."""
        return sum(1 for issuer in self.config.issuers if issuer.type != "jwt")

    @property
    def hold_seconds(self) -> float:
        """How long a reservation is held while the backend works on the push."""
        return self.config.upstream.timeout_seconds + HOLD_MARGIN_SECONDS


class Runtimes:
    """The current runtime and its replacement on reload."""

    def __init__(
        self,
        config: Config,
        jwks_session: aiohttp.ClientSession,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.jwks_session = jwks_session
        self.metrics = metrics
        self.clock = clock
        caches = {
            i.name: JwksCache(i, jwks_session, metrics, clock)
            for i in config.issuers
            if i.type == "jwt"
        }
        self.current = self._runtime(config, caches, Upstream(config.upstream))
        self._tasks: list[asyncio.Task[None]] = []
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        # Upstreams replaced by a reload, closed after a grace period or at close().
        self._retired: set[Upstream] = set()

    def _count_kidless(self, issuer: str, tried: int) -> None:
        self.metrics.kidless_attempts.labels(issuer=issuer).inc(tried)

    def _runtime(self, config: Config, caches: dict[str, JwksCache], up: Upstream) -> Runtime:
        # Kept caches too: a reload may change max_inflight or the number of JWT issuers.
        for cache in caches.values():
            cache.max_waiters = refetch_waiters(config.limits, len(caches))
        return Runtime(
            config=config,
            caches=caches,
            upstream=up,
            gateway_headers=gateway_header_names(config.forward, config.issuers),
            authenticators=authenticators(config.issuers, caches, self._count_kidless),
        )

    def start(self) -> None:
        """First JWKS fetch for every issuer now, then periodic refresh."""
        for name, cache in self.current.caches.items():
            self._refreshers[name] = asyncio.ensure_future(cache.run())

    async def reload(self, new: Config) -> None:
        """Swap to ``new`` atomically: key caches of unchanged issuers are kept, new issuers
        get their first fetch before the swap, requests in flight finish under the old runtime.

        Raises ``ConfigError`` when ``new`` changes what only a restart can change.
        """
        old = self.current
        changed = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old.config, f)]
        if changed:
            raise ConfigError([f"{f}: a change here needs a restart" for f in changed])
        caches: dict[str, JwksCache] = {}
        fresh: list[JwksCache] = []
        adopted: list[JwksCache] = []
        for issuer in new.issuers:
            if issuer.type != "jwt":
                continue
            prev = old.caches.get(issuer.name)
            if prev is not None and prev.issuer == issuer:
                caches[issuer.name] = prev
            else:
                caches[issuer.name] = JwksCache(issuer, self.jwks_session, self.metrics, self.clock)
                self.metrics.add_issuer(issuer.name)
                # Same key source: the last good set is kept (a JWKS outage during the reload
                # must not drop it); otherwise the new source is fetched before the swap.
                kept = prev is not None and caches[issuer.name].adopt(prev)
                (adopted if kept else fresh).append(caches[issuer.name])
        await asyncio.gather(*(c.refresh() for c in fresh))
        same_upstream = new.upstream == old.config.upstream
        upstream = old.upstream if same_upstream else Upstream(new.upstream)
        # One assignment, no await around it: a request sees the old runtime or the new one.
        self.current = self._runtime(new, caches, upstream)
        for name, task in list(self._refreshers.items()):
            if caches.get(name) is not old.caches.get(name):
                task.cancel()
                del self._refreshers[name]
        for cache in (*fresh, *adopted):
            self._refreshers[cache.issuer.name] = asyncio.ensure_future(cache.run(fetch_now=False))
        for name in old.caches.keys() - caches.keys():
            self.metrics.remove_issuer(name)
        if not same_upstream:
            grace = (
                old.config.limits.body_timeout_seconds
                + old.config.upstream.timeout_seconds
                + old.config.replay.redis_timeout_seconds * 6
                + HOLD_MARGIN_SECONDS
            )
            self._retired.add(old.upstream)
            self._tasks.append(asyncio.ensure_future(_close_when_unused(old, grace, self._retired)))

    async def close(self) -> None:
        tasks = [*self._tasks, *self._refreshers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.current.upstream.close()
        for upstream in list(self._retired):
            await upstream.close()


async def _close_when_unused(old: Runtime, limit: float, retired: set[Upstream]) -> None:
    """Close a replaced upstream session once no request started under ``old`` is left, or
    after ``limit`` seconds (by then every such request has hit one of its own timeouts)."""
    deadline = time.monotonic() + limit
    while old.users and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.2)
    await old.upstream.close()
    retired.discard(old.upstream)
