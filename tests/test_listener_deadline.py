"""The header deadline's timer: one per connection, not one per request.

A kept-alive connection re-arms the deadline for every request; the timer already pending from
an earlier request is moved on when it fires early, never fired at the old deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.config import Config
from gateway.listener import _HeaderDeadline
from tests.httpkit import raw_json, raw_status
from tests.support import World, gateway_config, gateway_config_data, world
from tests.test_hardening_wire import answer, closed, connection, push

TIMEOUT = 1.0


def one_second(w: World) -> Config:
    from gateway.config import parse_config

    data = gateway_config_data(w.jwks_url, w.backend_url)
    data["limits"] = {"header_timeout_seconds": TIMEOUT}
    return parse_config(data)


async def test_kept_alive_requests_share_one_deadline_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduled: list[Any] = []
    loop = asyncio.get_running_loop()
    original = loop.call_at  # call_later goes through it too

    def counting(when: float, callback: Any, *args: Any, **kw: Any) -> Any:
        if getattr(callback, "__func__", None) is _HeaderDeadline._expired:
            scheduled.append(callback)
        return original(when, callback, *args, **kw)

    monkeypatch.setattr(loop, "call_at", counting)
    async with world(one_second) as w, connection(w) as (reader, writer):
        for n in range(20):
            writer.write(push(w, f"/keep/{n}"))
            assert raw_status(await answer(reader)) == 200
    # Well within one deadline: the timer armed for the first request still covers the rest.
    assert len(scheduled) == 1


async def test_a_later_request_gets_its_own_full_deadline() -> None:
    async with world(one_second) as w, connection(w) as (reader, writer):
        writer.write(push(w, "/keep/0"))
        assert raw_status(await answer(reader)) == 200
        await asyncio.sleep(0.6 * TIMEOUT)
        second = push(w, "/keep/1")
        writer.write(second[:20])
        # Past the first request's deadline, well within the second's.
        await asyncio.sleep(0.6 * TIMEOUT)
        writer.write(second[20:])
        assert raw_status(await answer(reader)) == 200
        writer.write(b"POST /hook HTTP/1.1\r\nHost: gw\r\n")  # and nothing more
        late = await answer(reader)
        assert (raw_status(late), raw_json(late)["error"]) == (408, "request_timeout")
        assert await closed(reader)


async def test_a_shorter_deadline_after_a_reload_holds_on_a_kept_alive_connection() -> None:
    def long(w: World) -> Config:
        return gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 60})

    async with world(long) as w, connection(w) as (reader, writer):
        assert w.running is not None
        writer.write(push(w, "/keep/0"))  # the connection's timer is set 60 s ahead
        assert raw_status(await answer(reader)) == 200
        short = gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 0.3})
        await w.running.gateway.reload(short)
        writer.write(b"POST /hook HTTP/1.1\r\nHost: gw\r\n")  # and nothing more
        late = await answer(reader)  # within PATIENCE (8 s), not the old 60 s
        assert (raw_status(late), raw_json(late)["error"]) == (408, "request_timeout")
