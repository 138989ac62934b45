"""Delivery under faults (issue 14): two gateway replicas as real processes sharing a real
redis-server, a JWKS process, a backend process, a sender that retries like real webhook senders,
and faults injected while it pushes: SIGKILL, SIGSTOP and restart of the backend, of Redis and of
one replica, and SIGHUP (a reload) to a replica.

Used by ``tests/test_chaos.py`` (a bounded run) and ``scripts/chaos`` (a long one that prints its
figures). What is checked, from the sender's attempts and the backend's two record files
(``tests.chaos_backend``: every arrival, and every 2xx handed to the kernel):

- nothing lost: every push ends "delivered" for the sender (a 2xx, or a 409 after a retry), and
  the backend answered 2xx for each at least once;
- a push is answered 2xx by the backend more than once only if one of its attempts was
  ambiguous: no answer (the connection broke or the sender's timeout fired) or 502/504, which
  the gateway gives when the backend may have taken the push without answering in time;
- and each such duplicate has a cause that was seen: the gateway logged that attempt as an
  ambiguous delivery (and counted it in ``jwksgate_ambiguous_deliveries_total``: each replica's
  counter equals its log lines since it last started), or the attempt died with the replica that
  was SIGKILLed while holding it, or Redis was SIGKILLed (restarted empty, so it forgot the
  delivered key) while the push was being retried;
- a fresh push is never refused as a replay, and no attempt ends in another 4xx.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import (
    GatewayProc,
    Proc,
    free_ports,
    gateway_config,
    gateway_proc,
    jwks_proc,
    metric_samples,
    recorded,
    wait_port,
    wait_ready,
)
from tests.redis_support import RedisProcess
from tests.sender import CONNECTION_ERROR, Attempt, Push, new_push
from tests.support import JwksServer, SigningKey

UPSTREAM_TIMEOUT = 2.0
# Shorter than the upstream timeout, as many senders' are: a sender gives up on an attempt the
# backend is still working on and retries it while the first attempt is in flight.
SENDER_TIMEOUT = 1.5
# One round of faults, shuffled. A backend that stalls is the commonest fault (and the one where
# a sender's timeout races the gateway's), so it comes twice a round.
FAULTS = (
    "backend_kill",
    "backend_stop",
    "backend_stop",
    "redis_kill",
    "redis_stop",
    "replica_kill",
    "replica_stop",
    "replica_sighup",
)


AMBIGUOUS_METRIC = "jwksgate_ambiguous_deliveries_total"
_AMBIGUOUS_LINE = re.compile(r"ambiguous delivery: .*\((\w+) after .*request ([\w.:-]+)\)$")
_STARTED_LINE = "jwksgate listening on"


def attempt_id(push: Push, n: int) -> str:
    return f"{push.jti}.{n}"


def retryable(status: int) -> bool:
    """What real webhook senders retry: 5xx, 408, 429 and no answer at all."""
    return status == CONNECTION_ERROR or status in (408, 429) or status >= 500


def ambiguous(a: Attempt) -> bool:
    """An attempt after which the backend may or may not have taken the push."""
    return a.status in (CONNECTION_ERROR, 502, 504)


@dataclass
class RetryingSender:
    """Like real senders: retry the same push with exponential backoff and jitter (honouring
    Retry-After, capped to keep runs short), each attempt through the load balancer (a random
    replica), until a 2xx, a 409 or another 4xx, or its budget is spent."""

    http: aiohttp.ClientSession
    urls: list[str]
    rng: random.Random
    retry_after_cap: float = 1.0
    budget: float = 90.0
    # request id ("<jti>.<attempt number>", sent as X-Request-Id) -> the replica it went to
    routes: dict[str, int] = field(default_factory=dict)

    async def attempt(self, push: Push) -> Attempt:
        replica = self.rng.randrange(len(self.urls))
        url = self.urls[replica]
        rid = attempt_id(push, len(push.attempts))
        self.routes[rid] = replica
        started = time.monotonic()
        headers = {
            "Authorization": f"Bearer {push.token}",
            "Content-Type": "application/json",
            "X-Request-Id": rid,
        }
        try:
            async with self.http.post(
                url + "/hook",
                data=push.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=SENDER_TIMEOUT),
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

    async def deliver(self, push: Push) -> None:
        deadline = time.monotonic() + self.budget
        backoff = 0.05
        while True:
            a = await self.attempt(push)
            if not retryable(a.status) or time.monotonic() > deadline:
                return
            delay = backoff * (0.5 + self.rng.random())
            if a.retry_after is not None and a.retry_after.isdigit():
                delay = max(delay, min(float(a.retry_after), self.retry_after_cap))
            backoff = min(backoff * 2, 1.0)
            await asyncio.sleep(delay)


@dataclass
class Rig:
    tmp: Path
    key: SigningKey
    jwks: Proc
    backend: Proc
    backend_port: int
    record: Path
    received: Path
    redis: RedisProcess
    replicas: list[GatewayProc]
    http: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def rig(tmp: Path, *, replicas: int = 2) -> AsyncIterator[Rig]:
    jwks_port, backend_port, redis_port = free_ports(3)
    issuer_keys = JwksServer()
    key = issuer_keys.add_key()
    jwks_file = tmp / "jwks.json"
    jwks_file.write_bytes(issuer_keys.document())
    record, received = tmp / "delivered.txt", tmp / "received.txt"
    jwks = jwks_proc(tmp, jwks_port, jwks_file)
    argv = [sys.executable, "-m", "tests.chaos_backend", "--port", str(backend_port)]
    argv += ["--record", str(record), "--received", str(received)]
    backend = Proc("backend", argv, tmp)
    (tmp / "redis").mkdir()
    redis = RedisProcess(port=redis_port, workdir=tmp / "redis")
    gateways = []
    for i in range(replicas):
        port, admin = free_ports(2)
        config = gateway_config(
            port,
            admin,
            f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            f"http://127.0.0.1:{backend_port}",
            upstream={"timeout_seconds": UPSTREAM_TIMEOUT},
            replay={"store": "redis", "redis_url": redis.url, "redis_timeout_seconds": 0.25},
            shutdown_grace_seconds=2,
        )
        d = tmp / f"replica{i}"
        d.mkdir()
        gateways.append(gateway_proc(d, config))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            await asyncio.to_thread(redis.start)
            jwks.start()
            backend.start()
            await wait_port(jwks_port, jwks)
            await wait_port(backend_port, backend)
            for g in gateways:
                g.proc.start()
            for g in gateways:
                await wait_ready(g, http)
            yield Rig(
                tmp, key, jwks, backend, backend_port, record, received, redis, gateways, http
            )
        finally:
            for g in gateways:
                g.proc.stop()
            backend.stop()
            jwks.stop()
            redis.stop()


@dataclass
class Injector:
    """Faults one after another, each kind in turn (shuffled rounds), until told to stop."""

    r: Rig
    rng: random.Random
    done: list[tuple[str, float]] = field(default_factory=list)
    # (kind, monotonic start, monotonic end) of every fault
    windows: list[tuple[str, float, float]] = field(default_factory=list)

    async def run(self, more: Callable[[], bool]) -> None:
        order: list[str] = []
        while more():
            if not order:
                order = list(FAULTS)
                self.rng.shuffle(order)
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
            kind = order.pop()
            started = time.monotonic()
            await getattr(self, kind)()
            ended = time.monotonic()
            self.done.append((kind, ended - started))
            self.windows.append((kind, started, ended))

    async def pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))

    async def backend_kill(self) -> None:
        # SIGUSR1: the backend SIGKILLs itself between two event-loop steps, so never between
        # answering a push and recording it (see tests/backend_proc.py).
        self.r.backend.signal(signal.SIGUSR1)
        await self.r.backend.wait_exit(10)
        await self.pause(0.2, 1.0)
        self.r.backend.start()
        await wait_port(self.r.backend_port, self.r.backend)

    async def backend_stop(self) -> None:
        # Sometimes past the upstream timeout: 504s for pushes the backend then answers.
        self.r.backend.signal(signal.SIGSTOP)
        try:
            await self.pause(0.3, UPSTREAM_TIMEOUT * 1.5)
        finally:
            self.r.backend.signal(signal.SIGCONT)

    async def redis_kill(self) -> None:
        await asyncio.to_thread(self.r.redis.stop, signal.SIGKILL)
        await self.pause(0.2, 1.0)
        await asyncio.to_thread(self.r.redis.start)  # same port, empty

    async def redis_stop(self) -> None:
        assert self.r.redis.proc is not None
        self.r.redis.proc.send_signal(signal.SIGSTOP)
        try:
            await self.pause(0.2, 1.5)
        finally:
            self.r.redis.proc.send_signal(signal.SIGCONT)

    async def replica_kill(self) -> None:
        victim = self.r.replicas[-1]
        victim.proc.signal(signal.SIGKILL)
        await victim.proc.wait_exit(10)
        await self.pause(0.2, 1.0)
        victim.proc.start()
        await wait_ready(victim, self.r.http)

    async def replica_stop(self) -> None:
        victim = self.r.replicas[-1]
        victim.proc.signal(signal.SIGSTOP)
        try:
            await self.pause(0.3, SENDER_TIMEOUT * 1.2)
        finally:
            victim.proc.signal(signal.SIGCONT)

    async def replica_sighup(self) -> None:
        self.rng.choice(self.r.replicas).proc.signal(signal.SIGHUP)


@dataclass
class Report:
    seed: int
    seconds: float
    pushes: list[Push]
    faults: list[tuple[str, float]]
    answered: collections.Counter[str]
    received: collections.Counter[str]
    problems: list[str]
    seen: Seen

    def counts(self) -> dict[str, Any]:
        attempts = [a for p in self.pushes for a in p.attempts]
        outcomes = collections.Counter(f"{a.status} {a.reason}".strip() for a in attempts)
        times = collections.Counter(self.answered[p.jti] for p in self.pushes)
        twice = [p for p in self.pushes if self.answered[p.jti] > 1]
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "pushes": len(self.pushes),
            "attempts": len(attempts),
            "faults": len(self.faults),
            "faults_by_kind": dict(collections.Counter(k for k, _ in self.faults)),
            "answers": dict(sorted(outcomes.items())),
            "delivered_by_backend_times": {str(k): v for k, v in sorted(times.items())},
            "pushes_with_an_ambiguous_attempt": sum(
                any(ambiguous(a) for a in p.attempts) for p in self.pushes
            ),
            "received_by_backend_more_than_once": sum(
                self.received[p.jti] > 1 for p in self.pushes
            ),
            "lost": sum(self.answered[p.jti] == 0 for p in self.pushes),
            "delivered_twice_or_more": len(twice),
            "duplicates_by_cause": dict(
                collections.Counter("+".join(sorted(self.seen.causes(p))) or "none" for p in twice)
            ),
            "ambiguous_logged_by_cause": dict(collections.Counter(self.seen.logged.values())),
            "ambiguous_counted_by_replicas_now": self.seen.counted,
            "problems": len(self.problems),
        }


@dataclass
class Seen:
    """What the replicas said about ambiguous attempts, and when faults ran."""

    logged: dict[str, str]  # request id -> cause, from every replica's log lines
    counted: list[float]  # each replica's jwksgate_ambiguous_deliveries_total now
    mismatches: list[str]  # replicas whose counter is not their log lines since their start
    routes: dict[str, int]
    windows: list[tuple[str, float, float]]
    victim: int

    def _during(self, kind: str, start: float, end: float) -> bool:
        return any(k == kind and s <= end and start <= e for k, s, e in self.windows)

    def causes(self, p: Push) -> set[str]:
        """Why ``p`` may have been delivered more than once, from what was observed."""
        out = set()
        for n, a in enumerate(p.attempts):
            rid = attempt_id(p, n)
            if rid in self.logged:
                out.add("gateway_" + self.logged[rid])
            if (
                a.status == CONNECTION_ERROR
                and self.routes.get(rid) == self.victim
                and self._during("replica_kill", a.started, a.ended)
            ):
                # The replica died holding the attempt: nobody was left to count it.
                out.add("replica_killed")
        if self._during("redis_kill", p.started, p.ended):
            out.add("redis_emptied")  # restarted empty: it forgot the delivered key
        return out


async def gateway_view(
    r: Rig, routes: dict[str, int], windows: list[tuple[str, float, float]]
) -> Seen:
    logged: dict[str, str] = {}
    counted: list[float] = []
    mismatches: list[str] = []
    for i, g in enumerate(r.replicas):
        since_start = 0
        # Every log line is on stdout (one ECS schema: the text is "message").
        out = g.proc.logdir / f"{g.proc.name}.out"
        for line in out.read_text(errors="replace").splitlines():
            try:
                msg = str(json.loads(line).get("message", ""))
            except (ValueError, AttributeError):
                continue
            if msg.startswith(_STARTED_LINE):
                since_start = 0
            elif m := _AMBIGUOUS_LINE.search(msg):
                logged[m.group(2)] = m.group(1)
                since_start += 1
        total = sum(v for _, v in await metric_samples(r.http, g.admin_url, AMBIGUOUS_METRIC))
        counted.append(total)
        if total != since_start:
            mismatches.append(
                f"replica {i} counted {total} ambiguous deliveries, logged {since_start}"
            )
    return Seen(logged, counted, mismatches, routes, windows, len(r.replicas) - 1)


def describe(p: Push) -> str:
    return f"{p.jti[:8]}: {[(a.status, a.reason) for a in p.attempts]}"


def check(pushes: list[Push], answered: collections.Counter[str], seen: Seen) -> list[str]:
    """Everything that breaks the delivery rules, one line per push (empty: all held)."""
    problems = list(seen.mismatches)
    for p in pushes:
        last = p.attempts[-1]
        if p.statuses[0] == 409:
            problems.append("a fresh push refused as a replay: " + describe(p))
        elif not (200 <= last.status < 300 or last.status == 409):
            problems.append("the sender gave up: " + describe(p))
        elif answered[p.jti] == 0:
            problems.append("lost (the sender was told delivered, the backend never was): "
                            + describe(p))  # fmt: skip
        elif answered[p.jti] > 1 and not any(ambiguous(a) for a in p.attempts):
            problems.append(f"delivered {answered[p.jti]}x without an ambiguous attempt: "
                            + describe(p))  # fmt: skip
        elif answered[p.jti] > 1 and not seen.causes(p):
            problems.append(f"delivered {answered[p.jti]}x and no replica saw why: "
                            + describe(p))  # fmt: skip
    sent = {p.jti for p in pushes}
    strangers = set(answered) - sent
    if strangers:
        problems.append(f"the backend answered pushes nobody sent: {sorted(strangers)[:5]}")
    return problems


async def settle(r: Rig, pushes: list[Push], limit: float = 10.0) -> collections.Counter[str]:
    """The backend's record once every push the sender saw 2xx for is in it (bounded): the
    line is written just after the 2xx went out."""
    want = {p.jti for p in pushes if p.got_2xx}
    for _ in range(int(limit / 0.02)):
        rec = recorded(r.record)
        if want <= rec.keys():
            return rec
        await asyncio.sleep(0.02)
    return recorded(r.record)


async def run(
    tmp: Path,
    *,
    pushes: int,
    rate: float,
    min_faults: int,
    seed: int | None = None,
    concurrency: int = 64,
) -> Report:
    """Push ``pushes`` unique pushes at ``rate``/s (more if needed until ``min_faults`` faults
    have run, at most twice as many), with faults injected throughout; then check."""
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    async with rig(tmp) as r:
        sender = RetryingSender(r.http, [g.url for g in r.replicas], random.Random(seed + 1))
        injector = Injector(r, random.Random(seed + 2))
        sent: list[Push] = []
        sending = True
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(p: Push) -> None:
            try:
                await sender.deliver(p)
            finally:
                slots.release()

        faults = asyncio.ensure_future(injector.run(lambda: sending))
        most = 2 * pushes
        started = time.monotonic()
        try:
            while len(sent) < pushes or (len(injector.done) < min_faults and len(sent) < most):
                due = started + len(sent) / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                p = new_push(r.key, json.dumps({"n": len(sent), "r": rng.random()}).encode())
                sent.append(p)
                task = asyncio.ensure_future(one(p))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sending = False
            await asyncio.wait_for(faults, 60)  # the fault under way ends; everything is back
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), sender.budget + 30)
        finally:
            sending = False
            for t in [faults, *tasks]:
                t.cancel()
            await asyncio.gather(faults, *tasks, return_exceptions=True)
        seconds = time.monotonic() - started
        answered = await settle(r, sent)
        received = recorded(r.received)
        seen = await gateway_view(r, sender.routes, injector.windows)
        problems = check(sent, answered, seen)
        return Report(seed, seconds, sent, injector.done, answered, received, problems, seen)


def main_figures(report: Report) -> str:
    lines = [json.dumps(report.counts(), indent=2)]
    lines += report.problems[:50]
    return "\n".join(lines)


async def cli(pushes: int, rate: float, min_faults: int, seed: int | None) -> int:
    with tempfile.TemporaryDirectory(prefix="jwksgate-chaos-") as d:
        report = await run(Path(d), pushes=pushes, rate=rate, min_faults=min_faults, seed=seed)
        print(main_figures(report), flush=True)
        return 1 if report.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos", description="Push under faults and check that nothing is lost."
    )
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=40.0, help="new pushes per second")
    parser.add_argument("--min-faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    return asyncio.run(cli(args.pushes, args.rate, args.min_faults, args.seed))


if __name__ == "__main__":
    sys.exit(main())
