"""``token_from``: where a JWT issuer's senders put the token (Envoy jwt_authn's ``from_headers``
and ``from_params``, Oathkeeper's ``token_from``), end to end with tokens signed by PyJWT: another
Authorization scheme, another header with the bare token, a query parameter; whatever carried the
token is taken out of what the backend receives unless ``keep_token``, and the rest of the query
goes on byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from gateway.config import Config, parse_config
from gateway.errors import ConfigError
from tests.httpkit import send
from tests.support import World, captured_log, claims_for, gateway_config_data, world

BODY = b'{"event":"token_from"}'


def issuer_with(**fields: Any) -> Callable[[World], Config]:
    def configure(w: World) -> Config:
        return parse_config(gateway_config_data(w.jwks_url, w.backend_url, issuer=fields))

    return configure


def pyjwt_token(w: World) -> str:
    """The world's key, signing with PyJWT as a sender would (RS256, kid in the header)."""
    pem = w.key.key.export_to_pem(private_key=True, password=None)
    return jwt.encode(
        claims_for(BODY, w.clock()), pem, algorithm="RS256", headers={"kid": w.key.kid}
    )


async def post(
    http: aiohttp.ClientSession, w: World, path_qs: str = "/hook", **headers: str
) -> tuple[int, str | None]:
    r = await send(http, URL(w.url + path_qs, encoded=True), body=BODY, headers=headers)
    return r.outcome


async def test_another_authorization_scheme() -> None:
    configure = issuer_with(token_from={"scheme": "Token"})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = pyjwt_token(w)
        assert await post(http, w, Authorization=f"Token {token}") == (200, None)
        assert await post(http, w, Authorization=f"token  {pyjwt_token(w)}") == (200, None)
        assert await post(http, w, Authorization=f"Bearer {pyjwt_token(w)}") == (
            401,
            "missing_token",
        )
        assert await post(http, w, Authorization="Token ") == (401, "malformed_token")
        assert len(w.backend.received) == 2
        assert w.backend.received[0].header("Authorization") is None


async def test_another_header_with_the_bare_token_is_removed_before_forwarding() -> None:
    configure = issuer_with(token_from={"header": "X-Webhook-Token"})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = pyjwt_token(w)
        got = await post(http, w, **{"X-Webhook-Token": token, "Authorization": "Basic eA=="})
        assert got == (200, None)
        received = w.backend.received[-1]
        assert received.header("X-Webhook-Token") is None
        assert received.header("Authorization") is None
        # The token is the header's whole value: a scheme word before it is no token.
        assert await post(http, w, **{"X-Webhook-Token": f"Bearer {pyjwt_token(w)}"}) == (
            401,
            "malformed_token",
        )
        assert await post(http, w, Authorization=f"Bearer {pyjwt_token(w)}") == (
            401,
            "missing_token",
        )


async def test_keep_token_forwards_the_header_that_carried_it() -> None:
    configure = issuer_with(token_from={"header": "X-Webhook-Token", "keep_token": True})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = pyjwt_token(w)
        got = await post(http, w, **{"X-Webhook-Token": token, "Authorization": "Basic eA=="})
        assert got == (200, None)
        received = w.backend.received[-1]
        assert received.header("X-Webhook-Token") == token
        # Only the token's own carrier is kept: Authorization is still a credential.
        assert received.header("Authorization") is None


async def test_a_query_token_is_taken_out_of_the_forwarded_url_and_never_logged() -> None:
    configure = issuer_with(token_from={"query": "token"})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        token = pyjwt_token(w)
        with captured_log() as records:
            got = await post(http, w, f"/hook/a%7Eb?x=1&token={token}&y=%2F&&z")
        assert got == (200, None)
        # Everything but the token's parameter, byte for byte (encoding, order, empty items).
        assert w.backend.received[-1].path_qs == "/hook/a%7Eb?x=1&y=%2F&&z"
        assert all(token not in r.getMessage() for r in records)
        assert any(r.name == "jwksgate.access" for r in records)
        # The only parameter: no "?" left behind.
        assert await post(http, w, f"/hook?token={pyjwt_token(w)}") == (200, None)
        assert w.backend.received[-1].path_qs == "/hook"
        assert await post(http, w, "/hook?x=1") == (401, "missing_token")
        twice = f"/hook?token={pyjwt_token(w)}&token={pyjwt_token(w)}"
        assert await post(http, w, twice) == (400, "malformed_request")
        # An Authorization header is not where this issuer's token is.
        assert await post(http, w, Authorization=f"Bearer {pyjwt_token(w)}") == (
            401,
            "missing_token",
        )
        assert len(w.backend.received) == 2


async def test_a_kept_query_token_stays_in_the_url() -> None:
    configure = issuer_with(token_from={"query": "access_token", "keep_token": True})
    async with world(configure) as w, aiohttp.ClientSession() as http:
        path_qs = f"/hook?access_token={pyjwt_token(w)}&b=2"
        assert await post(http, w, path_qs) == (200, None)
        assert w.backend.received[-1].path_qs == path_qs


def problems(**token_from: Any) -> list[str]:
    data = gateway_config_data("https://jwks.test/k", "http://127.0.0.1:1")
    data["issuers"][0]["token_from"] = token_from
    try:
        parse_config(data)
    except ConfigError as e:
        return e.problems
    return []


@pytest.mark.parametrize(
    ("token_from", "expected"),
    [
        (
            {"header": "X-T", "query": "t"},
            "issuers[0].token_from: header and query are alternatives: set one",
        ),
        (
            {"query": "t", "scheme": "Bearer"},
            "issuers[0].token_from.scheme: only applies with header (a query has no scheme)",
        ),
        ({"query": "t k"}, "issuers[0].token_from.query: must be a query parameter name"),
        ({"header": "X Token"}, "issuers[0].token_from.header: must be a valid HTTP header name"),
        ({"header": "Host"}, "issuers[0].token_from.header: Host cannot carry a token"),
        ({"scheme": "Two words"}, "issuers[0].token_from.scheme: must be one word"),
        ({"heder": "X-T"}, "issuers[0].token_from.heder: unknown key; did you mean header?"),
        ({"keep_token": "yes"}, "issuers[0].token_from.keep_token:"),
    ],
)
def test_config_problems_are_named(token_from: dict[str, Any], expected: str) -> None:
    found = problems(**token_from)
    assert any(p.startswith(expected) for p in found), found


def test_issuers_of_one_path_must_share_the_token_location() -> None:
    data = gateway_config_data("https://jwks.test/k", "http://127.0.0.1:1")
    second = json.loads(json.dumps(data["issuers"][0]))
    second.update(name="other", issuer="https://other.test", token_from={"query": "token"})
    data["issuers"].append(second)
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert any(
        p.startswith("issuers[1].token_from: differs from issuers[0]") for p in e.value.problems
    )


def test_token_from_only_applies_to_jwt_issuers() -> None:
    data = gateway_config_data("https://jwks.test/k", "http://127.0.0.1:1")
    data["issuers"] = [
        {
            "name": "a2a",
            "type": "static_token",
            "static_token": {"tokens": ["t" * 20]},
            "token_from": {"query": "token"},
        }
    ]
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert "issuers[0].token_from: only applies to type: jwt" in e.value.problems


def test_the_default_is_a_bearer_token_in_authorization() -> None:
    data = gateway_config_data("https://jwks.test/k", "http://127.0.0.1:1")
    tf = parse_config(data).issuers[0].token_from
    assert (tf.header, tf.scheme, tf.query, tf.keep_token) == (
        "Authorization",
        "Bearer",
        None,
        False,
    )
