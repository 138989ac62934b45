"""Property-based tests of more pure parsers (issue 13, "beyond the list"): the JWKS document
(``jwks.parse_jwks`` / ``select_keys``), the Standard Webhooks headers and signature list, the
config loader on mutated YAML, and the forwarding-header decision.

Hostile input must end as the module's own error (``JwksError``, a ``Rejection`` with one of the
expected reasons, ``ConfigError``), never another exception: on the request path anything else is
a 500 that senders retry for days, at startup or reload a traceback instead of a config error.
Every test is bounded and derandomized (no example database), so the normal test command runs the
same examples on every machine; tests/test_fuzz_parsers.py covers the token and strict JSON.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from jwcrypto import jwk
from multidict import CIMultiDict, CIMultiDictProxy

# The functions under test, in one block: modules may move and only these lines then change.
from gateway.authn.standard_webhooks import (
    MAX_SIGNATURE_BYTES,
    MAX_SIGNATURE_ENTRIES,
    check_signature,
    check_webhook_headers,
    signature_entries,
)
from gateway.config import (
    CLIENT_FORWARDING_HEADERS,
    SUPPORTED_ALGORITHMS,
    ForwardConfig,
    StandardWebhooksConfig,
    load_config,
    parse_config,
)
from gateway.errors import ConfigError, Rejection
from gateway.forward_headers import forwarding_headers, gateway_header_names
from gateway.jwks import JwksError, parse_jwks, select_keys
from tests.support import fuzz, gateway_config_data

FUZZ = fuzz(150, HealthCheck.data_too_large)
ROOT = Path(__file__).resolve().parent.parent

# -- JSON-shaped values --------------------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["RSA", "EC", "OKP", "oct", "sig", "enc", "P-256", "Ed25519", "X25519", ""])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# -- 1. the JWKS document ------------------------------------------------------------------------
@cache
def published_keys() -> tuple[dict[str, Any], ...]:
    """Real public JWKs of every accepted family, with and without alg/kid/use."""
    rsa_key = jwk.JWK.from_pyca(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_key = jwk.JWK.from_pyca(ec.generate_private_key(ec.SECP256R1()))
    ed_key = jwk.JWK.from_pyca(ed25519.Ed25519PrivateKey.generate())
    out: list[dict[str, Any]] = []
    for key, extra in (
        (rsa_key, {"kid": "r1", "alg": "RS256", "use": "sig"}),
        (rsa_key, {"kid": "r2"}),
        (ec_key, {"kid": "e1", "alg": "ES256"}),
        (ed_key, {"kid": "d1", "key_ops": ["verify"]}),
        (ec_key, {}),
    ):
        data: dict[str, Any] = json.loads(key.export_public())
        data.pop("kid", None)
        data.update(extra)
        out.append(data)
    return tuple(out)


ALLOWED = st.lists(st.sampled_from(SUPPORTED_ALGORITHMS), min_size=1, max_size=4, unique=True)
KEY_MEMBERS = ("kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y", "d", "k")


@st.composite
def mutated_key(draw: st.DrawFn) -> Any:
    key: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(published_keys())))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "drop", "swap", "whole"]))
        if op == "set":
            key[draw(st.sampled_from(KEY_MEMBERS))] = draw(JSON_VALUES)
        elif op == "drop" and key:
            key.pop(draw(st.sampled_from(sorted(key))))
        elif op == "swap":
            # A member of another real key: right shape, wrong key (n of RSA under an EC key).
            other = draw(st.sampled_from(published_keys()))
            name = draw(st.sampled_from(sorted(other)))
            key[name] = copy.deepcopy(other[name])
        else:
            return draw(JSON_VALUES)
    return key


@st.composite
def mutated_jwks(draw: st.DrawFn) -> bytes:
    keys = draw(st.lists(mutated_key(), max_size=6))
    doc: Any = {"keys": keys}
    shape = draw(st.sampled_from(["doc", "doc", "doc", "keys-value", "top-value", "extra"]))
    if shape == "keys-value":
        doc = {"keys": draw(JSON_VALUES)}
    elif shape == "top-value":
        doc = draw(JSON_VALUES)
    elif shape == "extra":
        doc[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    edit = draw(st.sampled_from(["none", "none", "truncate", "flip", "insert", "duplicate-key"]))
    if edit == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif edit == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif edit == "insert":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=4)) + raw[i:]
    elif edit == "duplicate-key":
        raw = raw.replace(b'"kid"', b'"kid": "x", "kid"', 1)
    return raw


def _checked_keyset(raw: bytes, allowed: list[str], max_keys: int) -> Any:
    try:
        keyset, dropped = parse_jwks(raw, tuple(allowed), max_keys)
    except JwksError:
        return None
    assert len(keyset.all_keys) <= max_keys
    for key in keyset.all_keys:
        assert key.algs and key.algs <= set(allowed), key.algs
        assert key.alg in key.algs
    kids = [k.kid for k in keyset.all_keys if k.kid is not None]
    assert len(kids) == len(set(kids)) == len(keyset.by_kid)
    for reason, detail in dropped:
        assert isinstance(reason, str) and isinstance(detail, str)
    return keyset


@FUZZ
@given(mutated_jwks(), ALLOWED, st.integers(1, 8))
def test_parse_jwks_raises_only_jwks_error_on_mutated_documents(
    raw: bytes, allowed: list[str], max_keys: int
) -> None:
    _checked_keyset(raw, allowed, max_keys)


@FUZZ
@given(
    mutated_jwks(),
    ALLOWED,
    st.sampled_from([*SUPPORTED_ALGORITHMS, "none", "HS256", "", "rs256"]),
    st.none() | st.sampled_from(["r1", "r2", "e1", "d1", "nope", ""]),
)
def test_select_keys_hands_out_only_keys_pinned_to_an_allowed_alg(
    raw: bytes, allowed: list[str], alg: str, kid: str | None
) -> None:
    keyset = _checked_keyset(raw, allowed, 10)
    if keyset is None:
        return
    try:
        keys = select_keys(keyset, alg, kid)
    except Rejection as r:
        assert r.reason in {"unknown_kid", "disallowed_algorithm"}, r.reason
        return
    for key in keys:
        # Never an algorithm the issuer did not allow, whatever the token's header says.
        assert key.alg == alg and alg in allowed
        assert kid is None or key.kid == kid


def test_the_unmutated_keys_parse() -> None:
    raw = json.dumps({"keys": list(published_keys())}).encode()
    keyset = _checked_keyset(raw, ["RS256", "ES256", "EdDSA"], 10)
    assert keyset is not None and len(keyset.all_keys) == 5


# -- 2. Standard Webhooks headers ----------------------------------------------------------------
SECRET = b"standard-webhooks-fuzz-secret-32"
SW = StandardWebhooksConfig(secrets=(SECRET,), tolerance_seconds=300)
NOW = 1_800_000_000
SW_REASONS = {"missing_token", "malformed_token", "token_too_old", "not_yet_valid"}
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
) | st.sampled_from(["", " ", str(NOW), f" {NOW} ", str(NOW - 301), "-1", "1e9", "0x10"])


def sign(msg_id: str, ts: str, body: bytes) -> str:
    mac = hmac.new(SECRET, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


ENTRIES = st.sampled_from(
    [
        "v1,",
        "v1a,",
        "v2,abc",
        ",",
        "v1",
        "v1a," + base64.b64encode(b"\x00" * 64).decode(),
        "v1a,!!!",
        "v1," + base64.b64encode(b"\x01" * 32).decode(),
    ]
) | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=100)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x-other"]),
            HEADER_TEXT | st.lists(ENTRIES, max_size=40).map(" ".join),
        ),
        max_size=8,
    )
)
def test_webhook_headers_raise_only_their_reasons(items: list[tuple[str, str]]) -> None:
    headers: CIMultiDict[str] = CIMultiDict(items)
    try:
        msg_id, ts, signatures = check_webhook_headers(headers, SW, NOW)
    except Rejection as r:
        assert r.reason in SW_REASONS, r.reason
        return
    assert len(headers.getall("webhook-id")) == 1
    assert abs(int(ts) - NOW) <= SW.tolerance_seconds
    assert len(signatures.split()) <= MAX_SIGNATURE_ENTRIES
    assert len(signatures) <= MAX_SIGNATURE_BYTES + MAX_SIGNATURE_ENTRIES
    try:
        check_signature(msg_id, ts, signatures, b"{}", SW)
    except Rejection as r:
        assert r.reason == "bad_signature", r.reason


@FUZZ
@given(st.lists(st.lists(ENTRIES, max_size=20).map(" ".join), min_size=1, max_size=5))
def test_signature_entries_are_bounded_by_count_and_bytes_only(lines: list[str]) -> None:
    total = sum(len(line.split()) for line in lines)
    size = sum(len(line) for line in lines)
    try:
        entries = signature_entries(lines)
    except Rejection as r:
        assert r.reason == "malformed_token"
        assert total > MAX_SIGNATURE_ENTRIES or size > MAX_SIGNATURE_BYTES
        return
    assert entries == [e for line in lines for e in line.split()]
    assert total <= MAX_SIGNATURE_ENTRIES and size <= MAX_SIGNATURE_BYTES


@FUZZ
@given(
    st.lists(ENTRIES.filter(lambda e: len(e) < 60), max_size=MAX_SIGNATURE_ENTRIES - 1),
    st.data(),
    st.binary(max_size=200),
)
def test_a_valid_signature_verifies_at_any_position_on_any_line(
    others: list[str], data: st.DataObject, body: bytes
) -> None:
    msg_id, ts = "msg_fuzz", str(NOW)
    entries = list(others)
    entries.insert(data.draw(st.integers(0, len(entries))), sign(msg_id, ts, body))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(entries) - 1)), max_size=4)))
    lines = [" ".join(entries[a:b]) for a, b in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    headers: CIMultiDict[str] = CIMultiDict([("webhook-id", msg_id), ("webhook-timestamp", ts)])
    for line in lines:
        if line:
            headers.add("webhook-signature", line)
    got_id, got_ts, signatures = check_webhook_headers(headers, SW, NOW)
    check_signature(got_id, got_ts, signatures, body, SW)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 10_000), st.integers(1, 255))
def test_a_signature_never_verifies_another_body(body: bytes, where: int, flip: int) -> None:
    msg_id, ts = "msg_fuzz", str(NOW)
    good = sign(msg_id, ts, body)
    other = bytearray(body or b"\x00")
    other[where % len(other)] ^= flip
    try:
        check_signature(msg_id, ts, good, bytes(other), SW)
    except Rejection as r:
        assert r.reason == "bad_signature"
    else:
        raise AssertionError("a signature verified a body it does not cover")


# -- 3. the config loader on mutated YAML --------------------------------------------------------
YAML_TOKENS = [
    "[]", "{}", "null", "~", "!!str", "!!binary x", "!!python/object:os.system", "&a", "*a",
    "*undefined", "1e309", "-1", "0x10", "0o17", "1_000", ".inf", ".nan", '"\\u0000"', "? ",
    ": ", "- ", "|", ">", "%YAML 1.1", "---", "...", "\t", "yes", "no", "on", "2001-12-14",
    "${HOME}", "${UNSET_VAR_X:-}", "${", "<<: *a", "'", '"', "#", "@", "`", "\\", "\ufeff",
    "10000000000000000000000", "[[[[[[[[", "]]]]", "{a: {b: {c: [", "é", "\x85", "\u2028",
]  # fmt: skip


@cache
def base_yaml() -> str:
    """The shipped example, and a small config with the other issuer types."""
    extra = (
        "listen: 127.0.0.1:0\n"
        "limits: {max_inflight: 8, max_unverified_inflight: 2}\n"
        "forward: {trusted_hops: 1, preserve_headers: [X-Forwarded-Port]}\n"
        "issuers:\n"
        "  - name: swh\n"
        "    type: standard_webhooks\n"
        "    path_prefix: /swh\n"
        "    standard_webhooks:\n"
        "      secrets: [whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==]\n"
        "  - name: token\n"
        "    type: static_token\n"
        "    path_prefix: /tok\n"
        "    static_token: {tokens: [a-long-enough-shared-secret-value-1]}\n"
    )
    return (ROOT / "config" / "example.yaml").read_text(encoding="utf-8") + "\n#---\n" + extra


@st.composite
def mutated_yaml(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(base_yaml().split("\n#---\n")))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["token", "token", "drop", "dup", "indent", "dedent", "cut"]))
        line = lines[i]
        if op == "token":
            # Replace the value after a key's colon (or a random spot) with a YAML-ish token.
            colon = line.find(": ")
            at = (
                colon + 2 if colon >= 0 and draw(st.booleans()) else draw(st.integers(0, len(line)))
            )
            tail = "" if draw(st.booleans()) else line[at:]
            lines[i] = line[:at] + draw(st.sampled_from(YAML_TOKENS)) + tail
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = "  " + line
        elif op == "dedent":
            lines[i] = line.lstrip()
        else:
            lines[i] = line[: draw(st.integers(0, len(line)))]
        if not lines:
            lines = [""]
    out = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@FUZZ
@given(mutated_yaml())
def test_mutated_yaml_is_a_config_or_a_config_error(content: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        try:
            config = load_config(name)
        except ConfigError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)
            return
        assert config.issuers
    finally:
        os.unlink(name)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


YAML_VALUES = st.recursive(
    SCALARS | st.sampled_from(["0.0.0.0:8080", "https://a.example/j", "jwt", "redis://r:1"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers() | st.none(), inner, max_size=4)
    ),
    max_leaves=10,
)


@FUZZ
@given(st.data())
def test_any_value_anywhere_in_valid_data_is_a_config_or_a_config_error(
    data: st.DataObject,
) -> None:
    doc: Any = gateway_config_data(
        "https://sender.test/jwks.json",
        "http://127.0.0.1:3000",
        limits={"max_unverified_inflight": 2},
        forward={"trusted_hops": 1, "preserve_headers": ["X-Original-URL"]},
    )
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        value = data.draw(YAML_VALUES)
        if not path:
            doc = value
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
    try:
        parse_config(doc)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


# -- 4. forwarding headers -----------------------------------------------------------------------
SET_BY_GATEWAY = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"]
FORWARDING_NAMES = st.sampled_from(
    [*CLIENT_FORWARDING_HEADERS, *SET_BY_GATEWAY, "X-Real-IP", "x_forwarded_for", "X-Other"]
)
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
) | st.sampled_from(["1.2.3.4", "1.2.3.4, 5.6.7.8", "::1", " , ,", "https", "HTTP", ""])
PEERS = st.sampled_from(["127.0.0.1", "203.0.113.9", "::1", "fe80::1", ""])


@FUZZ
@given(
    st.lists(st.tuples(FORWARDING_NAMES, HEADER_VALUES), max_size=8),
    PEERS,
    st.sampled_from(["http", "https"]),
    st.text(max_size=30),
)
def test_at_the_edge_forwarding_headers_ignore_what_the_client_sent(
    items: list[tuple[str, str]], peer: str, proto: str, host: str
) -> None:
    edge = ForwardConfig()
    sent = CIMultiDictProxy(CIMultiDict(items))
    got = forwarding_headers(sent, edge, client=peer, proto=proto, host=host)
    assert got == forwarding_headers(
        CIMultiDictProxy(CIMultiDict()), edge, client=peer, proto=proto, host=host
    )
    for _, value in got:
        assert "\r" not in value and "\n" not in value and "\x00" not in value
    stripped = gateway_header_names(edge, ())
    for name, _ in items:
        assert name.lower().replace("_", "-") in stripped or name == "X-Other"


@FUZZ
@given(
    st.lists(st.tuples(FORWARDING_NAMES, HEADER_VALUES), max_size=8),
    PEERS,
    st.integers(1, 4),
)
def test_behind_trusted_hops_the_peer_is_appended_and_the_client_is_in_the_chain(
    items: list[tuple[str, str]], peer: str, hops: int
) -> None:
    cfg = ForwardConfig(trusted_hops=hops)
    sent = CIMultiDictProxy(CIMultiDict(items))
    got = dict(forwarding_headers(sent, cfg, client=peer, proto="http", host="gw"))
    chain = [e.strip() for e in got["X-Forwarded-For"].split(",")]
    assert chain[-1] == peer.strip()
    assert got["X-Real-IP"] == peer or got["X-Real-IP"] in chain[:-1]
    assert got["X-Forwarded-Proto"] in ("http", "https")
