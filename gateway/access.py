"""The access record: one JSON line and one ``jwksgate_requests_total`` count per request
outcome, built in one place for requests the pipeline handled and for connections the listener
refused before any request was parsed."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Rejection
from gateway.logs import ECS_VERSION, AccessLog, clip, rfc3339
from gateway.metrics import Metrics

__all__ = ["Attempt", "Recorder", "access_line", "new_request_id", "request_id"]

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


# The wall clock of the line's @timestamp (a name of its own, for the tests).
_now = time.time
# JSON string literals as json.dumps writes them with ensure_ascii (the C function).
_text = json.encoder.encode_basestring_ascii
# The line's constant part, between "message" and "event.outcome".
_FIXED = f',"ecs.version":{_text(ECS_VERSION)},"event.kind":"event","event.outcome":'


def _maybe(value: str | None) -> str:
    return "null" if value is None else _text(value)


def access_line(
    attempt: Attempt,
    status: int,
    elapsed: float,
    request: Mapping[str, Any] | None,
    outcome: str,
    reason: str,
) -> str:
    """The access line as the JSON object ``json.dumps`` made of its fields, in the same order,
    written straight from them: a dict and the encoder cost about twice as much.
    tests/test_access_line.py holds the dict as the oracle."""
    method = path = None
    if request is not None:
        method, path = request.get("method"), clip(request.get("path"), 256)
    message = f"{method or '-'} {path or '-'} {status} {outcome} {reason}"
    parts = [
        f'{{"@timestamp":"{rfc3339(_now())}","log.level":"info","log.logger":"jwksgate.access"',
        f',"message":{_text(message)}{_FIXED}"{_ECS_OUTCOME.get(outcome, "failure")}"',
        f',"event.duration":{int(elapsed * 1e9)},"http.request.id":{_text(attempt.request_id)}',
        f',"http.response.status_code":{int(status)},"jwksgate.outcome":{_text(outcome)}',
        f',"jwksgate.reason":{_text(reason)},"jwksgate.issuer":{_text(attempt.issuer)}',
    ]
    if request is not None:
        parts.append(
            f',"client.ip":{_maybe(request.get("client"))},"http.request.method":'
            f'{_maybe(method)},"url.path":{_maybe(path)}'
        )
    if attempt.kid is not None:
        parts.append(f',"jwksgate.kid":{_text(attempt.kid[:64])}')
    if attempt.replay is not None:
        parts.append(f',"jwksgate.replay_key_sha256":{_text(attempt.replay)}')
    if attempt.upstream_status is not None:
        parts.append(f',"jwksgate.upstream.status_code":{int(attempt.upstream_status)}')
    if attempt.upstream_seconds is not None:
        parts.append(f',"jwksgate.upstream.duration":{int(attempt.upstream_seconds * 1e9)}')
    if attempt.rejection is not None:
        parts.append(f',"jwksgate.detail":{_text(attempt.rejection.detail)}')
    parts.append("}")
    return "".join(parts)


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
        suppressed = self.access.admit(rejected=r is not None)
        if suppressed is None:
            return
        line = access_line(attempt, status, elapsed, request, outcome, reason)
        if suppressed:
            line = f'{line[:-1]},"jwksgate.suppressed_before":{suppressed}}}'
        self.access.emit(line)

    def refusal(self, r: Rejection, waited: float) -> str:
        """A connection answered before any request was parsed; returns the request id its
        answer carries."""
        attempt = Attempt(request_id=_ids.next(), rejection=r)
        self.record(attempt, r.status, waited)
        return attempt.request_id
