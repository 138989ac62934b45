"""Body intake: bounded by ``max_body_bytes``, timed by ``body_timeout_seconds`` from the start
of the request, with ``Expect: 100-continue`` answered only once the headers verified.

aiohttp's errors end here: the rest of the request path sees a ``Rejection`` or the bytes.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from gateway.config import LimitsConfig
from gateway.errors import Rejection

__all__ = ["read_body"]


async def read_body(request: web.BaseRequest, started: float, limits: LimitsConfig) -> bytes:
    """The whole body; ``started`` is the request's ``time.perf_counter()`` at arrival."""
    limit = limits.max_body_bytes
    content = request.content
    if content.is_eof() and "Expect" not in request.headers:
        # The whole body came with the headers (the usual small push): no wait, no timer.
        body_now = content.read_nowait()
        if len(body_now) > limit:
            raise Rejection("body_too_large", f"the body exceeds {limit} bytes")
        return body_now
    remaining = limits.body_timeout_seconds - (time.perf_counter() - started)
    body = bytearray()
    try:
        async with asyncio.timeout(max(remaining, 0.001)):
            expect = request.headers.get("Expect", "").lower()
            if expect == "100-continue" and request.version >= (1, 1):
                # The low-level server never answers Expect itself: a sender waiting for
                # 100 Continue would stall until body_timeout. Sent only once verified.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # the interim answer is not the response
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                if len(body) + len(chunk) > limit:
                    raise Rejection("body_too_large", f"the body exceeds {limit} bytes")
                body += chunk
    except TimeoutError:
        raise Rejection("request_timeout", "the body did not arrive in time") from None
    except aiohttp.web.HTTPException:
        raise
    except (aiohttp.ClientPayloadError, ConnectionError, ValueError):
        raise Rejection("malformed_request", "the request body is malformed") from None
    return bytes(body)
