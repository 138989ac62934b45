"""Webhook signatures of the providers receivers get most, as pure functions over headers and body.

One frozen config and two functions per provider, in the request path's two phases:

- ``precheck(headers, cfg, now)`` reads headers only: presence, shape and the timestamp window.
  It is cheap and runs before the body is read, so a request that cannot verify costs no body.
- ``verify(headers, body, cfg, now)`` runs the precheck again (so it is complete on its own) and
  then the signature over the **raw body bytes as received**: a decoded or re-serialised body
  would not be what the provider signed. It returns a :class:`ProviderResult`: the claims to
  forward, the replay key and how long to keep it, and the headers to strip and to add.

=========  =======================================================  ===========================
provider   signature                                                replay key
=========  =======================================================  ===========================
github     ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>``  SHA-256(body)
stripe     ``Stripe-Signature: t=<unix>,v1=<hex>`` over ``t.body``  ``t`` + SHA-256(body)
slack      ``X-Slack-Signature: v0=<hex>`` over ``v0:ts:body``      ``ts`` + SHA-256(body)
shopify    ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(body)>``    SHA-256(body)
gitlab     ``X-Gitlab-Token: <secret>`` (no signature)              ``Idempotency-Key`` or
                                                                    ``X-Gitlab-Event-UUID``
=========  =======================================================  ===========================

Every secret or MAC comparison is ``hmac.compare_digest``, against every configured secret (a
rotation keeps the old and the new one valid at once). Failures raise :class:`Rejection` with the
reason codes JWT and Standard Webhooks verification use. Nothing here does I/O or reads a clock:
``now`` is a parameter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import Rejection
from gateway.jsonstrict import loads_strict

__all__ = [
    "GitHubConfig",
    "GitLabConfig",
    "ProviderConfig",
    "ProviderResult",
    "ShopifyConfig",
    "SlackConfig",
    "StripeConfig",
    "github_precheck",
    "github_verify",
    "gitlab_precheck",
    "gitlab_verify",
    "precheck",
    "shopify_precheck",
    "shopify_verify",
    "slack_challenge",
    "slack_precheck",
    "slack_verify",
    "stripe_precheck",
    "stripe_verify",
    "verify",
]

Headers = CIMultiDictProxy[str] | CIMultiDict[str]

# An id forwarded in a header and used as a replay key: printable ASCII without spaces, bounded.
_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,256}")
# Event types (X-GitHub-Event, X-Shopify-Topic, X-Gitlab-Event): printable ASCII, spaces allowed
# (GitLab sends "Push Hook"), bounded; they are forwarded, so nothing that could split a header.
_EVENT_RE: Final = re.compile(r"[\x20-\x7e]{1,128}")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,12}")
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_SHOP_RE: Final = re.compile(r"[A-Za-z0-9.-]{1,255}")
# Slack's challenge is echoed back as text: only characters that cannot become markup or a header.
_CHALLENGE_RE: Final = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}")
# A Stripe-Signature carries one t and one v1 per live secret: more entries than this is not Stripe.
_MAX_STRIPE_ENTRIES: Final = 16
_MAX_SIGNATURE_HEADER_BYTES: Final = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderResult:
    """What a verified provider request forwards and remembers.

    ``claims`` go into the claims header like a JWT's (``provider``, ``id``, ``event``,
    ``timestamp`` where the provider signs them; GitHub's and Shopify's id, event and shop
    headers are not signed and go under a separate ``unsigned`` object instead).
    ``replay_key`` is ``<namespace>:`` + 32 bytes, the shape of every other replay key, kept
    for ``replay_ttl_seconds``; ``None`` when the request carries nothing to de-duplicate on.
    ``strip_headers`` are removed from the forwarded request (the signature or secret, and any
    incoming copy of the headers this adds); ``add_headers`` are set on it.
    """

    provider: str
    claims: dict[str, Any]
    replay_key: bytes | None
    replay_ttl_seconds: float
    strip_headers: tuple[str, ...]
    add_headers: tuple[tuple[str, str], ...]


# The namespace field is what ``verify.replay_namespace(issuer)`` returns for the issuer that
# holds this config (its ``issuer`` or its ``name``): the loader fills it in, it is not a YAML key.
# It is required, so that no config can silently share another issuer's replay keys.
# ``secrets`` holds the inline secrets and, once ``config.read_files`` ran, one per file of
# ``secret_files`` (which the verifiers never read).
_DERIVED: Final = {"derived": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Provider:
    """What every provider's config has: the secrets (several during a rotation), the header
    that forwards the verified id, and whether the signature headers are forwarded too."""

    namespace: bytes = field(metadata=_DERIVED)
    secrets: tuple[bytes, ...]
    id_header: str = "X-Webhook-Id"
    keep_signature: bool = False
    secret_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GitHubConfig(_Provider):
    """``type: github``: HMAC-SHA256 of the body; GitHub sends no timestamp, so replays are
    stopped only by remembering the signed body's SHA-256 for ``dedupe_seconds`` (GitHub keeps a
    delivery redeliverable for 3 days, with the same body). ``X-GitHub-Delivery`` is unsigned."""

    dedupe_seconds: float = 259_200.0
    signature_header: str = "X-Hub-Signature-256"
    delivery_header: str = "X-GitHub-Delivery"
    event_header: str = "X-GitHub-Event"


@dataclass(frozen=True, slots=True, kw_only=True)
class StripeConfig(_Provider):
    """``type: stripe``: ``Stripe-Signature: t=..,v1=..`` over ``"<t>.<body>"``, within
    ``tolerance_seconds`` of now either way."""

    tolerance_seconds: float = 300.0
    signature_header: str = "Stripe-Signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackConfig(_Provider):
    """``type: slack``: ``v0=<hex HMAC("v0:<ts>:<body>")>`` with ``X-Slack-Request-Timestamp``
    within ``tolerance_seconds``; ``answer_challenge`` answers ``url_verification`` itself."""

    tolerance_seconds: float = 300.0
    signature_header: str = "X-Slack-Signature"
    timestamp_header: str = "X-Slack-Request-Timestamp"
    answer_challenge: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ShopifyConfig(_Provider):
    """``type: shopify``: base64 HMAC-SHA256 of the body; no timestamp is signed, so replays are
    stopped by remembering the signed body's SHA-256 (the same across Shopify's retries); the
    ``X-Shopify-Webhook-Id``, topic and shop headers are unsigned."""

    dedupe_seconds: float = 86_400.0
    signature_header: str = "X-Shopify-Hmac-Sha256"
    webhook_id_header: str = "X-Shopify-Webhook-Id"
    topic_header: str = "X-Shopify-Topic"
    shop_header: str = "X-Shopify-Shop-Domain"


@dataclass(frozen=True, slots=True, kw_only=True)
class GitLabConfig(_Provider):
    """``type: gitlab``: the webhook's secret token, sent as is in ``X-Gitlab-Token``."""

    dedupe_seconds: float = 86_400.0
    token_header: str = "X-Gitlab-Token"  # noqa: S105 (a header name, not a secret)
    # First present wins. Idempotency-Key (GitLab 17.4+) is the same across retries and resends
    # of one delivery; older GitLab only has X-Gitlab-Event-UUID.
    dedupe_headers: tuple[str, ...] = ("Idempotency-Key", "X-Gitlab-Event-UUID")
    event_header: str = "X-Gitlab-Event"


ProviderConfig = GitHubConfig | StripeConfig | SlackConfig | ShopifyConfig | GitLabConfig


# --- shared pieces ---------------------------------------------------------------------------


def _one(headers: Headers, name: str, *, required: bool = True) -> str | None:
    """The single value of ``name``: two copies are ambiguous (which one did the provider send,
    which one will the backend read?), so they are refused rather than one picked."""
    values = headers.getall(name, [])
    if not values:
        if required:
            raise Rejection("missing_token", f"the {name} header is required")
        return None
    if len(values) > 1:
        raise Rejection("malformed_token", f"more than one {name} header")
    return values[0].strip()


def _optional_event(headers: Headers, name: str) -> str | None:
    value = _one(headers, name, required=False)
    if value is None:
        return None
    if not _EVENT_RE.fullmatch(value):
        raise Rejection("malformed_token", f"{name} is not 1-128 printable characters")
    return value


def _id(headers: Headers, name: str, *, required: bool = True) -> str | None:
    value = _one(headers, name, required=required)
    if value is not None and not _ID_RE.fullmatch(value):
        raise Rejection("malformed_token", f"{name} is not 1-256 printable characters")
    return value


def _timestamp(value: str, name: str, tolerance: float, now: float) -> int:
    if not _TIMESTAMP_RE.fullmatch(value):
        raise Rejection("malformed_token", f"{name} is not integer seconds")
    ts = int(value)
    if now - ts > tolerance:
        raise Rejection("token_too_old", f"{name} is outside the tolerance")
    if ts - now > tolerance:
        raise Rejection("not_yet_valid", f"{name} is in the future")
    return ts


def _macs(secrets: tuple[bytes, ...], content: bytes) -> list[bytes]:
    return [hmac.new(secret, content, hashlib.sha256).digest() for secret in secrets]


def _any_equal(presented: list[bytes], expected: list[bytes]) -> bool:
    """Every pair is compared, whatever matched: no timing hint about which secret is close."""
    matched = False
    for got in presented:
        for want in expected:
            matched |= hmac.compare_digest(got, want)
    return matched


def _key(tag: bytes, namespace: bytes, *parts: bytes) -> bytes:
    """``<namespace>:`` + SHA-256 of the tagged parts: the shape of every replay key, with a
    per-provider tag so that a GitHub delivery id never collides with a Shopify webhook id."""
    material = tag + b"\x00" + namespace + b"".join(b"\x00" + p for p in parts)
    return namespace + b":" + hashlib.sha256(material).digest()


def _strip(cfg: ProviderConfig, signature: tuple[str, ...]) -> tuple[str, ...]:
    """The signature (unless kept) and any incoming copy of the id header this adds, which a
    client could otherwise set itself and the backend would take for the verified one."""
    names = () if cfg.keep_signature else signature
    return names + ((cfg.id_header,) if cfg.id_header else ())


def _add(cfg: ProviderConfig, ident: str | None) -> tuple[tuple[str, str], ...]:
    return ((cfg.id_header, ident),) if cfg.id_header and ident is not None else ()


def _json_fields(body: bytes, *names: str) -> dict[str, str]:
    """Top-level string members of an already verified JSON body, for the forwarded claims only.

    Never part of the signature check. A body that is not a strict JSON object (Slack's slash
    commands are form-encoded) simply has none.
    """
    try:
        doc = loads_strict(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {n: doc[n] for n in names if isinstance(doc.get(n), str) and _ID_RE.fullmatch(doc[n])}


def _by_body(
    provider: str,
    cfg: GitHubConfig | ShopifyConfig,
    body: bytes,
    signature: tuple[str, ...],
    unsigned: dict[str, str],
) -> ProviderResult:
    """The result for the providers that sign the body alone (GitHub, Shopify), once verified.

    With no timestamp signed, the replay key is what is signed: SHA-256 of the body, tagged by
    provider and namespace, remembered for ``dedupe_seconds``. GitHub's redeliveries and
    Shopify's retries send the same body, so they still meet the key. The delivery id, event
    and shop headers are NOT signed (a captured delivery can be resent under any of them): they
    never key a replay and never sit among the verified claims, only under ``unsigned``.
    """
    claims: dict[str, Any] = {"provider": provider}
    if unsigned:
        claims["unsigned"] = dict(unsigned)
    return ProviderResult(
        provider=provider,
        claims=claims,
        replay_key=_key(provider.encode(), cfg.namespace, hashlib.sha256(body).digest()),
        replay_ttl_seconds=cfg.dedupe_seconds,
        strip_headers=_strip(cfg, signature),
        add_headers=_add(cfg, unsigned.get("id")),
    )


def _timestamped(
    provider: str,
    cfg: StripeConfig | SlackConfig,
    ts: int,
    raw_ts: str,
    body: bytes,
    id_field: str,
) -> ProviderResult:
    """The result for the providers that sign a timestamp (Stripe, Slack), once verified.

    The event id and type come from the body, read only now that it is authentic. The replay
    key is the signed content (timestamp and body), not the header: extra signatures appended
    to a captured header must not make a new key. A request is accepted while |now - ts| is
    within the tolerance, so its key is kept for both sides of it.
    """
    claims: dict[str, Any] = {"provider": provider, "timestamp": ts}
    fields = _json_fields(body, id_field, "type")
    ident = fields.get(id_field)
    if ident is not None:
        claims["id"] = ident
    if "type" in fields:
        claims["event"] = fields["type"]
    return ProviderResult(
        provider=provider,
        claims=claims,
        replay_key=_key(
            provider.encode(), cfg.namespace, raw_ts.encode(), hashlib.sha256(body).digest()
        ),
        replay_ttl_seconds=2 * cfg.tolerance_seconds,
        strip_headers=_strip(cfg, (cfg.signature_header,)),
        add_headers=_add(cfg, ident),
    )


# --- GitHub ----------------------------------------------------------------------------------


def github_precheck(headers: Headers, cfg: GitHubConfig, now: float) -> None:
    sig = _one(headers, cfg.signature_header)
    assert sig is not None
    prefix, sep, hexmac = sig.partition("=")
    if not sep or prefix != "sha256" or not _HEX64_RE.fullmatch(hexmac):
        raise Rejection("malformed_token", f"{cfg.signature_header} is not sha256=<64 hex>")
    _id(headers, cfg.delivery_header)
    _optional_event(headers, cfg.event_header)


def github_verify(headers: Headers, body: bytes, cfg: GitHubConfig, now: float) -> ProviderResult:
    github_precheck(headers, cfg, now)
    sig = _one(headers, cfg.signature_header)
    delivery = _id(headers, cfg.delivery_header)
    assert sig is not None and delivery is not None
    presented = [bytes.fromhex(sig.partition("=")[2])]
    if not _any_equal(presented, _macs(cfg.secrets, body)):
        raise Rejection("bad_signature", f"{cfg.signature_header} does not verify")
    event = _optional_event(headers, cfg.event_header)
    # X-Hub-Signature is the SHA-1 MAC with the same secret: stripped with the SHA-256 one.
    signature = (cfg.signature_header, "X-Hub-Signature")
    unsigned = {"id": delivery} | ({"event": event} if event is not None else {})
    return _by_body("github", cfg, body, signature, unsigned)


# --- Stripe ----------------------------------------------------------------------------------


def _stripe_parse(headers: Headers, cfg: StripeConfig, now: float) -> tuple[int, str, list[bytes]]:
    """The signed timestamp (as sent and as a number) and the ``v1`` MACs of a Stripe-Signature.

    Unknown schemes (``v0``, Stripe's test-mode scheme, or future ones) are ignored as Stripe's
    own libraries do; anything outside the ``key=value,...`` grammar is refused.
    """
    header = _one(headers, cfg.signature_header)
    assert header is not None
    if len(header) > _MAX_SIGNATURE_HEADER_BYTES:
        raise Rejection("malformed_token", f"{cfg.signature_header} is too long")
    entries = header.split(",")
    if len(entries) > _MAX_STRIPE_ENTRIES:
        raise Rejection("malformed_token", f"{cfg.signature_header} has too many entries")
    stamps: list[str] = []
    v1: list[bytes] = []
    for entry in entries:
        scheme, sep, value = entry.strip().partition("=")
        if not sep or not scheme or not value:
            raise Rejection("malformed_token", f"{cfg.signature_header} is not key=value,...")
        if scheme == "t":
            stamps.append(value)
        elif scheme == "v1":
            if not _HEX64_RE.fullmatch(value):
                raise Rejection("malformed_token", "a v1 signature is not 64 lowercase hex")
            v1.append(bytes.fromhex(value))
    if len(stamps) != 1:
        raise Rejection("malformed_token", f"{cfg.signature_header} needs exactly one t=")
    if not v1:
        raise Rejection("malformed_token", f"{cfg.signature_header} has no v1 signature")
    ts = _timestamp(stamps[0], "the Stripe-Signature timestamp", cfg.tolerance_seconds, now)
    return ts, stamps[0], v1


def stripe_precheck(headers: Headers, cfg: StripeConfig, now: float) -> None:
    _stripe_parse(headers, cfg, now)


def stripe_verify(headers: Headers, body: bytes, cfg: StripeConfig, now: float) -> ProviderResult:
    ts, raw_ts, v1 = _stripe_parse(headers, cfg, now)
    if not _any_equal(v1, _macs(cfg.secrets, raw_ts.encode() + b"." + body)):
        raise Rejection("bad_signature", f"no v1 signature in {cfg.signature_header} verifies")
    # Stripe's retries carry a new t (and so a new replay key) but the same evt_ id, which the
    # backend de-duplicates on.
    return _timestamped("stripe", cfg, ts, raw_ts, body, "id")


# --- Slack -----------------------------------------------------------------------------------


def _slack_parse(headers: Headers, cfg: SlackConfig, now: float) -> tuple[int, str, bytes]:
    sig = _one(headers, cfg.signature_header)
    raw_ts = _one(headers, cfg.timestamp_header)
    assert sig is not None and raw_ts is not None
    version, sep, hexmac = sig.partition("=")
    if not sep or version != "v0" or not _HEX64_RE.fullmatch(hexmac):
        raise Rejection("malformed_token", f"{cfg.signature_header} is not v0=<64 hex>")
    ts = _timestamp(raw_ts, cfg.timestamp_header, cfg.tolerance_seconds, now)
    return ts, raw_ts, bytes.fromhex(hexmac)


def slack_precheck(headers: Headers, cfg: SlackConfig, now: float) -> None:
    _slack_parse(headers, cfg, now)


def slack_verify(headers: Headers, body: bytes, cfg: SlackConfig, now: float) -> ProviderResult:
    ts, raw_ts, mac = _slack_parse(headers, cfg, now)
    content = b"v0:" + raw_ts.encode() + b":" + body
    if not _any_equal([mac], _macs(cfg.secrets, content)):
        raise Rejection("bad_signature", f"{cfg.signature_header} does not verify")
    # Events API bodies are JSON with an event_id (constant across Slack's retries); slash
    # commands and interactivity are form-encoded and have none.
    return _timestamped("slack", cfg, ts, raw_ts, body, "event_id")


def slack_challenge(body: bytes) -> str | None:
    """The challenge to echo when ``body`` is Slack's ``url_verification`` request, else None.

    Call it only after :func:`slack_verify` accepted the request (Slack signs the handshake
    too), and only when ``answer_challenge`` is set. The answer is the challenge as
    ``text/plain``; a challenge that is not a short token is refused, never echoed.
    """
    try:
        doc = loads_strict(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("type") != "url_verification":
        return None
    challenge = doc.get("challenge")
    if not isinstance(challenge, str) or not _CHALLENGE_RE.fullmatch(challenge):
        raise Rejection("malformed_request", "the url_verification challenge is not a token")
    return challenge


# --- Shopify ---------------------------------------------------------------------------------


def _shopify_mac(headers: Headers, cfg: ShopifyConfig) -> bytes:
    value = _one(headers, cfg.signature_header)
    assert value is not None
    try:
        mac = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise Rejection("malformed_token", f"{cfg.signature_header} is not base64") from None
    if len(mac) != 32:
        raise Rejection("malformed_token", f"{cfg.signature_header} is not a SHA-256 MAC")
    return mac


def shopify_precheck(headers: Headers, cfg: ShopifyConfig, now: float) -> None:
    _shopify_mac(headers, cfg)
    _id(headers, cfg.webhook_id_header)
    _optional_event(headers, cfg.topic_header)
    shop = _one(headers, cfg.shop_header, required=False)
    if shop is not None and not _SHOP_RE.fullmatch(shop):
        raise Rejection("malformed_token", f"{cfg.shop_header} is not a host name")


def shopify_verify(headers: Headers, body: bytes, cfg: ShopifyConfig, now: float) -> ProviderResult:
    shopify_precheck(headers, cfg, now)
    mac = _shopify_mac(headers, cfg)
    webhook_id = _id(headers, cfg.webhook_id_header)
    assert webhook_id is not None
    if not _any_equal([mac], _macs(cfg.secrets, body)):
        raise Rejection("bad_signature", f"{cfg.signature_header} does not verify")
    topic = _optional_event(headers, cfg.topic_header)
    shop = _one(headers, cfg.shop_header, required=False)
    unsigned = {"id": webhook_id}
    if topic is not None:
        unsigned["event"] = topic
    if shop is not None:
        unsigned["shop"] = shop
    return _by_body("shopify", cfg, body, (cfg.signature_header,), unsigned)


# --- GitLab ----------------------------------------------------------------------------------


def _gitlab_dedupe_id(headers: Headers, cfg: GitLabConfig) -> str | None:
    for name in cfg.dedupe_headers:
        value = _id(headers, name, required=False)
        if value is not None:
            return value
    return None


def gitlab_precheck(headers: Headers, cfg: GitLabConfig, now: float) -> None:
    token = _one(headers, cfg.token_header)
    if not token:
        raise Rejection("missing_token", f"{cfg.token_header} is empty")
    _gitlab_dedupe_id(headers, cfg)
    _optional_event(headers, cfg.event_header)


def gitlab_verify(headers: Headers, body: bytes, cfg: GitLabConfig, now: float) -> ProviderResult:
    gitlab_precheck(headers, cfg, now)
    token = _one(headers, cfg.token_header)
    assert token is not None
    # surrogateescape: a header aiohttp decoded from non-UTF-8 bytes still compares (and fails).
    if not _any_equal([token.encode("utf-8", "surrogateescape")], list(cfg.secrets)):
        raise Rejection("bad_signature", f"{cfg.token_header} does not match")
    claims: dict[str, Any] = {"provider": "gitlab"}
    event = _optional_event(headers, cfg.event_header)
    if event is not None:
        claims["event"] = event
    # GitLab signs nothing: the token authenticates the sender, and whoever captured one request
    # holds it and can send any body under any id. The key below stops GitLab's own retries and
    # resends (same id, same body), not an attacker; that needs TLS and a secret rotation.
    ident = _gitlab_dedupe_id(headers, cfg)
    key = None
    if ident is not None:
        claims["id"] = ident
        # X-Gitlab-Event-UUID is shared by the webhooks an event triggers recursively, which are
        # different requests: the event name and body keep those apart, while a retry (same
        # headers, same body) keeps its key.
        key = _key(
            b"gitlab",
            cfg.namespace,
            ident.encode(),
            (event or "").encode(),
            hashlib.sha256(body).digest(),
        )
    return ProviderResult(
        provider="gitlab",
        claims=claims,
        replay_key=key,
        replay_ttl_seconds=cfg.dedupe_seconds,
        strip_headers=_strip(cfg, (cfg.token_header,)),
        add_headers=_add(cfg, ident),
    )


# --- dispatch by config type -----------------------------------------------------------------

_PRECHECK: Final[dict[type, Callable[[Headers, Any, float], None]]] = {
    GitHubConfig: github_precheck,
    StripeConfig: stripe_precheck,
    SlackConfig: slack_precheck,
    ShopifyConfig: shopify_precheck,
    GitLabConfig: gitlab_precheck,
}
_VERIFY: Final[dict[type, Callable[[Headers, bytes, Any, float], ProviderResult]]] = {
    GitHubConfig: github_verify,
    StripeConfig: stripe_verify,
    SlackConfig: slack_verify,
    ShopifyConfig: shopify_verify,
    GitLabConfig: gitlab_verify,
}


def precheck(headers: Headers, cfg: ProviderConfig, now: float) -> None:
    """The headers-only phase of whichever provider ``cfg`` configures."""
    _PRECHECK[type(cfg)](headers, cfg, now)


def verify(headers: Headers, body: bytes, cfg: ProviderConfig, now: float) -> ProviderResult:
    """The body phase (the headers-only checks included) of whichever provider ``cfg`` is."""
    return _VERIFY[type(cfg)](headers, body, cfg, now)
