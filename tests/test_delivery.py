"""Nothing lost: what the sender is told when a push cannot be taken
now, and that its retry of the very same token is then delivered exactly once.

Backends that must hold a request in flight wait on an ``asyncio.Event`` rather than a delay, so the
tests decide when the backend answers instead of racing a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.httpkit import (
    config_with,
    forge,
    get,
    push,
    raw_exchange,
    raw_status,
    request_bytes,
    scrape,
    send,
)
from tests.support import (
    Backend,
    World,
    bound_socket,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    wait_until,
    world,
)

BODY = b'{"event":"invoice.paid","id":"evt_1"}'


@dataclass
class GatedBackend(Backend):
    """A backend that holds every request until ``gate`` is set; ``arrived`` counts arrivals."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def hold(request: web.Request, handler: Any) -> web.StreamResponse:
            self.arrived += 1
            await self.gate.wait()
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(hold)
        return app


# -- the backend cannot take the push: the token is not consumed ---------------------------------
async def test_upstream_down_then_the_retry_of_the_same_token_is_forwarded_once() -> None:
    sock = bound_socket()  # bound, not listening: connections are refused
    port = sock.getsockname()[1]

    def configure(w: World) -> Any:
        return gateway_config(w.jwks_url, f"http://127.0.0.1:{port}")

    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = w.token(BODY)
        reply = await push(http, w, BODY, token=token)
        assert reply.outcome == (502, "upstream_unavailable")
        backend = Backend()
        async with serve_app(backend.app(), sock=sock):
            reply = await push(http, w, BODY, token=token)
            assert reply.status == 200, reply.body
            reply = await push(http, w, BODY, token=token)
            assert reply.outcome == (409, "replayed")
        assert [r.body for r in backend.received] == [BODY]
        m = await scrape(http, w.admin_url)
        labels = {"issuer": "sender", "outcome": "error", "reason": "upstream_unavailable"}
        assert m.value("jwksgate_requests_total", **labels) == 1
        assert m.value("jwksgate_upstream_duration_seconds_count", status_class="error") == 1


async def test_upstream_timeout_then_the_retry_succeeds() -> None:
    backend = GatedBackend()
    async with world(config_with(upstream={"timeout_seconds": 0.3}), backend=backend) as w:
        async with aiohttp.ClientSession() as http:
            token = w.token(BODY)
            reply = await push(http, w, BODY, token=token)  # the gate is closed: no answer
            assert reply.outcome == (504, "upstream_timeout")
            backend.gate.set()
            reply = await push(http, w, BODY, token=token)
            assert reply.status == 200, reply.body
            reply = await push(http, w, BODY, token=token)
            assert reply.outcome == (409, "replayed")
        # The retry was delivered (200 above). Whether the backend also got to read the body of
        # the attempt the gateway gave up on depends on when that connection closed: at least
        # once, at most twice.
        assert [r.body for r in backend.received] in ([BODY], [BODY, BODY])


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_backend_5xx_passes_through_and_the_retry_is_forwarded(
    status: int, w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    w.backend.status = status
    w.backend.response_body = b'{"backend":"down"}'
    reply = await push(http, w, BODY, token=token)
    assert reply.status == status
    assert reply.body == b'{"backend":"down"}'
    w.backend.status = 200
    w.backend.response_body = b'{"ok":true}'
    reply = await push(http, w, BODY, token=token)
    assert (reply.status, reply.body) == (200, b'{"ok":true}')
    reply = await push(http, w, BODY, token=token)
    assert reply.outcome == (409, "replayed")
    assert len(w.backend.received) == 2


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_backend_4xx_consumes_the_token(
    status: int, w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    w.backend.status = status
    reply = await push(http, w, BODY, token=token)
    assert reply.status == status
    w.backend.status = 200
    reply = await push(http, w, BODY, token=token)
    assert reply.outcome == (409, "replayed")
    assert len(w.backend.received) == 1


@pytest.mark.parametrize("status", [408, 429])
async def test_backend_408_or_429_releases_the_token(
    status: int, w: World, http: aiohttp.ClientSession
) -> None:
    # "Not taken, try again": the backend did not process the push, so the retry must be taken.
    token = w.token(BODY)
    w.backend.status = status
    assert (await push(http, w, BODY, token=token)).status == status
    w.backend.status = 200
    assert (await push(http, w, BODY, token=token)).status == 200
    assert (await push(http, w, BODY, token=token)).outcome == (409, "replayed")
    assert len(w.backend.received) == 2


async def test_concurrent_duplicates_are_forwarded_exactly_once() -> None:
    backend = GatedBackend()
    async with world(backend=backend) as w, aiohttp.ClientSession() as http:
        token = w.token(BODY)
        first = asyncio.ensure_future(push(http, w, BODY, token=token))
        await wait_until(lambda: backend.arrived == 1)
        copies = [asyncio.ensure_future(push(http, w, BODY, token=token)) for _ in range(19)]
        # The 19 copies are refused while the first is still held at the backend: in flight, not
        # delivered (a 409 would make their senders stop, and the first attempt may yet fail).
        refused = await asyncio.gather(*copies)
        assert [r.outcome for r in refused] == [(503, "replay_in_flight")] * 19
        assert all(1 <= int(r.headers["Retry-After"]) <= 10 for r in refused)
        backend.gate.set()
        assert (await first).status == 200
        assert len(backend.received) == 1


async def test_simultaneous_duplicates_are_forwarded_exactly_once(
    w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    replies = await asyncio.gather(*(push(http, w, BODY, token=token) for _ in range(20)))
    outcomes = sorted(r.outcome for r in replies)
    # Each copy is told "delivered" if it came after the first one's answer, else "in flight".
    assert outcomes[0] == (200, None)
    assert set(outcomes[1:]) <= {(409, "replayed"), (503, "replay_in_flight")}
    assert len(w.backend.received) == 1


# -- the replay store is full --------------------------------------------------------------------
async def test_full_replay_store_refuses_new_tokens_without_evicting() -> None:
    async with world(config_with(replay={"max_entries": 2})) as w, aiohttp.ClientSession() as http:
        first, second = w.token(BODY), w.token(BODY)
        for token in (first, second):
            assert (await push(http, w, BODY, token=token)).status == 200
        third = w.token(BODY)
        reply = await push(http, w, BODY, token=third)
        assert reply.outcome == (503, "replay_store_full")
        assert int(reply.headers["Retry-After"]) >= 1
        # No eviction: the delivered tokens are still refused.
        for token in (first, second):
            assert (await push(http, w, BODY, token=token)).outcome == (409, "replayed")
        assert len(w.backend.received) == 2
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_replay_entries", store="memory") == 2
        # The third token was not consumed: once there is room, its retry is delivered.
        w.clock.advance(335)  # past the first two tokens' TTL (300 s lifetime + 30 s skew)
        assert (await push(http, w, BODY)).status == 200
        assert len(w.backend.received) == 3


async def test_full_replay_store_accepts_the_refused_token_once_room_frees() -> None:
    async with world(config_with(replay={"max_entries": 1})) as w, aiohttp.ClientSession() as http:
        # A short-lived first token frees its entry long before the second one expires.
        short = sign(w.key, claims_for(BODY, w.clock(), exp=int(w.clock()) + 10))
        assert (await push(http, w, BODY, token=short)).status == 200
        waiting = w.token(BODY)
        assert (await push(http, w, BODY, token=waiting)).outcome == (503, "replay_store_full")
        w.clock.advance(301)  # past the short token's entry (kept at least max_token_age)
        assert (await push(http, w, BODY, token=waiting)).status == 200
        assert len(w.backend.received) == 2


# -- the gateway itself is busy or stopping ------------------------------------------------------
async def test_overloaded_answers_503_at_once_and_admin_still_answers() -> None:
    backend = GatedBackend()
    overload = world(config_with(limits={"max_inflight": 2}), backend=backend)
    async with overload as w, aiohttp.ClientSession() as http:
        held = [asyncio.ensure_future(push(http, w, BODY)) for _ in range(2)]
        await wait_until(lambda: backend.arrived == 2)
        assert w.running is not None and w.running.gateway.inflight == 2
        reply = await push(http, w, BODY)
        assert reply.outcome == (503, "overloaded")
        assert int(reply.headers["Retry-After"]) >= 1
        assert (await get(http, w.admin_url + "/livez")).status == 200
        assert (await get(http, w.admin_url + "/metrics")).status == 200
        backend.gate.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        # Capacity is back once they finish.
        assert (await push(http, w, BODY)).status == 200
        assert backend.arrived == 3


async def test_drain_finishes_in_flight_requests_and_refuses_new_connections() -> None:
    backend = GatedBackend()
    async with world(backend=backend) as w:
        running = w.running
        assert running is not None
        async with aiohttp.ClientSession() as http:
            in_flight = asyncio.ensure_future(push(http, w, BODY))
            await wait_until(lambda: backend.arrived == 1)
            draining = asyncio.ensure_future(running.drain())
            await wait_until(lambda: running.gateway.draining)
            ready = await get(http, w.admin_url + "/readyz")
            assert ready.status == 503
            assert ready.json()["draining"] is True
            assert (await get(http, w.admin_url + "/livez")).status == 200
            async with aiohttp.ClientSession() as fresh:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await send(fresh, w.url + "/hook", body=BODY, token=w.token(BODY))
            assert not in_flight.done()
            backend.gate.set()
            reply = await in_flight
            assert reply.status == 200, reply.body
            await draining
        assert len(backend.received) == 1


# -- deterministic input never gets a 5xx --------------------------------------------------------
def _hostile_requests(w: World) -> list[bytes]:
    good = w.token(BODY)

    def req(target: str, headers: dict[str, str], body: bytes = BODY) -> bytes:
        h = {"Content-Length": str(len(body)), **headers}
        return request_bytes("POST", target, h, body)

    big_int = b'{"iat":%d,"exp":1%s,"jti":"x","iss":"https://sender.test"}' % (
        int(w.clock()),
        b"0" * 4400,
    )
    nested = b'{"iat":%d,"jti":"x","deep":%s1%s}' % (int(w.clock()), b"[" * 1500, b"]" * 1500)
    weird_claims: list[dict[str, Any]] = [
        {"jti": "\ud800"},
        {"sub": "\ud800\udc00"},
        {"jti": "j" * 257},
        {"iat": 1e308},
        {"exp": -1e308},
        {"iat": True},
        {"aud": [None, 1]},
        {"iss": ["https://sender.test"]},
        {"request_body_sha256": 12},
        {"request_body_sha256": "zz" * 32},
    ]
    tokens = [sign(w.key, {**claims_for(BODY, w.clock()), **c}) for c in weird_claims]
    tokens += [sign(w.key, big_int), sign(w.key, nested)]
    tokens += [
        forge({"alg": "RS256", "kid": "\x00" * 10}, claims_for(BODY, w.clock())),
        forge({"alg": "RS256", "kid": 7}, claims_for(BODY, w.clock())),
        forge({"alg": "RS256", "kid": w.key.kid, "typ": ["JWT"]}, claims_for(BODY, w.clock())),
        forge({"alg": "RS256", "kid": w.key.kid, "crit": ["exp"]}, claims_for(BODY, w.clock())),
        forge({"alg": "RS256", "jku": "http://127.0.0.1:1/"}, claims_for(BODY, w.clock())),
        forge({"alg": "none", "kid": w.key.kid}, claims_for(BODY, w.clock())),
        forge({"alg": "HS256", "kid": w.key.kid}, claims_for(BODY, w.clock())),
        forge({"alg": "ES256", "kid": w.key.kid}, claims_for(BODY, w.clock())),
        forge([], {}),
        forge({"alg": "RS256", "kid": w.key.kid}, []),
        good + "A",
        good.replace(".", ".."),
        "e30.e30.",
        "..",
        "a" * 9000,
    ]
    out = [req("/hook", {"Authorization": f"Bearer {t}"}) for t in tokens]
    out += [
        req(
            "/hook",
            {"Authorization": f"Bearer {w.token(BODY)}", "Content-Type": "application/json; \x01"},
        ),
        req("/hook", {"Authorization": "Basic dXNlcjpwYXNz"}),
        req("/hook", {"Authorization": "Bearer"}),
        req("/hook", {"Authorization": "Bearer   "}),
        req("/%00/hook", {"Authorization": f"Bearer {w.token(BODY)}"}),
        req("/hook?" + "a=1&" * 1000, {"Authorization": f"Bearer {w.token(BODY)}"}),
        req("*", {"Authorization": f"Bearer {w.token(BODY)}"}),
        req("/hook", {"Authorization": f"Bearer {w.token(BODY)}", "Transfer-Encoding": "chunked"}),
        req("/hook", {"Authorization": f"Bearer {w.token(BODY)}", "Content-Encoding": "br"}),
        req("/hook", {"Authorization": f"Bearer {w.token(BODY)}", "Expect": "something-else"}),
        request_bytes("POST", "/hook", {"Authorization": f"Bearer {w.token(b'')}"}, host="[::1"),
        request_bytes("POST", "/hook", {"Authorization": f"Bearer {w.token(b'')}"}, host=""),
        req("/hook", {"X-Request-Id": "\x7f" * 10}),
        request_bytes("GET", "/hook", {"Authorization": f"Bearer {good}"}),
        request_bytes("TRACE", "/hook", {"Authorization": f"Bearer {good}"}),
        request_bytes("CONNECT", "127.0.0.1:1", {"Authorization": f"Bearer {good}"}),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GET / HTTP/1.1\r\nHost: gw\r\nX-Bin: a\xff\xfeb\r\nContent-Length: 0\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: gw\r\n" + b"X-H: v\r\n" * 200 + b"\r\n",
    ]
    return out


async def test_no_input_gets_a_5xx_from_the_gateway(w: World, http: aiohttp.ClientSession) -> None:
    for raw_request in _hostile_requests(w):
        raw = await raw_exchange(w.url, raw_request)
        if not raw:
            continue  # closed without an answer (e.g. a TLS handshake): not a 5xx either
        status = raw_status(raw)
        assert status < 500, (raw_request[:200], raw[:300])
    m = await scrape(http, w.admin_url)
    errors = {
        dict(labels).get("reason")
        for labels in m.label_sets("jwksgate_requests_total")
        if dict(labels).get("outcome") == "error"
    }
    assert errors == set()


async def test_headers_that_are_not_utf8_are_refused_and_the_token_kept(
    w: World, http: aiohttp.ClientSession
) -> None:
    token = w.token(BODY)
    head = (
        request_bytes(
            "POST",
            "/hook",
            {"Authorization": f"Bearer {token}", "Content-Length": str(len(BODY))},
        )[:-2]
        + b"X-Bin: caf\xe9 \xff\r\n\r\n"
    )
    raw = await raw_exchange(w.url, head + BODY)
    # The client library would drop bytes that are not UTF-8: refused, never altered.
    assert raw_status(raw) == 400
    assert b"malformed_request" in raw
    assert w.backend.received == []
    # The token was not consumed by the push that was never delivered.
    assert (await push(http, w, BODY, token=token)).status == 200


# -- the backend breaks off its answer -----------------------------------------------------------
class BreakingUpstream:
    """A raw HTTP backend whose first answer breaks off after part of its body; later ones are
    whole. Raw, because a well-behaved server library cannot be made to cut its answer short."""

    def __init__(self, framing: str) -> None:
        self.framing = framing
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        self.requests.append(await reader.readexactly(length))
        part = b"p" * 70_000
        if len(self.requests) > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif self.framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        elif self.framing == "sized_streamed":  # larger than the gateway buffers whole
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n" + part)
        else:  # sized_buffered: small enough to be read whole before answering
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"p" * 50)
        await writer.drain()
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self.server.close()
            await self.server.wait_closed()


# sized_buffered is the regression for a push the backend took being released (and so delivered
# again) when the rest of a small answer broke off before the gateway had read it whole.
@pytest.mark.parametrize("framing", ["chunked", "sized_streamed", "sized_buffered"])
async def test_backend_breaking_off_a_streamed_answer_breaks_the_senders_connection(
    framing: str,
) -> None:
    upstream = BreakingUpstream(framing)
    async with upstream.running() as url:

        def configure(w: World) -> Any:
            return gateway_config(w.jwks_url, url)

        async with world(configure) as w:
            token = w.token(BODY)
            # The status line has gone out: the sender must see a broken answer, not wait for
            # the rest of it forever (the client timeout turns a hang into a failure here).
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                headers = {"Authorization": f"Bearer {token}"}
                with pytest.raises(aiohttp.ClientPayloadError):
                    async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
                        assert resp.status == 200
                        await resp.read()
                # The backend's 200 went out: it took the push, so the token stays consumed and
                # the sender's retry is told so (409), rather than delivered a second time.
                reply = await push(http, w, BODY, token=token)
                assert reply.outcome == (409, "replayed")
                m = await scrape(http, w.admin_url)
            assert upstream.requests == [BODY]
            forwarded = {"issuer": "sender", "outcome": "forwarded", "reason": "none"}
            assert m.value("jwksgate_requests_total", **forwarded) == 1
