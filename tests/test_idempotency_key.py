"""The idempotency key the backend de-duplicates on (issue 14): ``Idempotency-Key`` (IETF
draft-ietf-httpapi-idempotency-key-header, an RFC 8941 string), derived from the push's replay key,
so the same on every retry of one push and different across pushes and senders; a sender's own copy
never reaches the backend.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from typing import Any

import aiohttp
import pytest

from gateway import verify
from gateway.authn import standard_webhooks
from gateway.config import Config, parse_config
from gateway.errors import ConfigError
from gateway.forward_headers import idempotency_key
from tests.httpkit import config_with, push, send
from tests.support import Backend, World, gateway_config_data, world

BODY = b'{"event":"invoice.paid","id":"evt_1"}'
KEY_FORM = re.compile(r'"[0-9a-f]{32}"')


def _issuer(name: str, iss: str | None = None) -> Any:
    data = gateway_config_data("https://jwks.example/j", "http://127.0.0.1:1")
    data["issuers"][0].update(name=name, issuer=iss)
    return parse_config(data).issuers[0]


def test_the_key_is_a_quoted_hex_string_stable_per_replay_key() -> None:
    a = _issuer("a", "https://a.example")
    b = _issuer("b", "https://b.example")
    swh_a = standard_webhooks.replay_key(a, "msg_1")
    assert KEY_FORM.fullmatch(idempotency_key(swh_a))
    assert idempotency_key(swh_a) == idempotency_key(standard_webhooks.replay_key(a, "msg_1"))
    # Another sender reusing the id, another id: other keys.
    assert idempotency_key(swh_a) != idempotency_key(standard_webhooks.replay_key(b, "msg_1"))
    assert idempotency_key(swh_a) != idempotency_key(standard_webhooks.replay_key(a, "msg_2"))
    # Never the replay store's key itself.
    assert swh_a[-32:].hex()[:32] not in idempotency_key(swh_a)
    # Two entries for one sender (same iss) share replay keys, hence idempotency keys.
    a2 = _issuer("a-on-another-path", "https://a.example")
    assert verify.replay_namespace(a) == verify.replay_namespace(a2)


async def test_every_retry_of_a_push_carries_the_same_key_and_spoofed_copies_are_dropped() -> None:
    backend = Backend(status=503)
    async with world(backend=backend) as w, aiohttp.ClientSession() as http:
        token = w.token(BODY)
        spoof = {"Idempotency-Key": '"chosen-by-the-sender"', "Idempotency_Key": "x"}
        assert (await push(http, w, BODY, token=token, headers=spoof)).status == 503
        backend.status = 200
        assert (await push(http, w, BODY, token=token, headers=spoof)).status == 200
        assert (await push(http, w, BODY)).status == 200  # another push
        first, retry, other = backend.received
        for r in backend.received:
            assert r.headers.get("idempotency-key") is not None
            assert len(r.headers["idempotency-key"]) == 1
            assert KEY_FORM.fullmatch(r.headers["idempotency-key"][0])
            assert "idempotency_key" not in r.headers
        assert first.header("Idempotency-Key") == retry.header("Idempotency-Key")
        assert other.header("Idempotency-Key") != first.header("Idempotency-Key")


async def test_the_header_name_is_configurable_and_empty_sends_none() -> None:
    named = config_with(forward={"idempotency_header": "X-Delivery-Key"})
    async with world(named) as w, aiohttp.ClientSession() as http:
        spoof = {"X-Delivery-Key": "spoofed"}
        assert (await push(http, w, BODY, headers=spoof)).status == 200
        got = w.backend.received[0]
        assert KEY_FORM.fullmatch(got.header("X-Delivery-Key") or "")
        assert got.header("Idempotency-Key") is None
    off = config_with(forward={"idempotency_header": ""})
    async with world(off) as w, aiohttp.ClientSession() as http:
        assert (await push(http, w, BODY)).status == 200
        assert w.backend.received[0].header("Idempotency-Key") is None


def _standard_webhooks_world(secret: bytes) -> Any:
    def configure(w: World) -> Config:
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url},
                "issuers": [
                    {
                        "name": "billing",
                        "type": "standard_webhooks",
                        "standard_webhooks": {
                            "secrets": ["whsec_" + base64.b64encode(secret).decode()]
                        },
                    }
                ],
            }
        )

    return configure


def _signed(secret: bytes, msg_id: str, ts: int) -> dict[str, str]:
    content = f"{msg_id}.{ts}.".encode() + BODY
    sig = base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": "v1," + sig}


async def test_standard_webhooks_key_follows_the_webhook_id_across_re_signed_retries() -> None:
    secret = uuid.uuid4().bytes * 2
    backend = Backend(status=500)
    async with world(_standard_webhooks_world(secret), backend=backend) as w:
        async with aiohttp.ClientSession() as http:
            now = int(w.clock())
            url = w.url + "/hook"
            first = _signed(secret, "m1", now)
            assert (await send(http, url, body=BODY, headers=first)).status == 500
            backend.status = 200
            # The retry is signed anew (another timestamp): the same webhook all the same.
            retry = _signed(secret, "m1", now + 3)
            assert (await send(http, url, body=BODY, headers=retry)).status == 200
            other = _signed(secret, "m2", now)
            assert (await send(http, url, body=BODY, headers=other)).status == 200
        keys = [r.header("Idempotency-Key") for r in backend.received]
        assert keys[0] is not None and KEY_FORM.fullmatch(keys[0])
        assert keys[0] == keys[1] != keys[2]


async def test_a_static_token_push_has_no_key_and_a_spoofed_one_is_dropped() -> None:
    token = "agent-token-" + uuid.uuid4().hex

    def configure(w: World) -> Config:
        return parse_config(
            {
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
                "upstream": {"url": w.backend_url},
                "issuers": [
                    {"name": "agents", "type": "static_token", "static_token": {"tokens": [token]}}
                ],
            }
        )

    async with world(configure) as w, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": '"spoofed"'}
        assert (await send(http, w.url + "/hook", body=BODY, headers=headers)).status == 200
        assert w.backend.received[0].header("Idempotency-Key") is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Idempotency Key", "forward.idempotency_header: must be"),
        ("X-Jwt-Issuer", "forward.idempotency_header: names a header the gateway sets itself"),
        ("X-Jwt-Claims", "forward.idempotency_header: names a header the gateway sets itself"),
        ("X-Jwt-Sub", "issuers[0].forward_claims.sub: X-Jwt-Sub is forward.idempotency_header"),
    ],
)
def test_a_bad_header_name_is_a_config_error(name: str, problem: str) -> None:
    data = gateway_config_data("https://jwks.example/j", "http://127.0.0.1:1")
    data["forward"] = {"idempotency_header": name}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert any(line.startswith(problem) for line in e.value.problems), e.value.problems
