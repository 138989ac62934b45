"""The README's status table is generated from the one reason table, so the two cannot drift."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import REASONS, status_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_holds_the_status_table_the_code_renders() -> None:
    assert status_table() in README.read_text(encoding="utf-8")


def test_every_reason_code_is_in_the_rendered_table() -> None:
    table = status_table()
    for code in REASONS:
        assert f"`{code}`" in table, code


def test_every_5xx_and_408_is_retryable_and_no_401_is() -> None:
    for code, reason in REASONS.items():
        if reason.status >= 500 or reason.status == 408:
            assert reason.retryable, code
        if reason.status in (400, 401, 409, 413):
            assert not reason.retryable, code
