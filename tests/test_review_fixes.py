"""Regression tests for defects found in review: each fails on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.replay import MemoryReplayStore
from tests.support import FakeClock, World, gateway_config, wait_until, world

BODY = b'{"event":"x"}'


@pytest.mark.parametrize(
    "path", ["/billing/..%2Forders/hook", "/billing/%2e%2e%2forders/hook", "/b/..%5Co", "/a\\b"]
)
async def test_escaped_slashes_in_the_path_are_refused(path: str) -> None:
    async with world() as w, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {w.token(BODY)}"}
        async with http.post(w.url + path, data=BODY, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "malformed_request"
        assert w.backend.received == []


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


async def test_a_full_memory_store_sweeps_at_most_once_a_second() -> None:
    clock = FakeClock(1000.0)
    store = MemoryReplayStore(max_entries=3, clock=clock)
    sweeps = 0
    original = store._sweep_all

    def counting(now: float) -> None:
        nonlocal sweeps
        sweeps += 1
        original(now)

    store._sweep_all = counting  # type: ignore[method-assign]
    for i in range(3):
        assert await store.reserve(bytes([i]) * 32, 60.0)
    for i in range(50):
        with pytest.raises(Exception, match="full"):
            await store.reserve(bytes([100 + i]) * 32, 60.0)
    assert sweeps == 1
    clock.advance(61)  # the entries expire; the next sweep (a second later) frees them
    assert await store.reserve(b"\x01" * 32 + b"new", 60.0)
    assert sweeps == 2


def test_shutdown_grace_and_listen_need_a_restart() -> None:
    from gateway.runtime import RESTART_ONLY

    assert "shutdown_grace_seconds" in RESTART_ONLY and "listen" in RESTART_ONLY


async def test_header_timeout_follows_a_reload() -> None:
    def configure(w: World) -> object:
        return gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 30})

    async with world(configure) as w:  # type: ignore[arg-type]
        assert w.running is not None
        gw = w.running.gateway
        new = gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 0.2})
        await gw.reload(new)
        host, port = w.url.removeprefix("http://").split(":")
        import asyncio

        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # never finished
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")


async def test_an_unexpected_reload_error_is_a_failed_reload_not_a_dead_watcher(
    tmp_path: Path,
) -> None:
    from gateway.watch import Watcher

    cfg = tmp_path / "config.yaml"
    async with world() as w:
        assert w.running is not None
        gw = w.running.gateway
        cfg.write_text(json.dumps(yaml_data(w)))

        async def broken(_: object) -> None:
            raise RuntimeError("simulated failure inside reload")

        gw.reload = broken  # type: ignore[method-assign, assignment]
        watcher = Watcher(w.running, str(cfg), interval=0.05)
        assert await watcher.reload("test") is False
        exposition = gw.metrics.exposition().decode()
        assert 'jwksgate_config_reloads_total{result="failure"} 1.0' in exposition


def yaml_data(w: World) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "upstream": {"url": w.backend_url},
        "issuers": [{"name": "sender", "issuer": "https://sender.test", "jwks_url": w.jwks_url}],
    }


async def test_kidless_issuer_follows_a_key_rotation() -> None:
    from tests.support import JwksServer, SigningKey, claims_for, sign

    jwks = JwksServer()
    first = jwks.add_key(kid=None)

    def configure(w: World) -> object:
        return gateway_config(
            w.jwks_url,
            w.backend_url,
            issuer={"require_kid": False, "replay_key": "token", "require_claims": ["iat"]},
        )

    async with world(configure, jwks=jwks) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]

        async def push(key: SigningKey) -> tuple[int, str]:
            token = sign(key, claims_for(BODY, w.clock()), omit_kid=True)
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                return resp.status, answer.get("error", "") if isinstance(answer, dict) else ""

        assert (await push(first))[0] == 200
        fetches = jwks.fetches
        rotated = jwks.add_key(kid=None)  # the sender rotates: a new key, signs with it
        assert await push(rotated) == (401, "bad_signature")  # within the refetch interval
        assert jwks.fetches == fetches
        w.clock.advance(11)
        assert (await push(rotated))[0] == 200  # one refetch, then the new key verifies
        assert jwks.fetches == fetches + 1
        w.clock.advance(11)
        jwks.status = 500
        again = jwks.add_key(kid=None)
        assert await push(again) == (503, "jwks_unavailable")  # cannot know: not a 401


async def test_replays_are_refused_across_entries_for_the_same_sender() -> None:
    # Two issuer entries for one sender (same iss) on two paths: one jti space, not two.
    def configure(w: World) -> object:
        entry = {"issuer": "https://sender.test", "jwks_url": w.jwks_url}
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url},
                "issuers": [
                    {"name": "a", "path_prefix": "/a", **entry},
                    {"name": "b", "path_prefix": "/b", **entry},
                ],
            }
        )

    async with world(configure) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {w.token(BODY)}"}
        statuses = []
        for path in ("/a/hook", "/a/hook", "/b/hook"):
            async with http.post(w.url + path, data=BODY, headers=headers) as resp:
                statuses.append(resp.status)
        assert statuses == [200, 409, 409]
        assert len(w.backend.received) == 1


async def test_head_keeps_the_backends_content_length() -> None:
    async with world() as w, aiohttp.ClientSession() as http:
        w.backend.response_body = b"x" * 1234
        headers = {"Authorization": f"Bearer {w.token(b'')}"}
        async with http.head(w.url + "/hook", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == "1234"
            assert await resp.read() == b""
        assert [r.method for r in w.backend.received] == ["HEAD"]


async def test_a_pipelined_request_gets_its_own_header_deadline() -> None:
    import asyncio

    from tests.test_delivery import GatedBackend

    backend = GatedBackend()

    def configure(w: World) -> object:
        return gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 0.3})

    async with world(configure, backend=backend) as w:  # type: ignore[arg-type]
        host, port = w.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        token = w.token(BODY)
        first = (
            f"POST /hook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        writer.write(first)
        await wait_until(lambda: backend.arrived == 1)
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # pipelined, never finished
        await asyncio.sleep(0.1)
        backend.gate.set()
        # The first answer, then a 408 for the dribbling second one (not the 75 s keep-alive).
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 408" in answer


async def test_connections_beyond_the_bound_get_503_at_once() -> None:
    import asyncio

    def configure(w: World) -> object:
        return gateway_config(w.jwks_url, w.backend_url, limits={"max_connections": 2})

    async with world(configure) as w, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        host, port = w.url.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        await wait_until(lambda: len(w.running.server_guards()) == 2)  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))
        answer = await asyncio.wait_for(reader.read(), 10)  # answered and closed at once
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: 1" in answer and b'"overloaded"' in answer
        for _, held_writer in held:
            held_writer.close()
        await wait_until(lambda: len(w.running.server_guards()) == 0)  # type: ignore[union-attr]
        headers = {"Authorization": f"Bearer {w.token(BODY)}"}
        async with http.post(w.url + "/hook", data=BODY, headers=headers) as resp:
            assert resp.status == 200
        async with http.get(w.admin_url + "/metrics") as resp:
            text = await resp.text()
        assert 'reason="overloaded"} 1.0' in text
