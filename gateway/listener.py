"""The webhook listener's connection guard: a header deadline and a bound on open connections.

aiohttp has no header-read timeout (a slowloris can dribble headers forever), so each connection
is wrapped in a small protocol that starts a deadline whenever the connection is waiting for a
request and answers 408 ``request_timeout`` when the headers are not complete in time. Past
``limits.max_connections`` a new connection is answered 503 ``overloaded`` at once and closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.answers import raw_answer
from gateway.errors import Rejection

__all__ = ["GuardedServer"]

_HEADER_TIMEOUT = Rejection("request_timeout", "the request headers did not arrive in time")
_TOO_MANY_CONNECTIONS = Rejection("overloaded", "too many open connections; retry shortly")

# Told of a connection answered before any request was parsed; returns its request id.
Refused = Callable[[Rejection], str]


class _HeaderDeadline(asyncio.Protocol):
    """Delegates to aiohttp's protocol; owns the header deadline of one connection."""

    def __init__(self, inner: RequestHandler, server: GuardedServer) -> None:
        self.inner = inner
        self.server = server
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.request: web.BaseRequest | None = None
        # Bytes that arrived after the current request's body was complete: the start of a
        # pipelined request, whose headers need a deadline of their own.
        self.pipelined = False
        self.refused = False

    def _arm(self) -> None:
        if self.timer is None and not self.busy:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.server.header_timeout(), self._expired)

    def disarm(self, request: web.BaseRequest) -> None:
        self.busy = True
        self.request = request
        self.pipelined = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def idle(self) -> None:
        self.busy = False
        self.request = None
        if self.pipelined:
            self._arm()

    def _refuse(self, r: Rejection) -> None:
        assert self.transport is not None
        self.transport.write(raw_answer(r, self.server.on_refused(r)))
        self.transport.close()

    def _expired(self) -> None:
        self.timer = None
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        self._refuse(_HEADER_TIMEOUT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.guards) >= self.server.max_connections():
            # Every connection costs a file descriptor and buffers: past the bound, answer 503
            # at once and close, before aiohttp ever sees the connection.
            self.refused = True
            self._refuse(_TOO_MANY_CONNECTIONS)
            return
        self.server.guards[self.inner] = self
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.busy and self.request is not None and self.request.content.is_eof():
            self.pipelined = True
        self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.refused:
            self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.guards.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedServer(web.Server):
    """aiohttp's low-level server with every connection behind a ``_HeaderDeadline``; the
    bounds are read per connection, so that a reload of limits applies to new connections."""

    def __init__(
        self,
        handler: Any,
        header_timeout: Callable[[], float],
        max_connections: Callable[[], int],
        on_refused: Refused,
        **kw: Any,
    ) -> None:
        super().__init__(handler, **kw)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.on_refused = on_refused
        self.guards: dict[RequestHandler, _HeaderDeadline] = {}

    def __call__(self) -> Any:  # the protocol factory handed to loop.create_server
        return _HeaderDeadline(super().__call__(), self)
