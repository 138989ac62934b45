"""Issuer keys: parsing a JWKS document key by key, and one refreshing cache per issuer.

A fetched JWKS is untrusted input. Each key is parsed on its own so that one malformed key cannot
poison the set (jwcrypto's ``JWKSet`` import is all-or-nothing); only RSA >= 2048 bits and EC
P-256/P-384 signing keys survive, each pinned to exactly one algorithm; ``oct`` keys are dropped,
since a symmetric key from a public JWKS would let anyone mint tokens. Parsed keys are kept as
``cryptography`` public-key objects: re-parsing a JWK per request costs more than the verify.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto.jwk import JWK

from gateway.config import IssuerConfig
from gateway.errors import Rejection
from gateway.jsonstrict import loads_strict
from gateway.metrics import Metrics

__all__ = ["MAX_KIDLESS_CANDIDATES", "JwksCache", "JwksError", "KeySet", "VerifyKey", "parse_jwks"]

log = logging.getLogger("jwksgate.keys")

MAX_KIDLESS_CANDIDATES = 8
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_ALG_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384"}
_EC_SIG_BYTES = {"ES256": 32, "ES384": 48}
_PUBLIC_MEMBERS = ("kty", "n", "e", "crv", "x", "y")


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One usable public key, pinned to one algorithm."""

    kid: str | None
    alg: str
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's ``alg`` signature over ``signing_input``."""
        digest = _HASHES[self.alg[2:]]()
        try:
            if isinstance(self.public_key, rsa.RSAPublicKey):
                pad: padding.AsymmetricPadding
                if self.alg.startswith("PS"):
                    pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
                else:
                    pad = padding.PKCS1v15()
                self.public_key.verify(signature, signing_input, pad, digest)
                return True
            size = _EC_SIG_BYTES[self.alg]
            # JWS carries ECDSA signatures as raw R||S of fixed size (RFC 7518 3.4), never DER.
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            self.public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True, slots=True)
class KeySet:
    by_kid: Mapping[str, VerifyKey]
    all_keys: tuple[VerifyKey, ...]

    def kids(self) -> frozenset[str]:
        return frozenset(self.by_kid)

    def for_alg(self, alg: str) -> list[VerifyKey]:
        """Keys to try for a token without kid: those pinned to its alg, at most 8."""
        return [k for k in self.all_keys if k.alg == alg][:MAX_KIDLESS_CANDIDATES]


class JwksError(Exception):
    """A JWKS document that cannot be used at all (a fetch failure, not a dropped key)."""


class _Dropped(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _key_alg(jwk: Mapping[str, Any], key: Any, allowed: tuple[str, ...]) -> str:
    declared = jwk.get("alg")
    if isinstance(key, rsa.RSAPublicKey):
        family = [a for a in allowed if a[:2] in ("RS", "PS")]
        if declared is None:
            if not family:
                raise _Dropped("alg_not_allowed", "RSA key but no RSA algorithm is allowed")
            # No alg on the key: pin it to the issuer's first RSA algorithm (RFC 8725 3.1).
            return family[0]
        if declared not in family:
            raise _Dropped("alg_not_allowed", f"key alg {declared!r} is not allowed")
        return str(declared)
    curve_alg = _EC_ALG_BY_CURVE.get(key.curve.name)
    if curve_alg is None:
        raise _Dropped("unsupported_curve", f"curve {key.curve.name} is not accepted")
    if declared is not None and declared != curve_alg:
        raise _Dropped("alg_mismatch", f"key alg {declared!r} does not fit curve {key.curve.name}")
    if curve_alg not in allowed:
        raise _Dropped("alg_not_allowed", f"{curve_alg} is not allowed")
    return curve_alg


def parse_key(jwk: Any, allowed: tuple[str, ...]) -> VerifyKey:
    """One JWK member of a set into a ``VerifyKey``, or ``_Dropped`` saying why not."""
    if not isinstance(jwk, dict):
        raise _Dropped("malformed", "key is not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _Dropped("symmetric", "symmetric (oct) keys are never accepted from a JWKS")
    if kty not in ("RSA", "EC"):
        raise _Dropped("unsupported_kty", f"kty {str(kty)[:20]!r} is not accepted")
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
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise _Dropped("unsupported_kty", "not an RSA or EC public key")
    return VerifyKey(kid=kid, alg=_key_alg(jwk, public_key, allowed), public_key=public_key)


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


class JwksCache:
    """The key set of one issuer: first fetch at startup, refresh every TTL, rate-limited refetch
    on an unknown kid (concurrent callers share one fetch), last good set kept ``max_stale``."""

    def __init__(
        self,
        issuer: IssuerConfig,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.issuer = issuer
        self.cfg = issuer.jwks
        self._session = session
        self._metrics = metrics
        self._clock = clock
        self.keyset: KeySet | None = None
        self.fetched_at: float | None = None
        self.last_attempt = -math.inf
        self.last_failed = False
        self.last_error: str | None = None
        self.refresh_after = issuer.jwks.ttl_seconds
        self.failures = 0
        self._etag: str | None = None
        self._inflight: asyncio.Task[None] | None = None
        # Certificates are always verified: system CAs, or the configured bundle. A TLS failure
        # is a fetch failure, never a downgrade.
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.cfg.ca_file) if self.cfg.ca_file else True
        )

    # -- state ------------------------------------------------------------------------------
    def current(self) -> KeySet | None:
        """The key set if it is still usable (not older than ``max_stale_seconds``)."""
        if self.keyset is None or self.fetched_at is None:
            return None
        if self._clock() - self.fetched_at > self.cfg.max_stale_seconds:
            return None
        return self.keyset

    def ready(self) -> bool:
        return self.current() is not None

    def status(self) -> str:
        if self.ready():
            return "ok"
        if self.keyset is not None:
            return f"key set older than max_stale_seconds ({self.last_error or 'no recent fetch'})"
        return f"no key set yet ({self.last_error or 'first fetch pending'})"

    # -- lookups (the request path) ---------------------------------------------------------
    async def key_for(self, kid: str) -> VerifyKey:
        """The key named ``kid``; refetches at most once per interval when it is unknown.

        401 ``unknown_kid`` when a recent successful fetch does not have it; 503
        ``jwks_unavailable`` when the gateway cannot know because fetching fails.
        """
        ks = self.current()
        if ks is not None:
            key = ks.by_kid.get(kid)
            if key is not None:
                return key
        await self._refetch_if_allowed()
        ks = self.current()
        key = ks.by_kid.get(kid) if ks is not None else None
        if key is not None:
            return key
        if ks is None or self.last_failed:
            raise self._unavailable()
        raise Rejection("unknown_kid", "the token's kid is not in the issuer's key set")

    async def kidless_candidates(self, alg: str) -> list[VerifyKey]:
        """Keys to try for a token without kid: those pinned to its alg, at most 8."""
        ks = self.current()
        if ks is None:
            await self._refetch_if_allowed()
            ks = self.current()
            if ks is None:
                raise self._unavailable()
        return ks.for_alg(alg)

    async def kidless_after_miss(self, alg: str, tried: list[VerifyKey]) -> list[VerifyKey]:
        """No key verified a token without kid: perhaps the sender rotated. Refetch (rate
        limited, as for an unknown kid) and return the new keys to try; none when the set is
        unchanged. 503 ``jwks_unavailable`` when the gateway cannot know (fetching fails)."""
        before = self.keyset
        await self._refetch_if_allowed()
        ks = self.current()
        if ks is None or self.last_failed:
            raise self._unavailable()
        if ks is before:
            return []
        return [k for k in ks.for_alg(alg) if k not in tried]

    def _unavailable(self) -> Rejection:
        wait = self.cfg.min_refresh_interval_seconds - (self._clock() - self.last_attempt)
        return Rejection(
            "jwks_unavailable",
            "the issuer's key set cannot be fetched right now; retry later",
            retry_after=max(1, math.ceil(wait)),
        )

    async def _refetch_if_allowed(self) -> None:
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        if self._clock() - self.last_attempt < self.cfg.min_refresh_interval_seconds:
            self._metrics.jwks_refetch_suppressed.labels(issuer=self.issuer.name).inc()
            return
        await self.refresh()

    # -- fetching ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Fetch now, or join the fetch already running. Never raises."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetch_done)
        await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            log.error("jwks fetch crashed", exc_info=task.exception())

    async def _fetch(self) -> None:
        name = self.issuer.name
        self.last_attempt = self._clock()
        started = asyncio.get_running_loop().time()
        result = "failure"
        try:
            document, cache_control = await self._download()
            if document is None:
                result = "not_modified"
                self._succeeded(self.keyset, cache_control)
                return
            keyset, dropped = parse_jwks(document, self.issuer.algorithms, self.cfg.max_keys)
            for reason, detail in dropped:
                self._metrics.jwks_keys_dropped.labels(issuer=name, reason=reason).inc()
                log.warning("issuer %s: dropped JWKS key: %s (%s)", name, detail, reason)
            if not keyset.all_keys:
                raise JwksError("no usable key in the set")
            result = "success"
            self._succeeded(keyset, cache_control)
        except (JwksError, aiohttp.ClientError, TimeoutError, ValueError) as e:
            self._failed(str(e) or type(e).__name__)
        finally:
            self._metrics.jwks_fetches.labels(issuer=name, result=result).inc()
            elapsed = asyncio.get_running_loop().time() - started
            self._metrics.jwks_fetch_duration.labels(issuer=name).observe(elapsed)

    async def _download(self) -> tuple[bytes | None, str | None]:
        headers = {"Accept": "application/json, application/jwk-set+json"}
        if self._etag and self.keyset is not None:
            headers["If-None-Match"] = self._etag
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_seconds)
        async with self._session.get(
            self.issuer.jwks_url,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            ssl=self._ssl,
        ) as resp:
            cache_control = resp.headers.get("Cache-Control")
            if resp.status == 304 and self.keyset is not None:
                return None, cache_control
            if resp.status != 200:
                raise JwksError(
                    f"HTTP {resp.status} from the JWKS URL (redirects are not followed)"
                )
            if resp.content_length is not None and resp.content_length > self.cfg.max_bytes:
                raise JwksError(f"JWKS of {resp.content_length} bytes exceeds {self.cfg.max_bytes}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body += chunk
                if len(body) > self.cfg.max_bytes:
                    raise JwksError(f"JWKS larger than {self.cfg.max_bytes} bytes")
            self._etag = resp.headers.get("ETag")
            return bytes(body), cache_control

    def _succeeded(self, keyset: KeySet | None, cache_control: str | None) -> None:
        name = self.issuer.name
        if keyset is not None and self.keyset is not None and keyset.kids() != self.keyset.kids():
            self._metrics.jwks_rotations.labels(issuer=name).inc()
            log.info("issuer %s: key set changed: %d keys", name, len(keyset.all_keys))
        self.keyset = keyset
        self.fetched_at = self._clock()
        self.last_failed = False
        self.last_error = None
        self.failures = 0
        self.refresh_after = cache_lifetime(
            cache_control, self.cfg.ttl_seconds, self.cfg.min_refresh_interval_seconds
        )
        n = len(keyset.all_keys) if keyset is not None else 0
        self._metrics.jwks_keys.labels(issuer=name).set(n)
        self._metrics.jwks_last_success.labels(issuer=name).set(self.fetched_at)

    def _failed(self, error: str) -> None:
        self.last_failed = True
        self.last_error = error[:200]
        self.failures += 1
        # The ETag may be that of the document just refused: a 304 for it must not revalidate
        # the older set (that would hide the failure and outlive max_stale_seconds).
        self._etag = None
        # Retry soon, backing off: 1, 2, 4 ... seconds, never slower than the TTL.
        self.refresh_after = min(self.cfg.ttl_seconds, 2.0 ** min(self.failures - 1, 6))
        log.warning("issuer %s: JWKS fetch failed: %s", self.issuer.name, self.last_error)

    def update_age_metric(self) -> None:
        age = -1.0 if self.fetched_at is None else self._clock() - self.fetched_at
        self._metrics.jwks_age.labels(issuer=self.issuer.name).set(age)

    async def run(self, fetch_now: bool = True) -> None:
        """Background refresher: first fetch now, then every ``refresh_after`` (with jitter)."""
        if fetch_now:
            await self.refresh()
        while True:
            await asyncio.sleep(self.refresh_after * random.uniform(0.9, 1.0))  # noqa: S311
            await self.refresh()
