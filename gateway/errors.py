"""The gateway's own errors and the one table of reason codes.

::

    REASONS                    reason code -> Reason(status, outcome, retryable, advice)
    Rejection                  a request that is not forwarded; one reason code, one status
    ConfigError                an invalid configuration; one line per problem, naming its YAML path

Library errors (jwcrypto, cryptography, aiohttp's client, redis) never leave the module that calls
the library: they are translated into a ``Rejection`` at that edge, so the request handler catches
one type in one place and ``answers`` renders it. The README's status table is rendered from
``REASONS`` (``status_table``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["REASONS", "ConfigError", "Reason", "Rejection", "status_table"]


@dataclass(frozen=True, slots=True)
class Reason:
    """What one reason code means to the sender and to the metrics.

    ``outcome`` is the ``jwksgate_requests_total`` label: ``rejected`` when the sender's request
    was refused, ``error`` when the gateway or its backend failed. ``advice`` is what the sender
    should do, as the README's table says it.
    """

    status: int
    outcome: Literal["rejected", "error"]
    retryable: bool
    advice: str


_FIX = Reason(400, "rejected", False, "fix the request")
_DENIED = Reason(401, "rejected", False, "not retry the same token")
_LATER = Reason(503, "rejected", True, "retry after `Retry-After`")
_NOT_CONSUMED = (
    "retry: the token was released, so the retry is taken (if the request had reached the"
    " backend, it may have acted on it: de-duplicate on `Idempotency-Key`)"
)

REASONS: Final[dict[str, Reason]] = {
    "malformed_request": _FIX,
    "missing_token": _DENIED,
    "malformed_token": _DENIED,
    "unknown_issuer": _DENIED,
    "disallowed_algorithm": _DENIED,
    "disallowed_type": _DENIED,
    "missing_kid": _DENIED,
    "unknown_kid": _DENIED,
    "bad_signature": _DENIED,
    "expired": _DENIED,
    "not_yet_valid": _DENIED,
    "token_too_old": _DENIED,
    "lifetime_too_long": _DENIED,
    "bad_issuer": _DENIED,
    "bad_audience": _DENIED,
    "missing_claim": _DENIED,
    "invalid_claim": _DENIED,
    "body_hash_mismatch": _DENIED,
    "request_timeout": Reason(408, "rejected", True, "retry"),
    "replayed": Reason(409, "rejected", False, "stop: already delivered"),
    "body_too_large": Reason(413, "rejected", False, "not retry"),
    "upstream_unavailable": Reason(502, "error", True, _NOT_CONSUMED),
    "upstream_timeout": Reason(504, "error", True, _NOT_CONSUMED),
    "jwks_unavailable": _LATER,
    "replay_store_unavailable": _LATER,
    "replay_store_full": _LATER,
    "replay_in_flight": _LATER,
    "overloaded": _LATER,
    "shutting_down": _LATER,
    # A bug in the gateway. Retryable, like every 5xx.
    "internal_error": Reason(
        500, "error", True, "retry (a gateway bug; logged with its traceback)"
    ),
}


def status_table() -> str:
    """The README's "What the sender gets back" table, one row per piece of advice.

    Reasons that share advice but not a status (502 and 504) share a row as ``502 / 504``.
    """
    groups: dict[str, list[str]] = {}
    for code, reason in REASONS.items():
        groups.setdefault(reason.advice, []).append(code)
    rows = [
        "| status | reason codes | the sender should |",
        "| --- | --- | --- |",
        "| 2xx\u20135xx from the backend | \u2013 | the backend's own answer, unchanged |",
    ]
    for advice, codes in sorted(groups.items(), key=lambda g: min(REASONS[c].status for c in g[1])):
        statuses = list(dict.fromkeys(REASONS[c].status for c in codes))
        sep = " / " if len(statuses) > 1 else ", "
        listed = sep.join(f"`{c}`" for c in codes)
        rows.append(f"| {' / '.join(map(str, statuses))} | {listed} | {advice} |")
    return "\n".join(rows) + "\n"


class Rejection(Exception):
    """A request the gateway answers itself. ``detail`` is one human sentence, safe to return.

    ``issuer`` and ``kid`` name what the decision was made for, once known, so that the access
    record of a refused request still says which sender it claimed to be.
    """

    def __init__(self, reason: str, detail: str, *, retry_after: int | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = REASONS[reason].status
        self.outcome = REASONS[reason].outcome
        self.retry_after = retry_after
        self.issuer: str | None = None
        self.kid: str | None = None


class ConfigError(Exception):
    """An invalid config; ``problems`` are lines like ``issuers[1].jwks_url: must be ...``."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
