"""Everything a user reads is in the repository: no file points at documents they do not have
(a specification kept outside it, or a directory beside the checkout). Tracked files only, as a
fresh clone has them, this one included; no allow-list."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Written with character classes so that this line does not match itself.
OUTSIDE = re.compile(r"c[o]ntract|\.\./sh[a]red", re.IGNORECASE)
# The files a user reads first, reported in a test of their own.
LEADS = ("README.md", "CHANGELOG.md")


def tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def outside_references(names: list[str]) -> list[str]:
    found = []
    for name in names:
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        found += [
            f"{name}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
    return found


def test_tracked_files_are_listed() -> None:
    names = tracked()
    assert "gateway/config.py" in names and "README.md" in names


def test_no_tracked_file_points_outside_the_repository() -> None:
    assert outside_references([n for n in tracked() if n not in LEADS]) == []


def test_readme_and_changelog_point_nowhere_outside() -> None:
    assert outside_references([n for n in tracked() if n in LEADS]) == []
