"""The benchmark harness works end to end. Benchmarks are not tests: nothing here asserts a time
or a rate, only that every setup was checked and passed, was measured, that the ratios were
computed from the same run, and that wrk's output was parsed."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench import setups, tokens
from bench.main import parse_args, run
from bench.profile import load_profile, render_profile
from bench.report import RATIOS, ratios
from bench.setups import SPECS
from bench.wrk import WrkError, parse_wrk_output

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:18765
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    98.26us   94.03us   1.23ms   98.99%
    Req/Sec     0.00      0.00     0.00      -nan%
  298 requests in 1.00s, 45.11KB read
  Non-2xx or 3xx responses: 3
Requests/sec:    297.97
Transfer/sec:     45.10KB
WRK_JSON {"requests":298,"duration_us":1000101,"bytes":46190,"connect_errors":0,"read_errors":0,\
"write_errors":1,"status_errors":3,"timeouts":0,"p50_us":87,"p90_us":97,"p99_us":203,\
"max_us":1227,"mean_us":98.3}
"""


def test_wrk_output_is_parsed() -> None:
    r = parse_wrk_output(WRK_OUTPUT)
    assert r.requests == 298
    assert r.duration_s == pytest.approx(1.000101)
    assert r.rps == pytest.approx(298 / 1.000101)
    assert r.text_rps == pytest.approx(297.97)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (0.087, 0.097, 0.203, 1.227)
    assert r.non_2xx == 3
    assert r.socket_errors == 1


def test_wrk_output_without_the_script_line_is_an_error() -> None:
    with pytest.raises(WrkError):
        parse_wrk_output(WRK_OUTPUT.split("WRK_JSON")[0])
    with pytest.raises(WrkError):
        parse_wrk_output(WRK_OUTPUT.replace("298 requests", "297 requests"))


def test_profile_summary_counts_samples(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (gateway/__main__.py:9);handle (/x/gateway/app.py:180);"
        "verify (/x/gateway/keys.py:60) 3\n"
        "<module> (gateway/__main__.py:9);_run_once (/usr/lib/python3.11/asyncio/base_events.py:1)"
        " 1\n"
    )
    prof = load_profile(raw)
    assert prof.samples == 4
    assert prof.self_counts["verify (gateway/keys.py)"] == 3
    assert prof.inclusive["handle (gateway/app.py)"] == 3
    assert "75.0" in render_profile(prof)


def _summary(cpu: float, p99: float, rps: float) -> dict[str, float]:
    return {"cpu_us": cpu, "p99_ms": p99, "rps": rps}


def test_ratios_compare_setups_of_the_same_cell_against_their_targets() -> None:
    cells = [
        {
            "cell": "1KiB-c16",
            "concurrency": 16,
            "summary": {
                "aiohttp-min": _summary(300, 2.0, 3000),
                "apache-openidc": _summary(250, 1.0, 4000),
                "jwksgate": _summary(330, 4.0, 2500),
            },
        },
        {
            "cell": "1KiB-c64",
            "concurrency": 64,
            "summary": {"aiohttp-min": _summary(300, 2.0, 3000), "jwksgate": _summary(360, 4, 1)},
        },
    ]
    got = {(r["cell"], r["peer"], r["metric"]): r for r in ratios(cells)}
    cpu = got[("1KiB-c16", "aiohttp-min", "cpu_us")]
    assert cpu["value"] == pytest.approx(1.1)
    assert (cpu["target"], cpu["met"]) == (1.15, True)
    apache = got[("1KiB-c16", "apache-openidc", "cpu_us")]
    assert apache["value"] == pytest.approx(1.32)
    assert apache["met"] is False
    assert got[("1KiB-c16", "aiohttp-min", "p99_ms")]["met"] is False
    # The p99 target is for c=16 only; at c=64 the ratio is reported without one.
    p99_64 = got[("1KiB-c64", "aiohttp-min", "p99_ms")]
    assert (p99_64["value"], p99_64["target"], p99_64["met"]) == (2.0, None, None)
    # No peer measured in a cell: no ratio to it.
    assert ("1KiB-c64", "apache-openidc", "cpu_us") not in got
    assert not any(r["setup"] == "jwksgate-redis" for r in got.values())


@pytest.mark.slow
def test_bench_checks_every_setup_and_measures_them_in_one_run(tmp_path: Path) -> None:
    opts = replace(parse_args(["--tiny", "--out", str(tmp_path)]), quiet=True)
    results = run(opts)

    assert results["machine"]["nproc"] >= 1
    measured = set(results["setups"])
    # What cannot run here is skipped only because its program is not installed: no setup
    # failed to start or failed its checks.
    for why in results["skipped"].values():
        assert "is not installed" in why, why
    assert measured | set(results["skipped"]) == {s.name for s in SPECS}
    # The Python setups need nothing but this environment.
    assert {"backend", "aiohttp-min", "aiohttp-jwcrypto", "jwksgate"} <= measured
    for name in measured:
        check = results["checks"][name]
        assert check["passed"], check
        spec = next(s for s in SPECS if s.name == name)
        statuses = {o["name"]: o["status"] for o in check["outcomes"]}
        assert 200 <= statuses["valid"] < 300
        for refused in spec.enforces:
            assert statuses[refused] == (409 if refused == "replay" else 401), (name, refused)
        if spec.sub_header is not None:
            assert next(o for o in check["outcomes"] if o["name"] == "claims_reach_backend")["ok"]
    assert set(results["checks"]["jwksgate"]["outcomes"][0]) >= {"name", "status", "ok"}

    (cell,) = results["cells"]
    assert set(cell["summary"]) == measured
    assert len(cell["rounds"]) == len(measured)
    for rnd in cell["rounds"]:
        wrk = rnd["wrk"]
        assert wrk["requests"] > 0
        # Every pre-signed token verified and was delivered once: no 401, no 409.
        assert wrk["non_2xx"] == 0, rnd["setup"]
        assert wrk["socket_errors"] == 0, rnd["setup"]
        for key in ("rps", "p50_ms", "p99_ms"):
            assert wrk[key] > 0
        assert rnd["cpu_us_per_request"] > 0
    # Every ratio whose two setups ran is computed, from this run's numbers.
    expected = {(r.setup, r.peer, r.metric) for r in RATIOS if {r.setup, r.peer} <= measured}
    got = {(r["setup"], r["peer"], r["metric"]) for r in results["ratios"]}
    assert got == expected
    assert ("jwksgate", "aiohttp-min", "cpu_us") in got
    for r in results["ratios"]:
        s = cell["summary"]
        assert r["value"] == pytest.approx(s[r["setup"]][r["metric"]] / s[r["peer"]][r["metric"]])

    written = sorted(tmp_path.glob("results-*.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text())["ratios"] == results["ratios"]
    md = next(tmp_path.glob("results-*.md")).read_text()
    assert "| jwksgate |" in md
    assert "jwksgate / aiohttp-min cpu" in md
    if importlib.util.find_spec("matplotlib") is not None:
        png = Path(results["chart"])
        assert png.read_bytes().startswith(b"\x89PNG")


def test_the_uvloop_setup_runs_on_uvloop_and_the_others_on_the_runs_loop(tmp_path: Path) -> None:
    keys = tokens.Keys(rsa_pem=b"", ec_pem=b"", kids={}, jwks=b"")
    ctx = setups.Context(tmp_path, keys, 1, "http://j", "https://j", tmp_path, tmp_path)
    by_name = {s.name: s for s in SPECS}
    for loop in ("asyncio", "uvloop"):
        ctx.loop = loop
        assert setups.jwksgate_env(ctx, by_name["jwksgate"]) == {"JWKSGATE_EVENT_LOOP": loop}
        assert setups.jwksgate_env(ctx, by_name["jwksgate-uvloop"]) == {
            "JWKSGATE_EVENT_LOOP": "uvloop"
        }
    # uvloop is a test extra: the setup can run here.
    assert setups.missing_program(by_name["jwksgate-uvloop"]) is None


def test_compare_measures_each_jwksgate_setup_at_the_other_revision(tmp_path: Path) -> None:
    by_name = {s.name: s for s in SPECS}
    redis = setups.compare_spec("v1", "abc1234", tmp_path, by_name["jwksgate-redis"])
    assert (redis.name, redis.store, redis.code) == ("jwksgate-redis@compared", "redis", tmp_path)
    assert redis.enforces == by_name["jwksgate-redis"].enforces
    memory = setups.compare_spec("v1", "abc1234", tmp_path)
    assert (memory.name, memory.store) == (setups.COMPARED, "memory")
    assert "at v1 (abc1234)" in memory.description
    # Each has its ratio row against the setup it copies.
    rows = {(r.setup, r.peer) for r in RATIOS}
    assert {("jwksgate", memory.name), ("jwksgate-redis", redis.name)} <= rows
