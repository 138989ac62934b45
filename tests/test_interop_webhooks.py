"""Interoperability of ``type: standard_webhooks`` with the senders' own libraries from PyPI:
``standardwebhooks`` (the reference implementation) and ``svix`` (whose libraries send and accept
``svix-id``/``svix-timestamp``/``svix-signature`` as well as the ``webhook-*`` names), end to end
through a running gateway and a real backend, with secrets written with and without their base64
``=`` padding, as the libraries accept both.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.config import Config, parse_config
from tests.httpkit import send
from tests.support import World, gateway_config_data, world

BODY = b'{"type":"invoice.paid","data":{"id":"in_1"}}'


def secret(padded: bool) -> str:
    """A ``whsec_`` secret; 31 bytes so that its base64 needs one ``=``."""
    text = base64.b64encode(os.urandom(31)).decode()
    assert text.endswith("=")
    return "whsec_" + (text if padded else text.rstrip("="))


def standard_webhooks_issuer(*secrets: str) -> Callable[[World], Config]:
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


def svix_headers(whsec: str, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
    """What a svix sender puts on the wire: the svix library's signature, svix-* names."""
    from svix.webhooks import Webhook

    signature = Webhook(whsec).sign(msg_id, when, body.decode())
    ts = str(int(when.timestamp()))
    return {"svix-id": msg_id, "svix-timestamp": ts, "svix-signature": signature}


def standard_headers(whsec: str, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
    from standardwebhooks import Webhook

    signature = Webhook(whsec).sign(msg_id, when, body.decode())
    ts = str(int(when.timestamp()))
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}


def library_verifies(whsec: str, headers: dict[str, str], body: bytes) -> None:
    """The svix library's own ``verify`` accepts what the test sends (so the wire is right)."""
    from svix.webhooks import Webhook

    Webhook(whsec).verify(body, headers)


def now(w: World) -> datetime:
    return datetime.fromtimestamp(int(w.clock()), tz=UTC)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("library", ["svix", "standardwebhooks"])
async def test_a_push_signed_by_the_library_is_forwarded(library: str, padded: bool) -> None:
    whsec = secret(padded)
    make = svix_headers if library == "svix" else standard_headers
    async with world(standard_webhooks_issuer(whsec)) as w, aiohttp.ClientSession() as http:
        headers = make(whsec, "msg_2Lh9", now(w), BODY)
        library_verifies(whsec, headers, BODY)
        r = await send(http, w.url + "/hook", body=BODY, headers=headers)
        assert r.status == 200, r.body
        got = w.backend.received[-1]
        assert got.body == BODY
        assert got.header("X-Jwt-Issuer") == "sender"
        id_header = "svix-id" if library == "svix" else "webhook-id"
        assert got.header(id_header) == "msg_2Lh9"


async def test_svix_names_are_deduped_like_webhook_names() -> None:
    whsec = secret(False)
    async with world(standard_webhooks_issuer(whsec)) as w, aiohttp.ClientSession() as http:
        first = await send(
            http, w.url + "/hook", body=BODY, headers=svix_headers(whsec, "msg_1", now(w), BODY)
        )
        assert first.status == 200
        # The same message id under the other header names is the same webhook.
        again = await send(
            http,
            w.url + "/hook",
            body=BODY,
            headers=standard_headers(whsec, "msg_1", now(w), BODY),
        )
        assert again.outcome == (409, "replayed")
        assert len(w.backend.received) == 1


async def test_svix_headers_are_checked_like_webhook_headers() -> None:
    whsec, other = secret(True), secret(False)
    async with world(standard_webhooks_issuer(whsec)) as w, aiohttp.ClientSession() as http:
        url = w.url + "/hook"
        wrong = svix_headers(other, "msg_a", now(w), BODY)
        assert (await send(http, url, body=BODY, headers=wrong)).outcome == (401, "bad_signature")
        tampered = svix_headers(whsec, "msg_b", now(w), BODY)
        assert (await send(http, url, body=BODY + b" ", headers=tampered)).outcome == (
            401,
            "bad_signature",
        )
        old = svix_headers(whsec, "msg_c", datetime.fromtimestamp(w.clock() - 3600, UTC), BODY)
        assert (await send(http, url, body=BODY, headers=old)).outcome == (401, "token_too_old")
        partial = svix_headers(whsec, "msg_d", now(w), BODY)
        del partial["svix-signature"]
        assert (await send(http, url, body=BODY, headers=partial)).outcome == (
            401,
            "missing_token",
        )
        assert w.backend.received == []


async def test_a_mix_of_svix_and_webhook_names_is_refused() -> None:
    """The id, timestamp and signature come from one set of names, never a mix: with any
    ``webhook-*`` header present, the ``svix-*`` ones are not read."""
    whsec = secret(True)
    async with world(standard_webhooks_issuer(whsec)) as w, aiohttp.ClientSession() as http:
        mixed: dict[str, Any] = svix_headers(whsec, "msg_m", now(w), BODY)
        mixed["webhook-id"] = mixed.pop("svix-id")
        r = await send(http, w.url + "/hook", body=BODY, headers=mixed)
        assert r.outcome == (401, "missing_token")
        assert w.backend.received == []
