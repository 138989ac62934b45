"""Signing keys, request bodies and pre-signed tokens for the load generator.

Replay protection stays on during the benchmarks, so every request needs a token of its own. Signing
costs about 230 µs per RS256 token, so tokens are made in parallel (one process per core) with
``cryptography`` directly and cached under ``bench/out/``: a later run reuses them while they are
fresh (the bench config accepts tokens up to 7 days old).
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "MAX_TOKEN_AGE_SECONDS",
    "SUBJECT",
    "Keys",
    "body_of_size",
    "ensure_keys",
    "ensure_tokens",
    "public_pem",
    "sign_token",
]

ISSUER = "https://bench.example"
AUDIENCE = "bench-backend"
SUBJECT = "bench-sender"
# The bench config's max_token_age_seconds / max_lifetime_seconds: cached tokens stay valid.
MAX_TOKEN_AGE_SECONDS = 7 * 86400
# A cached token file is reused while its tokens are younger than this.
_REUSE_SECONDS = 5 * 86400
_CHUNK = 2000


@dataclass(frozen=True)
class Keys:
    rsa_pem: bytes
    ec_pem: bytes
    kids: dict[str, str]  # alg -> kid
    jwks: bytes


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _int_b64(n: int, size: int | None = None) -> str:
    length = size if size is not None else (n.bit_length() + 7) // 8
    return _b64(n.to_bytes(length, "big"))


def _public_jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    rn = rsa_key.public_key().public_numbers()
    en = ec_key.public_key().public_numbers()
    rsa_jwk = {"kty": "RSA", "n": _int_b64(rn.n), "e": _int_b64(rn.e)}
    ec_jwk = {"kty": "EC", "crv": "P-256", "x": _int_b64(en.x, 32), "y": _int_b64(en.y, 32)}
    keys = []
    for jwk, alg in ((rsa_jwk, "RS256"), (ec_jwk, "ES256")):
        # RFC 7638 thumbprint as the kid: stable for a key, different for a new one.
        canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
        kid = _b64(hashlib.sha256(canonical).digest())[:16]
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    return {"keys": keys}


def ensure_keys(out: Path) -> Keys:
    """An RSA-2048 and a P-256 key under ``out/keys`` (made once) and their JWKS."""
    d = out / "keys"
    d.mkdir(parents=True, exist_ok=True)
    rsa_path, ec_path = d / "rsa.pem", d / "ec.pem"
    if not rsa_path.exists() or not ec_path.exists():
        fmt = serialization.PrivateFormat.PKCS8
        enc = serialization.NoEncryption()
        r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        e = ec.generate_private_key(ec.SECP256R1())
        rsa_path.write_bytes(r.private_bytes(serialization.Encoding.PEM, fmt, enc))
        ec_path.write_bytes(e.private_bytes(serialization.Encoding.PEM, fmt, enc))
    rsa_pem, ec_pem = rsa_path.read_bytes(), ec_path.read_bytes()
    r_key = serialization.load_pem_private_key(rsa_pem, password=None)
    e_key = serialization.load_pem_private_key(ec_pem, password=None)
    assert isinstance(r_key, rsa.RSAPrivateKey)
    assert isinstance(e_key, ec.EllipticCurvePrivateKey)
    doc = _public_jwks(r_key, e_key)
    kids = {k["alg"]: k["kid"] for k in doc["keys"]}
    return Keys(rsa_pem=rsa_pem, ec_pem=ec_pem, kids=kids, jwks=json.dumps(doc).encode())


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 64), the same bytes every time."""
    head = b'{"event":"task.status","task":"bench-0001","state":"completed","pad":"'
    tail = b'"}'
    fill = size - len(head) - len(tail)
    if fill < 0:
        raise ValueError(f"a body of {size} bytes is too small")
    pattern = b"abcdefghijklmnopqrstuvwxyz0123456789"
    pad = (pattern * (fill // len(pattern) + 1))[:fill]
    return head + pad + tail


# -- signing (in worker processes) --------------------------------------------------------------

_signer: dict[str, Any] = {}


def _init_worker(alg: str, pem: bytes, kid: str, body_sha256: str, iat: int, nonce: str) -> None:
    _signer.update(
        alg=alg,
        key=serialization.load_pem_private_key(pem, password=None),
        header=_b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}, separators=(",", ":"))
                    .encode()),
        body_sha256=body_sha256,
        iat=iat,
        nonce=nonce,
    )  # fmt: skip


def _sign(alg: str, key: Any, signing_input: str) -> str:
    data = signing_input.encode("ascii")
    if alg == "RS256":
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, t = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + t.to_bytes(32, "big")
    return f"{signing_input}.{_b64(sig)}"


def _claims(iat: int, jti: str, body_sha256: str) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "iat": iat,
        "exp": iat + MAX_TOKEN_AGE_SECONDS - 60,
        "jti": jti,
        "request_body_sha256": body_sha256,
    }


def sign_token(keys: Keys, body: bytes, alg: str = "RS256", **overrides: Any) -> str:
    """One token for ``body`` with a fresh jti; ``overrides`` replace claims (None drops one)."""
    claims = _claims(int(time.time()), secrets.token_hex(12), hashlib.sha256(body).hexdigest())
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    pem = keys.rsa_pem if alg == "RS256" else keys.ec_pem
    key = serialization.load_pem_private_key(pem, password=None)
    header = {"alg": alg, "typ": "JWT", "kid": keys.kids[alg]}
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return _sign(alg, key, f"{head}.{payload}")


def public_pem(keys: Keys) -> bytes:
    """The RSA public key as a PEM SubjectPublicKeyInfo (what HAProxy's jwt_verify reads)."""
    key = serialization.load_pem_private_key(keys.rsa_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sign_chunk(bounds: tuple[int, int]) -> list[str]:
    start, stop = bounds
    s = _signer
    key = s["key"]
    lines = []
    for i in range(start, stop):
        claims = _claims(s["iat"], f"{s['nonce']}-{i}", s["body_sha256"])
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        lines.append(_sign(s["alg"], key, f"{s['header']}.{payload}"))
    return lines


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, _CHUNK):
        yield start, min(start + _CHUNK, count)


def ensure_tokens(
    out: Path, keys: Keys, alg: str, body: bytes, count: int, processes: int | None = None
) -> Path:
    """A file of at least ``count`` unique tokens (one a line) for ``body``; cached and reused
    while fresh. Tokens carry a random jti prefix: two files never share a jti."""
    kid = keys.kids[alg]
    path = out / f"tokens-v2-{alg}-{len(body)}-{kid[:8]}.txt"  # v2: with aud
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("count", 0) >= count and meta.get("iat", 0) > time.time() - _REUSE_SECONDS:
            return path
    pem = keys.rsa_pem if alg == "RS256" else keys.ec_pem
    iat = int(time.time())
    nonce = secrets.token_hex(6)
    digest = hashlib.sha256(body).hexdigest()
    procs = processes or os.cpu_count() or 1
    started = time.monotonic()
    tmp = path.with_suffix(".tmp")
    ctx = multiprocessing.get_context("spawn")
    with (
        ctx.Pool(procs, _init_worker, (alg, pem, kid, digest, iat, nonce)) as pool,
        tmp.open("w") as f,
    ):
        for lines in pool.imap(_sign_chunk, _chunks(count)):
            f.write("\n".join(lines))
            f.write("\n")
    tmp.replace(path)
    meta_path.write_text(json.dumps({"count": count, "iat": iat, "alg": alg, "kid": kid}))
    print(
        f"  signed {count} {alg} tokens for a {len(body)} B body in "
        f"{time.monotonic() - started:.1f}s ({procs} processes)",
        flush=True,
    )
    return path
