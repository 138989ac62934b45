"""``handshake: echo``: an endpoint-ownership check (``GET ?validationToken=...``) answered by
echoing the challenge, before any credential is asked for."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from gateway.config import IssuerConfig
from gateway.errors import Rejection

__all__ = ["challenge"]

_HANDSHAKE_RE = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def challenge(
    issuers: Sequence[IssuerConfig], method: str, query: Mapping[str, str]
) -> tuple[IssuerConfig, str] | None:
    """The issuer owning the path and the text to echo, when this request is a handshake.

    A ``validationToken`` that is not harmless to echo is refused (``malformed_request``).
    """
    if not issuers or issuers[0].handshake != "echo" or method not in ("GET", "HEAD"):
        return None
    value = query.get("validationToken")
    if value is None:
        return None
    if not _HANDSHAKE_RE.fullmatch(value):
        raise Rejection("malformed_request", "validationToken must be 1-256 URL-safe characters")
    return issuers[0], value
