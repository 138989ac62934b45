"""Real processes for the fault tests: the gateway (``python -m gateway run``), a backend and a JWKS
server, each on free loopback ports, each stopped by PID; and what /proc says about them.

Every process is started in its own session (its PID is its process group), so stopping it also
stops whatever it spawned (a supervisor's workers), and a test's signal reaches only the process it
names. Output goes to files under the test's temporary directory, quoted when a wait fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, gateway_config_data

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    """One child process, with its output in ``<logdir>/<name>.out`` / ``.err``."""

    name: str
    argv: list[str]
    logdir: Path
    popen: subprocess.Popen[bytes] | None = None
    _files: list[IO[bytes]] = field(default_factory=list)
    starts: int = 0

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None
        self.reap()
        self.starts += 1
        out = (self.logdir / f"{self.name}.out").open("ab")
        err = (self.logdir / f"{self.name}.err").open("ab")
        self._files = [out, err]
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None and self.popen.poll() is None, f"{self.name} is not running"
        self.popen.send_signal(sig)

    def returncode(self) -> int | None:
        assert self.popen is not None
        return self.popen.poll()

    def reap(self) -> None:
        """Wait for an exited process and close its log files."""
        if self.popen is not None:
            self.popen.wait(timeout=10)
        for f in self._files:
            f.close()
        self._files = []

    def stop(self) -> None:
        """SIGKILL the process group (the process and anything it spawned), then reap. Only while
        the process runs: once it is reaped its PID, and so the group's ID, may be reused."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.reap()

    def tail(self, lines: int = 30) -> str:
        parts = []
        for suffix in ("err", "out"):
            path = self.logdir / f"{self.name}.{suffix}"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {self.name}.{suffix} ---\n" + "\n".join(text))
        return "\n".join(parts)

    async def wait_exit(self, limit: float) -> int | None:
        """The exit code, or None if still running after ``limit`` seconds."""
        assert self.popen is not None
        for _ in range(int(limit / 0.02) + 1):
            code = self.popen.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.02)
        return self.popen.poll()


async def wait_port(port: int, proc: Proc, limit: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails if ``proc`` exits first."""
    for _ in range(int(limit / 0.02) + 1):
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.returncode()}\n{proc.tail()}")
        with socket.socket() as s:
            s.setblocking(False)
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{proc.name} did not listen on {port} within {limit}s\n{proc.tail()}")


def backend_proc(logdir: Path, port: int, record: Path, delay: float = 0.0) -> Proc:
    argv = [sys.executable, "-m", "tests.backend_proc", "--port", str(port)]
    argv += ["--record", str(record), "--delay", str(delay)]
    return Proc("backend", argv, logdir)


def jwks_proc(logdir: Path, port: int, jwks_file: Path) -> Proc:
    argv = [sys.executable, "-m", "tests.jwks_proc", "--port", str(port), "--jwks", str(jwks_file)]
    return Proc("jwks", argv, logdir)


def recorded(record: Path) -> collections.Counter[str]:
    """How many times the backend answered 2xx for each jti (across its restarts)."""
    if not record.exists():
        return collections.Counter()
    return collections.Counter(line for line in record.read_text().splitlines() if line)


async def settled(
    record: Path, jtis: Iterable[str], limit: float = 10.0
) -> collections.Counter[str]:
    """The record once each of ``jtis`` is in it (or after ``limit`` seconds, for the test to
    fail on): the backend writes its line just after its 200 has gone out, so a sender can see the
    200 a moment before the line is there."""
    want = set(jtis)
    for _ in range(int(limit / 0.01) + 1):
        rec = recorded(record)
        if want <= rec.keys():
            return rec
        await asyncio.sleep(0.01)
    return recorded(record)


@dataclass
class GatewayProc:
    proc: Proc
    url: str
    admin_url: str
    config_file: Path
    grace: float


def gateway_config(
    port: int, admin_port: int, jwks_url: str, upstream_url: str, **top: Any
) -> dict[str, Any]:
    """A gateway config (as YAML data) for one RS256 issuer with a body hash, on fixed ports."""
    return gateway_config_data(
        jwks_url,
        upstream_url,
        issuer={"algorithms": ["RS256"]},
        **{
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{admin_port}",
            "shutdown_grace_seconds": 5,
            **top,
        },
    )


def gateway_proc(logdir: Path, config: dict[str, Any]) -> GatewayProc:
    """``python -m gateway run --config <file>`` for ``config`` (not started yet)."""
    path = logdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
    return GatewayProc(
        proc=Proc("gateway", argv, logdir),
        url="http://" + str(config["listen"]),
        admin_url="http://" + str(config["admin_listen"]),
        config_file=path,
        grace=float(config.get("shutdown_grace_seconds", 20)),
    )


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (never 8080)."""
    ports: list[int] = []
    for _ in range(100 * n):
        p = free_port()
        if p != 8080 and p not in ports:
            ports.append(p)
        if len(ports) == n:
            return ports
    raise RuntimeError("no free ports")


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.text()


async def wait_ready(gw: GatewayProc, http: aiohttp.ClientSession, limit: float = 30.0) -> None:
    """Until the admin port's /readyz answers 200; fails if the gateway exits first."""
    last = ""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.05) + 1):
        if not gw.proc.alive():
            raise AssertionError(f"gateway exited with {gw.proc.returncode()}\n{gw.proc.tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            status, last = await get(http, gw.admin_url + "/readyz")
            if status == 200:
                return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"gateway not ready within {limit}s: {last}\n{gw.proc.tail()}")


async def metric_samples(
    http: aiohttp.ClientSession, admin_url: str, name: str
) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` in the admin port's /metrics."""
    status, text = await get(http, admin_url + "/metrics")
    assert status == 200, text
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


# -- /proc ---------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def child_pids(pid: int) -> set[int]:
    """Live (non-zombie) children of ``pid``."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == pid and st[0] != "Z":
                out.add(int(entry))
    return out


def listening_socket_owners(port: int) -> dict[int, int]:
    """Listening TCP sockets on ``port``: socket inode -> PID of the process holding it."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(parts[9]))
    owners: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        if inode in inodes:
                            owners[inode] = int(entry)
    return owners
