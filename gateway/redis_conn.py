"""One pipelined connection to a standalone Redis, for the replay store's few commands.

Every call is written to the connection at once with the other calls made in the same event-loop
iteration (one ``send`` for all of them) and answered in order as the replies arrive, so concurrent
pushes share round trips instead of each taking one: Redis pipelining, without a connection pool,
a lock, a stream reader or a timeout scope per call.

Each call keeps its own bound: it fails with ``LinkDown`` once ``timeout`` seconds have passed
since it was made (waiting for a connection included) without its reply. Replies come back in the
order the commands were sent, so when the oldest call on the connection times out the connection
cannot be trusted any more: it is dropped, and every call still waiting on it fails with
``LinkDown`` (its command may or may not have run, as when any other connection breaks). Calls
made after that go to a new connection. A call whose reply is an error (``-ERR ...``) fails with
``ReplyError`` alone; the other calls of its batch get their own replies.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

__all__ = ["Endpoint", "LinkDown", "RedisLink", "ReplyError", "pack", "uses_tls"]

Arg = bytes | str | int


class LinkDown(ConnectionError):
    """No reply within the timeout, or the connection failed: the outcome is unknown."""


class ReplyError(RedisError):
    """Redis answered this command with an error."""


def uses_tls(url: str) -> bool:
    """True for a ``rediss://`` URL, the scheme in any case (RFC 3986 3.1)."""
    return urlsplit(url).scheme.lower() == "rediss"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str, ca_file: str | None) -> Endpoint:
        opts = parse_url(url)
        tls = None
        if uses_tls(url):
            tls = ssl.create_default_context(cafile=ca_file)
        return cls(
            host=opts.get("host", "localhost"),
            port=int(opts.get("port", 6379)),
            db=int(opts.get("db", 0)),
            username=opts.get("username"),
            password=opts.get("password"),
            tls=tls,
        )

    def handshake(self) -> list[list[Arg]]:
        cmds: list[list[Arg]] = []
        if self.password is not None:
            user: list[Arg] = [self.username] if self.username else []
            cmds.append(["AUTH", *user, self.password])
        if self.db:
            cmds.append(["SELECT", self.db])
        return cmds


def pack(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """A command in RESP: ``*<n>`` then each argument as a bulk string."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``pos``: (value, position after it); ``_Incomplete`` if not all here."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 0x3A:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 0x2B:  # '+' simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x2D:  # '-' error
        return ReplyError(buf[pos + 1 : end].decode(errors="replace")), end + 2
    if kind == 0x24:  # '$' bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 0x2A:  # '*' array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise LinkDown(f"unexpected reply from Redis: {bytes(buf[pos : pos + 20])!r}")


class _Call:
    __slots__ = ("deadline", "future", "packed")

    def __init__(self, packed: bytes, future: asyncio.Future[Any], deadline: float) -> None:
        self.packed = packed
        self.future = future
        self.deadline = deadline


class _Protocol(asyncio.Protocol):
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        # Calls written on this connection, oldest first, awaiting their replies.
        self.sent: collections.deque[_Call] = collections.deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, though they are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        sent = self.sent
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                if not sent:
                    raise LinkDown("a reply from Redis that no command asked for")
                fut = sent.popleft().future
                if not fut.done():
                    if isinstance(value, ReplyError):
                        fut.set_exception(value)
                    else:
                        fut.set_result(value)
        except _Incomplete:
            pass
        except (LinkDown, ValueError) as e:
            self.link._drop(self, LinkDown(str(e)))
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._drop(self, LinkDown(f"connection to Redis lost: {exc or 'closed by Redis'}"))


class RedisLink:
    """Pipelined calls to one Redis over one connection (made on first use, remade after a
    failure). ``call`` returns the reply: ``int``, ``bytes`` or ``None``, or a list of them."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Protocol | None = None  # connected, handshake done
        self._connecting: asyncio.Task[None] | None = None
        self._queue: list[_Call] = []  # made, not yet written
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def deadline(self) -> float:
        """When a call made now times out (to share one bound between calls)."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time() + self.timeout

    async def call(self, *args: Arg, deadline: float | None = None) -> Any:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise LinkDown("the Redis link is closed")
        fut: asyncio.Future[Any] = loop.create_future()
        if deadline is None:
            deadline = loop.time() + self.timeout
        self._queue.append(_Call(pack(args), fut, deadline))
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        if self._timer is None:
            self._arm(loop)
        return await fut

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._queue:
            return
        conn = self._conn
        if conn is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            return
        self._write(conn, self._queue)
        self._queue = []

    @staticmethod
    def _write(conn: _Protocol, calls: list[_Call]) -> None:
        assert conn.transport is not None
        conn.sent.extend(calls)
        if len(calls) == 1:
            conn.transport.write(calls[0].packed)
        else:
            conn.transport.write(b"".join(c.packed for c in calls))

    async def _connect(self) -> None:
        loop = self._loop
        assert loop is not None
        ep = self.endpoint
        conn: _Protocol | None = None
        try:
            async with asyncio.timeout(self.timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Protocol(self),
                    ep.host,
                    ep.port,
                    ssl=ep.tls,
                    server_hostname=ep.host if ep.tls else None,
                )
                # uvloop may return before it has called connection_made.
                conn.transport = transport
                handshake = [
                    _Call(pack(cmd), loop.create_future(), loop.time() + self.timeout)
                    for cmd in ep.handshake()
                ]
                if handshake:
                    self._write(conn, handshake)
                    for c in handshake:
                        await c.future
        except asyncio.CancelledError:
            if conn is not None:
                self._drop(conn, LinkDown("closed while connecting"))
            raise
        except (OSError, TimeoutError, RedisError) as e:
            if conn is not None:
                self._drop(conn, LinkDown(str(e)))
            self._fail_queue(LinkDown(f"cannot connect to Redis: {type(e).__name__}: {e}"))
            return
        finally:
            self._connecting = None
        if conn.closed:
            self._fail_queue(LinkDown("connection to Redis lost while connecting"))
            return
        self._conn = conn
        if self._queue:
            self._write(conn, self._queue)
            self._queue = []

    def _fail_queue(self, error: Exception) -> None:
        queue, self._queue = self._queue, []
        for c in queue:
            if not c.future.done():
                c.future.set_exception(error)

    def _drop(self, conn: _Protocol, error: Exception) -> None:
        """``conn`` is unusable: every call waiting on it fails (their outcome is unknown)."""
        if conn.closed:
            return
        conn.closed = True
        if self._conn is conn:
            self._conn = None
        if conn.transport is not None:
            conn.transport.abort()
        sent, conn.sent = conn.sent, collections.deque()
        for c in sent:
            if not c.future.done():
                c.future.set_exception(error)
        if self._queue and self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _oldest(self) -> _Call | None:
        conn = self._conn
        if conn is not None and conn.sent:
            return conn.sent[0]
        return self._queue[0] if self._queue else None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        oldest = self._oldest()
        self._timer = None if oldest is None else loop.call_at(oldest.deadline, self._expire)

    def _expire(self) -> None:
        """The one timer: fails the calls whose time is up (dropping a connection whose oldest
        call went unanswered), then waits for the next oldest call's deadline."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        conn = self._conn
        if conn is not None and conn.sent and conn.sent[0].deadline <= now:
            self._drop(conn, LinkDown(f"no reply from Redis within {self.timeout:g}s"))
        if self._queue and self._queue[0].deadline <= now:
            late = [c for c in self._queue if c.deadline <= now]
            self._queue = [c for c in self._queue if c.deadline > now]
            error = LinkDown(f"no connection to Redis within {self.timeout:g}s")
            for c in late:
                if not c.future.done():
                    c.future.set_exception(error)
        self._arm(loop)

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        self._fail_queue(LinkDown("the Redis link is closed"))
        if self._conn is not None:
            self._drop(self._conn, LinkDown("the Redis link is closed"))
