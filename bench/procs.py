"""Child processes of the benchmark: started by PID, stopped by PID, measured through /proc."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "Proc",
    "cpu_busy_ticks",
    "free_port",
    "run_quiet",
    "start",
    "start_redis",
    "wait_http_ok",
    "wait_port",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
# Where child processes import gateway/ and bench/ from: a snapshot taken at the start of a run
# (see bench.main.snapshot), so that edits to the work tree during a run change nothing.
CODE_DIR = ROOT
_FORBIDDEN_PORTS = frozenset({8080})
_PORTS = (20000, 32767)
_GIVEN: set[int] = set()  # ports handed out by this process: never twice


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (20000-32767, never 8080), so
    that the port a child is told to bind is not taken meanwhile by some outgoing connection."""
    while True:
        port = random.randint(_PORTS[0], _PORTS[1])
        if port in _FORBIDDEN_PORTS or port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port


def wait_port(port: int, limit: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            tail = proc.log.read_text(errors="replace")[-1500:] if proc.log.exists() else ""
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}: {tail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit}s")


def wait_http_ok(url: str, limit: float = 30.0, proc: Proc | None = None) -> None:
    """Poll ``url`` (a readiness endpoint) until it answers 200."""
    deadline = time.monotonic() + limit
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}: see {proc.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {limit}s ({last})")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        """This process and all its descendants (workers: the supervisor and its workers)."""
        kids = _children()
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(kids.get(pid, []))
        return out

    def cpu_ticks(self) -> int:
        """utime + stime of the process tree, in clock ticks."""
        total = 0
        for pid in self.tree():
            fields = _stat_fields(pid)
            if fields is not None:
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total

    def rss_kib(self) -> int:
        total = 0
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self, grace: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def start(name: str, args: list[str], logdir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Proc:  # fmt: skip
    """Start ``python -m ...`` (or another command) with stdout discarded, stderr to a log;
    from ``cwd`` (another revision's code, ``--compare``) or the run's snapshot."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    cmd = [sys.executable, *args] if args[0] == "-m" else args
    with log.open("wb") as err:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            # The access log (one JSON line per request) goes where a container's stdout would
            # go; /dev/null keeps the disk out of the measurement.
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=cwd or CODE_DIR,  # python -m bench.* and -m gateway import from here
        )
    return Proc(name=name, popen=popen, log=log)


def run_quiet(cmd: list[str]) -> str:
    """Run ``cmd``; "" when it exits 0, else its output (for an error message)."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return "" if res.returncode == 0 else (res.stdout + res.stderr)[-2000:]


def start_redis(logdir: Path, name: str = "redis") -> tuple[Proc, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (bench/run installs it with apt)")
    port = free_port()
    workdir = logdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    proc = start(
        name,
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        logdir,
    )  # fmt: skip
    wait_port(port, proc=proc)
    return proc, port
