"""Interoperability with the Node.js signers senders use: npm ``jose`` (``SignJWT``, keys from
``generateKeyPair``, the JWKS from ``exportJWK``) and ``jsonwebtoken`` (``jwt.sign`` with a Node
``KeyObject``, the JWKS from ``KeyObject.export({format: "jwk"})``), end to end through a running
gateway, a real JWKS server and a real backend. ``tests/node-signers/signers.mjs`` makes the
tokens; ``scripts/install.d/node-signers.sh`` installs the packages (pinned by its lockfile).
Skipped only where node is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import Config
from tests.httpkit import push
from tests.support import World, body_hash, gateway_config, world

NODE_DIR = Path(__file__).parent / "node-signers"
BODY = b'{"event":"from node"}'
EVERY_ALG = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
# jsonwebtoken 9 signs no EdDSA.
MATRIX = [("jose", alg) for alg in EVERY_ALG] + [
    ("jsonwebtoken", alg) for alg in EVERY_ALG if alg != "EdDSA"
]


def node_sign(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the npm jose/jsonwebtoken interop tests need it")
    for package in ("jose", "jsonwebtoken"):
        if not (NODE_DIR / "node_modules" / package).is_dir():
            pytest.fail(f"npm {package} is missing: run scripts/install.d/node-signers.sh")
    done = subprocess.run(
        ["node", str(NODE_DIR / "signers.mjs")],
        input=json.dumps(ops),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "https://sender.test",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "request_body_sha256": body_hash(BODY),
    }


@pytest.fixture(scope="module")
def signed() -> dict[tuple[str, str], dict[str, Any]]:
    """For each (library, alg): a token and the JWKS of its key (one node process for all)."""
    ops = [
        {"library": library, "alg": alg, "kid": f"{library}-{alg}", "claims": claims()}
        for library, alg in MATRIX
    ]
    results = node_sign(ops)
    return dict(zip(MATRIX, results, strict=True))


def serving(jwks: dict[str, Any]) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        w.jwks.raw = json.dumps(jwks).encode()
        return gateway_config(w.jwks_url, w.backend_url, issuer={"algorithms": EVERY_ALG})

    return configure


@pytest.mark.parametrize(("library", "alg"), MATRIX)
async def test_a_token_signed_in_node_is_forwarded(
    signed: dict[tuple[str, str], dict[str, Any]], library: str, alg: str
) -> None:
    result = signed[(library, alg)]
    token, jwks = result["token"], result["jwks"]
    published = jwks["keys"][0]
    # As the libraries export keys: no alg, so the gateway pins each key to its family.
    assert "alg" not in published
    async with world(serving(jwks)) as w, aiohttp.ClientSession() as http:
        reply = await push(http, w, BODY, token=token)
        assert reply.status == 200, reply.body
        received = w.backend.received[-1]
        assert received.body == BODY
        assert received.header("Authorization") is None
        # The very token again: a replay.
        assert (await push(http, w, BODY, token=token)).outcome == (409, "replayed")
        # The signature altered: refused, never forwarded.
        head, payload, sig = token.split(".")
        tampered = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
        assert (await push(http, w, BODY, token=tampered)).status == 401
        assert len(w.backend.received) == 1


async def test_a_node_key_never_verifies_a_token_of_another_family(
    signed: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The EdDSA and ES512 keys jose exports are published under the kid of an RS256 token:
    the token names a key of another family and is refused (RFC 8725 3.1)."""
    rs = signed[("jose", "RS256")]
    for other in ("EdDSA", "ES512"):
        key = dict(signed[("jose", other)]["jwks"]["keys"][0], kid="jose-RS256")
        async with world(serving({"keys": [key]})) as w, aiohttp.ClientSession() as http:
            reply = await push(http, w, BODY, token=rs["token"])
            assert reply.outcome == (401, "disallowed_algorithm"), other
            assert w.backend.received == []
