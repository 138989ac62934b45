"""JWKS documents, pure: parsing a key set key by key, the verify primitive, and the one decision
of which keys may check a token (``select_keys``). No I/O here: fetching is ``jwks_fetch``,
caching and refetching ``jwks_cache``.

A fetched JWKS is untrusted input. Each key is parsed on its own so that one malformed key cannot
poison the set (jwcrypto's ``JWKSet`` import is all-or-nothing). Only signing keys of these
families survive: RSA >= 2048 bits, EC P-256/P-384/P-521, OKP Ed25519/Ed448. ``oct`` keys are
dropped, since a symmetric key from a public JWKS would let anyone mint tokens. Each key is
pinned to the algorithms it may verify (RFC 8725 3.1): its declared ``alg``, or, when it declares
none (RFC 7517 makes ``alg`` optional), its family's algorithms among the issuer's allowed ones,
never across families. Parsed keys are kept as ``cryptography`` public-key objects: re-parsing a
JWK per request costs more than the verify.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto.jwk import JWK

from gateway.errors import Rejection
from gateway.jsonstrict import loads_strict

__all__ = [
    "MAX_KIDLESS_CANDIDATES",
    "JwksError",
    "KeySet",
    "PublicKey",
    "VerifyKey",
    "cache_lifetime",
    "check_signature",
    "first_verifying",
    "jwks_uri_from_discovery",
    "parse_jwks",
    "parse_key",
    "select_keys",
]

MAX_KIDLESS_CANDIDATES = 8
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# An EC curve has exactly one JWS algorithm (RFC 7518 3.4): the hash size follows the curve.
_EC_ALG_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# R and S are each the curve order's byte length: P-521 is 66 bytes, not 64 (RFC 7518 3.4).
_EC_SIG_BYTES = {"ES256": 32, "ES384": 48, "ES512": 66}
_PUBLIC_MEMBERS = ("kty", "n", "e", "crv", "x", "y")

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


class JwksError(Exception):
    """A JWKS (or discovery) document that cannot be used at all, or could not be fetched:
    a failed fetch, never a dropped key."""


# Checks one signature over the signing input; raises InvalidSignature (or ValueError) if not.
_Check = Callable[[bytes, bytes], None]


def _checker(key: PublicKey, alg: str) -> _Check:
    """The signature check of ``key`` for ``alg``, with its hash, padding and signature
    algorithm objects built once: per call they cost about as much as the rest of the
    verification outside the RSA operation."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        edwards = key

        def check_eddsa(signing_input: bytes, signature: bytes) -> None:
            edwards.verify(signature, signing_input)

        return check_eddsa
    hash_type = _HASHES.get(alg[2:])
    if isinstance(key, rsa.RSAPublicKey) and hash_type is not None:
        rsa_key, digest = key, hash_type()
        pad: padding.AsymmetricPadding
        if alg.startswith("PS"):
            pad = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=digest.digest_size)
        else:
            pad = padding.PKCS1v15()

        def check_rsa(signing_input: bytes, signature: bytes) -> None:
            rsa_key.verify(signature, signing_input, pad, digest)

        return check_rsa
    size = _EC_SIG_BYTES.get(alg)
    if isinstance(key, ec.EllipticCurvePublicKey) and hash_type is not None and size is not None:
        ec_key, ecdsa = key, ec.ECDSA(hash_type())

        def check_ecdsa(signing_input: bytes, signature: bytes) -> None:
            # JWS carries ECDSA signatures as raw R||S of fixed size (RFC 7518 3.4), never DER.
            if len(signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            ec_key.verify(encode_dss_signature(r, s), signing_input, ecdsa)

        return check_ecdsa
    raise ValueError(f"{alg} is not an algorithm of a {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One usable public key and the algorithms it may verify.

    ``alg`` is the algorithm ``verify`` checks with: for a key as parsed, its preferred one;
    ``select_keys`` hands out copies pinned to the token's ``alg``, after checking that the key
    accepts it. So whoever holds a key from ``select_keys`` cannot verify with another algorithm.
    """

    kid: str | None
    algs: frozenset[str]
    public_key: PublicKey
    alg: str = field(default="")
    # The check for ``alg``, made once per key and pinned copy (never per token).
    _check: _Check = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.alg:
            object.__setattr__(self, "alg", min(self.algs))
        if self.alg not in self.algs:
            raise ValueError(f"{self.alg} is not one of the key's algorithms")
        object.__setattr__(self, "_check", _checker(self.public_key, self.alg))

    def accepts(self, alg: str) -> bool:
        return alg in self.algs

    def pinned(self, alg: str) -> VerifyKey:
        """This key, verifying with ``alg`` (one of its algorithms)."""
        return self if alg == self.alg else replace(self, alg=alg)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's ``alg`` signature over ``signing_input``."""
        try:
            self._check(signing_input, signature)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class KeySet:
    by_kid: Mapping[str, VerifyKey]
    all_keys: tuple[VerifyKey, ...]

    def kids(self) -> frozenset[str]:
        return frozenset(self.by_kid)

    def for_alg(self, alg: str) -> list[VerifyKey]:
        """Keys to try for a token without kid: those accepting its alg, pinned to it, at most
        ``MAX_KIDLESS_CANDIDATES`` (each costs a signature check per forged token)."""
        keys = [k.pinned(alg) for k in self.all_keys if k.accepts(alg)]
        return keys[:MAX_KIDLESS_CANDIDATES]


def select_keys(keyset: KeySet, alg: str, kid: str | None) -> list[VerifyKey]:
    """The keys that may check a token with header ``alg`` and ``kid``, pinned to ``alg``.

    The whole key-selection decision, for the gateway and ``explain`` alike. With a kid: that
    one key, or 401 ``unknown_kid``; 401 ``disallowed_algorithm`` when the key does not accept
    ``alg`` (an EdDSA key never checks an ES512 token, an RSA key pinned to RS256 never a PS256
    one). Without: the keys accepting ``alg``, at most ``MAX_KIDLESS_CANDIDATES`` (maybe none).
    The header only ever names a key of the issuer's set: never a key type or a key source.
    """
    if kid is None:
        return keyset.for_alg(alg)
    key = keyset.by_kid.get(kid)
    if key is None:
        raise Rejection("unknown_kid", "the token's kid is not in the issuer's key set")
    if not key.accepts(alg):
        raise Rejection("disallowed_algorithm", "the token's alg is not the algorithm of its key")
    return [key.pinned(alg)]


def first_verifying(
    keys: list[VerifyKey], signing_input: bytes, signature: bytes
) -> tuple[VerifyKey | None, int]:
    """The first of ``keys`` whose signature ``signature`` is, and how many were tried."""
    for tried, key in enumerate(keys, 1):
        if key.verify(signing_input, signature):
            return key, tried
    return None, len(keys)


def check_signature(
    keyset: KeySet, alg: str, kid: str | None, signing_input: bytes, signature: bytes
) -> VerifyKey:
    """The key that verifies the token, selected by ``select_keys``; 401 ``bad_signature``
    when none does. (The gateway's cache adds a rate-limited refetch around the same steps.)"""
    keys = select_keys(keyset, alg, kid)
    key, _ = first_verifying(keys, signing_input, signature)
    if key is None:
        if kid is not None:
            raise Rejection("bad_signature", "the token's signature does not verify")
        raise Rejection("bad_signature", "the token's signature does not verify with any key")
    return key


class _Dropped(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _key_algs(jwk: Mapping[str, Any], key: PublicKey, allowed: tuple[str, ...]) -> frozenset[str]:
    declared = jwk.get("alg")
    if isinstance(key, rsa.RSAPublicKey):
        family = frozenset(a for a in allowed if a in RSA_ALGORITHMS)
        if declared is None:
            if not family:
                raise _Dropped("alg_not_allowed", "RSA key but no RSA algorithm is allowed")
            # No alg on the key: it may verify the issuer's allowed RSA algorithms (RS* and
            # PS* share the key type), never an EC or EdDSA one.
            return family
        if declared not in family:
            raise _Dropped("alg_not_allowed", f"key alg {declared!r} is not allowed")
        return frozenset({declared})
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        family_alg = "EdDSA"
    else:
        curve_alg = _EC_ALG_BY_CURVE.get(key.curve.name)
        if curve_alg is None:
            raise _Dropped("unsupported_curve", f"curve {key.curve.name} is not accepted")
        family_alg = curve_alg
    if declared is not None and declared != family_alg:
        raise _Dropped("alg_mismatch", f"key alg {declared!r} does not fit the key type")
    if family_alg not in allowed:
        raise _Dropped("alg_not_allowed", f"{family_alg} is not allowed")
    return frozenset({family_alg})


def parse_key(jwk: Any, allowed: tuple[str, ...]) -> VerifyKey:
    """One JWK member of a set into a ``VerifyKey``, or ``_Dropped`` saying why not."""
    if not isinstance(jwk, dict):
        raise _Dropped("malformed", "key is not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _Dropped("symmetric", "symmetric (oct) keys are never accepted from a JWKS")
    if kty not in ("RSA", "EC", "OKP"):
        raise _Dropped("unsupported_kty", f"kty {str(kty)[:20]!r} is not accepted")
    if kty == "OKP" and jwk.get("crv") not in ("Ed25519", "Ed448"):
        # X25519/X448 are key-agreement keys (RFC 8037 3.2), never signature keys.
        raise _Dropped(
            "unsupported_curve", f"OKP curve {str(jwk.get('crv'))[:20]!r} is not for signing"
        )
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _Dropped("not_for_signing", f"use {str(use)[:20]!r} is not sig")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _Dropped("not_for_signing", "key_ops does not include verify")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
        raise _Dropped("malformed", "kid is not a string of 1-256 characters")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise _Dropped("malformed", "alg is not a string")
    try:
        # Only the public members reach jwcrypto: a key set that leaks `d` stays a public key.
        parsed = JWK(**{k: jwk[k] for k in _PUBLIC_MEMBERS if k in jwk})
        public_key = parsed.get_op_key("verify")
    except Exception as e:  # jwcrypto raises many types for hostile members
        raise _Dropped("malformed", f"{type(e).__name__}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise _Dropped("weak_key", f"RSA key of {public_key.key_size} bits (< 2048)")
    elif not isinstance(
        public_key,
        ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey,
    ):
        raise _Dropped("unsupported_kty", "not an RSA, EC or Edwards-curve public key")
    return VerifyKey(kid=kid, algs=_key_algs(jwk, public_key, allowed), public_key=public_key)


def parse_jwks(
    document: bytes, allowed: tuple[str, ...], max_keys: int
) -> tuple[KeySet, list[tuple[str, str]]]:
    """Parse a JWKS document; return the usable keys and ``(reason, detail)`` per dropped key.

    Raises ``JwksError`` when the document as a whole is unusable.
    """
    try:
        data = loads_strict(document)
    except ValueError as e:
        raise JwksError(f"not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError('not a JSON object with a "keys" list')
    raw_keys: list[Any] = data["keys"]
    if len(raw_keys) > max_keys:
        raise JwksError(f"{len(raw_keys)} keys, more than the limit of {max_keys}")
    dropped: list[tuple[str, str]] = []
    keys: list[VerifyKey] = []
    for i, jwk in enumerate(raw_keys):
        try:
            keys.append(parse_key(jwk, allowed))
        except _Dropped as d:
            dropped.append((d.reason, f"keys[{i}]: {d}"))
    counts: dict[str, int] = {}
    for k in keys:
        if k.kid is not None:
            counts[k.kid] = counts.get(k.kid, 0) + 1
    ambiguous = {kid for kid, n in counts.items() if n > 1}
    for kid in sorted(ambiguous):
        # Two keys under one kid: trying both would double the work per forged token and
        # hides a publishing mistake. Neither is used.
        dropped.append(("duplicate_kid", f"kid {kid[:64]!r} appears {counts[kid]} times"))
    keys = [k for k in keys if k.kid not in ambiguous]
    by_kid = {k.kid: k for k in keys if k.kid is not None}
    return KeySet(by_kid=by_kid, all_keys=tuple(keys)), dropped


_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


def cache_lifetime(cache_control: str | None, ttl: float, floor: float) -> float:
    """The refresh period: ``ttl``, shortened by ``Cache-Control: max-age``, floored."""
    if not cache_control:
        return ttl
    if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
        return max(floor, 1.0)
    m = _MAX_AGE_RE.search(cache_control)
    if m is None:
        return ttl
    return min(ttl, max(float(m.group(1)), floor, 1.0))


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def jwks_uri_from_discovery(document: bytes, discovery_url: str, issuer: str | None) -> str:
    """The ``jwks_uri`` of an OpenID Provider configuration document (OIDC Discovery 1.0).

    The document's ``issuer`` must equal the configured one exactly (section 4.3): otherwise a
    document served for another issuer, or an attacker's, would choose the keys. ``jwks_uri``
    must be https; plain http only when the discovery URL itself is http on loopback and the
    key set is on loopback too (a local test issuer), so a document never downgrades the fetch.
    Raises ``JwksError``.
    """
    try:
        data = loads_strict(document)
    except ValueError as e:
        raise JwksError(f"discovery document is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise JwksError("discovery document is not a JSON object")
    got = data.get("issuer")
    if not isinstance(got, str) or got != issuer:
        shown = got[:200] if isinstance(got, str) else type(got).__name__
        raise JwksError(
            f"discovery document's issuer {shown!r} is not the configured issuer {issuer!r}"
        )
    uri = data.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise JwksError("discovery document has no jwks_uri")
    parts = urlsplit(uri)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise JwksError(f"discovery jwks_uri {uri[:200]!r} is not an http(s) URL")
    if parts.scheme == "http":
        origin = urlsplit(discovery_url)
        if not (origin.scheme == "http" and _loopback(origin.hostname)):
            raise JwksError(f"discovery jwks_uri {uri[:200]!r} is not https")
        if not _loopback(parts.hostname):
            raise JwksError(f"discovery jwks_uri {uri[:200]!r} is not https")
    return uri
