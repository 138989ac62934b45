"""A real Prometheus scrapes the admin port and sees what the gateway did (issue 6, item 2).

Parsing our own exposition with prometheus-client's parser would agree with prometheus-client's
writer by construction; only the server operators run can say that the content type, the TYPE
lines, the histogram's ``le`` buckets and the label sets are ingested and queried as the dashboard
and the alerts expect. So the test starts Prometheus (Debian package ``prometheus``, installed by
``scripts/install-system-deps``) on a free loopback port with its own config and storage, lets it
scrape an in-process gateway every second, sends a known mix of pushes and asks the HTTP API.

Without the binary the test fails: a skipped scrape test looks like a passing one. It never uses
8080 or 9090, where a developer's or Debian's own Prometheus service may be listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.support import World, free_port, world

JOB = "jwksgate"
VALID, REPLAYED, MISSING = 6, 3, 4  # N forwarded, M replays of forwarded tokens, K without a token
RESERVED_PORTS = frozenset({8080, 9090})
WAIT_SECONDS = 60.0
START_ATTEMPTS = 3
# Prometheus' own counters of samples it dropped while ingesting a scrape: all must stay at zero.
INGESTION_ERRORS = (
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
    "prometheus_target_scrapes_exceeded_sample_limit_total",
    "prometheus_target_scrapes_exemplar_out_of_order_total",
    "prometheus_target_scrape_pool_exceeded_label_limits_total",
)


def listen_port() -> int:
    """A free loopback port that is neither 8080 nor 9090."""
    for _ in range(20):
        port = free_port()
        if port not in RESERVED_PORTS:
            return port
    raise AssertionError("no free loopback port outside 8080/9090")


def prometheus_argv(binary: str, workdir: Path, target: str, port: int) -> list[str]:
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Prometheus:
    url: str
    http: aiohttp.ClientSession
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            payload = await resp.json()
        assert resp.status == 200, (path, params, payload)
        assert payload["status"] == "success", (path, params, payload)
        return payload["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=promql)
        assert data["resultType"] == "vector", (promql, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, promql: str) -> float:
        """The value of a query that must give exactly one sample."""
        result = await self.query(promql)
        assert len(result) == 1, f"{promql}: {result}"
        return float(result[0]["value"][1])

    async def own_metrics(self) -> dict[str, float]:
        """Prometheus' own /metrics, each sample name summed over its label sets."""
        async with self.http.get(f"{self.url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals


async def eventually(check: Callable[[], Awaitable[None]], what: str) -> None:
    """Retry ``check`` until it stops failing; after WAIT_SECONDS, fail with its last complaint."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            await check()
            return
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {WAIT_SECONDS:.0f}s: {e}") from e
        await asyncio.sleep(0.2)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the PID we started, SIGKILL if it has not exited within 20 s."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def ready(prom: Prometheus, proc: asyncio.subprocess.Process) -> bool:
    """Wait for /-/ready; False if Prometheus exited because its port was taken meanwhile."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            if "address already in use" in prom.log.read_text(errors="replace"):
                return False
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log_tail(prom.log)}")
        with contextlib.suppress(aiohttp.ClientConnectionError):
            async with prom.http.get(f"{prom.url}/-/ready") as resp:
                if resp.status == 200:
                    return True
        await asyncio.sleep(0.1)
    raise AssertionError(f"prometheus not ready after {WAIT_SECONDS:.0f}s:\n{log_tail(prom.log)}")


@contextlib.asynccontextmanager
async def prometheus(
    workdir: Path, target: str, http: aiohttp.ClientSession
) -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is missing: run scripts/install-system-deps "
            "(Debian package 'prometheus')"
        )
    for attempt in range(START_ATTEMPTS):
        port = listen_port()
        run = workdir / f"prometheus-{attempt}"
        run.mkdir()
        prom = Prometheus(f"http://127.0.0.1:{port}", http, run / "prometheus.log")
        with prom.log.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *prometheus_argv(binary, run, target, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            if await ready(prom, proc):
                yield prom
                return
        finally:
            await stop(proc)
    raise AssertionError(f"prometheus found its port taken {START_ATTEMPTS} times")


async def push(http: aiohttp.ClientSession, w: World, body: bytes, token: str | None) -> str:
    """POST a push; the gateway's answer as ``"<status> <error code>"`` (``"200 -"`` if none)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(w.url + "/hook", data=body, headers=headers) as resp:
        error = "-" if resp.status == 200 else (await resp.json())["error"]
        return f"{resp.status} {error}"


async def test_prometheus_scrapes_the_admin_port(tmp_path: Path) -> None:
    assert REPLAYED <= VALID
    async with world() as w, aiohttp.ClientSession() as http:
        target = w.admin_url.removeprefix("http://")
        async with prometheus(tmp_path, target, http) as prom:
            up = f'up{{job="{JOB}"}}'

            async def target_up() -> None:
                assert await prom.value(up) == 1

            await eventually(target_up, "the gateway's admin port is scraped")

            bodies = [f'{{"task":"t{i}","state":"completed"}}'.encode() for i in range(VALID)]
            tokens = [w.token(body) for body in bodies]
            missing = b'{"task":"anonymous"}'

            # One of each first, then the rest once Prometheus has seen the first ones: the
            # counters then grow between scrapes, so rate() and histogram_quantile() have data.
            async def send(valid: range, replayed: range, without_token: int) -> None:
                answers = [await push(http, w, bodies[i], tokens[i]) for i in valid]
                answers += [await push(http, w, bodies[i], tokens[i]) for i in replayed]
                answers += [await push(http, w, missing, None) for _ in range(without_token)]
                expected = ["200 -"] * len(valid) + ["409 replayed"] * len(replayed)
                assert answers == expected + ["401 missing_token"] * without_token

            await send(range(1), range(1), 1)

            async def first_scraped() -> None:
                assert await prom.value("sum(jwksgate_requests_total)") == 3

            await eventually(first_scraped, "the first three pushes are scraped")
            await send(range(1, VALID), range(1, REPLAYED), MISSING - 1)

            async def counted() -> None:
                forwarded = 'sum(jwksgate_requests_total{outcome="forwarded"})'
                assert await prom.value(forwarded) == VALID
                replays = 'sum(jwksgate_requests_total{reason="replayed"})'
                assert await prom.value(replays) == REPLAYED
                anonymous = 'sum(jwksgate_requests_total{reason="missing_token"})'
                assert await prom.value(anonymous) == MISSING

            await eventually(counted, "Prometheus counts the pushes")

            # Exactly these series, with the labels docs/reference.md gives them.
            series = {
                (s["metric"]["issuer"], s["metric"]["outcome"], s["metric"]["reason"]): float(
                    s["value"][1]
                )
                for s in await prom.query("jwksgate_requests_total")
            }
            assert series == {
                ("sender", "forwarded", "none"): VALID,
                ("sender", "rejected", "replayed"): REPLAYED,
                ("unknown", "rejected", "missing_token"): MISSING,
            }
            total = VALID + REPLAYED + MISSING
            assert await prom.value("sum(jwksgate_request_duration_seconds_count)") == total
            p99 = await prom.value(
                "histogram_quantile(0.99, sum by (le) "
                "(rate(jwksgate_request_duration_seconds_bucket[1m])))"
            )
            assert math.isfinite(p99), p99
            assert 0 <= p99 <= 30, p99  # within the buckets; 30 s is the largest finite one

            build = await prom.query("jwksgate_build_info")
            assert [(b["metric"]["version"], b["value"][1]) for b in build] == [(__version__, "1")]
            assert await prom.value('jwksgate_jwks_keys{issuer="sender"}') >= 1
            assert await prom.value(up) == 1

            metadata = await prom.api("metadata")
            assert metadata["jwksgate_requests_total"][0]["type"] == "counter"
            assert metadata["jwksgate_request_duration_seconds"][0]["type"] == "histogram"
            assert metadata["jwksgate_jwks_keys"][0]["type"] == "gauge"

            # Ingested without complaint: no scrape error, no dropped sample.
            targets = await prom.api("targets", state="active")
            ours = [t for t in targets["activeTargets"] if t["labels"]["job"] == JOB]
            assert len(ours) == 1, targets
            assert ours[0]["health"] == "up", ours[0]
            assert ours[0]["lastError"] == "", ours[0]
            own = await prom.own_metrics()
            assert {name: own.get(name) for name in INGESTION_ERRORS} == dict.fromkeys(
                INGESTION_ERRORS, 0.0
            )
