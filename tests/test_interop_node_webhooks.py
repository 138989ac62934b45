"""Interoperability of ``type: standard_webhooks`` with the senders' Node.js libraries: npm
``svix`` and ``standardwebhooks`` (``new Webhook(secret).sign(msgId, timestamp, payload)``, as
their READMEs show), end to end through a running gateway and a real backend, with ``whsec_``
secrets written with and without their base64 ``=`` padding and under both the ``svix-*`` and the
``webhook-*`` header names. ``tests/node-signers/webhooks.mjs`` signs, and checks that the same
library's own ``verify`` accepts what is sent; ``scripts/install.d/node-signers.sh`` installs the
packages (pinned by its lockfile). Skipped only where node is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway.config import Config, parse_config
from tests.httpkit import send
from tests.support import World, gateway_config_data, world
from tests.test_interop_node import NODE_DIR

BODY = '{"type":"invoice.paid","data":{"id":"in_1","note":"caf\u00e9 \u2713"}}'
# (library, header names): svix sends svix-* and accepts either set; standardwebhooks only
# knows webhook-*.
SENDERS = [("svix", "svix"), ("svix", "webhook"), ("standardwebhooks", "webhook")]
MATRIX = [(library, names, padded) for library, names in SENDERS for padded in (True, False)]


def whsec(padded: bool) -> str:
    """A ``whsec_`` secret; 31 bytes so that its base64 needs one ``=``."""
    text = base64.b64encode(os.urandom(31)).decode()
    assert text.endswith("=")
    return "whsec_" + (text if padded else text.rstrip("="))


def node_sign(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the npm svix/standardwebhooks interop tests need it")
    for package in ("svix", "standardwebhooks"):
        if not (NODE_DIR / "node_modules" / package).is_dir():
            pytest.fail(f"npm {package} is missing: run scripts/install.d/node-signers.sh")
    done = subprocess.run(
        ["node", str(NODE_DIR / "webhooks.mjs")],
        input=json.dumps(ops),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def op(library: str, names: str, secrets: list[str], msg_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "library": library,
        "names": names,
        "secrets": secrets,
        "msgId": msg_id,
        "timestamp": int(time.time()),
        "payload": BODY,
        **extra,
    }


def configured(*secrets: str) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        data = gateway_config_data(w.jwks_url, w.backend_url)
        data["issuers"] = [
            {
                "name": "sender",
                "type": "standard_webhooks",
                "standard_webhooks": {"secrets": list(secrets)},
            }
        ]
        return parse_config(data)

    return configure


@pytest.fixture(scope="module")
def signed() -> dict[tuple[str, str, bool], tuple[str, dict[str, Any]]]:
    """For each (library, names, padded): the secret and what node signed (one process)."""
    secrets = {case: whsec(case[2]) for case in MATRIX}
    ops = [
        op(lib, names, [secrets[(lib, names, p)]], f"msg_{lib}_{names}_{p}")
        for lib, names, p in MATRIX
    ]
    return {
        case: (secrets[case], result) for case, result in zip(MATRIX, node_sign(ops), strict=True)
    }


@pytest.mark.parametrize(
    ("library", "names", "padded"),
    MATRIX,
    ids=[f"{lib}-{names}-{'padded' if p else 'unpadded'}" for lib, names, p in MATRIX],
)
async def test_a_push_signed_in_node_is_forwarded(
    signed: dict[tuple[str, str, bool], tuple[str, dict[str, Any]]],
    library: str,
    names: str,
    padded: bool,
) -> None:
    secret, result = signed[(library, names, padded)]
    headers: dict[str, str] = result["headers"]
    # The library's own verify accepts exactly what goes on the wire.
    assert result["verified"] is True
    body = BODY.encode()
    async with world(configured(secret)) as w, aiohttp.ClientSession() as http:
        url = w.url + "/hook"
        reply = await send(http, url, body=body, headers=headers)
        assert reply.status == 200, reply.body
        got = w.backend.received[-1]
        assert got.body == body
        assert got.header("X-Jwt-Issuer") == "sender"
        assert got.header(f"{names}-id") == headers[f"{names}-id"]
        # The sender retrying the same message: a replay, not delivered again.
        assert (await send(http, url, body=body, headers=headers)).outcome == (409, "replayed")
        # One byte more in the body: the signature no longer matches.
        again = {**headers, f"{names}-id": headers[f"{names}-id"] + "x"}
        tampered = await send(http, url, body=body + b" ", headers=again)
        assert tampered.outcome == (401, "bad_signature")
        assert len(w.backend.received) == 1


@pytest.mark.parametrize("library", ["svix", "standardwebhooks"])
async def test_a_binary_body_and_a_rotated_secret(library: str) -> None:
    """A Buffer payload of arbitrary bytes, signed with the old and the new secret (two
    space-separated signatures, as a sender sends during a rotation); the gateway knows only the
    new, unpadded one."""
    old, new = whsec(True), whsec(False)
    body = os.urandom(64 * 1024)
    payload = base64.b64encode(body).decode()
    [result] = node_sign(
        [op(library, "webhook", [new, old], f"msg_bin_{library}", payloadBase64=payload)]
    )
    assert result["verified"] is True
    assert len(result["headers"]["webhook-signature"].split(" ")) == 2
    async with world(configured(new)) as w, aiohttp.ClientSession() as http:
        reply = await send(http, w.url + "/hook", body=body, headers=result["headers"])
        assert reply.status == 200, reply.body
        assert w.backend.received[-1].body == body


async def test_a_node_signature_with_another_secret_is_refused() -> None:
    """Signed by npm svix with a secret the gateway does not hold: refused, never forwarded."""
    theirs, ours = whsec(False), whsec(False)
    [result] = node_sign([op("svix", "svix", [theirs], "msg_other")])
    async with world(configured(ours)) as w, aiohttp.ClientSession() as http:
        reply = await send(http, w.url + "/hook", body=BODY.encode(), headers=result["headers"])
        assert reply.outcome == (401, "bad_signature")
        assert w.backend.received == []
