"""Nothing lost under faults (issue 3, items 4-6), with real processes.

The gateway runs as ``python -m gateway run --config FILE``; the backend (``tests.backend_proc``)
and the JWKS endpoint (``tests.jwks_proc``) are processes too, and Redis is a real redis-server.
The sender (``tests.sender``) signs every push once and retries the same token on a 5xx or a broken
connection, as the README tells senders; the backend writes a jti to its record file only after
its 200 has been written, so the file is the truth about what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml

from tests.procs import (
    GatewayProc,
    Proc,
    backend_proc,
    child_pids,
    free_ports,
    gateway_config,
    gateway_proc,
    get,
    jwks_proc,
    listening_socket_owners,
    metric_samples,
    pid_alive,
    settled,
    wait_port,
    wait_ready,
)
from tests.redis_support import redis_server
from tests.sender import CONNECTION_ERROR, Push, Sender, new_push
from tests.support import JwksServer, SigningKey

T = TypeVar("T")


@dataclass
class Rig:
    """A JWKS process, a backend process and a gateway process, wired on loopback."""

    tmp: Path
    key: SigningKey
    issuer_keys: JwksServer
    jwks_file: Path
    jwks: Proc
    jwks_port: int
    backend: Proc
    backend_port: int
    record: Path
    gateway: GatewayProc
    listen_port: int
    http: aiohttp.ClientSession  # keep-alive, as senders pool connections
    fresh: aiohttp.ClientSession  # a new connection for every request
    sender: Sender

    def publish(self) -> None:
        self.jwks_file.write_bytes(self.issuer_keys.document())


@contextlib.asynccontextmanager
async def rig(
    tmp: Path,
    *,
    backend_delay: float = 0.0,
    issuer: dict[str, Any] | None = None,
    **top: Any,
) -> AsyncIterator[Rig]:
    jwks_port, backend_port, listen_port, admin_port = free_ports(4)
    issuer_keys = JwksServer()
    key = issuer_keys.add_key()
    jwks_file = tmp / "jwks.json"
    jwks_file.write_bytes(issuer_keys.document())
    record = tmp / "delivered.txt"
    jwks = jwks_proc(tmp, jwks_port, jwks_file)
    backend = backend_proc(tmp, backend_port, record, backend_delay)
    config = gateway_config(
        listen_port,
        admin_port,
        f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
        f"http://127.0.0.1:{backend_port}",
        **top,
    )
    if issuer:
        config["issuers"][0].update(issuer)
    gw = gateway_proc(tmp, config)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0)) as fresh,
    ):
        try:
            jwks.start()
            backend.start()
            await wait_port(jwks_port, jwks)
            await wait_port(backend_port, backend)
            gw.proc.start()
            await wait_ready(gw, http)
            yield Rig(
                tmp=tmp,
                key=key,
                issuer_keys=issuer_keys,
                jwks_file=jwks_file,
                jwks=jwks,
                jwks_port=jwks_port,
                backend=backend,
                backend_port=backend_port,
                record=record,
                gateway=gw,
                listen_port=listen_port,
                http=http,
                fresh=fresh,
                sender=Sender(http, gw.url),
            )
        finally:
            for p in (gw.proc, backend, jwks):
                p.stop()


async def until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Poll a condition, bounded in time; fails the test if it never holds."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.01) + 1):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached within {limit}s: {what}")


async def poll(check: Callable[[], Awaitable[bool]], limit: float, what: str) -> None:
    """Poll an asynchronous check (an HTTP probe), bounded in time."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.05) + 1):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            if await check():
                return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {limit}s: {what}")


async def finish(task: asyncio.Future[T], limit: float) -> T:
    """Wait for a background task, bounded; cancelled (and the test failed) if it overruns."""
    try:
        return await asyncio.wait_for(task, limit)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def delivered_count(pushes: list[Push]) -> int:
    return sum(p.delivered for p in pushes)


def describe(pushes: list[Push]) -> str:
    return "; ".join(f"{p.jti[:8]}: {[(a.status, a.reason) for a in p.attempts]}" for p in pushes)


def failures(pushes: list[Push], status: int) -> int:
    """How many attempts so far were answered ``status``."""
    return sum(a.status == status for p in list(pushes) for a in list(p.attempts))


async def check_delivered_exactly_once(pushes: list[Push], record: Path) -> None:
    """Every push delivered, as the sender sees it and as the backend counts it (once)."""
    rec = await settled(record, [p.jti for p in pushes if p.delivered])
    undelivered = [p for p in pushes if not p.delivered]
    assert not undelivered, "sender gave up on: " + describe(undelivered)
    first_409 = [p for p in pushes if p.statuses[0] == 409]
    assert not first_409, "a fresh token refused as a replay: " + describe(first_409)
    ok_unrecorded = [p for p in pushes if p.got_2xx and rec[p.jti] == 0]
    assert not ok_unrecorded, "2xx without the backend's 2xx: " + describe(ok_unrecorded)
    not_once = {p.jti: rec[p.jti] for p in pushes if rec[p.jti] != 1}
    assert not not_once, f"jti -> times recorded at the backend (want 1): {not_once}"
    assert set(rec) == {p.jti for p in pushes}, "the backend recorded pushes nobody sent"


# -- 1. backend killed -------------------------------------------------------------------------


@pytest.mark.slow
async def test_backend_killed_and_restarted_every_push_is_delivered_exactly_once(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, backend_delay=0.02) as r:
        pushes: list[Push] = []
        load = asyncio.ensure_future(r.sender.steady(r.key, 160, 8, pushes))
        try:
            await until(lambda: delivered_count(pushes) >= 40, 30, "40 pushes delivered")
            r.backend.signal(signal.SIGUSR1)  # it SIGKILLs itself (see tests/backend_proc.py)
            assert await r.backend.wait_exit(10) == -signal.SIGKILL
            # Down for a second at least, and until senders have been told so a few times.
            down_until = time.monotonic() + 1.0
            await until(
                lambda: time.monotonic() > down_until and failures(pushes, 502) >= 8,
                30,
                "senders answered 502 while the backend is down",
            )
            before_restart = len(pushes)
            r.backend.start()  # same port, same record file
            await wait_port(r.backend_port, r.backend)
            await finish(load, 90)
        finally:
            await finish(load, 0)

        assert len(pushes) == 160
        await check_delivered_exactly_once(pushes, r.record)
        assert before_restart < 160, "the load was over before the backend came back"
        retried = [a for p in pushes for a in p.attempts[:-1]]
        assert retried, "the backend's death was never seen by a sender: no fault was tested"
        assert {(a.status, a.reason) for a in retried} <= {
            (502, "upstream_unavailable"),
            (504, "upstream_timeout"),
        }, describe([p for p in pushes if len(p.attempts) > 1])
        assert r.gateway.proc.alive()


# -- 2. Redis killed ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_redis_killed_and_restarted_empty_nothing_is_forwarded_unanswered_or_twice(
    tmp_path: Path,
) -> None:
    with redis_server() as redis:
        async with rig(
            tmp_path, backend_delay=0.02, replay={"store": "redis", "redis_url": redis.url}
        ) as r:
            pushes: list[Push] = []
            load = asyncio.ensure_future(r.sender.steady(r.key, 160, 8, pushes))
            ready_while_down: list[int] = []
            try:
                await until(lambda: delivered_count(pushes) >= 40, 30, "40 pushes delivered")
                t_kill = time.monotonic()
                await asyncio.to_thread(redis.stop, signal.SIGKILL)
                # Down for a second at least, until readiness reports it and senders have been
                # told so a few times (bounded).
                down_until = time.monotonic() + 1.0
                for _ in range(1500):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        ready_while_down.append(
                            (await get(r.http, r.gateway.admin_url + "/readyz"))[0]
                        )
                    if (
                        503 in ready_while_down
                        and failures(pushes, 503) >= 8
                        and time.monotonic() > down_until
                    ):
                        break
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(redis.start)  # same port, empty
                t_up = time.monotonic()
                await finish(load, 90)
            finally:
                await finish(load, 0)

            assert 503 in ready_while_down, "readiness never reported the store down"
            rec = await settled(r.record, [p.jti for p in pushes if p.delivered])
            assert len(pushes) == 160
            # The sender got every push through, and never a 2xx the backend had not answered.
            undelivered = [p for p in pushes if not p.delivered]
            assert not undelivered, "sender gave up on: " + describe(undelivered)
            ok_unrecorded = [p for p in pushes if p.got_2xx and rec[p.jti] == 0]
            assert not ok_unrecorded, "2xx without the backend's 2xx: " + describe(ok_unrecorded)
            lost = [p for p in pushes if rec[p.jti] == 0]
            assert not lost, "delivered as the sender sees it, never at the backend: " + describe(
                lost
            )
            # Exactly once wherever Redis was up for the whole delivery, before the kill or after
            # the restart: that is what the store guarantees. (An EMPTY restarted Redis has
            # forgotten what was committed before, so it would let a replay of those through.)
            before = [p for p in pushes if p.ended < t_kill]
            after = [p for p in pushes if p.started > t_up]
            assert before and after
            twice = {p.jti: rec[p.jti] for p in before + after if rec[p.jti] != 1}
            assert not twice, f"jti -> times recorded, Redis up throughout (want 1): {twice}"
            # In flight across the fault, the store guarantees nothing, but this sender never
            # resends a token after a 2xx, and the gateway releases a reservation only when the
            # backend did not answer 2xx: a second delivery would mean a 5xx for a push the
            # backend had accepted (say, a commit that failed while Redis was down turned into
            # an error answer).
            spanning = [p for p in pushes if p not in before and p not in after]
            twice = {p.jti: rec[p.jti] for p in spanning if rec[p.jti] != 1}
            assert not twice, f"jti -> times recorded, in flight across the fault: {twice}"
            # The fault was seen, as documented: 503 replay_store_unavailable + Retry-After.
            retried = [a for p in pushes for a in p.attempts[:-1]]
            assert retried, "no sender ever saw the store down: no fault was tested"
            assert {(a.status, a.reason) for a in retried} == {(503, "replay_store_unavailable")}
            assert all(a.retry_after and a.retry_after.isdigit() for a in retried)

            # The same gateway process resumed: ready again, pushes forwarded, replays refused.
            assert r.gateway.proc.alive() and r.gateway.proc.starts == 1
            await wait_ready(r.gateway, r.http)
            assert all(p.statuses[-1] == 200 for p in after)
            replay = await r.sender.attempt(after[-1])
            assert (replay.status, replay.reason) == (409, "replayed")
            fresh = await r.sender.deliver(new_push(r.key))
            assert fresh.statuses == [200]
            assert (await settled(r.record, [fresh.jti]))[fresh.jti] == 1


@pytest.mark.slow
async def test_redis_stalled_then_resumed_every_push_is_delivered_exactly_once(
    tmp_path: Path,
) -> None:
    """A Redis that stops answering (SIGSTOP) for a while, then resumes with its data: commands
    sent meanwhile time out in the gateway but run later in Redis. The sender's retries of those
    tokens must still be forwarded, and nothing twice: the store was never emptied."""
    with redis_server() as redis:
        replay = {"store": "redis", "redis_url": redis.url, "redis_timeout_seconds": 0.2}
        async with rig(tmp_path, backend_delay=0.02, replay=replay) as r:
            assert redis.proc is not None
            pushes: list[Push] = []
            load = asyncio.ensure_future(r.sender.steady(r.key, 160, 8, pushes))
            ready_while_stalled: list[int] = []
            try:
                await until(lambda: delivered_count(pushes) >= 40, 30, "40 pushes delivered")
                redis.proc.send_signal(signal.SIGSTOP)
                try:
                    # Stalled until readiness says so and senders have had reservations time out
                    # (their SETs wait in Redis's socket buffers), bounded.
                    for _ in range(500):
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            status, _ = await get(r.http, r.gateway.admin_url + "/readyz")
                            ready_while_stalled.append(status)
                        if 503 in ready_while_stalled and failures(pushes, 503) >= 8:
                            break
                        await asyncio.sleep(0.02)
                finally:
                    redis.proc.send_signal(signal.SIGCONT)
                await finish(load, 90)
            finally:
                await finish(load, 0)

            assert 503 in ready_while_stalled, "readiness never reported the store stalled"
            assert len(pushes) == 160
            await check_delivered_exactly_once(pushes, r.record)
            retried = [a for p in pushes for a in p.attempts[:-1]]
            assert retried, "no sender ever saw the store stalled: no fault was tested"
            assert {(a.status, a.reason) for a in retried} == {(503, "replay_store_unavailable")}
            await wait_ready(r.gateway, r.http)


# -- 3. JWKS server killed ---------------------------------------------------------------------


@pytest.mark.slow
async def test_jwks_killed_cached_kids_verify_unknown_kids_get_503(tmp_path: Path) -> None:
    # min_refresh_interval 0: every unknown kid really asks the (dead) JWKS server again.
    jwks_cfg = {"jwks": {"min_refresh_interval_seconds": 0}}
    async with rig(tmp_path, issuer=jwks_cfg) as r:
        fetched = await metric_samples(r.http, r.gateway.admin_url, "jwksgate_jwks_fetches_total")
        assert {"issuer": "sender", "result": "success"} in [labels for labels, v in fetched if v]
        r.jwks.stop()  # SIGKILL
        assert r.jwks.returncode() == -signal.SIGKILL

        cached = new_push(r.key)
        assert (await r.sender.attempt(cached)).status == 200, describe([cached])

        stranger = JwksServer().add_key()  # a kid the gateway has never seen
        unknown = new_push(stranger)
        a = await r.sender.attempt(unknown)
        assert (a.status, a.reason) == (503, "jwks_unavailable"), a
        assert a.retry_after is not None and a.retry_after.isdigit()
        fetched = await metric_samples(r.http, r.gateway.admin_url, "jwksgate_jwks_fetches_total")
        failures = sum(v for labels, v in fetched if labels["result"] == "failure")
        assert failures >= 1, "the unknown kid did not make the gateway try the JWKS server"

        # The cached key set is still usable: pushes with its kid verify, and the gateway is ready.
        again = new_push(r.key)
        assert (await r.sender.attempt(again)).status == 200, describe([again])
        status, body = await get(r.http, r.gateway.admin_url + "/readyz")
        assert status == 200, body

        # The issuer comes back with the new key: the retry of the very same token goes through.
        r.issuer_keys.keys.append(stranger)
        r.publish()
        r.jwks.start()
        await wait_port(r.jwks_port, r.jwks)
        retried = await r.sender.deliver(unknown)
        assert retried.statuses[-1] == 200, describe([retried])

        jtis = [cached.jti, again.jti, unknown.jti]
        assert await settled(r.record, jtis) == dict.fromkeys(jtis, 1)


# -- 4. SIGTERM drain --------------------------------------------------------------------------


async def backend_control(r: Rig, hold: bool) -> None:
    url = f"http://127.0.0.1:{r.backend_port}/__control/hold"
    async with r.http.post(url, data=b"on" if hold else b"off") as resp:
        assert resp.status == 200


async def backend_held(r: Rig) -> int:
    return int((await get(r.http, f"http://127.0.0.1:{r.backend_port}/__control/held"))[1])


@pytest.mark.slow
async def test_sigterm_under_load_drains_without_half_sending(tmp_path: Path) -> None:
    async with rig(tmp_path, backend_delay=0.3, shutdown_grace_seconds=10) as r:
        pushes: list[Push] = []
        signalled = False
        load = asyncio.ensure_future(
            r.sender.steady(r.key, 10_000, 10, pushes, more=lambda: not signalled)
        )
        try:
            await until(lambda: delivered_count(pushes) >= 20, 30, "20 pushes delivered")
            # Every sender's current push held at the backend: 10 requests provably in flight
            # while the gateway drains, however the processes are scheduled.
            await backend_control(r, hold=True)

            async def all_held() -> bool:
                return await backend_held(r) == 10

            await poll(all_held, 10, "10 pushes held at the backend")
            t_term = time.monotonic()
            r.gateway.proc.signal(signal.SIGTERM)
            signalled = True
            r.sender.retrying = False  # from now on, the gateway is meant to go away

            readiness: list[int] = []
            for _ in range(2000):
                try:
                    readiness.append((await get(r.fresh, r.gateway.admin_url + "/readyz"))[0])
                except (aiohttp.ClientError, TimeoutError):
                    readiness.append(CONNECTION_ERROR)
                    break
                if readiness[-1] == 503:
                    break
            newcomer = await Sender(r.fresh, r.gateway.url).attempt(new_push(r.key))
            # The drain must wait for them: keep them a second longer (well inside the grace).
            await asyncio.sleep(1.0)
            still_running = r.gateway.proc.alive()
            await backend_control(r, hold=False)

            code = await r.gateway.proc.wait_exit(r.gateway.grace + 10)
            await finish(load, 30)
        finally:
            await finish(load, 0)

        assert readiness[-1] == 503, f"readiness did not turn 503 while draining: {readiness}"
        assert newcomer.status == CONNECTION_ERROR or (newcomer.status, newcomer.reason) == (
            503,
            "shutting_down",
        ), newcomer
        assert still_running, "the gateway did not wait for the requests in flight"
        assert code == 0, r.gateway.proc.tail()

        # The 10 requests in flight at SIGTERM all completed, with the backend's 200.
        in_flight = [a for p in pushes for a in p.attempts if a.started < t_term < a.ended]
        assert [a.status for a in in_flight] == [200] * 10, in_flight
        answers = {(a.status, a.reason) for p in pushes for a in p.attempts}
        assert answers <= {(200, ""), (503, "shutting_down")} | {
            (CONNECTION_ERROR, a.reason) for p in pushes for a in p.attempts
        }, answers
        # Nothing half-sent: the backend delivered exactly what the sender was told was delivered.
        ok = {p.jti for p in pushes if p.got_2xx}
        rec = await settled(r.record, ok)
        assert all(n == 1 for n in rec.values()), rec
        assert set(rec) == ok, (
            f"answered 200, not at the backend: {ok - set(rec)}; "
            f"at the backend, sender not told: {set(rec) - ok}"
        )


@pytest.mark.slow
async def test_sigterm_grace_running_out_frees_the_token_for_another_replica(
    tmp_path: Path,
) -> None:
    """A push still at the backend when the grace runs out is cut off without an answer. The
    sender retries it on another replica sharing the Redis store: it must be forwarded there, not
    refused as a replay (which the sender would take for "delivered")."""
    with redis_server() as redis:
        replay = {"store": "redis", "redis_url": redis.url}
        async with rig(tmp_path, shutdown_grace_seconds=0.5, replay=replay) as r:
            config = yaml.safe_load(r.gateway.config_file.read_text())
            port, admin = free_ports(2)
            config |= {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}"}
            (tmp_path / "replica").mkdir()
            other = gateway_proc(tmp_path / "replica", config)
            push = new_push(r.key)
            await backend_control(r, hold=True)  # the backend keeps it past the grace
            first = asyncio.ensure_future(r.sender.attempt(push))
            try:
                other.proc.start()
                await wait_ready(other, r.http)

                async def at_the_backend() -> bool:
                    return await backend_held(r) == 1

                await poll(at_the_backend, 10, "the push held at the backend")
                r.gateway.proc.signal(signal.SIGTERM)
                cut = await finish(first, 30)
                code = await r.gateway.proc.wait_exit(r.gateway.grace + 10)
                await backend_control(r, hold=False)
                await Sender(r.http, other.url).deliver(push)
            finally:
                await finish(first, 0)
                other.proc.stop()

            assert cut.status == CONNECTION_ERROR, cut
            assert code == 0, r.gateway.proc.tail()
            assert push.statuses[-1] == 200, describe([push])
            assert (await settled(r.record, [push.jti]))[push.jti] == 1


# -- 5. overload -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_overload_sheds_with_503_stays_observable_and_recovers(tmp_path: Path) -> None:
    async with rig(tmp_path, backend_delay=1.0, limits={"max_inflight": 8}) as r:
        # The backend holds what it gets until told: the 8 admitted stay in flight for as long
        # as the flood lasts, however the processes are scheduled.
        await backend_control(r, hold=True)
        flood = [new_push(r.key) for _ in range(100)]
        tasks = [asyncio.ensure_future(r.sender.attempt(p)) for p in flood]
        try:

            async def flood_answered() -> bool:
                return sum(t.done() for t in tasks) == 92 and await backend_held(r) == 8

            await poll(flood_answered, 30, "92 pushes answered, 8 held at the backend")
            # The webhook port is full; the admin port answers, and sees it full.
            live, _ = await get(r.http, r.gateway.admin_url + "/livez")
            inflight = await metric_samples(
                r.http, r.gateway.admin_url, "jwksgate_inflight_requests"
            )
            await backend_control(r, hold=False)
            await finish(asyncio.gather(*tasks), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        assert live == 200
        assert sum(v for _, v in inflight) == 8, inflight
        answers = [(p.attempts[0].status, p.attempts[0].reason) for p in flood]
        shed = [p for p in flood if p.attempts[0].status == 503]
        passed = [p for p in flood if p.attempts[0].status == 200]
        assert (len(shed), len(passed)) == (92, 8), answers
        assert {(p.attempts[0].status, p.attempts[0].reason) for p in shed} == {(503, "overloaded")}
        for p in shed:
            ra = p.attempts[0].retry_after
            assert ra is not None and ra.isdigit() and int(ra) >= 1, ra
        counted = await metric_samples(r.http, r.gateway.admin_url, "jwksgate_requests_total")
        assert sum(v for labels, v in counted if labels["reason"] == "overloaded") == 92

        # Recovered: a fresh push goes through, and shed tokens were not consumed (their retry is
        # forwarded).
        later = await finish(
            asyncio.gather(r.sender.deliver(new_push(r.key)), *map(r.sender.deliver, shed[:7])),
            60,
        )
        assert all(p.statuses[-1] == 200 for p in later), describe(later)
        forwarded = {p.jti for p in passed} | {p.jti for p in later}
        rec = await settled(r.record, forwarded)
        assert all(n == 1 for n in rec.values()), rec
        assert set(rec) == forwarded


# -- 6. workers --------------------------------------------------------------------------------


async def ready_worker_pids(http: aiohttp.ClientSession, admin_url: str) -> set[int]:
    samples = await metric_samples(http, admin_url, "jwksgate_ready")
    return {int(labels["pid"]) for labels, v in samples if v == 1}


async def requests_total(http: aiohttp.ClientSession, admin_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in await metric_samples(http, admin_url, "jwksgate_requests_total"):
        out[labels["reason"]] = out.get(labels["reason"], 0) + v
    return out


@pytest.mark.slow
async def test_two_workers_share_the_port_refuse_replays_and_are_supervised(
    tmp_path: Path,
) -> None:
    with redis_server() as redis:
        async with rig(
            tmp_path,
            workers=2,
            shutdown_grace_seconds=3,
            replay={"store": "redis", "redis_url": redis.url},
        ) as r:
            sup = r.gateway.proc.pid
            admin = r.gateway.admin_url
            workers = await ready_worker_pids(r.http, admin)
            assert len(workers) == 2 and workers <= child_pids(sup), (workers, child_pids(sup))
            # One port, two listening sockets (SO_REUSEPORT), one in each worker.
            owners = listening_socket_owners(r.listen_port)
            assert sorted(owners.values()) == sorted(workers), owners

            # The same token 20 times at once, each on a new connection: the kernel spreads the
            # connections over both workers, and exactly one is forwarded.
            push = new_push(r.key)
            each_new = Sender(r.fresh, r.gateway.url)
            await asyncio.gather(*(each_new.attempt(push) for _ in range(20)))
            # The others: "delivered" (409) after the first one's answer, "in flight" before.
            assert sorted(push.statuses)[0] == 200, describe([push])
            assert set(sorted(push.statuses)[1:]) <= {409, 503}, describe([push])
            sent = 20
            assert (await settled(r.record, [push.jti]))[push.jti] == 1
            totals = await requests_total(r.http, admin)
            refused = totals.get("replayed", 0) + totals.get("replay_in_flight", 0)
            assert sum(totals.values()) == sent and refused == 19, totals

            # A worker dies: the supervisor starts another, and readiness comes back.
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            saw_unready = False

            async def recovered() -> bool:
                nonlocal saw_unready
                status, _ = await get(r.http, admin + "/readyz")
                saw_unready = saw_unready or status == 503
                pids = await ready_worker_pids(r.http, admin)
                return status == 200 and len(pids) == 2 and victim not in pids

            await poll(recovered, 30, "a replacement worker, ready")
            assert saw_unready, "readiness stayed 200 with a worker dead"
            now = await ready_worker_pids(r.http, admin)
            assert now <= child_pids(sup) and len(now - workers) == 1, (workers, now)
            assert not pid_alive(victim)
            owners = listening_socket_owners(r.listen_port)
            assert sorted(owners.values()) == sorted(now), owners

            # Still one shared replay store: the old token is refused by either worker.
            replays = await asyncio.gather(*(each_new.attempt(push) for _ in range(6)))
            assert [a.status for a in replays] == [409] * 6
            fresh = await r.sender.deliver(new_push(r.key))
            assert fresh.statuses == [200]
            sent += 7
            totals = await requests_total(r.http, admin)
            assert sum(totals.values()) == sent, totals

            # SIGTERM to the supervisor: everything drains and it exits 0.
            r.gateway.proc.signal(signal.SIGTERM)
            code = await r.gateway.proc.wait_exit(r.gateway.grace + 15)
            assert code == 0, r.gateway.proc.tail()
            await until(lambda: not any(pid_alive(p) for p in now), 10, "workers gone")


def test_workers_with_the_memory_store_is_a_config_error(tmp_path: Path) -> None:
    port, admin = free_ports(2)
    config = gateway_config(
        port, admin, "http://127.0.0.1:1/.well-known/jwks.json", "http://127.0.0.1:2", workers=2
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    problems = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(problems) == 1, result.stderr
    assert "workers" in problems[0] and "replay.store: redis" in problems[0], problems
    config["workers"] = 1  # and nothing else is wrong with it
    path.write_text(yaml.safe_dump(config))
    ok = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
