"""Over-the-wire fuzz of a running gateway: mutated valid pushes through raw sockets.

Three JWT issuers with nested prefixes (``/``, ``/hooks``, ``/hooks/payments``) sign their own
pushes; each case is one fresh valid push (its own jti) with one mutation: token bytes, body bytes,
framing (chunked, truncated, duplicated or conflicting headers), the request line, the method or
the path. Through it all:

- no 5xx but the documented retryable ones, and every answer the gateway makes itself is its
  JSON error with a known reason and that reason's status;
- the backend never receives a push that is not exactly one that was signed: the body it gets is
  the signed body, the claims header is the signed payload of an issuer that owns the path, and
  each jti arrives at most once. A mutation that changes nothing the gateway authenticates (header
  name case, the scheme's case, chunked framing of the same bytes) is a "no-op" by construction:
  those pushes must be forwarded;
- the gateway stays up and forwards a valid push afterwards.

The cases come from one seeded generator, so a failure names a case that reproduces.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from gateway.config import Config, parse_config
from gateway.errors import REASONS
from tests.httpkit import host_port, parse_metrics
from tests.support import World, b64url, claims_for, gateway_config_data, sign, world

CASES = 300
SEED = 0x13F022
RETRYABLE = {
    "jwks_unavailable",
    "replay_store_unavailable",
    "replay_store_full",
    "overloaded",
    "shutting_down",
    "upstream_unavailable",
    "upstream_timeout",
}
ISSUERS = {
    # name: (iss, path_prefix, paths a valid push of that issuer is sent to)
    "sender": ("https://sender.test", "/", ["/hook", "/a/b", "/hooksx"]),
    "hooks": ("https://hooks.test", "/hooks", ["/hooks", "/hooks/x", "/hooks/x/y?q=1"]),
    "payments": (
        "https://payments.test",
        "/hooks/payments",
        ["/hooks/payments", "/hooks/payments/1"],
    ),
}
URLSAFE = string.ascii_letters + string.digits + "-_"


def configure(w: World) -> Config:
    data = gateway_config_data(w.jwks_url, w.backend_url)
    template = data["issuers"][0]
    data["issuers"] = [
        {**template, "name": name, "issuer": iss, "path_prefix": prefix, "algorithms": ["RS256"]}
        for name, (iss, prefix, _paths) in ISSUERS.items()
    ]
    return parse_config(data)


def backend_view(raw_path: str) -> str:
    """The path as the most liberal backend resolves it: ``;params`` stripped from each segment
    (servlet containers), percent-escapes decoded, dot segments resolved."""
    path = raw_path.split("?", 1)[0]
    out: list[str] = []
    for seg in path.split("/")[1:]:
        seg = unquote(seg.split(";", 1)[0])
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    return "/" + "/".join(out)


def owner(raw_path: str) -> str:
    """The issuer whose prefix is the longest that covers the path the backend serves."""
    path = backend_view(raw_path)
    best, best_len = "sender", 0
    for name, (_iss, prefix, _paths) in ISSUERS.items():
        covers = prefix != "/" and (path == prefix or path.startswith(prefix + "/"))
        if covers and len(prefix) > best_len:
            best, best_len = name, len(prefix)
    return best


@dataclass
class Push:
    issuer: str
    jti: str
    token: str
    body: bytes


@dataclass
class Case:
    number: int
    kind: str
    data: bytes
    push: Push
    # True: the gateway must refuse it; False with noop: it must be forwarded; else either.
    mutated: bool
    noop: bool = False
    half_close: bool = False
    notes: list[str] = field(default_factory=list)


def http(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, i = b"", 0
    while i < len(body):
        n = rng.randint(1, 8)
        out += b"%x\r\n" % len(body[i : i + n]) + body[i : i + n] + b"\r\n"
        i += n
    return out + b"0\r\n\r\n"


def _mutate_text(rng: random.Random, text: str, alphabet: str) -> str:
    """A string that differs from ``text``: a flip, a deletion, an insertion or a truncation."""
    while True:
        i = rng.randrange(len(text))
        kind = rng.randrange(4)
        if kind == 0:
            out = text[:i] + rng.choice(alphabet) + text[i + 1 :]
        elif kind == 1:
            out = text[:i] + text[i + rng.randint(1, 20) :]
        elif kind == 2:
            out = (
                text[:i]
                + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                + text[i:]
            )
        else:
            out = text[:i]
        if out != text:
            return out


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    while True:
        i = rng.randrange(len(data))
        kind = rng.randrange(3)
        if kind == 0:
            out = data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
        elif kind == 1:
            out = data[:i] + data[i + rng.randint(1, 8) :]
        else:
            out = data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))) + data[i:]
        if out != data:
            return out


def make_case(n: int, rng: random.Random, mint: Callable[[str, bytes], Push]) -> Case:
    issuer = rng.choice(list(ISSUERS))
    _iss, _prefix, paths = ISSUERS[issuer]
    path = rng.choice(paths)
    body = json.dumps({"event": "fuzz", "n": n, "pad": "x" * rng.randint(0, 40)}).encode()
    push = mint(issuer, body)
    auth = f"Bearer {push.token}"
    base = [("Content-Type", "application/json"), ("Authorization", auth)]

    def sized(headers: list[tuple[str, str]], b: bytes) -> list[tuple[str, str]]:
        return [*headers, ("Content-Length", str(len(b)))]

    kind = rng.choice(
        [
            "token",
            "token",
            "body",
            "body",
            "body_cl",
            "truncated",
            "chunked",
            "chunked_bad",
            "chunked_cut",
            "dup_auth",
            "dup_cl",
            "cl_te",
            "cross_issuer",
            "path",
            "method",
            "request_line",
            "garbage",
            "header_case",
            "scheme",
            "spoofed_claims",
            "raw_flip",
            "ctl_header",
        ]
    )
    mutated, noop, half = True, False, False
    if kind == "token":
        token = _mutate_text(rng, push.token, URLSAFE + ".=+/ \t%")
        data = http(
            "POST", path, sized([base[0], ("Authorization", f"Bearer {token}")], body), body
        )
    elif kind == "body":
        # Same length, other bytes (the body hash is over the raw bytes).
        changed = bytearray(body)
        i = rng.randrange(len(changed))
        changed[i] = (changed[i] + rng.randint(1, 255)) % 256
        data = http("POST", path, sized(base, body), bytes(changed))
    elif kind == "body_cl":
        changed_body = _mutate_bytes(rng, body)
        data = http("POST", path, sized(base, changed_body), changed_body)
    elif kind == "truncated":
        # The declared length is not sent; the client then closes its side.
        data = http("POST", path, sized(base, body), body[: rng.randrange(len(body))])
        half = True
    elif kind == "chunked":
        # The same bytes in another transfer coding: nothing authenticated changed.
        data = http("POST", path, [*base, ("Transfer-Encoding", "chunked")], chunked(body, rng))
        mutated, noop = False, True
    elif kind == "chunked_bad":
        framed = chunked(body, rng)
        bad = rng.choice([b"zz\r\n", b"-1\r\n", b"1\n", b"ffffffffffffffffff\r\n", b"3;\x01\r\n"])
        cut = framed.index(b"\r\n") + 2
        data = http("POST", path, [*base, ("Transfer-Encoding", "chunked")], bad + framed[cut:])
    elif kind == "chunked_cut":
        framed = chunked(body, rng)
        data = http(
            "POST",
            path,
            [*base, ("Transfer-Encoding", "chunked")],
            framed[: rng.randrange(len(framed) - 5)],
        )
        half = True
    elif kind == "dup_auth":
        other = rng.choice([auth, f"Bearer {mint(issuer, body).token}", "Basic dXNlcjpwdw=="])
        data = http("POST", path, sized([*base, ("Authorization", other)], body), body)
    elif kind == "dup_cl":
        data = http(
            "POST", path, [*sized(base, body), ("Content-Length", str(len(body) - 1))], body
        )
    elif kind == "cl_te":
        data = http(
            "POST",
            path,
            [*sized(base, body), ("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked"]))],
            chunked(body, rng),
        )
    elif kind == "cross_issuer":
        others = [p for name, (_i, _x, ps) in ISSUERS.items() if name != issuer for p in ps]
        path = rng.choice(others)
        assert owner(path) != issuer
        data = http("POST", path, sized(base, body), body)
    elif kind == "path":
        extra = rng.choice(
            [
                "/x",
                "/payments",
                "/payments/1",
                "/.",
                "/..",
                "/../hook",
                "/%2e%2e/x",
                "/%2E",
                "/%2fpayments",
                "/%5c..",
                "/\\..",
                "//",
                "/x%00",
                "/%70ayments/1",
                "/é",
                "?a=/../payments",
                "#frag",
            ]
        )
        base_path = path.split("?", 1)[0]
        path = base_path + extra
        # Under its own issuer (as the backend resolves it): not a change of what is delivered.
        mutated = owner(path) != issuer
        data = http("POST", path, sized(base, body), body)
    elif kind == "method":
        method = rng.choice(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO", "post", "M-X"])
        # The method is not signed: delivering it is the backend's decision, not a mutation.
        mutated = False
        data = http(method, path, sized(base, body), body)
    elif kind == "request_line":
        line = rng.choice(
            [
                f"POST {path} HTTP/1.1 x",
                f"POST {path}",
                f"POST  {path} HTTP/1.1",
                f"POST {path} HTTP/2.0",
                f"POST {path} HTTP/1.1\x00",
                f"POST\t{path} HTTP/1.1",
                f"PO\x01ST {path} HTTP/1.1",
                f"POST {path}\x7f HTTP/1.1",
            ]
        )
        rest = http("POST", path, sized(base, body), body).split(b"\r\n", 1)[1]
        data = line.encode("latin-1") + b"\r\n" + rest
        # Framing, not content: aiohttp's parser takes a missing or "2.0" version and a double
        # space as the same request, which is then the signed push, unchanged.
        mutated = False
    elif kind == "garbage":
        half = True  # then the gateway does not wait for a request that never comes
        data = rng.choice(
            [
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
                + bytes(rng.randrange(256) for _ in range(40)),
                b"\r\n\r\n",
                b"GET\r\n\r\n",
                bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))),
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ]
        )
    elif kind == "header_case":
        # Header names are case-insensitive (RFC 9110 5.1): the same push.
        names = [(rng.choice([k.lower(), k.upper(), k.swapcase()]), v) for k, v in base]
        data = http("POST", path, sized(names, body), body)
        mutated, noop = False, True
    elif kind == "scheme":
        scheme = rng.choice(["bearer", "BEARER", "bEaReR", "Bearer  "])
        data = http(
            "POST", path, sized([base[0], ("Authorization", f"{scheme} {push.token}")], body), body
        )
        mutated, noop = False, True
    elif kind == "spoofed_claims":
        # Client copies of the gateway's own headers are dropped: the push itself is unchanged.
        fake = b64url(json.dumps({"iss": "https://payments.test", "sub": "admin"}).encode())
        spoof = [("X-Jwt-Claims", fake), ("X-Jwt-Issuer", "payments"), ("X_Jwt_Sub", "admin")]
        data = http("POST", path, sized([*base, *spoof], body), body)
        mutated, noop = False, True
    elif kind == "raw_flip":
        # One byte of the request line, the token or the body replaced (never a framing byte).
        clean = http("POST", path, sized(base, body), body)
        regions = [(0, clean.index(b" HTTP/1.1"))]
        t = clean.index(push.token.encode())
        regions.append((t, t + len(push.token)))
        regions.append((len(clean) - len(body), len(clean)))
        start, end = rng.choice(regions)
        i = rng.randrange(start, end)
        data = clean[:i] + bytes([(clean[i] + rng.randint(1, 255)) % 256]) + clean[i + 1 :]
    else:  # ctl_header: a control byte in the Authorization value
        bad_auth = auth[:10] + rng.choice("\x00\x01\x08\x0b\x1f\x7f") + auth[10:]
        data = http("POST", path, sized([base[0], ("Authorization", bad_auth)], body), body)
    return Case(n, kind, data, push, mutated, noop, half)


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes


async def exchange(url: str, data: bytes, half_close: bool) -> list[Answer]:
    """Send ``data`` on one connection and read its answer, if the gateway gives one before it
    closes (1xx interim answers are skipped)."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    answers: list[Answer] = []
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        while True:
            try:
                async with asyncio.timeout(10.0):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                break
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if 100 <= status < 200:
                continue
            length = int(headers.get("content-length", "0"))
            answers.append(Answer(status, headers, await reader.readexactly(length)))
            # One request per connection: the answer to it is all there is to read.
            break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answers


def check_answer(case: Case, a: Answer, forwarded: bool) -> str:
    """The class of one answer; fails the test on one the gateway must never give."""
    where = f"case {case.number} ({case.kind}): {case.data[:300]!r}"
    assert a.status is not None
    if forwarded:
        assert a.status == 200 and a.body == b'{"ok":true}', where
        return "forwarded"
    # Every answer the gateway makes is its JSON error, aiohttp's parser refusals included.
    assert a.headers.get("content-type", "").startswith("application/json"), (a, where)
    payload = json.loads(a.body)
    reason: str = payload.get("error")
    assert reason in REASONS and REASONS[reason].status == a.status, (reason, a.status, where)
    assert isinstance(payload.get("detail"), str), where
    if a.status >= 500:
        assert reason in RETRYABLE, (reason, where)
    return reason


async def test_mutated_pushes_over_the_wire() -> None:
    rng = random.Random(SEED)
    async with world(configure) as w, aiohttp.ClientSession() as session:
        minted: dict[str, Push] = {}

        def mint(issuer: str, body: bytes) -> Push:
            iss = ISSUERS[issuer][0]
            claims = claims_for(body, w.clock(), issuer=iss, jti=uuid.uuid4().hex)
            push = Push(issuer, claims["jti"], sign(w.key, claims), body)
            minted[push.jti] = push
            return push

        outcomes: dict[str, int] = {}
        for n in range(CASES):
            case = make_case(n, rng, mint)
            before = len(w.backend.received)
            answers = await exchange(w.url, case.data, case.half_close)
            arrived = w.backend.received[before:]
            assert len(arrived) <= 1, f"case {n} ({case.kind}) delivered {len(arrived)} times"
            for got in arrived:
                check_delivery(case, got.path_qs, got.header("x-jwt-claims"), got.body, minted)
            if case.mutated:
                assert not arrived, f"mutated case {n} ({case.kind}) reached the backend"
            if case.noop:
                assert arrived, f"no-op case {n} ({case.kind}) was not forwarded: {answers}"
            for a in answers:
                label = check_answer(case, a, forwarded=bool(arrived) and a is answers[0])
                outcomes[label] = outcomes.get(label, 0) + 1
            if not answers:
                outcomes["no_answer"] = outcomes.get("no_answer", 0) + 1

        # Each jti reached the backend at most once, whatever the mutations around it.
        jtis = [_claims(r.header("x-jwt-claims"))["jti"] for r in w.backend.received]
        assert len(jtis) == len(set(jtis))
        # Still up, still forwarding.
        push = mint("payments", b'{"after":"fuzz"}')
        data = http(
            "POST",
            "/hooks/payments/after",
            [("Authorization", f"Bearer {push.token}"), ("Content-Length", str(len(push.body)))],
            push.body,
        )
        final = await exchange(w.url, data, False)
        assert [a.status for a in final] == [200]
        assert w.backend.received[-1].body == push.body
        async with session.get(w.admin_url + "/metrics") as resp:
            scrape = parse_metrics(await resp.text())
        errors = {
            labels: v
            for labels, v in scrape.samples.get("jwksgate_requests_total", {}).items()
            if ("reason", "internal_error") in labels
        }
        assert not any(errors.values()), errors
        # The fuzz reached every layer: refusals of each kind and real deliveries.
        assert outcomes.get("forwarded", 0) >= 20, outcomes
        for reason in ("malformed_token", "bad_signature", "body_hash_mismatch", "bad_issuer"):
            assert outcomes.get(reason, 0) >= 1, (reason, outcomes)


def _claims(segment: str | None) -> dict[str, Any]:
    assert segment is not None, "a delivery without the claims header"
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return value


def check_delivery(
    case: Case, path_qs: str, claims_header: str | None, body: bytes, minted: dict[str, Push]
) -> None:
    """What reached the backend is exactly a signed push, on a path its issuer owns."""
    where = f"case {case.number} ({case.kind}): {case.data[:300]!r}"
    claims = _claims(claims_header)
    push = minted.get(claims.get("jti", ""))
    assert push is not None, f"an unknown jti was delivered: {where}"
    assert body == push.body, f"a body other than the signed one was delivered: {where}"
    assert claims["iss"] == ISSUERS[push.issuer][0], where
    assert owner(path_qs) == push.issuer, f"{push.issuer}'s push delivered to {path_qs}: {where}"


# --- nested prefixes end to end (issue 13 item 7) -------------------------------------------


def _push_bytes(w: World, issuer: str, path: str, body: bytes = b'{"e":1}') -> bytes:
    claims = claims_for(body, w.clock(), issuer=ISSUERS[issuer][0])
    headers = [
        ("Authorization", f"Bearer {sign(w.key, claims)}"),
        ("Content-Length", str(len(body))),
    ]
    return http("POST", path, headers, body)


@pytest.mark.parametrize(
    ("issuer", "path"),
    [
        ("hooks", "/hooks/payments/1"),
        ("hooks", "/hooks/payments"),
        ("sender", "/hooks/payments/1"),
        ("sender", "/hooks/x"),
        ("hooks", "/hooks/%70ayments/1"),  # the backend decodes %70 to "p"
        ("hooks", "/hooks/payment%73"),
    ],
)
async def test_a_nested_prefix_owns_its_subtree_over_the_wire(issuer: str, path: str) -> None:
    async with world(configure) as w:
        answers = await exchange(w.url, _push_bytes(w, issuer, path), False)
        assert [(a.status, json.loads(a.body)["error"]) for a in answers] == [(401, "bad_issuer")]
        assert w.backend.received == []
        # The owner's own push on that path, and the parent's on the rest of its subtree, pass.
        for name, ok_path in ((owner(path), path), (issuer, ISSUERS[issuer][2][1])):
            answers = await exchange(w.url, _push_bytes(w, name, ok_path), False)
            assert [a.status for a in answers] == [200], answers
        assert [r.path_qs for r in w.backend.received][-1] == ISSUERS[issuer][2][1]


# --- found by the fuzz (issue 13 items 1 and 3) ---------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "path"),
    [
        ("payments", "/hooks/payments/..;/x"),
        ("payments", "/hooks/payments/%2e%2e;/x"),
        ("hooks", "/hooks/payments;x/1"),
        ("hooks", "/hooks/payments;jsessionid=1"),
    ],
)
async def test_path_params_do_not_carry_a_push_out_of_its_subtree(issuer: str, path: str) -> None:
    assert owner(path) != issuer
    async with world(configure) as w:
        answers = await exchange(w.url, _push_bytes(w, issuer, path), False)
        assert w.backend.received == [], answers


@pytest.mark.parametrize(
    "data",
    [
        b"POST /hook HTTP/1.1\r\nHost: gw\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
    ],
    ids=["ctl-byte", "chunk-size", "tls-hello"],
)
async def test_parser_refusals_are_json_errors(data: bytes) -> None:
    async with world(configure) as w:
        answers = await exchange(w.url, data, False)
        assert [a.status for a in answers] == [400]
        assert json.loads(answers[0].body)["error"] == "malformed_request"


def test_the_oracle_resolves_paths_like_a_liberal_backend() -> None:
    assert owner("/hooks/payments/1") == "payments"
    assert owner("/hooks/payments/..;/x") == "hooks"
    assert owner("/hooks/payments;x/1") == "payments"
    assert owner("/hooks/%70ayments") == "payments"
    assert owner("/hooksx/payments") == "sender"
    assert owner("/hooks/x/../../hook") == "sender"
    assert re.fullmatch(r"/[^?]*", backend_view("/a/b?c=/d"))
