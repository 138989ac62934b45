"""The benchmark's helper servers, each run as its own process on loopback.

- ``python -m bench.servers upstream --port N``: the fast backend, 200 with a tiny body for any
  request (the body is read, as a real backend would);
- ``python -m bench.servers jwks --port N --file F``: serves the JWKS document in ``F``.

Both run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

__all__ = ["main"]

UPSTREAM_BODY = b'{"ok":true}'


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def upstream(port: int) -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=UPSTREAM_BODY, content_type="application/json")

    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", port, backlog=1024, reuse_address=True)
    try:
        await _until_signal()
    finally:
        srv.close()
        await server.shutdown(1.0)


async def jwks(port: int, document: bytes) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await _until_signal()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("upstream", "jwks"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path)
    args = parser.parse_args(argv)
    if args.kind == "upstream":
        asyncio.run(upstream(args.port))
    else:
        if args.file is None:
            parser.error("jwks needs --file")
        asyncio.run(jwks(args.port, args.file.read_bytes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
