"""Rules the layout keeps: decision modules do no I/O, and only the pipeline moves replay keys.

Read from the source with ``ast``, so a new import or call breaks the test, not a reviewer's eye.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

# Pure decisions: they take parsed input (and ``now``) and return a verdict or raise Rejection.
DECISION_MODULES = [
    "verify.py",
    "jwks.py",
    "forward_headers.py",
    "errors.py",
    "handshake.py",
    "providers.py",
    "jsonstrict.py",
    "authn/static_token.py",
    "authn/standard_webhooks.py",
    "authn/provider.py",
    "token_from.py",
]
FORBIDDEN = {"aiohttp", "asyncio", "logging", "prometheus_client", "redis", "gateway.metrics"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", DECISION_MODULES)
def test_decision_modules_import_no_io_or_metrics(module: str) -> None:
    bad = {
        name
        for name in _imports(GATEWAY / module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{module} imports {sorted(bad)}"


def test_only_the_pipeline_reserves_commits_or_releases() -> None:
    callers: set[str] = set()
    for path in GATEWAY.rglob("*.py"):
        rel = path.relative_to(GATEWAY).as_posix()
        if rel in ("replay.py", "redis_store.py"):
            continue  # the stores themselves
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("reserve", "commit", "release")
                and isinstance(node.func.value, ast.Attribute | ast.Name)
                and "store" in ast.unparse(node.func.value)
            ):
                callers.add(rel)
    assert callers == {"pipeline.py"}
