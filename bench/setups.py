"""The setups the bench measures side by side, and how each is started.

A setup is one or more processes on 127.0.0.1 in front of the shared backend (the backend alone
is a setup too). Its CPU cost is the utime + stime of all its processes: a redis-server of its
own for the Redis setups, every worker of a multi-process server.

A setup whose program is not installed is skipped with a line saying so; it is never replaced
by something else.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import peer_configs, procs, tokens

__all__ = [
    "CHECKS",
    "COMPARABLE",
    "COMPARED",
    "SPECS",
    "Context",
    "Running",
    "SetupSpec",
    "compare_spec",
    "jwksgate_env",
    "missing_program",
    "start_setup",
]

# What a verifying peer can be asked to refuse, besides answering a valid push.
CHECKS = ("no_token", "bad_signature", "expired", "wrong_audience", "body_hash", "replay")
_VERIFYING = frozenset({"no_token", "bad_signature", "expired", "wrong_audience"})


@dataclass(frozen=True)
class SetupSpec:
    name: str
    description: str
    kind: str
    # The checks this setup is configured to enforce (401, or 409 for a replay).
    enforces: frozenset[str] = frozenset()
    # The header the backend sees the token's sub in, for setups that forward claims.
    sub_header: str | None = None
    store: str = "memory"
    workers: int = 1
    # What it cannot check, in words, for the report.
    cannot: str = ""
    # Where its gateway/ is imported from, when not the run's snapshot (``--compare``).
    code: Path | None = None
    # The event loop it runs on, when not the run's ``--loop``.
    loop: str | None = None

    @property
    def fresh_tokens(self) -> bool:
        """True when the setup refuses a token it has seen: each request needs a new one."""
        return "replay" in self.enforces


SPECS: tuple[SetupSpec, ...] = (
    SetupSpec("backend", "the backend alone (aiohttp low-level server)", "backend",
              cannot="no checks: it is the backend"),
    SetupSpec("nginx", "nginx 1.22, plain reverse proxy, one worker", "nginx",
              cannot="no checks: a plain proxy"),
    SetupSpec("aiohttp-min", "minimal aiohttp proxy (one handler, one ClientSession)",
              "aiohttp-min", cannot="no checks: a plain proxy"),
    SetupSpec("aiohttp-jwcrypto", "naive aiohttp + jwcrypto JWT() proxy, body hash checked",
              "aiohttp-jwcrypto", enforces=_VERIFYING | {"body_hash"}, sub_header="X-Jwt-Sub",
              cannot="no replay check"),
    SetupSpec("apache-openidc", "Apache 2.4 event MPM + mod_auth_openidc 2.4 (AuthType oauth20)",
              "apache", enforces=_VERIFYING, sub_header="X-Jwt-sub",
              cannot="cannot see the body (no body hash), no replay check"),
    SetupSpec("haproxy", "HAProxy 2.6 jwt_verify, body SHA-256, jti stick table",
              "haproxy", enforces=_VERIFYING | {"body_hash", "replay"}, sub_header="X-Jwt-Sub",
              cannot="RS256 with one static PEM key (no JWKS, no kid, no rotation); replay "
                     "window is the stick table's (10 min, 2M entries, in memory)"),
    SetupSpec("jwksgate", "jwksgate, memory replay store", "jwksgate",
              enforces=frozenset(CHECKS), sub_header="X-Jwt-Sub"),
    SetupSpec("jwksgate-uvloop", "jwksgate, memory replay store, JWKSGATE_EVENT_LOOP=uvloop",
              "jwksgate", enforces=frozenset(CHECKS), sub_header="X-Jwt-Sub", loop="uvloop"),
    SetupSpec("jwksgate-redis", "jwksgate, Redis replay store (redis-server CPU included)",
              "jwksgate", enforces=frozenset(CHECKS), sub_header="X-Jwt-Sub", store="redis"),
    SetupSpec("jwksgate-redis-w2", "jwksgate, Redis store, workers: 2 (redis CPU included)",
              "jwksgate", enforces=frozenset(CHECKS), sub_header="X-Jwt-Sub", store="redis",
              workers=2),
)  # fmt: skip

# The name of the ``--compare`` setup.
COMPARED = "jwksgate@compared"

_PROGRAMS = {
    "nginx": ("nginx", "Debian package nginx"),
    "apache": ("apache2", "Debian packages apache2 libapache2-mod-auth-openidc"),
    "haproxy": ("haproxy", "Debian package haproxy"),
}


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


# The setups ``--compare`` measures at the other revision too.
COMPARABLE = ("jwksgate", "jwksgate-redis")


def compare_spec(ref: str, sha: str, code: Path, base: SetupSpec | None = None) -> SetupSpec:
    """``base`` (jwksgate with the memory store when None) at another revision, measured beside
    this one (``--compare``), as ``<base name>@compared``."""
    if base is None:
        base = next(s for s in SPECS if s.name == "jwksgate")
    return replace(base, name=f"{base.name}@compared", code=code,
                   description=f"{base.description}, at {ref} ({sha})")  # fmt: skip


def missing_program(spec: SetupSpec) -> str | None:
    """Why ``spec`` cannot run here (a line for the report), or None when it can."""
    if spec.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return f"{spec.name}: skipped, uvloop is not installed (pip install 'jwksgate[fast]')"
    if spec.kind in _PROGRAMS:
        program, package = _PROGRAMS[spec.kind]
        if _which(program) is None:
            return f"{spec.name}: skipped, {program} is not installed ({package})"
        if (
            spec.kind == "apache"
            and not (peer_configs.APACHE_MODULES / "mod_auth_openidc.so").exists()
        ):
            return f"{spec.name}: skipped, mod_auth_openidc is not installed ({package})"
    if spec.store == "redis" and _which("redis-server") is None:
        return f"{spec.name}: skipped, redis-server is not installed (Debian package redis-server)"
    return None


@dataclass
class Context:
    """What every setup shares: the backend, the key set, the files, the event loop."""

    out: Path
    keys: tokens.Keys
    backend_port: int
    jwks_url: str
    jwks_https_url: str
    ca_file: Path
    public_key: Path
    # A world-readable directory of its own under /tmp for what the C peers' unprivileged
    # workers read at run time (the bench's output directory may be private, e.g. pytest's).
    shared_dir: Path | None = None
    loop: str = "asyncio"
    jti_entries: int = 2_000_000


@dataclass
class Running:
    spec: SetupSpec
    url: str
    procs: list[procs.Proc] = field(default_factory=list)

    def cpu_ticks(self) -> int:
        return sum(p.cpu_ticks() for p in self.procs)

    def rss_kib(self) -> int:
        return sum(p.rss_kib() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def alive(self) -> bool:
        return all(p.popen.poll() is None for p in self.procs)


def _workdir(ctx: Context, name: str) -> Path:
    """Where a C peer's config, logs and temp files go: under ``shared_dir`` when there is one
    (Apache's and nginx's workers drop root for www-data / nobody and must reach them)."""
    base = ctx.shared_dir if ctx.shared_dir is not None else ctx.out / "run"
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    return d


def jwksgate_config(ctx: Context, spec: SetupSpec, port: int, admin: int,
                    redis_url: str | None) -> dict[str, Any]:  # fmt: skip
    replay: dict[str, Any] = {"store": spec.store, "max_entries": ctx.jti_entries}
    if spec.store == "redis":
        replay.update(redis_url=redis_url, key_prefix=f"bench:{spec.name}:{os.getpid()}:")
    return {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin}",
        "workers": spec.workers,
        "shutdown_grace_seconds": 2,
        "upstream": {"url": f"http://127.0.0.1:{ctx.backend_port}", "timeout_seconds": 10},
        "limits": {"max_body_bytes": 2097152, "max_inflight": 4096},
        "replay": replay,
        "issuers": [
            {
                "name": "bench",
                "issuer": tokens.ISSUER,
                "audiences": [tokens.AUDIENCE],
                "jwks_url": ctx.jwks_url,
                "algorithms": ["RS256", "ES256"],
                # Cached tokens stay valid for days; verification work is the same.
                "max_token_age_seconds": tokens.MAX_TOKEN_AGE_SECONDS,
                "max_lifetime_seconds": tokens.MAX_TOKEN_AGE_SECONDS,
                "body_hash": {"claim": "request_body_sha256"},
                "forward_claims": {"sub": "X-Jwt-Sub"},
            }
        ],
    }


def _start_backend(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    # The shared backend is started by the caller; this setup measures it alone.
    raise RuntimeError("the backend setup is not started by start_setup")


def _start_nginx(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    port = procs.free_port()
    w = _workdir(ctx, spec.name)
    conf = w / "nginx.conf"
    conf.write_text(peer_configs.nginx_conf(port, ctx.backend_port, w))
    binary = _which("nginx")
    assert binary is not None
    p = procs.start(spec.name, [binary, "-c", str(conf), "-p", str(w), "-e", str(w / "error.log"),
                                "-g", "daemon off; master_process on;"], logdir)  # fmt: skip
    procs.wait_port(port, proc=p)
    return Running(spec, f"http://127.0.0.1:{port}", [p])


def _start_aiohttp(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    port = procs.free_port()
    upstream = f"http://127.0.0.1:{ctx.backend_port}"
    args = ["--port", str(port), "--upstream", upstream, "--loop", ctx.loop]
    if spec.kind == "aiohttp-min":
        args = ["-m", "bench.aiohttp_min", *args]
    else:
        args = ["-m", "bench.aiohttp_jwcrypto", *args, "--jwks-url", ctx.jwks_url,
                "--issuer", tokens.ISSUER, "--audience", tokens.AUDIENCE]  # fmt: skip
    p = procs.start(spec.name, args, logdir)
    procs.wait_port(port, proc=p)
    return Running(spec, f"http://127.0.0.1:{port}", [p])


def _start_apache(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    port = procs.free_port()
    w = _workdir(ctx, spec.name)
    policy = peer_configs.Policy(issuer=tokens.ISSUER, audience=tokens.AUDIENCE,
                                 sub_header="X-Jwt-Sub")  # fmt: skip
    run_as = "www-data" if os.getuid() == 0 else None
    ca = w / "ca.pem"
    shutil.copyfile(ctx.ca_file, ca)
    ca.chmod(0o644)
    conf = w / "httpd.conf"
    conf.write_text(peer_configs.apache_conf(
        port, ctx.backend_port, ctx.jwks_https_url, ca, w, policy, run_as
    ))  # fmt: skip
    binary = _which("apache2") or "apache2"
    p = procs.start(spec.name, [binary, "-f", str(conf), "-DFOREGROUND"], logdir)
    procs.wait_port(port, proc=p)
    return Running(spec, f"http://127.0.0.1:{port}", [p])


def _start_haproxy(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    port = procs.free_port()
    w = _workdir(ctx, spec.name)
    policy = peer_configs.Policy(issuer=tokens.ISSUER, audience=tokens.AUDIENCE)
    cfg = w / "haproxy.cfg"
    cfg.write_text(
        peer_configs.haproxy_cfg(port, ctx.backend_port, ctx.public_key, policy, ctx.jti_entries)
    )
    binary = _which("haproxy") or "haproxy"
    check = procs.run_quiet([binary, "-c", "-q", "-f", str(cfg)])
    if check:
        raise RuntimeError(f"haproxy -c refused {cfg}: {check}")
    p = procs.start(spec.name, [binary, "-db", "-f", str(cfg)], logdir)
    procs.wait_port(port, proc=p)
    return Running(spec, f"http://127.0.0.1:{port}", [p])


def jwksgate_env(ctx: Context, spec: SetupSpec) -> dict[str, str]:
    """The environment a jwksgate setup starts with: its own event loop, else the run's."""
    return {"JWKSGATE_EVENT_LOOP": spec.loop or ctx.loop}


def _start_jwksgate(ctx: Context, spec: SetupSpec, logdir: Path) -> Running:
    started: list[procs.Proc] = []
    redis_url = None
    if spec.store == "redis":
        redis, redis_port = procs.start_redis(logdir, f"{spec.name}-redis")
        started.append(redis)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    port, admin = procs.free_port(), procs.free_port()
    cfg = logdir / f"{spec.name}.yaml"
    # JSON is YAML: the loader reads it as written.
    cfg.write_text(json.dumps(jwksgate_config(ctx, spec, port, admin, redis_url), indent=2))
    env = jwksgate_env(ctx, spec)
    args = ["-m", "gateway", "run", "--config", str(cfg)]
    p = procs.start(spec.name, args, logdir, env=env, cwd=spec.code)
    running = Running(spec, f"http://127.0.0.1:{port}", [p, *started])
    try:
        procs.wait_http_ok(f"http://127.0.0.1:{admin}/readyz", proc=p)
        procs.wait_port(port, proc=p)
    except BaseException:
        running.stop()
        raise
    return running


_STARTERS: dict[str, Callable[[Context, SetupSpec, Path], Running]] = {
    "backend": _start_backend,
    "nginx": _start_nginx,
    "aiohttp-min": _start_aiohttp,
    "aiohttp-jwcrypto": _start_aiohttp,
    "apache": _start_apache,
    "haproxy": _start_haproxy,
    "jwksgate": _start_jwksgate,
}


def start_setup(ctx: Context, spec: SetupSpec) -> Running:
    """Start ``spec``'s processes and wait until it listens (RuntimeError when it does not)."""
    return _STARTERS[spec.kind](ctx, spec, ctx.out / "run")
