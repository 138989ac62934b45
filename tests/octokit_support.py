"""GitHub's own signer and verifier, ``@octokit/webhooks-methods``, run by node for the tests.

``tests/node-providers/octokit.mjs`` takes a JSON array of operations on stdin; the packages come
from ``scripts/install.d/node-providers.sh``. Without node or the packages the calling test skips,
saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node-providers"


def octokit(ops: list[dict[str, str]]) -> list[Any]:
    """``{"op": "sign", "secret", "payload"}`` gives the X-Hub-Signature-256 value;
    ``{"op": "verify", "secret", "payload", "signature"}`` a boolean. One node for all of them."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "@octokit" / "webhooks-methods").is_dir():
        pytest.skip("run scripts/install.d/node-providers.sh (needs npm)")
    done = subprocess.run(
        ["node", str(NODE_DIR / "octokit.mjs")],
        input=json.dumps(ops),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[Any] = json.loads(done.stdout)
    return result
