"""The provider issuers' config: ``type: github`` (stripe, slack, shopify, gitlab) and the section
of the same name, with the loader's usual YAML paths and did-you-mean."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import verify
from gateway.cli import summary
from gateway.config import (
    MAX_DEDUPE_SECONDS,
    PROVIDER_TYPES,
    IssuerConfig,
    load_config,
    parse_config,
    read_files,
)
from gateway.errors import ConfigError
from gateway.providers import GitHubConfig, GitLabConfig, ShopifyConfig, SlackConfig, StripeConfig

CHART_SCHEMA = Path(__file__).resolve().parent.parent / "helm/jwksgate/values.schema.json"
SECRET = "a-secret-of-16-chars-or-more"


def one(kind: str, section: dict[str, Any] | None = None, **issuer: Any) -> IssuerConfig:
    data = {"name": "p", "type": kind, kind: section or {"secrets": [secret_for(kind)]}, **issuer}
    return parse_config({"issuers": [data]}).issuers[0]


def secret_for(kind: str) -> str:
    return "whsec_" + SECRET if kind == "stripe" else SECRET


def problems(kind: str, section: Any, **issuer: Any) -> list[str]:
    data = {"name": "p", "type": kind, kind: section, **issuer}
    with pytest.raises(ConfigError) as info:
        parse_config({"issuers": [data]})
    return info.value.problems


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_defaults(kind: str) -> None:
    cfg = one(kind).provider
    expected = {
        "github": GitHubConfig,
        "stripe": StripeConfig,
        "slack": SlackConfig,
        "shopify": ShopifyConfig,
        "gitlab": GitLabConfig,
    }[kind]
    assert type(cfg) is expected
    assert cfg is not None
    assert cfg.secrets == (secret_for(kind).encode(),)
    assert cfg.keep_signature is False
    assert cfg.id_header == "X-Webhook-Id"
    if isinstance(cfg, StripeConfig | SlackConfig):
        assert cfg.tolerance_seconds == 300.0
    else:
        assert cfg.dedupe_seconds == (259_200.0 if kind == "github" else 86_400.0)


def test_stripe_whsec_secret_is_the_literal_string_not_base64_decoded() -> None:
    # "whsec_" + valid base64: a Standard Webhooks loader would decode it; Stripe's SDK does not.
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    cfg = one("stripe", {"secrets": [secret]}).provider
    assert cfg is not None
    assert cfg.secrets == (secret.encode(),)


def test_stripe_refuses_what_is_not_a_signing_secret() -> None:
    assert problems("stripe", {"secrets": ["sk_live_0123456789abcdef"]}) == [
        "issuers[0].stripe.secrets[0]: must be the endpoint's signing secret (whsec_...), "
        "not an API key"
    ]


def test_gitlab_dedupe_headers_and_no_id_header() -> None:
    cfg = one(
        "gitlab", {"secrets": [SECRET], "dedupe_headers": ["X-Request-Uuid"], "id_header": ""}
    )
    assert isinstance(cfg.provider, GitLabConfig)
    assert cfg.provider.dedupe_headers == ("X-Request-Uuid",)
    assert cfg.provider.id_header == ""
    assert problems("gitlab", {"secrets": [SECRET], "dedupe_headers": ["Bad Header"]}) == [
        "issuers[0].gitlab.dedupe_headers[0]: must be a valid HTTP header name (letters, digits "
        'and !#$%&\'*+.^_`|~-), not "Bad Header"'
    ]


def test_rotation_and_keys() -> None:
    cfg = one(
        "slack",
        {
            "secrets": [SECRET, SECRET + "-new"],
            "tolerance_seconds": 120,
            "keep_signature": True,
            "answer_challenge": True,
            "id_header": "X-Slack-Event-Id",
        },
    ).provider
    assert isinstance(cfg, SlackConfig)
    assert cfg.secrets == (SECRET.encode(), (SECRET + "-new").encode())
    assert (cfg.tolerance_seconds, cfg.keep_signature, cfg.answer_challenge) == (120, True, True)
    assert cfg.id_header == "X-Slack-Event-Id"


def test_replay_namespace_is_the_issuers() -> None:
    for iss in (one("github"), one("github", issuer="https://github.com/acme")):
        assert iss.provider is not None
        assert iss.provider.namespace == verify.replay_namespace(iss)


def test_errors_name_their_yaml_path_and_suggest() -> None:
    got = problems(
        "github",
        {"secret": [SECRET], "dedupe_second": 10, "keep_signature": "yes"},
    )
    assert got == [
        "issuers[0].github.secret: unknown key; did you mean secrets?",
        "issuers[0].github.dedupe_second: unknown key; did you mean dedupe_seconds?",
        'issuers[0].github.keep_signature: "yes" is a string; expected true or false',
    ]
    assert problems("gitlab", {"secrets": ["short"]}) == [
        "issuers[0].gitlab.secrets[0]: must be at least 16 characters"
    ]
    assert problems("shopify", {"secrets": [SECRET], "dedupe_seconds": MAX_DEDUPE_SECONDS + 1})[
        0
    ].startswith("issuers[0].shopify.dedupe_seconds: must be at most 604800 (7 days)")
    assert problems("shopify", {"secrets": [SECRET], "dedupe_seconds": 5}) == [
        "issuers[0].shopify.dedupe_seconds: must be a number >= 60, not 5"
    ]
    assert problems("slack", {"secrets": [SECRET], "dedupe_seconds": 60}) == [
        "issuers[0].slack.dedupe_seconds: unknown key"
    ]
    assert problems("github", {"secrets": [SECRET], "id_header": "Content-Length"}) == [
        "issuers[0].github.id_header: Content-Length cannot be set"
    ]
    assert problems("github", {}) == [
        "issuers[0].github.secrets: at least one secret is required (secrets or secret_files)"
    ]
    assert "did you mean shopify?" in problems("shopfy", {})[0]
    assert problems("github", {"secrets": [SECRET]}, stripe={"secrets": []}) == [
        "issuers[0].stripe: only applies to type: stripe"
    ]


def test_secret_files_are_read_by_the_file_pass(tmp_path: Path) -> None:
    path = tmp_path / "gh"
    path.write_text(SECRET + "-from-file\n")
    parsed = one("github", {"secret_files": [str(path)]})
    assert parsed.provider is not None and parsed.provider.secrets == ()
    config = read_files(
        parse_config(
            {"issuers": [{"name": "p", "type": "github", "github": {"secret_files": [str(path)]}}]}
        )
    )
    assert config.secret_files == (str(path),)  # watched: a rotated file reloads the config
    provider = config.issuers[0].provider
    assert provider is not None
    assert provider.secrets == ((SECRET + "-from-file").encode(),)
    # Read twice (read_files on a read config) adds nothing.
    assert read_files(config).issuers[0].provider == provider


def test_secret_file_problems(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("tiny")
    (tmp_path / "apikey").write_text("sk_test_0123456789abcdef")
    data = {
        "issuers": [
            {
                "name": "a",
                "type": "github",
                "path_prefix": "/a",
                "github": {"secret_files": [str(tmp_path / "short"), str(tmp_path / "none")]},
            },
            {
                "name": "b",
                "type": "stripe",
                "path_prefix": "/b",
                "stripe": {"secret_files": [str(tmp_path / "apikey")]},
            },
        ]
    }
    with pytest.raises(ConfigError) as info:
        read_files(parse_config(data))
    got = info.value.problems
    assert (
        got[0]
        == f"issuers[0].github.secret_files[0]: {tmp_path}/short must hold at least 16 characters"
    )
    assert got[1].startswith(f"issuers[0].github.secret_files[1]: cannot read {tmp_path}/none")
    assert got[2] == (
        f"issuers[1].stripe.secret_files[0]: {tmp_path}/apikey must hold the endpoint's "
        "signing secret (whsec_...)"
    )


def test_a_provider_needs_a_path_of_its_own() -> None:
    data = {
        "issuers": [
            {"name": "a", "type": "github", "github": {"secrets": [SECRET]}},
            {"name": "b", "type": "gitlab", "github": {"secrets": [SECRET]}},
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any("needs a path of its own" in p for p in info.value.problems)


def test_check_config_summary(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "issuers:\n"
        "  - {name: gh, type: github, path_prefix: /gh, github: {secrets: ['" + SECRET + "']}}\n"
        "  - name: st\n    type: stripe\n    path_prefix: /st\n"
        "    stripe: {secrets: ['whsec_" + SECRET + "'], keep_signature: true}\n"
    )
    text = summary(load_config(path))
    assert "  - gh: type github  path /gh" in text
    # 1,000,000 entries over 3 days of dedupe: what the memory store sustains, said up front.
    assert "dedupe 259200s (memory store: <= 3.86/s sustained)" in text
    assert "keep_signature true  tolerance 300s" in text


def test_the_chart_schema_knows_the_provider_keys() -> None:
    schema = json.loads(CHART_SCHEMA.read_text())
    issuer = schema["properties"]["config"]["properties"]["issuers"]["items"]["properties"]
    assert set(PROVIDER_TYPES) <= set(issuer["type"]["enum"])
    common = {"secrets", "secret_files", "keep_signature", "id_header"}
    for kind in PROVIDER_TYPES:
        keys = set(issuer[kind]["properties"])
        extra = {
            "stripe": {"tolerance_seconds"},
            "slack": {"tolerance_seconds", "answer_challenge"},
            "gitlab": {"dedupe_seconds", "dedupe_headers"},
        }
        assert keys == common | extra.get(kind, {"dedupe_seconds"}), kind
        # Every key the schema lists, the loader accepts.
        section: dict[str, Any] = {"secrets": [secret_for(kind)]}
        for key in keys - {"secrets", "secret_files"}:
            prop = issuer[kind]["properties"][key]
            value = {"boolean": True, "string": "X-Id", "number": 600, "array": ["X-Id"]}
            section[key] = value[prop["type"]]
        one(kind, section)


ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "GITHUB_WEBHOOK_SECRET": SECRET,
    "STRIPE_WEBHOOK_SECRET": "whsec_" + SECRET,
    "SLACK_SIGNING_SECRET": SECRET,
    "SHOPIFY_API_SECRET": SECRET,
    "SHOPIFY_API_SECRET_OLD": SECRET + "-old",
    "GITLAB_WEBHOOK_TOKEN": SECRET,
}


def test_the_commented_examples_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/example.yaml shows every provider commented out; uncommented, they load."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    text = (ROOT / "config/example.yaml").read_text()
    tail = text[text.index("  # - name: github") :]
    lines = [re.sub(r"^  # ?", "  ", line) for line in tail.splitlines() if line.startswith("  #")]
    config = parse_config(yaml.safe_load("issuers:\n" + "\n".join(lines)))
    assert [i.type for i in config.issuers] == list(PROVIDER_TYPES)


def test_the_docs_examples_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    text = (ROOT / "docs/profiles.md").read_text()
    section = text[text.index("## Provider webhooks") :]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    kinds = [parse_config({"issuers": yaml.safe_load(b)}).issuers[0].type for b in blocks]
    assert kinds == list(PROVIDER_TYPES)
