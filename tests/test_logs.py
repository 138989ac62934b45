"""The access log: one JSON line per outcome, rejection floods sampled in the log only."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.logs import AccessLog, dumps
from tests.support import FakeClock, logging_to, world


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "jwksgate.access"]


def write(log: AccessLog, fields: dict[str, Any], rejected: bool) -> None:
    """What the Recorder does with a line: ``admit``, the count of the left-out lines last."""
    suppressed = log.admit(rejected)
    if suppressed is None:
        return
    if suppressed:
        fields["jwksgate.suppressed_before"] = suppressed
    log.emit(dumps(fields))


def test_rejections_beyond_the_limit_are_counted_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(1000.0)
    log = AccessLog(max_rejections_per_second=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="jwksgate.access"):
        for i in range(10):
            write(log, {"n": i, "reason": "bad_signature"}, rejected=True)
        write(log, {"n": 10, "reason": "none"}, rejected=False)  # never sampled
        clock.advance(1.0)
        write(log, {"n": 11, "reason": "expired"}, rejected=True)  # a new second
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


# --- the access line's way to stdout ---------------------------------------------------------
# With the gateway's own logging setup the line is handed to its one line handler directly
# (no LogRecord: about 5 us a request); anything else that could see, filter or re-route the
# record must get it through logging as before.


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


FIELDS = {"@timestamp": "2026-12-03T15:13:54.123Z", "message": "POST /é 200", "n": 1, "x": None}


def test_an_access_line_reaches_stdout_as_the_same_bytes(tmp_path: Path) -> None:
    out = tmp_path / "stdout.log"
    with logging_to(out):
        AccessLog().emit(dumps(dict(FIELDS)))
        logging.getLogger("jwksgate.access").info(dumps(FIELDS))  # through a LogRecord
    first, second = out.read_bytes().splitlines(keepends=True)
    assert first == second == (dumps(FIELDS) + "\n").encode()


def test_an_access_line_inside_an_event_loop_is_written_at_the_next_iteration(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stdout.log"

    async def main() -> str:
        AccessLog().emit(dumps(dict(FIELDS)))
        before = out.read_text()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return before

    with logging_to(out):
        assert asyncio.run(main()) == ""
        assert out.read_text() == dumps(FIELDS) + "\n"


@pytest.mark.parametrize("where", ["access handler", "access filter", "handler filter"])
def test_an_access_line_goes_through_logging_when_anything_else_may_see_it(
    tmp_path: Path, where: str
) -> None:
    out = tmp_path / "stdout.log"
    seen = Collect()
    with logging_to(out):
        access = logging.getLogger("jwksgate.access")
        if where == "access handler":
            access.addHandler(seen)
        else:
            target: logging.Filterer = access
            if where == "handler filter":
                [target] = logging.getLogger("jwksgate").handlers

            def keep(record: logging.LogRecord) -> bool:
                seen.records.append(record)
                return "drop" not in record.getMessage()

            target.addFilter(keep)
        AccessLog().emit(dumps({"n": 1}))
        AccessLog().emit(dumps({"n": 2, "drop": True}))
        access.removeHandler(seen)
    assert [json.loads(r.getMessage())["n"] for r in seen.records] == [1, 2]
    written = [json.loads(line)["n"] for line in out.read_text().splitlines()]
    assert written == ([1, 2] if where == "access handler" else [1])


def test_an_access_line_is_not_written_past_the_handler_level_or_to_a_propagated_root(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stdout.log"
    seen = Collect()
    with logging_to(out):
        [handler] = logging.getLogger("jwksgate").handlers
        handler.setLevel(logging.WARNING)
        AccessLog().emit(dumps({"n": 1}))
        handler.setLevel(logging.NOTSET)
        logging.getLogger("jwksgate").propagate = True
        logging.getLogger().addHandler(seen)
        try:
            AccessLog().emit(dumps({"n": 2}))
        finally:
            logging.getLogger().removeHandler(seen)
    assert [json.loads(r.getMessage())["n"] for r in seen.records] == [2]
    assert [json.loads(line)["n"] for line in out.read_text().splitlines()] == [2]
