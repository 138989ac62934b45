"""Unit tests of JWKS parsing and key selection (gateway/jwks.py): a fetched key set is untrusted
input.

Each key is judged on its own (one bad key never poisons the set); only RSA >= 2048, EC
P-256/P-384/P-521 and OKP Ed25519/Ed448 signing keys survive, each pinned to its declared alg or,
without one, to its family (RSA: the allowed RS*/PS*; EC: the curve's alg; OKP: EdDSA);
``select_keys`` is the one decision of which keys may check a token; and ``VerifyKey.verify``
accepts exactly the signatures jwcrypto produces for that algorithm (RFC 7518, RFC 8037).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwcrypto import jwk

from gateway.errors import Rejection
from gateway.jwks import (
    MAX_KIDLESS_CANDIDATES,
    JwksError,
    KeySet,
    VerifyKey,
    cache_lifetime,
    check_signature,
    parse_jwks,
    parse_key,
    select_keys,
)
from gateway.verify import parse_token
from tests.support import SigningKey, public_jwk, sign

ALLOWED = ("RS256", "PS256", "ES256", "ES384")
EVERY = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@cache
def rsa_key(name: str, size: int = 2048) -> jwk.JWK:
    """One key per name for the whole module: RSA generation is the slow part of these tests."""
    del name
    return jwk.JWK.generate(kty="RSA", size=size)


@cache
def ec_key(crv: str, name: str = "a") -> jwk.JWK:
    del name
    return jwk.JWK.generate(kty="EC", crv=crv)


@cache
def okp_key(crv: str = "Ed25519", name: str = "a") -> jwk.JWK:
    del name
    return jwk.JWK.generate(kty="OKP", crv=crv)


def doc(*keys: Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def parse(*keys: Any, allowed: tuple[str, ...] = ALLOWED, max_keys: int = 100) -> KeySet:
    keyset, _ = parse_jwks(doc(*keys), allowed, max_keys)
    return keyset


def dropped_reasons(*keys: Any, allowed: tuple[str, ...] = ALLOWED) -> list[str]:
    _, dropped = parse_jwks(doc(*keys), allowed, 100)
    return [reason for reason, _ in dropped]


def good_rsa(kid: str = "rsa", **extra: Any) -> dict[str, Any]:
    return public_jwk(rsa_key("a"), kid, **extra)


# --- which keys survive ------------------------------------------------------------------------


def test_a_good_rsa_key_is_kept_and_pinned() -> None:
    keyset, dropped = parse_jwks(doc(good_rsa("r1", alg="RS256", use="sig")), ALLOWED, 100)
    assert dropped == []
    key = keyset.by_kid["r1"]
    assert key.alg == "RS256"
    assert key.algs == {"RS256"}
    assert isinstance(key.public_key, rsa.RSAPublicKey)
    assert keyset.all_keys == (key,)


def test_rsa_1024_is_dropped_as_weak() -> None:
    weak = public_jwk(rsa_key("weak", 1024), "weak")
    assert dropped_reasons(weak, good_rsa()) == ["weak_key"]
    assert set(parse(weak, good_rsa()).by_kid) == {"rsa"}


def test_oct_key_is_dropped_as_symmetric() -> None:
    oct_key = {
        "kty": "oct",
        "kid": "hmac",
        "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ",
        "alg": "HS256",
    }
    assert dropped_reasons(oct_key, good_rsa()) == ["symmetric"]
    assert "hmac" not in parse(oct_key, good_rsa(), allowed=("RS256", "HS256")).by_kid


@pytest.mark.parametrize(
    "extra",
    [{"use": "enc"}, {"use": "SIG"}, {"use": 1}, {"key_ops": ["encrypt"]}, {"key_ops": "verify"}],
)
def test_key_not_for_signature_verification_is_dropped(extra: dict[str, Any]) -> None:
    assert dropped_reasons(good_rsa("enc", **extra)) == ["not_for_signing"]


@pytest.mark.parametrize(
    "extra", [{"use": "sig"}, {"key_ops": ["verify"]}, {"key_ops": ["sign", "verify"]}]
)
def test_key_for_signature_verification_is_kept(extra: dict[str, Any]) -> None:
    assert set(parse(good_rsa("s", **extra)).by_kid) == {"s"}


@pytest.mark.parametrize(
    "key",
    [
        {"kty": "okp", "kid": "lower-okp"},
        {"kty": "rsa", "kid": "lower"},
        {"kid": "no-kty"},
        {"kty": 1, "kid": "int"},
        {"kty": ["RSA"], "kid": "list"},
    ],
)
def test_unknown_kty_is_dropped(key: dict[str, Any]) -> None:
    assert dropped_reasons(key, good_rsa()) == ["unsupported_kty"]


def test_rsa_key_missing_e_is_dropped_and_the_others_survive() -> None:
    no_e = good_rsa("no-e")
    del no_e["e"]
    other = public_jwk(rsa_key("b"), "other")
    keyset, dropped = parse_jwks(doc(good_rsa("first"), no_e, other), ALLOWED, 100)
    assert set(keyset.by_kid) == {"first", "other"}
    assert [(reason, detail.split(":")[0]) for reason, detail in dropped] == [
        ("malformed", "keys[1]")
    ]


@pytest.mark.parametrize(
    "key",
    [
        "not an object",
        ["RSA"],
        None,
        {"kty": "RSA", "kid": "n-int", "n": 5, "e": "AQAB"},
        {"kty": "RSA", "kid": "n-junk", "n": "!!!", "e": "AQAB"},
        {"kty": "EC", "kid": "ec-no-y", "crv": "P-256", "x": "AAAA"},
        {"kty": "EC", "kid": "ec-bad-crv", "crv": "P-999", "x": "AAAA", "y": "AAAA"},
    ],
)
def test_hostile_members_drop_the_key_without_raising(key: Any) -> None:
    keyset, dropped = parse_jwks(doc(key, good_rsa()), ALLOWED, 100)
    assert [reason for reason, _ in dropped] == ["malformed"]
    assert set(keyset.by_kid) == {"rsa"}


@pytest.mark.parametrize("kid", [5, "", "k" * 257, ["k"]])
def test_key_with_a_bad_kid_is_dropped(kid: Any) -> None:
    key = good_rsa("x")
    key["kid"] = kid
    assert dropped_reasons(key) == ["malformed"]


def test_key_with_a_256_character_kid_is_kept() -> None:
    assert set(parse(good_rsa("k" * 256)).by_kid) == {"k" * 256}


def test_duplicate_kid_drops_both_keys() -> None:
    a = public_jwk(rsa_key("a"), "same")
    b = public_jwk(rsa_key("b"), "same")
    c = public_jwk(rsa_key("c"), "c")
    keyset, dropped = parse_jwks(doc(a, c, b), ALLOWED, 100)
    assert set(keyset.by_kid) == {"c"}
    assert [k.kid for k in keyset.all_keys] == ["c"]
    assert [reason for reason, _ in dropped] == ["duplicate_kid"]


def test_keys_without_kid_are_kept_for_kidless_senders_only() -> None:
    keyset = parse(public_jwk(rsa_key("a"), None), public_jwk(rsa_key("b"), None))
    assert keyset.by_kid == {}
    assert len(keyset.all_keys) == 2
    assert {k.kid for k in keyset.all_keys} == {None}


@pytest.mark.parametrize(("crv", "alg"), [("P-256", "ES256"), ("P-384", "ES384")])
def test_ec_keys_are_pinned_to_their_curve(crv: str, alg: str) -> None:
    key = parse(public_jwk(ec_key(crv), "ec")).by_kid["ec"]
    assert key.alg == alg
    assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
    declared = parse(public_jwk(ec_key(crv), "ec", alg=alg)).by_kid["ec"]
    assert declared.alg == alg


def test_p521_is_pinned_to_es512_and_other_curves_are_dropped() -> None:
    key = parse(public_jwk(ec_key("P-521"), "p521"), allowed=("ES512",)).by_kid["p521"]
    assert key.algs == {"ES512"}
    assert dropped_reasons(public_jwk(ec_key("P-521"), "p521")) == ["alg_not_allowed"]
    assert dropped_reasons(public_jwk(ec_key("secp256k1"), "k1"), allowed=EVERY) == [
        "unsupported_curve"
    ]


@pytest.mark.parametrize("crv", ["Ed25519", "Ed448"])
def test_okp_signing_keys_are_pinned_to_eddsa(crv: str) -> None:
    for extra in ({}, {"alg": "EdDSA"}, {"use": "sig"}):
        key = parse(public_jwk(okp_key(crv), "ed", **extra), allowed=EVERY).by_kid["ed"]
        assert key.algs == {"EdDSA"}
    assert dropped_reasons(public_jwk(okp_key(crv), "ed")) == ["alg_not_allowed"]


@pytest.mark.parametrize("declared", ["ES512", "ES256", "RS256", "Ed25519", "HS256"])
def test_okp_key_declaring_another_alg_is_dropped(declared: str) -> None:
    key = public_jwk(okp_key(), "ed", alg=declared)
    assert dropped_reasons(key, allowed=EVERY) == ["alg_mismatch"]


@pytest.mark.parametrize("crv", ["X25519", "X448"])
def test_okp_key_agreement_keys_are_dropped(crv: str) -> None:
    key = public_jwk(jwk.JWK.generate(kty="OKP", crv=crv), "x")
    assert dropped_reasons(key, good_rsa(), allowed=EVERY) == ["unsupported_curve"]


def test_p521_key_declaring_eddsa_and_ed25519_declaring_es512_are_dropped() -> None:
    p521 = public_jwk(ec_key("P-521"), "p521", alg="EdDSA")
    ed = public_jwk(okp_key(), "ed", alg="ES512")
    assert dropped_reasons(p521, ed, allowed=EVERY) == ["alg_mismatch", "alg_mismatch"]


def test_ec_key_declaring_another_curve_alg_is_dropped() -> None:
    assert dropped_reasons(public_jwk(ec_key("P-256"), "ec", alg="ES384")) == ["alg_mismatch"]
    assert dropped_reasons(public_jwk(ec_key("P-256"), "ec", alg="RS256")) == ["alg_mismatch"]


def test_ec_key_whose_curve_alg_is_not_allowed_is_dropped() -> None:
    p384 = public_jwk(ec_key("P-384"), "ec")
    assert dropped_reasons(p384, allowed=("ES256",)) == ["alg_not_allowed"]
    assert dropped_reasons(public_jwk(ec_key("P-256"), "ec"), allowed=("RS256",)) == [
        "alg_not_allowed"
    ]


@pytest.mark.parametrize(
    ("declared", "allowed"), [("RS256", ALLOWED), ("PS256", ALLOWED), ("PS256", ("PS256",))]
)
def test_rsa_key_alg_is_kept_when_allowed(declared: str, allowed: tuple[str, ...]) -> None:
    assert parse(good_rsa("k", alg=declared), allowed=allowed).by_kid["k"].alg == declared


@pytest.mark.parametrize(
    ("declared", "allowed"),
    [
        ("PS256", ("RS256",)),
        ("RS256", ("PS256", "ES256")),
        ("RS512", ALLOWED),
        ("HS256", ALLOWED),
        ("none", ALLOWED),
        ("ES256", ALLOWED),
    ],
)
def test_rsa_key_alg_outside_the_allow_list_is_dropped(
    declared: str, allowed: tuple[str, ...]
) -> None:
    assert dropped_reasons(good_rsa("k", alg=declared), allowed=allowed) == ["alg_not_allowed"]


def test_key_alg_that_is_not_a_string_is_dropped() -> None:
    assert dropped_reasons(good_rsa("k", alg=["RS256"])) == ["malformed"]


@pytest.mark.parametrize(
    ("allowed", "pinned"),
    [
        (("RS256", "PS256"), {"RS256", "PS256"}),
        (("PS256", "RS256"), {"RS256", "PS256"}),
        (("ES256", "PS384", "RS256", "EdDSA"), {"PS384", "RS256"}),
        (("ES384", "RS512"), {"RS512"}),
        (EVERY, {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ],
)
def test_rsa_key_without_alg_is_pinned_to_the_allowed_rsa_family(
    allowed: tuple[str, ...], pinned: set[str]
) -> None:
    assert parse(good_rsa("k"), allowed=allowed).by_kid["k"].algs == pinned


def test_rsa_key_without_alg_is_dropped_when_no_rsa_alg_is_allowed() -> None:
    assert dropped_reasons(good_rsa("k"), allowed=("ES256", "ES384")) == ["alg_not_allowed"]


def test_private_members_are_ignored() -> None:
    for private in (rsa_key("a"), ec_key("P-256")):
        leaked = json.loads(private.export_private())
        assert "d" in leaked
        leaked["kid"] = "leaked"
        key = parse(leaked).by_kid["leaked"]
        assert isinstance(key.public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        assert not isinstance(key.public_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)


def test_private_members_do_not_change_the_public_key() -> None:
    leaked = json.loads(rsa_key("a").export_private())
    leaked["kid"] = "k"
    signer = SigningKey(key=rsa_key("a"), kid="k", alg="RS256", published=leaked)
    token = parse_token(sign(signer, {"iat": 1}))
    key = select_keys(parse(leaked), "RS256", "k")[0]
    assert key.verify(token.signing_input, token.signature)


# --- the document as a whole -------------------------------------------------------------------


def test_too_many_keys_is_a_jwks_error() -> None:
    keys = [good_rsa(f"k{i}") for i in range(3)]
    with pytest.raises(JwksError):
        parse_jwks(doc(*keys), ALLOWED, 2)
    assert len(parse(*keys[:2], max_keys=2).all_keys) == 2


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe",
        b'{"keys": [] ',
        b"[]",
        b"{}",
        b'{"keys": {}}',
        b'{"keys": "none"}',
        b'{"keys": null}',
        b'{"jwks": []}',
        b'{"keys": [], "keys": []}',
        b'{"keys": [NaN]}',
    ],
)
def test_a_document_without_a_keys_list_is_a_jwks_error(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document, ALLOWED, 100)


def test_an_empty_keys_list_parses_to_no_keys() -> None:
    keyset, dropped = parse_jwks(b'{"keys": []}', ALLOWED, 100)
    assert keyset.all_keys == ()
    assert dropped == []


def test_parse_key_is_the_per_key_step() -> None:
    assert parse_key(good_rsa("k"), ("RS256",)).kid == "k"


# --- VerifyKey.verify ----------------------------------------------------------------------------


def signer(key: jwk.JWK, alg: str, kid: str = "k") -> SigningKey:
    return SigningKey(key=key, kid=kid, alg=alg, published=public_jwk(key, kid, alg=alg))


def private_key(key_name: str, name: str = "a") -> jwk.JWK:
    if key_name == "rsa":
        return rsa_key(name)
    if key_name.startswith("Ed"):
        return okp_key(key_name, name)
    return ec_key(key_name, name)


@pytest.mark.parametrize(
    ("key_name", "alg"),
    [
        ("rsa", "RS256"),
        ("rsa", "RS512"),
        ("rsa", "PS256"),
        ("rsa", "PS512"),
        ("P-256", "ES256"),
        ("P-384", "ES384"),
        ("P-521", "ES512"),
        ("Ed25519", "EdDSA"),
        ("Ed448", "EdDSA"),
    ],
)
def test_jwcrypto_signatures_verify_and_tampering_does_not(key_name: str, alg: str) -> None:
    private = private_key(key_name)
    s = signer(private, alg)
    verifier = parse(s.published, allowed=EVERY).by_kid["k"]
    assert verifier.alg == alg
    token = parse_token(sign(s, {"iss": "https://sender.test", "iat": 1, "jti": "j"}))
    assert verifier.verify(token.signing_input, token.signature)
    assert not verifier.verify(token.signing_input + b"x", token.signature)
    assert not verifier.verify(token.signing_input, b"")
    flipped = bytearray(token.signature)
    flipped[len(flipped) // 2] ^= 1
    assert not verifier.verify(token.signing_input, bytes(flipped))
    forged = parse_token(sign(signer(private_key(key_name, "b"), alg), {"iat": 1}))
    assert not verifier.verify(forged.signing_input, forged.signature)


def test_rsa_signature_of_the_other_padding_does_not_verify() -> None:
    rs = parse(good_rsa("k", alg="RS256")).by_kid["k"]
    ps = parse(good_rsa("k", alg="PS256")).by_kid["k"]
    rs_token = parse_token(sign(signer(rsa_key("a"), "RS256"), {"iat": 1}))
    ps_token = parse_token(sign(signer(rsa_key("a"), "PS256"), {"iat": 1}))
    assert rs.verify(rs_token.signing_input, rs_token.signature)
    assert ps.verify(ps_token.signing_input, ps_token.signature)
    assert not rs.verify(ps_token.signing_input, ps_token.signature)
    assert not ps.verify(rs_token.signing_input, rs_token.signature)


def _es256() -> tuple[VerifyKey, ec.EllipticCurvePrivateKey]:
    verifier = parse(public_jwk(ec_key("P-256"), "k")).by_kid["k"]
    private = ec_key("P-256").get_op_key("sign")
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return verifier, private


def test_der_encoded_es256_signature_is_refused() -> None:
    verifier, private = _es256()
    message = b"header.payload"
    der = private.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert verifier.verify(message, raw)  # the same signature as raw R||S is good
    assert not verifier.verify(message, der)


@pytest.mark.parametrize(
    ("r", "s"), [(0, 0), (P256_ORDER, P256_ORDER), (0, 1), (1, 0), (P256_ORDER, 1)]
)
def test_out_of_range_ecdsa_values_are_refused(r: int, s: int) -> None:
    verifier, _ = _es256()
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert not verifier.verify(b"header.payload", signature)


def test_ecdsa_signature_of_the_wrong_size_is_refused() -> None:
    p384 = parse(public_jwk(ec_key("P-384"), "k")).by_kid["k"]
    es256 = parse_token(sign(signer(ec_key("P-256"), "ES256"), {"iat": 1}))
    assert len(es256.signature) == 64
    assert not p384.verify(es256.signing_input, es256.signature)
    es384 = parse_token(sign(signer(ec_key("P-384"), "ES384"), {"iat": 1}))
    assert not p384.verify(es384.signing_input, es384.signature + b"\x00")
    assert not p384.verify(es384.signing_input, es384.signature[:-1])
    assert p384.verify(es384.signing_input, es384.signature)


# --- cache_lifetime ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 300.0),
        ("", 300.0),
        ("public", 300.0),
        ("max-age=60", 60.0),
        ("public, max-age=120", 120.0),
        ("public,MAX-AGE=120,must-revalidate", 120.0),
        ("max-age=3600", 300.0),  # never longer than the configured TTL
        ("max-age=5", 10.0),  # never shorter than the refresh floor
        ("max-age=0", 10.0),
        ("s-maxage=20", 300.0),  # a shared-cache directive, not ours
        ("no-store", 10.0),
        ("no-cache", 10.0),
        ("private, no-store, max-age=200", 10.0),
    ],
)
def test_cache_lifetime(header: str | None, expected: float) -> None:
    assert cache_lifetime(header, 300.0, 10.0) == expected


def test_cache_lifetime_is_at_least_one_second() -> None:
    assert cache_lifetime("no-store", 300.0, 0.0) == 1.0
    assert cache_lifetime("max-age=0", 300.0, 0.0) == 1.0


# --- select_keys: the key-selection decision ---------------------------------------------------


def _token(key: jwk.JWK, alg: str, kid: str | None = "k") -> tuple[str, bytes, bytes]:
    t = parse_token(sign(SigningKey(key=key, kid=kid, alg=alg, published={}), {"iat": 1}))
    return alg, t.signing_input, t.signature


def test_an_alg_less_rsa_key_verifies_each_allowed_rsa_alg_it_is_asked_for() -> None:
    keyset = parse(good_rsa("k"), allowed=("RS256", "PS256"))
    for alg in ("RS256", "PS256"):
        (key,) = select_keys(keyset, alg, "k")
        assert key.alg == alg
        _, signing_input, signature = _token(rsa_key("a"), alg)
        assert key.verify(signing_input, signature)
        assert check_signature(keyset, alg, "k", signing_input, signature).alg == alg
    # Pinned to PS256, the same key does not take the RS256 signature (no padding confusion).
    _, signing_input, signature = _token(rsa_key("a"), "RS256")
    assert not select_keys(keyset, "PS256", "k")[0].verify(signing_input, signature)


@pytest.mark.parametrize(
    ("key_name", "token_alg"),
    [
        ("Ed25519", "ES512"),
        ("Ed25519", "RS256"),
        ("P-521", "EdDSA"),
        ("P-521", "ES256"),
        ("P-256", "ES512"),
        ("rsa", "EdDSA"),
        ("rsa", "ES256"),
    ],
)
def test_a_key_never_checks_a_token_of_another_family_or_curve(
    key_name: str, token_alg: str
) -> None:
    keyset = parse(public_jwk(private_key(key_name), "k"), allowed=EVERY)
    with pytest.raises(Rejection) as e:
        select_keys(keyset, token_alg, "k")
    assert e.value.reason == "disallowed_algorithm"
    assert select_keys(keyset, token_alg, None) == []


def test_a_key_declaring_rs256_does_not_check_ps256() -> None:
    keyset = parse(good_rsa("k", alg="RS256"))
    with pytest.raises(Rejection) as e:
        select_keys(keyset, "PS256", "k")
    assert e.value.reason == "disallowed_algorithm"


def test_an_unknown_kid_is_unknown_kid() -> None:
    with pytest.raises(Rejection) as e:
        select_keys(parse(good_rsa("k")), "RS256", "other")
    assert e.value.reason == "unknown_kid"


def test_kidless_candidates_are_the_keys_accepting_the_alg_at_most_eight() -> None:
    rsa_keys = [public_jwk(rsa_key("a"), f"r{i}") for i in range(MAX_KIDLESS_CANDIDATES + 2)]
    ed = public_jwk(okp_key(), None)
    keyset = parse(ed, *rsa_keys, allowed=EVERY, max_keys=100)
    ps = select_keys(keyset, "PS384", None)
    assert len(ps) == MAX_KIDLESS_CANDIDATES
    assert {k.alg for k in ps} == {"PS384"}
    (eddsa,) = select_keys(keyset, "EdDSA", None)
    assert eddsa.kid is None
    assert select_keys(keyset, "ES256", None) == []


def test_check_signature_is_bad_signature_when_no_key_verifies() -> None:
    keyset = parse(
        public_jwk(okp_key(), None), public_jwk(okp_key("Ed25519", "b"), None), allowed=EVERY
    )
    alg, signing_input, signature = _token(okp_key("Ed25519", "c"), "EdDSA", kid=None)
    with pytest.raises(Rejection) as e:
        check_signature(keyset, alg, None, signing_input, signature)
    assert e.value.reason == "bad_signature"
    alg, signing_input, signature = _token(okp_key("Ed25519", "b"), "EdDSA", kid=None)
    assert check_signature(keyset, alg, None, signing_input, signature).alg == "EdDSA"


def test_es512_signatures_are_66_byte_r_and_s() -> None:
    keyset = parse(public_jwk(ec_key("P-521"), "k"), allowed=EVERY)
    alg, signing_input, signature = _token(ec_key("P-521"), "ES512")
    assert len(signature) == 132
    (key,) = select_keys(keyset, alg, "k")
    assert key.verify(signing_input, signature)
    assert not key.verify(signing_input, signature[:128])


def test_a_verify_key_cannot_be_pinned_outside_its_algorithms() -> None:
    key = parse(good_rsa("k", alg="RS256")).by_kid["k"]
    with pytest.raises(ValueError):
        key.pinned("ES256")
    assert isinstance(key, VerifyKey)
