"""The upstream connection pool (gateway.upstream_pool) against a scripted backend on loopback.

The backend is a raw asyncio server that reads one request at a time and writes a scripted
answer, so that the tests see exactly which connection each request came on and what bytes it
carried: reuse (keep-alive), the bound on connections, closing when either side says so, stale
idle connections, 1xx answers, HEAD, chunked answers, header injection and a closed pool.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict

from gateway import upstream_pool
from gateway.config import UpstreamConfig
from gateway.errors import Rejection
from gateway.upstream import Upstream
from gateway.upstream_pool import Answer, PoolClosed, Sending, request_head
from tests.support import wait_until

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Seen:
    """What the scripted backend saw: per request, the connection number and its head."""

    requests: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0


Script = Callable[[bytes], bytes]


@asynccontextmanager
async def backend(
    answer: Script = lambda _head: OK,
    *,
    hold: asyncio.Event | None = None,
    hang_up: bool = False,
) -> AsyncIterator[tuple[int, Seen]]:
    """``hang_up``: close each connection after its answer without saying so (a backend's
    keep-alive timeout)."""
    seen = Seen()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        seen.connections += 1
        number = seen.connections
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                seen.requests.append((number, head))
                if hold is not None:
                    await hold.wait()
                out = answer(head)
                writer.write(out)
                await writer.drain()
                if hang_up or b"connection: close" in out.lower():
                    return
        except asyncio.CancelledError:
            return  # the backend stops (a cancelled handler would be logged as an error)
        finally:
            seen.open_now -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def push(up: Upstream, method: str = "POST", body: bytes = b"{}") -> tuple[int, bytes]:
    answer = await up.open(method, "/hooks/x?a=%7E", CIMultiDict({"X-Test": "1"}), body)
    try:
        return answer.status, await answer.read()
    finally:
        answer.release()


def upstream(port: int, **kw: float | int) -> Upstream:
    return Upstream(UpstreamConfig(url=f"http://127.0.0.1:{port}", **kw))  # type: ignore[arg-type]


def exchange(pool: upstream_pool.ConnectionPool, path: str = "/") -> asyncio.Future[Answer]:
    """One exchange on ``pool`` straight (a POST of one byte, 10 s to go), started now."""
    head = request_head("POST", path, "h", CIMultiDict(), 1)
    deadline = asyncio.get_running_loop().time() + 10
    return asyncio.ensure_future(
        pool.exchange(head, b"x", skip_body=False, sending=Sending(), deadline=deadline)
    )


async def test_sequential_pushes_reuse_one_connection_and_go_out_as_aiohttp_wrote_them() -> None:
    async with backend() as (port, seen):
        up = upstream(port)
        for _ in range(3):
            assert await push(up) == (200, b"ok")
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 1, 1]
    head = seen.requests[0][1]
    assert head.startswith(b"POST /hooks/x?a=%7E HTTP/1.1\r\n")  # the target as received
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in head
    assert b"Content-Length: 2\r\n" in head and b"X-Test: 1\r\n" in head


async def test_concurrent_pushes_never_open_more_than_max_connections() -> None:
    gate = asyncio.Event()
    async with backend(hold=gate) as (port, seen):
        up = upstream(port, max_connections=2)
        pushes = [asyncio.ensure_future(push(up)) for _ in range(6)]
        await asyncio.sleep(0.3)
        assert seen.connections == 2 and len(seen.requests) == 2  # the others wait for one
        gate.set()
        assert [await p for p in pushes] == [(200, b"ok")] * 6
        await up.close()
    assert seen.most_open == 2 and seen.connections == 2


async def test_an_idle_connection_the_backend_closed_is_not_reused() -> None:
    async with backend(hang_up=True) as (port, seen):
        up = upstream(port)
        assert await push(up) == (200, b"ok")
        await asyncio.sleep(0.2)  # the backend's FIN arrives while the connection is idle
        assert await push(up) == (200, b"ok")
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 2]


async def test_an_idle_connection_past_the_keepalive_time_is_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with backend() as (port, seen):
        up = upstream(port)
        assert await push(up) == (200, b"ok")
        monkeypatch.setattr(upstream_pool, "KEEPALIVE_SECONDS", 0.0)
        assert await push(up) == (200, b"ok")
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 2]


CLOSING = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
EARLY_HINTS = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("answer", "expected", "connections"),
    [
        # A backend that says close gets a new connection next time.
        pytest.param(CLOSING, (200, b"ok"), [1, 2], id="close-means-a-new-connection"),
        # Informational answers are skipped, the final one returned, and the connection kept
        # in step.
        pytest.param(EARLY_HINTS, (200, b"ok"), [1, 1], id="1xx-skipped-connection-kept"),
        # A chunked answer is read whole and the connection kept.
        pytest.param(CHUNKED, (201, b"abc"), [1, 1], id="chunked-read-whole-connection-kept"),
    ],
)
async def test_two_pushes_get_the_final_answer_and_reuse_the_connection_when_they_may(
    answer: bytes, expected: tuple[int, bytes], connections: list[int]
) -> None:
    async with backend(lambda _h: answer) as (port, seen):
        up = upstream(port)
        assert await push(up) == expected
        assert await push(up) == expected
        await up.close()
    assert [n for n, _ in seen.requests] == connections


async def test_head_reads_no_body_whatever_content_length_says() -> None:
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
    async with backend(lambda _h: sized) as (port, seen):
        up = upstream(port)
        answer = await up.open("HEAD", "/hooks/x", CIMultiDict(), b"")
        assert answer.status == 200 and answer.content_length == 99
        assert await answer.read() == b""
        answer.release()
        assert await push(up, "HEAD", b"") == (200, b"")
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 1]
    assert b"Content-Length" not in seen.requests[0][1]  # a bodiless HEAD says none


async def test_a_partly_read_answer_closes_its_connection() -> None:
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde", OK])
    async with backend(lambda _h: next(answers)) as (port, seen):
        up = upstream(port)
        answer = await up.open("POST", "/", CIMultiDict(), b"x")
        answer.release()  # released before its body was read: not reusable
        assert up.pool.open_connections == 0
        assert await push(up) == (200, b"ok")
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 2]


async def test_garbage_from_the_backend_is_upstream_unavailable_and_not_reused() -> None:
    answers = iter([b"SMTP ready\r\n\r\n", OK])
    async with backend(lambda _h: next(answers)) as (port, _seen):
        up = upstream(port)
        sending = Sending()
        with pytest.raises(Rejection) as e:
            await up.open("POST", "/", CIMultiDict(), b"x", sending)
        assert e.value.reason == "upstream_unavailable" and sending.sent
        assert up.pool.open_connections == 0
        assert await push(up) == (200, b"ok")
        await up.close()


async def test_a_refused_connection_was_never_sent() -> None:
    async with backend() as (port, _seen):
        pass  # closed: nothing listens there now
    up = upstream(port)
    sending = Sending()
    with pytest.raises(Rejection) as e:
        await up.open("POST", "/", CIMultiDict(), b"x", sending)
    assert e.value.reason == "upstream_unavailable" and not sending.sent
    assert up.pool.open_connections == 0


async def test_a_silent_backend_times_out_and_its_connection_is_closed() -> None:
    never = asyncio.Event()
    async with backend(hold=never) as (port, _seen):
        up = upstream(port, timeout_seconds=0.3)
        with pytest.raises(Rejection) as e:
            await push(up)
        assert e.value.reason == "upstream_timeout"
        assert up.pool.open_connections == 0
        await up.close()


def test_a_control_character_in_a_header_is_never_written() -> None:
    for name, value in (("X-A", "v\r\nX-Injected: 1"), ("X-A", "v\nx"), ("X\x00", "v")):
        with pytest.raises(ValueError):
            request_head("POST", "/", "h", CIMultiDict({name: value}), 0)
    # A tab is allowed in a value (RFC 9110 5.5), as aiohttp allows it.
    assert b"X-A: a\tb\r\n" in request_head("POST", "/", "h", CIMultiDict({"X-A": "a\tb"}), 0)


async def test_a_closed_pool_refuses_new_exchanges_and_wakes_its_waiters() -> None:
    gate = asyncio.Event()
    async with backend(hold=gate) as (port, _seen):
        up = upstream(port, max_connections=1)
        first = asyncio.ensure_future(push(up))
        waiting = asyncio.ensure_future(push(up))
        await asyncio.sleep(0.2)
        await up.close()
        with pytest.raises(Rejection) as e:
            await waiting
        assert e.value.reason == "upstream_unavailable"
        gate.set()
        assert await first == (200, b"ok")  # the one in flight finishes
        assert up.pool.open_connections == 0  # and its connection is closed, not kept
    with pytest.raises(PoolClosed):
        await up.pool.exchange(b"", b"", skip_body=False, sending=Sending(), deadline=1e18)


async def test_a_connection_that_cannot_be_made_in_time_is_unavailable_and_never_sent() -> None:
    # A listener that accepts nothing, its backlog filled: a new connection's SYN goes unanswered.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(server.getsockname())
        fillers.append(s)
    try:
        up = upstream(server.getsockname()[1], connect_timeout_seconds=0.3)
        sending = Sending()
        with pytest.raises(Rejection) as e:
            await up.open("POST", "/", CIMultiDict(), b"x", sending)
        assert e.value.reason == "upstream_unavailable" and not sending.sent
        assert "ConnectTimeout" in e.value.detail  # not refused: it waited, then gave up
        assert up.pool.open_connections == 0
    finally:
        for s in (*fillers, server):
            s.close()


async def test_a_push_waiting_for_a_connection_times_out_unsent() -> None:
    gate = asyncio.Event()
    async with backend(hold=gate) as (port, seen):
        up = upstream(port, max_connections=1)
        pool, now = up.pool, asyncio.get_running_loop().time()
        head = request_head("POST", "/", "h", CIMultiDict(), 1)
        first = asyncio.ensure_future(
            pool.exchange(head, b"x", skip_body=False, sending=Sending(), deadline=now + 10)
        )
        await asyncio.sleep(0.05)
        sending = Sending()
        with pytest.raises(TimeoutError):  # waits for the only connection, past its deadline
            await pool.exchange(head, b"x", skip_body=False, sending=sending, deadline=now + 0.3)
        assert not sending.sent and len(seen.requests) == 1  # it never reached the backend
        gate.set()
        answer = await first
        assert answer.status == 200 and await answer.read() == b"ok"
        answer.release()
        await up.close()


async def test_a_body_that_stalls_fails_its_read_at_the_deadline() -> None:
    stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with backend(lambda _h: stalled) as (port, _seen):
        up = upstream(port, timeout_seconds=0.3)
        answer = await up.open("POST", "/", CIMultiDict(), b"x")
        assert answer.status == 200
        with pytest.raises(TimeoutError):
            while await answer.content.readany():
                pass
        answer.release()
        assert up.pool.open_connections == 0
        await up.close()


async def test_the_deadline_sweep_stops_when_nothing_is_in_flight() -> None:
    async with backend() as (port, _seen):
        up = upstream(port)
        assert await push(up) == (200, b"ok")
        await asyncio.sleep(3 * upstream_pool.SWEEP_SECONDS)
        assert up.pool._sweep is None  # no timer left running for an idle pool
        await up.close()


async def test_an_answer_that_has_fully_arrived_outlives_the_deadline() -> None:
    # The pipeline may hold an answer past the deadline (a slow replay-store commit) before it
    # relays it: a body already received whole is still read whole, as with aiohttp's timeout.
    async with backend() as (port, _seen):
        up = upstream(port, timeout_seconds=0.2)
        answer = await up.open("POST", "/", CIMultiDict(), b"x")
        await asyncio.sleep(0.5)
        assert await answer.read() == b"ok"
        answer.release()
        await up.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello body",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello body",
    ],
    ids=["http/1.1-close-delimited", "http/1.0-no-length"],
)
async def test_a_body_ended_by_closing_the_connection_is_read_whole(answer: bytes) -> None:
    # No Content-Length and no chunked coding: the body is whatever comes before the close
    # (RFC 9112 6.3 rule 8), as a plain HTTP/1.0 server or a streaming backend sends it.
    async with backend(lambda _h: answer, hang_up=True) as (port, seen):
        up = upstream(port)
        assert await push(up) == (200, b"hello body")
        assert await push(up) == (200, b"hello body")  # on a new connection
        await up.close()
    assert [n for n, _ in seen.requests] == [1, 2]


async def test_a_status_line_that_races_the_sweep_still_has_its_body_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sweep can run after the status line was queued and before the exchange resumes: the
    # wait it fails is already over, and nothing else is in flight to keep the sweep going.
    stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with backend(lambda _h: stalled) as (port, _seen):
        up = upstream(port, timeout_seconds=0.3)
        pool = up.pool
        real_read = ResponseHandler.read

        async def read_then_sweep(conn: ResponseHandler) -> object:
            got = await real_read(conn)
            await asyncio.sleep(0.4)  # past the deadline (the sweep may already have run)
            if pool._sweep is not None:
                pool._sweep.cancel()
            pool._expire()  # the tick that comes between the status line and the resumption
            return got

        monkeypatch.setattr(ResponseHandler, "read", read_then_sweep)
        answer = await up.open("POST", "/", CIMultiDict(), b"x")
        monkeypatch.undo()

        async def drain() -> None:
            while await answer.content.readany():
                pass

        reading = asyncio.ensure_future(drain())
        done, _ = await asyncio.wait({reading}, timeout=5)
        assert done, "the body read was left without a deadline"
        with pytest.raises(TimeoutError):
            reading.result()
        answer.release()
        await up.close()


async def test_a_freed_connection_goes_to_the_push_that_waited_longest() -> None:
    async with backend() as (port, seen):
        up = upstream(port, max_connections=1)

        async def read(answer: asyncio.Future[Answer]) -> bytes:
            got = await answer
            body = await got.read()
            got.release()
            return body

        first = await exchange(up.pool, "/first")
        assert await first.read() == b"ok"
        waited = asyncio.ensure_future(read(exchange(up.pool, "/waited")))
        await asyncio.sleep(0.05)  # it waits for the only connection
        latecomer = asyncio.ensure_future(read(exchange(up.pool, "/latecomer")))  # runs first
        first.release()
        assert [await waited, await latecomer] == [b"ok", b"ok"]
        await up.close()
    targets = [head.split(b" ")[1] for _, head in seen.requests]
    assert targets == [b"/first", b"/waited", b"/latecomer"]
    assert seen.connections == 1


async def test_an_idle_connection_is_closed_once_past_the_keepalive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_pool, "KEEPALIVE_SECONDS", 0.2)
    async with backend() as (port, seen):
        up = upstream(port)
        assert await push(up) == (200, b"ok")
        assert up.pool.open_connections == 1
        await wait_until(lambda: up.pool.open_connections == 0)  # with no push to notice it
        await wait_until(lambda: seen.open_now == 0)  # the backend saw it closed
        await up.close()


async def test_a_push_cancelled_as_it_is_handed_a_connection_passes_it_on() -> None:
    async with backend() as (port, seen):
        up = upstream(port, max_connections=1)
        pool = up.pool
        first = await exchange(pool)
        assert await first.read() == b"ok"
        cancelled, then = exchange(pool), exchange(pool)
        await asyncio.sleep(0.05)  # both wait for the only connection
        first.release()  # handed to the first waiter...
        cancelled.cancel()  # ...which is cancelled before it runs
        answer = await asyncio.wait_for(then, 5)
        assert await answer.read() == b"ok"
        answer.release()
        assert cancelled.cancelled()
        assert pool.open_connections == 1 and seen.connections == 1
        await up.close()


async def test_a_connection_handed_to_a_push_cancelled_after_the_pool_closed_is_closed() -> None:
    async with backend() as (port, _seen):
        up = upstream(port, max_connections=1)
        pool = up.pool
        first = await exchange(pool)
        assert await first.read() == b"ok"
        waiting = exchange(pool)
        await asyncio.sleep(0.05)
        first.release()  # handed to the waiting push...
        pool.close()  # ...the pool closes...
        waiting.cancel()  # ...and the push is cancelled before it ran
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.open_connections == 0  # closed, not left idle in a closed pool
