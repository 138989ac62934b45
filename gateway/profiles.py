"""Sender profiles: presets for the push formats real senders emit (see docs/profiles.md).

A profile fills in an issuer's fields; any field written explicitly in the config wins. Presets are
plain YAML-shaped mappings so that they go through exactly the same validation as a config.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES", "REQUIRED", "apply_profile"]

_A2A_BODY_HASH = {"claim": "request_body_sha256", "encoding": "hex"}

PROFILES: dict[str, dict[str, Any]] = {
    # A2A Python samples and their forks: PyJWT RS256, kid = uuid4, claims iat +
    # request_body_sha256 over the compact JSON re-serialisation; no iss, exp or jti.
    "a2a-samples": {
        "algorithms": ["RS256"],
        "require_kid": True,
        "require_claims": ["iat", "request_body_sha256"],
        "replay_key": "token",
        "max_token_age_seconds": 300,
        "clock_skew_seconds": 5,
        "body_hash": {**_A2A_BODY_HASH, "over": "raw_or_json"},
    },
    # trpc-group/trpc-a2a-go: RS256, kid key-<unix time>, hash of the exact body bytes (Go's
    # encoder escapes <, >, & so re-serialising would break it).
    "trpc-a2a-go": {
        "algorithms": ["RS256"],
        "require_kid": True,
        "require_claims": ["iat", "request_body_sha256"],
        "replay_key": "token",
        "max_token_age_seconds": 300,
        "body_hash": {**_A2A_BODY_HASH, "over": "raw"},
    },
    # a2a4j (Java port): sub, iss, iat, exp = iat + 60 s, request_body_sha256 of the bytes sent.
    "a2a4j": {
        "algorithms": ["RS256"],
        "require_claims": ["iss", "iat", "exp", "request_body_sha256"],
        "replay_key": "token",
        "max_token_age_seconds": 300,
        "max_lifetime_seconds": 300,
        "body_hash": {**_A2A_BODY_HASH, "over": "raw"},
        "forward_claims": {"sub": "X-Jwt-Sub"},
    },
    # The Java port without kid: iat, request_body_sha256, agent_name.
    "a2a-nokid": {
        "algorithms": ["RS256"],
        "require_kid": False,
        "require_claims": ["iat", "request_body_sha256"],
        "replay_key": "token",
        "max_token_age_seconds": 300,
        "body_hash": {**_A2A_BODY_HASH, "over": "raw"},
        "forward_claims": {"agent_name": "X-Jwt-Agent-Name"},
    },
    # What the A2A specification recommends for new senders: iss, aud, iat, exp, jti (+ taskId).
    "a2a-spec": {
        "algorithms": ["RS256", "ES256"],
        "require_claims": ["iss", "aud", "iat", "exp", "jti"],
        "replay_key": "jti",
        "forward_claims": {"taskId": "X-Jwt-Task-Id", "sub": "X-Jwt-Sub"},
    },
    # What the official A2A SDKs send: a fixed token, no JWT.
    "a2a-static-token": {
        "type": "static_token",
        "static_token": {
            "headers": ["Authorization", "X-A2A-Notification-Token", "A2A-Notification-Token"]
        },
    },
}

# Fields a profile cannot guess: the operator must write them.
REQUIRED: dict[str, tuple[str, ...]] = {
    "a2a-samples": ("jwks_url",),
    "trpc-a2a-go": ("jwks_url",),
    "a2a4j": ("jwks_url", "issuer"),
    "a2a-nokid": ("jwks_url",),
    "a2a-spec": ("jwks_url", "issuer", "audiences"),
    "a2a-static-token": (),
}

_MERGED = ("body_hash", "jwks", "static_token", "standard_webhooks")


def apply_profile(profile: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The issuer mapping with the profile's presets under the explicit fields."""
    merged = {**PROFILES[profile], **explicit}
    for key in _MERGED:
        preset, given = PROFILES[profile].get(key), explicit.get(key)
        if isinstance(preset, dict) and isinstance(given, dict):
            merged[key] = {**preset, **given}
    merged.pop("profile", None)
    return merged
