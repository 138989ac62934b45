"""The command line's refusals, as an operator meets them: each is one line on stderr naming what
to fix, exit code 1, and never a Python traceback. Run as subprocesses, like a shell would."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JWKSGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        check=False,
        cwd=ROOT,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (here: this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def config_file(tmp_path: Path, listen: str, admin: str, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f'listen: "{listen}"\nadmin_listen: "{admin}"\n{extra}'
        'upstream: {url: "http://127.0.0.1:9"}\n'
        "issuers:\n  - name: a\n    issuer: https://a.example\n"
        "    jwks_url: http://127.0.0.1:9/jwks.json\n"
    )
    return path


# --- a port that cannot be had ----------------------------------------------------------------


def test_run_on_a_busy_listen_port_names_the_key_the_address_and_a_free_port(
    tmp_path: Path, busy_port: int
) -> None:
    line = one_line_error(
        cli("run", "--config", str(config_file(tmp_path, f"127.0.0.1:{busy_port}", "127.0.0.1:0")))
    )
    assert line.startswith(f"error: listen: cannot listen on 127.0.0.1:{busy_port}: "), line
    assert "already in use" in line
    assert 'set listen to another address or port, e.g. listen: "127.0.0.1:' in line


def test_run_on_a_busy_admin_port_names_admin_listen(tmp_path: Path, busy_port: int) -> None:
    config = config_file(tmp_path, "127.0.0.1:0", f"127.0.0.1:{busy_port}")
    line = one_line_error(cli("run", "--config", str(config)))
    assert line.startswith(f"error: admin_listen: cannot listen on 127.0.0.1:{busy_port}: "), line
    assert "e.g. admin_listen: " in line


def test_run_with_workers_checks_the_port_before_starting_them(
    tmp_path: Path, busy_port: int
) -> None:
    """Otherwise every worker would fail on the port and be restarted, forever."""
    extra = "workers: 2\nreplay: {store: redis, redis_url: redis://127.0.0.1:9/0}\n"
    config = config_file(tmp_path, f"127.0.0.1:{busy_port}", "127.0.0.1:0", extra)
    line = one_line_error(cli("run", "--config", str(config)))
    assert line.startswith(f"error: listen: cannot listen on 127.0.0.1:{busy_port}: "), line


def test_demo_on_a_busy_port_says_which_of_its_ports_and_suggests_another(
    busy_port: int,
) -> None:
    line = one_line_error(cli("demo", "--no-wait", "--port", str(busy_port)))
    assert line.startswith(
        f"error: demo --port {busy_port}: cannot listen on 127.0.0.1:{busy_port} (the gateway, "
    ), line
    assert "e.g. --port " in line


def test_demo_names_its_issuer_port_when_that_one_is_busy(busy_port: int) -> None:
    line = one_line_error(cli("demo", "--no-wait", "--port", str(busy_port - 2)))
    assert f"cannot listen on 127.0.0.1:{busy_port} (its issuer, --port + 2)" in line


def test_scripts_demo_on_a_busy_port(busy_port: int) -> None:
    """The README's first command, as typed (it installs into .venv the first time)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo"), "--no-wait", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"demo --port {busy_port}: " in errors[0], result.stderr


# --- flags and files ----------------------------------------------------------------------------


def test_a_bad_log_level_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    config = config_file(tmp_path, "127.0.0.1:0", "127.0.0.1:0")
    line = one_line_error(cli("run", "--config", str(config), "--log-level", "verbose"))
    assert "--log-level: 'verbose' is not a log level" in line
    assert "debug, info, warning, error, critical" in line


def test_a_bad_log_level_from_the_environment_is_refused_the_same_way(tmp_path: Path) -> None:
    config = config_file(tmp_path, "127.0.0.1:0", "127.0.0.1:0")
    line = one_line_error(cli("run", "--config", str(config), env={"JWKSGATE_LOG_LEVEL": "loud"}))
    assert "'loud' is not a log level" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("demo", "--port", "99999"), "--port: '99999' is not a port"),
        (("demo", "--port", "http"), "--port: 'http' is not a port"),
        (("explain", "x", "--now", "soon"), "--now: invalid float value: 'soon'"),
        (("run", "--bogus"), "unrecognized arguments: --bogus"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        ((), "the following arguments are required: COMMAND"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_1(args: tuple[str, ...], expected: str) -> None:
    line = one_line_error(cli(*args))
    assert expected in line and line.endswith("--help)"), line


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_missing_or_unreadable_config_file_is_one_line(tmp_path: Path, command: str) -> None:
    for path, why in ((tmp_path / "absent.yaml", "No such file"), (tmp_path, "Is a directory")):
        args = ("run", "--config", str(path)) if command == "run" else (command, str(path))
        line = one_line_error(cli(*args))
        assert line.startswith(f"config error: {path}: cannot read: {why}"), line


def test_run_without_a_config_says_how_to_give_one() -> None:
    line = one_line_error(cli("run"))
    assert "--config FILE (or JWKSGATE_CONFIG) is required" in line


def test_explain_with_an_unreadable_jwks_file_is_one_line(tmp_path: Path) -> None:
    result = cli("explain", "a.b.c", "--jwks", str(tmp_path / "none.json"))
    assert result.returncode == 2  # explain: 1 means "would reject"; 2 "could not judge"
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"jwksgate explain: error: --jwks {tmp_path / 'none.json'}: cannot read: "
        "No such file or directory"
    ]


# --- version and help ---------------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"jwksgate {__version__}\n"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_has_help_text() -> None:
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} == {
        "jwksgate",
        "jwksgate run",
        "jwksgate check-config",
        "jwksgate explain",
        "jwksgate demo",
    }
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (parser.prog, action.dest)
        assert parser.description, parser.prog


def test_run_help_describes_its_options() -> None:
    result = cli("run", "--help")
    assert result.returncode == 0
    assert "the YAML config file (default: $JWKSGATE_CONFIG)" in result.stdout
    assert "one of debug, info, warning, error, critical" in result.stdout


# --- explain without --config ---------------------------------------------------------------


def _unsigned(header: str, claims: str) -> str:
    import base64

    def seg(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return f"{seg(header)}.{seg(claims)}.{seg('not a real signature')}"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ('{{"iss": "https://x.example", "iat": {now}, "exp": {past}}}', "expired"),
        ('{{"iss": "https://x.example", "iat": {now}, "nbf": {future}}}', "not_yet_valid"),
        ('{{"iss": "https://x.example", "iat": {old}}}', "token_too_old"),
    ],
)
def test_explain_without_config_checks_the_time_claims(claims: str, reason: str) -> None:
    now = int(time.time())
    body = claims.format(now=now, past=now - 3600, future=now + 3600, old=now - 7200)
    result = cli("explain", _unsigned('{"alg": "RS256", "typ": "JWT"}', body))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"REJECT: 401 {reason} " in result.stdout
    assert "unknown_issuer" not in result.stdout


def test_explain_without_config_refuses_alg_none() -> None:
    result = cli("explain", _unsigned('{"alg": "none"}', '{"iss": "https://x.example"}'))
    assert result.returncode == 1
    assert "REJECT: 401 disallowed_algorithm" in result.stdout
