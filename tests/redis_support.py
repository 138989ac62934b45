"""Real redis-server processes on free loopback ports, started and stopped by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import wait_port
from tests.support import free_port


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not installed (scripts/install-system-deps installs it)"
        )
    return path


@dataclass
class RedisProcess:
    port: int
    workdir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, limit=10.0)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def redis_server(*extra: str) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="jwksgate-redis-") as d:
        r = RedisProcess(port=free_port(), workdir=Path(d), extra=list(extra))
        r.start()
        try:
            yield r
        finally:
            r.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            port -= 20000
        if port < 1024:
            continue
        ok = True
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair for a cluster node")


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[RedisProcess]]:
    """A real Redis Cluster of ``nodes`` masters (no replicas), slots assigned with redis-cli."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed")
    with tempfile.TemporaryDirectory(prefix="jwksgate-cluster-") as d:
        procs = []
        try:
            for i in range(nodes):
                wd = Path(d) / str(i)
                wd.mkdir()
                p = RedisProcess(
                    port=cluster_port(),
                    workdir=wd,
                    extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
                )
                p.start()
                procs.append(p)
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p.port}" for p in procs),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                out = subprocess.run(
                    [cli, "-p", str(procs[0].port), "cluster", "info"],
                    capture_output=True, text=True, timeout=10,
                ).stdout  # fmt: skip
                if "cluster_state:ok" in out:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("the Redis cluster did not become ready")
            yield procs
        finally:
            for p in procs:
                p.stop()
