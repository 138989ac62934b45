"""The benchmark's helper servers, each run as its own process on loopback.

- ``python -m bench.servers upstream --port N``: the fast backend, 200 with a tiny body for any
  request (the body is read, as a real backend would); a request to ``/echo`` is answered with
  the request's headers as a JSON object instead, so that the checks see what reached it;
- ``python -m bench.servers jwks --port N --file F [--tls-port M --cert C --key K]``: serves the
  JWKS document in ``F`` at ``/jwks.json`` over http, and over https on ``M`` when given.

Both run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
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
        if request.raw_path.startswith("/echo"):
            seen = json.dumps(dict(request.headers.items())).encode()
            return web.Response(body=seen, content_type="application/json")
        return web.Response(body=UPSTREAM_BODY, content_type="application/json")

    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", port, backlog=1024, reuse_address=True)
    try:
        await _until_signal()
    finally:
        srv.close()
        await server.shutdown(1.0)


async def jwks(
    port: int, document: bytes, tls_port: int | None, tls: ssl.SSLContext | None
) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if tls_port is not None and tls is not None:
        await web.TCPSite(runner, "127.0.0.1", tls_port, ssl_context=tls).start()
    try:
        await _until_signal()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("upstream", "jwks"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    if args.kind == "upstream":
        asyncio.run(upstream(args.port))
    else:
        if args.file is None:
            parser.error("jwks needs --file")
        tls = None
        if args.tls_port is not None:
            if args.cert is None or args.key is None:
                parser.error("--tls-port needs --cert and --key")
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.cert, args.key)
        asyncio.run(jwks(args.port, args.file.read_bytes(), args.tls_port, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
