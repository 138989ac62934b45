"""Wire-level hardening through real sockets (issue 13 items 1, 3, 9, 10 and issue 14 item 6).

Every test talks raw HTTP/1.1 to a running gateway on loopback: the bytes a hostile or unlucky
sender really puts on the wire, and the bytes it really gets back, in the order it gets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.access import Recorder
from gateway.admission import check_request, origin_form
from gateway.config import Config, parse_config
from gateway.errors import Rejection
from gateway.logs import AccessLog
from tests.httpkit import host_port, parse_metrics, raw_json, raw_status
from tests.support import World, captured_log, claims_for, gateway_config_data, sign, world
from tests.test_fuzz_wire import configure as nested_issuers

# Far beyond every answer the tests expect (milliseconds), and below aiohttp's 10 s lingering
# read: an answer or end of connection that only comes after the linger misses it.
PATIENCE = 8.0
SECRET = "s3cr3t-token-value"


def push(w: World, target: str = "/hook", body: bytes = b'{"e":1}', extra: str = "") -> bytes:
    """A valid push of the root issuer as raw bytes, ``extra`` header lines added."""
    token = sign(w.key, claims_for(body, w.clock()))
    head = (
        f"POST {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


@contextlib.asynccontextmanager
async def connection(w: World) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*host_port(w.url))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer (head and Content-Length body)."""
    async with asyncio.timeout(PATIENCE):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return head + await reader.readexactly(length)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the gateway ends the connection (nothing more, then EOF) within PATIENCE."""
    try:
        async with asyncio.timeout(PATIENCE):
            return await reader.read(65536) == b""
    except TimeoutError:
        return False


async def exchange(w: World, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data``, optionally half-close, and read everything until the gateway closes."""
    async with connection(w) as (reader, writer):
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(PATIENCE):
                while chunk := await reader.read(65536):
                    out += chunk
        return out


def header(raw: bytes, name: str) -> str | None:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


async def requests_total(w: World, reason: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(w.admin_url + "/metrics") as resp:
        scrape = parse_metrics(await resp.text())
    return sum(
        v
        for labels, v in scrape.samples.get("jwksgate_requests_total", {}).items()
        if ("reason", reason) in labels
    )


def short_timeouts(w: World) -> Config:
    data = gateway_config_data(w.jwks_url, w.backend_url)
    data["limits"] = {"header_timeout_seconds": 0.5, "max_body_bytes": 1000}
    return parse_config(data)


# --- 13.1: ";params" after a dot segment -------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/a/..;/hook",
        "/a/..;jsessionid=x/hook",
        "/a/%2e%2e;/hook",
        "/a/%2E.;x/hook",
        "/a/.%2e;/hook",
        "/a/.;/hook",
        "/..;",
        "/a/..;/",
    ],
)
async def test_a_dot_segment_with_params_is_refused_like_a_dot_segment(path: str) -> None:
    async with world() as w:
        raw = await exchange(w, push(w, path))
        assert raw_status(raw) == 400, raw[:300]
        assert raw_json(raw)["error"] == "malformed_request"
        assert w.backend.received == []


@pytest.mark.parametrize("path", ["/hooks//payments/1", "/hooks/x//y", "//hook"])
async def test_an_empty_segment_is_refused(path: str) -> None:
    # Sibling: nginx (merge_slashes, its default) and many frameworks serve "/hooks//payments"
    # from "/hooks/payments", another issuer's subtree.
    async with world(nested_issuers) as w:
        raw = await exchange(w, push(w, path))
        assert (raw_status(raw), raw_json(raw)["error"]) == (400, "malformed_request")
        assert w.backend.received == []


async def test_params_on_an_ordinary_segment_are_forwarded_as_received() -> None:
    async with world() as w:
        raw = await exchange(w, push(w, "/hook;v=1/x;y"), half_close=True)
        assert raw_status(raw) == 200, raw[:300]
        assert [r.path_qs for r in w.backend.received] == ["/hook;v=1/x;y"]


def test_the_path_rules_as_pure_functions() -> None:
    for path in ("/..;", "/x/.;a/y", "/x/%2e%2E;/y", "/x//y"):
        with pytest.raises(Rejection):
            check_request(path, [], None, 10)
    for path in ("/x;..", "/x/..a;/y", "/x/a.;/y", "/.well-known/x", "/x/"):
        check_request(path, [], None, 10)


# --- 13.3: aiohttp's parser refusals --------------------------------------------------------


PARSER_REFUSALS = {
    "ctl-byte": (
        f"POST /hook HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\x01x\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode(),
    "chunk-size": (
        f"POST /hook HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    ).encode(),
    "long-header": (
        f"POST /hook HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}{'A' * 9000}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode(),
    "long-line": f"POST /{SECRET}{'a' * 9000} HTTP/1.1\r\nHost: gw\r\n\r\n".encode(),
    "dup-length": (
        f"POST /hook HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SECRET}\r\n"
        "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ).encode(),
    "tls-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + SECRET.encode() + b"\x00" * 40,
    "bad-version": f"POST /hook HTTP/1.1\r\nHost: gw\r\nX: {SECRET}\r\n \r\n\r\n".encode(),
}


@pytest.mark.parametrize("data", PARSER_REFUSALS.values(), ids=PARSER_REFUSALS.keys())
async def test_a_parser_refusal_is_a_counted_json_400_that_logs_no_header_value(
    data: bytes,
) -> None:
    async with world() as w:
        before = await requests_total(w, "malformed_request")
        with captured_log("aiohttp") as aiohttp_records, captured_log() as records:
            raw = await exchange(w, data)
        assert raw_status(raw) == 400, raw[:300]
        assert header(raw, "Content-Type") == "application/json"
        body = raw_json(raw)
        assert body["error"] == "malformed_request" and isinstance(body["detail"], str)
        assert SECRET not in raw.decode("latin-1")
        assert await requests_total(w, "malformed_request") == before + 1
        # One JSON access line, nothing from aiohttp, and the token in no record at all.
        access = [json.loads(r.getMessage()) for r in records if r.name == "jwksgate.access"]
        got = [(a["jwksgate.reason"], a["http.response.status_code"]) for a in access]
        assert got == [("malformed_request", 400)]
        assert [r for r in aiohttp_records if r.levelno >= logging.WARNING] == []
        for r in [*records, *aiohttp_records]:
            text = r.getMessage() + repr(r.exc_info) + repr(r.args)
            assert SECRET not in text, (r.name, text[:300])
        assert w.backend.received == []


async def test_a_flood_of_parser_refusals_is_sampled_in_the_log_and_counted_in_full() -> None:
    async with world() as w:
        now = [1000.0]
        assert w.running is not None
        recorder: Recorder = w.running.gateway.recorder
        recorder.access = AccessLog(max_rejections_per_second=3, clock=lambda: now[0])
        before = await requests_total(w, "malformed_request")
        with captured_log("jwksgate.access") as records:
            for _ in range(10):
                assert raw_status(await exchange(w, PARSER_REFUSALS["ctl-byte"])) == 400
            now[0] += 1.0
            assert raw_status(await exchange(w, PARSER_REFUSALS["chunk-size"])) == 400
        lines = [json.loads(r.getMessage()) for r in records]
        assert len(lines) == 4
        assert lines[-1]["jwksgate.suppressed_before"] == 7
        assert await requests_total(w, "malformed_request") == before + 11


# --- 13.9: Upgrade ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upgrade",
    [
        "Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n",
        "Connection: upgrade\r\nUpgrade: foo/2\r\n",
        "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n",
    ],
)
async def test_an_upgrade_is_ignored_and_the_connection_is_never_swallowed(upgrade: str) -> None:
    async with world() as w:
        async with connection(w) as (reader, writer):
            # The upgrade request and a second push pipelined behind it, in one write.
            writer.write(push(w, "/first", extra=upgrade) + push(w, "/second"))
            first = await answer(reader)
            assert raw_status(first) == 200 and header(first, "Connection") == "close"
            # The connection ends at once: the second push is not left unanswered on a
            # connection that lives on (before, aiohttp dropped it and kept the connection).
            assert await closed(reader)
        # Never delivered without an answer: the sender retries it on a new connection.
        assert [r.path_qs for r in w.backend.received] == ["/first"]
        async with connection(w) as (reader, writer):
            writer.write(push(w, "/second"))
            assert raw_status(await answer(reader)) == 200
        assert [r.path_qs for r in w.backend.received] == ["/first", "/second"]


async def test_after_an_upgrade_request_the_next_request_gets_its_answer() -> None:
    async with world() as w:
        async with connection(w) as (reader, writer):
            writer.write(push(w, "/first", extra="Connection: Upgrade\r\nUpgrade: h2c\r\n"))
            assert raw_status(await answer(reader)) == 200
            assert await closed(reader)
        async with connection(w) as (reader, writer):
            writer.write(push(w, "/next"))
            assert raw_status(await answer(reader)) == 200


async def test_the_header_deadline_holds_for_every_request_of_a_keep_alive_connection() -> None:
    async with world(short_timeouts) as w, connection(w) as (reader, writer):
        for n in range(2):
            writer.write(push(w, f"/keep/{n}"))
            first = await answer(reader)
            assert raw_status(first) == 200 and header(first, "Connection") is None
        writer.write(b"POST /hook HTTP/1.1\r\nHost: gw\r\n")  # and nothing more
        late = await answer(reader)
        assert (raw_status(late), raw_json(late)["error"]) == (408, "request_timeout")
        assert await closed(reader)


# --- 13.10: absolute-form targets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "seen"),
    [
        ("http://evil.invalid:9/hook?x=1", "/hook?x=1"),
        ("HTTPS://127.0.0.1:1/a/b", "/a/b"),
        ("http://user@evil.invalid/hook", "/hook"),
        ("http://evil.invalid?q=1", "/?q=1"),
    ],
)
async def test_an_absolute_form_target_is_forwarded_by_its_path_only(
    target: str, seen: str
) -> None:
    async with world() as w:
        reference = await exchange(w, push(w, "/reference"), half_close=True)
        assert raw_status(reference) == 200
        raw = await exchange(w, push(w, target), half_close=True)
        assert raw_status(raw) == 200, raw[:300]
        ref, got = w.backend.received
        # The configured backend got it, in origin-form, with the Host it gets for any push.
        assert got.path_qs == seen
        assert got.header("host") == ref.header("host")
        assert got.header("x-forwarded-host") == ref.header("x-forwarded-host")


@pytest.mark.parametrize(
    "target", ["http://h/a/../hook", "http://h/a/..;/hook", "http://h/a%2fb", "http://h//x"]
)
async def test_an_absolute_form_target_gets_the_path_rules(target: str) -> None:
    async with world() as w:
        raw = await exchange(w, push(w, target))
        assert (raw_status(raw), raw_json(raw)["error"]) == (400, "malformed_request")
        assert w.backend.received == []


async def test_an_absolute_form_target_is_routed_by_its_path() -> None:
    async with world(nested_issuers) as w:
        body = b'{"e":1}'
        claims = claims_for(body, w.clock(), issuer="https://hooks.test")
        data = (
            f"POST http://payments.invalid/hooks/payments/1 HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {sign(w.key, claims)}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        raw = await exchange(w, data)
        assert (raw_status(raw), raw_json(raw)["error"]) == (401, "bad_issuer")
        assert w.backend.received == []


def test_origin_form_of_request_targets() -> None:
    assert origin_form("http://h/x?y") == "/x?y"
    assert origin_form("hTtP://h:1") == "/"
    assert origin_form("/x") is None
    assert origin_form("http:/x") is None
    assert origin_form("http:///x") is None
    assert origin_form("ftp://h/x") is None
    assert origin_form("*") is None


async def test_a_target_that_is_neither_form_is_refused() -> None:
    async with world() as w:
        for target in ("http:/hook", "hook", "mailto:a@b"):
            raw = await exchange(w, push(w, target))
            assert raw_status(raw) == 400, (target, raw[:300])
            assert raw_json(raw)["error"] == "malformed_request"
        assert w.backend.received == []


# --- 14.6: half-close and early answers -----------------------------------------------------


async def test_a_sender_that_half_closes_after_its_request_gets_its_answer() -> None:
    async with world() as w:
        raw = await exchange(w, push(w, "/hook"), half_close=True)
        assert raw_status(raw) == 200, raw[:300]
        assert raw.endswith(b'{"ok":true}') and header(raw, "Connection") == "close"
        assert [r.path_qs for r in w.backend.received] == ["/hook"]


async def test_pipelined_pushes_then_a_half_close_are_all_answered_and_delivered_once() -> None:
    async with world() as w:
        raw = await exchange(w, push(w, "/1") + push(w, "/2") + push(w, "/3"), half_close=True)
        assert raw.count(b"HTTP/1.1 200 OK") == 3, raw
        assert [r.path_qs for r in w.backend.received] == ["/1", "/2", "/3"]


async def test_a_half_close_in_the_middle_of_a_body_is_answered_400_at_once() -> None:
    async with world() as w:
        whole = push(w, "/hook", body=b'{"e":"' + b"x" * 200 + b'"}')
        raw = await exchange(w, whole[:-50], half_close=True)
        assert (raw_status(raw), raw_json(raw)["error"]) == (400, "malformed_request")
        assert w.backend.received == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Authorization: Bearer x.y.z\r\nContent-Length: 900\r\n", 401),
        ("Content-Length: 900\r\n", 401),
        ("Authorization: Bearer x.y.z\r\nContent-Length: 5000\r\n", 413),
        ("Authorization: Bearer x.y.z\r\nTransfer-Encoding: chunked\r\n", 401),
    ],
    ids=["bad-token", "no-token", "too-large", "chunked"],
)
async def test_an_early_answer_reaches_a_sender_that_still_holds_its_body(
    headers: str, status: int
) -> None:
    with captured_log() as records:
        async with world(short_timeouts) as w, connection(w) as (reader, writer):
            await early_answer(w, reader, writer, headers, status)
    # Nothing went wrong on the gateway's side (a reset during the discard is not an error).
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []


async def early_answer(
    w: World,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: str,
    status: int,
) -> None:
    start = b"100\r\n" if "chunked" in headers else b""
    writer.write(f"POST /hook HTTP/1.1\r\nHost: gw\r\n{headers}\r\n".encode() + start + b"a" * 20)
    await writer.drain()
    # The body is still (mostly) unsent: the answer and the end of the gateway's side both
    # arrive now, not when aiohttp's lingering read ends.
    raw = await answer(reader)
    assert raw_status(raw) == status and header(raw, "Connection") == "close"
    assert await closed(reader)
    # The sender can still send the rest: it is discarded, not read as a new request.
    with contextlib.suppress(ConnectionError):
        writer.write(b"POST /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        await writer.drain()
    assert w.backend.received == []


async def test_an_early_answer_after_a_whole_body_keeps_the_connection() -> None:
    async with world() as w, connection(w) as (reader, writer):
        body = b'{"e":1}'
        writer.write(
            b"POST /hook HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer x.y.z\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        first = await answer(reader)
        assert raw_status(first) == 401 and header(first, "Connection") is None
        writer.write(push(w, "/after"))
        assert raw_status(await answer(reader)) == 200


async def test_a_blocking_client_sees_the_early_answer_before_sending_its_body() -> None:
    """The order a synchronous sender sees: headers out, answer and EOF in, body never sent."""
    async with world() as w:
        host, port = host_port(w.url)

        def client() -> bytes:
            with socket.create_connection((host, port), timeout=PATIENCE) as s:
                s.sendall(b"POST /hook HTTP/1.1\r\nHost: gw\r\nContent-Length: 10000\r\n\r\n")
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                return got

        got = await asyncio.to_thread(client)
        assert (raw_status(got), raw_json(got)["error"]) == (401, "missing_token")
