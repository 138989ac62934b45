"""Property-based tests of the pure token parsers: the bearer credential, the compact JWS and
strict JSON (gateway/verify.py, gateway/jsonstrict.py).

Hostile input must end as the module's own error (a ``Rejection`` with an expected reason, or a
``ValueError`` from strict JSON), never another exception: anything else becomes a 500, and a
sender retries a 5xx for days. A token that is not byte for byte the one that was signed must
never verify. Every test is bounded and derandomized (no example database), so the normal test
command runs the same examples on every machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import re
import string
import sys
from dataclasses import replace
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import strategies as st

# The functions under test, in one block: modules may move (gateway/authn/, jwks.py) and only
# these lines then change.
from gateway.config import BodyHashConfig, IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact, loads_strict
from gateway.jwks import VerifyKey, parse_jwks
from gateway.verify import (
    MAX_TOKEN_LENGTH,
    ParsedToken,
    b64url_decode,
    b64url_encode,
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
from tests.support import JwksServer, SigningKey, b64url, fuzz, sign

FUZZ = fuzz(200, HealthCheck.data_too_large)
ISSUER = IssuerConfig(
    name="sender",
    jwks_url="https://sender.test/jwks.json",
    issuer="https://sender.test",
    algorithms=("RS256", "ES256"),
)
BEARER_REASONS = {"missing_token", "malformed_request", "malformed_token"}
HEADER_REASONS = {"disallowed_algorithm", "malformed_token", "disallowed_type", "missing_kid"}
URLSAFE = string.ascii_letters + string.digits + "-_"


@cache
def rsa_key() -> tuple[SigningKey, VerifyKey]:
    """A real RS256 key, and the gateway's own parse of its published JWK."""
    jwks = JwksServer()
    key = jwks.add_key(kid="fuzz-1")
    keyset, dropped = parse_jwks(jwks.document(), ISSUER.algorithms, 10)
    assert dropped == []
    return key, keyset.by_kid["fuzz-1"]


@cache
def signed_token() -> str:
    key, _ = rsa_key()
    claims = {"iss": "https://sender.test", "iat": 1_800_000_000, "jti": "j-1", "sub": "abc"}
    return sign(key, claims)


def verdict(token: str) -> str:
    """``"verified"`` when the token passes shape, header and signature, else the reason."""
    try:
        parsed = parse_token(token)
    except Rejection as r:
        assert r.reason == "malformed_token", r
        return r.reason
    try:
        _alg, kid = check_header(parsed.header, ISSUER)
    except Rejection as r:
        assert r.reason in HEADER_REASONS, r
        return r.reason
    _, verify_key = rsa_key()
    if kid != verify_key.kid:
        return "unknown_kid"
    if not verify_key.verify(parsed.signing_input, parsed.signature):
        return "bad_signature"
    return "verified"


# --- mutations of a real signed token -------------------------------------------------------


def _non_canonical(segment: str) -> str | None:
    """The same bytes with the spare bits of the last character set, if it has any."""
    if not segment or len(segment) % 4 == 0:
        return None
    try:
        raw = b64url_decode(segment)
    except ValueError:  # an earlier edit already broke this segment
        return None
    for c in URLSAFE:
        candidate = segment[:-1] + c
        if (
            candidate != segment
            and base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4)) == raw
        ):
            return candidate
    return None


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """The real token with 1-3 edits; every result differs from it as a string."""
    token = signed_token()
    for _ in range(draw(st.integers(1, 3))):
        parts = token.split(".")
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "delete",
                    "insert",
                    "truncate",
                    "pad",
                    "dots",
                    "noncanonical",
                    "huge",
                    "swap",
                    "reencode",
                    "case",
                ]
            )
        )
        i = draw(st.integers(0, max(len(token) - 1, 0)))
        if kind == "flip" and token:
            c = draw(st.sampled_from(URLSAFE + ".=+/ \t\x00é"))
            token = token[:i] + c + token[i + 1 :]
        elif kind == "delete":
            token = token[:i] + token[i + draw(st.integers(1, 40)) :]
        elif kind == "insert":
            token = token[:i] + draw(st.text(URLSAFE + ".=", min_size=1, max_size=8)) + token[i:]
        elif kind == "truncate":
            token = token[:i]
        elif kind == "pad":
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] += draw(st.sampled_from(["=", "==", "==="]))
            token = ".".join(parts)
        elif kind == "dots":
            token = draw(
                st.sampled_from(
                    [token + ".", "." + token, token + "." + parts[-1], token.replace(".", "..", 1)]
                )
            )
        elif kind == "noncanonical":
            j = draw(st.integers(0, len(parts) - 1))
            other = _non_canonical(parts[j])
            if other is not None:
                parts[j] = other
                token = ".".join(parts)
        elif kind == "huge":
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] = draw(st.sampled_from(["A", "_", "e30"])) * draw(st.integers(100, 20_000))
            token = ".".join(parts)
        elif kind == "swap" and len(parts) == 3:
            order = draw(st.permutations([0, 1, 2]))
            token = ".".join(parts[k] for k in order)
        elif kind == "reencode" and len(parts) == 3:
            # The same JSON re-serialised (spaces, key order): another signing input.
            j = draw(st.integers(0, 1))
            try:
                value = json.loads(base64.urlsafe_b64decode(parts[j] + "=="))
            except ValueError:
                continue
            parts[j] = b64url(json.dumps(value, indent=draw(st.sampled_from([None, 1]))).encode())
            token = ".".join(parts)
        elif kind == "case" and token:
            token = token[:i] + token[i:].swapcase()
    if token == signed_token():
        token += "A"
    return token


def test_the_unmutated_token_verifies() -> None:
    # The oracle itself: without this, "never verifies" would hold for a broken key too.
    assert verdict(signed_token()) == "verified"


@FUZZ
@given(mutated_tokens())
def test_a_mutated_token_never_verifies(token: str) -> None:
    assert token != signed_token()
    assert verdict(token) != "verified"


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_is_malformed_token_only(text: str) -> None:
    assert verdict(text) in {"malformed_token"} | HEADER_REASONS | {"unknown_kid", "bad_signature"}


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.text(max_size=200),
            st.builds(
                lambda s, t: s + t,
                st.sampled_from(["Bearer ", "bearer", "BEARER  "]),
                st.text(max_size=200),
            ),
            mutated_tokens().map(lambda t: "Bearer " + t),
        ),
        max_size=3,
    )
)
def test_extract_bearer_raises_only_its_reasons(values: list[str]) -> None:
    try:
        token = extract_bearer(values)
    except Rejection as r:
        assert r.reason in BEARER_REASONS, r
        return
    # What it returns is one non-empty token without whitespace, taken from the one header.
    assert len(values) == 1 and token and token in values[0]
    assert not any(c.isspace() for c in token)
    verdict(token)


# --- round trips of well-formed tokens ------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)


@FUZZ
@given(JSON_OBJECTS, JSON_OBJECTS, st.binary(max_size=300))
def test_a_canonical_token_parses_to_exactly_what_was_encoded(
    header: dict[str, Any], claims: dict[str, Any], signature: bytes
) -> None:
    h, p = b64url(dumps_compact(header)), b64url(dumps_compact(claims))
    token = f"{h}.{p}.{b64url(signature)}"
    if len(token) > MAX_TOKEN_LENGTH:
        return
    parsed = parse_token(token)
    assert (parsed.header, parsed.claims, parsed.signature) == (header, claims, signature)
    assert parsed.signing_input == f"{h}.{p}".encode()
    try:
        _alg, _kid = check_header(parsed.header, ISSUER)
    except Rejection as r:
        assert r.reason in HEADER_REASONS


@FUZZ
@given(st.binary(max_size=200))
def test_b64url_accepts_only_the_canonical_encoding(raw: bytes) -> None:
    encoded = b64url_encode(raw)
    assert b64url_decode(encoded) == raw
    other = _non_canonical(encoded)
    if other is not None:
        try:
            b64url_decode(other)
        except ValueError:
            return
        raise AssertionError(f"non-canonical {other!r} decoded")


# --- strict JSON ----------------------------------------------------------------------------


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _writable(value: Any) -> bool:
    """No ±inf (a float literal beyond the double range) and no lone surrogate in any string:
    the two things ``loads_strict`` passes on and UTF-8 JSON cannot write back."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and math.isinf(v):
            return False
        if isinstance(v, str) and _SURROGATE_RE.search(v):
            return False
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
    return True


def _json_error_only(data: bytes | str) -> Any:
    """``loads_strict`` must return or raise ``ValueError``; ``dumps_compact`` must write back
    what it returned (and it reads back equal), or raise ``ValueError`` for a value that is not
    writable. ``None`` when the input was refused."""
    try:
        value = loads_strict(data)
    except ValueError:
        return None
    try:
        compact = dumps_compact(value)
    except ValueError:
        assert not _writable(value), value
        return value
    assert loads_strict(compact) == value
    return value


@FUZZ
@given(JSON_VALUES, st.sampled_from([None, 0, 2]), st.booleans(), st.booleans())
def test_valid_json_round_trips(
    value: Any, indent: int | None, ascii_only: bool, bom: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert loads_strict(text.encode()) == value
    assert loads_strict(text) == value
    assert loads_strict(dumps_compact(value)) == value
    if bom:
        # A byte order mark is not JSON whitespace (RFC 8259 8.1): an error, never a crash.
        assert _json_error_only(b"\xef\xbb\xbf" + text.encode()) is None


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_value_errors_only(data: bytes) -> None:
    _json_error_only(data)


JSON_ALPHABET = st.sampled_from([*list('{}[]":,\\-+.eE0123456789 \tnulltruefalseNaInfy'), "\\u"])


@FUZZ
@given(st.lists(JSON_ALPHABET, max_size=60).map("".join))
def test_json_shaped_noise_is_value_errors_only(text: str) -> None:
    _json_error_only(text.encode())


@FUZZ
@given(
    st.lists(st.tuples(st.text(max_size=4), JSON_SCALARS), min_size=1, max_size=5),
    st.data(),
)
def test_duplicate_members_are_errors_however_spelled(
    members: list[tuple[str, Any]], data: st.DataObject
) -> None:
    name, value = data.draw(st.sampled_from(members))
    # The same name again, escaped differently: still the same member once decoded.
    spelled = json.dumps(name, ensure_ascii=data.draw(st.booleans()))
    escaped = '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in name) + '"'
    again = data.draw(st.sampled_from([spelled, escaped]))
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members)
    text = "{" + body + f",{again}:{json.dumps(value)}" + "}"
    nested = data.draw(st.sampled_from(["{}", '{{"x":[{}]}}', "[1,{}]"])).format(text)
    assert _json_error_only(nested.encode()) is None


@FUZZ
@given(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    st.sampled_from(["{}", '{{"exp":{}}}', "[1,{}]", '{{"a":[{{"b":{}}}]}}']),
)
def test_nan_and_infinity_are_errors_anywhere(constant: str, shape: str) -> None:
    assert _json_error_only(shape.format(constant)) is None


@FUZZ
@given(
    st.sampled_from(["", "-"]),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.sampled_from(["", ".5", ".0"]),
    st.one_of(st.just(""), st.integers(-100_000, 100_000).map(lambda e: f"e{e}")),
)
def test_huge_numbers_are_numbers_or_errors(sign_: str, digits: str, frac: str, exp: str) -> None:
    literal = f"{sign_}{digits}{frac}{exp}"
    value = _json_error_only(f'{{"exp":{literal}}}'.encode())
    if value is None:
        return
    number = value["exp"]
    if isinstance(number, int):
        assert str(number) == literal
    elif math.isinf(number):
        # Beyond the double range: passed on as ±inf, which check_claims refuses as
        # invalid_claim (tests/test_attacks.py pins that reason for "1e400").
        assert abs(Decimal(literal)) > Decimal(sys.float_info.max)
    else:
        assert number == float(literal)


@FUZZ
@given(st.integers(1, 50_000), st.sampled_from(["[", '{"a":', "[{}, "]))
def test_deep_nesting_is_an_error_or_a_value(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", "[{}, ": "]"}[opener]
    text = opener * depth + "0" + closer * depth
    try:
        value = loads_strict(text.encode())
    except ValueError:
        return
    # Parsed: then it is not deeper than the interpreter can also write back, or dumps says so.
    with contextlib.suppress(ValueError):
        dumps_compact(value)


SURROGATE = st.integers(0xD800, 0xDFFF)


@FUZZ
@given(SURROGATE, st.sampled_from(['"{}"', '{{"kid":"{}"}}', '{{"{}":1}}', '["x{}y"]']))
def test_lone_surrogate_escapes_are_kept_and_never_crash(code: int, shape: str) -> None:
    # Kept as sent (a kid is compared as received, tests/test_attacks.py pins unknown_kid for
    # one), and refused with ValueError by dumps_compact, never another exception.
    for text in (shape.format(f"\\u{code:04x}").encode(), shape.format(f"\\u{code:04X}")):
        value = _json_error_only(text)
        assert value is not None and not _writable(value)
    # A str may hold the raw code point itself (bytes decoded as UTF-8 never do).
    _json_error_only(shape.format(chr(code)))


@FUZZ
@given(st.integers(0x10000, 0x10FFFF), st.booleans())
def test_paired_surrogate_escapes_are_the_character(code: int, upper: bool) -> None:
    high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
    escaped = f"\\u{high:04X}\\u{low:04X}" if upper else f"\\u{high:04x}\\u{low:04x}"
    assert loads_strict(f'"{escaped}"'.encode()) == chr(code)


# --- the checks after parsing: any parsed header or claims --------------------------------------

# What loads_strict can hand on: JSON values plus ±inf, lone surrogates and huge integers.
HOSTILE_SCALARS = st.one_of(
    JSON_SCALARS,
    st.sampled_from(
        [
            float("inf"),
            float("-inf"),
            10**400,
            -(10**400),
            2**64,
            "\ud800",
            "",
            "RS256",
            "ES256",
            "none",
            "JWT",
            "https://sender.test",
            "k" * 300,
        ]
    ),
    st.floats(allow_nan=False),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
HEADER_NAMES = ["alg", "kid", "typ", "cty", "crit", "b64", "enc", "zip", "jku", "jwk", "x"]
CLAIM_NAMES = ["iss", "exp", "iat", "nbf", "jti", "aud", "sub", "request_body_sha256", "x"]
NOW = 1_800_000_000.0
CLAIM_REASONS = {
    "missing_claim",
    "invalid_claim",
    "expired",
    "not_yet_valid",
    "token_too_old",
    "lifetime_too_long",
    "bad_audience",
}


def _members(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names), HOSTILE_VALUES, max_size=len(names))


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid claims with a few members replaced: deep enough to reach every check."""
    claims: dict[str, Any] = {
        "iss": "https://sender.test",
        "iat": NOW - draw(st.integers(-100, 400)),
        "exp": NOW + draw(st.integers(-100, 400)),
        "jti": "j-1",
    }
    claims.update(draw(_members(CLAIM_NAMES)))
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), max_size=2)):
        claims.pop(name, None)
    return claims


@FUZZ
@given(_members(HEADER_NAMES), st.sampled_from(["RS256", "ES256", None]))
def test_check_header_raises_only_header_reasons(header: dict[str, Any], alg: str | None) -> None:
    if alg is not None:
        header.setdefault("alg", alg)
    try:
        got_alg, kid = check_header(header, ISSUER)
    except Rejection as r:
        assert r.reason in HEADER_REASONS, r
        return
    assert got_alg == header["alg"] and got_alg in ISSUER.algorithms
    assert kid is None or (isinstance(kid, str) and 0 < len(kid) <= 256)
    assert not {"crit", "b64", "enc", "zip"} & set(header)


@FUZZ
@given(claim_sets(), st.sampled_from(["/hook", "/hook/x", "/other", "/"]))
def test_route_and_claims_raise_only_their_reasons(claims: dict[str, Any], path: str) -> None:
    issuers = (ISSUER, replace(ISSUER, name="other", issuer="https://o.test", path_prefix="/other"))
    try:
        issuer = route(candidates(issuers, path), issuers, claims)
    except Rejection as r:
        assert r.reason in {"unknown_issuer", "bad_issuer"}, r
        return
    try:
        check_claims(claims, issuer, NOW)
    except Rejection as r:
        assert r.reason in CLAIM_REASONS, r
        return
    # Accepted: the replay entry outlives every moment at which the token is still acceptable.
    ttl = replay_ttl(claims, issuer, NOW)
    assert math.isfinite(ttl) and ttl >= issuer.max_token_age_seconds
    ends = [float(claims["exp"])] if "exp" in claims else []
    ends += [float(claims["iat"]) + issuer.max_token_age_seconds] if "iat" in claims else []
    assert NOW + ttl >= min(ends) + issuer.clock_skew_seconds
    token = ParsedToken({}, claims, b"h.p", b"", "p")
    try:
        key = replay_key(issuer, token)
    except Rejection as r:
        assert r.reason == "missing_claim" and "jti" not in claims
        return
    assert key.startswith(b"https://sender.test:") or key.startswith(b"https://o.test:")


@FUZZ
@given(
    claim_sets(),
    st.one_of(st.binary(max_size=64), JSON_VALUES.map(lambda v: json.dumps(v, indent=1).encode())),
    st.sampled_from(["raw", "json", "raw_or_json"]),
    st.sampled_from(["hex", "base64url"]),
    st.data(),
)
def test_body_hash_accepts_only_a_matching_digest(
    claims: dict[str, Any], body: bytes, over: str, encoding: str, data: st.DataObject
) -> None:
    digests = {hashlib.sha256(body).digest()} if over != "json" else set()
    if over != "raw":
        try:
            compact = json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":"))
            digests.add(hashlib.sha256(compact.encode()).digest())
        except ValueError:
            pass
    if data.draw(st.booleans()):
        # Often the right digest of one of the two forms, so that acceptance is reached too.
        digest = data.draw(st.sampled_from(sorted({hashlib.sha256(body).digest(), *digests})))
        claims["request_body_sha256"] = digest.hex() if encoding == "hex" else b64url(digest)
    rule = BodyHashConfig(claim="request_body_sha256", encoding=encoding, over=over)
    try:
        check_body_hash(claims, body, rule)
    except Rejection as r:
        assert r.reason in {"missing_claim", "invalid_claim", "body_hash_mismatch"}, r
        return
    claimed = claims["request_body_sha256"]
    raw = bytes.fromhex(claimed) if encoding == "hex" else b64url_decode(claimed)
    assert raw in digests
