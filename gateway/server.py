"""Listeners and the process lifecycle: the webhook port, the admin port, header deadlines and a
graceful drain on SIGTERM (contract §6).

aiohttp has no header-read timeout (a slowloris can dribble headers forever), so each connection
of the webhook port is wrapped in a small protocol that starts a deadline whenever the connection
is waiting for a request and answers 408 ``request_timeout`` when the headers are not complete in
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.app import Gateway, build_admin_app
from gateway.config import Config, load_config
from gateway.errors import ConfigError, Rejection
from gateway.replay import ReplayStore

__all__ = ["RunningGateway", "run_gateway", "serve"]

log = logging.getLogger("jwksgate")
# After the drain's grace: how long cancelled requests get to clean up (release reservations).
_CANCELLED_CLEANUP_SECONDS = 2.0


def _raw_answer(r: Rejection, phrase: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 answer for a connection the request handler never sees."""
    body = json.dumps({"error": r.reason, "detail": r.detail}).encode()
    head = (
        f"HTTP/1.1 {r.status} {phrase}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


_HEADER_TIMEOUT = Rejection("request_timeout", "the request headers did not arrive in time")
_TOO_MANY_CONNECTIONS = Rejection("overloaded", "too many open connections; retry shortly")


class _HeaderDeadline(asyncio.Protocol):
    """Delegates to aiohttp's protocol; owns the header deadline of one connection."""

    def __init__(self, inner: RequestHandler, server: _GuardedServer) -> None:
        self.inner = inner
        self.server = server
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.request: web.BaseRequest | None = None
        # Bytes that arrived after the current request's body was complete: the start of a
        # pipelined request, whose headers need a deadline of their own.
        self.pipelined = False
        self.refused = False

    def _arm(self) -> None:
        if self.timer is None and not self.busy:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.server.header_timeout(), self._expired)

    def disarm(self, request: web.BaseRequest) -> None:
        self.busy = True
        self.request = request
        self.pipelined = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def idle(self) -> None:
        self.busy = False
        self.request = None
        if self.pipelined:
            self._arm()

    def _expired(self) -> None:
        self.timer = None
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_raw_answer(_HEADER_TIMEOUT, "Request Timeout"))
        self.transport.close()
        self.server.on_refused(_HEADER_TIMEOUT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.guards) >= self.server.max_connections():
            # Every connection costs a file descriptor and buffers: past the bound, answer 503
            # at once and close, before aiohttp ever sees the connection.
            self.refused = True
            self.transport.write(_raw_answer(_TOO_MANY_CONNECTIONS, "Service Unavailable",
                                             "Retry-After: 1\r\n"))  # fmt: skip
            self.transport.close()
            self.server.on_refused(_TOO_MANY_CONNECTIONS)
            return
        self.server.guards[self.inner] = self
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.busy and self.request is not None and self.request.content.is_eof():
            self.pipelined = True
        self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.refused:
            self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.guards.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _GuardedServer(web.Server):
    def __init__(
        self,
        handler: Any,
        header_timeout: Callable[[], float],
        max_connections: Callable[[], int],
        on_refused: Callable[[Rejection], None],
        **kw: Any,
    ) -> None:
        super().__init__(handler, **kw)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.on_refused = on_refused
        self.guards: dict[RequestHandler, _HeaderDeadline] = {}

    def __call__(self) -> Any:  # the protocol factory handed to loop.create_server
        return _HeaderDeadline(super().__call__(), self)


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
        return list(server.guards.values()) if isinstance(server, _GuardedServer) else []

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


@contextlib.asynccontextmanager
async def run_gateway(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    store: ReplayStore | None = None,
    reuse_port: bool = False,
    admin: bool = True,
    passthrough: bool = False,
) -> AsyncIterator[RunningGateway]:
    """Start the webhook and admin listeners (port 0 picks a free port) and the refreshers.

    ``passthrough`` forwards without verifying anything: only for the benchmarks' baseline.
    """
    gw = await Gateway.create(config, clock=clock, store=store)
    gw.passthrough = passthrough

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

    def on_refused(r: Rejection) -> None:
        # A connection answered before any request was parsed: counted and logged like one.
        waited = gw.config.limits.header_timeout_seconds if r.status == 408 else 0.0
        gw.metrics.record_request("unknown", "rejected", r.reason, waited)
        gw.access.write(
            {"ts": round(time.time(), 3), "event": "request", "request_id": uuid.uuid4().hex,
             "issuer": "unknown", "outcome": "rejected", "reason": r.reason, "status": r.status,
             "duration_ms": waited * 1000, "detail": r.detail},
            rejected=True,
        )  # fmt: skip

    server = _GuardedServer(
        handler,
        # Read per connection, so that a reload of limits applies to new connections.
        lambda: gw.config.limits.header_timeout_seconds,
        lambda: gw.config.limits.max_connections,
        on_refused,
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
    admin_runner = web.AppRunner(build_admin_app(gw), access_log=None, shutdown_timeout=2.0)
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
        await site.start()
        admin_url = ""
        if admin:
            a = config.admin_listen
            await web.TCPSite(admin_runner, a.host, a.port).start()
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


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _digest(*paths: str | None) -> bytes | None:
    h = hashlib.sha256()
    try:
        for path in paths:
            if path:
                h.update(Path(path).read_bytes())
    except OSError:
        return None
    return h.digest()


class Watcher:
    """Live reload: the config file and the secret files it reads (a ConfigMap or Secret
    changes by symlink swap, so contents are compared, not mtimes), SIGHUP, and the TLS
    certificate and key (cert-manager rotates them).

    A new config is validated first and refused whole when invalid; the old one stays.
    """

    def __init__(self, running: RunningGateway, path: str | None, interval: float = 2.0) -> None:
        self.running = running
        self.path = path
        self.interval = interval
        self._lock = asyncio.Lock()
        self.config_digest = self._config_digest()
        self.tls_digest = self._tls_digest()

    def _config_digest(self) -> bytes | None:
        if self.path is None:
            return None
        return _digest(self.path, *self.running.gateway.config.secret_files)

    def _tls_digest(self) -> bytes | None:
        tls = self.running.gateway.config.tls
        return _digest(tls.cert_file, tls.key_file) if tls else None

    async def reload(self, why: str) -> bool:
        """Load, validate and swap the config; True when the new one is in force."""
        if self.path is None:
            return False
        metrics = self.running.gateway.metrics
        async with self._lock:
            try:
                new = load_config(self.path)
                await self.running.gateway.reload(new)
            except Exception as e:
                # Whatever failed, the old config stays in force and the watcher keeps going:
                # a dead watcher would also stop certificate rotation.
                self.config_digest = self._config_digest()
                metrics.config_reloads.labels(result="failure").inc()
                problems = e.problems if isinstance(e, ConfigError) else [repr(e)]
                for line in problems:
                    log.error("config reload (%s) refused, old config kept: %s", why, line)
                return False
            self.config_digest = self._config_digest()
            metrics.config_reloads.labels(result="success").inc()
            log.info("config reloaded (%s): %d issuers", why, len(new.issuers))
            return True

    def reload_tls(self) -> bool:
        tls, ctx = self.running.gateway.config.tls, self.running.ssl_context
        if tls is None or ctx is None:
            return False
        try:
            # Try the pair on a scratch context first: a failed load_cert_chain on the live one
            # can leave it holding the new certificate without its key, so that every new
            # handshake fails. New handshakes use the new pair; established connections stay.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file
            )
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            log.error("TLS certificate reload failed, old certificate kept: %s", e)
            return False
        log.info("TLS certificate reloaded from %s", tls.cert_file)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self._config_digest() not in (None, self.config_digest):
                    await self.reload("file changed")
                tls_digest = self._tls_digest()
                if tls_digest is not None and tls_digest != self.tls_digest:
                    self.tls_digest = tls_digest
                    self.reload_tls()
            except Exception:
                log.exception("config watcher: unexpected error; still watching")


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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_gateway(config, reuse_port=reuse_port, admin=admin) as running:
        watcher = Watcher(running, config_path)
        pending: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = asyncio.ensure_future(watcher.reload("SIGHUP"))
            pending.add(task)
            task.add_done_callback(pending.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        watching = asyncio.ensure_future(watcher.run())
        log.info(
            "jwksgate listening on %s (admin %s), %d issuers",
            running.url,
            running.admin_url,
            len(config.issuers),
        )
        await stop.wait()
        watching.cancel()
        log.info("signal received: draining for up to %ss", config.shutdown_grace_seconds)
        await running.drain()
    log.info("stopped")
