"""JWKSGATE_EVENT_LOOP: asyncio's loop by default, uvloop (the ``fast`` extra) when asked for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from gateway import eventloop
from gateway.cli import main
from gateway.config import Config
from gateway.errors import ConfigError
from tests.procs import free_ports, gateway_proc
from tests.procs import gateway_config as proc_config
from tests.support import World, gateway_config, refused_port, wait_until, world

uvloop = pytest.importorskip("uvloop")


def test_asyncio_is_the_default_even_with_uvloop_installed_and_uvloop_one_setting_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_factory() is None
    assert eventloop.loop_factory(" ") is None
    assert eventloop.loop_factory("asyncio") is None
    monkeypatch.setenv(eventloop.ENV, "uvloop")
    assert eventloop.loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv(eventloop.ENV, "auto")
    assert eventloop.loop_factory() is uvloop.new_event_loop


def test_uvloop_and_auto_choose_uvloop() -> None:
    for value in ("uvloop", "auto", "UVLOOP"):
        factory = eventloop.loop_factory(value)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()


def test_an_unknown_loop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError):
        eventloop.loop_factory("trio")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        'listen: "127.0.0.1:0"\nadmin_listen: "127.0.0.1:0"\nissuers:\n'
        '  - name: a\n    jwks_url: "http://127.0.0.1:9/jwks.json"\n'
    )
    monkeypatch.setenv(eventloop.ENV, "trio")
    assert main(["run", "--config", str(cfg)]) == 1
    assert "config error: JWKSGATE_EVENT_LOOP" in capsys.readouterr().err


async def _push_and_slowloris() -> tuple[int, int, bytes]:
    def configure(w: World) -> Config:
        return gateway_config(w.jwks_url, w.backend_url, limits={"header_timeout_seconds": 0.3})

    async with world(configure) as w, aiohttp.ClientSession() as http:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        body = b'{"task":"t1"}'
        headers = {"Authorization": f"Bearer {w.token(body)}"}
        async with http.post(w.url + "/hook", data=body, headers=headers) as resp:
            status = resp.status
        again = 0
        async with http.post(w.url + "/hook", data=body, headers=headers) as resp:
            again = resp.status
        host, port = w.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return status, again, answer


def test_the_gateway_serves_on_uvloop() -> None:
    """Forwarding, replay refusal and the header deadline (its own protocol wrapper) on uvloop."""
    status, again, answer = eventloop.run(_push_and_slowloris(), uvloop.new_event_loop)
    assert (status, again) == (200, 409)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
async def test_the_start_line_names_the_event_loop_the_gateway_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    monkeypatch.setenv(eventloop.ENV, choice)
    port, admin = free_ports(2)
    dead = f"http://127.0.0.1:{refused_port()}"
    gw = gateway_proc(tmp_path, proc_config(port, admin, dead + "/jwks.json", dead))
    out = tmp_path / "gateway.out"
    gw.proc.start()
    try:
        await wait_until(lambda: "jwksgate listening on" in out.read_text(), limit=30)
    finally:
        gw.proc.stop()
    started = next(line for line in out.read_text().splitlines() if "listening on" in line)
    assert json.loads(started)["message"].endswith(f", event loop {choice}")
