"""The benchmark: jwksgate against its own forwarding code with verification switched off.

One run starts, each as its own process on 127.0.0.1: a fast upstream, a JWKS server, a
redis-server (for the Redis sections), and per cell fresh proxies: the baseline
(``python -m bench.baseline``, ``run_gateway(..., passthrough=True)``) and jwksgate
(``python -m gateway run --config ...``). wrk drives them with a pre-signed, unique token per
request (replay protection stays on), alternating the setups round by round, and the proxy
process's CPU time (utime + stime from /proc, its workers included) is divided by the requests
completed. Medians over rounds, and ratios against the baseline, are printed and written to
``bench/out/results-*.{json,md}``.

``--quick`` takes about two minutes; the default about ten; ``--tiny`` is the smoke test's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procs, tokens
from bench.profile import load_profile, render_profile
from bench.wrk import WrkError, WrkResult, run_wrk, wrk_binary

__all__ = ["Options", "main", "run"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out"
SECTIONS = ("main", "extras", "uvloop", "memory", "micro", "profile")
_ALL_ALGS = ("RS256", "ES256")


@dataclass
class Options:
    out: Path = DEFAULT_OUT
    rounds: int = 5
    duration: float = 6.0
    warmup: float = 1.0
    concurrency: tuple[int, ...] = (16, 64)
    bodies: tuple[int, ...] = (1024, 65536)
    extras_concurrency: int = 64
    sections: tuple[str, ...] = ("main", "extras", "uvloop", "memory", "micro")
    memory_entries: int = 1_000_000
    micro_iterations: int = 5000
    # Tokens per pool; None sizes the pools from est_rps.
    tokens: int | None = None
    est_rps: float = 4500.0
    # The most tokens one round may use: bounds wrk's memory and the round's request count.
    max_rps: float = 12000.0
    profile_seconds: float = 20.0
    sign_processes: int | None = None
    quiet: bool = False


@dataclass(frozen=True)
class Server:
    """One proxy process of a cell."""

    key: str
    kind: str  # baseline | jwksgate
    store: str = "memory"
    workers: int = 1
    loop: str = "asyncio"  # JWKSGATE_EVENT_LOOP of the process


@dataclass(frozen=True)
class Setup:
    """What one round measures: a proxy and the tokens it is sent."""

    name: str
    server: str
    alg: str = "RS256"


@dataclass
class Cell:
    name: str
    body: int
    concurrency: int
    servers: list[Server]
    setups: list[Setup]
    reference: str = "baseline"


@dataclass
class Round:
    setup: str
    index: int
    wrk: dict[str, Any]
    cpu_us_per_request: float
    proxy_cores: float
    machine_busy_pct: float
    aux_cpu_us_per_request: dict[str, float]
    rss_mib: float
    short: bool


@dataclass
class Env:
    opts: Options
    keys: tokens.Keys
    upstream_url: str
    jwks_url: str
    redis_url: str | None
    body_files: dict[int, Path]
    token_files: dict[tuple[str, int], Path]
    pool_size: dict[tuple[str, int], int]
    aux: dict[str, procs.Proc] = field(default_factory=dict)
    nonce: str = field(default_factory=lambda: f"{int(time.time())}")


def say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


# -- configuration -----------------------------------------------------------------------------


def proxy_config(env: Env, cell: Cell, server: Server, port: int, admin: int) -> dict[str, Any]:
    replay: dict[str, Any] = {"store": server.store, "max_entries": 2_000_000}
    if server.store == "redis":
        assert env.redis_url is not None
        replay.update(
            redis_url=env.redis_url,
            key_prefix=f"bench:{env.nonce}:{cell.name}:{server.key}:",
        )
    return {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin}",
        "workers": server.workers,
        "shutdown_grace_seconds": 2,
        "upstream": {"url": env.upstream_url, "timeout_seconds": 10},
        "limits": {"max_body_bytes": 1048576, "max_inflight": 4096},
        "replay": replay,
        "issuers": [
            {
                "name": "bench",
                "issuer": tokens.ISSUER,
                "jwks_url": env.jwks_url,
                "algorithms": list(_ALL_ALGS),
                # Cached tokens stay valid for days; verification work is the same.
                "max_token_age_seconds": tokens.MAX_TOKEN_AGE_SECONDS,
                "max_lifetime_seconds": tokens.MAX_TOKEN_AGE_SECONDS,
                "body_hash": {"claim": "request_body_sha256"},
                "forward_claims": {"sub": "X-Jwt-Sub"},
            }
        ],
    }


def start_server(env: Env, cell: Cell, server: Server) -> tuple[procs.Proc, str]:
    port, admin = procs.free_port(), procs.free_port()
    cfg_dir = env.opts.out / "run"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = cfg_dir / f"{cell.name}-{server.key}.yaml"
    # JSON is YAML: the loader reads it as written.
    cfg_path.write_text(json.dumps(proxy_config(env, cell, server, port, admin), indent=2))
    if server.kind == "baseline":
        args = ["-m", "bench.baseline", "--config", str(cfg_path)]
    else:
        args = ["-m", "gateway", "run", "--config", str(cfg_path)]
    # Explicit, so that the caller's environment does not choose the loop.
    env_vars = {"JWKSGATE_EVENT_LOOP": server.loop}
    proc = procs.start(f"{cell.name}-{server.key}", args, cfg_dir, env=env_vars)
    procs.wait_http_ok(f"http://127.0.0.1:{admin}/readyz", proc=proc)
    procs.wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


# -- rounds ------------------------------------------------------------------------------------


def measure_round(
    env: Env,
    proc: procs.Proc,
    url: str,
    setup: Setup,
    cell: Cell,
    start: int,
    index: int,
    duration: float,
) -> tuple[Round, WrkResult]:
    pool = env.pool_size[(setup.alg, cell.body)]
    count = min(pool - start, int(env.opts.max_rps * duration) + 1)
    if count <= cell.concurrency:
        raise RuntimeError(
            f"{cell.name}/{setup.name}: the token pool is used up; raise --est-rps or --tokens"
        )
    aux = env.aux
    aux_before = {name: p.cpu_ticks() for name, p in aux.items()}
    busy0, total0 = procs.cpu_busy_ticks()
    before = proc.cpu_ticks()
    result = run_wrk(
        url,
        tokens=env.token_files[(setup.alg, cell.body)],
        start=start,
        count=count,
        body=env.body_files[cell.body],
        concurrency=cell.concurrency,
        duration=duration,
    )
    time.sleep(0.05)  # the last in-flight requests finish on the proxy's side
    after = proc.cpu_ticks()
    busy1, total1 = procs.cpu_busy_ticks()
    requests = max(result.requests, 1)
    cpu_s = (after - before) / procs.CLOCK_TICKS
    aux_us = {
        name: (p.cpu_ticks() - aux_before[name]) / procs.CLOCK_TICKS * 1e6 / requests
        for name, p in aux.items()
    }
    rnd = Round(
        setup=setup.name,
        index=index,
        wrk=result.as_dict(),
        cpu_us_per_request=cpu_s * 1e6 / requests,
        proxy_cores=cpu_s / result.duration_s if result.duration_s else 0.0,
        machine_busy_pct=100 * (busy1 - busy0) / max(total1 - total0, 1),
        aux_cpu_us_per_request=aux_us,
        rss_mib=proc.rss_kib() / 1024,
        # wrk stops the thread when the tokens are used up but still reports the full duration.
        short=result.requests + result.non_2xx + cell.concurrency >= count,
    )
    return rnd, result


def run_cell(env: Env, cell: Cell) -> dict[str, Any]:
    opts = env.opts
    say(opts, f"\n== {cell.name}: {cell.body} B body, {cell.concurrency} connections, "
              f"{opts.rounds} rounds x {opts.duration:g}s, setups alternate: "
              f"{', '.join(s.name for s in cell.setups)}")  # fmt: skip
    running: dict[str, tuple[procs.Proc, str]] = {}
    cursor: dict[tuple[str, str], int] = {}
    rounds: list[Round] = []
    try:
        for server in cell.servers:
            running[server.key] = start_server(env, cell, server)

        def next_start(setup: Setup) -> int:
            if cell_server(cell, setup.server).kind == "baseline":
                return 0  # no replay check: the same tokens serve every round
            return cursor.get((setup.server, setup.alg), 0)

        def advance(setup: Setup, start: int, result: WrkResult) -> None:
            if cell_server(cell, setup.server).kind != "baseline":
                # Requests still in flight when wrk stopped may have used their tokens too.
                used = result.requests + result.non_2xx + cell.concurrency + 8
                cursor[(setup.server, setup.alg)] = start + used

        if opts.warmup > 0:
            for setup in cell.setups:
                proc, url = running[setup.server]
                start = next_start(setup)
                _, res = measure_round(env, proc, url, setup, cell, start, -1, opts.warmup)
                advance(setup, start, res)
        for i in range(opts.rounds):
            for setup in cell.setups:
                proc, url = running[setup.server]
                start = next_start(setup)
                rnd, res = measure_round(env, proc, url, setup, cell, start, i, opts.duration)
                advance(setup, start, res)
                rounds.append(rnd)
                flag = " SHORT (tokens used up)" if rnd.short else ""
                bad = f" non-2xx {res.non_2xx}" if res.non_2xx else ""
                say(opts, f"  round {i + 1} {setup.name:<16} {res.rps:8.0f} req/s  "
                          f"p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
                          f"{rnd.cpu_us_per_request:6.0f} µs CPU/req  "
                          f"busy {rnd.machine_busy_pct:3.0f}%{bad}{flag}")  # fmt: skip
    finally:
        for proc, _ in running.values():
            proc.stop()
    summary = summarise(cell, rounds)
    return {
        "cell": cell.name,
        "body_bytes": cell.body,
        "concurrency": cell.concurrency,
        "rounds": [asdict(r) for r in rounds],
        "summary": summary,
    }


def cell_server(cell: Cell, key: str) -> Server:
    return next(s for s in cell.servers if s.key == key)


def summarise(cell: Cell, rounds: list[Round]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setup in cell.setups:
        rs = [r for r in rounds if r.setup == setup.name]
        if not rs:
            continue
        cpu = [r.cpu_us_per_request for r in rs]
        out[setup.name] = {
            "rounds": len(rs),
            "rps": statistics.median(r.wrk["rps"] for r in rs),
            "p50_ms": statistics.median(r.wrk["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r.wrk["p99_ms"] for r in rs),
            "cpu_us": statistics.median(cpu),
            "cpu_us_min": min(cpu),
            "cpu_us_max": max(cpu),
            "proxy_cores": statistics.median(r.proxy_cores for r in rs),
            "machine_busy_pct": statistics.median(r.machine_busy_pct for r in rs),
            "rss_mib": max(r.rss_mib for r in rs),
            "non_2xx": sum(r.wrk["non_2xx"] for r in rs),
            "socket_errors": sum(r.wrk["socket_errors"] for r in rs),
            "short_rounds": sum(r.short for r in rs),
            "aux_cpu_us": {
                name: statistics.median(r.aux_cpu_us_per_request[name] for r in rs)
                for name in rs[0].aux_cpu_us_per_request
            },
        }
    ref = out.get(cell.reference)
    if ref is not None:
        for name, s in out.items():
            if name == cell.reference:
                continue
            s["ratio"] = {
                "rps": s["rps"] / ref["rps"] if ref["rps"] else None,
                "p50": s["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] else None,
                "p99": s["p99_ms"] / ref["p99_ms"] if ref["p99_ms"] else None,
                "cpu": s["cpu_us"] / ref["cpu_us"] if ref["cpu_us"] else None,
            }
    return out


# -- the whole run -----------------------------------------------------------------------------


def cells(opts: Options) -> list[Cell]:
    baseline = Server("baseline", "baseline")
    jwksgate = Server("jwksgate", "jwksgate")
    out: list[Cell] = []
    if "main" in opts.sections:
        for body in opts.bodies:
            for c in opts.concurrency:
                out.append(
                    Cell(
                        name=f"main-{_size(body)}-c{c}",
                        body=body,
                        concurrency=c,
                        servers=[baseline, jwksgate],
                        setups=[Setup("baseline", "baseline"), Setup("jwksgate", "jwksgate")],
                    )
                )
    if "extras" in opts.sections:
        r1 = Server("redis-w1", "jwksgate", store="redis", workers=1)
        r2 = Server("redis-w2", "jwksgate", store="redis", workers=2)
        out.append(
            Cell(
                name=f"extras-{_size(1024)}-c{opts.extras_concurrency}",
                body=1024,
                concurrency=opts.extras_concurrency,
                servers=[baseline, jwksgate, r1, r2],
                setups=[
                    Setup("baseline", "baseline"),
                    Setup("jwksgate", "jwksgate"),
                    Setup("jwksgate-es256", "jwksgate", alg="ES256"),
                    Setup("redis-workers-1", "redis-w1"),
                    Setup("redis-workers-2", "redis-w2"),
                ],
            )
        )
    if "uvloop" in opts.sections and not _have_uvloop():
        say(opts, "uvloop is not installed (bench/run installs the fast extra): no uvloop cell")
    elif "uvloop" in opts.sections:
        out.append(
            Cell(
                name=f"uvloop-{_size(1024)}-c{opts.extras_concurrency}",
                body=1024,
                concurrency=opts.extras_concurrency,
                servers=[
                    baseline,
                    jwksgate,
                    Server("baseline-uvloop", "baseline", loop="uvloop"),
                    Server("jwksgate-uvloop", "jwksgate", loop="uvloop"),
                ],
                setups=[
                    Setup("baseline", "baseline"),
                    Setup("jwksgate", "jwksgate"),
                    Setup("baseline-uvloop", "baseline-uvloop"),
                    Setup("jwksgate-uvloop", "jwksgate-uvloop"),
                ],
            )
        )
    return out


def _have_uvloop() -> bool:
    try:
        metadata.version("uvloop")
    except metadata.PackageNotFoundError:
        return False
    return True


def _size(n: int) -> str:
    return f"{n // 1024}KiB" if n % 1024 == 0 else f"{n}B"


def pools(opts: Options, plan: list[Cell]) -> dict[tuple[str, int], int]:
    """How many tokens each (alg, body) pool needs: the most one proxy process uses."""
    need: dict[tuple[str, int], int] = {}
    seconds = opts.warmup + opts.rounds * max(1, round(opts.duration))
    for cell in plan:
        for setup in cell.setups:
            key = (setup.alg, cell.body)
            if opts.tokens is not None:
                n = opts.tokens
            else:
                # 64 KiB bodies go slower; workers go faster.
                rate = opts.est_rps * (0.5 if cell.body > 16384 else 1.0)
                rate *= cell_server(cell, setup.server).workers
                n = int(rate * seconds) + 1000
            need[key] = max(need.get(key, 0), n)
    if "profile" in opts.sections and opts.tokens is None:
        key = ("RS256", 1024)
        need[key] = max(need.get(key, 0), int(opts.est_rps * (opts.profile_seconds + 3)))
    return need


@contextlib.contextmanager
def environment(opts: Options, plan: list[Cell]) -> Iterator[Env]:
    opts.out.mkdir(parents=True, exist_ok=True)
    logdir = opts.out / "run"
    keys = tokens.ensure_keys(opts.out)
    need = pools(opts, plan)
    bodies = sorted({b for _, b in need} | {1024})
    body_files = {}
    for b in bodies:
        path = opts.out / f"body-{b}.json"
        path.write_bytes(tokens.body_of_size(b))
        body_files[b] = path
    token_files = {}
    pool_size = {}
    for (alg, b), n in sorted(need.items()):
        say(opts, f"tokens: {n} {alg} for the {b} B body")
        token_files[(alg, b)] = tokens.ensure_tokens(
            opts.out, keys, alg, tokens.body_of_size(b), n, opts.sign_processes
        )
        pool_size[(alg, b)] = n
    jwks_path = opts.out / "jwks.json"
    jwks_path.write_bytes(keys.jwks)
    started: list[procs.Proc] = []
    try:
        up_port, jwks_port = procs.free_port(), procs.free_port()
        upstream = procs.start(
            "upstream", ["-m", "bench.servers", "upstream", "--port", str(up_port)], logdir
        )
        started.append(upstream)
        jwks = procs.start(
            "jwks",
            ["-m", "bench.servers", "jwks", "--port", str(jwks_port), "--file", str(jwks_path)],
            logdir,
        )
        started.append(jwks)
        procs.wait_port(up_port)
        procs.wait_port(jwks_port)
        redis_url: str | None = None
        aux = {"upstream": upstream}
        if any(s.store == "redis" for c in plan for s in c.servers):
            redis, redis_port = procs.start_redis(logdir)
            started.append(redis)
            aux["redis"] = redis
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        yield Env(
            opts=opts,
            keys=keys,
            upstream_url=f"http://127.0.0.1:{up_port}",
            jwks_url=f"http://127.0.0.1:{jwks_port}/jwks.json",
            redis_url=redis_url,
            body_files=body_files,
            token_files=token_files,
            pool_size=pool_size,
            aux=aux,
        )
    finally:
        for p in reversed(started):
            p.stop()


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("aiohttp", "jwcrypto", "cryptography", "prometheus-client", "redis", "uvloop",
                 "multidict", "yarl"):  # fmt: skip
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    wrk_version = ""
    with contextlib.suppress(OSError, WrkError, subprocess.SubprocessError):
        res = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, timeout=5)
        wrk_version = (res.stdout or res.stderr).splitlines()[0].strip()
    redis_version = ""
    if shutil.which("redis-server"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            redis_version = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "wrk": wrk_version,
        "redis": redis_version,
    }


def run_memory(opts: Options) -> dict[str, Any]:
    say(opts, f"\n== memory: MemoryReplayStore at {opts.memory_entries} entries (in-process)")
    res = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--entries", str(opts.memory_entries)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=procs.CODE_DIR,
    )
    data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    say(opts, f"  {data['traced_bytes_per_entry']:.0f} B/entry traced (tracemalloc), "
              f"{data['rss_bytes_per_entry']:.0f} B/entry RSS growth")  # fmt: skip
    return data


def run_micro(opts: Options) -> dict[str, Any]:
    say(opts, "\n== micro: the verification steps alone, in-process (µs per call)")
    res = subprocess.run(
        [sys.executable, "-m", "bench.micro", "--iterations", str(opts.micro_iterations),
         "--out", str(opts.out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=procs.CODE_DIR,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    say(opts, "  " + ", ".join(f"{k} {v:.1f}" for k, v in data.items() if k != "iterations"))
    return data


def run_profile(env: Env) -> dict[str, Any]:
    """jwksgate under load (1 KiB, 64 connections) with py-spy sampling it."""
    opts = env.opts
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise RuntimeError("py-spy is not installed (bench/run --profile installs it)")
    say(opts, f"\n== profile: py-spy on jwksgate, 1 KiB body, 64 connections, "
              f"{opts.profile_seconds:g}s")  # fmt: skip
    server = Server("jwksgate", "jwksgate")
    cell = Cell("profile", 1024, 64, [server], [Setup("jwksgate", "jwksgate")])
    proc, url = start_server(env, cell, server)
    raw = opts.out / "profile-raw.txt"
    try:
        _, warm = measure_round(env, proc, url, cell.setups[0], cell, 0, -1, 2)
        start = warm.requests + warm.non_2xx + 100
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(proc.pid), "--rate", "200", "--format", "raw",
             "--output", str(raw), "--duration", str(int(opts.profile_seconds))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)
        rnd, res = measure_round(
            env, proc, url, cell.setups[0], cell, start, 0, opts.profile_seconds
        )
        _, err = spy.communicate(timeout=opts.profile_seconds + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")
    finally:
        proc.stop()
    prof = load_profile(raw)
    text = render_profile(prof)
    (opts.out / "profile-summary.md").write_text(text)
    say(opts, f"  under py-spy: {res.rps:.0f} req/s, {rnd.cpu_us_per_request:.0f} µs CPU/req")
    say(opts, text)
    return {"raw": str(raw), "samples": prof.samples, "summary_md": text, "round": asdict(rnd)}


def render(results: dict[str, Any]) -> str:
    """Markdown tables of the medians and ratios."""
    lines: list[str] = []
    o = results["options"]
    code = results.get("code", {})
    if code:
        dirty = ", ".join(code.get("uncommitted", [])) or "none"
        lines += [f"Code: commit {code.get('commit', '?')}, uncommitted changes: {dirty}."]
    for cell in results["cells"]:
        lines += [
            "",
            f"### {cell['cell']}: {cell['body_bytes']} B body, {cell['concurrency']} connections"
            f" (medians of {o['rounds']} rounds x {o['duration']:g}s)",
            "",
            "| setup | req/s | p50 ms | p99 ms | CPU µs/req (min-max) | proxy cores | "
            "machine busy | ratio req/s | ratio p50 | ratio p99 | ratio CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, s in cell["summary"].items():
            r = s.get("ratio")

            def f(x: float | None) -> str:
                return "" if x is None else f"{x:.2f}"

            ratio = (
                f"{f(r['rps'])} | {f(r['p50'])} | {f(r['p99'])} | {f(r['cpu'])}"
                if r
                else "1 | 1 | 1 | 1"
            )
            notes = ""
            if s["non_2xx"] or s["socket_errors"] or s["short_rounds"]:
                notes = (
                    f" (non-2xx {s['non_2xx']}, socket errors {s['socket_errors']}, "
                    f"short rounds {s['short_rounds']})"
                )
            lines.append(
                f"| {name}{notes} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                f"{s['cpu_us']:.0f} ({s['cpu_us_min']:.0f}-{s['cpu_us_max']:.0f}) | "
                f"{s['proxy_cores']:.2f} | {s['machine_busy_pct']:.0f}% | {ratio} |"
            )
        aux = [
            f"{name} {', '.join(f'{k} {v:.0f}' for k, v in s['aux_cpu_us'].items())}"
            for name, s in cell["summary"].items()
        ]
        lines += ["", "Other processes, CPU µs per request: " + "; ".join(aux) + "."]
    mem = results.get("memory")
    if mem:
        lines += [
            "",
            f"### Replay store memory at {mem['entries']} entries",
            "",
            f"- tracemalloc: {mem['traced_bytes_per_entry']:.0f} bytes per entry",
            f"- RSS growth: {mem['rss_bytes_per_entry']:.0f} bytes per entry",
            f"- key: {mem['key_bytes']} bytes (`<issuer>:` + SHA-256); filled in "
            f"{mem['fill_seconds']:.1f}s",
        ]
    micro = results.get("micro")
    if micro:
        lines += [
            "",
            "### Verification steps alone (in-process, best of 5 batches)",
            "",
            "| step | µs per call |",
            "| --- | ---: |",
        ]
        lines += [f"| {k} | {v:.1f} |" for k, v in micro.items() if k != "iterations"]
    prof = results.get("profile")
    if prof:
        lines += ["", "### Profile (py-spy)", "", prof["summary_md"]]
    return "\n".join(lines) + "\n"


def snapshot(out: Path) -> dict[str, Any]:
    """Copy gateway/ and bench/ under ``out`` and run every child process from the copy: one run
    measures one version of the code, whatever happens to the work tree meanwhile."""
    dest = out / "code"
    shutil.rmtree(dest, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "out")
    for pkg in ("gateway", "bench"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    procs.CODE_DIR = dest
    info: dict[str, Any] = {"snapshot": str(dest)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        info["uncommitted"] = subprocess.run(
            [*git, "status", "--porcelain", "gateway", "bench"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")[:-1]
    return info


def run(opts: Options) -> dict[str, Any]:
    """Run the selected sections; returns (and writes) the results."""
    started = time.monotonic()
    opts.out.mkdir(parents=True, exist_ok=True)
    code = snapshot(opts.out)
    plan = cells(opts)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "code": code,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "cells": [],
    }
    say(opts, json.dumps(results["machine"]))
    say(opts, f"code: {json.dumps(code)}")
    if plan or "profile" in opts.sections:
        with environment(opts, plan) as env:
            for cell in plan:
                results["cells"].append(run_cell(env, cell))
            if "profile" in opts.sections:
                results["profile"] = run_profile(env)
    if "memory" in opts.sections:
        results["memory"] = run_memory(opts)
    if "micro" in opts.sections:
        results["micro"] = run_micro(opts)
    results["seconds"] = time.monotonic() - started
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = render(results)
    (opts.out / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
    (opts.out / f"results-{stamp}.md").write_text(md)
    say(opts, md)
    say(opts, f"took {results['seconds']:.0f}s; results in {opts.out}/results-{stamp}.{{json,md}}")
    return results


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about two minutes: 3 rounds x 2s")
    p.add_argument("--tiny", action="store_true", help="the smoke test's: 1 round of 1s, c=2")
    p.add_argument("--profile", action="store_true", help="also profile jwksgate with py-spy")
    p.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds per round (whole seconds)")
    p.add_argument("--warmup", type=float)
    p.add_argument("--concurrency", help="e.g. 16,64")
    p.add_argument("--bodies", help="body sizes in bytes, e.g. 1024,65536")
    p.add_argument("--tokens", type=int, help="tokens per pool (default: sized from --est-rps)")
    p.add_argument("--est-rps", type=float)
    p.add_argument("--profile-seconds", type=float)
    p.add_argument("--memory-entries", type=int)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    opts = Options()
    if a.quick:
        opts = replace(opts, rounds=3, duration=2.0, warmup=1.0, profile_seconds=10.0)
    if a.tiny:
        opts = replace(
            opts, rounds=1, duration=1.0, warmup=0.0, concurrency=(2,), bodies=(1024,),
            extras_concurrency=2, tokens=500, memory_entries=10_000, profile_seconds=2.0,
            micro_iterations=50,
        )  # fmt: skip
    if a.sections:
        wanted = tuple(s.strip() for s in a.sections.split(",") if s.strip())
        unknown = set(wanted) - set(SECTIONS)
        if unknown:
            p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
        opts = replace(opts, sections=wanted)
    if a.profile and "profile" not in opts.sections:
        opts = replace(opts, sections=(*opts.sections, "profile"))
    for name in ("rounds", "duration", "warmup", "tokens", "est_rps", "profile_seconds",
                 "memory_entries", "out"):  # fmt: skip
        value = getattr(a, name)
        if value is not None:
            opts = replace(opts, **{name: value})
    if a.concurrency:
        opts = replace(opts, concurrency=tuple(int(x) for x in a.concurrency.split(",")))
    if a.bodies:
        opts = replace(opts, bodies=tuple(int(x) for x in a.bodies.split(",")))
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
