"""Every YAML input gives ``config error: <path>: ...`` lines and exit 1, never a traceback.

Each input below crashed the loader once (TypeError, OverflowError, RecursionError, PyYAML's
constructor ValueErrors); the test runs the real command line as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "issuers:\n  - name: a\n    jwks_url: https://a.example/j\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKSGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )


CASES: list[tuple[str, bytes, str]] = [
    (
        "profile-list",
        ISSUER.encode() + b"    profile: []\n",
        "config error: issuers[0].profile: is a list; expected one of a2a-samples",
    ),
    (
        "list-key",
        b"? [a, b]\n: 1\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 3: a key must be a string, a number",
    ),
    (
        "400-digits",
        b"shutdown_grace_seconds: 1" + b"0" * 400 + b"\n" + ISSUER.encode(),
        "config error: shutdown_grace_seconds: must be a number >= 0, not a 401-digit number",
    ),
    (
        "5000-digits",
        b"workers: 1" + b"0" * 5000 + b"\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 10: '1000",
    ),
    (
        "recursive-alias",
        b"a: &a [*a]\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 8: the alias *a is inside the node it names",
    ),
    (
        "bad-date",
        b"listen: 2001-13-45\n" + ISSUER.encode(),
        'config error: listen: must be "host:port", e.g. "0.0.0.0:8080"',
    ),
    (
        "int-0b",
        b"workers: !!int 0b\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 10: '0b' is not an integer",
    ),
    (
        "float-x",
        b"workers: !!float x\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 10: 'x' is not a number",
    ),
    (
        "binary-tag",
        b"workers: !!binary aGVsbG8=\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 10: the tag !!binary is not supported",
    ),
    (
        "deep",
        b"a: " + b"[" * 200 + b"]" * 200 + b"\n" + ISSUER.encode(),
        "config error: {path}: line 1, column 67: nested more than 64 levels deep",
    ),
    (
        "aliases-expanded",
        b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
        + b"".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n".encode()
            for p, n in zip("abcde", "bcdef", strict=True)
        )
        + ISSUER.encode(),
        "config error: (top level): more than 100000 values (with aliases expanded)",
    ),
    (
        "not-utf8",
        b"listen: \xff\n" + ISSUER.encode(),
        "config error: {path}: not UTF-8 text (byte 8, line 1, column 9)",
    ),
    ("empty", b"", "config error: issuers: must be a non-empty list of trusted issuers"),
]


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("name", "content", "first"), CASES, ids=[c[0] for c in CASES])
def test_input_is_a_config_error(
    tmp_path: Path, command: str, name: str, content: bytes, first: str
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    result = (
        cli(command, str(path)) if command == "check-config" else cli("run", "--config", str(path))
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("config error: ") for line in lines), lines
    assert lines[0].startswith(first.format(path=path)), lines


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    result = cli("check-config", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"config error: {tmp_path}: cannot read: Is a directory"]


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    # A socket cannot be opened as a file, even by root (tests run as root in CI).
    import socket

    path = tmp_path / "sock.yaml"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        result = cli("check-config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"config error: {path}: cannot read: "), line
