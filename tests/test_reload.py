"""Live config reload (issue 5, item 4): a changed config file (rewritten, or swapped the way a
Kubernetes ConfigMap is, by symlink) or SIGHUP loads, validates and swaps the config atomically;
keys of unchanged issuers are kept, new issuers are fetched before the swap, requests in flight
finish under the old config, and an invalid or restart-only change is refused with a log line and
``jwksgate_config_reloads_total{result="failure"}`` while the old config stays in force.

Files are replaced atomically (temporary file + rename), as editors and the kubelet do, so the
watcher never reads half a file; a backend that must hold a request waits on an event, not a
delay, so the test decides when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web

from gateway.config import Config, load_config
from gateway.watch import Watcher
from tests.httpkit import Reply, get, host_port, request_bytes, scrape, send
from tests.support import (
    Backend,
    JwksServer,
    World,
    captured_log,
    claims_for,
    free_port,
    gateway_config,
    gateway_config_data,
    refused_port,
    serve_app,
    sign,
    wait_until,
    world,
)

ROOT = Path(__file__).resolve().parent.parent
JWKS_PATH = "/.well-known/jwks.json"
BODY = b'{"event":"config.changed"}'
RELOADS = "jwksgate_config_reloads_total"
TIMEOUT = 10.0


# -- helpers --------------------------------------------------------------------------------------
def base_data(jwks_url: str, backend_url: str) -> dict[str, Any]:
    """The YAML of ``support.gateway_config``'s default config, as a file would hold it."""
    return gateway_config_data(jwks_url, backend_url)


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def errors(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records if r.levelno >= logging.ERROR)


async def reload_counts(http: aiohttp.ClientSession, admin_url: str) -> tuple[float, float]:
    metrics = await scrape(http, admin_url)
    return metrics.get(RELOADS, result="success"), metrics.get(RELOADS, result="failure")


async def wait_reloads(
    http: aiohttp.ClientSession,
    admin_url: str,
    *,
    success: float,
    failure: float,
    limit: float = TIMEOUT,
) -> None:
    """Poll /metrics until the reload counters read exactly (success, failure)."""
    deadline = time.monotonic() + limit
    counts = await reload_counts(http, admin_url)
    while counts != (success, failure):
        if time.monotonic() > deadline:
            raise AssertionError(f"reloads (success, failure) = {counts}, not {success, failure}")
        await asyncio.sleep(0.02)
        counts = await reload_counts(http, admin_url)


@dataclass
class Reloading:
    """A world whose config comes from a file on disk, watched by a ``Watcher`` task."""

    w: World
    watcher: Watcher
    path: Path
    data: dict[str, Any]
    write: Callable[[dict[str, Any]], None]

    @property
    def admin_url(self) -> str:
        return self.w.admin_url

    def gateway_config(self) -> Config:
        assert self.w.running is not None
        return self.w.running.gateway.config

    async def push(
        self, http: aiohttp.ClientSession, path: str = "/hook", token: str | None = None
    ) -> Reply:
        token = token or self.w.token(BODY, sub="agent-9")
        return await send(http, self.w.url + path, body=BODY, token=token)


@asynccontextmanager
async def reloading(
    path: Path,
    write: Callable[[dict[str, Any]], None] | None = None,
    *,
    backend: Backend | None = None,
) -> AsyncIterator[Reloading]:
    writer: Callable[[dict[str, Any]], None] = write or (lambda d: write_atomically(path, d))
    data: dict[str, Any] = {}

    def configure(w: World) -> Config:
        data.update(base_data(w.jwks_url, w.backend_url))
        writer(data)
        return load_config(path)

    async with world(configure, backend=backend) as w:
        assert w.running is not None
        watcher = Watcher(w.running, str(path), interval=0.05)
        task = asyncio.ensure_future(watcher.run())
        try:
            yield Reloading(w, watcher, path, data, writer)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- (a) a new issuer ---------------------------------------------------------------------------
async def test_added_issuer_is_fetched_and_accepted_and_the_others_keep_their_keys(
    tmp_path: Path,
) -> None:
    second = JwksServer()
    second_key = second.add_key(kty="EC")
    async with (
        serve_app(second.app()) as second_base,
        reloading(tmp_path / "config.yaml") as r,
        aiohttp.ClientSession() as http,
    ):
        assert r.w.running is not None
        gw = r.w.running.gateway
        first_cache = gw.caches["sender"]
        first_fetches = r.w.jwks.fetches
        assert first_fetches == 1

        def second_token() -> str:
            claims = claims_for(BODY, r.w.clock(), issuer="https://second.test", sub="s-1")
            return sign(second_key, claims)

        before = await r.push(http, "/second/hook", second_token())
        assert before.status == 401 and before.reason == "unknown_issuer", before.body
        assert second.fetches == 0

        data = json.loads(json.dumps(r.data))
        data["issuers"].append(
            {
                "name": "second",
                "issuer": "https://second.test",
                "jwks_url": second_base + JWKS_PATH,
                "algorithms": ["ES256"],
                "path_prefix": "/second",
                "forward_claims": {"sub": "X-Second-Sub"},
            }
        )
        r.write(data)
        await wait_reloads(http, r.admin_url, success=1, failure=0)

        # The new issuer's keys were fetched before the swap: its first push is accepted at once.
        assert gw.caches["second"].ready()
        assert second.fetches == 1
        reply = await r.push(http, "/second/hook", second_token())
        assert reply.status == 200, reply.body
        got = r.w.backend.received[-1]
        assert got.path_qs == "/second/hook"
        assert got.header("X-Jwt-Issuer") == "second"
        assert got.header("X-Second-Sub") == "s-1"

        # The first issuer: the same cache object, not refetched, still accepting.
        assert gw.caches["sender"] is first_cache
        assert (await r.push(http)).status == 200
        assert r.w.jwks.fetches == first_fetches
        metrics = await scrape(http, r.admin_url)
        fetches = "jwksgate_jwks_fetches_total"
        assert metrics.value(fetches, issuer="sender", result="success") == 1
        assert metrics.value(fetches, issuer="second", result="success") == 1
        assert metrics.value(RELOADS, result="success") == 1
        assert metrics.get(RELOADS, result="failure") == 0
        assert len(r.w.backend.received) == 2


# -- (b) an invalid file ------------------------------------------------------------------------
async def test_invalid_file_is_refused_and_the_old_config_stays(tmp_path: Path) -> None:
    async with reloading(tmp_path / "config.yaml") as r, aiohttp.ClientSession() as http:
        original = r.gateway_config()
        assert (await r.push(http)).status == 200

        unknown_key = json.loads(json.dumps(r.data))
        unknown_key["issuers"][0]["jwks_ttl"] = 60
        bad_url = json.loads(json.dumps(r.data))
        bad_url["issuers"][0]["jwks_url"] = "ftp://sender.test/jwks.json"
        cases = [
            (unknown_key, "issuers[0].jwks_ttl: unknown key"),
            (bad_url, "issuers[0].jwks_url: must be an http(s) URL"),
        ]
        for n, (data, problem) in enumerate(cases, start=1):
            with captured_log() as records:
                r.write(data)
                await wait_reloads(http, r.admin_url, success=0, failure=n)
            logged = errors(records)
            assert "refused, old config kept" in logged, logged
            assert problem in logged, logged
            assert r.gateway_config() is original
            reply = await r.push(http)
            assert reply.status == 200, reply.body

        # Not even valid YAML: refused the same way, the line and column named.
        with captured_log() as records:
            tmp = r.path.with_name(".broken")
            tmp.write_text("issuers: [\n  - name: sender\n", encoding="utf-8")
            os.replace(tmp, r.path)
            await wait_reloads(http, r.admin_url, success=0, failure=3)
        assert "not valid YAML (line" in errors(records), errors(records)
        assert r.gateway_config() is original
        assert (await r.push(http)).status == 200
        assert len(r.w.backend.received) == 4


# -- (c) a restart-only section -----------------------------------------------------------------
async def test_change_of_a_restart_only_section_is_refused(tmp_path: Path) -> None:
    async with reloading(tmp_path / "config.yaml") as r, aiohttp.ClientSession() as http:
        original = r.gateway_config()
        moved = json.loads(json.dumps(r.data))
        moved["listen"] = f"127.0.0.1:{refused_port()}"
        moved["issuers"][0]["forward_claims"] = {"sub": "X-Moved-Sub"}
        with captured_log() as records:
            r.write(moved)
            await wait_reloads(http, r.admin_url, success=0, failure=1)
        assert "listen: a change here needs a restart" in errors(records), errors(records)
        # Refused whole: not even the part that could have changed live.
        assert r.gateway_config() is original
        assert (await r.push(http)).status == 200
        assert r.w.backend.received[-1].header("X-Jwt-Sub") == "agent-9"
        assert r.w.backend.received[-1].header("X-Moved-Sub") is None

        # The same change without the listener is taken: the watcher goes on after a refusal.
        moved["listen"] = r.data["listen"]
        r.write(moved)
        await wait_reloads(http, r.admin_url, success=1, failure=1)
        assert (await r.push(http)).status == 200
        assert r.w.backend.received[-1].header("X-Moved-Sub") == "agent-9"


# -- (d) requests in flight -----------------------------------------------------------------------
@dataclass
class HeldBackend(Backend):
    """Records each request at once, then holds its answer until ``gate`` is set."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def hold(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            await self.gate.wait()
            return response

        app.middlewares.append(hold)
        return app


async def test_request_in_flight_finishes_under_the_old_upstream(tmp_path: Path) -> None:
    backend_a = HeldBackend(response_body=b'{"backend":"A"}')
    backend_b = Backend(response_body=b'{"backend":"B"}')
    async with (
        serve_app(backend_b.app()) as b_url,
        reloading(tmp_path / "config.yaml", backend=backend_a) as r,
        aiohttp.ClientSession() as http,
    ):
        in_flight = asyncio.ensure_future(r.push(http))
        try:
            await wait_until(lambda: len(backend_a.received) == 1, TIMEOUT)

            to_b = json.loads(json.dumps(r.data))
            to_b["upstream"]["url"] = b_url
            r.write(to_b)
            await wait_reloads(http, r.admin_url, success=1, failure=0)
            assert r.gateway_config().upstream.url == b_url

            # A new push goes to B while the first one is still held at A.
            reply = await r.push(http)
            assert reply.status == 200, reply.body
            assert reply.body == b'{"backend":"B"}'
            assert not in_flight.done()
        finally:
            backend_a.gate.set()
        async with asyncio.timeout(TIMEOUT):
            first = await in_flight
        assert first.status == 200, first.body
        assert first.body == b'{"backend":"A"}'
        assert len(backend_a.received) == 1
        assert len(backend_b.received) == 1


async def test_request_whose_body_is_still_arriving_keeps_the_config_it_started_with(
    tmp_path: Path,
) -> None:
    backend_a = Backend(response_body=b'{"backend":"A"}')
    backend_b = Backend(response_body=b'{"backend":"B"}')
    async with (
        serve_app(backend_b.app()) as b_url,
        reloading(tmp_path / "config.yaml", backend=backend_a) as r,
        aiohttp.ClientSession() as http,
    ):
        assert r.w.running is not None
        gw = r.w.running.gateway
        host, port = host_port(r.w.url)
        headers = {
            "Authorization": f"Bearer {r.w.token(BODY)}",
            "Content-Type": "application/json",
            "Content-Length": str(len(BODY)),
        }
        reader, writer = await asyncio.open_connection(host, port)
        try:
            # Headers and half the body: the request has started (under the first config).
            writer.write(request_bytes("POST", "/hook", headers, BODY[:5]))
            await writer.drain()
            await wait_until(lambda: gw.inflight == 1, TIMEOUT)

            to_b = json.loads(json.dumps(r.data))
            to_b["upstream"]["url"] = b_url
            r.write(to_b)
            await wait_reloads(http, r.admin_url, success=1, failure=0)

            writer.write(BODY[5:])
            await writer.drain()
            async with asyncio.timeout(TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert [got.body for got in backend_a.received] == [BODY]
        assert backend_b.received == []
        reply = await r.push(http)
        assert reply.body == b'{"backend":"B"}'
        assert len(backend_b.received) == 1


# -- (e) a ConfigMap volume -----------------------------------------------------------------------
def configmap_writer(directory: Path) -> Callable[[dict[str, Any]], None]:
    """Writes the way the kubelet updates a ConfigMap volume: each version in its own
    ``..<version>`` directory, ``..data`` a symlink to the current one swapped by rename, and
    ``config.yaml -> ..data/config.yaml`` never touched."""
    versions: list[Path] = []

    def write(data: dict[str, Any]) -> None:
        version = directory / f"..v{len(versions) + 1}"
        version.mkdir(parents=True)
        (version / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        link = directory / "..data"
        tmp = directory / "..data_tmp"
        os.symlink(version.name, tmp)
        os.replace(tmp, link)
        if not (directory / "config.yaml").is_symlink():
            os.symlink("..data/config.yaml", directory / "config.yaml")
        for old in versions:
            shutil.rmtree(old)
        versions[:] = [version]

    return write


async def test_configmap_symlink_swap_is_reloaded(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    path = volume / "config.yaml"
    async with (
        reloading(path, configmap_writer(volume)) as r,
        aiohttp.ClientSession() as http,
    ):
        assert os.readlink(path) == "..data/config.yaml"
        assert os.readlink(volume / "..data") == "..v1"
        assert (await r.push(http)).status == 200
        assert r.w.backend.received[-1].header("X-Jwt-Sub") == "agent-9"

        v2 = json.loads(json.dumps(r.data))
        v2["issuers"][0]["forward_claims"] = {"sub": "X-Subject"}
        r.write(v2)
        assert os.readlink(volume / "..data") == "..v2"
        assert not (volume / "..v1").exists()
        await wait_reloads(http, r.admin_url, success=1, failure=0)
        assert (await r.push(http)).status == 200
        assert r.w.backend.received[-1].header("X-Subject") == "agent-9"
        assert r.w.backend.received[-1].header("X-Jwt-Sub") is None


# -- (f) a real process and SIGHUP ----------------------------------------------------------------
def start_gateway(config_path: Path, stdout: TextIO, stderr: TextIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
        cwd=ROOT,
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_real_process_reloads_on_sighup_and_refuses_an_invalid_file(
    tmp_path: Path,
) -> None:
    jwks, backend = JwksServer(), Backend()
    key = jwks.add_key()
    path = tmp_path / "config.yaml"
    err_path = tmp_path / "stderr.log"
    async with (
        serve_app(jwks.app()) as jwks_base,
        serve_app(backend.app()) as backend_url,
        aiohttp.ClientSession() as http,
    ):
        port, admin_port = free_port(), free_port()
        data = base_data(jwks_base + JWKS_PATH, backend_url)
        data["listen"] = f"127.0.0.1:{port}"
        data["admin_listen"] = f"127.0.0.1:{admin_port}"
        data["shutdown_grace_seconds"] = 2
        write_atomically(path, data)
        url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"

        def stderr_text() -> str:  # the log lines are on stdout, startup errors on stderr
            return "".join(
                p.read_text(encoding="utf-8", errors="replace")
                for p in (tmp_path / "stdout.log", err_path)
            )

        async def wait_for(what: str, check: Callable[[], Any]) -> None:
            deadline = time.monotonic() + 20.0
            while True:
                assert proc.poll() is None, f"gateway exited ({proc.returncode}): {stderr_text()}"
                with contextlib.suppress(aiohttp.ClientError):
                    if await check():
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} did not happen: {stderr_text()}")
                await asyncio.sleep(0.05)

        async def pushed() -> Reply:
            token = sign(key, claims_for(BODY, time.time(), sub="proc"))
            return await send(http, url + "/hook", body=BODY, token=token)

        async def counts_are(success: float, failure: float) -> bool:
            return await reload_counts(http, admin_url) == (success, failure)

        with (tmp_path / "stdout.log").open("w") as out, err_path.open("w") as err:
            proc = start_gateway(path, out, err)
        try:

            async def ready() -> bool:
                return (await get(http, admin_url + "/readyz")).status == 200

            await wait_for("readiness", ready)
            assert (await pushed()).status == 200
            assert await counts_are(0, 0)

            # SIGHUP with the file unchanged: only the signal can cause this reload.
            proc.send_signal(signal.SIGHUP)
            await wait_for("the SIGHUP reload", lambda: counts_are(1, 0))
            metrics = (await get(http, admin_url + "/metrics")).body.decode()
            assert f'{RELOADS}{{result="success"}} 1.0' in metrics
            assert (await pushed()).status == 200

            bad = json.loads(json.dumps(data))
            bad["upstream"]["retries"] = 3
            write_atomically(path, bad)
            await wait_for("the refused reload", lambda: counts_are(1, 1))
            assert "upstream.retries: unknown key" in stderr_text()
            reply = await pushed()
            assert reply.status == 200, reply.body
            assert jwks.fetches == 1
            assert len(backend.received) == 3

            proc.send_signal(signal.SIGTERM)
            # Bounded: TimeoutExpired fails the test, and the process is killed below.
            returncode = await asyncio.to_thread(proc.wait, 20.0)
            assert returncode == 0, stderr_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


async def test_rotating_a_mounted_token_file_reloads_without_touching_the_config(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "a2a-token"
    first, second = "first-token-" + "a" * 16, "second-token-" + "b" * 16
    token_file.write_text(first + "\n")
    async with reloading(tmp_path / "config.yaml") as r, aiohttp.ClientSession() as http:
        static = {
            "name": "a2a-sdk",
            "profile": "a2a-static-token",
            "path_prefix": "/a2a",
            "static_token": {"token_files": [str(token_file)]},
        }
        r.data["issuers"] = [*r.data["issuers"], static]
        r.write(r.data)
        await wait_reloads(http, r.admin_url, success=1, failure=0)

        async def status(token: str) -> int:
            headers = {"X-A2A-Notification-Token": token}
            async with http.post(r.w.url + "/a2a/notify", data=BODY, headers=headers) as resp:
                return resp.status

        assert await status(first) == 200
        token_file.write_text(second + "\n")  # the Secret rotates; config.yaml is unchanged
        await wait_reloads(http, r.admin_url, success=2, failure=0)
        assert await status(second) == 200
        assert await status(first) == 401


async def test_any_failure_to_send_is_a_retryable_502_and_the_token_is_kept(
    tmp_path: Path,
) -> None:
    # A closed client session (what a too-early close of a replaced upstream would cause) used
    # to surface as a 500 after the reservation was kept: the retry got 409 and the push was lost.
    async with reloading(tmp_path / "config.yaml") as r, aiohttp.ClientSession() as http:
        assert r.w.running is not None
        gw = r.w.running.gateway
        await gw.upstream.close()
        token = r.w.token(BODY, sub="agent-9")
        reply = await r.push(http, token=token)
        assert reply.outcome == (502, "upstream_unavailable")
        r.data["upstream"] = {**r.data["upstream"], "connect_timeout_seconds": 4}
        r.write(r.data)  # a new upstream section: a new client session
        await wait_reloads(http, r.admin_url, success=1, failure=0)
        assert (await r.push(http, token=token)).status == 200
        assert (await r.push(http, token=token)).outcome == (409, "replayed")


async def test_a_replaced_upstream_is_closed_only_when_its_last_request_is_done() -> None:
    from gateway.config import UpstreamConfig
    from gateway.runtime import Runtime, _close_when_unused
    from gateway.upstream import Upstream

    upstream = Upstream(UpstreamConfig())
    old = Runtime(config=None, caches={}, upstream=upstream, gateway_headers=frozenset())  # type: ignore[arg-type]
    old.users = 1
    retired = {upstream}
    closer = asyncio.ensure_future(_close_when_unused(old, 30.0, retired))
    await asyncio.sleep(0.5)
    assert not upstream.closed  # a request started under `old` is still running
    old.users = 0
    await asyncio.wait_for(closer, 5)
    assert upstream.closed and retired == set()


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
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # never finished
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")


async def test_an_unexpected_reload_error_is_a_failed_reload_not_a_dead_watcher(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.yaml"
    async with world() as w:
        assert w.running is not None
        gw = w.running.gateway
        cfg.write_text(json.dumps(base_data(w.jwks_url, w.backend_url)))

        async def broken(_: object) -> None:
            raise RuntimeError("simulated failure inside reload")

        gw.reload = broken  # type: ignore[method-assign, assignment]
        watcher = Watcher(w.running, str(cfg), interval=0.05)
        assert await watcher.reload("test") is False
        exposition = gw.metrics.exposition().decode()
        assert 'jwksgate_config_reloads_total{result="failure"} 1.0' in exposition


async def test_a_removed_issuer_leaves_no_gauge_behind_to_keep_its_alerts_firing(
    tmp_path: Path,
) -> None:
    # An issuer whose JWKS host is down shows jwksgate_issuer_ready 0 (its alert fires); once a
    # reload removes it, the series must go, or the alert fires for an issuer that is gone.
    async with reloading(tmp_path / "config.yaml") as r, aiohttp.ClientSession() as http:
        down = {
            "name": "gone",
            "issuer": "https://gone.test",
            "jwks_url": f"http://127.0.0.1:{refused_port()}{JWKS_PATH}",
            "path_prefix": "/gone",
        }
        with_down = json.loads(json.dumps(r.data))
        with_down["issuers"].append(down)
        r.write(with_down)
        await wait_reloads(http, r.admin_url, success=1, failure=0)
        metrics = await scrape(http, r.admin_url)
        assert metrics.value("jwksgate_issuer_ready", issuer="gone") == 0
        assert metrics.value("jwksgate_jwks_age_seconds", issuer="gone") == -1

        r.write(json.loads(json.dumps(r.data)))  # the issuer is removed again
        await wait_reloads(http, r.admin_url, success=2, failure=0)
        metrics = await scrape(http, r.admin_url)
        for gauge in ("jwksgate_issuer_ready", "jwksgate_jwks_age_seconds", "jwksgate_jwks_keys"):
            assert {"issuer": "gone"} not in [dict(s) for s in metrics.label_sets(gauge)], gauge
        assert metrics.value("jwksgate_issuer_ready", issuer="sender") == 1
        assert (await r.push(http)).status == 200
