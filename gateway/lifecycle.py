"""Start, signals and drain: the webhook and admin listeners of one process, SIGTERM/SIGINT to
drain, SIGHUP to reload. ``workers.py`` uses the same signal wiring for its supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.admin import admin_app
from gateway.app import Gateway
from gateway.bind import bind_error
from gateway.config import Config
from gateway.errors import Rejection
from gateway.listener import GuardedServer
from gateway.replay import ReplayStore
from gateway.watch import Watcher

__all__ = ["RunningGateway", "on_sighup", "run_gateway", "serve", "stop_on_signals"]

log = logging.getLogger("jwksgate")
# After the drain's grace: how long cancelled requests get to clean up (release reservations).
_CANCELLED_CLEANUP_SECONDS = 2.0


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the caller drains."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def on_sighup(hup: Callable[[], None]) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hup)


@dataclass
class RunningGateway:
    gateway: Gateway
    url: str
    admin_url: str
    proxy_runner: web.BaseRunner
    admin_runner: web.AppRunner
    ssl_context: ssl.SSLContext | None = None
    drained: bool = False

    def server_guards(self) -> list[Any]:
        """The open webhook connections (one header-deadline guard each)."""
        server = self.proxy_runner.server
        return list(server.guards.values()) if isinstance(server, GuardedServer) else []

    async def drain(self) -> None:
        """Readiness 503 at once, stop listening, let in-flight requests finish within the
        grace period (``shutdown_grace_seconds``); the admin port keeps answering meanwhile."""
        if self.drained:
            return
        self.drained = True
        self.gateway.draining = True
        self.gateway.metrics.ready.set(0)
        await self.proxy_runner.cleanup()


def _server_ssl(config: Config) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return ctx


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def run_gateway(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    store: ReplayStore | None = None,
    reuse_port: bool = False,
    admin: bool = True,
) -> AsyncIterator[RunningGateway]:
    """Start the webhook and admin listeners (port 0 picks a free port) and the refreshers;
    ``BindError`` (one line naming the config key) when a listener cannot bind."""
    gw = await Gateway.create(config, clock=clock, store=store)

    # Requests being handled: those still running when the grace runs out are cancelled, and
    # must get to release their replay reservations before the store is closed.
    handling: set[asyncio.Task[Any]] = set()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        guard = server.guards.get(request.protocol)
        if guard is not None:
            guard.disarm(request)
        task = asyncio.current_task()
        if task is not None:
            handling.add(task)
        try:
            return await gw.handle(request)
        finally:
            handling.discard(task)
            if guard is not None:
                guard.idle()

    def on_refused(r: Rejection) -> str:
        # A connection answered before any request was parsed: counted and logged like one.
        waited = gw.config.limits.header_timeout_seconds if r.status == 408 else 0.0
        return gw.recorder.refusal(r, waited)

    server = GuardedServer(
        handler,
        lambda: gw.config.limits.header_timeout_seconds,
        lambda: gw.config.limits.max_connections,
        on_refused,
        lambda: gw.config.limits.body_timeout_seconds,
        # Hash and forward the body exactly as received (gzip stays gzip).
        auto_decompress=False,
        access_log=None,
        keepalive_timeout=75.0,
        # Room for "Bearer " + the longest token verify accepts, so an oversized token gets
        # the gateway's own 401 malformed_token (JSON, counted) instead of aiohttp's bare 400.
        max_field_size=8192 + 64,
        max_headers=128,
    )
    proxy_runner = web.ServerRunner(server, shutdown_timeout=config.shutdown_grace_seconds)
    admin_runner = web.AppRunner(
        admin_app(gw.readiness, gw.exposition), access_log=None, shutdown_timeout=2.0
    )
    await proxy_runner.setup()
    if admin:
        await admin_runner.setup()
    running: RunningGateway | None = None
    server_ssl = _server_ssl(config)
    try:
        site = web.TCPSite(
            proxy_runner,
            config.listen.host,
            config.listen.port,
            ssl_context=server_ssl,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        try:
            await site.start()
        except OSError as e:
            raise bind_error("listen", config.listen, e) from None
        admin_url = ""
        if admin:
            a = config.admin_listen
            try:
                await web.TCPSite(admin_runner, a.host, a.port).start()
            except OSError as e:
                raise bind_error("admin_listen", a, e) from None
            ahost, aport = admin_runner.addresses[0][:2]
            admin_url = f"http://{_host(ahost)}:{aport}"
        scheme = "https" if config.tls else "http"
        host, port = proxy_runner.addresses[0][:2]
        gw.start_background()
        running = RunningGateway(
            gateway=gw,
            url=f"{scheme}://{_host(host)}:{port}",
            admin_url=admin_url,
            proxy_runner=proxy_runner,
            admin_runner=admin_runner,
            ssl_context=server_ssl,
        )
        yield running
    finally:
        gw.draining = True
        if running is None or not running.drained:
            await proxy_runner.cleanup()
        if handling:
            await asyncio.wait(list(handling), timeout=_CANCELLED_CLEANUP_SECONDS)
        if admin:
            await admin_runner.cleanup()
        await gw.close()


async def serve(
    config: Config,
    *,
    reuse_port: bool = False,
    admin: bool = True,
    config_path: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain: readiness 503, stop accepting, finish in-flight.
    SIGHUP, or a change of the config file, reloads the config."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with run_gateway(config, reuse_port=reuse_port, admin=admin) as running:
        watcher = Watcher(running, config_path)
        pending: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = asyncio.ensure_future(watcher.reload("SIGHUP"))
            pending.add(task)
            task.add_done_callback(pending.discard)

        on_sighup(on_hup)
        watching = asyncio.ensure_future(watcher.run())
        log.info(
            "jwksgate listening on %s (admin %s), %d issuers, event loop %s",
            running.url,
            running.admin_url,
            len(config.issuers),
            type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        await stop.wait()
        watching.cancel()
        log.info("signal received: draining for up to %ss", config.shutdown_grace_seconds)
        await running.drain()
    log.info("stopped")
