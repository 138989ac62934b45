"""What the backend receives and what the sender gets back.

Every test goes through real sockets: a real JWKS server, a real backend and the gateway on
loopback. Hostile framing (stalled bodies, dribbled headers, absolute-form targets) is written on
raw sockets because a well-behaved client library cannot send it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import parse_config
from tests.httpkit import (
    config_with,
    push,
    raw_exchange,
    raw_json,
    raw_status,
    request_bytes,
    scrape,
)
from tests.support import (
    Backend,
    World,
    body_hash,
    claims_for,
    gateway_config,
    serve_app,
    sign,
    world,
)

BODY = b'{"task":"t1","state":"completed"}'


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# -- the request, byte for byte ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_method_and_body_arrive_byte_for_byte(method: str) -> None:
    body = bytes(range(256)) + b"\r\n\r\n0\r\n\r\n" + "é€".encode() + b"\x00" * 3
    async with world() as w, aiohttp.ClientSession() as http:
        token = w.token(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        async with http.request(method, w.url + "/hook", data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        [got] = w.backend.received
        assert got.method == method
        assert got.body == body
        assert got.header("Content-Type") == "application/octet-stream"
        assert got.header("Content-Length") == str(len(body))


@pytest.mark.parametrize(
    "path_qs",
    [
        "/hook?x=1",
        # Percent-encodings a URL library likes to "normalise": unreserved %7E and %41, lower-case
        # hex, an encoded slash, an invalid escape, "+" and an empty value.
        "/a%7Eb/c%2Cd?q=%41+b&x=%c3%a9&y=%E2%82%AC",
        "/h;p=1/x?a=&a=2&flag",
        "/x?%zz=1&e=%20&s='!*()",
    ],
)
async def test_path_and_query_arrive_unchanged(
    path_qs: str, w: World, http: aiohttp.ClientSession
) -> None:
    reply = await push(http, w, BODY, path=path_qs)
    assert reply.status == 200, reply.body
    [got] = w.backend.received
    assert got.path_qs == path_qs


# -- headers the gateway owns --------------------------------------------------------------------
async def test_spoofed_claim_headers_never_reach_the_backend() -> None:
    spoofed: CIMultiDict[str] = CIMultiDict(
        [
            ("X-Jwt-Sub", "attacker"),
            ("x-jwt-sub", "attacker-2"),
            ("X_Jwt_Sub", "attacker-3"),
            ("X-JWT-SUB", "attacker-4"),
            ("x-jwt-issuer", "evil"),
            ("X_JWT_ISSUER", "evil"),
            ("X-Jwt-Claims", "eyJzdWIiOiJhZG1pbiJ9"),
            ("X-Jwt-Role", "admin"),
            ("x_jwt_role", "admin"),
            ("X-Jwt-", "bare-prefix"),
        ]
    )
    async with world() as w, aiohttp.ClientSession() as http:
        token = w.token(BODY, sub="agent-7")
        reply = await push(http, w, BODY, token=token, headers=spoofed)
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        jwt_headers = {k: v for k, v in got.headers.items() if _norm(k).startswith("x-jwt-")}
        assert jwt_headers == {
            "x-jwt-sub": ["agent-7"],
            "x-jwt-issuer": ["sender"],
            "x-jwt-claims": [token.split(".")[1]],
        }


async def test_spoofed_claim_header_is_removed_when_the_token_lacks_the_claim(
    w: World, http: aiohttp.ClientSession
) -> None:
    reply = await push(http, w, BODY, headers={"X-Jwt-Sub": "admin", "X_Jwt_Sub": "admin"})
    assert reply.status == 200, reply.body
    [got] = w.backend.received
    assert "x-jwt-sub" not in got.headers
    assert "x_jwt_sub" not in got.headers


async def test_connection_listed_names_cannot_strip_the_gateway_headers() -> None:
    # "Connection: X-Jwt-Sub" asks a proxy to drop X-Jwt-Sub; it must not drop the gateway's own.
    listed = "X-Jwt-Sub, X-Jwt-Issuer, X-Jwt-Claims, X-Forwarded-For, X-Request-Id, X-Secret"
    async with world() as w, aiohttp.ClientSession() as http:
        headers = {"Connection": listed, "X-Jwt-Sub": "attacker", "X-Secret": "s3"}
        reply = await push(http, w, BODY, headers=headers, sub="agent-7")
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        assert got.headers["x-jwt-sub"] == ["agent-7"]
        assert got.headers["x-jwt-issuer"] == ["sender"]
        assert len(got.headers["x-jwt-claims"]) == 1
        assert got.headers["x-forwarded-for"] == ["127.0.0.1"]
        assert len(got.headers["x-request-id"]) == 1
        assert "x-secret" not in got.headers
        assert "connection" not in got.headers


async def test_hop_by_hop_headers_are_stripped() -> None:
    hop = {
        "Connection": "keep-alive, X-Listed-1, x-listed-2",
        "Keep-Alive": "timeout=5, max=100",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "Proxy-Connection": "keep-alive",
        "X-Listed-1": "one",
        "X-Listed-2": "two",
        "X-Kept": "kept",
    }
    async with world() as w, aiohttp.ClientSession() as http:
        reply = await push(http, w, BODY, headers=hop)
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        for name in (
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "x-listed-1",
            "x-listed-2",
            "transfer-encoding",
        ):
            assert name not in got.headers, name
        assert got.headers["x-kept"] == ["kept"]


async def test_upgrade_request_is_not_tunnelled(w: World, http: aiohttp.ClientSession) -> None:
    headers = {"Connection": "Upgrade", "Upgrade": "h2c"}
    reply = await push(http, w, BODY, headers=headers)
    # Either refused as malformed or forwarded as a plain request; never a tunnel, never 5xx.
    assert reply.status in (200, 400), reply.body
    assert len(w.backend.received) == (1 if reply.status == 200 else 0)
    for got in w.backend.received:
        assert "upgrade" not in got.headers
        assert "connection" not in got.headers
        assert got.body == BODY


@pytest.mark.parametrize("keep_token", [False, True])
async def test_authorization_is_forwarded_only_with_keep_token(keep_token: bool) -> None:
    configure = config_with(forward={"keep_token": keep_token})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = w.token(BODY)
        reply = await push(http, w, BODY, token=token)
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        if keep_token:
            assert got.headers["authorization"] == [f"Bearer {token}"]
        else:
            assert "authorization" not in got.headers


async def test_forwarded_headers_replace_client_values() -> None:
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X_Forwarded_For": "7.7.7.7",
        "Host": "hooks.example:8443",
    }
    async with world() as w, aiohttp.ClientSession() as http:
        reply = await push(http, w, BODY, headers=spoofed)
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        assert got.headers["x-forwarded-for"] == ["127.0.0.1"]
        assert got.headers["x-forwarded-proto"] == ["http"]
        assert got.headers["x-forwarded-host"] == ["hooks.example:8443"]
        assert "x_forwarded_for" not in got.headers


async def test_request_id_is_honoured_when_well_formed(
    w: World, http: aiohttp.ClientSession
) -> None:
    reply = await push(http, w, BODY, headers={"X-Request-Id": "abc-123.XYZ:7_a"})
    assert reply.status == 200, reply.body
    [got] = w.backend.received
    assert got.headers["x-request-id"] == ["abc-123.XYZ:7_a"]


@pytest.mark.parametrize("incoming", [None, "has space", "x" * 129, "a\tb", "é"])
async def test_request_id_is_generated_when_absent_or_malformed(
    incoming: str | None, w: World, http: aiohttp.ClientSession
) -> None:
    headers = {} if incoming is None else {"X-Request-Id": incoming}
    for _ in range(2):
        reply = await push(http, w, BODY, headers=headers)
        assert reply.status == 200, reply.body
    ids = [got.headers["x-request-id"] for got in w.backend.received]
    for one in ids:
        assert len(one) == 1
        assert re.fullmatch(r"[0-9a-f]{32}", one[0]), one
    assert ids[0] != ids[1]


async def test_claims_header_is_base64url_of_the_verified_claims(
    w: World, http: aiohttp.ClientSession
) -> None:
    claims: dict[str, Any] = {"sub": "agent-7", "nested": {"a": [1, 2, {"é": None}]}}
    token = w.token(BODY, **claims)
    reply = await push(http, w, BODY, token=token)
    assert reply.status == 200, reply.body
    [got] = w.backend.received
    [value] = got.headers["x-jwt-claims"]
    assert "=" not in value
    assert re.fullmatch(r"[A-Za-z0-9_-]+", value)
    assert _b64url_json(value) == _b64url_json(token.split(".")[1])
    decoded = _b64url_json(value)
    assert decoded["sub"] == "agent-7"
    assert decoded["nested"] == claims["nested"]
    assert decoded["request_body_sha256"] == body_hash(BODY)


# -- claim values as header values ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain value ~!", "plain value ~!"),
        (42, "42"),
        (-1.5, "-1.5"),
        (True, "true"),
        (None, "null"),
        ([1, "é"], '[1,"\\u00e9"]'),
        ({"k": "v"}, '{"k":"v"}'),
        ("Zoë", '"Zo\\u00eb"'),
        ("日本", '"\\u65e5\\u672c"'),
        ("a\r\nX-Injected: 1", '"a\\r\\nX-Injected: 1"'),
        ("a\nb", '"a\\nb"'),
        ("a\x00b", '"a\\u0000b"'),
        ("a\x7fb", '"a\\u007fb"'),
        ("tab\there", '"tab\\there"'),
        ({"deep": ["\x00", "\x7f", "ü"]}, '{"deep":["\\u0000","\\u007f","\\u00fc"]}'),
    ],
)
async def test_claim_values_become_printable_ascii_headers(value: Any, expected: str) -> None:
    configure = config_with(issuer={"forward_claims": {"role": "X-Jwt-Role", "sub": "X-Jwt-Sub"}})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        claims = claims_for(BODY, w.clock(), sub="s")
        claims["role"] = value  # set after claims_for, which drops None values
        reply = await push(http, w, BODY, token=sign(w.key, claims))
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        assert got.headers["x-jwt-role"] == [expected]
        assert "x-injected" not in got.headers
        assert re.fullmatch(r"[\x20-\x7e]*", expected)


async def test_sub_with_control_characters_is_forwarded_escaped(
    w: World, http: aiohttp.ClientSession
) -> None:
    reply = await push(http, w, BODY, sub="agent\r\n7\x00\x7f")
    assert reply.status == 200, reply.body
    [got] = w.backend.received
    assert got.headers["x-jwt-sub"] == ['"agent\\r\\n7\\u0000\\u007f"']


async def test_claim_over_4096_bytes_is_left_out_of_its_header_and_counted() -> None:
    forward = {"big": "X-Jwt-Big", "edge": "X-Jwt-Edge", "wide": "X-Jwt-Wide", "sub": "X-Jwt-Sub"}
    configure = config_with(issuer={"forward_claims": forward})
    big, edge = "b" * 4097, "e" * 4096
    wide = "é" * 700  # 4202 bytes once escaped as \u00e9: over the limit although 700 characters
    async with world(configure) as w, aiohttp.ClientSession() as http:
        for name, value in (("big", big), ("edge", edge), ("wide", wide)):
            claims = claims_for(BODY, w.clock(), sub="s")
            claims[name] = value
            reply = await push(http, w, BODY, token=sign(w.key, claims))
            assert reply.status == 200, reply.body
        first, second, third = w.backend.received
        assert "x-jwt-big" not in first.headers
        assert first.headers["x-jwt-sub"] == ["s"]
        assert _b64url_json(first.headers["x-jwt-claims"][0])["big"] == big
        assert second.headers["x-jwt-edge"] == [edge]
        assert "x-jwt-wide" not in third.headers
        assert _b64url_json(third.headers["x-jwt-claims"][0])["wide"] == wide
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_claim_headers_omitted_total", issuer="sender") == 2


# -- bodies --------------------------------------------------------------------------------------
async def test_gzip_body_is_hashed_raw_and_forwarded_compressed() -> None:
    plain = b'{"event":"compressed","pad":"' + b"x" * 2000 + b'"}'
    compressed = gzip.compress(plain, mtime=0)
    backend = Backend()
    # The test backend must not decompress either, or it could not see what was forwarded.
    async with serve_app(backend.app(), auto_decompress=False) as backend_url:

        def configure(w: World) -> Any:
            return gateway_config(w.jwks_url, backend_url)

        async with world(configure) as w, aiohttp.ClientSession(auto_decompress=False) as http:
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            reply = await push(http, w, compressed, headers=headers)
            assert reply.status == 200, reply.body
            [got] = backend.received
            assert got.body == compressed
            assert got.header("Content-Encoding") == "gzip"
            # A token bound to the decompressed bytes does not match what was received.
            token = w.token(plain)
            reply = await push(http, w, compressed, token=token, headers=headers)
            assert (reply.status, reply.reason) == (401, "body_hash_mismatch")
            assert len(backend.received) == 1


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def test_chunked_body_within_the_limit_is_forwarded_whole() -> None:
    body = os.urandom(3000)
    async with world(config_with(limits={"max_body_bytes": 3000})) as w:
        async with aiohttp.ClientSession() as http:
            token = w.token(body)
            reply = await push(http, w, body, token=token)  # sized: a control
            assert reply.status == 200, reply.body
            token = w.token(body)
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(w.url + "/hook", data=_chunks(body, 256), headers=headers) as r:
                assert r.status == 200, await r.text()
        assert [got.body for got in w.backend.received] == [body, body]
        # One clean framing towards the backend: the de-chunked bytes with their length.
        assert w.backend.received[1].header("Content-Length") == "3000"
        assert "transfer-encoding" not in w.backend.received[1].headers


async def test_chunked_body_over_the_limit_is_413_and_never_forwarded() -> None:
    body = os.urandom(5000)
    async with world(config_with(limits={"max_body_bytes": 1000})) as w:
        token = w.token(body)
        head = request_bytes(
            "POST", "/hook", {"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"}
        )
        chunked = (
            b"".join(
                f"{len(c):x}\r\n".encode() + c + b"\r\n"
                for c in (body[i : i + 500] for i in range(0, 5000, 500))
            )
            + b"0\r\n\r\n"
        )
        raw = await raw_exchange(w.url, head + chunked)
        assert raw_status(raw) == 413
        assert raw_json(raw)["error"] == "body_too_large"
        assert w.backend.received == []


async def test_chunked_body_over_the_limit_with_a_client_library() -> None:
    body = os.urandom(200_000)
    async with world(config_with(limits={"max_body_bytes": 1000})) as w:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {w.token(body)}"}
            async with http.post(w.url + "/hook", data=_chunks(body, 4096), headers=headers) as r:
                assert r.status == 413
                assert (await r.json())["error"] == "body_too_large"
        assert w.backend.received == []


async def test_content_length_over_the_limit_is_413_without_reading_the_body() -> None:
    async with world(config_with(limits={"max_body_bytes": 1000})) as w:
        token = w.token(b"x" * 100_000)
        # Only the headers are sent: an answer proves the gateway did not wait for the body.
        head = request_bytes(
            "POST", "/hook", {"Authorization": f"Bearer {token}", "Content-Length": "100000"}
        )
        raw = await raw_exchange(w.url, head)
        assert raw_status(raw) == 413
        assert raw_json(raw)["error"] == "body_too_large"
        assert w.backend.received == []


async def test_content_length_over_the_limit_with_the_body_sent() -> None:
    body = os.urandom(300_000)
    async with world(config_with(limits={"max_body_bytes": 1000})) as w:
        async with aiohttp.ClientSession() as http:
            reply = await push(http, w, body)
            assert (reply.status, reply.reason) == (413, "body_too_large")
        assert w.backend.received == []


# -- the backend's answer ------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 201, 202, 400, 404, 410, 422, 429])
async def test_backend_answer_comes_back_unchanged(
    status: int, w: World, http: aiohttp.ClientSession
) -> None:
    w.backend.status = status
    w.backend.response_body = b'{"backend":"says", "status": %d}' % status
    w.backend.response_headers = {
        "X-Backend": "yes",
        "Cache-Control": "no-store",
        "Set-Cookie": "a=b; HttpOnly",
        "Retry-After": "7",
        "Location": "/elsewhere",
    }
    reply = await push(http, w, BODY)
    assert reply.status == status
    assert reply.body == w.backend.response_body
    for name, value in w.backend.response_headers.items():
        assert reply.headers.getall(name) == [value]
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Content-Length"] == str(len(w.backend.response_body))
    assert "WWW-Authenticate" not in reply.headers


async def test_backend_204_comes_back_as_204(w: World, http: aiohttp.ClientSession) -> None:
    w.backend.status = 204
    w.backend.response_body = b""
    w.backend.response_headers = {"X-Backend": "acked"}
    reply = await push(http, w, BODY)
    assert (reply.status, reply.body) == (204, b"")
    assert reply.headers["X-Backend"] == "acked"
    assert len(w.backend.received) == 1


async def test_large_sized_response_is_streamed_back_unchanged(
    w: World, http: aiohttp.ClientSession
) -> None:
    w.backend.response_body = os.urandom(300 * 1024 + 7)
    w.backend.response_headers = {"X-Backend": "big"}
    reply = await push(http, w, BODY)
    assert reply.status == 200
    assert reply.body == w.backend.response_body
    assert reply.headers["Content-Length"] == str(300 * 1024 + 7)
    assert reply.headers["X-Backend"] == "big"


async def test_unsized_streamed_response_comes_back_unchanged() -> None:
    chunks = [os.urandom(100 * 1024) for _ in range(5)]

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=207, headers={"X-Streamed": "1"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for c in chunks:
            await resp.write(c)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stream)
    async with serve_app(app) as backend_url:

        def configure(w: World) -> Any:
            return gateway_config(w.jwks_url, backend_url)

        async with world(configure) as w, aiohttp.ClientSession() as http:
            reply = await push(http, w, BODY)
            assert reply.status == 207
            assert reply.headers["X-Streamed"] == "1"
            assert reply.body == b"".join(chunks)


# -- slow clients --------------------------------------------------------------------------------
async def test_stalled_body_is_408() -> None:
    body = b'{"event":"' + b"s" * 200 + b'"}'
    async with world(config_with(limits={"body_timeout_seconds": 0.5})) as w:
        token = w.token(body)
        head = request_bytes(
            "POST",
            "/hook",
            {"Authorization": f"Bearer {token}", "Content-Length": str(len(body))},
        )
        raw = await raw_exchange(w.url, head + body[:20])  # then nothing more
        assert raw_status(raw) == 408
        assert raw_json(raw)["error"] == "request_timeout"
        assert w.backend.received == []


async def test_dribbled_headers_are_408() -> None:
    async with world(config_with(limits={"header_timeout_seconds": 0.5})) as w:
        head = request_bytes("POST", "/hook", {"X-Padding": "p" * 40, "Content-Length": "0"})
        # One byte every 0.1 s: the headers would take many seconds to complete.
        raw = await raw_exchange(w.url, *[head[i : i + 1] for i in range(len(head))], pause=0.1)
        assert raw_status(raw) == 408
        assert raw_json(raw)["error"] == "request_timeout"
        async with aiohttp.ClientSession() as http:
            m = await scrape(http, w.admin_url)
        reason = {"issuer": "unknown", "outcome": "rejected", "reason": "request_timeout"}
        assert m.value("jwksgate_requests_total", **reason) == 1


async def test_silent_connection_is_408() -> None:
    async with world(config_with(limits={"header_timeout_seconds": 0.5})) as w:
        raw = await raw_exchange(w.url)
        assert raw_status(raw) == 408
        assert raw_json(raw)["error"] == "request_timeout"


async def test_dribbled_headers_on_a_kept_alive_connection_are_408() -> None:
    async with world(config_with(limits={"header_timeout_seconds": 0.5})) as w:
        first = request_bytes("POST", "/hook", {"Content-Length": "0"})  # 401, kept alive
        second = request_bytes("POST", "/hook", {"X-Padding": "p" * 40, "Content-Length": "0"})
        parts = [first] + [second[i : i + 1] for i in range(len(second))]
        raw = await raw_exchange(w.url, *parts, pause=0.1, responses=2)
        assert raw_status(raw) == 401
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)
        assert statuses == [b"401", b"408"]


# -- request targets -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "seen"),
    [
        ("http://evil.example/hook", "/hook"),
        ("http://127.0.0.1:1/hook?x=1", "/hook?x=1"),
        ("https://evil.example:443/", "/"),
    ],
)
async def test_absolute_form_target_is_forwarded_by_its_path(
    target: str, seen: str, w: World
) -> None:
    # RFC 9112 3.2.2 (issue 13 item 10): accepted, the authority ignored, never an open proxy.
    token = w.token(BODY)
    head = request_bytes(
        "POST", target, {"Authorization": f"Bearer {token}", "Content-Length": str(len(BODY))}
    )
    raw = await raw_exchange(w.url, head + BODY)
    assert raw_status(raw) == 200
    assert [r.path_qs for r in w.backend.received] == [seen]


@pytest.mark.parametrize(
    "path",
    [
        "/a/../hook",
        "/./hook",
        "/hook/..",
        "/hook/.",
        "/a/%2e%2e/hook",
        "/a/%2E%2E/hook",
        "/a/.%2e/hook",
        "/a/%2e./hook?x=1",
        "/a/%2e/hook",
    ],
)
async def test_dot_segments_are_400(path: str, w: World) -> None:
    token = w.token(BODY)
    head = request_bytes(
        "POST", path, {"Authorization": f"Bearer {token}", "Content-Length": str(len(BODY))}
    )
    raw = await raw_exchange(w.url, head + BODY)
    assert raw_status(raw) == 400
    assert raw_json(raw)["error"] == "malformed_request"
    assert w.backend.received == []


@pytest.mark.parametrize("path", ["/a/..b/hook", "/.well-known/hook", "/a/...x/b"])
async def test_dots_inside_segments_are_forwarded(
    path: str, w: World, http: aiohttp.ClientSession
) -> None:
    reply = await push(http, w, BODY, path=path)
    assert reply.status == 200, reply.body
    assert [got.path_qs for got in w.backend.received] == [path]


# -- Expect: 100-continue ------------------------------------------------------------------------
async def test_expect_100_continue_sender_is_asked_for_its_body() -> None:
    # A client that waits for "100 Continue" before sending the body (aiohttp's expect100, .NET,
    # curl for large bodies) would otherwise stall until body_timeout and never deliver.
    body = b'{"event":"expecting"}'
    async with world() as w:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            headers = {"Authorization": f"Bearer {w.token(body)}"}
            async with http.post(w.url + "/hook", data=body, headers=headers, expect100=True) as r:
                assert r.status == 200, await r.text()
        [got] = w.backend.received
        assert got.body == body
        assert "expect" not in got.headers


async def test_expect_100_continue_with_a_bad_token_is_refused_before_the_body(w: World) -> None:
    head = request_bytes(
        "POST",
        "/hook",
        {"Authorization": "Bearer a.b.c", "Expect": "100-continue", "Content-Length": "10"},
    )
    raw = await raw_exchange(w.url, head)
    assert raw_status(raw) == 401
    assert w.backend.received == []


async def test_expect_100_continue_on_the_wire() -> None:
    body = b'{"event":"raw-expect"}'
    async with world() as w:
        token = w.token(body)
        head = request_bytes(
            "POST",
            "/hook",
            {
                "Authorization": f"Bearer {token}",
                "Expect": "100-continue",
                "Content-Length": str(len(body)),
            },
        )
        interim = await raw_exchange(w.url, head, responses=1)
        assert raw_status(interim) == 100
        raw = await raw_exchange(w.url, head, body, pause=0.2, responses=2)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", raw) == [b"100", b"200"]
        assert len(w.backend.received) == 1


async def test_static_token_headers_never_reach_the_backend() -> None:
    token = "notification-token-" + "x" * 16

    def configure(w: World) -> object:
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url},
                "issuers": [
                    {"name": "sdk", "profile": "a2a-static-token",
                     "static_token": {"tokens": [token]}},
                ],
            }
        )  # fmt: skip

    async with world(configure) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        headers = {"X-A2A-Notification-Token": token, "A2A-Notification-Token": token}
        async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
            assert resp.status == 200
        [got] = w.backend.received
        assert got.header("X-A2A-Notification-Token") is None
        assert got.header("A2A-Notification-Token") is None
        assert got.header("X-Jwt-Issuer") == "sdk"


async def test_head_keeps_the_backends_content_length(
    w: World, http: aiohttp.ClientSession
) -> None:
    w.backend.response_body = b"x" * 1234
    headers = {"Authorization": f"Bearer {w.token(b'')}"}
    async with http.head(w.url + "/hook", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""
    assert [r.method for r in w.backend.received] == ["HEAD"]
