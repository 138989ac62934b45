"""The key set of one issuer, kept fresh: first fetch at startup, refresh every TTL (or
``Cache-Control: max-age``), a rate-limited refetch when a token names an unknown kid or a
kid-less token verifies with no key (concurrent callers share one fetch, at most
``max_waiters`` of them: the rest are answered 503 at once), and the last good set kept up to
``max_stale_seconds`` while fetching fails, and across a config reload that keeps the issuer's key
source (``adopt``).

Which keys may check a token is ``jwks.select_keys``; downloading is ``jwks_fetch.Fetcher``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable

import aiohttp

from gateway.admission import refetch_waiters
from gateway.config import IssuerConfig, LimitsConfig
from gateway.errors import Rejection
from gateway.jwks import JwksError, KeySet, VerifyKey, cache_lifetime, parse_jwks, select_keys
from gateway.jwks_fetch import Fetcher
from gateway.metrics import Metrics

__all__ = ["JwksCache", "key_source"]

log = logging.getLogger("jwksgate.keys")


def key_source(issuer: IssuerConfig) -> tuple[object, ...]:
    """Where an issuer's keys come from and how they are fetched: the JWKS URL (or the discovery
    document and the issuer it must name) and the TLS trust. A reload that changes none of it
    changes no key; a reload that changes any of it must fetch anew."""
    discovery = (issuer.discovery_url, issuer.issuer) if issuer.discovery_url else None
    return (issuer.jwks_url, discovery, issuer.jwks.ca_file)


class JwksCache:
    """The key set of one issuer: first fetch at startup, refresh every TTL, rate-limited refetch
    on an unknown kid (concurrent callers share one fetch), last good set kept ``max_stale``."""

    def __init__(
        self,
        issuer: IssuerConfig,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.issuer = issuer
        self.cfg = issuer.jwks
        self._fetcher = Fetcher(session, issuer.jwks)
        self._metrics = metrics
        self._clock = clock
        self.keyset: KeySet | None = None
        self.fetched_at: float | None = None
        self.last_attempt = -math.inf
        self.last_failed = False
        self.last_error: str | None = None
        self.refresh_after = issuer.jwks.ttl_seconds
        self.failures = 0
        # Whether a fetch has finished, whatever its result (readiness waits for the first).
        self.tried = False
        self._etag: str | None = None
        self._etag_url: str | None = None
        # The last good document as fetched: a reload re-parses it under the new settings.
        self._document: bytes | None = None
        self._inflight: asyncio.Task[None] | None = None
        # Requests waiting for a refetch (``_refetch_if_allowed``), at most ``max_waiters``
        # (``admission.refetch_waiters``, set again by every runtime that uses this cache), and
        # the fetch whose overflow was last logged (one line per fetch, however many are refused).
        self.max_waiters = refetch_waiters(LimitsConfig(), 1)
        self._waiters = 0
        self._overflow_logged: asyncio.Task[None] | None = None

    # -- state ------------------------------------------------------------------------------
    def current(self) -> KeySet | None:
        """The key set if it is still usable (not older than ``max_stale_seconds``)."""
        if self.keyset is None or self.fetched_at is None:
            return None
        if self._clock() - self.fetched_at > self.cfg.max_stale_seconds:
            return None
        return self.keyset

    def ready(self) -> bool:
        return self.current() is not None

    def status(self) -> str:
        if self.ready():
            return "ok"
        if self.keyset is not None:
            return f"key set older than max_stale_seconds ({self.last_error or 'no recent fetch'})"
        return f"no key set yet ({self.last_error or 'first fetch pending'})"

    # -- lookups (the request path) ---------------------------------------------------------
    async def key_for(self, kid: str, alg: str) -> VerifyKey:
        """The key named ``kid``, pinned to the token's ``alg`` (``jwks.select_keys``);
        refetches at most once per interval when the kid is unknown.

        401 ``unknown_kid`` when a recent successful fetch does not have it; 401
        ``disallowed_algorithm`` when the key does not accept ``alg``; 503 ``jwks_unavailable``
        when the gateway cannot know because fetching fails.
        """
        ks = self.current()
        if ks is not None and kid in ks.by_kid:
            return select_keys(ks, alg, kid)[0]
        await self._refetch_if_allowed()
        ks = self.current()
        if ks is not None and kid in ks.by_kid:
            return select_keys(ks, alg, kid)[0]
        if ks is None or self.last_failed:
            raise self._unavailable()
        return select_keys(ks, alg, kid)[0]  # raises unknown_kid

    async def kidless_candidates(self, alg: str) -> list[VerifyKey]:
        """Keys to try for a token without kid: those pinned to its alg, at most 8."""
        ks = self.current()
        if ks is None:
            await self._refetch_if_allowed()
            ks = self.current()
            if ks is None:
                raise self._unavailable()
        return select_keys(ks, alg, None)

    async def kidless_after_miss(self, alg: str, tried: list[VerifyKey]) -> list[VerifyKey]:
        """No key verified a token without kid: perhaps the sender rotated. Refetch (rate
        limited, as for an unknown kid) and return the new keys to try; none when the set is
        unchanged. 503 ``jwks_unavailable`` when the gateway cannot know (fetching fails)."""
        before = self.keyset
        await self._refetch_if_allowed()
        ks = self.current()
        if ks is None or self.last_failed:
            raise self._unavailable()
        if ks is before:
            return []
        return [k for k in select_keys(ks, alg, None) if k not in tried]

    def _unavailable(self) -> Rejection:
        wait = self.cfg.min_refresh_interval_seconds - (self._clock() - self.last_attempt)
        return Rejection(
            "jwks_unavailable",
            "the issuer's key set cannot be fetched right now; retry later",
            retry_after=max(1, math.ceil(wait)),
        )

    async def _refetch_if_allowed(self) -> None:
        """Join (or start) a refetch for a token the keys at hand cannot check. Returns at once
        when the interval forbids one; 503 ``jwks_unavailable`` at once when ``max_waiters``
        requests already wait for it."""
        since = self._clock() - self.last_attempt
        if self._inflight is None and since < self.cfg.min_refresh_interval_seconds:
            self._metrics.jwks_refetch_suppressed.labels(issuer=self.issuer.name).inc()
            return
        if self._waiters >= self.max_waiters:
            raise self._too_many_waiting()
        self._waiters += 1
        try:
            await self.refresh()
        finally:
            self._waiters -= 1

    def _too_many_waiting(self) -> Rejection:
        name = self.issuer.name
        self._metrics.jwks_waits_refused.labels(issuer=name).inc()
        if self._inflight is not None and self._overflow_logged is not self._inflight:
            self._overflow_logged = self._inflight
            log.warning(
                "issuer %s: %d requests already wait for its JWKS fetch; more tokens that the"
                " keys at hand cannot check are answered 503 jwks_unavailable until it ends"
                " (logged once per fetch; counted in jwksgate_jwks_waits_refused_total)",
                name,
                self._waiters,
            )
        # The fetch ends within its timeout (two requests with discovery): then a sender that
        # rotated finds its new kid, and a retry is the right answer sooner than the interval.
        fetch_bound = self.cfg.timeout_seconds * (2 if self.issuer.discovery_url else 1)
        wait = min(fetch_bound, self.cfg.min_refresh_interval_seconds)
        wait -= self._clock() - self.last_attempt
        return Rejection(
            "jwks_unavailable",
            "the issuer's key set is being fetched; retry shortly",
            retry_after=max(1, math.ceil(wait)),
        )

    # -- fetching ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Fetch now, or join the fetch already running. Never raises."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetch_done)
        await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            log.error("jwks fetch crashed", exc_info=task.exception())

    async def _fetch(self) -> None:
        name = self.issuer.name
        self.last_attempt = self._clock()
        started = asyncio.get_running_loop().time()
        result = "failure"
        try:
            document, cache_control = await self._download()
            if document is None:
                result = "not_modified"
                self._succeeded(self.keyset, cache_control)
                return
            keyset, dropped = parse_jwks(document, self.issuer.algorithms, self.cfg.max_keys)
            for reason, detail in dropped:
                self._metrics.jwks_keys_dropped.labels(issuer=name, reason=reason).inc()
                log.warning("issuer %s: dropped JWKS key: %s (%s)", name, detail, reason)
            if not keyset.all_keys:
                raise JwksError("no usable key in the set")
            result = "success"
            self._document = document
            self._succeeded(keyset, cache_control)
        except (JwksError, ValueError) as e:
            self._failed(str(e) or type(e).__name__)
        finally:
            self.tried = True
            self._metrics.issuer_ready.labels(issuer=name).set(1 if self.ready() else 0)
            self._metrics.jwks_fetches.labels(issuer=name, result=result).inc()
            elapsed = asyncio.get_running_loop().time() - started
            self._metrics.jwks_fetch_duration.labels(issuer=name).observe(elapsed)

    async def _download(self) -> tuple[bytes | None, str | None]:
        # With discovery the document is read at every refresh: a provider that moves its
        # jwks_uri is followed within one TTL, and a failure keeps the last good set.
        url = await self._fetcher.jwks_url(self.issuer)
        etag = self._etag if self.keyset is not None and url == self._etag_url else None
        got = await self._fetcher.get(url, etag=etag)
        if got.body is None:
            return None, got.cache_control
        self._etag, self._etag_url = got.etag, url
        return got.body, got.cache_control

    def _succeeded(self, keyset: KeySet | None, cache_control: str | None) -> None:
        name = self.issuer.name
        if keyset is not None and self.keyset is not None and keyset.kids() != self.keyset.kids():
            self._metrics.jwks_rotations.labels(issuer=name).inc()
            log.info("issuer %s: key set changed: %d keys", name, len(keyset.all_keys))
        self.keyset = keyset
        self.fetched_at = self._clock()
        self.last_failed = False
        self.last_error = None
        self.failures = 0
        self.refresh_after = cache_lifetime(
            cache_control, self.cfg.ttl_seconds, self.cfg.min_refresh_interval_seconds
        )
        n = len(keyset.all_keys) if keyset is not None else 0
        self._metrics.jwks_keys.labels(issuer=name).set(n)
        self._metrics.jwks_last_success.labels(issuer=name).set(self.fetched_at)

    def _failed(self, error: str) -> None:
        self.last_failed = True
        self.last_error = error[:200]
        self.failures += 1
        # The ETag may be that of the document just refused: a 304 for it must not revalidate
        # the older set (that would hide the failure and outlive max_stale_seconds).
        self._etag = None
        # Retry soon, backing off: 1, 2, 4 ... seconds, never slower than the TTL.
        self.refresh_after = min(self.cfg.ttl_seconds, 2.0 ** min(self.failures - 1, 6))
        log.warning("issuer %s: JWKS fetch failed: %s", self.issuer.name, self.last_error)

    def adopt(self, old: JwksCache) -> bool:
        """Take over ``old``'s last good key set: a reload changed other fields of the issuer
        but not its ``key_source``. The document is parsed again under this issuer's
        ``algorithms`` and ``max_keys``; its age still counts from the fetch, so that
        ``max_stale_seconds`` bounds it as before. False when there is nothing usable to keep
        (the caller then fetches before the swap)."""
        doc = old._document
        if key_source(old.issuer) != key_source(self.issuer) or doc is None:
            return False
        if old.keyset is None or old.fetched_at is None or len(doc) > self.cfg.max_bytes:
            return False
        try:
            keyset, dropped = parse_jwks(doc, self.issuer.algorithms, self.cfg.max_keys)
        except JwksError:
            return False
        if not keyset.all_keys:
            return False
        self.keyset, self.fetched_at, self._document = keyset, old.fetched_at, doc
        self._etag, self._etag_url = old._etag, old._etag_url
        self.last_attempt, self.last_failed = old.last_attempt, old.last_failed
        self.last_error, self.failures = old.last_error, old.failures
        self.tried = old.tried  # startup's first fetch of this key source was tried already
        self.refresh_after = min(old.refresh_after, self.cfg.ttl_seconds)
        name = self.issuer.name
        self._metrics.jwks_keys.labels(issuer=name).set(len(keyset.all_keys))
        self._metrics.jwks_last_success.labels(issuer=name).set(self.fetched_at)
        log.info(
            "issuer %s: reload kept the last good key set (%d keys, %d dropped by the new"
            " settings, fetched %.0fs ago%s): its JWKS URL and TLS settings did not change",
            name,
            len(keyset.all_keys),
            len(dropped),
            self._clock() - self.fetched_at,
            f"; fetching fails: {self.last_error}" if self.last_failed else "",
        )
        return True

    def update_age_metric(self) -> None:
        age = -1.0 if self.fetched_at is None else self._clock() - self.fetched_at
        self._metrics.jwks_age.labels(issuer=self.issuer.name).set(age)
        # max_stale_seconds passes without a fetch: the gauge follows the clock, not the fetches.
        self._metrics.issuer_ready.labels(issuer=self.issuer.name).set(1 if self.ready() else 0)

    async def run(self, fetch_now: bool = True) -> None:
        """Background refresher: first fetch now, then every ``refresh_after`` (with jitter)."""
        if fetch_now:
            await self.refresh()
        while True:
            await asyncio.sleep(self.refresh_after * random.uniform(0.9, 1.0))  # noqa: S311
            await self.refresh()
