"""``workers: N``: N worker processes share the webhook port (SO_REUSEPORT); a supervisor owns the
admin port, restarts a worker that dies, and drains them all on SIGTERM.

Metrics use prometheus-client's multiprocess mode: every worker writes its values to files in a
private temporary directory and the supervisor's ``/metrics`` merges them. Readiness is the
workers': ``/readyz`` is 200 only when all N are alive and each reports ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from gateway.admin import admin_app
from gateway.bind import bind_error, probe
from gateway.config import Config
from gateway.lifecycle import on_sighup, stop_on_signals

__all__ = ["run_workers"]

log = logging.getLogger("jwksgate")
_RESTART_BACKOFF_SECONDS = 1.0


def _worker_main(config: Config, log_level: str, config_path: str | None) -> None:
    from gateway import eventloop
    from gateway.lifecycle import serve
    from gateway.logs import configure_logging

    configure_logging(log_level)
    # The supervisor checked JWKSGATE_EVENT_LOOP already; a worker inherits its environment.
    eventloop.run(
        serve(config, reuse_port=True, admin=False, config_path=config_path),
        eventloop.loop_factory(),
    )


class Supervisor:
    def __init__(
        self, config: Config, log_level: str, metrics_dir: str, config_path: str | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.log_level = log_level
        self.metrics_dir = metrics_dir
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.draining = False

    def spawn(self) -> BaseProcess:
        p = self.ctx.Process(
            target=_worker_main,
            args=(self.config, self.log_level, self.config_path),
            name="jwksgate-worker",
        )
        p.start()
        return p

    def _collect(self) -> Any:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        return registry

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        alive = {p.pid for p in self.workers if p.is_alive()}
        ready_pids: set[int] = set()
        for family in self._collect().collect():
            if family.name == "jwksgate_ready":
                for sample in family.samples:
                    pid = int(sample.labels.get("pid", "0"))
                    if sample.value == 1 and pid in alive:
                        ready_pids.add(pid)
        ok = not self.draining and len(ready_pids) == self.config.workers
        return ok, {
            "status": "ready" if ok else "not ready",
            "draining": self.draining,
            "workers": self.config.workers,
            "workers_alive": len(alive),
            "workers_ready": len(ready_pids),
        }

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.readiness()

    async def _exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self._collect()), CONTENT_TYPE_LATEST

    def _signal_all(self, sig: int) -> None:
        for p in self.workers:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)

    async def run(self) -> None:
        from prometheus_client import multiprocess

        stop = asyncio.Event()
        stop_on_signals(stop)
        # Each worker reloads by itself (it watches the file too); SIGHUP is passed on.
        on_sighup(lambda: self._signal_all(signal.SIGHUP))
        # A webhook port nobody can bind would have every worker fail and be restarted forever.
        probe("listen", self.config.listen, reuse_port=True)
        runner = web.AppRunner(admin_app(self._readiness, self._exposition), access_log=None)
        await runner.setup()
        a = self.config.admin_listen
        try:
            await web.TCPSite(runner, a.host, a.port).start()
        except OSError as e:
            await runner.cleanup()
            raise bind_error("admin_listen", a, e) from None
        self.workers = [self.spawn() for _ in range(self.config.workers)]
        log.info(
            "jwksgate supervisor: %d workers on %s, admin on %s",
            self.config.workers,
            self.config.listen,
            a,
        )
        try:
            while not stop.is_set():
                for i, p in enumerate(self.workers):
                    if not p.is_alive():
                        log.error("worker %s exited with %s; restarting it", p.pid, p.exitcode)
                        if p.pid is not None:
                            multiprocess.mark_process_dead(p.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
                        await asyncio.sleep(_RESTART_BACKOFF_SECONDS)
                        self.workers[i] = self.spawn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            self.draining = True
            log.info("signal received: draining %d workers", len(self.workers))
            for p in self.workers:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.config.shutdown_grace_seconds + 5
            while any(p.is_alive() for p in self.workers) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling child processes, not an event
                await asyncio.sleep(0.1)
            for p in self.workers:
                if p.is_alive():
                    log.error("worker %s did not stop in time; killing it", p.pid)
                    p.kill()
                p.join(timeout=5)
        finally:
            await runner.cleanup()


def run_workers(config: Config, log_level: str, config_path: str | None = None) -> int:
    """Run the supervisor until SIGTERM; returns the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="jwksgate-metrics-")
    # Must be set before prometheus-client is imported anywhere: it picks its value class then.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        asyncio.run(Supervisor(config, log_level, metrics_dir, config_path).run())
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
