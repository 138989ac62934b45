"""The chaos runs' backend:
``python -m tests.chaos_backend --port P --record FILE --received FILE``.

``tests.backend_proc``'s backend (a line in ``--record`` = "answered 2xx for this jti, handed to
the kernel"; SIGUSR1 = a real SIGKILL between two event-loop steps), plus a line in
``--received`` for every request as it arrives, before it is answered. A push the backend
received more than once had an attempt that reached it without being delivered, or was
delivered twice; the chaos checks tell which from the two files and what the sender was told.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from tests.backend_proc import build_app, jti_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def with_arrivals(app: web.Application, received_fd: int) -> web.Application:
    @web.middleware
    async def arrived(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/__control/"):
            os.write(received_fd, f"{jti_of(request.headers.get('X-Jwt-Claims'))}\n".encode())
        return await handler(request)

    app.middlewares.append(arrived)
    return app


async def serve(port: int, record: str, received: str) -> None:
    record_fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    received_fd = os.open(received, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: os.kill(os.getpid(), signal.SIGKILL))
    runner = web.AppRunner(with_arrivals(build_app(record_fd, 0.0), received_fd), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"backend listening on {port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        os.close(record_fd)
        os.close(received_fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos_backend")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--received", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.record, args.received))
    return 0


if __name__ == "__main__":
    sys.exit(main())
