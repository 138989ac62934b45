"""Running a bench peer's aiohttp application on 127.0.0.1 on the event loop asked for.

The aiohttp peers run on the same loop as jwksgate in the same run (``bench/run --loop``), so
that the loop is never the difference between two setups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

__all__ = ["run_app"]


def _factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if loop == "asyncio":
        return asyncio.new_event_loop
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_app(app: web.Application, port: int, loop: str) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until SIGTERM or SIGINT, without an access log."""
    event_loop = _factory(loop)()
    asyncio.set_event_loop(event_loop)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handle_signals=True,
        loop=event_loop,
    )
