"""A tiny standalone backend for the fault tests: ``python -m tests.backend_proc --port P --record
FILE [--delay S]``.

Every request is answered 200 after ``--delay`` seconds. The jti of the push (decoded from the
``X-Jwt-Claims`` header: base64url, no padding, of the claims JSON) is appended to FILE, one per
line, only once the 200 response has been written and handed to the kernel: a line in FILE means
"this backend answered 2xx for this token". Restarting the process on the same port appends to the
same file, so FILE counts deliveries across restarts.

``POST /__control/hold`` with body ``on`` makes every push wait, after its delay and before its
answer, until ``off`` (at most a minute); ``GET /__control/held`` says how many are waiting. A test
uses it to have requests provably in flight at the moment it acts, whatever the scheduling.

SIGUSR1 makes the process SIGKILL itself from its event loop. That is a real SIGKILL (no cleanup,
connections reset, in-flight requests lost), delivered between two event-loop steps, so never
between writing a response and recording it: an external SIGKILL could land in that microsecond
and make a delivered push look unrecorded, which would be the test's fault, not the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

_BODY = b'{"ok":true}'


def jti_of(claims_header: str | None) -> str:
    if not claims_header:
        return "-"
    raw = base64.urlsafe_b64decode(claims_header + "=" * (-len(claims_header) % 4))
    claims = json.loads(raw)
    return str(claims.get("jti", "-"))


def build_app(record_fd: int, delay: float) -> web.Application:
    go = asyncio.Event()
    go.set()
    held = [0]

    async def push(request: web.Request) -> web.StreamResponse:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        if not go.is_set():
            held[0] += 1
            try:
                await asyncio.wait_for(go.wait(), 60)
            finally:
                held[0] -= 1
        jti = jti_of(request.headers.get("X-Jwt-Claims"))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = len(_BODY)
        await resp.prepare(request)
        await resp.write(_BODY)
        await resp.write_eof()
        # write_eof succeeded: the bytes went to the transport, which sends a response this small
        # at once; wait (bounded) until nothing is left in its user-space buffer.
        for _ in range(1000):
            transport = request.transport
            if transport is None or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.001)
        else:
            return resp  # never handed to the kernel: not delivered, so not recorded
        os.write(record_fd, f"{jti}\n".encode())  # O_APPEND: one atomic line
        return resp

    async def hold(request: web.Request) -> web.Response:
        if (await request.text()).strip() == "on":
            go.clear()
        else:
            go.set()
        return web.Response(text="ok")

    async def count_held(_: web.Request) -> web.Response:
        return web.Response(text=str(held[0]))

    app = web.Application()
    app.router.add_post("/__control/hold", hold)
    app.router.add_get("/__control/held", count_held)
    app.router.add_route("*", "/{tail:.*}", push)
    return app


async def serve(port: int, record: str, delay: float) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: os.kill(os.getpid(), signal.SIGKILL))
    runner = web.AppRunner(build_app(fd, delay), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"backend listening on {port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend_proc")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.record, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
