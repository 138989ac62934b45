"""``jwksgate check-config`` says where each JWT issuer's token is read, the readiness mode, and
how many requests may wait for a JWKS refetch."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

CONFIG = """\
readiness: all_issuers
limits: {max_inflight: 64}
upstream: {url: "http://127.0.0.1:1"}
issuers:
  - name: bearer
    issuer: https://bearer.test
    jwks_url: https://bearer.test/jwks.json
    path_prefix: /bearer
  - name: whole
    issuer: https://whole.test
    jwks_url: https://whole.test/jwks.json
    path_prefix: /whole
    token_from: {header: X-Webhook-Token}
  - name: query
    issuer: https://query.test
    jwks_url: https://query.test/jwks.json
    path_prefix: /query
    token_from: {query: access_token, keep_token: true}
"""


def test_summary_prints_token_from_and_readiness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "readiness all_issuers" in out
    assert "awaiting a JWKS refetch <= 2 per JWT issuer (<= 6 of 64 in flight)" in out
    blocks = out.split("  - ")[1:]
    assert [b.split(":", 1)[0] for b in blocks] == ["bearer", "whole", "query"]
    assert "token_from header Authorization scheme Bearer\n" in blocks[0]
    assert "token_from header X-Webhook-Token (whole value)\n" in blocks[1]
    assert "token_from query access_token  keep_token true\n" in blocks[2]
    assert out.rstrip().endswith("config OK")
