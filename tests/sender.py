"""A sender that does what the README tells senders: each push carries its own token,
signed once; on a 5xx, a 408 or a broken connection it retries THE SAME token (after
``Retry-After``, capped to keep the tests short); a 409 on a retry means "already delivered";
anything else is final.

Every attempt is kept (status, reason, monotonic start and end), so a test can say exactly what the
sender saw and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from tests.support import SigningKey, claims_for, sign

CONNECTION_ERROR = 0  # the status recorded for an attempt that got no HTTP answer


@dataclass
class Attempt:
    status: int
    reason: str
    retry_after: str | None
    started: float
    ended: float


@dataclass
class Push:
    jti: str
    token: str
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [a.status for a in self.attempts]

    @property
    def got_2xx(self) -> bool:
        return any(200 <= a.status < 300 for a in self.attempts)

    @property
    def delivered(self) -> bool:
        """What the sender concludes: a 2xx, or a 409 answering one of its retries."""
        if not self.attempts:
            return False
        last = self.attempts[-1]
        return 200 <= last.status < 300 or (last.status == 409 and len(self.attempts) > 1)

    @property
    def started(self) -> float:
        return self.attempts[0].started

    @property
    def ended(self) -> float:
        return self.attempts[-1].ended


def new_push(key: SigningKey, body: bytes | None = None) -> Push:
    """A push with a fresh token (RS256; iss, iat, exp, jti, request_body_sha256)."""
    jti = uuid.uuid4().hex
    body = body if body is not None else json.dumps({"event": "update", "id": jti}).encode()
    token = sign(key, claims_for(body, time.time(), jti=jti))
    return Push(jti=jti, token=token, body=body)


def retriable(status: int) -> bool:
    return status == CONNECTION_ERROR or status == 408 or status >= 500


@dataclass
class Sender:
    http: aiohttp.ClientSession
    url: str
    retry_after_cap: float = 0.5
    backoff: float = 0.05
    max_attempts: int = 200
    budget: float = 30.0
    request_timeout: float = 20.0  # beyond the gateway's upstream timeout: never abandon early
    retrying: bool = True  # a test turns retries off once the gateway is meant to be gone

    async def attempt(self, push: Push) -> Attempt:
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {push.token}", "Content-Type": "application/json"}
        try:
            async with self.http.post(
                self.url + "/hook",
                data=push.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as resp:
                text = await resp.text()
                reason = ""
                with contextlib.suppress(ValueError, AttributeError):
                    reason = str(json.loads(text).get("error", ""))
                a = Attempt(
                    resp.status, reason, resp.headers.get("Retry-After"), started, time.monotonic()
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            a = Attempt(CONNECTION_ERROR, type(e).__name__, None, started, time.monotonic())
        push.attempts.append(a)
        return a

    async def deliver(self, push: Push) -> Push:
        """Send ``push`` until it is answered for good, retrying the same token (bounded)."""
        deadline = time.monotonic() + self.budget
        for _ in range(self.max_attempts):
            a = await self.attempt(push)
            if not retriable(a.status) or not self.retrying or time.monotonic() > deadline:
                break
            delay = self.backoff
            if a.retry_after is not None and a.retry_after.isdigit():
                delay = min(float(a.retry_after), self.retry_after_cap)
            await asyncio.sleep(delay)
        return push

    async def steady(
        self,
        key: SigningKey,
        count: int,
        concurrency: int,
        pushes: list[Push],
        more: Callable[[], bool] = lambda: True,
    ) -> None:
        """``concurrency`` loops delivering fresh pushes one after another, ``count`` in all
        (fewer if ``more()`` turns false); each push is appended to ``pushes`` when it starts."""
        remaining = [count]

        async def loop() -> None:
            while remaining[0] > 0 and more():
                remaining[0] -= 1
                push = new_push(key)
                pushes.append(push)
                await self.deliver(push)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
