"""Review finding on the unauthenticated body pool (review1): it is one pool for every issuer
whose credential covers the body, so slow bodies sent to one issuer's path (with a signature
header of the right shape, which anyone can forge) refuse a valid push of another issuer.
GitHub does not redeliver a failed delivery by itself: the push is lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from gateway.config import parse_config, read_files
from gateway.lifecycle import run_gateway
from tests.httpkit import host_port
from tests.support import FakeClock, serve_app
from tests.test_providers_e2e import ReVerifyingBackend, issuers, new_id
from tests.test_review1_providers import github_headers


async def test_slow_bodies_on_one_issuer_do_not_refuse_another_issuers_valid_push() -> None:
    backend = ReVerifyingBackend()
    async with serve_app(backend.app()) as backend_url:
        data: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "upstream": {"url": backend_url, "timeout_seconds": 5},
            "limits": {"max_inflight": 8, "max_unverified_inflight": 2},
            "issuers": issuers(),
        }
        config = read_files(parse_config(data))
        async with run_gateway(config, clock=FakeClock()) as running:
            host, port = host_port(running.url)
            writers = []
            try:
                for _ in range(2):
                    # A Stripe-shaped request whose body never comes (t= in the window).
                    now = int(time.time())
                    _r, w = await asyncio.open_connection(host, port)
                    w.write(
                        f"POST /stripe/strip HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n"
                        f"Stripe-Signature: t={now},v1={'0' * 64}\r\n\r\n{{".encode()
                    )
                    await w.drain()
                    writers.append(w)
                async with aiohttp.ClientSession() as http:
                    # Wait (by observation, not by time) until both wait for their body: a
                    # whole Stripe-shaped request is then refused 503 instead of 401.
                    for _ in range(200):
                        async with http.post(
                            running.url + "/stripe/strip",
                            data=b"{}",
                            headers={"Stripe-Signature": f"t={now},v1={'0' * 64}"},
                        ) as probe:
                            if probe.status == 503:
                                break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("the slow bodies never filled the pool")
                body = b'{"zen": "x", "n": "' + new_id().encode() + b'"}'
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        running.url + "/github/strip",
                        data=body,
                        headers=github_headers(body, new_id()),
                    ) as resp,
                ):
                    assert resp.status == 200, await resp.text()
            finally:
                for w in writers:
                    w.close()
                    with contextlib.suppress(ConnectionError):
                        await w.wait_closed()
