"""The baseline proxy: jwksgate's own listener, forwarding and logging, verification off.

``python -m bench.baseline --config FILE`` runs ``gateway.server.run_gateway(config,
passthrough=True)`` until SIGTERM, like ``jwksgate run`` does with verification on: the difference
between the two is what verification costs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from gateway import eventloop
from gateway.config import Config, load_config
from gateway.logs import configure_logging
from gateway.server import run_gateway

__all__ = ["main"]


async def serve_passthrough(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_gateway(config, passthrough=True) as running:
        await stop.wait()
        await running.drain()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    loop = eventloop.loop_factory()  # JWKSGATE_EVENT_LOOP, as for jwksgate run
    configure_logging(args.log_level.upper())
    eventloop.run(serve_passthrough(config), loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
