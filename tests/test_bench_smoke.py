"""The benchmark harness works end to end. Benchmarks are not tests: nothing here asserts a time
or a rate, only that every part ran, produced numbers, and that wrk's output was parsed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.main import parse_args, run
from bench.profile import load_profile, render_profile
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


@pytest.mark.slow
def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    opts = replace(parse_args(["--tiny", "--out", str(tmp_path)]), quiet=True)
    results = run(opts)

    assert results["machine"]["nproc"] >= 1
    cells = {c["cell"]: c for c in results["cells"]}
    expected = {
        "main-1KiB-c2": {"baseline", "jwksgate"},
        "extras-1KiB-c2": {
            "baseline", "jwksgate", "jwksgate-es256", "redis-workers-1", "redis-workers-2"
        },
        "uvloop-1KiB-c2": {"baseline", "jwksgate", "baseline-uvloop", "jwksgate-uvloop"},
    }  # fmt: skip
    assert set(cells) == set(expected)
    for name, cell in cells.items():
        assert set(cell["summary"]) == expected[name]
        assert len(cell["rounds"]) == len(expected[name])
        for rnd in cell["rounds"]:
            wrk = rnd["wrk"]
            assert wrk["requests"] > 0
            # Every pre-signed token verified and was delivered once: no 401, no 409.
            assert wrk["non_2xx"] == 0
            assert wrk["socket_errors"] == 0
            for key in ("rps", "p50_ms", "p99_ms"):
                assert wrk[key] > 0
            assert rnd["cpu_us_per_request"] >= 0
        for name_, s in cell["summary"].items():
            if name_ != "baseline":
                assert set(s["ratio"]) == {"rps", "p50", "p99", "cpu"}
    mem = results["memory"]
    assert mem["entries"] == 10_000
    assert mem["traced_bytes_per_entry"] > 0
    micro = results["micro"]
    for step in (
        "extract_bearer",
        "parse_token",
        "key_verify",
        "check_claims",
        "floor_sha256_1KiB",
    ):
        assert micro[step] > 0

    written = sorted(tmp_path.glob("results-*.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text())["cells"]
    md = next(tmp_path.glob("results-*.md")).read_text()
    assert "| jwksgate" in md
    assert "Replay store memory" in md
