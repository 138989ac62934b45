"""upstream_headers with its per-config plan decides exactly what the plain per-header rules did.

The plain rules (each inbound header name normalised and checked against every rule in turn,
each call) are written out here as the oracle; the gateway's upstream_headers, which works out
the names never copied once per (forward, issuer, gateway headers, strip), must give the same
headers in the same order and the same omitted count on every mix drawn.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import forward_headers as fh
from gateway.config import ForwardConfig, IssuerConfig, StaticTokenConfig, TokenFromConfig
from tests.support import fuzz

FUZZ = fuzz(400)


def oracle(
    incoming: CIMultiDictProxy[str],
    *,
    forward: ForwardConfig,
    gateway_headers: frozenset[str],
    issuer: IssuerConfig,
    claims: Mapping[str, Any],
    payload_segment: str,
    client: str,
    proto: str,
    host: str,
    request_id: str,
    strip: Iterable[str] = (),
    add: Iterable[tuple[str, str]] = (),
) -> tuple[CIMultiDict[str], int]:
    norm = fh._norm
    listed = fh._connection_tokens(incoming)
    stripped = frozenset(norm(h) for h in strip)
    prefix = norm(forward.header_prefix)
    secrets: frozenset[str] = frozenset()
    if issuer.static_token is not None and not forward.keep_token:
        secrets = frozenset(norm(h) for h in issuer.static_token.headers)
    location = issuer.token_from
    kept = forward.keep_token or (issuer.type == "jwt" and location.keep_token)
    if issuer.type == "jwt" and location.header is not None and not kept:
        secrets = secrets | {norm(location.header)}
    keep_authorization = forward.keep_token or (
        kept and (location.header or "").lower() == "authorization"
    )
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        n = norm(name)
        if (
            n in fh._HOP_BY_HOP
            or n in listed
            or n in fh._NOT_COPIED
            or n in gateway_headers
            or n.startswith(prefix)
            or (n == "authorization" and not keep_authorization)
            or n in secrets
            or n in stripped
        ):
            continue
        out.add(name, value)
    for name, value in fh.forwarding_headers(
        incoming, forward, client=client, proto=proto, host=host
    ):
        out[name] = value
    out[fh.REQUEST_ID_HEADER] = request_id
    out[fh.ISSUER_HEADER] = issuer.name
    out[forward.claims_header] = payload_segment
    omitted = 0
    for claim, header in issuer.forward_claims:
        if claim not in claims:
            continue
        value = fh.header_value(claims[claim])
        if len(value) > fh.MAX_CLAIM_HEADER_BYTES:
            omitted += 1
            continue
        out[header] = value
    for name, value in add:
        out[name] = value
    return out, omitted


NAMES = [
    "Authorization", "authorization", "X-Hook-Token", "x_hook_token", "Connection", "Keep-Alive",
    "TE", "Upgrade", "Host", "Content-Length", "Expect", "Content-Type", "X-Jwt-Sub", "x-jwt-x",
    "X_Jwt_Claims", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-IP", "Via",
    "X-Request-Id", "X-Jwt-Issuer", "Idempotency-Key", "X-Custom", "X_Custom", "Stripe-Signature",
    "X-GitHub-Delivery", "X-Other", "Proxy-Authorization", "Trailer", "X-Sub", "Webhook-Id",
]  # fmt: skip
VALUES = ["v", "Bearer a.b.c", "close, X-Custom", "keep-alive, x_other", "1.2.3.4", "https", ""]
CLAIMS = {"sub": "sender", "tenant": "é", "big": "x" * 5000, "n": 7}

forwards = st.builds(
    ForwardConfig,
    header_prefix=st.sampled_from(["X-Jwt-", "X_Jwt_", "X-Gw-"]),
    keep_token=st.booleans(),
    trusted_hops=st.integers(0, 2),
    preserve_headers=st.sampled_from([(), ("Via",), ("X-Real-IP", "Forwarded")]),
    idempotency_header=st.sampled_from(["Idempotency-Key", ""]),
)
locations = st.sampled_from(
    [
        TokenFromConfig(),
        TokenFromConfig(keep_token=True),
        TokenFromConfig(header="X-Hook-Token", scheme=None),
        TokenFromConfig(header="X-Hook-Token", scheme=None, keep_token=True),
        TokenFromConfig(header=None, scheme=None, query="token"),
    ]
)
issuers = st.builds(
    IssuerConfig,
    name=st.just("sender"),
    jwks_url=st.just("https://sender.test/jwks.json"),
    type=st.sampled_from(["jwt", "static_token", "github"]),
    static_token=st.sampled_from(
        [None, StaticTokenConfig(headers=("Authorization",)), StaticTokenConfig(("X-Custom",))]
    ),
    token_from=locations,
    forward_claims=st.sampled_from(
        [(), (("sub", "X-Sub"),), (("sub", "X-Jwt-Sub"), ("big", "X-Big"), ("n", "X-N"))]
    ),
)


@FUZZ
@given(
    headers=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=12),
    forward=forwards,
    issuer=issuers,
    strip=st.sampled_from([(), ("Stripe-Signature",), ("x_hook_token", "X-GitHub-Delivery")]),
    add=st.sampled_from([(), (("X-GitHub-Delivery", "d1"),), (("Webhook-Id", "w"),)]),
)
def test_the_plan_copies_exactly_what_the_plain_rules_copy(
    headers: list[tuple[str, str]],
    forward: ForwardConfig,
    issuer: IssuerConfig,
    strip: tuple[str, ...],
    add: tuple[tuple[str, str], ...],
) -> None:
    incoming = CIMultiDictProxy(CIMultiDict(headers))
    gateway_headers = fh.gateway_header_names(forward, [issuer])
    args: dict[str, Any] = {
        "forward": forward,
        "gateway_headers": gateway_headers,
        "issuer": issuer,
        "claims": CLAIMS,
        "payload_segment": "eyJzdWIiOiJzIn0",
        "client": "10.0.0.1",
        "proto": "https",
        "host": "gw.example",
        "request_id": "r1",
        "strip": strip,
        "add": add,
    }
    got, omitted = fh.upstream_headers(incoming, **args)
    want, want_omitted = oracle(incoming, **args)
    assert list(got.items()) == list(want.items())
    assert omitted == want_omitted
    # Asked again (the plan now cached): the same.
    again, _ = fh.upstream_headers(incoming, **args)
    assert list(again.items()) == list(want.items())


def bare_call(
    incoming: CIMultiDictProxy[str],
    forward: ForwardConfig,
    issuer: IssuerConfig,
    gateway_headers: frozenset[str],
) -> CIMultiDict[str]:
    """upstream_headers for a push with no claims, from a fixed client."""
    headers, _ = fh.upstream_headers(
        incoming,
        forward=forward,
        gateway_headers=gateway_headers,
        issuer=issuer,
        claims={},
        payload_segment="e30",
        client="c",
        proto="http",
        host="h",
        request_id="r",
    )
    return headers


def test_a_new_config_in_the_place_of_an_old_one_gets_its_own_plan() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("Authorization", "Bearer t"), ("X-Custom", "c")]))
    base = IssuerConfig(name="s", jwks_url="https://s.test/jwks.json")
    seen = []
    for keep in [False, True] * 20:
        # Fresh objects each time, the old ones freed: an id may be reused by the next one.
        forward = ForwardConfig(keep_token=keep)
        issuer = replace(base)
        headers = bare_call(incoming, forward, issuer, fh.gateway_header_names(forward, [issuer]))
        seen.append(("Authorization" in headers) == keep)
        del forward, issuer, headers
        gc.collect()
    assert all(seen)


def test_the_plans_kept_are_bounded() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("X-Custom", "c")]))
    issuer = IssuerConfig(name="s", jwks_url="https://s.test/jwks.json")
    for i in range(3 * fh.MAX_PLANS):
        forward = ForwardConfig(header_prefix=f"X-P{i}-")
        bare_call(incoming, forward, issuer, frozenset())
        assert len(fh._PLANS) <= fh.MAX_PLANS
