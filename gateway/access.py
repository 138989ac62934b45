"""The access record: one JSON line and one ``jwksgate_requests_total`` count per request
outcome, built in one place for requests the pipeline handled and for connections the listener
refused before any request was parsed."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Rejection
from gateway.logs import ECS_VERSION, AccessLog, clip, rfc3339
from gateway.metrics import Metrics

__all__ = ["Attempt", "Recorder", "new_request_id", "request_id"]

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# ECS event.outcome for each of the gateway's outcomes.
_ECS_OUTCOME = {"forwarded": "success", "handshake": "success"}


class _Ids:
    """Fresh request ids, 32 hex digits like a uuid4's: 16 random ones drawn once per process
    (again after a fork), then a counter; unique across replicas and workers without a system
    call per request (``uuid4`` reads ``os.urandom`` every time)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_ids = _Ids()


def new_request_id() -> str:
    return _ids.next()


def request_id(incoming: str | None) -> str:
    """The sender's ``X-Request-Id`` when it is a harmless token (1-128 of ``A-Za-z0-9._:-``),
    else a fresh one: a sender's id ties its logs to ours; anything else is not repeated."""
    if incoming and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming
    return _ids.next()


@dataclass(slots=True)
class Attempt:
    """What is known about one request so far; filled in as the pipeline goes."""

    request_id: str
    issuer: str = "unknown"
    kid: str | None = None
    replay: str | None = None
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    rejection: Rejection | None = None
    handshake: bool = False

    def refused(self, r: Rejection) -> None:
        self.rejection = r
        if r.issuer is not None:
            self.issuer = r.issuer
        if r.kid is not None:
            self.kid = r.kid

    def replay_key(self, key: bytes) -> None:
        # A short, stable name for the key in the log: never the key material itself.
        self.replay = key[-32:].hex()[:16]


class Recorder:
    def __init__(self, metrics: Metrics, access: AccessLog) -> None:
        self.metrics = metrics
        self.access = access

    def record(
        self,
        attempt: Attempt,
        status: int,
        elapsed: float,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        """Count and log one outcome. ``request`` holds client, method and path when a request
        was parsed at all."""
        r = attempt.rejection
        if r is None:
            outcome, reason = ("handshake" if attempt.handshake else "forwarded"), "none"
        else:
            outcome, reason = r.outcome, r.reason
        self.metrics.record_request(attempt.issuer, outcome, reason, elapsed)
        if not self.access.enabled():
            return
        method = path = None
        line: dict[str, Any] = {
            "@timestamp": rfc3339(time.time()),
            "log.level": "info",
            "log.logger": "jwksgate.access",
            "message": "",
            "ecs.version": ECS_VERSION,
            "event.kind": "event",
            "event.outcome": _ECS_OUTCOME.get(outcome, "failure"),
            "event.duration": int(elapsed * 1e9),
            "http.request.id": attempt.request_id,
            "http.response.status_code": status,
            "jwksgate.outcome": outcome,
            "jwksgate.reason": reason,
            "jwksgate.issuer": attempt.issuer,
        }
        if request is not None:
            method, path = request.get("method"), clip(request.get("path"), 256)
            line["client.ip"] = request.get("client")
            line["http.request.method"] = method
            line["url.path"] = path
        if attempt.kid is not None:
            line["jwksgate.kid"] = clip(attempt.kid, 64)
        if attempt.replay is not None:
            line["jwksgate.replay_key_sha256"] = attempt.replay
        if attempt.upstream_status is not None:
            line["jwksgate.upstream.status_code"] = attempt.upstream_status
        if attempt.upstream_seconds is not None:
            line["jwksgate.upstream.duration"] = int(attempt.upstream_seconds * 1e9)
        if r is not None:
            line["jwksgate.detail"] = r.detail
        line["message"] = f"{method or '-'} {path or '-'} {status} {outcome} {reason}"
        self.access.write(line, rejected=r is not None)

    def refusal(self, r: Rejection, waited: float) -> str:
        """A connection answered before any request was parsed; returns the request id its
        answer carries."""
        attempt = Attempt(request_id=_ids.next(), rejection=r)
        self.record(attempt, r.status, waited)
        return attempt.request_id
