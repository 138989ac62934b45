"""``type: standard_webhooks``: the Standard Webhooks 1.0 signature over ``id.timestamp.body``,
``v1`` (HMAC-SHA256 with ``whsec_`` secrets) and ``v1a`` (Ed25519 with ``whpk_`` public keys),
several signatures during rotation, and the replay key taken from ``webhook-id``.

The headers decide presence, shape and the timestamp window before the body is read; the
signature needs the body. Signatures are read from every ``webhook-signature`` line (a proxy or
client library may split the list over several), all entries of each, bounded in total count and
bytes rather than by position: a valid signature in the 17th entry verifies, and a list longer
than any sender rotates through is refused before the body is awaited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import verify
from gateway.authn import Headers, Pending, Verified, attributed
from gateway.config import IssuerConfig, StandardWebhooksConfig
from gateway.errors import Rejection
from gateway.jsonstrict import dumps_compact

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "MAX_SIGNATURE_ENTRIES",
    "PendingWebhook",
    "StandardWebhooksAuthenticator",
    "check_signature",
    "check_webhook_headers",
    "replay_key",
    "signature_entries",
    "webhook_header_family",
]

_MSG_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# A sender signs with one or two secrets and perhaps a v1a key during rotation: 32 entries is
# far beyond that, and bounds the HMAC compares and Ed25519 checks one request can cost.
MAX_SIGNATURE_ENTRIES = 32
MAX_SIGNATURE_BYTES = 8192


@dataclass(frozen=True, slots=True)
class PendingWebhook(Pending):
    msg_id: str = ""
    # As received (less surrounding space): the signed content uses these very digits.
    timestamp: str = "0"
    signatures: str = ""
    # The signature covers the body: nothing is authenticated until it has arrived.
    authenticated: ClassVar[bool] = False


def _one(headers: Headers, name: str) -> str | None:
    values = headers.getall(name, [])
    if len(values) > 1:
        # The gateway would sign-check and dedupe on one line, a backend might read another.
        raise Rejection("malformed_token", f"{name} appears more than once")
    return values[0] if values else None


def signature_entries(lines: list[str]) -> list[str]:
    """Every entry of every ``webhook-signature`` line, in order; ``malformed_token`` when there
    are more than ``MAX_SIGNATURE_ENTRIES`` of them or more than ``MAX_SIGNATURE_BYTES``."""
    if sum(len(line) for line in lines) > MAX_SIGNATURE_BYTES:
        raise Rejection(
            "malformed_token", f"webhook-signature is longer than {MAX_SIGNATURE_BYTES} bytes"
        )
    entries = [item for line in lines for item in line.split()]
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise Rejection(
            "malformed_token",
            f"webhook-signature lists more than {MAX_SIGNATURE_ENTRIES} signatures",
        )
    return entries


# The Standard Webhooks names, then the svix libraries' own (same meaning, same format).
HEADER_FAMILIES = ("webhook", "svix")


def webhook_header_family(headers: Headers) -> str:
    """Which header names carry the signature: ``webhook-*`` when any of them is present,
    else ``svix-*`` when any of those is, as the svix libraries' ``verify`` reads them. Never
    a mix: the id, timestamp and signature must come from one sender's set."""
    for family in HEADER_FAMILIES:
        if any(f"{family}-{part}" in headers for part in ("id", "timestamp", "signature")):
            return family
    return HEADER_FAMILIES[0]


def check_webhook_headers(
    headers: Headers, cfg: StandardWebhooksConfig, now: float
) -> tuple[str, str, str]:
    """``webhook-id``, the timestamp and the signature entries (space-separated, from every
    ``webhook-signature`` line), or their ``svix-`` twins, once present, well formed, bounded and
    in the tolerance window."""
    family = webhook_header_family(headers)
    msg_id = _one(headers, f"{family}-id")
    timestamp = _one(headers, f"{family}-timestamp")
    lines = headers.getall(f"{family}-signature", [])
    if msg_id is None or timestamp is None or not lines:
        raise Rejection(
            "missing_token",
            f"{family}-id, {family}-timestamp and {family}-signature are required",
        )
    if not _MSG_ID_RE.fullmatch(msg_id):
        raise Rejection("malformed_token", "webhook-id is not 1-256 printable characters")
    if not _TIMESTAMP_RE.fullmatch(timestamp.strip()):
        raise Rejection("malformed_token", "webhook-timestamp is not integer seconds")
    signatures = " ".join(signature_entries(lines))
    ts = int(timestamp.strip())
    if now - ts > cfg.tolerance_seconds:
        raise Rejection("token_too_old", "webhook-timestamp is outside the tolerance")
    if ts - now > cfg.tolerance_seconds:
        raise Rejection("not_yet_valid", "webhook-timestamp is in the future")
    return msg_id, timestamp.strip(), signatures


def _v1a_verify(public_keys: tuple[bytes, ...], signature: bytes, content: bytes) -> bool:
    for raw in public_keys:
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, content)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def check_signature(
    msg_id: str, timestamp: str, signatures: str, body: bytes, cfg: StandardWebhooksConfig
) -> None:
    content = f"{msg_id}.{timestamp}.".encode() + body
    macs = [
        base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest())
        for secret in cfg.secrets
    ]
    # Each distinct entry once: a repeated v1a entry would cost its Ed25519 checks again.
    for item in dict.fromkeys(signatures.split()[:MAX_SIGNATURE_ENTRIES]):
        version, sep, value = item.partition(",")
        if not sep:
            continue
        if version == "v1":
            if any(hmac.compare_digest(value.encode(), mac) for mac in macs):
                return
        elif version == "v1a":
            try:
                sig = base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                continue
            if len(sig) == 64 and _v1a_verify(cfg.public_keys, sig, content):
                return
    raise Rejection("bad_signature", "no webhook-signature verifies")


def replay_key(issuer: IssuerConfig, msg_id: str) -> bytes:
    """Dedupe on webhook-id, constant across the sender's retries of one message."""
    ns = verify.replay_namespace(issuer)
    return ns + b":" + hashlib.sha256(b"swh\x00" + ns + b"\x00" + msg_id.encode()).digest()


class StandardWebhooksAuthenticator:
    def __init__(self, issuer: IssuerConfig) -> None:
        assert issuer.standard_webhooks is not None
        self.issuer = issuer
        self.cfg = issuer.standard_webhooks

    async def authenticate(
        self, headers: Headers, path: str, now: float, query: str = ""
    ) -> PendingWebhook:
        try:
            msg_id, ts, signatures = check_webhook_headers(headers, self.cfg, now)
        except Rejection as r:
            raise attributed(r, self.issuer) from None
        return PendingWebhook(
            issuer=self.issuer, msg_id=msg_id, timestamp=ts, signatures=signatures
        )

    def verify_body(self, pending: PendingWebhook, body: bytes, now: float) -> Verified:
        try:
            check_signature(pending.msg_id, pending.timestamp, pending.signatures, body, self.cfg)
        except Rejection as r:
            raise attributed(r, self.issuer) from None
        claims = {"webhook-id": pending.msg_id, "webhook-timestamp": int(pending.timestamp)}
        return Verified(
            issuer=self.issuer,
            claims=claims,
            claims_segment=verify.b64url_encode(dumps_compact(claims)),
            replay_key=replay_key(self.issuer, pending.msg_id),
            # Accepted while |now - timestamp| <= tolerance: keep the id for both sides of it.
            replay_ttl=2 * self.cfg.tolerance_seconds + self.issuer.clock_skew_seconds,
        )
