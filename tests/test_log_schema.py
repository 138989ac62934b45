"""One log schema on one stream: every line the gateway writes (access and application) is one
JSON object with Elastic Common Schema field names on stdout; every answer carries the
``X-Request-Id`` its access line names."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp

from gateway.logs import rfc3339
from tests.httpkit import config_with, push, raw_exchange, raw_status, send
from tests.support import logging_to, world

BODY = b'{"event":"ping"}'
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
ACCESS_FIELDS = (
    "@timestamp",
    "log.level",
    "log.logger",
    "message",
    "ecs.version",
    "event.kind",
    "event.outcome",
    "event.duration",
    "http.request.id",
    "http.response.status_code",
    "jwksgate.outcome",
    "jwksgate.reason",
    "jwksgate.issuer",
)


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_rfc3339_has_milliseconds_in_utc() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1796310834.1239) == "2026-12-03T15:13:54.123Z"
    assert rfc3339(1796310834.9999) == "2026-12-03T15:13:54.999Z"


async def test_every_line_is_one_ecs_object_on_stdout_and_every_answer_has_its_id(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stdout.log"
    with logging_to(out):
        configure = config_with(limits={"header_timeout_seconds": 0.3})
        async with world(configure) as w, aiohttp.ClientSession() as http:
            token = w.token(BODY)
            ok = await push(http, w, BODY, token=token, headers={"X-Request-Id": "sender-id.1"})
            again = await push(http, w, BODY, token=token, headers={"X-Request-Id": "bad id"})
            missing = await send(http, w.url + "/hook", body=BODY)
            raw = await raw_exchange(w.url)  # sends nothing: the 408 is written to the socket
            bad = b"POST /hook HTTP/1.1\r\nHost: gw\r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n"
            refused = await raw_exchange(w.url, bad)  # the parser's refusal, a JSON 400
            logging.getLogger("jwksgate.test").warning("an application line")
    assert (ok.status, again.status, missing.status) == (200, 409, 401)
    assert (raw_status(raw), raw_status(refused)) == (408, 400)
    # A sane client id is kept end to end; anything else is replaced by a fresh one.
    assert ok.headers["X-Request-Id"] == "sender-id.1"
    assert w.backend.received[0].header("x-request-id") == "sender-id.1"
    assert GENERATED_ID.fullmatch(again.headers["X-Request-Id"])
    assert GENERATED_ID.fullmatch(missing.headers["X-Request-Id"])
    raw_ids = [re.search(rb"\r\nX-Request-Id: ([0-9a-f]{32})\r\n", r) for r in (raw, refused)]
    assert None not in raw_ids, (raw[:300], refused[:300])
    ids = [ok.headers["X-Request-Id"], again.headers["X-Request-Id"]]
    ids += [missing.headers["X-Request-Id"]] + [m.group(1).decode() for m in raw_ids if m]
    assert len(set(ids)) == 5

    lines = read_lines(out)
    for line in lines:
        assert TIMESTAMP.fullmatch(line["@timestamp"]), line
        assert line["log.level"] in ("debug", "info", "warning", "error", "critical")
        assert isinstance(line["message"], str) and line["ecs.version"]
    access = [line for line in lines if line["log.logger"] == "jwksgate.access"]
    by_id = {line["http.request.id"]: line for line in access}
    assert list(by_id) == ids
    for line in access:
        for name in ACCESS_FIELDS:
            assert name in line, (name, line)
        assert isinstance(line["event.duration"], int) and line["event.duration"] >= 0
    forwarded = by_id["sender-id.1"]
    assert forwarded["event.outcome"] == "success"
    assert forwarded["http.response.status_code"] == 200
    assert (forwarded["http.request.method"], forwarded["url.path"]) == ("POST", "/hook")
    assert forwarded["client.ip"] == "127.0.0.1"
    assert forwarded["jwksgate.issuer"] == "sender"
    assert forwarded["jwksgate.upstream.status_code"] == 200
    assert re.fullmatch(r"[0-9a-f]{16}", forwarded["jwksgate.replay_key_sha256"])
    replayed = by_id[ids[1]]
    assert (replayed["event.outcome"], replayed["jwksgate.reason"]) == ("failure", "replayed")
    assert by_id[ids[2]]["jwksgate.reason"] == "missing_token"
    timeout = by_id[ids[3]]
    assert (timeout["http.response.status_code"], timeout["jwksgate.reason"]) == (
        408,
        "request_timeout",
    )
    parser = by_id[ids[4]]
    assert (parser["http.response.status_code"], parser["jwksgate.reason"]) == (
        400,
        "malformed_request",
    )
    app = [line for line in lines if line["log.logger"] == "jwksgate.test"]
    assert [(a["log.level"], a["message"]) for a in app] == [("warning", "an application line")]
    # Never the token, not even a part of it.
    text = out.read_text()
    for part in token.split("."):
        assert part not in text


def test_an_exception_line_names_the_error_in_ecs_fields(tmp_path: Path) -> None:
    out = tmp_path / "stdout.log"
    with logging_to(out):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("jwksgate").exception("unexpected error handling a request")
    [line] = read_lines(out)
    assert line["log.level"] == "error"
    assert (line["error.type"], line["error.message"]) == ("ValueError", "boom")
    assert "Traceback" in line["error.stack_trace"]


def test_lines_are_written_whole_even_when_many_arrive_at_once(tmp_path: Path) -> None:
    # Outside an event loop every line is written at once; a long line is never split.
    out = tmp_path / "stdout.log"
    with logging_to(out):
        log = logging.getLogger("jwksgate")
        for i in range(50):
            log.info("line %d %s", i, "x" * (i * 200))
    lines = read_lines(out)
    assert [line["message"].split(" ")[1] for line in lines] == [str(i) for i in range(50)]
