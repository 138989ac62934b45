"""Driving wrk and reading what it prints.

The Lua script (``post.lua``) prints one ``WRK_JSON {...}`` line from ``done()`` with the counts and
latency percentiles; wrk's own summary (``Requests/sec:``, ``N requests in ...``) is parsed too and
the two must agree on the request count.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LUA_SCRIPT", "WrkError", "WrkResult", "parse_wrk_output", "run_wrk", "wrk_binary"]

LUA_SCRIPT = Path(__file__).with_name("post.lua")
_RPS_RE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON2XX_RE = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    text_rps: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (bench/run installs it with apt: Debian package wrk)")
    return path


def parse_wrk_output(text: str) -> WrkResult:
    """The result of one wrk run from its stdout; ``WrkError`` if any part is missing."""
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise WrkError(f"no WRK_JSON line in wrk's output:\n{text[-2000:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    rps_m = _RPS_RE.search(text)
    req_m = _REQUESTS_RE.search(text)
    if rps_m is None or req_m is None:
        raise WrkError(f"wrk's summary lines are missing:\n{text[-2000:]}")
    if int(req_m.group(1)) != data["requests"]:
        raise WrkError(f"wrk's summary says {req_m.group(1)} requests, done() {data['requests']}")
    non2xx_m = _NON2XX_RE.search(text)
    non_2xx = int(non2xx_m.group(1)) if non2xx_m else 0
    duration_s = data["duration_us"] / 1e6
    requests = int(data["requests"])
    return WrkResult(
        requests=requests,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        non_2xx=max(non_2xx, int(data["status_errors"])),
        socket_errors=int(data["connect_errors"] + data["read_errors"] + data["write_errors"]),
        timeouts=int(data["timeouts"]),
        text_rps=float(rps_m.group(1)),
    )


def run_wrk(
    url: str,
    *,
    tokens: Path,
    start: int,
    count: int,
    body: Path,
    concurrency: int,
    duration: float,
    path: str = "/hook",
) -> WrkResult:
    """One bounded wrk run: at most ``duration`` seconds and ``count`` requests."""
    if not url.startswith("http://127.0.0.1:"):
        raise WrkError(f"the load generator only targets 127.0.0.1, not {url}")
    cmd = [
        wrk_binary(),
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(tokens),
        str(start),
        str(count),
        str(body),
        path,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-2000:]}")
    return parse_wrk_output(proc.stdout)
