"""The backend: send a verified push, relay its answer.

The request goes out on ``gateway.upstream_pool``'s persistent connections. Its failures end
here: ``open`` and ``relay`` turn them into a ``Rejection`` (``upstream_unavailable``,
``upstream_timeout``) or, once the backend's status line has arrived, into a cut-short answer
that keeps the backend's status. ``timeout_seconds`` bounds the whole exchange, from the wait for
a pooled connection to the last byte of the answer; ``connect_timeout_seconds`` a new connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import Rejection
from gateway.forward_headers import REQUEST_ID_HEADER, response_headers
from gateway.upstream_pool import Answer, ConnectionPool, Sending, request_head

__all__ = ["Answer", "Sending", "Upstream"]

log = logging.getLogger("jwksgate")

# Responses up to this size are read whole (cheaper); larger or unsized ones are streamed.
_BUFFERED_RESPONSE_BYTES = 256 * 1024
_TARGET_CACHE_SIZE = 256
# What a broken exchange raises: the connection (OSError, aiohttp's ServerDisconnectedError and
# payload errors) or the backend's bytes (HttpProcessingError: not HTTP/1.x, a header too long).
_BROKEN = (aiohttp.ClientError, OSError, HttpProcessingError, ValueError)


def _tls_context(cfg: UpstreamConfig) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=cfg.ca_file)
    if cfg.client_cert_file and cfg.client_key_file:
        tls.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
    return tls


class Upstream:
    """The backend of one configuration: its connection pool and its timeouts."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        url = URL(cfg.url)
        assert url.host is not None and url.port is not None
        self._base = url
        # The Host header aiohttp's client sent: host[:port], the port only if not the default.
        self.host = url.host_port_subcomponent or url.host
        self._targets: dict[str, str] = {}
        self.pool = ConnectionPool(
            url.host,
            url.port,
            _tls_context(cfg) if url.scheme == "https" else None,
            cfg.max_connections,
            cfg.connect_timeout_seconds,
        )

    @property
    def closed(self) -> bool:
        return self.pool.closed

    def _target(self, path_qs: str) -> str:
        # The path and query go out exactly as received, after the URL's own path (if any).
        # Kept for the paths pushes usually reuse; the bound keeps a sender varying its query
        # from growing the cache.
        target = self._targets.get(path_qs)
        if target is None:
            target = URL(self.cfg.url + path_qs, encoded=True).raw_path_qs
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[path_qs] = target
        return target

    async def open(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes,
        sending: Sending | None = None,
    ) -> Answer:
        """Send the request; return once the backend's status and headers have arrived.
        ``sending`` is told whether the request was written, whatever happens next."""
        if sending is None:
            sending = Sending()
        try:
            head = request_head(method, self._target(path_qs), self.host, headers, len(body))
            deadline = asyncio.get_running_loop().time() + self.cfg.timeout_seconds
            answer = await self.pool.exchange(
                head, body, skip_body=method == "HEAD", sending=sending, deadline=deadline
            )
        except TimeoutError:
            raise Rejection("upstream_timeout", "the backend did not answer in time") from None
        except _BROKEN as e:
            raise Rejection(
                "upstream_unavailable", f"the backend cannot be reached ({type(e).__name__})"
            ) from None
        return answer

    async def relay(
        self, request: web.BaseRequest, up: Answer, request_id: str
    ) -> web.StreamResponse:
        """The backend's response, unchanged but for hop-by-hop headers and ``X-Request-Id``,
        which is the gateway's (the id the backend was sent and the access line names).

        The backend's status stands whatever happens to the rest of its answer (it took the
        push): a body that breaks off or stalls is cut short on the sender's connection too.
        """
        headers = response_headers(up.headers)
        headers[REQUEST_ID_HEADER] = request_id
        size = up.content_length
        resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
        if size is not None:
            resp.content_length = size
        try:
            if request.method == "HEAD":
                # No body follows, but the backend's Content-Length describes the resource.
                return resp
            if size is not None and size <= _BUFFERED_RESPONSE_BYTES:
                try:
                    body = await _answer_part(up.read)
                except Rejection as e:
                    await resp.prepare(request)
                    _cut_short(request, e)
                    return resp
                return web.Response(status=up.status, reason=up.reason, headers=headers, body=body)
            await resp.prepare(request)
            try:
                while chunk := await _answer_part(up.content.readany):
                    await resp.write(chunk)
                await resp.write_eof()
            except (Rejection, ConnectionError, aiohttp.ClientConnectionResetError) as e:
                _cut_short(request, e)
            return resp
        finally:
            up.release()

    async def close(self) -> None:
        self.pool.close()


def _cut_short(request: web.BaseRequest, e: Exception) -> None:
    # Only closing the connection before the end tells the sender that the answer is
    # incomplete; otherwise it would wait for the rest.
    log.warning("answer to the sender cut short after the status line: %s", e)
    request.protocol.force_close()


async def _answer_part(read: Callable[[], Awaitable[bytes]]) -> bytes:
    """Read (part of) the backend's answer (the pool fails it past the exchange's deadline); a
    broken or stalled answer becomes a Rejection."""
    try:
        return await read()
    except TimeoutError:
        raise Rejection("upstream_timeout", "the backend's answer stalled") from None
    except _BROKEN:
        raise Rejection("upstream_unavailable", "the backend's answer broke off") from None
