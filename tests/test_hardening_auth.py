"""Issue 13, items 2, 4, 6 and 8: what a hostile sender or an unlucky reload could do at the
authentication layer, each through real sockets (a real JWKS server, a real backend, the gateway
on loopback).

- 13.2 client-sent forwarding headers (``Forwarded``, ``X-Real-IP``, ``X-Original-URL`` ...) never
  reach the backend as sent: the gateway's own view replaces them, or they are stripped, unless the
  operator trusts the proxies in front (``forward.trusted_hops``, ``forward.preserve_headers``).
- 13.4 slow bodies on a Standard Webhooks path (unauthenticated until the body arrives) cannot
  take the slots of pushes whose credential verified from the headers.
- 13.6 a reload during a JWKS outage keeps the issuer's last good key set when its key source did
  not change.
- 13.8 every ``webhook-signature`` line and entry counts, bounded in total.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict

from gateway.config import Config, parse_config
from gateway.errors import ConfigError
from gateway.watch import Watcher
from tests.httpkit import Reply, get, host_port, push, request_bytes, send
from tests.support import (
    JwksServer,
    World,
    captured_log,
    gateway_config_data,
    wait_until,
    world,
)

BODY = b'{"event":"hardening"}'
JWKS_PATH = "/.well-known/jwks.json"
SW_RAW = uuid.uuid4().bytes + uuid.uuid4().bytes
SW_SECRET = "whsec_" + base64.b64encode(SW_RAW).decode()
SW_ISSUER = {
    "name": "swh",
    "type": "standard_webhooks",
    "path_prefix": "/swh",
    "standard_webhooks": {"secrets": [SW_SECRET]},
}


def with_sw_issuer(w: World, **top: Any) -> Config:
    data = gateway_config_data(w.jwks_url, w.backend_url, **top)
    data["issuers"].append(SW_ISSUER)
    return parse_config(data)


def sw_signature(msg_id: str, ts: int, body: bytes, secret: bytes = SW_RAW) -> str:
    content = f"{msg_id}.{ts}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest()).decode()


def bogus_signature(i: int) -> str:
    return sw_signature(f"other-{i}", 0, b"", secret=b"not the secret")


async def sw_push(
    http: aiohttp.ClientSession, w: World, signature_lines: list[str], msg_id: str | None = None
) -> Reply:
    msg_id = msg_id or uuid.uuid4().hex
    headers: CIMultiDict[str] = CIMultiDict(
        [("webhook-id", msg_id), ("webhook-timestamp", str(int(w.clock())))]
    )
    for line in signature_lines:
        headers.add("webhook-signature", line)
    return await send(http, w.url + "/swh/hook", body=BODY, headers=headers)


# -- 13.2 forwarding headers ---------------------------------------------------------------------
SPOOFED = {
    "Forwarded": "for=198.51.100.1;host=evil.test;proto=https",
    "X-Forwarded-For": "198.51.100.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.test",
    "X-Real-IP": "198.51.100.1",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Server": "evil.test",
    "True-Client-IP": "198.51.100.1",
    "X-Client-IP": "198.51.100.1",
    "X-Original-URL": "/orders/hook",
    "X-Rewrite-URL": "/orders/hook",
    "X_Original_URL": "/orders/hook",
    "X-Cluster-Client-IP": "198.51.100.1",
    "X-Original-URI": "/orders/hook",
}


SET_XF = ("for", "proto", "host")


async def test_client_sent_forwarding_headers_are_replaced_or_stripped() -> None:
    async with world() as w, aiohttp.ClientSession() as http:
        reply = await push(http, w, BODY, headers={**SPOOFED, "X-Kept": "kept"})
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        host, port = host_port(w.url)
        # What the gateway saw, once each: the peer, its own scheme, the Host asked for.
        assert got.headers["x-forwarded-for"] == [host]
        assert got.headers["x-forwarded-proto"] == ["http"]
        assert got.headers["x-forwarded-host"] == [f"{host}:{port}"]
        assert got.headers["forwarded"] == [f'for={host};host="{host}:{port}";proto=http']
        assert got.headers["x-real-ip"] == [host]
        set_by_gateway = {"forwarded", "x-real-ip", *(f"x-forwarded-{h}" for h in SET_XF)}
        for name in SPOOFED:
            if name.lower() not in set_by_gateway:
                assert name.lower() not in got.headers, name
        assert got.headers["x-kept"] == ["kept"]
        assert got.path_qs == "/hook"


async def test_behind_trusted_proxies_their_chain_is_kept_and_preserved_headers_pass() -> None:
    forward = {"trusted_hops": 1, "preserve_headers": ["x-forwarded-port"]}
    async with (
        world(lambda w: with_sw_issuer(w, forward=forward)) as w,
        aiohttp.ClientSession() as http,
    ):
        # A load balancer appended the client it saw (203.0.113.7) to what the client sent.
        lb = CIMultiDict(
            [
                ("X-Forwarded-For", "198.51.100.1, 203.0.113.7"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "hooks.example"),
                ("X-Forwarded-Port", "443"),
                ("Forwarded", "for=203.0.113.7;proto=https"),
                ("True-Client-IP", "198.51.100.1"),
                ("X-Original-URL", "/orders/hook"),
            ]
        )
        reply = await push(http, w, BODY, headers=lb)
        assert reply.status == 200, reply.body
        [got] = w.backend.received
        host, port = host_port(w.url)
        assert got.headers["x-forwarded-for"] == [f"198.51.100.1, 203.0.113.7, {host}"]
        assert got.headers["x-real-ip"] == ["203.0.113.7"]
        assert got.headers["x-forwarded-proto"] == ["https"]
        assert got.headers["x-forwarded-host"] == ["hooks.example"]
        assert got.headers["forwarded"] == [
            f'for=203.0.113.7;proto=https, for={host};host="{host}:{port}";proto=http'
        ]
        assert got.headers["x-forwarded-port"] == ["443"]
        assert "true-client-ip" not in got.headers
        assert "x-original-url" not in got.headers

        # Straight to the gateway, past the proxy: too short a chain names the peer itself.
        await push(http, w, BODY, headers={"X-Forwarded-For": "198.51.100.1"})
        assert w.backend.received[1].headers["x-real-ip"] == ["198.51.100.1"]
        await push(http, w, BODY)
        assert w.backend.received[2].headers["x-real-ip"] == [host]


def test_preserve_headers_names_only_headers_the_gateway_strips() -> None:
    data = gateway_config_data(
        "https://sender.test/jwks.json",
        "http://127.0.0.1:3000",
        forward={"preserve_headers": ["X-Forwarded-For", "x_original_url", "X-Orignal-URL"]},
    )
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert len(e.value.problems) == 2, e.value.problems
    first, second = e.value.problems
    assert first.startswith('forward.preserve_headers[0]: "X-Forwarded-For" is not a client')
    assert second.startswith("forward.preserve_headers[2]: ")
    assert "did you mean X-Original-URL?" in second
    data["forward"]["preserve_headers"] = ["x_original_url", "X-ORIGINAL-URL"]
    assert parse_config(data).forward.preserve_headers == ("X-Original-URL",)
    data["forward"] = {"trusted_hops": 17}
    with pytest.raises(ConfigError, match=r"forward\.trusted_hops: must be an integer >= 0"):
        parse_config(data)


# -- 13.4 slow unauthenticated bodies ------------------------------------------------------------
@asynccontextmanager
async def slow_bodies(w: World, n: int) -> AsyncIterator[list[asyncio.Task[bytes]]]:
    """``n`` Standard Webhooks requests with plausible headers whose body never finishes; each
    task reads whatever answer the gateway gives that connection."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    readers: list[asyncio.Task[bytes]] = []
    try:
        for i in range(n):
            reader, writer = await asyncio.open_connection(*host_port(w.url))
            conns.append((reader, writer))
            head = {
                "webhook-id": f"slow-{i}",
                "webhook-timestamp": str(int(w.clock())),
                "webhook-signature": bogus_signature(i),
                "Content-Type": "application/json",
                "Content-Length": "100000",
            }
            writer.write(request_bytes("POST", "/swh/hook", head, b'{"partial":'))
            await writer.drain()
            readers.append(asyncio.ensure_future(reader.read(65536)))
        yield readers
    finally:
        for _, writer in conns:
            writer.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def test_slow_unauthenticated_bodies_cannot_starve_verified_pushes() -> None:
    n = 6
    limits = {"max_inflight": n, "body_timeout_seconds": 120}

    def configure(w: World) -> Config:
        return with_sw_issuer(w, limits=limits, shutdown_grace_seconds=1)

    async with world(configure) as w, aiohttp.ClientSession() as http:
        assert w.running is not None
        gw = w.running.gateway
        async with slow_bodies(w, n) as readers:
            # Every slow request is either being held (in flight) or already answered.
            await wait_until(lambda: sum(t.done() for t in readers) + gw.inflight == n)
            reply = await push(http, w, BODY)
            assert reply.status == 200, reply.body
            assert len(w.backend.received) == 1
            answered = [t.result() for t in readers if t.done()]
            assert answered, "no slow body was refused"
            for raw in answered:
                assert raw.startswith(b"HTTP/1.1 503 "), raw[:200]
                assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "overloaded"
            # A quarter of max_inflight (at least one) waits; the rest stays for verified senders.
            assert gw.inflight == max(1, n // 4)


async def test_max_unverified_inflight_sets_the_share_and_cannot_exceed_max_inflight() -> None:
    def configure(w: World) -> Config:
        limits = {"max_inflight": 8, "max_unverified_inflight": 3, "body_timeout_seconds": 120}
        return with_sw_issuer(w, limits=limits, shutdown_grace_seconds=1)

    async with world(configure) as w, aiohttp.ClientSession() as http:
        assert w.running is not None
        gw = w.running.gateway
        async with slow_bodies(w, 5) as readers:
            await wait_until(lambda: sum(t.done() for t in readers) + gw.inflight == 5)
            assert gw.inflight == 3
            assert sum(t.done() for t in readers) == 2
            assert (await push(http, w, BODY)).status == 200
    data = gateway_config_data("https://s.test/j", "http://127.0.0.1:3000")
    data["limits"] = {"max_inflight": 4, "max_unverified_inflight": 5}
    with pytest.raises(ConfigError, match=r"max_unverified_inflight: is more than max_inflight"):
        parse_config(data)


# -- 13.6 reload during a JWKS outage ------------------------------------------------------------
@asynccontextmanager
async def stoppable(jwks: JwksServer) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """``jwks`` served on loopback; ``runner.cleanup()`` stops it (connections then refused)."""
    runner = web.AppRunner(jwks.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}{JWKS_PATH}", runner
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("outage", ["stopped", "failing"])
async def test_reload_during_a_jwks_outage_keeps_the_last_good_key_set(
    tmp_path: Path, outage: str
) -> None:
    jwks = JwksServer()
    path = tmp_path / "config.yaml"
    data: dict[str, Any] = {}
    async with stoppable(jwks) as (jwks_url, runner):

        def configure(w: World) -> Config:
            data.update(gateway_config_data(jwks_url, w.backend_url))
            path.write_text(yaml.safe_dump(data), encoding="utf-8")
            return parse_config(data)

        async with world(configure, jwks=jwks) as w, aiohttp.ClientSession() as http:
            assert w.running is not None
            watcher = Watcher(w.running, str(path))
            assert (await push(http, w, BODY, sub="a-1")).status == 200
            fetches = jwks.fetches
            if outage == "stopped":
                await runner.cleanup()
            else:
                jwks.status = 503
            # Another field of the issuer changes; its JWKS URL and TLS settings do not.
            data["issuers"][0]["forward_claims"] = {"sub": "X-Agent-Sub"}
            data["issuers"][0]["clock_skew_seconds"] = 10
            path.write_text(yaml.safe_dump(data), encoding="utf-8")
            with captured_log() as records:
                assert await watcher.reload("SIGHUP")
            assert w.running.gateway.config.issuers[0].clock_skew_seconds == 10

            reply = await push(http, w, BODY, sub="a-2")
            assert reply.status == 200, reply.body
            assert w.backend.received[-1].header("X-Agent-Sub") == "a-2"  # the new config
            ready = await get(http, w.admin_url + "/readyz")
            assert ready.status == 200, ready.body
            said = [r.getMessage() for r in records]
            kept = [m for m in said if "kept the last good key set" in m]
            assert len(kept) == 1 and kept[0].startswith("issuer sender:"), said
            if outage == "failing":
                assert jwks.fetches == fetches  # kept, not refetched at the reload

            # The kept set is as old as its fetch: max_stale_seconds still bounds it.
            w.clock.advance(86400 + 1)
            stale = await push(http, w, BODY)
            assert stale.outcome == (503, "jwks_unavailable"), stale.body


async def test_reload_to_another_jwks_url_during_an_outage_fetches_the_new_one() -> None:
    """The key source changed: nothing of the old set is kept, whatever the outage."""
    async with world() as w, aiohttp.ClientSession() as http:
        assert w.running is not None
        assert (await push(http, w, BODY)).status == 200
        w.jwks.status = 503
        moved = gateway_config_data(w.jwks_url + "?v=2", w.backend_url)
        with captured_log() as records:
            await w.running.gateway.reload(parse_config(moved))
        assert not [r for r in records if "kept the last good key set" in r.getMessage()]
        reply = await push(http, w, BODY)
        assert reply.outcome == (503, "jwks_unavailable"), reply.body


# -- 13.8 every webhook-signature line and entry -------------------------------------------------
async def test_standard_webhooks_reads_every_signature_line_and_entry() -> None:
    async with world(with_sw_issuer) as w, aiohttp.ClientSession() as http:
        now = int(w.clock())

        def good(msg_id: str) -> str:
            return sw_signature(msg_id, now, BODY)

        # On the second header line.
        reply = await sw_push(http, w, [bogus_signature(0), good("m-line2")], "m-line2")
        assert reply.status == 200, reply.body
        # The 17th entry of one line.
        many = " ".join([*(bogus_signature(i) for i in range(16)), good("m-17th")])
        reply = await sw_push(http, w, [many], "m-17th")
        assert reply.status == 200, reply.body
        # Spread over lines, 32 entries in all: the bound, not the position, decides.
        lines = [" ".join(bogus_signature(10 * j + i) for i in range(10)) for j in range(3)]
        reply = await sw_push(http, w, [*lines, f"{bogus_signature(99)} {good('m-32')}"], "m-32")
        assert reply.status == 200, reply.body
        assert len(w.backend.received) == 3

        # 33 entries, or more signature bytes than any rotation needs: refused from the headers.
        reply = await sw_push(http, w, [*lines, " ".join(bogus_signature(i) for i in range(3))])
        assert reply.outcome == (401, "malformed_token"), reply.body
        assert "more than 32 signatures" in reply.json()["detail"]
        long_lines = ["v1," + "A" * 5000, "v1," + "B" * 5000]
        reply = await sw_push(http, w, long_lines)
        assert reply.outcome == (401, "malformed_token"), reply.body
        assert len(w.backend.received) == 3


async def test_standard_webhooks_refuses_a_repeated_id_or_timestamp() -> None:
    async with world(with_sw_issuer) as w, aiohttp.ClientSession() as http:
        now = str(int(w.clock()))
        for name, second in (("webhook-id", "m-other"), ("webhook-timestamp", now)):
            headers: CIMultiDict[str] = CIMultiDict(
                [("webhook-id", "m-dup"), ("webhook-timestamp", now)]
            )
            headers.add(name, second)
            headers.add("webhook-signature", sw_signature("m-dup", int(now), BODY))
            reply = await send(http, w.url + "/swh/hook", body=BODY, headers=headers)
            assert reply.outcome == (401, "malformed_token"), (name, reply.body)
            assert "appears more than once" in reply.json()["detail"]
        assert w.backend.received == []


async def test_slow_provider_webhook_bodies_wait_in_the_unauthenticated_pool_too() -> None:
    # A provider's signature (GitLab's token too) is checked with the body: until it has arrived
    # the request is unauthenticated, like a Standard Webhooks one.
    n = 6
    github = {
        "name": "gh",
        "type": "github",
        "path_prefix": "/gh",
        "github": {"secrets": ["a-github-secret-of-some-length"]},
    }

    def configure(w: World) -> Config:
        data = gateway_config_data(
            w.jwks_url,
            w.backend_url,
            limits={"max_inflight": n, "body_timeout_seconds": 120},
            shutdown_grace_seconds=1,
        )
        data["issuers"].append(github)
        return parse_config(data)

    async with world(configure) as w, aiohttp.ClientSession() as http:
        assert w.running is not None
        gw = w.running.gateway
        conns = []
        try:
            for i in range(n):
                _, writer = await asyncio.open_connection(*host_port(w.url))
                conns.append(writer)
                head = {
                    "X-Hub-Signature-256": "sha256=" + "0" * 64,
                    "X-GitHub-Delivery": f"slow-{i}",
                    "X-GitHub-Event": "push",
                    "Content-Length": "100000",
                }
                writer.write(request_bytes("POST", "/gh/hook", head, b'{"partial":'))
                await writer.drain()
            await wait_until(lambda: gw.inflight == max(1, n // 4))
            reply = await push(http, w, BODY)
            assert reply.status == 200, reply.body
            assert gw.inflight == max(1, n // 4)
        finally:
            for writer in conns:
                writer.close()
