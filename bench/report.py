"""Medians, the ratios of jwksgate to its peers (with the issue's targets), and the Markdown report.

Pure: works on the plain dicts the run records, so that a results JSON can be re-rendered.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

__all__ = ["RATIOS", "Ratio", "check_line", "ratios", "render", "summarise"]


@dataclass(frozen=True)
class Ratio:
    """``setup`` / ``peer`` for ``metric`` (cpu_us, p99_ms, rps), and the target when there is
    one (the ratio must be at most ``target``; ``at_least`` turns that round)."""

    setup: str
    peer: str
    metric: str
    target: float | None = None
    concurrency: int | None = None  # the target only applies at this many connections
    at_least: bool = False
    why: str = ""


RATIOS: tuple[Ratio, ...] = (
    Ratio("jwksgate", "aiohttp-min", "cpu_us", 1.15, why="CPU vs the minimal aiohttp proxy"),
    Ratio("jwksgate", "apache-openidc", "cpu_us", 0.8, why="CPU vs Apache + mod_auth_openidc"),
    Ratio("jwksgate-redis", "apache-openidc", "cpu_us", 1.0,
          why="CPU with Redis (redis-server included) vs Apache"),
    Ratio("jwksgate", "aiohttp-min", "p99_ms", 1.5, concurrency=16,
          why="p99 vs the minimal aiohttp proxy (target at c=16)"),
    Ratio("jwksgate", "aiohttp-jwcrypto", "cpu_us", why="CPU vs the naive jwcrypto proxy"),
    Ratio("jwksgate", "haproxy", "cpu_us", why="CPU distance to HAProxy"),
    Ratio("jwksgate", "haproxy", "rps", why="req/s distance to HAProxy"),
    Ratio("jwksgate", "nginx", "cpu_us", why="CPU vs nginx plain proxy"),
    Ratio("jwksgate-redis-w2", "jwksgate-redis", "rps", why="req/s scaling with workers: 2"),
    Ratio("jwksgate-uvloop", "jwksgate", "cpu_us", why="CPU on uvloop vs on asyncio's loop"),
    Ratio("jwksgate-uvloop", "jwksgate", "p99_ms", why="p99 on uvloop vs on asyncio's loop"),
    Ratio("jwksgate", "jwksgate@compared", "cpu_us", why="CPU vs the --compare revision"),
    Ratio("jwksgate", "jwksgate@compared", "p99_ms", why="p99 vs the --compare revision"),
    Ratio("jwksgate-redis", "jwksgate-redis@compared", "cpu_us",
          why="CPU with Redis vs the --compare revision"),
)  # fmt: skip


def summarise(names: list[str], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setup: medians over its rounds (and the CPU's spread)."""
    out: dict[str, Any] = {}
    for name in names:
        rs = [r for r in rounds if r["setup"] == name]
        if not rs:
            continue
        cpu = [r["cpu_us_per_request"] for r in rs]
        out[name] = {
            "rounds": len(rs),
            "rps": statistics.median(r["wrk"]["rps"] for r in rs),
            "p50_ms": statistics.median(r["wrk"]["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["wrk"]["p99_ms"] for r in rs),
            "cpu_us": statistics.median(cpu),
            "cpu_us_min": min(cpu),
            "cpu_us_max": max(cpu),
            "cores": statistics.median(r["cores"] for r in rs),
            "backend_cpu_us": statistics.median(r["backend_cpu_us_per_request"] for r in rs),
            "machine_busy_pct": statistics.median(r["machine_busy_pct"] for r in rs),
            "requests": sum(r["wrk"]["requests"] for r in rs),
            "non_2xx": sum(r["wrk"]["non_2xx"] for r in rs),
            "socket_errors": sum(r["wrk"]["socket_errors"] for r in rs),
            "short_rounds": sum(bool(r["short"]) for r in rs),
        }
    return out


def ratios(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``RATIOS`` entry for every cell where both setups were measured."""
    out = []
    for cell in cells:
        s = cell["summary"]
        for r in RATIOS:
            if r.setup not in s or r.peer not in s or not s[r.peer][r.metric]:
                continue
            value = s[r.setup][r.metric] / s[r.peer][r.metric]
            applies = r.target is not None and r.concurrency in (None, cell["concurrency"])
            met = None
            if applies and r.target is not None:
                met = value >= r.target if r.at_least else value <= r.target
            out.append({
                "cell": cell["cell"], "setup": r.setup, "peer": r.peer, "metric": r.metric,
                "value": value, "target": r.target if applies else None, "met": met, "why": r.why,
            })  # fmt: skip
    return out


def check_line(check: dict[str, Any]) -> str:
    """``valid 200, claims ok; refused: no_token 401, ...; not checked: body_hash 200``."""
    o = check["outcomes"]
    valid = [f"{x['name'].replace('_', ' ')} {x['status']}" for x in o if x["name"] == "valid"]
    claims = [x for x in o if x["name"] == "claims_reach_backend"]
    head = ", ".join(valid + [f"claims {'ok' if x['ok'] else 'MISSING'}" for x in claims])
    refused = [
        f"{x['name']} {x['status']}{'' if x['ok'] else ' FAILED'}"
        for x in o
        if x["enforced"] and x["name"] not in ("valid", "claims_reach_backend")
    ]
    loose = [f"{x['name']} {x['status']}" for x in o if not x["enforced"]]
    parts = [head]
    if refused:
        parts.append("refused: " + ", ".join(refused))
    if loose:
        parts.append("not checked: " + ", ".join(loose))
    return "; ".join(parts)


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def render(results: dict[str, Any], chart_name: str | None = None) -> str:
    """The report: setups and their checks, one table per cell, the ratios and targets."""
    o = results["options"]
    m = results["machine"]
    lines = [
        f"Run of {results['when']}: {o['rounds']} rounds x {o['duration']:g}s per setup and cell, "
        f"setups in turn, event loop {o['loop']}; {m['nproc']} CPUs ({m['cpu_model']}), "
        f"{m.get('os', '')}, kernel {m['kernel']}, Python {m['python']}.",
    ]
    code = results.get("code", {})
    if code:
        dirty = ", ".join(code.get("uncommitted", [])) or "none"
        lines.append(f"Code: commit {code.get('commit', '?')}, uncommitted changes: {dirty}.")
    progs = ", ".join(f"{k} {v}" for k, v in m.get("programs", {}).items() if v)
    lines += [f"Programs: {progs}.", ""]
    if results.get("skipped"):
        lines += ["Not measured:", ""]
        lines += [f"- {why}" for why in results["skipped"].values()]
        lines.append("")
    lines += ["### Setups and what they were checked for", "",
              "| setup | what | check results (status answered) | cannot check |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for name, s in results["setups"].items():
        check = results["checks"].get(name)
        got = check_line(check) if check else ""
        lines.append(f"| {name} | {s['description']} | {got} | {s['cannot'] or '-'} |")
    for cell in results["cells"]:
        lines += [
            "",
            f"### {cell['cell']}: {cell['body_bytes']} B body, {cell['concurrency']} connections "
            f"(medians of {o['rounds']} rounds)",
            "",
            "| setup | req/s | p50 ms | p99 ms | CPU µs/req (min-max) | cores | backend µs/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, s in cell["summary"].items():
            notes = ""
            if s["non_2xx"] or s["socket_errors"] or s["short_rounds"]:
                notes = (f" (non-2xx {s['non_2xx']}, socket errors {s['socket_errors']}, "
                         f"short rounds {s['short_rounds']})")  # fmt: skip
            lines.append(
                f"| {name}{notes} | {s['rps']:.0f} | {_f(s['p50_ms'])} | {_f(s['p99_ms'])} | "
                f"{s['cpu_us']:.0f} ({s['cpu_us_min']:.0f}-{s['cpu_us_max']:.0f}) | "
                f"{_f(s['cores'])} | {s['backend_cpu_us']:.0f} |"
            )
    rs = results.get("ratios", [])
    if rs:
        cells = [c["cell"] for c in results["cells"]]
        lines += ["", "### Ratios (same run)", "",
                  "| ratio | target | " + " | ".join(cells) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in cells) + " |"]  # fmt: skip
        for r in RATIOS:
            key = (r.setup, r.peer, r.metric)
            row = {x["cell"]: x for x in rs if (x["setup"], x["peer"], x["metric"]) == key}
            if not row:
                continue
            target = "" if r.target is None else f"≤ {r.target:g}"
            if r.concurrency is not None and r.target is not None:
                target += f" at c={r.concurrency}"
            vals = []
            for c in cells:
                x = row.get(c)
                if x is None:
                    vals.append("")
                    continue
                mark = {True: " ✓", False: " ✗", None: ""}[x["met"]]
                vals.append(f"{x['value']:.2f}{mark}")
            label = f"{r.setup} / {r.peer} {r.metric.removesuffix('_us').removesuffix('_ms')}"
            lines.append(f"| {label} ({r.why}) | {target} | " + " | ".join(vals) + " |")
    if chart_name:
        lines += ["", f"![CPU per push and p99 per setup]({chart_name})"]
    return "\n".join(lines) + "\n"
