"""Review findings on provider config keys that validate badly (review1)."""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.test_providers_config import problems, secret_for
from tests.test_providers_e2e import issuers


@pytest.mark.parametrize("header", ["X-Jwt-Issuer", "X-Jwt-Claims", "X-Request-Id", "X-Real-IP"])
def test_id_header_cannot_be_a_header_the_gateway_sets(header: str) -> None:
    """The id is set last and replaces the gateway's own header; for GitHub and Shopify the
    value is an unsigned header the sender chooses."""
    found = problems("github", {"secrets": [secret_for("github")], "id_header": header})
    assert any("id_header" in p for p in found), found


def test_an_unsigned_delivery_id_can_overwrite_the_issuer_header() -> None:
    """Fixed at load: a GitHub sender (whose id is unsigned) can no longer pick the issuer name
    the backend sees, because ``id_header: X-Jwt-Issuer`` is refused."""

    def extra(provider: str, mode: str) -> dict[str, str]:
        return {"id_header": "X-Jwt-Issuer"} if provider == "github" else {}

    with pytest.raises(ConfigError) as info:
        parse_config({"issuers": issuers(extra)})
    found = info.value.problems
    assert any("github.id_header" in p and "gateway sets itself" in p for p in found), found


@pytest.mark.parametrize("kind", ["stripe", "slack"])
def test_tolerance_seconds_is_bounded_like_dedupe_seconds(kind: str) -> None:
    """A year of tolerance disables the timestamp check and keeps every key for two years."""
    found = problems(kind, {"secrets": [secret_for(kind)], "tolerance_seconds": 365 * 86_400})
    assert any("tolerance_seconds" in p for p in found), found
