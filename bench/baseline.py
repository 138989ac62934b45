"""The baseline proxy: a minimal aiohttp forwarder with no verification, for the benchmarks to
compare jwksgate against (the difference between the two is what jwksgate costs).

``python -m bench.baseline --config FILE`` reads the same config file as ``jwksgate run`` and uses
``listen``, ``admin_listen`` (``/readyz`` only) and ``upstream.url`` from it; it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from gateway import eventloop
from gateway.config import Config, load_config

__all__ = ["main"]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


async def serve_baseline(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with session.request(
            request.method, config.upstream.url + request.raw_path, headers=headers, data=body
        ) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=up.status, headers=out, body=data)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    admin = web.Application()
    admin.router.add_get("/readyz", readyz)
    proxy_runner = web.ServerRunner(web.Server(forward, access_log=None))
    admin_runner = web.AppRunner(admin, access_log=None)
    await proxy_runner.setup()
    await admin_runner.setup()
    try:
        await web.TCPSite(proxy_runner, config.listen.host, config.listen.port).start()
        a = config.admin_listen
        await web.TCPSite(admin_runner, a.host, a.port).start()
        await stop.wait()
    finally:
        await proxy_runner.cleanup()
        await admin_runner.cleanup()
        await session.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    loop = eventloop.loop_factory()  # JWKSGATE_EVENT_LOOP, as for jwksgate run
    eventloop.run(serve_baseline(config), loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
