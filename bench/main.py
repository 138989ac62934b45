"""The benchmark: jwksgate against real peers, in one interleaved run.

One run starts, each as its own process(es) on 127.0.0.1: the backend, a JWKS server (http and
https, the latter with a throwaway CA), and every setup of ``bench.setups.SPECS`` whose program
is installed (the others are skipped with a line saying why). Each setup is checked first
(``bench.checks``); one that fails its checks is not measured. Then, for every cell (connections
x body size), wrk drives the setups round by round (A, B, C, ..., A, B, C, ...) with a pre-signed,
unique RS256 token per request, and the CPU time of all the setup's processes (utime + stime from
/proc) is divided by the requests completed. Medians over rounds, the ratios of jwksgate to each
peer, and a chart are written to ``bench/out/results-*.{json,md,png}``.

``--quick`` takes about four minutes; the default about fifteen; ``--tiny`` is the smoke test's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import chart, procs, report, setups, tls, tokens
from bench.checks import check_setup
from bench.machine import describe_machine
from bench.wrk import WrkResult, run_wrk

__all__ = ["Options", "main", "run"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out"


@dataclass
class Options:
    out: Path = DEFAULT_OUT
    rounds: int = 5
    duration: float = 2.0
    warmup: float = 2.0
    concurrency: tuple[int, ...] = (16, 64)
    bodies: tuple[int, ...] = (1024, 65536)
    loop: str = "asyncio"
    only: tuple[str, ...] = ()  # setup names; empty: all
    # The most requests per second a round is given tokens for (small and large bodies): bounds
    # the token pools and wrk's memory. A setup faster than this ends its round early ("short").
    token_rps: tuple[float, float] = (8000.0, 4000.0)
    sign_processes: int | None = None
    quiet: bool = False
    compare: str | None = None  # a git revision whose jwksgate is measured too


@dataclass
class Round:
    setup: str
    index: int
    wrk: dict[str, Any]
    cpu_us_per_request: float
    cores: float
    backend_cpu_us_per_request: float
    machine_busy_pct: float
    short: bool


@dataclass
class Env:
    opts: Options
    keys: tokens.Keys
    body_files: dict[int, Path]
    token_files: dict[int, Path]
    pool_size: dict[int, int]
    backend: procs.Proc
    running: dict[str, setups.Running] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # setup -> why it did not start
    cursor: dict[tuple[str, int], int] = field(default_factory=dict)


def say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


def _size(n: int) -> str:
    return f"{n // 1024}KiB" if n % 1024 == 0 else f"{n}B"


def _token_rps(opts: Options, body: int) -> float:
    return opts.token_rps[0] if body <= 16384 else opts.token_rps[1]


def pool_sizes(opts: Options) -> dict[int, int]:
    """Tokens per body size: the most one replay-checking setup can use in the whole run (every
    round takes at most ``token_rps`` x its seconds, and skips the tokens possibly in flight)."""
    out = {}
    skip = max(opts.concurrency) + 8
    for body in opts.bodies:
        per_second = _token_rps(opts, body)
        seconds = max(1, round(opts.duration))
        need = len(opts.concurrency) * opts.rounds * (int(per_second * seconds) + 1 + skip)
        if opts.warmup > 0 and body == opts.bodies[0]:
            need += int(per_second * max(1, round(opts.warmup))) + 1 + skip
        out[body] = need + 100
    return out


# -- one round ---------------------------------------------------------------------------------


def measure_round(env: Env, name: str, body: int, concurrency: int, index: int,
                  duration: float) -> tuple[Round, WrkResult]:  # fmt: skip
    running = env.running[name]
    fresh = running.spec.fresh_tokens
    start = env.cursor.get((name, body), 0) if fresh else 0
    pool = env.pool_size[body]
    count = min(pool - start, int(_token_rps(env.opts, body) * max(1, round(duration))) + 1)
    if count <= concurrency:
        raise RuntimeError(f"{name}: the {body} B token pool is used up (raise --token-rps)")
    busy0, total0 = procs.cpu_busy_ticks()
    before, backend_before = running.cpu_ticks(), env.backend.cpu_ticks()
    result = run_wrk(
        running.url,
        tokens=env.token_files[body],
        start=start,
        count=count,
        body=env.body_files[body],
        concurrency=concurrency,
        duration=duration,
    )
    time.sleep(0.05)  # the last in-flight requests finish on the setup's side
    after, backend_after = running.cpu_ticks(), env.backend.cpu_ticks()
    busy1, total1 = procs.cpu_busy_ticks()
    if fresh:
        # Requests still in flight when wrk stopped may have used their tokens too.
        env.cursor[(name, body)] = start + result.requests + result.non_2xx + concurrency + 8
    requests = max(result.requests, 1)
    cpu_s = (after - before) / procs.CLOCK_TICKS
    backend_s = (backend_after - backend_before) / procs.CLOCK_TICKS
    rnd = Round(
        setup=name,
        index=index,
        wrk=result.as_dict(),
        cpu_us_per_request=cpu_s * 1e6 / requests,
        cores=cpu_s / result.duration_s if result.duration_s else 0.0,
        backend_cpu_us_per_request=0.0 if name == "backend" else backend_s * 1e6 / requests,
        machine_busy_pct=100 * (busy1 - busy0) / max(total1 - total0, 1),
        short=result.requests + result.non_2xx + concurrency >= count,
    )
    return rnd, result


def run_cell(env: Env, body: int, concurrency: int) -> dict[str, Any]:
    opts = env.opts
    names = list(env.running)
    cell = f"{_size(body)}-c{concurrency}"
    say(opts, f"\n== {cell}: {body} B body, {concurrency} connections, {opts.rounds} rounds x "
              f"{opts.duration:g}s, in turn: {', '.join(names)}")  # fmt: skip
    rounds: list[Round] = []
    for i in range(opts.rounds):
        for name in names:
            rnd, res = measure_round(env, name, body, concurrency, i, opts.duration)
            rounds.append(rnd)
            flag = " SHORT (tokens used up)" if rnd.short else ""
            bad = f" non-2xx {res.non_2xx}" if res.non_2xx else ""
            errs = f" socket errors {res.socket_errors}" if res.socket_errors else ""
            say(opts, f"  round {i + 1} {name:<18} {res.rps:8.0f} req/s  "
                      f"p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
                      f"{rnd.cpu_us_per_request:6.0f} µs CPU/req  "
                      f"busy {rnd.machine_busy_pct:3.0f}%{bad}{errs}{flag}")  # fmt: skip
    return {
        "cell": cell,
        "body_bytes": body,
        "concurrency": concurrency,
        "rounds": [asdict(r) for r in rounds],
        "summary": report.summarise(names, [asdict(r) for r in rounds]),
    }


# -- the environment ---------------------------------------------------------------------------


@contextlib.contextmanager
def environment(opts: Options, specs: list[setups.SetupSpec]) -> Iterator[Env]:
    out = opts.out
    logdir = out / "run"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True, exist_ok=True)
    keys = tokens.ensure_keys(out)
    cert = tls.ensure_server_cert(out)
    public_key = out / "keys" / "rsa-public.pem"
    public_key.write_bytes(tokens.public_pem(keys))
    need = pool_sizes(opts)
    body_files, token_files = {}, {}
    for b in sorted(need):
        path = out / f"body-{b}.json"
        path.write_bytes(tokens.body_of_size(b))
        body_files[b] = path
        say(opts, f"tokens: {need[b]} RS256 for the {b} B body")
        token_files[b] = tokens.ensure_tokens(
            out, keys, "RS256", tokens.body_of_size(b), need[b], opts.sign_processes
        )
    jwks_path = out / "jwks.json"
    jwks_path.write_bytes(keys.jwks)
    started: list[procs.Proc] = []
    env: Env | None = None
    shared = Path(tempfile.mkdtemp(prefix="jwksgate-bench-"))
    shared.chmod(0o755)
    try:
        backend_port, jwks_port, jwks_tls_port = (procs.free_port() for _ in range(3))
        backend = procs.start(
            "backend", ["-m", "bench.servers", "upstream", "--port", str(backend_port)], logdir
        )
        started.append(backend)
        jwks = procs.start(
            "jwks",
            ["-m", "bench.servers", "jwks", "--port", str(jwks_port), "--file", str(jwks_path),
             "--tls-port", str(jwks_tls_port), "--cert", str(cert.cert), "--key", str(cert.key)],
            logdir,
        )  # fmt: skip
        started.append(jwks)
        procs.wait_port(backend_port, proc=backend)
        procs.wait_port(jwks_tls_port, proc=jwks)
        ctx = setups.Context(
            out=out,
            keys=keys,
            backend_port=backend_port,
            jwks_url=f"http://127.0.0.1:{jwks_port}/jwks.json",
            jwks_https_url=f"https://127.0.0.1:{jwks_tls_port}/jwks.json",
            ca_file=cert.ca,
            public_key=public_key,
            shared_dir=shared,
            loop=opts.loop,
        )
        env = Env(opts, keys, body_files, token_files, need, backend)
        if any(spec.kind == "backend" for spec in specs):
            env.running["backend"] = setups.Running(
                setups.SPECS[0], f"http://127.0.0.1:{backend_port}", [backend]
            )
        for spec in specs:
            if spec.kind == "backend":
                continue
            say(opts, f"starting {spec.name}: {spec.description}")
            try:
                env.running[spec.name] = setups.start_setup(ctx, spec)
            except RuntimeError as e:
                env.failed[spec.name] = f"{spec.name}: not measured, it did not start: {e}"
                say(opts, env.failed[spec.name])
        yield env
    finally:
        if env is not None:
            for name, r in env.running.items():
                if name != "backend":
                    r.stop()
        for p in reversed(started):
            p.stop()
        # The C peers' logs are kept with the others; then the shared directory goes.
        for log in shared.glob("*/error.log"):
            with contextlib.suppress(OSError):
                shutil.copyfile(log, logdir / f"{log.parent.name}-error.log")
        shutil.rmtree(shared, ignore_errors=True)


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


def export_revision(ref: str, out: Path) -> Path:
    """``gateway/`` at git revision ``ref``, under ``out/compare/<short sha>``."""
    git = ["git", "-C", str(ROOT)]
    sha = subprocess.run([*git, "rev-parse", "--short", ref], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()  # fmt: skip
    dest = out / "compare" / sha
    if not (dest / "gateway").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run([*git, "archive", sha, "gateway"], capture_output=True,
                                 timeout=60, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, timeout=60, check=True)
    return dest


def run(opts: Options) -> dict[str, Any]:
    """Check and measure every setup that can run here; returns (and writes) the results."""
    started = time.monotonic()
    opts.out.mkdir(parents=True, exist_ok=True)
    code = snapshot(opts.out)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": describe_machine(),
        "code": code,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "setups": {},
        "skipped": {},
        "checks": {},
        "cells": [],
    }
    say(opts, json.dumps(results["machine"]))
    wanted = [s for s in setups.SPECS if not opts.only or s.name in opts.only]
    if opts.compare:
        compared = export_revision(opts.compare, opts.out)
        results["code"]["compared"] = {"ref": opts.compare, "commit": compared.name}
        bases = [s for s in wanted if s.name in setups.COMPARABLE]
        if not bases:
            wanted.append(setups.compare_spec(opts.compare, compared.name, compared))
        for base in bases:
            spec = setups.compare_spec(opts.compare, compared.name, compared, base)
            wanted.insert(wanted.index(base) + 1, spec)
    specs = []
    for spec in wanted:
        why = setups.missing_program(spec)
        if why is None:
            specs.append(spec)
        else:
            say(opts, why)
            results["skipped"][spec.name] = why
    with environment(opts, specs) as env:
        results["skipped"].update(env.failed)
        check_body = tokens.body_of_size(opts.bodies[0])
        for name, running in list(env.running.items()):
            check = check_setup(running.spec, running.url, env.keys, check_body)
            results["checks"][name] = check.as_dict()
            if check.passed:
                say(opts, f"check {name}: passed ({report.check_line(check.as_dict())})")
            else:
                why = f"{name}: not measured, its checks failed: {'; '.join(check.failures())}"
                say(opts, why)
                results["skipped"][name] = why
                running.stop()
                del env.running[name]
        for name, running in env.running.items():
            s = running.spec
            results["setups"][name] = {"description": s.description, "enforces": sorted(s.enforces),
                                       "cannot": s.cannot}  # fmt: skip
        if opts.warmup > 0:
            for name in env.running:
                body, c = opts.bodies[0], opts.concurrency[0]
                measure_round(env, name, body, c, -1, opts.warmup)
        for body in opts.bodies:
            for c in opts.concurrency:
                results["cells"].append(run_cell(env, body, c))
        for name, running in env.running.items():
            results["setups"][name]["rss_mib_end"] = running.rss_kib() / 1024
    results["ratios"] = report.ratios(results["cells"])
    results["seconds"] = time.monotonic() - started
    stamp = time.strftime("%Y%m%d-%H%M%S")
    png = opts.out / f"results-{stamp}.png"
    drawn = chart.draw(results, png)
    results["chart"] = str(png) if drawn is None else None
    if drawn is not None:
        say(opts, f"no chart: {drawn}")
    md = report.render(results, chart_name=png.name if drawn is None else None)
    (opts.out / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
    (opts.out / f"results-{stamp}.md").write_text(md)
    say(opts, md)
    say(opts, f"took {results['seconds']:.0f}s; results in {opts.out}/results-{stamp}.*")
    return results


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about four minutes: 3 rounds x 1s")
    p.add_argument("--tiny", action="store_true", help="the smoke test's: 1 round of 1s, c=2")
    p.add_argument("--only", help="comma-separated setup names: " +
                   ",".join(s.name for s in setups.SPECS))  # fmt: skip
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds per round (whole seconds)")
    p.add_argument("--warmup", type=float)
    p.add_argument("--concurrency", help="e.g. 16,64")
    p.add_argument("--bodies", help="body sizes in bytes, e.g. 1024,65536")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help="event loop of jwksgate and the aiohttp peers (default asyncio)",
    )
    p.add_argument("--token-rps", help="small,large: the most req/s a round has tokens for")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--compare",
        metavar="REF",
        help="also measure jwksgate (memory store) at git revision REF, e.g. main~1",
    )
    a = p.parse_args(argv)
    opts = Options()
    if a.quick:
        opts = replace(opts, rounds=3, duration=1.0, warmup=1.0)
    if a.tiny:
        opts = replace(opts, rounds=1, duration=1.0, warmup=0.0, concurrency=(2,),
                       bodies=(1024,), token_rps=(1500.0, 1500.0))  # fmt: skip
    for name in ("rounds", "duration", "warmup", "loop", "compare"):
        value = getattr(a, name)
        if value is not None:
            opts = replace(opts, **{name: value})
    if a.out is not None:
        # Child processes run elsewhere (from the code snapshot): paths must be absolute.
        opts = replace(opts, out=a.out.resolve())
    if a.only:
        names = tuple(x.strip() for x in a.only.split(",") if x.strip())
        unknown = set(names) - {s.name for s in setups.SPECS}
        if unknown:
            p.error(f"unknown setups {sorted(unknown)}")
        opts = replace(opts, only=names)
    if a.concurrency:
        opts = replace(opts, concurrency=tuple(int(x) for x in a.concurrency.split(",")))
    if a.bodies:
        opts = replace(opts, bodies=tuple(int(x) for x in a.bodies.split(",")))
    if a.token_rps:
        small, large = (float(x) for x in a.token_rps.split(","))
        opts = replace(opts, token_rps=(small, large))
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
