"""A standalone JWKS endpoint for the fault tests:
``python -m tests.jwks_proc --port P --jwks FILE``.

Serves FILE (read at every request, so a test can change the key set) at
``/.well-known/jwks.json``; SIGTERM stops it, and a test SIGKILLs it to take the issuer down.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web


def build_app(jwks_file: Path) -> web.Application:
    async def jwks(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(jwks_file.read_bytes)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    return app


async def serve(port: int, jwks_file: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(build_app(jwks_file), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"jwks listening on {port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jwks_proc")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.jwks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
