"""Persistent HTTP/1.1 connections to the one backend, and one request-answer exchange on them.

A proxy to a single fixed backend needs little of what aiohttp's ``ClientSession`` does per
request (URL joining, a cookie jar, trace signals, connector keys, ``ClientRequest`` and
``ClientResponse`` objects): about a fifth of a verified push's CPU went there. This module keeps
the part that must be right, aiohttp's own response protocol and C parser (``ResponseHandler``:
status line and header limits, chunked and close-delimited bodies, 1xx answers, keep-alive), and
does the rest itself: the request is written as one buffer, the connection is taken from a LIFO
pool of at most ``max_connections`` and put back only when its answer was read to the end and
nothing says it must close.

Deadlines cost no timer per push: each exchange's deadline (``timeout_seconds`` from its start,
covering the wait for a connection, the request and the whole answer) is checked by one sweep,
ten times a second while anything is in flight, which fails the overdue wait or read with
``TimeoutError``. A timeout fires up to ``SWEEP_SECONDS`` late.

Nothing here decides what a failure means for the push: ``gateway.upstream`` maps the exceptions
(``OSError``, ``aiohttp.ClientError``, ``HttpProcessingError``, ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
from dataclasses import dataclass, field

from aiohttp.client_proto import ResponseHandler
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["Answer", "ConnectTimeout", "ConnectionPool", "PoolClosed", "Sending", "request_head"]

# An idle connection older than this is not reused (a backend's own keep-alive timeout may be
# about to close it: a request written into that race is lost with it); aiohttp's default.
KEEPALIVE_SECONDS = 15.0
# How often in-flight deadlines are checked (see the module doc).
SWEEP_SECONDS = 0.1
# aiohttp's client limits for the backend's status line and headers.
_MAX_LINE = 8190
_MAX_HEADERS = 128
_READ_BUFSIZE = 2**16
# Methods that carry no body unless given one: no "Content-Length: 0" (what aiohttp sends).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Control characters but tab: never written into a request head (header injection).
_FORBIDDEN_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(slots=True)
class Sending:
    """How far one request to the backend got. ``sent`` turns true once a connection is open and
    the request is being written to it: from then on, until the status line arrives, a failure
    is ambiguous (the backend may have the whole request and act on it)."""

    sent: bool = False


class ConnectTimeout(ConnectionError):
    """No connection to the backend within ``connect_timeout_seconds``."""


class PoolClosed(ConnectionError):
    """The pool was closed (its upstream was replaced or the gateway is stopping)."""


def request_head(
    method: str, target: str, host: str, headers: CIMultiDict[str], body_length: int
) -> bytes:
    """The request line and headers, as aiohttp's client would write them (``Host`` from the
    backend's URL, ``Content-Length`` of the body); a control character anywhere is refused."""
    if _FORBIDDEN_RE.search(method + target + "".join([k + v for k, v in headers.items()])):
        raise ValueError("a control character in the request line or a header")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in headers.items()]
    if body_length or method not in _BODYLESS_METHODS:
        lines.append(f"Content-Length: {body_length}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


@dataclass(slots=True)
class Answer:
    """The backend's status line and headers; the body is read from ``content``, and
    ``release`` must be called once (the connection goes back to the pool or is closed)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    content: StreamReader
    conn: ResponseHandler
    pool: ConnectionPool
    released: bool = field(default=False)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.pool.put_back(self.conn, reusable=self.content.is_eof())


class ConnectionPool:
    """At most ``limit`` connections to ``host:port``; idle ones reused newest first."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        limit: int,
        connect_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.closed = False
        # (connection, loop time it became idle), oldest first.
        self._idle: collections.deque[tuple[ResponseHandler, float]] = collections.deque()
        self._count = 0  # open or opening connections, idle ones included
        # Pushes waiting for a connection, with their deadlines, first come first served.
        self._waiters: collections.deque[tuple[asyncio.Future[ResponseHandler | None], float]] = (
            collections.deque()
        )
        # Connections in an exchange -> its deadline (and the answer's body, once it has one).
        self._busy: dict[ResponseHandler, tuple[float, StreamReader | None]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        # Closes idle connections once past KEEPALIVE_SECONDS (one timer, while any are idle).
        self._reaper: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        return self._count

    async def exchange(
        self, head: bytes, body: bytes, *, skip_body: bool, sending: Sending, deadline: float
    ) -> Answer:
        """Write the request on a pooled (or new) connection; return once the backend's final
        status line and headers have arrived. ``sending.sent`` is set just before the write.
        ``deadline`` (loop time) bounds the exchange until the answer is released."""
        conn = await self._acquire(deadline)
        try:
            conn.set_response_params(
                skip_payload=skip_body,
                # A body with neither a length nor chunked coding ends where the backend
                # closes the connection (RFC 9112 6.3), as in aiohttp's ClientSession.
                read_until_eof=True,
                auto_decompress=False,
                read_bufsize=_READ_BUFSIZE,
                max_line_size=_MAX_LINE,
                max_field_size=_MAX_LINE,
                max_headers=_MAX_HEADERS,
            )
            transport = conn.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the connection to the backend closed")
            self._busy[conn] = (deadline, None)
            self._arm()
            sending.sent = True
            if len(body) <= 16384:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            while True:
                message, payload = await conn.read()
                # 1xx answers (100 Continue, 103 Early Hints) precede the real one; 101 is final.
                if not 100 <= message.code <= 199 or message.code == 101:
                    break
            # Put back even when a sweep ran after the status line came: the body's read keeps
            # the deadline.
            self._busy[conn] = (deadline, payload)
            self._arm()
            return Answer(
                status=message.code,
                reason=message.reason,
                headers=message.headers,
                content=payload,
                conn=conn,
                pool=self,
            )
        except BaseException:
            self.put_back(conn, reusable=False)
            raise

    async def _acquire(self, deadline: float) -> ResponseHandler:
        """A connection for one exchange: the newest fresh idle one, else a new one while fewer
        than ``limit`` are open, else the next one freed, first come first served (a freed
        connection, or the slot of a closed one, is handed to the push that waited longest)."""
        if self.closed:
            raise PoolClosed("the connection pool to the backend is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < KEEPALIVE_SECONDS and conn.is_connected() and not conn.should_close:
                return conn
            self._discard(conn)
        if self._count < self.limit:
            self._count += 1
        else:
            if now >= deadline:
                raise TimeoutError("no connection to the backend came free in time")
            waiter: asyncio.Future[ResponseHandler | None] = loop.create_future()
            entry = (waiter, deadline)
            self._waiters.append(entry)
            self._arm()
            try:
                handed = await waiter
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection (or a slot) and cancelled before it ran: pass it on
                    # (closed instead, should the pool have been closed meanwhile).
                    unused = waiter.result()
                    if unused is None:
                        self._free_slot()
                    else:
                        self.put_back(unused, reusable=True)
                raise
            if handed is not None:
                return handed
            # A slot was handed over (its count kept): open a connection in it.
        return await self._connect(deadline)

    async def _connect(self, deadline: float) -> ResponseHandler:
        """Open a connection in a slot already counted; the slot is freed if it fails."""
        loop = asyncio.get_running_loop()
        try:
            if self.closed:
                raise PoolClosed("the connection pool to the backend is closed")
            # The exchange's deadline bounds the connect too, when it is the nearer one.
            left = deadline - loop.time()
            try:
                async with asyncio.timeout(min(self.connect_timeout, left)):
                    transport, conn = await loop.create_connection(
                        lambda: ResponseHandler(loop),
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.host if self.tls is not None else None,
                    )
            except TimeoutError:
                if left <= self.connect_timeout:
                    raise
                # Certain not to have reached the backend: unavailable, not a slow answer.
                raise ConnectTimeout(f"no connection within {self.connect_timeout:g} s") from None
        except BaseException:
            self._free_slot()
            raise
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _arm(self) -> None:
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._expire)

    def _expire(self) -> None:
        """Fail every wait and read past its deadline with ``TimeoutError``."""
        self._sweep = None
        now = asyncio.get_running_loop().time()
        for conn, (deadline, content) in list(self._busy.items()):
            if deadline <= now:
                del self._busy[conn]
                if content is not None and content.is_eof():
                    continue  # the whole answer is here: no wait left to time out
                error = TimeoutError("the backend's answer did not end in time")
                conn.set_exception(error)  # the wait for the status line; never reused
                if content is not None:
                    content.set_exception(error)  # the read of the body
        for waiter, deadline in self._waiters:
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError("no connection came free in time"))
        if self._busy or self._waiters:
            self._arm()

    def put_back(self, conn: ResponseHandler, *, reusable: bool) -> None:
        """Return a connection after its exchange: kept when its answer was read to the end and
        neither side asked to close (handed to the longest waiting push, else idle), closed
        otherwise."""
        self._busy.pop(conn, None)
        if reusable and not self.closed and conn.is_connected() and not conn.should_close:
            self._pass_on(conn)
        else:
            self._discard(conn)

    def _pass_on(self, conn: ResponseHandler | None) -> None:
        """Give a connection, or (None) the slot of a closed one, to the longest waiting push;
        with none waiting, the connection goes idle and the slot is freed."""
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._count -= 1
            return
        loop = asyncio.get_running_loop()
        self._idle.append((conn, loop.time()))
        if self._reaper is None:
            self._reaper = loop.call_later(KEEPALIVE_SECONDS, self._reap)

    def _reap(self) -> None:
        """Close the idle connections past the keep-alive time; again when the next one is."""
        self._reaper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and now - self._idle[0][1] >= KEEPALIVE_SECONDS:
            self._discard(self._idle.popleft()[0])
        if self._idle:
            left = KEEPALIVE_SECONDS - (now - self._idle[0][1])
            self._reaper = loop.call_later(left, self._reap)

    def _discard(self, conn: ResponseHandler) -> None:
        conn.close()
        self._free_slot()

    def _free_slot(self) -> None:
        self._pass_on(None)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their exchange ends."""
        self.closed = True
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter, _ in waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool to the backend is closed"))
        while self._idle:
            self._discard(self._idle.pop()[0])
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
