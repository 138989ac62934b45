"""What the backend receives and what goes back to the sender, as pure header decisions.

The request is forwarded only after it is verified and its body fully read (store-and-forward up to
``max_body_bytes``), with one clean framing: inbound ``Content-Length``/``Transfer-Encoding`` are
never copied, the client library computes them for the bytes it sends.

Forwarding headers (who the client is, which URL it asked for) are decided per header, the way
Envoy's ``use_remote_address`` with ``xff_num_trusted_hops`` does: ``X-Forwarded-For`` is the
address the gateway saw (appended to the inbound list only behind ``forward.trusted_hops``
trusted proxies), ``X-Forwarded-Proto``/``-Host`` and ``Forwarded`` say what the gateway saw
(or the trusted proxy's values), ``X-Real-IP`` is the client address so decided, and every other
header of ``CLIENT_FORWARDING_HEADERS`` is stripped unless listed in ``forward.preserve_headers``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import CLIENT_FORWARDING_HEADERS, ForwardConfig, IssuerConfig

__all__ = [
    "ISSUER_HEADER",
    "MAX_CLAIM_HEADER_BYTES",
    "REQUEST_ID_HEADER",
    "forwarding_headers",
    "gateway_header_names",
    "header_value",
    "idempotency_key",
    "response_headers",
    "upstream_headers",
]

ISSUER_HEADER = "X-Jwt-Issuer"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_CLAIM_HEADER_BYTES = 4096
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Framing and routing headers the client library sets for the bytes it actually sends.
_NOT_COPIED = frozenset({"host", "content-length", "expect"})
# Set by the gateway on every forwarded push (forwarding_headers), never copied from the client.
_FORWARDED_FOR = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Forwarded",
    "X-Real-IP",
)
_PROTOS = frozenset({"http", "https"})


def _norm(name: str) -> str:
    # Some backends (CGI, WSGI) fold "_" into "-": X_Jwt_Sub must be stripped like X-Jwt-Sub.
    return name.lower().replace("_", "-")


def header_value(value: Any) -> str:
    """A claim as a header value: printable ASCII strings as is, anything else as compact JSON
    with non-ASCII and control characters escaped (never a raw CR, LF, NUL or DEL)."""
    if isinstance(value, str) and _PRINTABLE_RE.fullmatch(value):
        return value
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("\x7f", "\\u007f")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(_norm(t.strip()) for t in value.split(",") if t.strip())
    return tokens


def gateway_header_names(forward: ForwardConfig, issuers: Iterable[IssuerConfig]) -> frozenset[str]:
    """Every header name the gateway itself sets, normalised; inbound copies are removed."""
    names = {ISSUER_HEADER, forward.claims_header, REQUEST_ID_HEADER, *_FORWARDED_FOR}
    # Client-sent forwarding headers are stripped like the gateway's own, unless preserved.
    names.update(h for h in CLIENT_FORWARDING_HEADERS if h not in forward.preserve_headers)
    if forward.idempotency_header:
        names.add(forward.idempotency_header)
    for issuer in issuers:
        names.update(header for _claim, header in issuer.forward_claims)
    return frozenset(_norm(n) for n in names)


def _list_items(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    return [item.strip() for v in headers.getall(name, []) for item in v.split(",") if item.strip()]


def _forwarded_node(address: str) -> str:
    """An address as an RFC 7239 node: IPv6 bracketed and quoted, none as ``unknown``."""
    if not address:
        return "unknown"
    if ":" in address:
        return f'"[{address}]"'
    return address


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarding_headers(
    incoming: CIMultiDictProxy[str], forward: ForwardConfig, *, client: str, proto: str, host: str
) -> list[tuple[str, str]]:
    """The forwarding headers the backend gets, from what the gateway saw: the peer ``client``,
    its own scheme ``proto`` and the ``host`` asked for.

    With ``trusted_hops`` 0 the gateway is the edge: whatever the client sent in these headers
    is replaced. With N trusted proxies in front, their ``X-Forwarded-For`` list is kept and the
    peer appended, the client is the N+1-th address from the right (the peer when the list is
    shorter: the request did not come through them all), and their ``X-Forwarded-Proto``/
    ``-Host`` and ``Forwarded`` are kept (``Forwarded`` with the gateway's element appended).
    """
    hops = forward.trusted_hops
    chain = [*_list_items(incoming, "X-Forwarded-For"), client] if hops else [client]
    real = chain[-(hops + 1)] if len(chain) > hops else client
    # The gateway's own Forwarded element describes the hop it received (RFC 7239 section 4).
    shown_host = header_value(host)
    element = f"for={_forwarded_node(client)};host={_quoted(shown_host)};proto={proto}"
    if not hops:
        return [
            ("X-Forwarded-For", client),
            ("X-Forwarded-Proto", proto),
            ("X-Forwarded-Host", shown_host),
            ("Forwarded", element),
            ("X-Real-IP", client),
        ]
    protos = _list_items(incoming, "X-Forwarded-Proto")
    sender_proto = protos[-1].lower() if protos and protos[-1].lower() in _PROTOS else proto
    hosts = _list_items(incoming, "X-Forwarded-Host")  # the nearest proxy's is the last
    return [
        ("X-Forwarded-For", ", ".join(chain)),
        ("X-Forwarded-Proto", sender_proto),
        ("X-Forwarded-Host", header_value(hosts[-1] if hosts else host)),
        ("Forwarded", ", ".join([*incoming.getall("Forwarded", []), element])),
        ("X-Real-IP", real),
    ]


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    *,
    forward: ForwardConfig,
    gateway_headers: frozenset[str],
    issuer: IssuerConfig,
    claims: Mapping[str, Any],
    payload_segment: str,
    client: str,
    proto: str,
    host: str,
    request_id: str,
    strip: Iterable[str] = (),
    add: Iterable[tuple[str, str]] = (),
) -> tuple[CIMultiDict[str], int]:
    """The headers sent to the backend, and how many claim headers were left out as too long.

    ``strip`` names headers never forwarded (a provider's signature); ``add`` are set last (a
    provider's delivery id: from the verified body for Stripe and Slack, an unsigned header for
    GitHub, Shopify and GitLab), replacing any incoming copy; config.py refuses an ``add`` name
    that is a header the gateway sets itself."""
    drop, prefix = _plan(forward, issuer, gateway_headers, strip)
    listed = _connection_tokens(incoming) if "Connection" in incoming else _NOTHING
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        n = name.lower().replace("_", "-")  # _norm, inline: once per inbound header
        if n in drop or n in listed or n.startswith(prefix):
            continue
        out.add(name, value)
    for name, value in forwarding_headers(incoming, forward, client=client, proto=proto, host=host):
        out[name] = value
    out[REQUEST_ID_HEADER] = request_id
    out[ISSUER_HEADER] = issuer.name
    # The payload segment is already base64url (no padding) of the verified claims JSON: the
    # exact signed bytes, with no re-serialisation on the hot path.
    out[forward.claims_header] = payload_segment
    omitted = 0
    for claim, header in issuer.forward_claims:
        if claim not in claims:
            continue
        value = header_value(claims[claim])
        if len(value) > MAX_CLAIM_HEADER_BYTES:
            omitted += 1
            continue
        out[header] = value
    for name, value in add:
        out[name] = value
    return out, omitted


_NOTHING: frozenset[str] = frozenset()
# Plans kept, one per (forward, issuer, gateway headers, strip) in use: a handful per config;
# past the bound (reloads) they are dropped all at once and made again.
MAX_PLANS = 256
_PLANS: dict[
    tuple[int, int, int, tuple[str, ...]],
    tuple[ForwardConfig, IssuerConfig, frozenset[str], frozenset[str], str],
] = {}


def _plan(
    forward: ForwardConfig,
    issuer: IssuerConfig,
    gateway_headers: frozenset[str],
    strip: Iterable[str],
) -> tuple[frozenset[str], str]:
    """The normalised names never copied to the backend and the claim header prefix, for one
    issuer under one config: the same every request, so made once. Kept by the objects' ids;
    each entry holds the objects themselves, so an id cannot be reused while its entry lives."""
    strip = strip if isinstance(strip, tuple) else tuple(strip)
    key = (id(forward), id(issuer), id(gateway_headers), strip)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is forward and hit[1] is issuer and hit[2] is gateway_headers:
        return hit[3], hit[4]
    secrets: set[str] = set()
    if issuer.static_token is not None and not forward.keep_token:
        # The notification token is a credential, like Authorization: the backend never sees it.
        secrets.update(_norm(h) for h in issuer.static_token.headers)
    location = issuer.token_from
    kept = forward.keep_token or (issuer.type == "jwt" and location.keep_token)
    if issuer.type == "jwt" and location.header is not None and not kept:
        # The header that carried the JWT (token_from), like Authorization: never forwarded.
        secrets.add(_norm(location.header))
    # Authorization is a credential whoever sent it: kept only when it is the kept token.
    keep_authorization = forward.keep_token or (
        kept and (location.header or "").lower() == "authorization"
    )
    if not keep_authorization:
        secrets.add("authorization")
    drop = frozenset(
        _HOP_BY_HOP | _NOT_COPIED | gateway_headers | secrets | {_norm(h) for h in strip}
    )
    prefix = _norm(forward.header_prefix)
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = (forward, issuer, gateway_headers, drop, prefix)
    return drop, prefix


# 128 bits of SHA-256: collision-free for any number of pushes a backend will ever keep.
IDEMPOTENCY_KEY_HEX = 32


def idempotency_key(replay_key: bytes) -> str:
    """The ``Idempotency-Key`` value for a push, from its replay key.

    The replay key is ``<sender namespace>:`` + SHA-256 of the push's own id (a JWT's jti, or its
    signed bytes with ``replay_key: token``; a Standard Webhooks webhook-id), so the value is the
    same on every retry of one push, on every replica, and differs between senders that reuse an
    id. It is a domain-separated hash of that key, not the key itself (nothing the replay store
    holds is handed out), as a Structured Field string (RFC 8941), which the IETF draft
    (draft-ietf-httpapi-idempotency-key-header) makes the header's syntax.
    """
    digest = hashlib.sha256(b"jwksgate idempotency-key\x00" + replay_key).hexdigest()
    return '"' + digest[:IDEMPOTENCY_KEY_HEX] + '"'


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The backend's response headers less hop-by-hop ones (and the framing aiohttp redoes)."""
    listed = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        n = name.lower()
        if n in _HOP_BY_HOP or n in listed or n == "content-length":
            continue
        out.add(name, value)
    return out
