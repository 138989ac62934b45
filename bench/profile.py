"""Summarising a py-spy profile recorded with ``--format raw`` (collapsed stacks).

Each line is ``frame;frame;...;leaf count`` with frames like ``handle (gateway/app.py:180)``.
Self time is the leaf frame's; inclusive time counts a function once per sample it appears in.

``python -m bench.profile RAW`` prints the summary of a profile recorded by hand, e.g. with
``py-spy record --pid <jwksgate pid> --format raw --output RAW`` while ``bench/run`` loads it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "categorise", "load_profile", "main", "render_profile"]

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE_RE = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")

# (label, predicate on the set of "func (file)" names in a sample): the first match wins, so the
# specific steps come before the catch-alls.
_STEPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "signature verify (cryptography, via VerifyKey.verify)",
        ("verify (gateway/jwks.py)", "verify (gateway/keys.py)"),
    ),
    ("token parse + base64url + JSON (verify.parse_token)", ("parse_token (gateway/verify.py)",)),
    (
        "header/claims/routing checks",
        (
            "check_header (gateway/verify.py)",
            "check_claims (gateway/verify.py)",
            "route (gateway/verify.py)",
            "candidates (gateway/verify.py)",
            "extract_bearer (gateway/verify.py)",
        ),
    ),
    ("body hash (verify.check_body_hash)", ("check_body_hash (gateway/verify.py)",)),
    (
        "replay store (reserve/commit/release)",
        (
            "reserve (gateway/replay.py)",
            "commit (gateway/replay.py)",
            "release (gateway/replay.py)",
            "replay_key (gateway/verify.py)",
            "replay_ttl (gateway/verify.py)",
            "reserve (gateway/redis_store.py)",
            "commit (gateway/redis_store.py)",
        ),
    ),
    ("access log line (AccessLog.write, logging, json)", ("write (gateway/logs.py)",)),
    ("metrics + record (Gateway._record less the log line)", ("_record (gateway/app.py)",)),
    ("upstream headers (proxy.upstream_headers)", ("upstream_headers (gateway/proxy.py)",)),
    ("upstream request (aiohttp client: Upstream.open)", ("open (gateway/proxy.py)",)),
    ("relay response (Upstream.relay)", ("relay (gateway/proxy.py)",)),
    ("read body (Gateway._read_body)", ("_read_body (gateway/app.py)",)),
    ("rest of Gateway.handle", ("handle (gateway/app.py)",)),
]


@dataclass
class Profile:
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    steps: Counter[str] = field(default_factory=Counter)
    modules: Counter[str] = field(default_factory=Counter)


def _frame(raw: str) -> tuple[str, str]:
    """``(function (short file), short file)`` without line numbers."""
    m = _FRAME_RE.match(raw.strip())
    if m is None:
        return raw.strip(), raw.strip()
    path = _SITE_RE.sub("", m.group("file"))
    path = re.sub(r"^.*/(gateway|bench)/", r"\1/", path)
    return f"{m.group('func')} ({path})", path


def _module(path: str) -> str:
    top = path.split("/", 1)[0]
    if top.endswith(".py"):
        return top[:-3]  # stdlib module
    return top


def _unqualified(name: str) -> str:
    """``VerifyKey.verify (gateway/keys.py)`` -> ``verify (gateway/keys.py)``: py-spy may or may
    not qualify a method with its class."""
    func, sep, file = name.partition(" (")
    return f"{func.rsplit('.', 1)[-1]}{sep}{file}"


def categorise(frames: set[str]) -> str:
    plain = {_unqualified(f) for f in frames}
    for label, names in _STEPS:
        if any(n in plain for n in names):
            return label
    return "event loop, aiohttp server/client outside the handler"


def load_profile(path: Path) -> Profile:
    prof = Profile()
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [
            _frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        prof.samples += count
        names = {name for name, _ in frames}
        prof.self_counts[frames[-1][0]] += count
        for name in names:
            prof.inclusive[name] += count
        prof.steps[categorise(names)] += count
        prof.modules[_module(frames[-1][1])] += count
    return prof


def render_profile(prof: Profile, top: int = 20) -> str:
    if prof.samples == 0:
        return "(no samples)\n"

    def pct(n: int) -> str:
        return f"{100 * n / prof.samples:.1f}"

    lines = [
        f"{prof.samples} samples.",
        "",
        "Where a sample was, by step of the request (first matching step on the stack):",
        "",
        "| step | % samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {pct(v)} |" for k, v in prof.steps.most_common()]
    lines += [
        "",
        "By module of the leaf frame (self time):",
        "",
        "| module | % samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {pct(v)} |" for k, v in prof.modules.most_common(12)]
    lines += [
        "",
        f"Top {top} functions by self time:",
        "",
        "| function | self % | inclusive % |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| `{k}` | {pct(v)} | {pct(prof.inclusive[k])} |"
        for k, v in prof.self_counts.most_common(top)
    ]
    lines += [
        "",
        f"Top {top} gateway functions by inclusive time:",
        "",
        "| function | inclusive % |",
        "| --- | ---: |",
    ]
    gw = [(k, v) for k, v in prof.inclusive.most_common() if "(gateway/" in k][:top]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in gw]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.profile RAW_PROFILE", file=sys.stderr)
        return 2
    print(render_profile(load_profile(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
