"""Token decisions as pure functions over parsed input; each failure is one ``Rejection``.

The order of the checks is the order of a request: the bearer credential, the compact-JWS shape
(before any library sees the token), routing to one issuer, the header (``alg`` from the issuer's
allow-list, ``typ``, ``crit``, ``b64``, ``kid``), the signature (done by the caller with a key the
gateway looked up itself), the claims, the body binding, and finally the replay key.
``jku``, ``x5u``, ``x5c`` and an embedded ``jwk`` are never read: keys come only from the
issuer's configured JWKS URL (RFC 8725 3.10).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import BodyHashConfig, IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact, loads_strict

__all__ = [
    "MAX_TOKEN_LENGTH",
    "ParsedToken",
    "candidates",
    "check_body_hash",
    "check_claims",
    "check_header",
    "extract_bearer",
    "parse_token",
    "replay_key",
    "replay_ttl",
    "route",
]

MAX_TOKEN_LENGTH = 8192
MAX_KID_LENGTH = 256
MAX_JTI_LENGTH = 256
# The base64url alphabet and the segment separator: what is left after deleting them from a
# compact JWS (as ASCII bytes) must be nothing.
_COMPACT_BYTES = (string.ascii_letters + string.digits + "-_.").encode("ascii")
# base64url to the standard alphabet for binascii's strict decoder; "+", "/" and "=" become a
# byte outside both alphabets, so that the strict decoder refuses them.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")
# The value of each base64url character, to check the spare bits of a segment's last one.
_B64URL_VALUE = {
    c: i
    for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_")
}
_BEARER_RE = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr](?: +(.*))?", re.DOTALL)
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    payload_segment: str


def extract_bearer(authorization: Sequence[str]) -> str:
    """The token of the single ``Authorization: Bearer`` header (RFC 6750 2.1)."""
    if not authorization:
        raise Rejection("missing_token", "no Authorization header")
    if len(authorization) > 1:
        raise Rejection("malformed_request", "more than one Authorization header")
    m = _BEARER_RE.fullmatch(authorization[0])
    if m is None:
        raise Rejection("missing_token", "the Authorization header is not a Bearer token")
    # The scheme is Bearer: whatever follows is a token, well-formed or not (never "missing").
    token = (m.group(1) or "").strip(" ")
    if not token:
        raise Rejection("malformed_token", "the Bearer token is empty")
    if has_whitespace(token):
        raise Rejection("malformed_token", "the Bearer token contains whitespace")
    return token


def has_whitespace(token: str) -> bool:
    """Whether ``token`` contains a character ``str.isspace()`` calls whitespace.

    ``str.split()`` splits at exactly those characters and hands back the string itself when
    there are none: one C scan, about ten times cheaper than the ``\\s`` regex search it
    replaces (the same characters: str patterns' ``\\s`` is ``str.isspace()``)."""
    return token.split() != [token]


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding: the only encoding of the bytes that is accepted.

    Python's decoder ignores spare bits, so "non-canonical" encodings of one token would decode
    alike; a last character with spare bits set is refused (what re-encoding and comparing
    refused, at half the cost).
    """
    spare = len(segment) % 4
    if spare == 1:
        raise ValueError("impossible base64url length")
    # ASCII only (UnicodeEncodeError is a ValueError), then binascii's strict mode: any byte
    # outside the alphabet (whitespace, "=", "+", "/" mapped out of it) is an error. That leaves
    # the spare bits: of the last character's 6 bits, 4 (2 characters past a full group) or 2
    # (3 characters) carry nothing and must be zero, or two texts would decode alike.
    raw = binascii.a2b_base64(
        segment.encode("ascii").translate(_TO_STANDARD) + b"==="[: -spare % 4],
        strict_mode=True,
    )
    if spare and _B64URL_VALUE[segment[-1]] & (0xF if spare == 2 else 0x3):
        raise ValueError("non-canonical base64url")
    return raw


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_token(token: str) -> ParsedToken:
    """Shape-check and decode a compact JWS; nothing is trusted yet."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise Rejection("malformed_token", f"the token is longer than {MAX_TOKEN_LENGTH} bytes")
    # Three base64url segments, the first two non-empty: only the alphabet and "." (deleting
    # them leaves nothing), then exactly two dots. Cheaper than the equivalent regex
    # [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]* over the whole token.
    parts = token.split(".")
    if (
        len(parts) != 3
        or not parts[0]
        or not parts[1]
        or not token.isascii()
        or token.encode("ascii").translate(None, _COMPACT_BYTES)
    ):
        raise Rejection(
            "malformed_token", "the token is not a compact JWS (three base64url segments)"
        )
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = loads_strict(b64url_decode(header_b64))
        claims = loads_strict(b64url_decode(payload_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, binascii.Error):
        raise Rejection("malformed_token", "a token segment is not strict base64url JSON") from None
    if not isinstance(header, dict):
        raise Rejection("malformed_token", "the token header is not a JSON object")
    if not isinstance(claims, dict):
        raise Rejection("malformed_token", "the token payload is not a JSON object")
    return ParsedToken(
        header=header,
        claims=claims,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        payload_segment=payload_b64,
    )


_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# RFC 3986 2.3 unreserved characters but ".": "%2e" segments are refused before routing.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_~")


def _unescape_unreserved(path: str) -> str:
    """Percent-escapes of unreserved characters decoded (RFC 3986 2.3: ``%70`` and ``p`` are
    the same URI, and every backend routes them alike). Without this, ``/hooks/%70ayments``
    would not be under ``/hooks/payments`` for routing while the backend serves it from there."""
    if "%" not in path:
        return path

    def decode(m: re.Match[str]) -> str:
        c = chr(int(m.group(1), 16))
        return c if c in _UNRESERVED else m.group(0)

    return _ESCAPE_RE.sub(decode, path)


def _routing_form(path: str) -> str:
    """The path as backends resolve it for routing: unreserved escapes decoded and each
    segment's ``;params`` dropped (servlet containers serve ``/hooks/payments;x/1`` from
    ``/hooks/payments/1``), so that parameters cannot hide a nested prefix."""
    path = _unescape_unreserved(path)
    if ";" not in path:
        return path
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def _prefix_matches(prefix: str, path: str) -> bool:
    # Segment-wise: "/orders" covers "/orders" and "/orders/x" but not "/ordersx".
    if prefix == "/" or path == prefix:
        return True
    base = prefix.rstrip("/")
    return path.startswith(base + "/") or path == base


# candidates' answers per (issuers, path): a request asks twice (owners, then the JWT
# authenticator), and a sender's few paths ask again and again. Each entry holds the issuers
# object, so its id is never reused under it; past the bound (many paths, or an attacker's
# random ones) they are dropped all at once.
MAX_ROUTES = 1024
_ROUTES: dict[tuple[int, str], tuple[tuple[IssuerConfig, ...], tuple[IssuerConfig, ...]]] = {}


def candidates(issuers: Sequence[IssuerConfig], path: str) -> list[IssuerConfig]:
    """``_candidates``, kept per (issuers, path) for a config's issuers (a tuple: it cannot
    change under its entry); the caller's list is its own."""
    if type(issuers) is not tuple:
        return _candidates(issuers, path)
    key = (id(issuers), path)
    hit = _ROUTES.get(key)
    if hit is not None and hit[0] is issuers:
        return list(hit[1])
    found = _candidates(issuers, path)
    if len(_ROUTES) >= MAX_ROUTES:
        _ROUTES.clear()
    _ROUTES[key] = (issuers, tuple(found))
    return found


def _candidates(issuers: Sequence[IssuerConfig], path: str) -> list[IssuerConfig]:
    """The issuers of the longest ``path_prefix`` that covers ``path``, in config order.

    The longest matching prefix owns its whole subtree: with issuers on ``/hooks`` and
    ``/hooks/payments``, ``/hooks/payments/x`` belongs to the second alone, and a token of the
    first is ``bad_issuer`` there. Otherwise a sender trusted for a parent path could deliver to
    every path nested under it, including those given to another sender. ``;params`` do not
    count (``/hooks/payments;x`` is under ``/hooks/payments``). Issuers that share
    that one prefix (several ``iss`` on one path) remain candidates together.
    """
    path = _routing_form(path)
    matching = [i for i in issuers if _prefix_matches(_routing_form(i.path_prefix), path)]
    if not matching:
        return []
    longest = max(len(i.path_prefix.rstrip("/")) for i in matching)
    return [i for i in matching if len(i.path_prefix.rstrip("/")) == longest]


def route(
    cands: Sequence[IssuerConfig], all_issuers: Sequence[IssuerConfig], claims: Mapping[str, Any]
) -> IssuerConfig:
    """The one issuer a token is checked against: the candidate (``candidates``) whose ``issuer``
    is the token's ``iss``; a token without ``iss`` only where one candidate serves the path."""
    if not cands:
        raise Rejection("unknown_issuer", "no trusted issuer is configured for this path")
    if "iss" not in claims:
        if len(cands) == 1:
            return cands[0]
        raise Rejection(
            "unknown_issuer", "the token has no iss and several issuers serve this path"
        )
    iss = claims["iss"]
    if not isinstance(iss, str):
        raise Rejection("bad_issuer", "the token's iss is not a string")
    for c in cands:
        if c.issuer == iss:
            return c
    if any(i.issuer == iss for i in all_issuers):
        raise Rejection("bad_issuer", "the token's issuer is not accepted on this path")
    raise Rejection("unknown_issuer", "the token's iss is not a trusted issuer")


def check_header(header: Mapping[str, Any], issuer: IssuerConfig) -> tuple[str, str | None]:
    """Return ``(alg, kid)`` when the protected header is acceptable for ``issuer``."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        shown = alg[:20] if isinstance(alg, str) else type(alg).__name__
        raise Rejection("disallowed_algorithm", f"alg {shown!r} is not allowed for this issuer")
    if "crit" in header:
        raise Rejection("malformed_token", "critical header extensions are not supported")
    if "b64" in header:
        raise Rejection("malformed_token", "the b64 header parameter is not allowed in a JWT")
    if "enc" in header or "zip" in header:
        raise Rejection("malformed_token", "encrypted or compressed tokens are not accepted")
    typ = header.get("typ")
    if "typ" in header:  # a null typ is present, and not one of the allowed types
        allowed = _lowered(issuer.allowed_types)
        t = typ.lower() if isinstance(typ, str) else None
        if t is None or (t not in allowed and t.removeprefix("application/") not in allowed):
            raise Rejection("disallowed_type", "the token's typ is not accepted")
    cty = header.get("cty")
    if isinstance(cty, str) and cty.lower() in ("jwt", "application/jwt"):
        raise Rejection("disallowed_type", "nested tokens (cty: JWT) are not accepted")
    kid = header.get("kid")
    if kid is None:
        if issuer.require_kid:
            raise Rejection("missing_kid", "the token header has no kid")
        return alg, None
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise Rejection("malformed_token", "the kid is not a string of 1-256 characters")
    return alg, kid


@functools.lru_cache(maxsize=256)
def _lowered(types: tuple[str, ...]) -> frozenset[str]:
    """An issuer's allowed types, lower-cased: config values, made once (not per token)."""
    return frozenset(t.lower() for t in types)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    # A null is present and of the wrong type: treating it as absent would switch checks off.
    value = claims[name]
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        number = float(value)  # OverflowError for an integer no float can hold
        if not math.isfinite(number):
            raise ValueError
    except (ValueError, OverflowError):
        raise Rejection("invalid_claim", f"{name} is not a NumericDate") from None
    return number


def check_claims(claims: Mapping[str, Any], issuer: IssuerConfig, now: float) -> None:
    """Required claims, types, time window, audience and jti, for a verified payload."""
    for name in issuer.require_claims:
        if name not in claims:
            raise Rejection("missing_claim", f"the token has no {name} claim")
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is None and iat is None:
        # Without either the token would be valid forever and could outlive its replay entry.
        raise Rejection("missing_claim", "the token has neither exp nor iat")
    jti = claims.get("jti")
    if "jti" in claims and (not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH):
        raise Rejection("invalid_claim", "jti is not a string of 1-256 characters")
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise Rejection("invalid_claim", "sub is not a string")
    skew = issuer.clock_skew_seconds
    if exp is not None and now > exp + skew:
        raise Rejection("expired", "the token has expired")
    if nbf is not None and nbf > now + skew:
        raise Rejection("not_yet_valid", "the token is not valid yet (nbf)")
    if iat is not None:
        if iat > now + skew:
            raise Rejection("not_yet_valid", "the token was issued in the future (iat)")
        if now - iat > issuer.max_token_age_seconds + skew:
            raise Rejection("token_too_old", "the token was issued too long ago (iat)")
    if exp is not None:
        lifetime = exp - iat if iat is not None else exp - now - skew
        if lifetime > issuer.max_lifetime_seconds:
            raise Rejection("lifetime_too_long", "the token's lifetime exceeds the maximum")
    _check_audience(claims, issuer)


def _check_audience(claims: Mapping[str, Any], issuer: IssuerConfig) -> None:
    if "aud" not in claims:
        if issuer.audiences:
            raise Rejection("bad_audience", "the token has no aud")
        return
    aud = claims["aud"]
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(a, str) for a in values):
        raise Rejection("invalid_claim", "aud is not a string or a list of strings")
    # RFC 7519 4.1.3: a recipient that cannot identify itself in a present aud must reject.
    if not set(values) & set(issuer.audiences):
        raise Rejection("bad_audience", "the token is not meant for this audience")


def _claimed_digest(claims: Mapping[str, Any], rule: BodyHashConfig) -> bytes:
    if rule.claim not in claims:
        raise Rejection("missing_claim", f"the token has no {rule.claim} claim")
    value = claims[rule.claim]
    if not isinstance(value, str):
        raise Rejection("invalid_claim", f"{rule.claim} is not a string")
    try:
        if rule.encoding == "hex":
            if not _HEX64_RE.fullmatch(value):
                raise ValueError
            return bytes.fromhex(value)
        digest = b64url_decode(value)
        if len(digest) != 32:
            raise ValueError
        return digest
    except (ValueError, binascii.Error):
        raise Rejection(
            "invalid_claim", f"{rule.claim} is not a SHA-256 digest in {rule.encoding}"
        ) from None


def _compact_json(body: bytes) -> bytes | None:
    try:
        return dumps_compact(loads_strict(body))
    except ValueError:
        return None


def check_body_hash(claims: Mapping[str, Any], body: bytes, rule: BodyHashConfig) -> None:
    """The claimed SHA-256 must equal the hash of the body received (or of its compact JSON)."""
    claimed = _claimed_digest(claims, rule)
    if rule.over in ("raw", "raw_or_json") and hmac.compare_digest(
        claimed, hashlib.sha256(body).digest()
    ):
        return
    if rule.over in ("json", "raw_or_json"):
        compact = _compact_json(body)
        if compact is not None and hmac.compare_digest(claimed, hashlib.sha256(compact).digest()):
            return
    raise Rejection("body_hash_mismatch", "the body does not match the token's body hash")


def replay_namespace(issuer: IssuerConfig) -> bytes:
    """Replay keys live per sender: its ``iss`` when configured (two issuer entries for one
    sender, say on two paths, share them, and renaming an entry keeps them), else its name."""
    return (issuer.issuer or issuer.name).encode()


def replay_key(issuer: IssuerConfig, token: ParsedToken) -> bytes:
    """The replay-store key: ``<namespace>:`` + SHA-256 of the jti (RFC 7519 4.1.7: unique per
    issuer), or of the signed header.payload (``replay_key: token``).

    Never the whole token: an ECDSA signature can be re-written (r, n-s) and still verify.
    """
    ns = replay_namespace(issuer)
    if issuer.replay_key == "jti":
        jti = token.claims.get("jti")
        if not isinstance(jti, str):
            raise Rejection("missing_claim", "the token has no jti claim")
        material = b"jti\x00" + ns + b"\x00" + jti.encode("utf-8", "surrogatepass")
    else:
        material = b"tok\x00" + ns + b"\x00" + token.signing_input
    return ns + b":" + hashlib.sha256(material).digest()


def replay_ttl(claims: Mapping[str, Any], issuer: IssuerConfig, now: float) -> float:
    """How long the replay key must be kept: the rest of the token's validity plus the skew."""
    ends = []
    exp = claims.get("exp")
    iat = claims.get("iat")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        ends.append(float(exp))
    if isinstance(iat, int | float) and not isinstance(iat, bool):
        ends.append(float(iat) + issuer.max_token_age_seconds)
    # The token stops being acceptable at the earlier of exp and iat + max age (plus skew).
    remaining = min(ends, default=now) - now + issuer.clock_skew_seconds
    return max(remaining, issuer.max_token_age_seconds)
