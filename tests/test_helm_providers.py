"""The chart with provider webhook issuers: the schema takes their types and sections, and
``issuerFiles.<name>.webhookSecrets`` mounts their secrets into the section of their type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import PROVIDER_TYPES, parse_config, read_files
from tests.test_helm import STANDALONE, Helm, helm, helm_env, merged, mounted_config

__all__ = ["helm", "helm_env"]  # the fixtures, used by name below


def provider_values(kind: str) -> dict[str, Any]:
    return {
        "issuerFiles": {"hooks": {"webhookSecrets": {"secretName": "hooks", "keys": ["a", "b"]}}},
        "config": {
            "issuers": [
                {
                    "name": "hooks",
                    "type": kind,
                    "path_prefix": "/hooks",
                    kind: {"keep_signature": True},
                }
            ]
        },
    }


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_webhook_secrets_land_in_the_providers_section(
    helm: Helm, tmp_path: Path, kind: str
) -> None:
    _, config = mounted_config(helm.template(merged(STANDALONE, provider_values(kind))))
    (issuer,) = config["issuers"]
    paths = issuer[kind]["secret_files"]
    assert paths == [
        "/run/jwksgate/issuers/hooks/webhook-secrets/a",
        "/run/jwksgate/issuers/hooks/webhook-secrets/b",
    ]
    assert "standard_webhooks" not in issuer
    assert issuer[kind]["keep_signature"] is True
    # The gateway loads it, with the files where the pod has them.
    local = []
    for i, path in enumerate(paths):
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = "whsec_" if kind == "stripe" else ""
        target.write_text(f"{prefix}mounted-secret-number-{i}\n")
        local.append(str(target))
    issuer[kind]["secret_files"] = local
    loaded = read_files(parse_config(config)).issuers[0].provider
    assert loaded is not None
    assert len(loaded.secrets) == 2


def test_the_schema_refuses_a_misspelt_provider_key(helm: Helm) -> None:
    values = provider_values("github")
    values["config"]["issuers"][0]["github"] = {"dedupe_second": 60}
    error = helm.template_error(merged(STANDALONE, values))
    assert "schema" in error
    assert "dedupe_second" in error
