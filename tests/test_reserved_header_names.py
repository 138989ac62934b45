"""Configured header names may not replace a header the gateway sets (review finding 4), and a
signed timestamp's window is bounded (finding 6)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

SECRET = "a-long-enough-provider-secret-0123456789"


def refused(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def github(**section: Any) -> dict[str, Any]:
    return {"name": "gh", "type": "github", "github": {"secrets": [SECRET], **section}}


@pytest.mark.parametrize(
    "header", ["Forwarded", "X-Forwarded-Port", "x_forwarded_for", "Idempotency-Key", "X-Claims"]
)
def test_id_header_cannot_name_a_header_the_gateway_sets(header: str) -> None:
    data = {"forward": {"claims_header": "X-Claims"}, "issuers": [github(id_header=header)]}
    found = refused(data)
    assert any("github.id_header" in p and "gateway sets itself" in p for p in found), found


@pytest.mark.parametrize("header", ["X-Jwt-Issuer", "X-Real-IP", "X-Request-Id", "X-Jwt-Claims"])
def test_forward_claims_cannot_name_a_header_the_gateway_sets(header: str) -> None:
    found = refused({"issuers": [{**github(), "forward_claims": {"event": header}}]})
    assert any("forward_claims.event" in p and "gateway sets itself" in p for p in found), found


def test_an_ordinary_header_name_is_still_accepted() -> None:
    config = parse_config(
        {"issuers": [{**github(id_header="X-Delivery"), "forward_claims": {"x": "X-Event"}}]}
    )
    assert config.issuers[0].forward_claims == (("x", "X-Event"),)


def test_standard_webhooks_tolerance_is_capped() -> None:
    issuer = {
        "name": "sw",
        "type": "standard_webhooks",
        "standard_webhooks": {
            "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "tolerance_seconds": 3601,
        },
    }
    found = refused({"issuers": [issuer]})
    assert any("tolerance_seconds" in p and "at most 3600" in p for p in found), found
