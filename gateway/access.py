"""The access record: one JSON line and one ``jwksgate_requests_total`` count per request
outcome, built in one place for requests the pipeline handled and for connections the listener
refused before any request was parsed."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Rejection
from gateway.logs import AccessLog, clip
from gateway.metrics import Metrics

__all__ = ["Attempt", "Recorder", "request_id"]

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(incoming: str | None) -> str:
    """The sender's ``X-Request-Id`` when it is a harmless token, else a fresh one."""
    if incoming and _REQUEST_ID_RE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


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
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "event": "request",
            "request_id": attempt.request_id,
            "issuer": attempt.issuer,
            "outcome": outcome,
            "reason": reason,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if request is not None:
            line["client"] = request.get("client")
            line["method"] = request.get("method")
            line["path"] = clip(request.get("path"), 256)
        if attempt.kid is not None:
            line["kid"] = clip(attempt.kid, 64)
        if attempt.replay is not None:
            line["replay_key_sha256"] = attempt.replay
        if attempt.upstream_status is not None:
            line["upstream_status"] = attempt.upstream_status
        if attempt.upstream_seconds is not None:
            line["upstream_ms"] = round(attempt.upstream_seconds * 1000, 3)
        if r is not None:
            line["detail"] = r.detail
        self.access.write(line, rejected=r is not None)

    def refusal(self, r: Rejection, waited: float) -> str:
        """A connection answered before any request was parsed; returns the request id its
        answer carries."""
        attempt = Attempt(request_id=uuid.uuid4().hex, rejection=r)
        self.record(attempt, r.status, waited)
        return attempt.request_id
