"""What a config problem tells the reader: the intended key for a misspelt one, the value found and
the form expected, and the cause before its effects (or instead of them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

ISSUER = {"name": "a", "jwks_url": "https://a.example/jwks.json"}


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.problems


def test_a_misspelt_required_key_is_named_and_its_effect_is_not_reported() -> None:
    """jwks_ulr is why jwks_url is missing: "jwks_url: is required" would send the reader
    after the wrong fix."""
    found = problems({"issuers": [{"name": "a", "jwks_ulr": "https://a.example/jwks.json"}]})
    assert found == ["issuers[0].jwks_ulr: unknown key; did you mean jwks_url?"]


def test_an_unknown_key_comes_before_the_required_key_it_may_stand_for() -> None:
    found = problems({"issuers": [{"name": "a", "the_jwks": "https://a.example/jwks.json"}]})
    assert found == ["issuers[0].the_jwks: unknown key", "issuers[0].jwks_url: is required"]


def test_a_misspelt_type_comes_before_what_the_default_type_then_requires() -> None:
    found = problems({"issuers": [{"name": "a", "type": "static_tokens"}]})
    assert found[0].startswith("issuers[0].type: must be one of jwt, static_token, "), found
    assert found[0].endswith('not "static_tokens"; did you mean static_token?'), found
    assert found[1:] == ["issuers[0].jwks_url: is required"]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"isuers": [ISSUER]}, "isuers: unknown key; did you mean issuers?"),
        (
            {"issuers": [ISSUER], "replay": {"store": "redis", "redis_ulr": "redis://r"}},
            "replay.redis_ulr: unknown key; did you mean redis_url?",
        ),
        (
            {"issuers": [{**ISSUER, "algoritms": ["RS256"]}]},
            "issuers[0].algoritms: unknown key; did you mean algorithms?",
        ),
    ],
)
def test_did_you_mean_replaces_the_effect_at_every_level(data: Any, line: str) -> None:
    assert problems(data) == [line]


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (8080, 'listen: 8080 is an integer; expected "host:port", e.g. "0.0.0.0:8080"'),
        ("8080", 'listen: must be "host:port", e.g. "0.0.0.0:8080" or "[::1]:8080", not "8080"'),
        ("0.0.0.0:99999", 'not "0.0.0.0:99999"'),
    ],
)
def test_listen_shows_the_value_and_an_example(value: Any, line: str) -> None:
    (found,) = problems({"listen": value, "issuers": [ISSUER]})
    assert found.startswith(line) or line in found, found


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ({"limits": {"max_body_bytes": "1MB"}}, 'limits.max_body_bytes: "1MB" is a string;'),
        ({"upstream": {"url": "ftp://x"}}, 'upstream.url: must be an http(s) URL, not "ftp://x"'),
        (
            {"issuers": [{**ISSUER, "algorithms": "RS256"}]},
            'issuers[0].algorithms: "RS256" is a string; expected a list of strings, '
            'e.g. ["RS256"]',
        ),
        (
            {"issuers": [{**ISSUER, "profile": "a2a-sample"}]},
            'not "a2a-sample"; did you mean a2a-samples?',
        ),
    ],
)
def test_wrong_values_are_shown_with_the_expected_form(section: Any, line: str) -> None:
    data = {"issuers": [ISSUER], **section}
    (found,) = problems(data)
    assert line in found, found


def test_the_cli_prints_the_cause_first(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "listen: 8080\nissuers:\n  - name: a\n    jwks_ulr: https://a.example/jwks.json\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKSGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        'config error: listen: 8080 is an integer; expected "host:port", e.g. "0.0.0.0:8080" '
        'or "[::1]:8080"',
        "config error: issuers[0].jwks_ulr: unknown key; did you mean jwks_url?",
    ]
