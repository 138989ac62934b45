"""Where a JWT issuer's token is (``token_from``), as pure decisions: read it from the request's
headers or query, and take it out of what is forwarded (unless ``keep_token``).

- ``{header: Authorization, scheme: Bearer}`` (the default): RFC 6750 2.1;
- another scheme (``scheme: Token``) or another header (``X-Webhook-Token``; no scheme: the
  whole value is the token);
- ``{query: token}``: RFC 6750 2.3. Such a token ends up in the access logs of every proxy on
  the way; the gateway itself never logs a query string.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

from gateway import verify
from gateway.config import TokenFromConfig
from gateway.errors import Rejection

__all__ = ["extract_token", "forwarded_path", "from_header", "from_query"]

# The longest query parameter value looked at: a token longer than verify accepts is refused
# there; this only bounds the work of decoding.
_MAX_QUERY_VALUE = 16384


def _checked(token: str, where: str) -> str:
    token = token.strip(" ")
    if not token:
        raise Rejection("malformed_token", f"the token in {where} is empty")
    if verify.has_whitespace(token):
        raise Rejection("malformed_token", f"the token in {where} contains whitespace")
    return token


def from_header(values: Sequence[str], name: str, scheme: str | None) -> str:
    """The token of the single ``name`` header: after ``scheme`` and spaces, or the whole value."""
    if not values:
        raise Rejection("missing_token", f"no {name} header")
    if len(values) > 1:
        raise Rejection("malformed_request", f"more than one {name} header")
    value = values[0]
    if scheme is None:
        return _checked(value, name)
    word, _sep, rest = value.partition(" ")
    if word.lower() != scheme.lower():
        raise Rejection("missing_token", f"the {name} header is not a {scheme} token")
    return _checked(rest, name)


def _params(raw_query: str) -> list[tuple[str, str, str]]:
    """``(raw item, decoded name, raw value)`` of each ``&``-separated item."""
    out = []
    for item in raw_query.split("&"):
        name, _sep, value = item.partition("=")
        out.append((item, unquote(name.replace("+", " ")), value))
    return out


def from_query(raw_query: str, name: str) -> str:
    """The token of the single ``name`` query parameter (percent-decoded)."""
    found = [value for _item, n, value in _params(raw_query) if n == name] if raw_query else []
    if not found:
        raise Rejection("missing_token", f"no {name} query parameter")
    if len(found) > 1:
        raise Rejection("malformed_request", f"more than one {name} query parameter")
    if len(found[0]) > _MAX_QUERY_VALUE:
        raise Rejection("malformed_token", "the token is too long")
    return _checked(unquote(found[0].replace("+", " ")), f"the {name} query parameter")


def extract_token(
    spec: TokenFromConfig, authorization: Sequence[str], header: Sequence[str], raw_query: str
) -> str:
    """The token where ``spec`` says it is. ``authorization`` are the request's Authorization
    values, ``header`` those of ``spec.header`` (the same when that is Authorization)."""
    if spec.query is not None:
        return from_query(raw_query, spec.query)
    assert spec.header is not None
    if spec.header.lower() == "authorization" and (spec.scheme or "").lower() == "bearer":
        return verify.extract_bearer(authorization)
    return from_header(header, spec.header, spec.scheme)


def forwarded_path(raw_path: str, spec: TokenFromConfig, keep: bool) -> str:
    """The path and query sent to the backend: as received, less the token's query parameter
    when the token came in the query and is not kept. Every other byte stays as received
    (order, encoding, empty items)."""
    if spec.query is None or keep:
        return raw_path
    path, sep, raw_query = raw_path.partition("?")
    if not sep:
        return raw_path
    kept = [item for item, name, _value in _params(raw_query) if name != spec.query]
    return f"{path}?{'&'.join(kept)}" if kept else path
