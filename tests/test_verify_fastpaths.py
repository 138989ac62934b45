"""The hot-path forms of the token checks decide exactly what the plain forms decided.

extract_bearer, the token_from header checks, parse_token, b64url_decode and loads_strict are
written for speed (a scan instead of a regex, a strict C decoder instead of a re-encoding): each
is compared here with the plain, obviously correct rule it replaces, written out in the test, on
every character that matters and on the edge cases of each rule. The same reason code and the
same detail: the detail is the sender's answer and the access line's ``jwksgate.detail``.
"""

from __future__ import annotations

import base64
import json
import re
import string
import sys
from typing import Any

import pytest

from gateway import token_from, verify
from gateway.config import IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import loads_strict

URLSAFE = string.ascii_letters + string.digits + "-_"
# Every whitespace character str.isspace() knows (the rule: no whitespace in a token).
SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
# A sample of other characters: ASCII, Latin-1, other planes, surrogates, noncharacters.
OTHERS = [
    chr(c)
    for c in [*range(0x80), *range(0x80, 0x3000, 7), 0xD800, 0xDFFF, 0xFEFF, 0xFFFF, 0x10FFFF]
    if not chr(c).isspace()
]


def outcome(fn: Any, *args: Any) -> tuple[str, str] | Any:
    """``(reason, detail)`` of the Rejection ``fn`` raises, or what it returns."""
    try:
        return fn(*args)
    except Rejection as r:
        return (r.reason, r.detail)


def test_every_whitespace_character_is_found_and_nothing_else() -> None:
    assert len(SPACES) > 20  # \t..\r, \x1c..\x1f, space, NEL, NBSP, the U+2000 block ...
    for c in SPACES:
        # Spaces around a token are trimmed; any other whitespace at its end is refused.
        for token in (f"a{c}b", f"{c}ab", *([f"ab{c}"] if c != " " else [])):
            got = outcome(verify.extract_bearer, [f"Bearer x{token}"])
            assert got == ("malformed_token", "the Bearer token contains whitespace"), repr(c)
            got = outcome(token_from.from_header, [f"Token x{token}"], "X-Hook", "Token")
            assert got == ("malformed_token", "the token in X-Hook contains whitespace"), repr(c)
            got = outcome(token_from.from_header, [f"x{token}"], "X-Hook", None)
            assert got == ("malformed_token", "the token in X-Hook contains whitespace"), repr(c)
    for c in OTHERS:
        assert verify.extract_bearer([f"Bearer a{c}b"]) == f"a{c}b", repr(c)
        assert token_from.from_header([f"a{c}b"], "X-Hook", None) == f"a{c}b", repr(c)


def test_only_spaces_around_a_bearer_token_are_trimmed() -> None:
    assert verify.extract_bearer(["Bearer   a.b.c   "]) == "a.b.c"
    assert outcome(verify.extract_bearer, ["Bearer  a.b.c\t"]) == (
        "malformed_token",
        "the Bearer token contains whitespace",
    )


_PLAIN_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_NOT_COMPACT = ("malformed_token", "the token is not a compact JWS (three base64url segments)")
_NOT_STRICT = ("malformed_token", "a token segment is not strict base64url JSON")


def _h(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


H, P = _h({"alg": "RS256"}), _h({"iss": "x"})


@pytest.mark.parametrize(
    "token",
    [
        f"{H}.{P}.",
        f"{H}.{P}.c2ln",
        f"{H}.{P}",
        f"{H}.{P}.c2ln.",
        f"{H}.{P}.c2ln.x",
        f".{P}.c2ln",
        f"{H}..c2ln",
        "..",
        ".",
        "",
        f"{H}.{P}.c2l=",
        f"{H}.{P}.c2l+",
        f"{H}.{P}.c2l/",
        f"{H}.{P}.c2l%",
        f"{H}.{P}.c2lé",
        f"{H}é.{P}.c2ln",
        f"{H}.{P}.c2l\x00",
        f"{H}.{P}.c2l\udcff",
        f"{H}.{P}.\uff432ln",  # a fullwidth letter: a Unicode letter, not base64url
        f"{H}.{P}.c2l\u0663",  # an Arabic-Indic digit: a Unicode digit, not base64url
    ],
)
def test_the_compact_shape_is_the_three_segment_pattern(token: str) -> None:
    got = outcome(verify.parse_token, token)
    if _PLAIN_COMPACT_RE.fullmatch(token) is None:
        assert got == _NOT_COMPACT
    else:
        assert isinstance(got, verify.ParsedToken) or got == _NOT_STRICT


def test_every_character_outside_base64url_breaks_the_shape() -> None:
    for c in [chr(i) for i in range(0x100)] + ["\u0660", "\uff41", "\U0001d7d8"]:
        token = f"{H}.{P}.c2l{c}"
        expected_shape = c in URLSAFE  # a "." makes four segments
        got = outcome(verify.parse_token, token)
        assert (got != _NOT_COMPACT) == expected_shape, repr(c)


def _plain_b64url_decode(segment: str) -> bytes:
    """The rule: decode, then accept only if re-encoding gives the very same text."""
    if len(segment) % 4 == 1:
        raise ValueError("impossible base64url length")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("non-canonical base64url")
    return raw


def _same_decision(segment: str) -> None:
    try:
        expected: bytes | None = _plain_b64url_decode(segment)
    except (ValueError, UnicodeError):
        expected = None
    try:
        got: bytes | None = verify.b64url_decode(segment)
    except ValueError:
        got = None
    assert got == expected, repr(segment)


def test_b64url_decode_takes_the_same_decisions_as_re_encoding() -> None:
    cases = ["", "A", "AA", "AAA", "AAAA", "QQ", "QR", "QUE", "QUF", "c2ln", "_-8", "-_-_"]
    # Every last character after 1, 2 and 3 full characters: the spare bits rule.
    cases += [prefix + c for prefix in ("Q", "QU", "QUF", "QUFB", "QUFBQ") for c in URLSAFE]
    # Every character in every position of a short segment, whatever it is.
    for c in [chr(i) for i in range(0x100)] + ["\u0660", "\uff41", "\udcff", "\U0001d7d8"]:
        cases += [f"{c}UFB", f"Q{c}FB", f"QU{c}B", f"QUF{c}", f"QUFB{c}A", f"QU{c}", f"Q{c}"]
    cases += ["QUFB====", "QUE=", "QQ==", "QQ=", "Q===", "QUFB\n", " QUFB", "QU FB"]
    for segment in cases:
        _same_decision(segment)


def test_b64url_decode_round_trips_every_length() -> None:
    for n in range(0, 70):
        raw = bytes(range(256))[n : n + n] + bytes([n]) * (n % 3)
        segment = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert verify.b64url_decode(segment) == raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a":1,"a":2}', "duplicate member 'a'"),
        ('{"a":1,"b":{"c":1,"c":1}}', "duplicate member 'c'"),
        ('[{"x":1},{"y":1,"y":1}]', "duplicate member 'y'"),
        ('{"' + "k" * 60 + '":1,"' + "k" * 60 + '":2}', f"duplicate member {'k' * 40!r}"),
        ('{"a":1,"b":2,"a":3,"b":4}', "duplicate member 'a'"),
        ('{"a":NaN}', "NaN is not JSON"),
        ('{"a":-Infinity}', "-Infinity is not JSON"),
    ],
)
def test_strict_json_refusals_say_the_same(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        loads_strict(text.encode())
    assert str(info.value) == message


def test_strict_json_objects_keep_member_order_and_values() -> None:
    doc = '{"z":1,"a":{"y":[1,{"b":null}],"x":true},"m":"é"}'
    assert loads_strict(doc) == json.loads(doc)
    assert list(loads_strict(doc)) == ["z", "a", "m"]
    assert type(loads_strict(doc)) is dict


@pytest.mark.parametrize(
    ("typ", "allowed", "ok"),
    [
        ("JWT", ("JWT",), True),
        ("jwt", ("JWT",), True),
        ("application/JWT", ("jwt",), True),
        ("Application/Jwt", ("JWT",), True),
        ("at+jwt", ("JWT", "AT+JWT"), True),
        ("at+jwt", ("JWT",), False),
        ("JOSE", ("JWT",), False),
        (None, ("JWT",), False),
    ],
)
def test_typ_is_one_of_the_allowed_types_whatever_their_case(
    typ: str | None, allowed: tuple[str, ...], ok: bool
) -> None:
    issuer = IssuerConfig(name="s", jwks_url="https://s.test/j", allowed_types=allowed)
    for _ in range(2):  # the second time from what was kept of the first
        got = outcome(verify.check_header, {"alg": "RS256", "typ": typ, "kid": "k"}, issuer)
        assert (got == ("RS256", "k")) == ok
        if not ok:
            assert got == ("disallowed_type", "the token's typ is not accepted")


@pytest.mark.parametrize(
    ("aud", "ok"),
    [("b", True), (["x", "b"], True), (["x"], False), ([], False), ("B", False), ("", False)],
)
def test_aud_must_name_one_of_the_issuers_audiences(aud: Any, ok: bool) -> None:
    issuer = IssuerConfig(name="s", jwks_url="https://s.test/j", audiences=("a", "b"))
    claims = {"aud": aud, "iat": 1000.0, "exp": 1100.0, "jti": "j"}
    got = outcome(verify.check_claims, claims, issuer, 1000.0)
    assert got == (None if ok else ("bad_audience", "the token is not meant for this audience"))
