"""The client session to the backend: send a verified push, relay its answer.

aiohttp's client errors end here: ``open`` and ``relay`` turn them into a ``Rejection``
(``upstream_unavailable``, ``upstream_timeout``) or, once the backend's status line has arrived,
into a cut-short answer that keeps the backend's status.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import Rejection
from gateway.forward_headers import REQUEST_ID_HEADER, response_headers

__all__ = ["Sending", "Upstream"]

log = logging.getLogger("jwksgate")

# Responses up to this size are read whole (cheaper); larger or unsized ones are streamed.
_BUFFERED_RESPONSE_BYTES = 256 * 1024
_URL_CACHE_SIZE = 256


@dataclass(slots=True)
class Sending:
    """How far one request to the backend got. ``sent`` turns true once a connection is open and
    the request is being written to it: from then on, until the status line arrives, a failure
    is ambiguous (the backend may have the whole request and act on it)."""

    sent: bool = False


async def _on_request_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    if isinstance(ctx.trace_request_ctx, Sending):
        ctx.trace_request_ctx.sent = True


class Upstream:
    """One pooled client session to the backend."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        self._urls: dict[str, URL] = {}
        tls: ssl.SSLContext | bool = True
        if cfg.ca_file or cfg.client_cert_file:
            tls = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.client_cert_file and cfg.client_key_file:
                tls.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
        self.timeout = aiohttp.ClientTimeout(
            total=cfg.timeout_seconds, sock_connect=cfg.connect_timeout_seconds
        )
        # The one trace hook: whether the request was written (a failure before that, connecting
        # or waiting for a pooled connection, is certain not to have reached the backend).
        sent = aiohttp.TraceConfig()
        sent.on_request_headers_sent.append(_on_request_sent)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.max_connections, ssl=tls),
            trace_configs=[sent],
            # The body goes back byte for byte: never decompress, never add headers.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    def _url(self, path_qs: str) -> URL:
        # encoded=True: the path and query go out exactly as received; yarl would otherwise
        # requote them (%7E -> ~, %c3 -> %C3). Parsed URLs are kept for the paths pushes
        # usually reuse; the bound keeps a sender varying its query from growing the cache.
        url = self._urls.get(path_qs)
        if url is None:
            url = URL(self.cfg.url + path_qs, encoded=True)
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path_qs] = url
        return url

    async def open(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes,
        sending: Sending | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request; return once the backend's status and headers have arrived.
        ``sending`` is told whether the request was written, whatever happens next."""
        try:
            return await self.session.request(
                method,
                self._url(path_qs),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self.timeout,
                trace_request_ctx=sending,
            )
        except TimeoutError:
            raise Rejection("upstream_timeout", "the backend did not answer in time") from None
        except (aiohttp.ClientError, OSError) as e:
            raise Rejection(
                "upstream_unavailable", f"the backend cannot be reached ({type(e).__name__})"
            ) from None

    async def relay(
        self, request: web.BaseRequest, up: aiohttp.ClientResponse, request_id: str
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
        await self.session.close()


def _cut_short(request: web.BaseRequest, e: Exception) -> None:
    # Only closing the connection before the end tells the sender that the answer is
    # incomplete; otherwise it would wait for the rest.
    log.warning("answer to the sender cut short after the status line: %s", e)
    request.protocol.force_close()


async def _answer_part(read: Callable[[], Awaitable[bytes]]) -> bytes:
    """Read (part of) the backend's answer; a broken or stalled answer becomes a Rejection."""
    try:
        return await read()
    except TimeoutError:
        raise Rejection("upstream_timeout", "the backend's answer stalled") from None
    except (aiohttp.ClientError, OSError):
        raise Rejection("upstream_unavailable", "the backend's answer broke off") from None
