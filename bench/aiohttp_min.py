"""Peer: the minimal aiohttp proxy, the floor for anything built on aiohttp.

``python -m bench.aiohttp_min --port N --upstream URL [--loop asyncio|uvloop]``: a
``web.Application`` with one catch-all handler and one ``ClientSession``; it forwards the method,
path, headers (without hop-by-hop ones) and body, and answers with the upstream's status, headers
and body. No verification, no logging, no metrics. It imports nothing from ``gateway``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from bench.peer_loop import run_app

__all__ = ["HOP_BY_HOP", "main", "make_app"]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
     "proxy-connection", "te", "trailer"}
)  # fmt: skip


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def start(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
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
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_min")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    run_app(make_app(args.upstream.rstrip("/")), args.port, args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
