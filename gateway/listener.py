"""The webhook listener's connection guard and the wire-level rules aiohttp does not apply.

aiohttp has no header-read timeout (a slowloris can dribble headers forever), so each connection
is wrapped in a small protocol that starts a deadline whenever the connection is waiting for a
request and answers 408 ``request_timeout`` when the headers are not complete in time. Past
``limits.max_connections`` a new connection is answered 503 ``overloaded`` at once and closed.

Around aiohttp's request handler (``_Connection``):

- a request its parser refuses (a control byte in a header, a bad chunk size, an overlong line,
  TLS on the plain port) gets the gateway's JSON 400 ``malformed_request``, counted and logged
  (sampled) like any refusal, never aiohttp's traceback with the raw line (and token) on stderr;
- an absolute-form target (``POST http://host/hook``, RFC 9112 3.2.2) is taken as its
  origin-form path: routed and forwarded by the path, the authority ignored;
- a sender that half-closes (``shutdown(SHUT_WR)``) after its request still gets its answer;
  one that half-closes in the middle of a body gets 400 at once;
- an answer sent before the body was read (an early 401, a 413) says ``Connection: close`` and
  ends the gateway's side at once, then the rest of the body is discarded for at most
  ``min(10 s, body_timeout_seconds)`` (so the sender's unread bytes do not turn into a reset
  that destroys the answer);
- ``Upgrade`` is ignored (RFC 9110 7.8: the gateway proxies no other protocol) and the answer
  closes the connection: aiohttp's parser drops the bytes pipelined behind a request it does not
  upgrade, so the connection must not be reused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from gateway.admission import origin_form
from gateway.answers import raw_answer, web_answer
from gateway.errors import Rejection

__all__ = ["GuardedServer"]

_HEADER_TIMEOUT = Rejection("request_timeout", "the request headers did not arrive in time")
_TOO_MANY_CONNECTIONS = Rejection("overloaded", "too many open connections; retry shortly")

# Told of a connection answered before any request was parsed; returns its request id.
Refused = Callable[[Rejection], str]

log = logging.getLogger("jwksgate")

# aiohttp's own bound on discarding an unread body after an answer.
_LINGER_SECONDS = 10.0

# What the sender is told about a request aiohttp's parser refused: the kind of problem, never
# the line (its value may be the bearer token). Most specific class first.
_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.BadHttpMethod, "the request is not HTTP/1.x (a bad method)"),
    (http_exceptions.LineTooLong, "a request line or header line is too long"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL"),
    (http_exceptions.BadStatusLine, "the request line is malformed"),
    (http_exceptions.InvalidHeader, "a header line is malformed"),
    (http_exceptions.TransferEncodingError, "the chunked body framing is malformed"),
    (http_exceptions.ContentLengthError, "the body length is malformed"),
    (http_exceptions.PayloadEncodingError, "the body encoding is malformed"),
    (http_exceptions.BadHttpMessage, "a request line or header line is malformed"),
)


def parser_refusal(exc: BaseException | None) -> Rejection:
    """The gateway's answer to a request aiohttp's HTTP parser refused."""
    for cls, detail in _PARSER_ERRORS:
        if isinstance(exc, cls):
            return Rejection("malformed_request", detail)
    return Rejection("malformed_request", "the request could not be parsed as HTTP/1.1")


def asks_upgrade(headers: Mapping[str, str]) -> bool:
    """Whether a request asks for a protocol switch: an ``Upgrade`` header and the ``upgrade``
    option in ``Connection`` (what aiohttp's parser acts on)."""
    if "Upgrade" not in headers:
        return False
    connection = [v for k, v in headers.items() if k.lower() == "connection"]
    return any(
        token.strip().lower() == "upgrade" for value in connection for token in value.split(",")
    )


class _Connection(RequestHandler):
    """aiohttp's per-connection request handler with the gateway's wire rules (module doc)."""

    def __init__(self, server: GuardedServer, linger: float, **kw: Any) -> None:
        super().__init__(server, lingering_time=linger, **kw)
        self.guarded = server
        # The sender ended its side after (part of) a request: answer, then close.
        self.half_closed = False
        # The request most recently taken from the queue.
        self.latest: web.BaseRequest | None = None
        # The request most recently answered.
        self.answered: web.BaseRequest | None = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        # aiohttp's parser refused the request: its message quotes the raw line, so neither it
        # nor a traceback is logged; the refusal is counted and logged (sampled) like any other.
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent on this connection")
        r = parser_refusal(exc)
        return web_answer(r, self.guarded.on_refused(r))

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's remaining error reports, as the gateway's JSON log lines.
        log.error(*args, **kw)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        body_unread = not request.content.is_eof()
        last = self.half_closed and not self._messages
        if not resp.prepared and (body_unread or last or asks_upgrade(request.headers)):
            resp.force_close()
        done = await super().finish_response(request, resp, start_time)
        self.answered = request
        transport = self.transport
        if body_unread and transport is not None and transport.can_write_eof():
            # The answer is complete: say so at once, while the unread body is discarded.
            transport.write_eof()
        return done

    def sender_closed(self) -> bool:
        """The sender half-closed; returns whether the connection stays open to answer."""
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            # asyncio's TLS transport cannot stay half-open: it closes either way.
            return False
        # A request is queued, or taken from the queue and not yet answered (the request loop
        # waits on ``_waiter`` only between requests).
        busy = bool(self._messages) or (self._waiter is None and self._request_count > 0)
        if not busy:
            return False  # between requests or inside a request's headers: nothing to answer
        self.half_closed = True
        latest = self.latest
        if latest is not None and latest is self.answered:
            # Its answer is out and its unread body is being discarded: that ends here.
            latest.content.feed_eof()
            latest = None
        pending = [p for _m, p in self._messages]
        if latest is not None:
            pending.append(latest.content)
        for payload in pending:
            if not payload.is_eof():
                # The body can never be completed: the request is answered 400 at once, and
                # there is nothing left to discard after it.
                self._lingering_time = 0.0
                payload.set_exception(
                    ConnectionResetError("the sender closed before the body was complete")
                )
        return True


class _HeaderDeadline(asyncio.Protocol):
    """Delegates to aiohttp's protocol; owns the header deadline of one connection.

    The deadline is a time (``deadline``), set when the connection starts waiting for a
    request's headers and cleared when they are complete; one timer per connection checks it.
    A timer that fires before the current deadline (it was set for an earlier request of a
    kept-alive connection) is moved on to it: a request costs two assignments, not a timer
    scheduled and cancelled each time."""

    def __init__(self, inner: RequestHandler, server: GuardedServer) -> None:
        self.inner = inner
        self.server = server
        self.busy = False
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.request: web.BaseRequest | None = None
        # Bytes that arrived after the current request's body was complete: the start of a
        # pipelined request, whose headers need a deadline of their own.
        self.pipelined = False
        self.refused = False

    def _arm(self) -> None:
        if self.deadline is None and not self.busy:
            loop = asyncio.get_running_loop()
            deadline = self.deadline = loop.time() + self.server.header_timeout()
            timer = self.timer
            if timer is None or timer.when() > deadline:
                # None pending, or one too late for this deadline (a reload shortened it).
                if timer is not None:
                    timer.cancel()
                self.timer = loop.call_at(deadline, self._expired)

    def disarm(self, request: web.BaseRequest) -> None:
        self.busy = True
        self.request = request
        self.pipelined = False
        self.deadline = None  # the timer, if pending, finds no deadline and ends

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
        deadline = self.deadline
        if deadline is None:
            return  # the headers arrived in time; the next request arms again
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            # Set for an earlier request of this connection: on to the current deadline.
            self.timer = loop.call_at(deadline, self._expired)
            return
        self.deadline = None
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
        if self.refused:
            return None
        self.inner.eof_received()
        if isinstance(self.inner, _Connection) and self.inner.sender_closed():
            return True  # keep the transport open: the request is still to be answered
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.deadline = None
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
        body_timeout: Callable[[], float] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(handler, **kw)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.on_refused = on_refused
        self.body_timeout = body_timeout
        self.guards: dict[RequestHandler, _HeaderDeadline] = {}

    def __call__(self) -> Any:  # the protocol factory handed to loop.create_server
        linger = _LINGER_SECONDS
        if self.body_timeout is not None:
            linger = min(linger, self.body_timeout())
        inner = _Connection(self, linger, loop=self._loop, **self._kwargs)
        return _HeaderDeadline(inner, self)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        origin = origin_form(message.path)
        if origin is not None:
            # Absolute-form: from here on the request is its origin-form path, so routing, the
            # path rules and forwarding never see the authority.
            path, _, query = origin.partition("?")
            url = URL.build(path=path, query_string=query, encoded=True)
            message = message._replace(path=origin, url=url)
        request = super()._make_request(message, payload, protocol, writer, task)
        if isinstance(protocol, _Connection):
            protocol.latest = request
        return request
