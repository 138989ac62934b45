"""Real redis-server processes on free loopback ports, started and stopped by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
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


class PortTaken(RuntimeError):
    """The free port chosen for a redis-server was taken by another process before it bound."""


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
        if "--tls-port" not in self.extra and self.answering_pid() != self.proc.pid:
            # Another process took the port between free_port() and our bind: ours exits.
            self.stop()
            raise PortTaken(self.port)

    def answering_pid(self) -> int | None:
        """The process id of the redis-server answering on our port (INFO server)."""
        data = b""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"INFO server\r\n")
                while b"process_id:" not in data or not data.endswith(b"\r\n\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None  # not a redis-server that answers: not ours
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        return None

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


def start_redis(
    workdir: Path, extra: list[str], choose_port: Callable[[], int] = free_port
) -> RedisProcess:
    """A started redis-server on a port of ``choose_port``'s, trying another if it was taken."""
    for _ in range(4):
        r = RedisProcess(port=choose_port(), workdir=workdir, extra=extra)
        try:
            r.start()
            return r
        except PortTaken:
            continue
    r = RedisProcess(port=choose_port(), workdir=workdir, extra=extra)
    r.start()
    return r


@contextmanager
def redis_server(*extra: str) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="jwksgate-redis-") as d:
        r = start_redis(Path(d), list(extra))
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
                cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                procs.append(start_redis(wd, cluster, cluster_port))
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
