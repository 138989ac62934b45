"""`jwksgate demo` end to end, as a newcomer runs it (with --no-wait so it exits)."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_forwarded_and_refused_pushes_with_reasons() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--no-wait", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {line.split("  ")[1].strip(): line for line in out.stdout.splitlines() if "  " in line}
    assert " 200 " in rows["valid push"] and "yes" in rows["valid push"]
    for case, reason in [
        ("replay of a delivered push", "replayed"),
        ("body tampered after signing", "body_hash_mismatch"),
        ("expired token", "expired"),
        ('alg "none"', "disallowed_algorithm"),
        ("signed by an unknown key", "bad_signature"),
        ("token from another issuer", "unknown_issuer"),
        ("no token at all", "missing_token"),
    ]:
        assert reason in rows[case] and rows[case].rstrip().endswith("no"), rows[case]
    assert "backend saw X-Jwt-Sub: demo-agent" in rows["spoofed X-Jwt-Sub header"]
    assert " 200 " in rows["A2A sample push, old-httpx spacing"]
    assert "validationToken=demo-challenge -> demo-challenge" in out.stdout
    assert "curl -i -X POST" in out.stdout
