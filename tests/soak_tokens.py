"""The soak's tokens, signed ahead of time by a pool of separate processes.

Signing RS256 in Python costs more CPU than the gateway spends verifying it, so a sender that signs
each push in its own event loop measures itself, not the gateway (issue 14's first soaks reached
98-145 pushes/s with the sender's loop up to 1.7 s late). Here push ``i`` of the run is signed in
a worker process before it is due, with exactly the claims a fresh push would carry when it is
sent: ``iat`` = the second it is scheduled for, ``exp`` = ``iat`` + 300, a fresh ``jti`` and the
body's hash. So what the gateway sees is unchanged (same key, algorithm, claims, lifetimes and
replay store fill), only the sender's CPU moves out of the measured interval.

The run's clock must not start before ``wall_start`` (no token may be sent before its ``iat``);
``TokenFeed`` picks ``wall_start`` from a short calibration so that ``presign`` pushes are ready
by then, and keeps signing the rest while the run goes on.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import multiprocessing
import threading
import time
import uuid
from typing import Any

from jwcrypto import jwk

from tests.sender import Push
from tests.support import SigningKey, claims_for, sign

Minted = tuple[str, str, bytes]  # jti, token, body: cheap to pickle

_worker_key: SigningKey | None = None


def _init_worker(key_json: str, kid: str | None, alg: str) -> None:
    global _worker_key
    _worker_key = SigningKey(jwk.JWK.from_json(key_json), kid, alg, {})


def mint(key: SigningKey, iat: float) -> Minted:
    """One push as ``tests.sender.new_push`` makes it, but for the moment ``iat``."""
    jti = uuid.uuid4().hex
    body = json.dumps({"event": "update", "id": jti}).encode()
    return jti, sign(key, claims_for(body, iat, jti=jti)), body


def _mint_chunk(job: tuple[float, float, int, int]) -> list[Minted]:
    wall_start, rate, first, count = job
    assert _worker_key is not None
    return [mint(_worker_key, wall_start + i / rate) for i in range(first, first + count)]


def _probe(count: int) -> float:
    assert _worker_key is not None
    began = time.monotonic()
    for _ in range(count):
        mint(_worker_key, time.time())
    return (time.monotonic() - began) / count


class TokenFeed:
    """Pushes ``0..total-1`` for a run at ``rate`` per second, in order, signed by ``signers``
    worker processes into memory ahead of their send time."""

    def __init__(
        self, key: SigningKey, rate: float, total: int, signers: int, chunk: int = 250
    ) -> None:
        self.key, self.rate, self.total, self.signers = key, rate, total, signers
        self.chunk = chunk
        self.ready: collections.deque[Minted] = collections.deque()
        self.signed = 0
        self.taken = 0
        self.starved_seconds = 0.0  # time the sender waited because the next token was not signed
        self.sign_ms_per_token = 0.0
        self.wall_start = 0.0
        self._pool: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, presign: int) -> float:
        """Start the workers and return ``wall_start``: the ``time.time()`` at which the run's
        clock may start so that about ``presign`` tokens are signed by then."""
        ctx = multiprocessing.get_context("spawn")  # the sender has threads and a loop: no fork
        key_json = self.key.key.export_private()
        self._pool = ctx.Pool(self.signers, _init_worker, (key_json, self.key.kid, self.key.alg))
        # Calibrate on the machine as it is now (busy or not), timed inside the workers so that
        # their start-up does not count: wall seconds per token in one worker.
        self._pool.map(_probe, [5] * (2 * self.signers), chunksize=1)  # warm up every worker
        timed = sorted(self._pool.map(_probe, [40] * (2 * self.signers), chunksize=1))
        median = timed[len(timed) // 2]
        self.sign_ms_per_token = round(1000 * median, 2)
        per_token = median / self.signers  # with every worker signing
        ahead = min(presign, self.total)
        self.wall_start = time.time() + 1.0 + 1.3 * ahead * per_token
        self._thread = threading.Thread(target=self._fill, name="token-feed", daemon=True)
        self._thread.start()
        return self.wall_start

    def _fill(self) -> None:
        jobs = [
            (self.wall_start, self.rate, first, min(self.chunk, self.total - first))
            for first in range(0, self.total, self.chunk)
        ]
        try:
            for minted in self._pool.imap(_mint_chunk, jobs):  # in order
                self.ready.extend(minted)
                self.signed += len(minted)
        except BaseException as e:  # reported by take(); a dead feed must not hang the run
            self._error = e

    async def take(self) -> Push:
        """The next push, waiting (and counting the wait) if the workers are behind."""
        if not self.ready:
            began = time.monotonic()
            while not self.ready:
                if self._error is not None:
                    raise RuntimeError("token signing failed") from self._error
                if self.taken >= self.total:
                    raise RuntimeError("the run wants more tokens than were planned")
                await asyncio.sleep(0.005)
            self.starved_seconds += time.monotonic() - began
        jti, token, body = self.ready.popleft()
        self.taken += 1
        return Push(jti=jti, token=token, body=body)

    def buffered_seconds(self) -> float:
        """How far ahead of the sender the signed tokens reach."""
        return round(len(self.ready) / self.rate, 1)

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()
            pool.join()

    def __enter__(self) -> TokenFeed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def planned_total(minutes: float, rate: float) -> int:
    """Tokens a run needs: every scheduled push, plus a little for the last loop turn."""
    return math.ceil(minutes * 60 * rate) + 2
