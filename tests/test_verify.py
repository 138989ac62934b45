"""Unit tests of the pure token decisions (gateway/verify.py) and of strict JSON (jsonstrict.py).

Every failure is asserted by its exact reason code (gateway/errors.py): a check that rejects for the
wrong reason sends the sender the wrong advice and the operator to the wrong dashboard panel.
Tokens are assembled segment by segment here, since none of these functions verifies a signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from gateway.config import BodyHashConfig, IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact, loads_strict
from gateway.jwks import parse_jwks
from gateway.verify import (
    MAX_TOKEN_LENGTH,
    ParsedToken,
    candidates,
    check_body_hash,
    check_claims,
    check_header,
    extract_bearer,
    parse_token,
    replay_key,
    replay_ttl,
    route,
)
from tests.support import JwksServer, SigningKey, b64url, sign

NOW = 1_800_000_000.0
ISSUER = IssuerConfig(
    name="sender",
    jwks_url="https://sender.test/jwks.json",
    issuer="https://sender.test",
    algorithms=("RS256", "ES256"),
)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def rejects(reason: str, fn: Callable[..., object], *args: Any) -> None:
    """``fn(*args)`` raises a ``Rejection`` with exactly ``reason``."""
    with pytest.raises(Rejection) as info:
        fn(*args)
    assert info.value.reason == reason, info.value.detail


def seg(value: Any) -> str:
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


HEADER = {"alg": "RS256", "typ": "JWT", "kid": "k1"}


def compact(header: Any = ..., claims: Any = ..., signature: bytes = b"\x01\x02\x03\x04") -> str:
    header = HEADER if header is ... else header
    claims = {"iss": "https://sender.test", "jti": "j1"} if claims is ... else claims
    return f"{seg(header)}.{seg(claims)}.{b64url(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iat": NOW, "exp": NOW + 300, "jti": "j-1"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


# --- extract_bearer ----------------------------------------------------------------------------


def test_bearer_token_is_extracted_with_any_scheme_case_and_spacing() -> None:
    assert extract_bearer(["Bearer abc.def.ghi"]) == "abc.def.ghi"
    assert extract_bearer(["bEaReR   abc.def.ghi"]) == "abc.def.ghi"
    assert extract_bearer(["Bearer abc.def.ghi  "]) == "abc.def.ghi"


def test_no_authorization_header_is_missing_token() -> None:
    rejects("missing_token", extract_bearer, [])


def test_two_authorization_headers_are_a_malformed_request() -> None:
    rejects("malformed_request", extract_bearer, ["Bearer a.b.c", "Bearer a.b.c"])
    rejects("malformed_request", extract_bearer, ["Bearer a.b.c", "Basic dXNlcjpwdw=="])


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwdw==", "Token a.b.c", "a.b.c", "", "Bearerx a.b.c", "DPoP a.b.c"]
)
def test_another_scheme_is_missing_token(value: str) -> None:
    rejects("missing_token", extract_bearer, [value])


@pytest.mark.parametrize("value", ["Bearer ", "Bearer    ", "Bearer", "bearer"])
def test_empty_bearer_token_is_malformed_token(value: str) -> None:
    rejects("malformed_token", extract_bearer, [value])


@pytest.mark.parametrize(
    "value", ["Bearer a.b.c d", 'Bearer {"payload": "x", "signature": "y"}', "Bearer a\tb.c"]
)
def test_bearer_token_with_whitespace_inside_is_malformed_not_missing(value: str) -> None:
    # The sender did send a Bearer token: "missing_token" would send it looking elsewhere.
    rejects("malformed_token", extract_bearer, [value])


# --- parse_token -------------------------------------------------------------------------------


def test_compact_token_is_decoded_without_trusting_it() -> None:
    token = compact(signature=b"sig")
    parsed = parse_token(token)
    h, p, _ = token.split(".")
    assert parsed.header == HEADER
    assert parsed.claims == {"iss": "https://sender.test", "jti": "j1"}
    assert parsed.signature == b"sig"
    assert parsed.signing_input == f"{h}.{p}".encode()
    assert parsed.payload_segment == p


def test_empty_signature_segment_parses_so_alg_none_is_judged_by_its_header() -> None:
    token = compact(header={"alg": "none"}, signature=b"")
    assert token.endswith(".")
    assert parse_token(token).signature == b""


def _token_of_length(length: int) -> str:
    head = seg(HEADER)
    for filler in range(length):
        for sig_bytes in (3, 4, 5):
            token = f"{head}.{seg({'p': 'x' * filler})}.{b64url(b's' * sig_bytes)}"
            if len(token) == length:
                return token
    raise AssertionError("unreachable")


def test_length_cap_is_inclusive() -> None:
    at_cap = _token_of_length(MAX_TOKEN_LENGTH)
    assert parse_token(at_cap).claims["p"].startswith("x")
    over = _token_of_length(MAX_TOKEN_LENGTH + 1)
    rejects("malformed_token", parse_token, over)


def test_length_cap_is_checked_before_anything_else() -> None:
    rejects("malformed_token", parse_token, "a" * 100_000)


@pytest.mark.parametrize(
    "token",
    [
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0",  # 2 segments
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln.c2ln",  # 4 segments
        "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn",  # 5 segments: a JWE
        "eyJhbGciOiJSUzI1NiJ9..c2ln",  # empty payload
        ".eyJpc3MiOiJ4In0.c2ln",  # empty header
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln.",  # trailing dot
        " eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln",  # leading space
    ],
)
def test_anything_but_three_segments_is_malformed(token: str) -> None:
    rejects("malformed_token", parse_token, token)


def test_jws_json_serialization_is_malformed() -> None:
    general = json.dumps(
        {
            "payload": seg({"iss": "x"}),
            "signatures": [{"protected": seg({"alg": "RS256"}), "signature": "c2ln"}],
        }
    )
    flattened = json.dumps(
        {"payload": seg({"iss": "x"}), "protected": seg({"alg": "RS256"}), "signature": "c2ln"}
    )
    rejects("malformed_token", parse_token, general)
    rejects("malformed_token", parse_token, flattened)


def _standard_alphabet(segment_bytes: bytes) -> str:
    return base64.b64encode(segment_bytes).decode()


def test_padded_base64_is_malformed() -> None:
    header = json.dumps({"alg": "RS256", "kid": "k"}).encode()  # 29 bytes: needs padding
    assert len(header) % 3 != 0
    padded = base64.urlsafe_b64encode(header).decode()
    assert padded.endswith("=")
    rejects("malformed_token", parse_token, f"{padded}.{seg({'iss': 'x'})}.c2ln")
    rejects("malformed_token", parse_token, f"{seg(header)}.{seg({'iss': 'x'})}.c2lnbg==")


def test_standard_alphabet_base64_is_malformed() -> None:
    signature = b"\xfb\xff\xbf" * 4  # encodes to "+/+/" in the standard alphabet, "-_-_" in url
    assert "+" in _standard_alphabet(signature) and "-" in b64url(signature)
    good = compact(signature=signature)
    parse_token(good)
    h, p, _ = good.split(".")
    rejects("malformed_token", parse_token, f"{h}.{p}.{_standard_alphabet(signature)}")


def _non_canonical(segment: str) -> str:
    """Same decoded bytes, different last character (spare bits set)."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for c in alphabet:
        candidate = segment[:-1] + c
        if candidate == segment:
            continue
        if base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4)) == raw:
            return candidate
    raise AssertionError(f"{segment!r} has no spare bits")


@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_canonical_base64_spare_bits_are_malformed(which: int) -> None:
    # 29-byte header, 13-byte payload, 2-byte signature: each last character has spare bits.
    token = compact(
        header={"alg": "RS256", "kid": "k1"}, claims={"iss": "xy"}, signature=b"\xff\xff"
    )
    parts = token.split(".")
    assert len(parts[which]) % 4 != 0, "the segment must have spare bits"
    parts[which] = _non_canonical(parts[which])
    rejects("malformed_token", parse_token, ".".join(parts))


def test_impossible_base64_length_is_malformed() -> None:
    h, p, _ = compact().split(".")
    rejects("malformed_token", parse_token, f"{h}.{p}.AAAAA")  # 5 characters: 1 mod 4


@pytest.mark.parametrize("header", [[], "RS256", 1, None, True, [{"alg": "RS256"}]])
def test_header_that_is_not_an_object_is_malformed(header: Any) -> None:
    rejects("malformed_token", parse_token, compact(header=header))


@pytest.mark.parametrize("claims", [[], "claims", 0, None, [{"iss": "x"}]])
def test_payload_that_is_not_an_object_is_malformed(claims: Any) -> None:
    rejects("malformed_token", parse_token, compact(claims=claims))


def test_payload_that_is_not_json_is_malformed() -> None:
    rejects("malformed_token", parse_token, f"{seg(HEADER)}.{seg(b'not json')}.c2ln")
    rejects("malformed_token", parse_token, f"{seg(HEADER)}.{seg(b'{} {}')}.c2ln")
    truncated = seg(b'{"alg"')
    rejects("malformed_token", parse_token, f"{truncated}.{seg({'a': 1})}.c2ln")


def test_invalid_utf8_is_malformed() -> None:
    bad = seg(b'{"a":"\xff"}')
    rejects("malformed_token", parse_token, f"{seg(HEADER)}.{bad}.c2ln")


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        (b'{"alg":"RS256","alg":"none"}', b'{"iss":"x"}'),
        (b'{"alg":"RS256","kid":"a","kid":"b"}', b'{"iss":"x"}'),
        (b'{"alg":"RS256"}', b'{"iss":"a","iss":"b"}'),
        (b'{"alg":"RS256"}', b'{"x":{"exp":1,"exp":2}}'),
    ],
)
def test_duplicate_members_are_malformed(header: bytes, payload: bytes) -> None:
    rejects("malformed_token", parse_token, f"{seg(header)}.{seg(payload)}.c2ln")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_malformed(constant: bytes) -> None:
    payload = b'{"exp":' + constant + b"}"
    rejects("malformed_token", parse_token, f"{seg(HEADER)}.{seg(payload)}.c2ln")


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    depth = 2900  # deeper than the interpreter's recursion limit, shorter than the length cap
    payload = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    token = f"{seg(HEADER)}.{seg(payload)}.c2ln"
    assert len(token) <= MAX_TOKEN_LENGTH
    rejects("malformed_token", parse_token, token)


def test_integer_too_long_to_convert_is_malformed_not_a_crash() -> None:
    payload = b'{"exp":' + b"9" * 5000 + b"}"
    token = f"{seg(HEADER)}.{seg(payload)}.c2ln"
    assert len(token) <= MAX_TOKEN_LENGTH
    rejects("malformed_token", parse_token, token)


# --- jsonstrict --------------------------------------------------------------------------------


def test_loads_strict_accepts_plain_json_with_surrounding_whitespace() -> None:
    assert loads_strict(b' \n{"a": [1, 2.5, "\\u00e9"]}\r\n') == {"a": [1, 2.5, "é"]}
    assert loads_strict('"x"') == "x"


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":1}',
        b'[{"a":1,"b":2,"a":3}]',
        b"NaN",
        b"[Infinity]",
        b'{"a":-Infinity}',
        b"{} x",
        b"[1] [2]",
        b"",
        b"\xff",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_loads_strict_raises_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        loads_strict(text)


def test_dumps_compact_is_the_a2a_serialisation() -> None:
    assert dumps_compact({"b": [1, 2], "a": "é"}) == '{"b":[1,2],"a":"é"}'.encode()
    with pytest.raises(ValueError):
        dumps_compact({"x": float("nan")})


# --- routing -----------------------------------------------------------------------------------


def issuer(name: str, iss: str | None, prefix: str = "/") -> IssuerConfig:
    return replace(ISSUER, name=name, issuer=iss, path_prefix=prefix)


ROOT = issuer("root", "https://root.test", "/")
ORDERS = issuer("orders", "https://orders.test", "/orders")
ORDERS_EU = issuer("orders_eu", "https://eu.orders.test", "/orders/eu/")
BILLING = issuer("billing", "https://billing.test", "/billing")
ALL = (ROOT, ORDERS, ORDERS_EU, BILLING)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ["root"]),
        ("/hook", ["root"]),
        ("/orders", ["orders"]),
        ("/orders/", ["orders"]),
        ("/orders/1", ["orders"]),
        ("/ordersx", ["root"]),
        ("/orders-eu", ["root"]),
        ("/orders/eu", ["orders_eu"]),
        ("/orders/eu/x/y", ["orders_eu"]),
        ("/orders/eux", ["orders"]),
        ("/billing/2", ["billing"]),
    ],
)
def test_candidates_are_the_issuers_of_the_longest_whole_segment_prefix(
    path: str, expected: list[str]
) -> None:
    assert [c.name for c in candidates(ALL, path)] == expected
    assert [c.name for c in candidates(tuple(reversed(ALL)), path)] == expected


def test_no_candidate_without_a_root_issuer() -> None:
    assert candidates((ORDERS, BILLING), "/other") == []
    rejects("unknown_issuer", route, [], (ORDERS, BILLING), {"iss": "https://orders.test"})
    rejects("unknown_issuer", route, [], (ORDERS, BILLING), {})


def test_token_without_iss_goes_to_the_only_candidate() -> None:
    assert route(candidates((ORDERS, BILLING), "/orders/1"), (ORDERS, BILLING), {}) is ORDERS
    # The owner of a nested prefix is the only candidate under it, whatever its parents.
    assert route(candidates(ALL, "/orders/eu/1"), ALL, {}) is ORDERS_EU


ORDERS_US = issuer("orders_us", "https://us.orders.test", "/orders/")
SHARED = (*ALL, ORDERS_US)


def test_token_without_iss_and_several_candidates_is_unknown_issuer() -> None:
    assert [c.name for c in candidates(SHARED, "/orders/1")] == ["orders", "orders_us"]
    rejects("unknown_issuer", route, candidates(SHARED, "/orders/1"), SHARED, {"sub": "x"})


def test_iss_picks_its_candidate_among_those_sharing_a_prefix() -> None:
    cands = candidates(SHARED, "/orders/1")
    assert route(cands, SHARED, {"iss": "https://orders.test"}) is ORDERS
    assert route(cands, SHARED, {"iss": "https://us.orders.test"}) is ORDERS_US


@pytest.mark.parametrize(
    ("path", "iss"),
    [
        ("/orders/eu/1", "https://orders.test"),  # the parent prefix's issuer
        ("/orders/eu", "https://orders.test"),
        ("/orders/eu/1", "https://root.test"),  # the catch-all issuer
        ("/orders/1", "https://root.test"),
        ("/billing/2", "https://root.test"),
    ],
)
def test_a_nested_prefix_owns_its_subtree(path: str, iss: str) -> None:
    # Issue 13 item 7: a sender trusted for /orders must not deliver to /orders/eu/...
    rejects("bad_issuer", route, candidates(ALL, path), ALL, {"iss": iss})


def test_a_parent_prefix_keeps_the_rest_of_its_subtree() -> None:
    assert route(candidates(ALL, "/orders/eux"), ALL, {"iss": "https://orders.test"}) is ORDERS
    assert route(candidates(ALL, "/orders/us/1"), ALL, {"iss": "https://orders.test"}) is ORDERS
    assert route(candidates(ALL, "/hook"), ALL, {"iss": "https://root.test"}) is ROOT


def test_same_iss_on_two_prefixes_uses_the_longest() -> None:
    deep = issuer("deep", "https://root.test", "/deep")
    both = (ROOT, deep)
    assert route(candidates(both, "/deep/1"), both, {"iss": "https://root.test"}) is deep
    assert route(candidates(both, "/flat"), both, {"iss": "https://root.test"}) is ROOT


def test_iss_of_an_issuer_serving_another_path_is_bad_issuer() -> None:
    rejects("bad_issuer", route, candidates(ALL, "/billing/1"), ALL, {"iss": "https://orders.test"})
    rejects("bad_issuer", route, candidates(ALL, "/orders/1"), ALL, {"iss": "https://billing.test"})


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.test",
        "https://orders.test/",  # no trailing-slash folding (RFC 8725 3.8)
        "HTTPS://ORDERS.TEST",  # no case folding
        "https://orders.test ",
        "",
    ],
)
def test_iss_that_no_issuer_has_is_unknown_issuer(iss: str) -> None:
    rejects("unknown_issuer", route, candidates(ALL, "/orders/1"), ALL, {"iss": iss})


@pytest.mark.parametrize("iss", [123, None, True, ["https://orders.test"], {"a": 1}])
def test_iss_that_is_not_a_string_is_bad_issuer(iss: Any) -> None:
    # A non-string iss is bad_issuer (not unknown_issuer): the sender's token is wrong.
    rejects("bad_issuer", route, candidates(ALL, "/orders/1"), ALL, {"iss": iss})
    rejects("bad_issuer", route, [ORDERS], (ORDERS,), {"iss": iss})


# --- check_header ------------------------------------------------------------------------------


def test_acceptable_header_gives_alg_and_kid() -> None:
    assert check_header({"alg": "RS256", "typ": "JWT", "kid": "k1"}, ISSUER) == ("RS256", "k1")
    assert check_header({"alg": "ES256", "kid": "k2"}, ISSUER) == ("ES256", "k2")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_casing_is_disallowed(alg: str) -> None:
    rejects("disallowed_algorithm", check_header, {"alg": alg, "kid": "k1"}, ISSUER)
    rejects("disallowed_algorithm", check_header, {"alg": alg}, ISSUER)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "PS256", "RS512", "ES384", "EdDSA"])
def test_alg_outside_the_allow_list_is_disallowed(alg: str) -> None:
    rejects("disallowed_algorithm", check_header, {"alg": alg, "kid": "k1"}, ISSUER)


def test_allow_list_is_exact() -> None:
    rejects("disallowed_algorithm", check_header, {"alg": "rs256", "kid": "k1"}, ISSUER)
    rejects("disallowed_algorithm", check_header, {"alg": "RS256 ", "kid": "k1"}, ISSUER)


@pytest.mark.parametrize("alg", [..., None, 256, ["RS256"], {"RS256": 1}, True])
def test_missing_or_non_string_alg_is_disallowed(alg: Any) -> None:
    header: dict[str, Any] = {"kid": "k1"} if alg is ... else {"alg": alg, "kid": "k1"}
    rejects("disallowed_algorithm", check_header, header, ISSUER)


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", "Jwt", "application/jwt", "application/JWT", "APPLICATION/JWT"]
)
def test_typ_jwt_in_its_spellings_is_accepted(typ: str) -> None:
    assert check_header({"alg": "RS256", "typ": typ, "kid": "k"}, ISSUER) == ("RS256", "k")


def test_absent_typ_is_accepted() -> None:
    assert check_header({"alg": "RS256", "kid": "k"}, ISSUER) == ("RS256", "k")


@pytest.mark.parametrize(
    "typ",
    ["dpop+jwt", "at+jwt", "application/at+jwt", "secevent+jwt", "JWS", "jwt ", "", "JOSE"],
)
def test_other_explicit_types_are_disallowed(typ: str) -> None:
    rejects("disallowed_type", check_header, {"alg": "RS256", "typ": typ, "kid": "k"}, ISSUER)


@pytest.mark.parametrize("typ", [None, 1, True, ["JWT"], {"JWT": 1}])
def test_non_string_typ_is_disallowed(typ: Any) -> None:
    # "typ must be absent or one of these": a null typ is present, and is not one of them.
    rejects("disallowed_type", check_header, {"alg": "RS256", "typ": typ, "kid": "k"}, ISSUER)


def test_configured_types_replace_the_default() -> None:
    events = replace(ISSUER, allowed_types=("secevent+jwt",))
    ok = ("RS256", "k")
    assert check_header({"alg": "RS256", "typ": "secevent+jwt", "kid": "k"}, events) == ok
    assert (
        check_header({"alg": "RS256", "typ": "application/SecEvent+JWT", "kid": "k"}, events) == ok
    )
    rejects("disallowed_type", check_header, {"alg": "RS256", "typ": "JWT", "kid": "k"}, events)


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/jwt", "Application/JWT"])
def test_nested_token_is_disallowed_type(cty: str) -> None:
    rejects("disallowed_type", check_header, {"alg": "RS256", "cty": cty, "kid": "k"}, ISSUER)


def test_other_cty_is_not_a_nested_token() -> None:
    assert check_header({"alg": "RS256", "cty": "json", "kid": "k"}, ISSUER) == ("RS256", "k")


@pytest.mark.parametrize("crit", [["exp"], [], ["b64"], "exp", None])
def test_crit_is_malformed(crit: Any) -> None:
    rejects("malformed_token", check_header, {"alg": "RS256", "crit": crit, "kid": "k"}, ISSUER)


@pytest.mark.parametrize("b64", [False, True, "false"])
def test_b64_is_malformed(b64: Any) -> None:
    rejects("malformed_token", check_header, {"alg": "RS256", "b64": b64, "kid": "k"}, ISSUER)


@pytest.mark.parametrize(("name", "value"), [("enc", "A256GCM"), ("zip", "DEF")])
def test_encryption_and_compression_headers_are_malformed(name: str, value: str) -> None:
    rejects("malformed_token", check_header, {"alg": "RS256", name: value, "kid": "k"}, ISSUER)


def test_missing_kid_is_missing_kid() -> None:
    rejects("missing_kid", check_header, {"alg": "RS256", "typ": "JWT"}, ISSUER)


@pytest.mark.parametrize("kid", [1, 0, True, ["k"], {"k": 1}, ""])
def test_kid_that_is_not_a_non_empty_string_is_malformed(kid: Any) -> None:
    rejects("malformed_token", check_header, {"alg": "RS256", "kid": kid}, ISSUER)


def test_kid_length_bound_is_256() -> None:
    assert check_header({"alg": "RS256", "kid": "k" * 256}, ISSUER) == ("RS256", "k" * 256)
    rejects("malformed_token", check_header, {"alg": "RS256", "kid": "k" * 257}, ISSUER)
    rejects("malformed_token", check_header, {"alg": "RS256", "kid": "k" * 4096}, ISSUER)


def test_kid_is_optional_when_require_kid_is_false() -> None:
    lax = replace(ISSUER, require_kid=False)
    assert check_header({"alg": "RS256"}, lax) == ("RS256", None)
    assert check_header({"alg": "ES256", "kid": "k9"}, lax) == ("ES256", "k9")
    rejects("malformed_token", check_header, {"alg": "RS256", "kid": 5}, lax)
    rejects("malformed_token", check_header, {"alg": "RS256", "kid": "k" * 257}, lax)
    rejects("disallowed_algorithm", check_header, {"alg": "none"}, lax)


def test_alg_is_judged_before_the_kid() -> None:
    rejects("disallowed_algorithm", check_header, {"alg": "none"}, ISSUER)


# --- check_claims ------------------------------------------------------------------------------


def test_good_claims_pass() -> None:
    check_claims(good_claims(), ISSUER, NOW)
    check_claims(good_claims(nbf=NOW, sub="s", aud=...), ISSUER, NOW)


@pytest.mark.parametrize("missing", ["iat", "jti"])
def test_each_required_claim_must_be_present(missing: str) -> None:
    rejects("missing_claim", check_claims, good_claims(**{missing: ...}), ISSUER, NOW)


def test_configured_required_claims_are_enforced() -> None:
    strict = replace(ISSUER, require_claims=("iat", "jti", "sub", "exp"))
    rejects("missing_claim", check_claims, good_claims(), strict, NOW)
    check_claims(good_claims(sub="s"), strict, NOW)
    rejects("missing_claim", check_claims, good_claims(sub="s", exp=...), strict, NOW)


def test_neither_exp_nor_iat_is_missing_claim_whatever_require_claims_says() -> None:
    lax = replace(ISSUER, require_claims=())
    rejects("missing_claim", check_claims, {"jti": "j"}, lax, NOW)
    rejects("missing_claim", check_claims, {"jti": "j", "nbf": NOW}, lax, NOW)
    check_claims({"jti": "j", "iat": NOW}, lax, NOW)
    check_claims({"jti": "j", "exp": NOW + 60}, lax, NOW)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [
        "1800000000",
        "",
        True,
        False,
        None,
        [1800000000],
        {"t": 1},
        10**400,  # an integer no float can hold
        -(10**400),
        float("inf"),
        float("-inf"),
        float("nan"),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_time_claim_that_is_not_a_numericdate_is_invalid(name: str, value: Any) -> None:
    rejects("invalid_claim", check_claims, good_claims(**{name: value}), ISSUER, NOW)


def test_null_required_iat_is_not_treated_as_absent() -> None:
    # With exp valid, a null iat must not switch the age check off.
    rejects("invalid_claim", check_claims, good_claims(iat=None), ISSUER, NOW)


def test_huge_but_finite_numbers_are_judged_as_times() -> None:
    rejects("lifetime_too_long", check_claims, good_claims(exp=10**300), ISSUER, NOW)
    rejects("lifetime_too_long", check_claims, good_claims(exp=1e308), ISSUER, NOW)
    rejects("token_too_old", check_claims, good_claims(iat=-(10**300)), ISSUER, NOW)
    rejects("not_yet_valid", check_claims, good_claims(nbf=1e308), ISSUER, NOW)


def test_float_numericdate_is_accepted() -> None:
    check_claims(good_claims(iat=NOW - 0.25, exp=NOW + 299.75, nbf=NOW - 0.5), ISSUER, NOW)


def test_exp_boundary_includes_the_skew() -> None:
    base = good_claims(iat=NOW - 100)
    check_claims({**base, "exp": NOW - 30}, ISSUER, NOW)  # now == exp + skew: still valid
    rejects("expired", check_claims, {**base, "exp": NOW - 30.001}, ISSUER, NOW)
    no_skew = replace(ISSUER, clock_skew_seconds=0)
    check_claims({**base, "exp": NOW}, no_skew, NOW)
    rejects("expired", check_claims, {**base, "exp": NOW - 0.001}, no_skew, NOW)


def test_nbf_in_the_future_beyond_skew_is_not_yet_valid() -> None:
    check_claims(good_claims(nbf=NOW + 30), ISSUER, NOW)
    rejects("not_yet_valid", check_claims, good_claims(nbf=NOW + 30.5), ISSUER, NOW)


def test_iat_in_the_future_beyond_skew_is_not_yet_valid() -> None:
    check_claims(good_claims(iat=NOW + 30, exp=NOW + 330), ISSUER, NOW)
    rejects("not_yet_valid", check_claims, good_claims(iat=NOW + 31, exp=NOW + 331), ISSUER, NOW)


def test_iat_older_than_max_age_plus_skew_is_token_too_old() -> None:
    check_claims(good_claims(iat=NOW - 330, exp=NOW + 60), ISSUER, NOW)
    rejects("token_too_old", check_claims, good_claims(iat=NOW - 331, exp=NOW + 60), ISSUER, NOW)
    young = replace(ISSUER, max_token_age_seconds=10, clock_skew_seconds=0)
    rejects("token_too_old", check_claims, good_claims(iat=NOW - 11), young, NOW)


def test_lifetime_from_iat_is_bounded() -> None:
    check_claims(good_claims(iat=NOW, exp=NOW + 3600), ISSUER, NOW)
    rejects("lifetime_too_long", check_claims, good_claims(iat=NOW, exp=NOW + 3601), ISSUER, NOW)


def test_lifetime_without_iat_counts_from_now() -> None:
    no_iat = replace(ISSUER, require_claims=("jti",))
    check_claims({"jti": "j", "exp": NOW + 3630}, no_iat, NOW)
    rejects("lifetime_too_long", check_claims, {"jti": "j", "exp": NOW + 3631}, no_iat, NOW)


def test_iat_without_exp_is_enough() -> None:
    no_exp = replace(ISSUER, require_claims=("iat",))
    check_claims({"iat": NOW - 10}, no_exp, NOW)
    rejects("token_too_old", check_claims, {"iat": NOW - 400}, no_exp, NOW)


def test_jti_may_be_256_characters() -> None:
    check_claims(good_claims(jti="j" * 256), ISSUER, NOW)
    check_claims(good_claims(jti="é" * 256), ISSUER, NOW)


@pytest.mark.parametrize("jti", ["j" * 257, "", 7, None, ["j"], {"j": 1}, True], ids=repr)
def test_jti_that_is_not_a_string_of_1_to_256_is_invalid(jti: Any) -> None:
    rejects("invalid_claim", check_claims, good_claims(jti=jti), ISSUER, NOW)
    token_mode = replace(ISSUER, replay_key="token", require_claims=("iat",))
    rejects("invalid_claim", check_claims, good_claims(jti=jti), token_mode, NOW)


@pytest.mark.parametrize("sub", [1, None, ["s"], {"s": 1}])
def test_sub_that_is_not_a_string_is_invalid(sub: Any) -> None:
    rejects("invalid_claim", check_claims, good_claims(sub=sub), ISSUER, NOW)


AUDIENCE = replace(ISSUER, audiences=("https://gw.test", "https://gw2.test"))


@pytest.mark.parametrize(
    "aud", ["https://gw.test", ["https://gw2.test"], ["https://other", "https://gw.test"]]
)
def test_aud_containing_a_configured_audience_passes(aud: Any) -> None:
    check_claims(good_claims(aud=aud), AUDIENCE, NOW)


def test_missing_aud_with_configured_audiences_is_bad_audience() -> None:
    rejects("bad_audience", check_claims, good_claims(), AUDIENCE, NOW)


@pytest.mark.parametrize(
    "aud", ["https://other", [], ["https://other"], "https://GW.test", "https://gw.test/"]
)
def test_aud_without_a_configured_audience_is_bad_audience(aud: Any) -> None:
    rejects("bad_audience", check_claims, good_claims(aud=aud), AUDIENCE, NOW)


@pytest.mark.parametrize(
    "aud", [5, None, True, {"aud": "https://gw.test"}, ["https://gw.test", 5], [["x"]]], ids=repr
)
def test_aud_that_is_not_a_string_or_list_of_strings_is_invalid(aud: Any) -> None:
    rejects("invalid_claim", check_claims, good_claims(aud=aud), AUDIENCE, NOW)


def test_aud_present_without_configured_audiences_is_bad_audience() -> None:
    # RFC 7519 4.1.3: a recipient that cannot identify itself in a present aud must reject.
    check_claims(good_claims(), ISSUER, NOW)
    rejects("bad_audience", check_claims, good_claims(aud="https://gw.test"), ISSUER, NOW)


# --- check_body_hash ---------------------------------------------------------------------------

BODY = b'{"task": "t1", "note": "caf\xc3\xa9"}'
COMPACT_BODY = b'{"task":"t1","note":"caf\xc3\xa9"}'
HEX = BodyHashConfig(claim="request_body_sha256", encoding="hex", over="raw")
B64 = BodyHashConfig(claim="bh", encoding="base64url", over="raw")


def digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def hashed(body: bytes, rule: BodyHashConfig = HEX, *, upper: bool = False) -> dict[str, str]:
    if rule.encoding == "hex":
        value = digest(body).hex()
        return {rule.claim: value.upper() if upper else value}
    return {rule.claim: b64url(digest(body))}


def test_hex_hash_matches_in_either_case() -> None:
    check_body_hash(hashed(BODY), BODY, HEX)
    check_body_hash(hashed(BODY, upper=True), BODY, HEX)
    mixed = digest(BODY).hex()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(mixed))
    check_body_hash({"request_body_sha256": mixed}, BODY, HEX)


def test_other_body_is_body_hash_mismatch() -> None:
    rejects("body_hash_mismatch", check_body_hash, hashed(BODY), BODY + b" ", HEX)
    rejects("body_hash_mismatch", check_body_hash, hashed(BODY), b"", HEX)
    rejects("body_hash_mismatch", check_body_hash, hashed(BODY), COMPACT_BODY, HEX)


def test_empty_body_has_its_own_hash() -> None:
    check_body_hash(hashed(b""), b"", HEX)


def test_missing_body_hash_claim_is_missing_claim() -> None:
    rejects("missing_claim", check_body_hash, {}, BODY, HEX)
    rejects("missing_claim", check_body_hash, hashed(BODY), BODY, B64)  # other claim name


@pytest.mark.parametrize("value", [None, 1, ["ab"], {"sha256": "x"}, True])
def test_body_hash_claim_that_is_not_a_string_is_invalid(value: Any) -> None:
    rejects("invalid_claim", check_body_hash, {"request_body_sha256": value}, BODY, HEX)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h[:-1],  # 63 digits
        lambda h: h + "0",  # 65 digits
        lambda h: h[:-1] + "g",  # not hex
        lambda h: " " + h[1:],
        lambda h: "0x" + h[2:],
        lambda h: "",
        lambda h: b64url(bytes.fromhex(h)),  # base64url where hex is configured
    ],
)
def test_hex_hash_of_the_wrong_shape_is_invalid(mangle: Callable[[str], str]) -> None:
    value = mangle(digest(BODY).hex())
    rejects("invalid_claim", check_body_hash, {"request_body_sha256": value}, BODY, HEX)


def _body_whose_digest_has_url_characters() -> bytes:
    for i in range(10_000):
        body = b"body-%d" % i
        encoded = b64url(digest(body))
        if "-" in encoded and "_" in encoded:
            return body
    raise AssertionError("unreachable")


def test_base64url_hash_matches() -> None:
    body = _body_whose_digest_has_url_characters()
    check_body_hash(hashed(body, B64), body, B64)
    rejects("body_hash_mismatch", check_body_hash, hashed(body + b"x", B64), body, B64)


def test_base64url_hash_of_the_wrong_shape_is_invalid() -> None:
    body = _body_whose_digest_has_url_characters()
    d = digest(body)
    for value in [
        base64.urlsafe_b64encode(d).decode(),  # padded
        base64.b64encode(d).decode().rstrip("="),  # standard alphabet
        b64url(d[:31]),  # wrong length
        b64url(d + b"\x00"),
        d.hex(),  # hex where base64url is configured
        _non_canonical(b64url(d)),
    ]:
        rejects("invalid_claim", check_body_hash, {"bh": value}, body, B64)


def test_json_mode_hashes_the_compact_serialisation() -> None:
    rule = replace(HEX, over="json")
    check_body_hash(hashed(COMPACT_BODY), BODY, rule)
    check_body_hash(hashed(COMPACT_BODY), COMPACT_BODY, rule)
    escaped = b'{ "task" : "t1" ,\n "note" : "caf\\u00e9" }'
    check_body_hash(hashed(COMPACT_BODY), escaped, rule)
    # The raw bytes of a spaced body are not what json mode hashes.
    rejects("body_hash_mismatch", check_body_hash, hashed(BODY), BODY, rule)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"a":1', b'{"a":1,"a":2}', b'{"a":NaN}', b"\xff\xfe", b"", b"[1e400]"],
)
def test_json_mode_with_a_body_that_is_not_strict_json_is_mismatch(body: bytes) -> None:
    rule = replace(HEX, over="json")
    rejects("body_hash_mismatch", check_body_hash, hashed(body), body, rule)


@pytest.mark.parametrize("over", ["json", "raw_or_json"])
def test_json_mode_with_a_body_nested_to_the_recursion_limit_is_mismatch(over: str) -> None:
    # Near the interpreter's recursion limit a body can parse and yet not re-serialise: every
    # depth around it must be a plain mismatch, never an exception (a 500, retried forever).
    rule = replace(HEX, over=over)
    claims = hashed(b"something else")
    for depth in range(850, 1050):
        body = b"[" * depth + b"]" * depth
        rejects("body_hash_mismatch", check_body_hash, claims, body, rule)


def test_dumps_compact_of_a_too_deep_value_is_a_value_error() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError):
        dumps_compact(value)


def test_raw_or_json_accepts_either_hash() -> None:
    rule = replace(HEX, over="raw_or_json")
    check_body_hash(hashed(BODY), BODY, rule)
    check_body_hash(hashed(COMPACT_BODY), BODY, rule)
    rejects("body_hash_mismatch", check_body_hash, hashed(b"{}"), BODY, rule)
    # Not JSON: only the raw hash can match, and it does.
    check_body_hash(hashed(b"plain text"), b"plain text", rule)
    rejects("body_hash_mismatch", check_body_hash, hashed(b"other"), b"plain text", rule)


def test_raw_mode_does_not_accept_the_compact_hash() -> None:
    rejects("body_hash_mismatch", check_body_hash, hashed(COMPACT_BODY), BODY, HEX)


# --- replay key and ttl ------------------------------------------------------------------------


def parsed(claims: dict[str, Any], header: Any = ...) -> ParsedToken:
    return parse_token(compact(header=header, claims=claims))


def test_jti_mode_keys_on_issuer_and_jti_only() -> None:
    a = parsed({"jti": "same", "iat": 1})
    b = parsed({"jti": "same", "iat": 2, "sub": "x"}, header={"alg": "ES256", "kid": "k"})
    c = parsed({"jti": "other", "iat": 1})
    assert replay_key(ISSUER, a) == replay_key(ISSUER, b)
    assert replay_key(ISSUER, a) != replay_key(ISSUER, c)
    # The namespace is the sender's iss: another entry for the same sender shares it; another
    # sender, or an entry with no iss (namespaced by its name), does not.
    assert replay_key(ISSUER, a) == replay_key(replace(ISSUER, name="other"), a)
    assert replay_key(ISSUER, a) != replay_key(replace(ISSUER, issuer="https://other.test"), a)
    no_iss = replace(ISSUER, issuer=None)
    assert replay_key(no_iss, a) != replay_key(replace(no_iss, name="other"), a)


def test_jti_mode_without_jti_is_missing_claim() -> None:
    rejects("missing_claim", replay_key, ISSUER, parsed({"iat": 1}))


def test_token_mode_keys_on_the_signed_header_and_payload() -> None:
    mode = replace(ISSUER, replay_key="token")
    a = parse_token(compact(claims={"iat": 1}, signature=b"one"))
    b = parse_token(compact(claims={"iat": 1}, signature=b"two"))
    c = parse_token(compact(claims={"iat": 2}, signature=b"one"))
    assert replay_key(mode, a) == replay_key(mode, b)
    assert replay_key(mode, a) != replay_key(mode, c)
    assert replay_key(mode, a) == replay_key(replace(mode, name="other"), a)  # same iss
    assert replay_key(mode, a) != replay_key(replace(mode, issuer="https://other.test"), a)
    both = parse_token(compact(claims={"iat": 1, "jti": "j"}))
    assert replay_key(mode, both) != replay_key(ISSUER, both)


@cache
def es256_key() -> SigningKey:
    return JwksServer().add_key("EC", kid="ec1")


def malleate(token: str) -> str:
    """The other valid ES256 signature of the same message: (r, n - s)."""
    h, p, s = token.split(".")
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    r, sv = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    flipped = r.to_bytes(32, "big") + (P256_ORDER - sv).to_bytes(32, "big")
    return f"{h}.{p}.{b64url(flipped)}"


def test_ecdsa_malleated_signature_has_the_same_token_mode_key() -> None:
    key = es256_key()
    token = sign(key, {"iat": int(NOW), "exp": int(NOW) + 60})
    twin = malleate(token)
    assert twin != token
    keyset, dropped = parse_jwks(json.dumps({"keys": [key.published]}).encode(), ("ES256",), 10)
    assert dropped == []
    verifier = keyset.by_kid["ec1"]
    a, b = parse_token(token), parse_token(twin)
    # Both signatures are valid: this is the malleability the key must be immune to.
    assert verifier.verify(a.signing_input, a.signature)
    assert verifier.verify(b.signing_input, b.signature)
    mode = replace(ISSUER, replay_key="token")
    assert replay_key(mode, a) == replay_key(mode, b)
    # ...whereas a key over the whole token string would have told them apart.
    assert hashlib.sha256(token.encode()).digest() != hashlib.sha256(twin.encode()).digest()


def test_replay_ttl_is_the_rest_of_the_validity_plus_skew() -> None:
    # exp and iat + max age end together: 300 s left + 30 s skew.
    assert replay_ttl({"iat": NOW, "exp": NOW + 300}, ISSUER, NOW) == 330
    # The earlier of exp and iat + max age counts...
    assert replay_ttl({"iat": NOW + 20, "exp": NOW + 600}, ISSUER, NOW) == 350
    assert replay_ttl({"iat": NOW, "exp": NOW + 310}, ISSUER, NOW) == 330
    # ...but never less than max_token_age_seconds.
    assert replay_ttl({"iat": NOW, "exp": NOW + 100}, ISSUER, NOW) == 300
    assert replay_ttl({"iat": NOW - 200, "exp": NOW + 1000}, ISSUER, NOW) == 300
    assert replay_ttl({"iat": NOW}, ISSUER, NOW) == 330
    assert replay_ttl({"exp": NOW + 3000}, ISSUER, NOW) == 3030
    assert replay_ttl({}, ISSUER, NOW) == 300
    longer = replace(ISSUER, max_token_age_seconds=1000, clock_skew_seconds=5)
    assert replay_ttl({"iat": NOW, "exp": NOW + 2000}, longer, NOW) == 1005


def test_replay_ttl_covers_every_moment_the_token_is_still_accepted() -> None:
    claims = {"iat": NOW, "exp": NOW + 300, "jti": "j"}
    ttl = replay_ttl(claims, ISSUER, NOW)
    check_claims(claims, ISSUER, NOW + ttl)  # the last accepted instant is still covered
    rejects("expired", check_claims, claims, ISSUER, NOW + ttl + 0.001)
