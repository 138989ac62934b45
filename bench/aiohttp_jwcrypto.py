"""Peer: the naive verifying proxy a user could write in an afternoon with aiohttp + jwcrypto.

``python -m bench.aiohttp_jwcrypto --port N --upstream URL --jwks-url URL --issuer I
--audience A [--loop asyncio|uvloop]``: the key set is fetched and parsed once at start; each
request's bearer token goes through jwcrypto's ``JWT()`` (RS256 or ES256, iss, aud and exp
checked), the body's SHA-256 must equal the ``request_body_sha256`` claim, and ``sub`` is forwarded
as ``X-Jwt-Sub``. Anything wrong is a 401. No replay check, no logging, no metrics; it imports
nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from jwcrypto import jwk, jwt

from bench.aiohttp_min import HOP_BY_HOP
from bench.peer_loop import run_app

__all__ = ["main", "make_app"]

_DROP = HOP_BY_HOP | {"authorization", "x-jwt-sub"}


def make_app(upstream: str, keyset: Any, issuer: str, audience: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)
    check = {"iss": issuer, "aud": audience, "exp": None}

    async def start(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.Response(status=401, text="no token\n")
        body = await request.read()
        try:
            token = jwt.JWT(
                jwt=auth[7:], key=keyset, algs=["RS256", "ES256"], check_claims=check,
                expected_type="JWS",
            )  # fmt: skip
            claims = json.loads(token.claims)
        except Exception:
            return web.Response(status=401, text="bad token\n")
        if claims.get("request_body_sha256") != hashlib.sha256(body).hexdigest():
            return web.Response(status=401, text="body hash\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        headers["X-Jwt-Sub"] = str(claims.get("sub", ""))
        async with app[session_key].request(
            request.method, upstream + request.raw_path, headers=headers, data=body
        ) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=up.status, headers=out, body=data)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_jwcrypto")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    if not args.jwks_url.startswith("http://127.0.0.1:"):
        parser.error("--jwks-url must be a loopback http URL")
    with urllib.request.urlopen(args.jwks_url, timeout=10) as resp:  # noqa: S310 - loopback
        keyset = jwk.JWKSet.from_json(resp.read())
    app = make_app(args.upstream.rstrip("/"), keyset, args.issuer, args.audience)
    run_app(app, args.port, args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
