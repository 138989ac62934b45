"""A soak run (issue 14): one gateway process (memory store, then a real redis-server), a backend
process, a JWKS process, and a steady stream of unique valid pushes at ``--rate`` per second for
``--minutes``. Prints, every ``--every`` seconds and at the end, the gateway's RSS and open fds,
the answers that were not 2xx, and what the backend delivered.

With a healthy Redis the rules are: zero errors, every push delivered once, RSS flat once the
store holds every live token (the tokens live 300 s here, so the store is full after ~5.5 min).

    scripts/soak --minutes 10 [--rate 300] [--stores memory,redis] [--signers 2]

The sender does not sign in its loop: every push is signed ahead by ``--signers`` worker processes
(tests/soak_tokens.py) with the claims it would have if signed at its send time, ``--presign``
seconds of them before the clock starts (the rest while the run goes on). It sends over at most
``--connections`` keep-alive connections and reports, per sample, the rate it actually achieved,
how late it ran against its schedule, its own loop lag and CPU, and how far the signed tokens
reach ahead of it: when the sender falls behind, the samples say whether the machine or the
signers were the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import (
    GatewayProc,
    backend_proc,
    free_ports,
    gateway_config,
    gateway_proc,
    jwks_proc,
    recorded,
    wait_port,
    wait_ready,
)
from tests.redis_support import RedisProcess, redis_server
from tests.sender import Push
from tests.soak_tokens import TokenFeed, planned_total
from tests.support import JwksServer, SigningKey


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """Time ``pid`` has spent runnable but waiting for a CPU (/proc/<pid>/schedstat, field 2);
    0 where the kernel does not keep it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def load_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class LoopLag:
    """The worst lateness of this process's own event loop (ms) since the last ``take``: when
    the sender's loop itself runs seconds late, the machine is starved of CPU, and errors seen
    at that time say more about the machine than about the gateway."""

    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, (time.monotonic() - before - self.tick) * 1000)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return round(worst, 1)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@contextlib.contextmanager
def maybe_redis(store: str) -> Iterator[RedisProcess | None]:
    if store == "memory":
        yield None
    else:
        with redis_server() as r:
            yield r


@contextlib.asynccontextmanager
async def processes(
    tmp: Path, store: str, redis: RedisProcess | None
) -> AsyncIterator[tuple[GatewayProc, Path, SigningKey]]:
    jwks_port, backend_port, port, admin = free_ports(4)
    keys = JwksServer()
    key = keys.add_key()
    jwks_file = tmp / "jwks.json"
    jwks_file.write_bytes(keys.document())
    record = tmp / "delivered.txt"
    jwks = jwks_proc(tmp, jwks_port, jwks_file)
    backend = backend_proc(tmp, backend_port, record)
    replay: dict[str, Any] = {"store": "memory"}
    if redis is not None:
        replay = {"store": "redis", "redis_url": redis.url}
    config = gateway_config(
        port,
        admin,
        f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
        f"http://127.0.0.1:{backend_port}",
        replay=replay,
    )
    gw = gateway_proc(tmp, config)
    try:
        jwks.start()
        backend.start()
        await wait_port(jwks_port, jwks)
        await wait_port(backend_port, backend)
        gw.proc.start()
        yield gw, record, key
    finally:
        gw.proc.stop()
        backend.stop()
        jwks.stop()


@dataclasses.dataclass(frozen=True)
class Load:
    minutes: float
    rate: float
    every: float
    signers: int
    presign: float  # seconds of pushes signed before the clock starts
    connections: int


def connection_counter() -> tuple[aiohttp.TraceConfig, list[int]]:
    """A trace config counting the TCP connections the client opens (keep-alive reuses them)."""
    opened = [0]

    async def created(*_: Any) -> None:
        opened[0] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(created)
    return trace, opened


async def soak(store: str, load: Load) -> dict[str, Any]:
    minutes, rate, every = load.minutes, load.rate, load.every
    trace, opened = connection_counter()
    with (
        tempfile.TemporaryDirectory(prefix=f"jwksgate-soak-{store}-") as d,
        maybe_redis(store) as redis,
    ):
        async with (
            processes(Path(d), store, redis) as (gw, record, key),
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=load.connections),
                trace_configs=[trace],
            ) as http,
        ):
            await wait_ready(gw, http)
            pid = gw.proc.pid
            errors: collections.Counter[str] = collections.Counter()
            ok = 0
            sent = 0
            slots = asyncio.Semaphore(256)
            tasks: set[asyncio.Task[None]] = set()

            async def one(push: Push) -> None:
                nonlocal ok
                headers = {"Authorization": f"Bearer {push.token}"}
                try:
                    async with http.post(
                        gw.url + "/hook",
                        data=push.body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=30),
                    ) as resp:
                        text = await resp.read()
                        if 200 <= resp.status < 300:
                            ok += 1
                        else:
                            reason = ""
                            with contextlib.suppress(ValueError, AttributeError):
                                reason = str(json.loads(text).get("error", ""))
                            errors[f"{resp.status} {reason}".strip()] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    errors[type(e).__name__] += 1
                finally:
                    slots.release()

            with TokenFeed(key, rate, planned_total(minutes, rate), load.signers) as feed:
                wall_start = feed.start(presign=math.ceil(load.presign * rate))
                print(
                    f"[{store}] signing ~{feed.sign_ms_per_token} ms per token per signer; "
                    f"{load.presign:g} s of pushes ahead, clock starts in "
                    f"{wall_start - time.time():.1f} s",
                    flush=True,
                )
                # No token may be sent before its iat: the run's clock starts at wall_start.
                started = time.monotonic() + max(0.0, wall_start - time.time())
                await asyncio.sleep(max(0.0, started - time.monotonic()))
                me = os.getpid()
                samples: list[dict[str, Any]] = []
                lag = LoopLag()
                lag.start()
                last_cpu = [cpu_seconds(pid), time.monotonic(), runqueue_wait_seconds(pid)]
                last_sender = [cpu_seconds(me), runqueue_wait_seconds(me), 0.0]  # cpu, wait, sent
                behind = [0.0]  # the sender's worst lateness against its schedule (s) this interval
                last_errors: collections.Counter[str] = collections.Counter()

                def sample(elapsed: float) -> dict[str, Any]:
                    cpu, at, waited = cpu_seconds(pid), time.monotonic(), runqueue_wait_seconds(pid)
                    span = max(at - last_cpu[1], 1e-3)
                    new_errors = errors - last_errors
                    last_errors.clear()
                    last_errors.update(errors)
                    my_cpu, my_wait = cpu_seconds(me), runqueue_wait_seconds(me)
                    s: dict[str, Any] = {
                        "t": round(elapsed),
                        "sent": sent,
                        # The rate the sender actually achieved over the interval.
                        "rate": round((sent - last_sender[2]) / span, 1),
                        "ok": ok,
                        "errors": sum(errors.values()),
                        "rss_mib": round(rss_kib(pid) / 1024, 1),
                        "fds": open_fds(pid),
                        # What the machine was doing: the gateway's CPU share over the interval, the
                        # 1-minute load (2 cores here), the sender's own worst loop lag.
                        "gw_cpu_pct": round(100 * (cpu - last_cpu[0]) / span),
                        # Time the gateway was ready to run but had no CPU, per second: well above
                        # its CPU time means the machine, not the gateway, sets the latency.
                        "gw_wait_ms_per_s": round(1000 * (waited - last_cpu[2]) / span),
                        "load1": load_1m(),
                        "sender_lag_ms": lag.take(),
                        # How late the sender's sends ran against its schedule, at worst.
                        "sender_behind_ms": round(1000 * behind[0]),
                        "sender_cpu_pct": round(100 * (my_cpu - last_sender[0]) / span),
                        "sender_wait_ms_per_s": round(1000 * (my_wait - last_sender[1]) / span),
                        "signed_ahead_s": feed.buffered_seconds(),
                        "connections": opened[0],
                    }
                    behind[0] = 0.0
                    last_sender[:] = [my_cpu, my_wait, sent]
                    if new_errors:
                        s["new_errors"] = dict(new_errors)
                    last_cpu[:] = [cpu, at, waited]
                    if redis is not None and redis.proc is not None:
                        s["redis_rss_mib"] = round(rss_kib(redis.proc.pid) / 1024, 1)
                    samples.append(s)
                    print(f"[{store}] " + json.dumps(s), flush=True)
                    return s

                end = started + minutes * 60
                next_sample = started
                while time.monotonic() < end:
                    now = time.monotonic()
                    if now >= next_sample:
                        sample(now - started)
                        next_sample += every
                    due = started + sent / rate
                    if due > now:
                        await asyncio.sleep(due - now)
                    push = await feed.take()
                    await slots.acquire()
                    behind[0] = max(behind[0], time.monotonic() - due)
                    sent += 1
                    task = asyncio.ensure_future(one(push))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elapsed = time.monotonic() - started  # the sending time: the rate's denominator
                feed.close()
                if tasks:
                    await asyncio.wait_for(asyncio.gather(*tasks), 60)
                last = sample(time.monotonic() - started)
                lag.stop()
                await asyncio.sleep(0.5)  # the backend records just after answering
                delivered = recorded(record)
                return {
                    "store": store,
                    "minutes": minutes,
                    "target_rate": rate,
                    "achieved_rate": round(sent / elapsed, 1),
                    "pushes": sent,
                    "answered_2xx": ok,
                    "errors": dict(errors),
                    "delivered_by_backend": sum(delivered.values()),
                    "delivered_twice": sum(1 for n in delivered.values() if n > 1),
                    "rss_mib_first_last": [samples[0]["rss_mib"], last["rss_mib"]],
                    "rss_mib_max": max(s["rss_mib"] for s in samples),
                    "fds_first_last": [samples[0]["fds"], last["fds"]],
                    "sender_lag_ms_max": max(s["sender_lag_ms"] for s in samples),
                    "sender_behind_ms_max": max(s["sender_behind_ms"] for s in samples),
                    "sender_cpu_pct_max": max(s["sender_cpu_pct"] for s in samples),
                    "sender_waited_for_tokens_s": round(feed.starved_seconds, 2),
                    "sign_ms_per_token": feed.sign_ms_per_token,
                    "connections_opened": opened[0],
                    "gw_wait_ms_per_s_max": max(s["gw_wait_ms_per_s"] for s in samples),
                    "load1_max": max(s["load1"] for s in samples),
                }


async def cli(stores: list[str], load: Load) -> int:
    failed = False
    for store in stores:
        result = await soak(store, load)
        print(json.dumps(result, indent=2), flush=True)
        failed = failed or bool(result["errors"]) or result["delivered_twice"] > 0
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="pushes per second")
    parser.add_argument("--stores", default="memory,redis")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--signers", type=int, default=2, help="token signing processes")
    parser.add_argument(
        "--presign",
        type=float,
        default=None,
        help="seconds of pushes signed before the clock starts (default: the whole run)",
    )
    parser.add_argument(
        "--connections", type=int, default=128, help="keep-alive connections to the gateway"
    )
    args = parser.parse_args(argv)
    stores = [s for s in args.stores.split(",") if s]
    presign = args.minutes * 60 if args.presign is None else args.presign
    load = Load(args.minutes, args.rate, args.every, args.signers, presign, args.connections)
    return asyncio.run(cli(stores, load))


if __name__ == "__main__":
    sys.exit(main())
