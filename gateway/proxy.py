"""Forwarding: what the backend receives (contract §3) and what goes back to the sender.

The request is forwarded only after it is verified and its body fully read (store-and-forward up to
``max_body_bytes``), with one clean framing: inbound ``Content-Length``/``Transfer-Encoding`` are
never copied, aiohttp's client computes them for the bytes it sends.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import ForwardConfig, IssuerConfig, UpstreamConfig
from gateway.errors import Rejection

log = logging.getLogger("jwksgate")

__all__ = [
    "ISSUER_HEADER",
    "MAX_CLAIM_HEADER_BYTES",
    "Upstream",
    "header_value",
    "response_headers",
    "upstream_headers",
]

ISSUER_HEADER = "X-Jwt-Issuer"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_CLAIM_HEADER_BYTES = 4096
# Responses up to this size are read whole (cheaper); larger or unsized ones are streamed.
_BUFFERED_RESPONSE_BYTES = 256 * 1024
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Framing and routing headers the client library sets for the bytes it actually sends.
_NOT_COPIED = frozenset({"host", "content-length", "expect"})
_FORWARDED_FOR = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


def _norm(name: str) -> str:
    # Some backends (CGI, WSGI) fold "_" into "-": X_Jwt_Sub must be stripped like X-Jwt-Sub.
    return name.lower().replace("_", "-")


def header_value(value: Any) -> str:
    """A claim as a header value: printable ASCII strings as is, anything else as compact JSON
    with non-ASCII and control characters escaped (never a raw CR, LF, NUL or DEL)."""
    if isinstance(value, str) and _PRINTABLE_RE.fullmatch(value):
        return value
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("\x7f", "\\u007f")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(_norm(t.strip()) for t in value.split(",") if t.strip())
    return tokens


def gateway_header_names(forward: ForwardConfig, issuers: Iterable[IssuerConfig]) -> frozenset[str]:
    """Every header name the gateway itself sets, normalised; inbound copies are removed."""
    names = {ISSUER_HEADER, forward.claims_header, REQUEST_ID_HEADER, *_FORWARDED_FOR}
    for issuer in issuers:
        names.update(header for _claim, header in issuer.forward_claims)
    return frozenset(_norm(n) for n in names)


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    *,
    forward: ForwardConfig,
    gateway_headers: frozenset[str],
    issuer: IssuerConfig,
    claims: Mapping[str, Any],
    payload_segment: str,
    client: str,
    proto: str,
    host: str,
    request_id: str,
) -> tuple[CIMultiDict[str], int]:
    """The headers sent to the backend, and how many claim headers were left out as too long."""
    listed = _connection_tokens(incoming)
    prefix = _norm(forward.header_prefix)
    secrets: frozenset[str] = frozenset()
    if issuer.static_token is not None and not forward.keep_token:
        # The notification token is a credential, like Authorization: the backend never sees it.
        secrets = frozenset(_norm(h) for h in issuer.static_token.headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        n = _norm(name)
        if (
            n in _HOP_BY_HOP
            or n in listed
            or n in _NOT_COPIED
            or n in gateway_headers
            or n.startswith(prefix)
            or (n == "authorization" and not forward.keep_token)
            or n in secrets
        ):
            continue
        out.add(name, value)
    out["X-Forwarded-For"] = client
    out["X-Forwarded-Proto"] = proto
    out["X-Forwarded-Host"] = header_value(host)
    out[REQUEST_ID_HEADER] = request_id
    out[ISSUER_HEADER] = issuer.name
    # The payload segment is already base64url (no padding) of the verified claims JSON: the
    # exact signed bytes, with no re-serialisation on the hot path.
    out[forward.claims_header] = payload_segment
    omitted = 0
    for claim, header in issuer.forward_claims:
        if claim not in claims:
            continue
        value = header_value(claims[claim])
        if len(value) > MAX_CLAIM_HEADER_BYTES:
            omitted += 1
            continue
        out[header] = value
    return out, omitted


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The backend's response headers less hop-by-hop ones (and the framing aiohttp redoes)."""
    listed = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        n = name.lower()
        if n in _HOP_BY_HOP or n in listed or n == "content-length":
            continue
        out.add(name, value)
    return out


class Upstream:
    """One pooled client session to the backend."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        tls: ssl.SSLContext | bool = True
        if cfg.ca_file or cfg.client_cert_file:
            tls = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.client_cert_file and cfg.client_key_file:
                tls.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
        self.timeout = aiohttp.ClientTimeout(
            total=cfg.timeout_seconds, sock_connect=cfg.connect_timeout_seconds
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.max_connections, ssl=tls),
            # The body goes back byte for byte: never decompress, never add headers.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    async def open(
        self, method: str, path_qs: str, headers: CIMultiDict[str], body: bytes
    ) -> aiohttp.ClientResponse:
        """Send the request; return once the backend's status and headers have arrived."""
        try:
            return await self.session.request(
                method,
                # encoded=True: the path and query go out exactly as received (contract §2);
                # yarl would otherwise requote them (%7E -> ~, %c3 -> %C3).
                URL(self.cfg.url + path_qs, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self.timeout,
            )
        except TimeoutError:
            raise Rejection("upstream_timeout", "the backend did not answer in time") from None
        except (aiohttp.ClientError, OSError) as e:
            raise Rejection(
                "upstream_unavailable", f"the backend cannot be reached ({type(e).__name__})"
            ) from None

    async def relay(
        self, request: web.BaseRequest, up: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """The backend's response, unchanged but for hop-by-hop headers."""
        headers = response_headers(up.headers)
        size = up.content_length
        if request.method == "HEAD":
            # No body follows, but the backend's Content-Length describes the resource: keep it.
            resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
            if size is not None:
                resp.content_length = size
            up.release()
            return resp
        try:
            if size is not None and size <= _BUFFERED_RESPONSE_BYTES:
                body = await _answer_part(up.read)
                return web.Response(status=up.status, reason=up.reason, headers=headers, body=body)
            resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
            if size is not None:
                resp.content_length = size
            await resp.prepare(request)
            try:
                while chunk := await _answer_part(up.content.readany):
                    await resp.write(chunk)
                await resp.write_eof()
            except (Rejection, ConnectionError, aiohttp.ClientConnectionResetError) as e:
                # The status line is out, so the backend's status stands (the push was taken).
                # Only closing the connection before the end tells the sender that the answer
                # is incomplete; otherwise it would wait for the rest.
                log.warning("answer to the sender cut short after the status line: %s", e)
                request.protocol.force_close()
            return resp
        finally:
            up.release()

    async def close(self) -> None:
        await self.session.close()


async def _answer_part(read: Callable[[], Awaitable[bytes]]) -> bytes:
    """Read (part of) the backend's answer; a broken or stalled answer becomes a Rejection."""
    try:
        return await read()
    except TimeoutError:
        raise Rejection("upstream_timeout", "the backend's answer stalled") from None
    except (aiohttp.ClientError, OSError):
        raise Rejection("upstream_unavailable", "the backend's answer broke off") from None
