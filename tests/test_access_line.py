"""The access line is written straight from its fields, without a dict and ``json.dumps``; it
must be the very bytes that dumping the dict gave, for every mix of present and missing
fields and for any text in the values (quotes, backslashes, control characters, non-ASCII).

The dict the gateway used to build is written out here as the oracle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from gateway import access
from gateway.access import Attempt, Recorder
from gateway.errors import Rejection
from gateway.logs import ECS_VERSION, AccessLog, clip, dumps, rfc3339
from gateway.metrics import Metrics
from tests.support import captured_log, fuzz

NOW = 1796353200.25


def oracle(
    attempt: Attempt, status: int, elapsed: float, request: Mapping[str, Any] | None
) -> dict[str, Any]:
    r = attempt.rejection
    if r is None:
        outcome, reason = ("handshake" if attempt.handshake else "forwarded"), "none"
    else:
        outcome, reason = r.outcome, r.reason
    method = path = None
    line: dict[str, Any] = {
        "@timestamp": rfc3339(NOW),
        "log.level": "info",
        "log.logger": "jwksgate.access",
        "message": "",
        "ecs.version": ECS_VERSION,
        "event.kind": "event",
        "event.outcome": {"forwarded": "success", "handshake": "success"}.get(outcome, "failure"),
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
    return line


TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from('"\\\x00\n\x7f/é'),
    max_size=300,
)
# Past the clip limits too (a kid is cut to 64 characters, a path to 256).
LONG = st.builds(lambda c, n: c * n, st.sampled_from(['"', "é", "k", "\\"]), st.integers(60, 300))
MAYBE = st.none() | TEXT | LONG
REJECTIONS = st.none() | st.builds(
    Rejection,
    st.sampled_from(["bad_signature", "replayed", "upstream_timeout", "body_too_large"]),
    TEXT,
)
REQUESTS = st.none() | st.fixed_dictionaries(
    {"client": MAYBE, "method": st.none() | st.sampled_from(["POST", "GET", 'X"Y']), "path": MAYBE}
)
FUZZ = fuzz(400, HealthCheck.function_scoped_fixture)


@FUZZ
@given(
    request_id=TEXT,
    issuer=TEXT,
    kid=MAYBE,
    replay=st.none() | st.sampled_from(["00112233aabbccdd"]),
    upstream_status=st.none() | st.integers(100, 599),
    upstream_seconds=st.none() | st.floats(0, 100),
    rejection=REJECTIONS,
    handshake=st.booleans(),
    status=st.integers(100, 599),
    elapsed=st.floats(0, 100),
    request=REQUESTS,
)
def test_the_line_is_the_bytes_the_dict_dumped_to(
    monkeypatch: pytest.MonkeyPatch,
    request_id: str,
    issuer: str,
    kid: str | None,
    replay: str | None,
    upstream_status: int | None,
    upstream_seconds: float | None,
    rejection: Rejection | None,
    handshake: bool,
    status: int,
    elapsed: float,
    request: dict[str, Any] | None,
) -> None:
    attempt = Attempt(
        request_id,
        issuer=issuer,
        kid=kid,
        replay=replay,
        upstream_status=upstream_status,
        upstream_seconds=upstream_seconds,
        rejection=rejection,
        handshake=handshake,
    )
    monkeypatch.setattr(access, "_now", lambda: NOW)
    with captured_log("jwksgate.access") as records:
        # No sampling in this test: every line is written.
        Recorder(Metrics(), AccessLog(max_rejections_per_second=10**9)).record(
            attempt, status, elapsed, request
        )
    (record,) = records
    want = dumps(oracle(attempt, status, elapsed, request))
    assert str(record.msg) == want
    json.loads(want)  # and it is one JSON object


def test_the_suppressed_count_goes_last_as_it_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "_now", lambda: NOW)
    recorder = Recorder(Metrics(), AccessLog(max_rejections_per_second=2, clock=lambda: 7.0))
    refused = Rejection("bad_signature", "no key verified the signature")
    with captured_log("jwksgate.access") as records:
        for _ in range(5):
            recorder.record(Attempt("r", rejection=refused), 401, 0.001)
        recorder.record(Attempt("ok"), 200, 0.002)
    got = [str(r.msg) for r in records]
    assert len(got) == 3  # two rejected lines a second, then the forwarded one
    want = oracle(Attempt("ok"), 200, 0.002, None)
    want["jwksgate.suppressed_before"] = 3
    assert got[-1] == dumps(want)
