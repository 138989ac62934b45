"""The one renderer of the gateway's own answers (as opposed to the backend's, relayed as is).

An answer is the reason's status, a JSON body ``{"error", "detail"}``, ``WWW-Authenticate`` on
401, ``Retry-After`` on 503 and ``X-Request-Id`` (always: it names the answer's access line); the
same bytes whether aiohttp sends it
(``web_answer``) or the connection guard writes it to a socket aiohttp never saw
(``raw_answer``).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

from gateway.errors import Rejection

__all__ = ["closes", "echo_answer", "raw_answer", "web_answer"]


def _headers(r: Rejection, request_id: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if r.status == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{r.reason}"'
        )
    if r.status == 503:
        headers["Retry-After"] = str(r.retry_after or 1)
    if request_id:
        headers["X-Request-Id"] = request_id
    return headers


def _body(r: Rejection) -> bytes:
    return json.dumps({"error": r.reason, "detail": r.detail}).encode()


def closes(r: Rejection) -> bool:
    """Whether the connection must close after this answer: the rest of the request may still
    be in flight (a body not read, a timeout), so it must not be parsed as a new request."""
    return r.status in (400, 408, 413) or r.reason == "shutting_down"


def web_answer(r: Rejection, request_id: str | None = None) -> web.Response:
    """The answer for a request that is not forwarded, for aiohttp to send."""
    resp = web.Response(
        status=r.status,
        body=_body(r),
        content_type="application/json",
        headers=_headers(r, request_id),
    )
    if closes(r):
        resp.force_close()
    return resp


def raw_answer(r: Rejection, request_id: str | None = None) -> bytes:
    """The same answer as complete HTTP/1.1 bytes, for a connection the request handler never
    sees (a header deadline, the connection bound); such a connection is always closed."""
    body = _body(r)
    extra = "".join(f"{k}: {v}\r\n" for k, v in _headers(r, request_id).items())
    head = (
        f"HTTP/1.1 {r.status} {HTTPStatus(r.status).phrase}\r\n"
        f"Content-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def echo_answer(text: str, request_id: str) -> web.Response:
    """An ownership handshake's answer: the challenge, as plain text the browser won't sniff."""
    return web.Response(
        text=text, headers={"X-Content-Type-Options": "nosniff", "X-Request-Id": request_id}
    )
