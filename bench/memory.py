"""Memory per replay entry of ``gateway.replay.MemoryReplayStore``, measured in-process.

``python -m bench.memory --entries 1000000`` prints one JSON object: the RSS growth and the
tracemalloc-traced growth of a store filled with that many entries, each divided by the count.
Entries are made as the gateway makes them: ``<issuer name>:`` + a 32-byte SHA-256 key, reserved
and then committed (a new expiry float).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from gateway.replay import MemoryReplayStore

__all__ = ["fill", "main", "measure"]

_ISSUER = b"orders"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def fill(store: MemoryReplayStore, entries: int, salt: bytes) -> None:
    for i in range(entries):
        key = _ISSUER + b":" + hashlib.sha256(salt + i.to_bytes(8, "big")).digest()
        if not await store.reserve(key, 35.0):
            raise RuntimeError("unexpected duplicate key")
        await store.commit(key, 600.0)


def measure(entries: int) -> dict[str, float]:
    gc.collect()
    rss0 = _rss_bytes()
    started = time.perf_counter()
    store = MemoryReplayStore(entries + 1, time.time)
    asyncio.run(fill(store, entries, b"rss"))
    fill_seconds = time.perf_counter() - started
    gc.collect()
    rss1 = _rss_bytes()
    assert store.entries() == entries

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    traced_store = MemoryReplayStore(entries + 1, time.time)
    asyncio.run(fill(traced_store, entries, b"traced"))
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {
        "entries": entries,
        "rss_bytes_per_entry": (rss1 - rss0) / entries,
        "traced_bytes_per_entry": traced / entries,
        "fill_seconds": fill_seconds,
        "key_bytes": len(_ISSUER) + 1 + 32,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
