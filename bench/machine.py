"""What the bench ran on: CPU, kernel, Python and the versions of every peer, for the report."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["describe_machine"]

_VERSION_COMMANDS = {
    "wrk": (["wrk", "--version"], r"wrk \S+"),
    "redis": (["redis-server", "--version"], r"v=[0-9.]+"),
    "nginx": (["nginx", "-v"], r"nginx/[0-9.]+"),
    "apache": (["apache2", "-v"], r"Apache/[0-9.]+"),
    "haproxy": (["haproxy", "-v"], r"version [0-9.]+\S*"),
}


def _program_version(cmd: list[str], pattern: str) -> str | None:
    binary = shutil.which(cmd[0]) or shutil.which(cmd[0], path="/usr/sbin:/sbin")
    if binary is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run([binary, *cmd[1:]], capture_output=True, text=True, timeout=10)
        m = re.search(pattern, res.stdout + res.stderr)
        return m.group(0) if m else (res.stdout + res.stderr).strip()[:80]
    return None


def _deb_version(package: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        if res.returncode == 0 and res.stdout:
            return res.stdout.strip()
    return None


def describe_machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    dists: dict[str, str | None] = {}
    for dist in ("jwksgate", "aiohttp", "jwcrypto", "cryptography", "prometheus-client", "redis",
                 "hiredis", "uvloop", "matplotlib"):  # fmt: skip
        try:
            dists[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            dists[dist] = None
    programs = {name: _program_version(*spec) for name, spec in _VERSION_COMMANDS.items()}
    programs["mod_auth_openidc"] = _deb_version("libapache2-mod-auth-openidc")
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_packages": dists,
        "programs": programs,
    }
