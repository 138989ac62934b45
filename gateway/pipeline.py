"""The request path, step by step: admit, authenticate (headers), read the body, verify the body,
reserve the replay key, forward, commit or release, record. This is the only caller of the replay
store's reserve, commit and release.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from gateway import admission, handshake
from gateway.access import Attempt, Recorder, request_id
from gateway.admission import Admission
from gateway.answers import echo_answer, web_answer
from gateway.authn import Verified
from gateway.body import read_body
from gateway.errors import Rejection
from gateway.forward_headers import idempotency_key, upstream_headers
from gateway.metrics import Metrics
from gateway.replay import ReplayStore
from gateway.runtime import Runtime, Runtimes
from gateway.token_from import forwarded_path
from gateway.upstream import Answer, Sending

__all__ = ["Pipeline"]

log = logging.getLogger("jwksgate")

# Backend answers that mean "not taken, try again" although they are not 5xx: the token is
# released so that the sender's retry is delivered.
_NOT_TAKEN = frozenset({408, 429})


class Pipeline:
    def __init__(
        self,
        runtimes: Runtimes,
        store: ReplayStore,
        metrics: Metrics,
        recorder: Recorder,
        clock: Callable[[], float],
        *,
        tls: bool,
    ) -> None:
        self.runtimes = runtimes
        self.admission = Admission()
        self.store = store
        self.metrics = metrics
        self.recorder = recorder
        self.clock = clock
        self.proto = "https" if tls else "http"

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        attempt = Attempt(request_id(request.headers.get("X-Request-Id")))
        rt = self.runtimes.current
        rt.users += 1
        resp: web.StreamResponse
        try:
            with self.admission.slot(rt.config.limits):
                self.metrics.inflight.inc()
                try:
                    resp = await self._steps(request, rt, attempt, started)
                finally:
                    self.metrics.inflight.dec()
        except Rejection as r:
            attempt.refused(r)
            resp = web_answer(r, attempt.request_id)
        except Exception:
            log.exception("unexpected error handling a request")
            attempt.refused(Rejection("internal_error", "the gateway failed unexpectedly; retry"))
            assert attempt.rejection is not None
            resp = web_answer(attempt.rejection, attempt.request_id)
        finally:
            rt.users -= 1
        seen = {"client": request.remote, "method": request.method, "path": request.path}
        self.recorder.record(attempt, resp.status, time.perf_counter() - started, seen)
        return resp

    async def _steps(
        self, request: web.BaseRequest, rt: Runtime, attempt: Attempt, started: float
    ) -> web.StreamResponse:
        limits = rt.config.limits
        path = admission.route_path(request.raw_path)
        admission.check_request(
            path, request.headers.values(), request.content_length, limits.max_body_bytes
        )
        owners = rt.owners(path)
        echo = handshake.challenge(owners, request.method, request.query)
        if echo is not None:
            attempt.issuer, attempt.handshake = echo[0].name, True
            return echo_answer(echo[1], attempt.request_id)
        authn = rt.authenticator(owners)
        query = request.raw_path.partition("?")[2]
        pending = await authn.authenticate(request.headers, path, self.clock(), query)
        attempt.issuer, attempt.kid = pending.issuer.name, pending.kid
        with self.admission.body_wait(
            limits,
            authenticated=pending.authenticated,
            issuer=pending.issuer.name,
            body_signed_issuers=rt.body_signed_issuers,
        ):
            body = await read_body(request, started, limits)
        verified = authn.verify_body(pending, body, self.clock())
        if verified.answer is not None:
            attempt.handshake = True
            return echo_answer(verified.answer, attempt.request_id)
        key = verified.replay_key
        if key is not None:
            attempt.replay_key(key)
            if not await self.store.reserve(key, rt.hold_seconds):
                raise Rejection("replayed", "this push was already delivered (or is in flight)")
        up_started = time.perf_counter()
        up = await self._open(request, rt, attempt, verified, body, up_started)
        attempt.upstream_status = up.status
        if key is not None:
            try:
                # A cancellation (the drain's grace) cannot leave the key reserved: the store
                # finishes a commit or release whose caller is gone (ReplayStore).
                if up.status >= 500 or up.status in _NOT_TAKEN:
                    await self.store.release(key)
                else:
                    await self.store.commit(key, verified.replay_ttl)
            except BaseException:
                up.release()  # cancelled meanwhile: the connection is not left taken
                raise
        try:
            # The backend's status line has arrived: whatever happens to the rest of its answer,
            # the push was taken and its key is never released from here on.
            return await rt.upstream.relay(request, up, attempt.request_id)
        finally:
            attempt.upstream_seconds = time.perf_counter() - up_started
            self.metrics.observe_upstream(up.status, attempt.upstream_seconds)

    async def _open(
        self,
        request: web.BaseRequest,
        rt: Runtime,
        attempt: Attempt,
        verified: Verified,
        body: bytes,
        up_started: float,
    ) -> Answer:
        """Send the verified push; until its status line arrives, any failure releases its key."""
        headers, omitted = upstream_headers(
            request.headers,
            forward=rt.config.forward,
            gateway_headers=rt.gateway_headers,
            issuer=verified.issuer,
            claims=verified.claims,
            payload_segment=verified.claims_segment,
            client=request.remote or "",
            proto=self.proto,
            host=request.host,
            request_id=attempt.request_id,
            strip=verified.strip_headers,
            add=verified.add_headers,
        )
        if omitted:
            self.metrics.claim_headers_omitted.labels(issuer=verified.issuer.name).inc(omitted)
        idem = rt.config.forward.idempotency_header
        if idem and verified.replay_key is not None:
            headers[idem] = idempotency_key(verified.replay_key)
        spec = verified.issuer.token_from
        path_qs = forwarded_path(
            request.raw_path, spec, spec.keep_token or rt.config.forward.keep_token
        )
        sending = Sending()
        try:
            return await rt.upstream.open(request.method, path_qs, headers, body, sending)
        except BaseException as e:
            # Not delivered, whatever went wrong (no answer, a timeout, the drain's grace cut it
            # off, a bug): the sender's retry of this very token must be accepted, on this
            # replica or another (the store finishes the release even if this is cancelled).
            if verified.replay_key is not None:
                await self.store.release(verified.replay_key)
            self.metrics.observe_upstream(None, time.perf_counter() - up_started)
            if sending.sent:
                self._ambiguous(verified, attempt, ambiguity(e), headers.get(idem or "", ""))
            if isinstance(e, Rejection | asyncio.CancelledError) or not isinstance(e, Exception):
                raise
            log.warning("forwarding failed: %r", e)
            raise Rejection(
                "upstream_unavailable", "the push could not be sent to the backend; retry"
            ) from None

    def _ambiguous(self, verified: Verified, attempt: Attempt, cause: str, key: str) -> None:
        """The request was written but no status line came back: the backend may have taken the
        push. Its token is released all the same (nothing says it was delivered), so the sender's
        retry is forwarded again: a duplicate unless the backend de-duplicates."""
        self.metrics.ambiguous_deliveries.labels(issuer=verified.issuer.name, cause=cause).inc()
        log.warning(
            "ambiguous delivery: the backend may have taken this push (%s after the request was "
            "sent, before a status line); the token is released and a retry will be forwarded "
            "again, a duplicate unless the backend de-duplicates%s (issuer %s, request %s)",
            cause,
            f" on idempotency key {key}" if key else "",
            verified.issuer.name,
            attempt.request_id,
        )


def ambiguity(e: BaseException) -> str:
    """The ``cause`` label of a failure after the request was sent."""
    if isinstance(e, Rejection):
        return "timeout" if e.reason == "upstream_timeout" else "disconnected"
    if isinstance(e, asyncio.CancelledError):
        return "cancelled"  # the drain's grace ran out with the push in flight
    return "error"
