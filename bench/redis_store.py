"""The Redis replay store alone: CPU per push (reserve, then commit) in this process and in Redis.

``python -m bench.redis_store --pushes N --concurrency C`` starts a redis-server of its own, runs
``C`` concurrent pushes at a time through ``gateway.redis_store.RedisReplayStore`` (reserve, a
short pause standing in for the backend, commit) and prints one JSON object: CPU µs per push of
this process (utime + stime) and of the redis-server, for each of ``--repeat`` runs. What the
gateway's Redis path costs, without the HTTP parts of a request. Not part of ``bench/run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench import procs
from gateway.config import parse_config
from gateway.metrics import Metrics
from gateway.redis_store import RedisReplayStore

__all__ = ["main", "measure"]


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _run(
    url: str, pushes: int, concurrency: int, pause: float, redis_pid: int
) -> dict[str, float]:
    cfg = parse_config(
        {
            "replay": {"store": "redis", "redis_url": url},
            "issuers": [{"name": "x", "jwks_url": "http://127.0.0.1:1/j", "issuer": "x"}],
        }
    ).replay
    store = RedisReplayStore(cfg, Metrics())
    counter = iter(range(10**12))
    run_id = os.urandom(4)

    async def one() -> None:
        key = b"bench:" + run_id + next(counter).to_bytes(26, "big")
        assert await store.reserve(key, 10.0)
        await asyncio.sleep(pause)
        await store.commit(key, 60.0)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    try:
        await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm up
        tick = os.sysconf("SC_CLK_TCK")
        t0, r0 = os.times(), _ticks(redis_pid)
        per = pushes // concurrency
        await asyncio.gather(*(worker(per) for _ in range(concurrency)))
        t1, r1 = os.times(), _ticks(redis_pid)
        done = per * concurrency
        own = (t1.user - t0.user + t1.system - t0.system) * 1e6 / done
        redis = (r1 - r0) / tick * 1e6 / done
        return {"process_us": round(own, 1), "redis_us": round(redis, 1),
                "total_us": round(own + redis, 1)}  # fmt: skip
    finally:
        await store.close()


def measure(pushes: int, concurrency: int, pause: float, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="jwksgate-bench-redis-") as d:
        redis, port = procs.start_redis(Path(d))
        try:
            url = f"redis://127.0.0.1:{port}/0"
            runs = [
                asyncio.run(_run(url, pushes, concurrency, pause, redis.popen.pid))
                for _ in range(repeat)
            ]
        finally:
            redis.stop()
    return {
        "pushes": pushes,
        "concurrency": concurrency,
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pushes", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--pause", type=float, default=0.0005, help="seconds between reserve and commit")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    print(json.dumps(measure(a.pushes, a.concurrency, a.pause, a.repeat)))


if __name__ == "__main__":
    main()
