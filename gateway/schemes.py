"""Authentication schemes other than JWT, as pure functions over headers and body.

- ``static_token``: a fixed shared secret (what the official A2A SDKs send), compared in constant
  time against every configured token, so several can be valid during a rotation;
- ``standard_webhooks``: the Standard Webhooks 1.0 signature over ``id.timestamp.body``, ``v1``
  (HMAC-SHA256 with ``whsec_`` secrets) and ``v1a`` (Ed25519 with ``whpk_`` public keys), several
  signatures per header during rotation, and the replay key taken from ``webhook-id``.

Each returns the "claims" the gateway forwards (in the claims header) and the replay key, with the
same reason codes as JWT verification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import IssuerConfig, StandardWebhooksConfig, StaticTokenConfig
from gateway.errors import Rejection
from gateway.verify import replay_namespace

__all__ = ["check_handshake_token", "check_standard_webhook", "check_static_token"]

_MSG_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_HANDSHAKE_RE = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def check_static_token(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], cfg: StaticTokenConfig
) -> dict[str, Any]:
    presented: list[str] = []
    for name in cfg.headers:
        for value in headers.getall(name, []):
            if name.lower() == "authorization":
                # "Authorization: <scheme> <credentials>": the credentials are the token.
                _scheme, sep, credentials = value.strip().partition(" ")
                value = credentials.strip() if sep else value
            presented.append(value)
    if not presented:
        raise Rejection("missing_token", "no notification token in " + ", ".join(cfg.headers))
    matched = False
    for value in presented:
        for token in cfg.tokens:
            # Every comparison runs, whatever matched: no timing hint about which token is close.
            matched |= hmac.compare_digest(value.encode(), token.encode())
    if not matched:
        raise Rejection("bad_signature", "the notification token does not match")
    return {"scheme": "static_token"}


def _v1a_verify(public_keys: tuple[bytes, ...], signature: bytes, content: bytes) -> bool:
    for raw in public_keys:
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, content)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def check_standard_webhook(
    headers: Mapping[str, str],
    body: bytes,
    cfg: StandardWebhooksConfig,
    now: float,
) -> dict[str, Any]:
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if msg_id is None or timestamp is None or signatures is None:
        raise Rejection(
            "missing_token", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if not _MSG_ID_RE.fullmatch(msg_id):
        raise Rejection("malformed_token", "webhook-id is not 1-256 printable characters")
    if not _TIMESTAMP_RE.fullmatch(timestamp.strip()):
        raise Rejection("malformed_token", "webhook-timestamp is not integer seconds")
    ts = int(timestamp.strip())
    if now - ts > cfg.tolerance_seconds:
        raise Rejection("token_too_old", "webhook-timestamp is outside the tolerance")
    if ts - now > cfg.tolerance_seconds:
        raise Rejection("not_yet_valid", "webhook-timestamp is in the future")
    content = f"{msg_id}.{timestamp.strip()}.".encode() + body
    macs = [
        base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest())
        for secret in cfg.secrets
    ]
    for item in signatures.split(" ")[:16]:
        version, sep, value = item.partition(",")
        if not sep:
            continue
        if version == "v1":
            if any(hmac.compare_digest(value.encode(), mac) for mac in macs):
                break
        elif version == "v1a":
            try:
                sig = base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                continue
            if len(sig) == 64 and _v1a_verify(cfg.public_keys, sig, content):
                break
    else:
        raise Rejection("bad_signature", "no webhook-signature verifies")
    return {"webhook-id": msg_id, "webhook-timestamp": ts}


def replay_key(issuer: IssuerConfig, claims: Mapping[str, Any]) -> bytes | None:
    """Standard Webhooks dedupe on webhook-id (constant across retries); static tokens have none."""
    msg_id = claims.get("webhook-id")
    if not isinstance(msg_id, str):
        return None
    ns = replay_namespace(issuer)
    return ns + b":" + hashlib.sha256(b"swh\x00" + ns + b"\x00" + msg_id.encode()).digest()


def check_handshake_token(value: str) -> str:
    """The ``validationToken`` of an ownership handshake, echoed back only if it is harmless."""
    if not _HANDSHAKE_RE.fullmatch(value):
        raise Rejection("malformed_request", "validationToken must be 1-256 URL-safe characters")
    return value
