"""The gateway's own errors, each carrying its reason code and HTTP status (contract §4).

::

    Rejection                  a request that is not forwarded; one reason code, one status
    ConfigError                an invalid configuration; one line per problem, naming its YAML path

Library errors (jwcrypto, cryptography, aiohttp's client, redis) never leave the module that calls
the library: they are translated into a ``Rejection`` at that edge, so the request handler catches
one type in one place and maps it to one answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["REASONS", "ConfigError", "Rejection"]

# reason code -> HTTP status; the single source for the contract's table.
REASONS: Final[dict[str, int]] = {
    "malformed_request": 400,
    "missing_token": 401,
    "malformed_token": 401,
    "unknown_issuer": 401,
    "disallowed_algorithm": 401,
    "disallowed_type": 401,
    "missing_kid": 401,
    "unknown_kid": 401,
    "bad_signature": 401,
    "expired": 401,
    "not_yet_valid": 401,
    "token_too_old": 401,
    "lifetime_too_long": 401,
    "bad_issuer": 401,
    "bad_audience": 401,
    "missing_claim": 401,
    "invalid_claim": 401,
    "body_hash_mismatch": 401,
    "request_timeout": 408,
    "replayed": 409,
    "body_too_large": 413,
    "upstream_unavailable": 502,
    "upstream_timeout": 504,
    "jwks_unavailable": 503,
    "replay_store_unavailable": 503,
    "replay_store_full": 503,
    "replay_in_flight": 503,
    "overloaded": 503,
    "shutting_down": 503,
    # Not in the contract's table: a bug in the gateway. Retryable, like every 5xx.
    "internal_error": 500,
}


class Rejection(Exception):
    """A request the gateway answers itself. ``detail`` is one human sentence, safe to return."""

    def __init__(self, reason: str, detail: str, *, retry_after: int | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = REASONS[reason]
        self.retry_after = retry_after


class ConfigError(Exception):
    """An invalid config; ``problems`` are lines like ``issuers[1].jwks_url: must be ...``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
