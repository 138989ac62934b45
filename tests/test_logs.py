"""The access log: one JSON line per outcome, rejection floods sampled in the log only."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from gateway.logs import AccessLog
from tests.support import FakeClock, world


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "jwksgate.access"]


def test_rejections_beyond_the_limit_are_counted_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(1000.0)
    log = AccessLog(max_rejections_per_second=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="jwksgate.access"):
        for i in range(10):
            log.write({"n": i, "reason": "bad_signature"}, rejected=True)
        log.write({"n": 10, "reason": "none"}, rejected=False)  # never sampled
        clock.advance(1.0)
        log.write({"n": 11, "reason": "expired"}, rejected=True)  # a new second
    got = lines(caplog)
    assert [line["n"] for line in got] == [0, 1, 2, 10, 11]
    assert got[3]["jwksgate.suppressed_before"] == 7  # reported on the next line written
    assert "jwksgate.suppressed_before" not in got[4]


async def test_a_rejection_flood_is_sampled_in_the_log_but_counted_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with world() as w, aiohttp.ClientSession() as http:
        assert w.running is not None
        w.running.gateway.access = AccessLog(max_rejections_per_second=5)
        with caplog.at_level(logging.INFO, logger="jwksgate.access"):
            for _ in range(60):
                async with http.post(w.url + "/hook", data=b"{}") as resp:
                    assert resp.status == 401
            body = b"{}"
            headers = {"Authorization": f"Bearer {w.token(body)}"}
            async with http.post(w.url + "/hook", data=body, headers=headers) as resp:
                assert resp.status == 200
        async with http.get(w.admin_url + "/metrics") as resp:
            metrics = await resp.text()
    assert (
        'jwksgate_requests_total{issuer="unknown",outcome="rejected",reason="missing_token"} 60.0'
        in metrics
    )
    got = lines(caplog)
    assert len(got) < 61
    # Nothing is silently lost: written lines plus the reported suppressions add up.
    suppressed = sum(int(str(line.get("jwksgate.suppressed_before", 0))) for line in got)
    assert len(got) + suppressed == 61
    assert got[-1]["jwksgate.outcome"] == "forwarded"
