"""Ambiguous outcomes (issue 14): the backend read the whole request and then stalled past the
upstream timeout, or closed the connection before a status line. The backend may have acted on
it; the gateway cannot tell, releases the token (the retry is forwarded again) and says so in
``jwksgate_ambiguous_deliveries_total{issuer, cause}`` and a log line. A refused connection is not
ambiguous: the request never left.

The backend here is a raw socket server that reads the request to its last body byte before it
misbehaves, so the request provably reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from gateway.config import Config
from tests.httpkit import Scrape, push, scrape
from tests.support import World, captured_log, free_port, gateway_config, world

BODY = b'{"event":"invoice.paid","id":"evt_1"}'
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


@dataclass
class RawBackend:
    """Answers connection n as ``plan[n]`` says: ``stall`` (read the request, never answer),
    ``close`` (read it, close without a byte), ``ok`` (read it, answer 200). Keeps each request's
    head and body."""

    plan: list[str]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    _stalled: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                step = (
                    self.plan[len(self.requests)] if len(self.requests) < len(self.plan) else "ok"
                )
                self.requests.append((head, body))
                if step == "stall":
                    self._stalled.append(writer)
                    return
                if step == "close":
                    writer.close()
                    return
                writer.write(_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def idempotency_keys(self) -> list[str]:
        keys = []
        for head, _ in self.requests:
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"idempotency-key":
                    keys.append(value.strip().decode())
        return keys

    def close(self) -> None:
        for w in self._stalled:
            w.close()


@contextlib.asynccontextmanager
async def raw_backend(plan: list[str]) -> AsyncIterator[tuple[RawBackend, str]]:
    backend = RawBackend(plan)
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield backend, f"http://127.0.0.1:{port}"
    finally:
        backend.close()
        server.close()
        await server.wait_closed()


def _ambiguous(m: Scrape, cause: str) -> float:
    return m.value("jwksgate_ambiguous_deliveries_total", issuer="sender", cause=cause)


async def test_backend_that_read_the_push_then_stalls_is_an_ambiguous_504() -> None:
    async with raw_backend(["stall"]) as (backend, url):

        def configure(w: World) -> Config:
            return gateway_config(w.jwks_url, url, upstream={"timeout_seconds": 0.5})

        with captured_log() as records:
            async with world(configure) as w, aiohttp.ClientSession() as http:
                token = w.token(BODY)
                assert (await push(http, w, BODY, token=token)).outcome == (504, "upstream_timeout")
                # Released: the retry is forwarded again, with the same idempotency key.
                assert (await push(http, w, BODY, token=token)).status == 200
                m = await scrape(http, w.admin_url)
        assert [body for _, body in backend.requests] == [BODY, BODY]
        keys = backend.idempotency_keys()
        assert len(keys) == 2 and keys[0] == keys[1]
        assert _ambiguous(m, "timeout") == 1
        assert _ambiguous(m, "disconnected") == 0
        said = [r.getMessage() for r in records if "ambiguous delivery" in r.getMessage()]
        assert len(said) == 1 and "timeout" in said[0] and keys[0] in said[0], said


async def test_backend_that_read_the_push_then_closes_is_an_ambiguous_502() -> None:
    async with raw_backend(["close"]) as (backend, url):

        def configure(w: World) -> Config:
            return gateway_config(w.jwks_url, url)

        with captured_log() as records:
            async with world(configure) as w, aiohttp.ClientSession() as http:
                token = w.token(BODY)
                reply = await push(http, w, BODY, token=token)
                assert reply.outcome == (502, "upstream_unavailable")
                assert (await push(http, w, BODY, token=token)).status == 200
                assert (await push(http, w, BODY, token=token)).outcome == (409, "replayed")
                m = await scrape(http, w.admin_url)
        assert [body for _, body in backend.requests] == [BODY, BODY]
        assert _ambiguous(m, "disconnected") == 1
        assert _ambiguous(m, "timeout") == 0
        said = [r.getMessage() for r in records if "ambiguous delivery" in r.getMessage()]
        assert len(said) == 1 and "disconnected" in said[0], said


async def test_refused_connection_is_not_ambiguous() -> None:
    port = free_port()  # nothing listens here

    def configure(w: World) -> Config:
        return gateway_config(w.jwks_url, f"http://127.0.0.1:{port}")

    with captured_log() as records:
        async with world(configure) as w, aiohttp.ClientSession() as http:
            assert (await push(http, w, BODY)).outcome == (502, "upstream_unavailable")
            m = await scrape(http, w.admin_url)
    for cause in ("timeout", "disconnected", "cancelled", "error"):
        assert _ambiguous(m, cause) == 0
    assert not [r for r in records if "ambiguous delivery" in r.getMessage()]
