"""The admin port: /livez (alias /healthz), /readyz and /metrics. One app for the single process
and for the ``workers: N`` supervisor; each passes how it knows readiness and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["admin_app"]

Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Exposition = Callable[[], Awaitable[tuple[bytes, str]]]


def admin_app(readiness: Readiness, exposition: Exposition) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = await readiness()
        return web.json_response(detail, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = await exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/healthz", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
