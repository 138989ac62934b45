"""Wiring: one ``Gateway`` holds the config, the key caches, the replay store and the upstream
session, and handles each webhook request from the bearer token to the backend's answer.

A request's path: bounds (draining, in-flight, Content-Length) -> token shape -> routing -> header
-> key lookup and signature -> claims -> body (bounded, timed) -> body hash -> replay reservation
-> forward -> commit or release -> the backend's answer, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway import schemes, verify
from gateway.config import Config, IssuerConfig
from gateway.errors import ConfigError, Rejection
from gateway.jsonstrict import dumps_compact
from gateway.jwks import VerifyKey
from gateway.jwks_cache import JwksCache
from gateway.logs import AccessLog, clip
from gateway.metrics import CONTENT_TYPE, Metrics, status_class
from gateway.proxy import Upstream, gateway_header_names, upstream_headers
from gateway.replay import MemoryReplayStore, ReplayStore

__all__ = ["Gateway", "build_admin_app", "rejection_response"]

log = logging.getLogger("jwksgate")

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DOT_SEGMENT_RE = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
_ESCAPED_SEPARATOR_RE = re.compile(r"%2f|%5c|\\", re.IGNORECASE)
_ERROR_REASONS = frozenset({"upstream_unavailable", "upstream_timeout", "internal_error"})
_NO_TOKEN = verify.ParsedToken(
    header={}, claims={}, signing_input=b"", signature=b"", payload_segment="e30"
)
# Backend answers that mean "not taken, try again" although they are not 5xx: the token is
# released so that the sender's retry is delivered.
_NOT_TAKEN = frozenset({408, 429})


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Config sections a running process cannot change: sockets, process model, the replay store.
RESTART_ONLY = ("listen", "admin_listen", "workers", "tls", "replay", "shutdown_grace_seconds")
# How long a reservation is held while the backend works on the push, beyond its timeout.
_HOLD_MARGIN_SECONDS = 5.0


def rejection_response(r: Rejection, request_id: str | None = None) -> web.Response:
    """The answer for a request that is not forwarded (contract §4)."""
    headers = {}
    if r.status == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{r.reason}"'
        )
    if r.status == 503:
        headers["Retry-After"] = str(r.retry_after or 1)
    if request_id:
        headers["X-Request-Id"] = request_id
    body = json.dumps({"error": r.reason, "detail": r.detail}).encode()
    resp = web.Response(
        status=r.status, body=body, content_type="application/json", headers=headers
    )
    if r.status in (400, 408, 413) or r.reason == "shutting_down":
        # The rest of the request may still be in flight: do not parse it as a new one.
        resp.force_close()
    return resp


@dataclass(eq=False)
class Runtime:
    """Everything a request needs that a config reload replaces, swapped as one reference:
    a request captures it once at its start and finishes under it, whatever reloads meanwhile.
    ``users`` counts those requests, so that a replaced upstream session is closed only once
    nobody uses it."""

    config: Config
    caches: dict[str, JwksCache]
    upstream: Upstream
    gateway_headers: frozenset[str]
    users: int = 0


@dataclass(slots=True)
class _Outcome:
    issuer: str = "unknown"
    kid: str | None = None
    replay: str | None = None
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    rejection: Rejection | None = None
    handshake: bool = False
    rt: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        assert self.rt is not None
        return self.rt


@dataclass
class Gateway:
    rt: Runtime
    metrics: Metrics
    store: ReplayStore
    jwks_session: aiohttp.ClientSession
    clock: Callable[[], float] = time.time
    access: AccessLog = field(default_factory=AccessLog)
    draining: bool = False
    inflight: int = 0
    # Benchmark baseline only: forward without any verification, through the same code.
    passthrough: bool = False
    tls: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _refreshers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Upstreams replaced by a reload, closed after a grace period or at close(), whichever first.
    _retired: set[Upstream] = field(default_factory=set)

    @property
    def config(self) -> Config:
        return self.rt.config

    @property
    def caches(self) -> dict[str, JwksCache]:
        return self.rt.caches

    @property
    def upstream(self) -> Upstream:
        return self.rt.upstream

    @classmethod
    async def create(
        cls,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        store: ReplayStore | None = None,
    ) -> Gateway:
        metrics = metrics or Metrics(config.issuer_names())
        if store is None:
            if config.replay.store == "redis":
                from gateway.redis_store import RedisReplayStore

                store = RedisReplayStore(config.replay, metrics)
            else:
                store = MemoryReplayStore(config.replay.max_entries, clock)
        jwks_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=max(i.jwks.timeout_seconds for i in config.issuers)
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        caches = {
            i.name: JwksCache(i, jwks_session, metrics, clock)
            for i in config.issuers
            if i.type == "jwt"
        }
        rt = Runtime(
            config=config,
            caches=caches,
            upstream=Upstream(config.upstream),
            gateway_headers=gateway_header_names(config.forward, config.issuers),
        )
        return cls(
            rt=rt,
            metrics=metrics,
            store=store,
            jwks_session=jwks_session,
            clock=clock,
            tls=config.tls is not None,
        )

    def start_background(self) -> None:
        """First JWKS fetch for every issuer now, then periodic refresh; replay sweeping."""
        for name, cache in self.caches.items():
            self._refreshers[name] = asyncio.ensure_future(cache.run())
        if isinstance(self.store, MemoryReplayStore):
            self.store.start()
        self._tasks.append(asyncio.ensure_future(self._refresh_gauges()))

    async def reload(self, new: Config) -> None:
        """Swap to ``new`` atomically: key caches of unchanged issuers are kept, new issuers
        get their first fetch before the swap, requests in flight finish under the old runtime.

        Raises ``ConfigError`` when ``new`` changes what only a restart can change.
        """
        old = self.rt
        changed = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old.config, f)]
        if changed:
            raise ConfigError([f"{f}: a change here needs a restart" for f in changed])
        caches: dict[str, JwksCache] = {}
        fresh: list[JwksCache] = []
        for issuer in new.issuers:
            if issuer.type != "jwt":
                continue
            prev = old.caches.get(issuer.name)
            if prev is not None and prev.issuer == issuer:
                caches[issuer.name] = prev
            else:
                caches[issuer.name] = JwksCache(issuer, self.jwks_session, self.metrics, self.clock)
                fresh.append(caches[issuer.name])
                self.metrics.add_issuer(issuer.name)
        await asyncio.gather(*(c.refresh() for c in fresh))
        same_upstream = new.upstream == old.config.upstream
        upstream = old.upstream if same_upstream else Upstream(new.upstream)
        # One assignment, no await around it: a request sees the old runtime or the new one.
        self.rt = Runtime(
            config=new,
            caches=caches,
            upstream=upstream,
            gateway_headers=gateway_header_names(new.forward, new.issuers),
        )
        for name, task in list(self._refreshers.items()):
            if caches.get(name) is not old.caches.get(name):
                task.cancel()
                del self._refreshers[name]
        for cache in fresh:
            self._refreshers[cache.issuer.name] = asyncio.ensure_future(cache.run(fetch_now=False))
        if not same_upstream:
            lim = old.config.limits
            grace = (
                lim.body_timeout_seconds
                + old.config.upstream.timeout_seconds
                + old.config.replay.redis_timeout_seconds * 6
                + _HOLD_MARGIN_SECONDS
            )
            self._retired.add(old.upstream)
            self._tasks.append(asyncio.ensure_future(_close_when_unused(old, grace, self._retired)))

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

    async def close(self) -> None:
        tasks = [*self._tasks, *self._refreshers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()
        await self.upstream.close()
        for upstream in list(self._retired):
            await upstream.close()
        await self.jwks_session.close()

    # -- readiness ---------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        issuers = {name: cache.status() for name, cache in self.caches.items()}
        store = await self.store.ready()
        ok = not self.draining and store is None and all(s == "ok" for s in issuers.values())
        detail: dict[str, Any] = {
            "status": "ready" if ok else "not ready",
            "draining": self.draining,
            "issuers": issuers,
            "replay_store": store or "ok",
        }
        self.metrics.ready.set(1 if ok else 0)
        return ok, detail

    # -- the request path --------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        incoming_id = request.headers.get("X-Request-Id", "")
        request_id = incoming_id if _REQUEST_ID_RE.fullmatch(incoming_id) else uuid.uuid4().hex
        rt = self.rt
        rt.users += 1
        out = _Outcome(rt=rt)
        resp: web.StreamResponse
        try:
            if self.draining:
                raise Rejection("shutting_down", "the gateway is shutting down; retry")
            if self.inflight >= out.runtime.config.limits.max_inflight:
                raise Rejection("overloaded", "too many requests in flight; retry shortly")
            self.inflight += 1
            self.metrics.inflight.inc()
            try:
                resp = await self._process(request, out, request_id, started)
            finally:
                self.inflight -= 1
                self.metrics.inflight.dec()
        except Rejection as r:
            out.rejection = r
            resp = rejection_response(r, request_id)
        except Exception:
            log.exception("unexpected error handling a request")
            bug = Rejection("internal_error", "the gateway failed unexpectedly; retry")
            out.rejection = bug
            resp = rejection_response(bug, request_id)
        finally:
            rt.users -= 1
        self._record(request, out, resp.status, request_id, time.perf_counter() - started)
        return resp

    async def _process(
        self, request: web.BaseRequest, out: _Outcome, request_id: str, started: float
    ) -> web.StreamResponse:
        rt = out.runtime
        cfg = rt.config
        raw_path = request.raw_path
        if not raw_path.startswith("/"):
            raise Rejection("malformed_request", "only origin-form request targets are accepted")
        path = raw_path.split("?", 1)[0]
        if _DOT_SEGMENT_RE.search(path) or _ESCAPED_SEPARATOR_RE.search(path):
            # Routing works on the path as received; a backend that decodes %2F or %5C before
            # resolving ".." would serve another issuer's path (Envoy rejects these too).
            raise Rejection(
                "malformed_request", "dot segments or escaped slashes in the path are not accepted"
            )
        length = request.content_length
        if length is not None and length > cfg.limits.max_body_bytes:
            raise Rejection("body_too_large", f"the body exceeds {cfg.limits.max_body_bytes} bytes")
        for value in request.headers.values():
            # Bytes that are not UTF-8 arrive as surrogates and the client would drop them:
            # refuse rather than forward a header other than the one received.
            if not value.isascii() and not _encodable(value):
                raise Rejection("malformed_request", "a header value is not valid UTF-8")
        if self.passthrough:
            body = await self._read_body(request, started, cfg)
            return await self._forward(request, out, request_id, cfg.issuers[0], _NO_TOKEN, body)

        cands = verify.candidates(cfg.issuers, path)
        if cands and cands[0].handshake == "echo" and request.method in ("GET", "HEAD"):
            challenge = request.query.get("validationToken")
            if challenge is not None:
                out.issuer, out.handshake = cands[0].name, True
                echoed = schemes.check_handshake_token(challenge)
                return web.Response(text=echoed, headers={"X-Content-Type-Options": "nosniff"})
        if cands and cands[0].type != "jwt":
            return await self._process_scheme(request, out, request_id, started, cands[0])

        token = verify.parse_token(
            verify.extract_bearer(request.headers.getall("Authorization", []))
        )
        jwt_cands = [c for c in cands if c.type == "jwt"]
        issuer = verify.route(jwt_cands, cfg.issuers, token.claims)
        out.issuer = issuer.name
        alg, kid = verify.check_header(token.header, issuer)
        out.kid = kid
        await self._check_signature(rt, issuer, token, alg, kid)
        verify.check_claims(token.claims, issuer, self.clock())

        body = await self._read_body(request, started, cfg)
        if issuer.body_hash is not None:
            verify.check_body_hash(token.claims, body, issuer.body_hash)

        key = verify.replay_key(issuer, token)
        out.replay = key[-32:].hex()[:16]
        hold = cfg.upstream.timeout_seconds + _HOLD_MARGIN_SECONDS
        if not await self.store.reserve(key, hold):
            raise Rejection("replayed", "this token was already delivered (or is in flight)")
        return await self._forward(request, out, request_id, issuer, token, body, key)

    async def _process_scheme(
        self,
        request: web.BaseRequest,
        out: _Outcome,
        request_id: str,
        started: float,
        issuer: IssuerConfig,
    ) -> web.StreamResponse:
        """A static-token or Standard Webhooks push: same bounds, replay store and forwarding."""
        out.issuer = issuer.name
        if issuer.static_token is not None:
            claims = schemes.check_static_token(request.headers, issuer.static_token)
            body = await self._read_body(request, started, out.runtime.config)
            key = None
        else:
            assert issuer.standard_webhooks is not None
            body = await self._read_body(request, started, out.runtime.config)
            claims = schemes.check_standard_webhook(
                request.headers, body, issuer.standard_webhooks, self.clock()
            )
            key = schemes.replay_key(issuer, claims)
        if key is not None:
            out.replay = key[-32:].hex()[:16]
            hold = out.runtime.config.upstream.timeout_seconds + _HOLD_MARGIN_SECONDS
            if not await self.store.reserve(key, hold):
                raise Rejection("replayed", "this webhook-id was already delivered")
        segment = verify.b64url_encode(dumps_compact(claims))
        token = verify.ParsedToken(
            header={}, claims=claims, signing_input=b"", signature=b"", payload_segment=segment
        )
        return await self._forward(request, out, request_id, issuer, token, body, key)

    async def _forward(
        self,
        request: web.BaseRequest,
        out: _Outcome,
        request_id: str,
        issuer: IssuerConfig,
        token: verify.ParsedToken,
        body: bytes,
        key: bytes | None = None,
    ) -> web.StreamResponse:
        """Send the verified push; commit its replay key on a definite answer, else release."""
        rt = out.runtime
        cfg = rt.config
        headers, omitted = upstream_headers(
            request.headers,
            forward=cfg.forward,
            gateway_headers=rt.gateway_headers,
            issuer=issuer,
            claims=token.claims,
            payload_segment=token.payload_segment,
            client=request.remote or "",
            proto="https" if self.tls else "http",
            host=request.host,
            request_id=request_id,
        )
        if omitted:
            self.metrics.claim_headers_omitted.labels(issuer=issuer.name).inc(omitted)
        up_started = time.perf_counter()
        try:
            up = await rt.upstream.open(request.method, request.raw_path, headers, body)
        except BaseException as e:
            # Not delivered, whatever went wrong (no answer, a timeout, the drain's grace cut it
            # off, a bug): the sender's retry of this very token must be accepted, on this
            # replica or another. Shielded, so that a cancellation cannot skip the release.
            if key is not None:
                await asyncio.shield(self.store.release(key))
            self.metrics.upstream_duration.labels(status_class="error").observe(
                time.perf_counter() - up_started
            )
            if isinstance(e, Rejection | asyncio.CancelledError) or not isinstance(e, Exception):
                raise
            log.warning("forwarding failed: %r", e)
            raise Rejection(
                "upstream_unavailable", "the push could not be sent to the backend; retry"
            ) from None
        out.upstream_status = up.status
        if key is None:
            pass
        elif up.status >= 500 or up.status in _NOT_TAKEN:
            await asyncio.shield(self.store.release(key))
        else:
            await asyncio.shield(self.store.commit(key, self._replay_ttl(issuer, token)))
        try:
            return await rt.upstream.relay(request, up)
        except Rejection:
            # The answer broke off or stalled: like a timeout, the sender's retry must be taken.
            if key is not None:
                await self.store.release(key)
            raise
        finally:
            out.upstream_seconds = time.perf_counter() - up_started
            self.metrics.upstream_duration.labels(status_class=status_class(up.status)).observe(
                out.upstream_seconds
            )

    def _replay_ttl(self, issuer: IssuerConfig, token: verify.ParsedToken) -> float:
        if issuer.standard_webhooks is not None:
            # Accepted while |now - timestamp| <= tolerance: keep the id for both sides of it.
            return 2 * issuer.standard_webhooks.tolerance_seconds + issuer.clock_skew_seconds
        return verify.replay_ttl(token.claims, issuer, self.clock())

    async def _check_signature(
        self,
        rt: Runtime,
        issuer: IssuerConfig,
        token: verify.ParsedToken,
        alg: str,
        kid: str | None,
    ) -> None:
        cache = rt.caches[issuer.name]
        if kid is not None:
            key = await cache.key_for(kid, alg)
            if key.alg != alg:
                raise Rejection(
                    "disallowed_algorithm", "the token's alg is not the algorithm of its key"
                )
            if not key.verify(token.signing_input, token.signature):
                raise Rejection("bad_signature", "the token's signature does not verify")
            return
        keys = await cache.kidless_candidates(alg)
        if self._verify_any(issuer, token, keys):
            return
        fresh = await cache.kidless_after_miss(alg, keys)
        if not self._verify_any(issuer, token, fresh):
            raise Rejection("bad_signature", "the token's signature does not verify with any key")

    def _verify_any(
        self, issuer: IssuerConfig, token: verify.ParsedToken, keys: list[VerifyKey]
    ) -> bool:
        tried, ok = 0, False
        for key in keys:
            tried += 1
            if key.verify(token.signing_input, token.signature):
                ok = True
                break
        self.metrics.kidless_attempts.labels(issuer=issuer.name).inc(tried)
        return ok

    async def _read_body(self, request: web.BaseRequest, started: float, cfg: Config) -> bytes:
        limit = cfg.limits.max_body_bytes
        remaining = cfg.limits.body_timeout_seconds - (time.perf_counter() - started)
        body = bytearray()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                expect = request.headers.get("Expect", "").lower()
                if expect == "100-continue" and request.version >= (1, 1):
                    # The low-level server never answers Expect itself: a sender waiting for
                    # 100 Continue would stall until body_timeout. Sent only once verified.
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    request.writer.output_size = 0  # the interim answer is not the response
                while True:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    if len(body) + len(chunk) > limit:
                        raise Rejection("body_too_large", f"the body exceeds {limit} bytes")
                    body += chunk
        except TimeoutError:
            raise Rejection("request_timeout", "the body did not arrive in time") from None
        except aiohttp.web.HTTPException:
            raise
        except (aiohttp.ClientPayloadError, ConnectionError, ValueError):
            raise Rejection("malformed_request", "the request body is malformed") from None
        return bytes(body)

    def _record(
        self,
        request: web.BaseRequest,
        out: _Outcome,
        status: int,
        request_id: str,
        elapsed: float,
    ) -> None:
        r = out.rejection
        if r is None:
            outcome, reason = ("handshake" if out.handshake else "forwarded"), "none"
        else:
            reason = r.reason
            outcome = "error" if reason in _ERROR_REASONS else "rejected"
        self.metrics.record_request(out.issuer, outcome, reason, elapsed)
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "event": "request",
            "request_id": request_id,
            "issuer": out.issuer,
            "outcome": outcome,
            "reason": reason,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client": request.remote,
            "method": request.method,
            "path": clip(request.path, 256),
        }
        if out.kid is not None:
            line["kid"] = clip(out.kid, 64)
        if out.replay is not None:
            line["replay_key_sha256"] = out.replay
        if out.upstream_status is not None:
            line["upstream_status"] = out.upstream_status
        if out.upstream_seconds is not None:
            line["upstream_ms"] = round(out.upstream_seconds * 1000, 3)
        if r is not None:
            line["detail"] = r.detail
        self.access.write(line, rejected=r is not None)


async def _close_when_unused(old: Runtime, limit: float, retired: set[Upstream]) -> None:
    """Close a replaced upstream session once no request started under ``old`` is left, or
    after ``limit`` seconds (by then every such request has hit one of its own timeouts)."""
    deadline = time.monotonic() + limit
    while old.users and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.2)
    await old.upstream.close()
    retired.discard(old.upstream)


GATEWAY = web.AppKey("gateway", Gateway)


def build_admin_app(gw: Gateway) -> web.Application:
    """/livez (alias /healthz), /readyz and /metrics, on their own port."""

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = await gw.readiness()
        return web.json_response(detail, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        await gw.refresh_gauges()
        resp = web.Response(body=gw.metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    app = web.Application()
    app[GATEWAY] = gw
    app.router.add_get("/livez", livez)
    app.router.add_get("/healthz", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
