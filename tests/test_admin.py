"""The admin port and what operators read (docs/operating.md): liveness, readiness per issuer, the
Prometheus exposition with bounded labels, and one JSON access line per outcome.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway import __version__
from tests.httpkit import (
    config_with,
    forge,
    get,
    push,
    raw_exchange,
    raw_status,
    scrape,
    send,
)
from tests.support import (
    World,
    claims_for,
    gateway_config,
    process_logging,
    refused_port,
    wait_until,
    world,
)

BODY = b'{"event":"ping"}'


def two_issuers(broken_second: bool = False) -> Callable[[World], Any]:
    def configure(w: World) -> Any:
        other_url = f"http://127.0.0.1:{refused_port()}/jwks" if broken_second else w.jwks_url
        issuers = [
            {
                "name": "sender",
                "issuer": "https://sender.test",
                "jwks_url": w.jwks_url,
                "body_hash": {"claim": "request_body_sha256"},
                "path_prefix": "/hooks",
            },
            {
                "name": "other",
                "issuer": "https://other.test",
                "jwks_url": other_url,
                "path_prefix": "/other",
            },
        ]
        return gateway_config(w.jwks_url, w.backend_url, issuers=issuers)

    return configure


def forged(w: World, header: dict[str, Any], **claims: Any) -> str:
    """A token with any header and claims and a signature that verifies nothing (cheap)."""
    return forge({"alg": "RS256", "typ": "JWT", **header}, claims_for(BODY, w.clock(), **claims))


# -- liveness and readiness ----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/livez", "/healthz"])
async def test_liveness(path: str, w: World, http: aiohttp.ClientSession) -> None:
    reply = await get(http, w.admin_url + path)
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


async def test_readiness_reports_each_issuer() -> None:
    async with world(two_issuers()) as w, aiohttp.ClientSession() as http:
        reply = await get(http, w.admin_url + "/readyz")
        assert reply.status == 200
        assert reply.json() == {
            "status": "ready",
            "draining": False,
            "issuers": {"sender": "ok", "other": "ok"},
            "issuers_ready": {"sender": True, "other": True},
            "first_fetches_tried": True,
            "readiness": "per_issuer",
            "replay_store": "ok",
        }
        m = await scrape(http, w.admin_url)
        assert m.value("jwksgate_ready") == 1


async def test_readiness_names_the_issuer_without_keys() -> None:
    async with world(two_issuers(broken_second=True), wait_ready=False) as w:
        assert w.running is not None
        gw = w.running.gateway
        other, sender = gw.caches["other"], gw.caches["sender"]
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: other.failures >= 1 and sender.ready())
            reply = await get(http, w.admin_url + "/readyz")
            # One issuer's keys do not take the pod out (readiness: per_issuer, the default).
            assert reply.status == 200
            body = reply.json()
            assert body["issuers_ready"] == {"sender": True, "other": False}
            assert body["issuers"]["sender"] == "ok"
            assert body["issuers"]["other"] != "ok"
            assert "no key set" in body["issuers"]["other"]
            # The healthy issuer keeps working; liveness does not depend on readiness.
            assert (await push(http, w, BODY, path="/hooks/x")).status == 200
            assert (await get(http, w.admin_url + "/livez")).status == 200
            m = await scrape(http, w.admin_url)
            assert m.value("jwksgate_ready") == 1
            assert m.value("jwksgate_issuer_ready", issuer="other") == 0


# -- the exposition ------------------------------------------------------------------------------
DOCUMENTED_METRICS = {
    # family name as parsed (counters lose "_total"), type, label names of its samples
    "jwksgate_requests": ("counter", {"issuer", "outcome", "reason"}),
    "jwksgate_request_duration_seconds": ("histogram", {"issuer", "outcome"}),
    "jwksgate_upstream_duration_seconds": ("histogram", {"status_class"}),
    "jwksgate_jwks_fetches": ("counter", {"issuer", "result"}),
    "jwksgate_jwks_keys": ("gauge", {"issuer"}),
    "jwksgate_jwks_age_seconds": ("gauge", {"issuer"}),
    "jwksgate_replay_entries": ("gauge", {"store"}),
    "jwksgate_build_info": ("gauge", {"version"}),
}


async def test_metrics_exposition_has_every_documented_metric_with_its_labels(
    w: World, http: aiohttp.ClientSession
) -> None:
    assert (await push(http, w, BODY)).status == 200
    assert (await send(http, w.url + "/hook", body=BODY)).status == 401
    m = await scrape(http, w.admin_url)
    for family, (kind, labels) in DOCUMENTED_METRICS.items():
        assert m.types.get(family) == kind, family
        samples = [name for name in m.samples if name.startswith(family)]
        assert samples, family
        for name in samples:
            expected = labels | {"le"} if name.endswith("_bucket") else labels
            assert m.label_names(name) == {frozenset(expected)}, name
    assert "jwksgate_requests_total" in m.samples
    assert "jwksgate_jwks_fetches_total" in m.samples

    forwarded = {"issuer": "sender", "outcome": "forwarded", "reason": "none"}
    assert m.value("jwksgate_requests_total", **forwarded) == 1
    missing = {"issuer": "unknown", "outcome": "rejected", "reason": "missing_token"}
    assert m.value("jwksgate_requests_total", **missing) == 1
    assert (
        m.value("jwksgate_request_duration_seconds_count", issuer="sender", outcome="forwarded")
        == 1
    )
    assert m.value("jwksgate_upstream_duration_seconds_count", status_class="2xx") == 1
    assert m.value("jwksgate_jwks_fetches_total", issuer="sender", result="success") == 1
    assert m.value("jwksgate_jwks_keys", issuer="sender") == 1
    assert m.value("jwksgate_jwks_age_seconds", issuer="sender") == 0
    assert m.value("jwksgate_replay_entries", store="memory") == 1
    assert m.value("jwksgate_build_info", version=__version__) == 1


async def test_per_issuer_series_exist_before_any_traffic() -> None:
    async with world(two_issuers()) as w, aiohttp.ClientSession() as http:
        m = await scrape(http, w.admin_url)
        for issuer in ("sender", "other"):
            for result in ("success", "failure", "not_modified"):
                m.value("jwksgate_jwks_fetches_total", issuer=issuer, result=result)
            m.value("jwksgate_jwks_keys", issuer=issuer)
            m.value("jwksgate_jwks_age_seconds", issuer=issuer)


async def test_label_cardinality_stays_bounded_under_hostile_input() -> None:
    seen: list[str] = []

    def rand() -> str:
        value = "zz" + uuid.uuid4().hex[:12]
        seen.append(value)
        return value

    async def hostile_round(http: aiohttp.ClientSession, w: World, n: int) -> None:
        for i in range(n):
            kind = i % 5
            headers = {"X-Request-Id": rand()}
            if kind == 0:  # random kid
                token = forged(w, {"kid": rand()})
                path = "/hooks/x"
            elif kind == 1:  # random iss
                token = forged(w, {"kid": w.key.kid}, iss="https://" + rand())
                path = "/hooks/x"
            elif kind == 2:  # random path outside every issuer
                token = w.token(BODY)
                path = "/" + rand()
            elif kind == 3:  # random path under the issuer: forwarded
                token = w.token(BODY)
                path = "/hooks/" + rand() + "?q=" + rand()
            else:  # random alg and typ
                token = forged(w, {"kid": w.key.kid, "alg": rand(), "typ": rand()})
                path = "/hooks/" + rand()
            await push(http, w, BODY, path=path, token=token, headers=headers)

    async with world(two_issuers()) as w, aiohttp.ClientSession() as http:
        await hostile_round(http, w, 50)
        first = await scrape(http, w.admin_url)
        await hostile_round(http, w, 250)
        second = await scrape(http, w.admin_url)
        total = sum(second.samples["jwksgate_requests_total"].values())
        assert total == 300
        for name in (
            "jwksgate_requests_total",
            "jwksgate_request_duration_seconds_count",
            "jwksgate_upstream_duration_seconds_count",
        ):
            assert second.label_sets(name) == first.label_sets(name), name
        assert len(second.label_sets("jwksgate_requests_total")) <= 8
        for value in seen:
            assert value not in second.text
        assert len(w.backend.received) == 60


# -- access log ----------------------------------------------------------------------------------
def _access_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in records if r.name == "jwksgate.access"]


async def test_one_json_line_per_outcome_with_its_fields_and_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="jwksgate.access")
    async with world() as w, aiohttp.ClientSession() as http:
        good = w.token(BODY, sub="agent-7")
        unknown = forged(w, {"kid": "no-such-kid"})
        sent = [
            ("req-forwarded", good, 200, "none", "sender"),
            ("req-replayed", good, 409, "replayed", "sender"),
            ("req-unknown-kid", unknown, 401, "unknown_kid", "sender"),
            ("req-bad-sig", good[:-4] + "AAAA", 401, "bad_signature", "sender"),
            ("req-no-token", None, 401, "missing_token", "unknown"),
        ]
        for request_id, token, status, _, _ in sent:
            headers = {"X-Request-Id": request_id}
            if token is None:
                reply = await send(http, w.url + "/hook", body=BODY, headers=headers)
            else:
                reply = await push(http, w, BODY, token=token, headers=headers)
            assert reply.status == status
        lines = _access_lines(caplog.records)
        assert len(lines) == len(sent)
        by_id = {line["http.request.id"]: line for line in lines}
        for request_id, _, status, reason, issuer in sent:
            line = by_id[request_id]
            got = (line["http.response.status_code"], line["jwksgate.reason"])
            assert (*got, line["jwksgate.issuer"]) == (status, reason, issuer)
            assert isinstance(line["event.duration"], int)
            assert line["jwksgate.outcome"] == ("forwarded" if status == 200 else "rejected")
        assert "jwksgate.replay_key_sha256" in by_id["req-forwarded"]
        assert by_id["req-forwarded"]["jwksgate.upstream.status_code"] == 200
        text = "\n".join(r.getMessage() for r in caplog.records)
        for token in (good, unknown):
            for part in token.split("."):
                assert part not in text


async def test_access_lines_go_to_stdout_and_the_header_timeout_has_one_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with process_logging():
        configure = config_with(limits={"header_timeout_seconds": 0.3})
        async with world(configure) as w, aiohttp.ClientSession() as http:
            token = w.token(BODY)
            assert (await push(http, w, BODY, token=token)).status == 200
            assert raw_status(await raw_exchange(w.url)) == 408  # sends nothing at all
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    access = [line for line in lines if line["log.logger"] == "jwksgate.access"]
    assert [line["http.response.status_code"] for line in access] == [200, 408]
    for line in access:
        for field in ("jwksgate.issuer", "jwksgate.reason", "http.request.id", "event.duration"):
            assert field in line, (field, line)
    assert token not in out
    assert token not in err
    assert "jwksgate.access" not in err  # one stream: stdout
