"""docs/reference.md against the code: every config key with its default (walked from the config
dataclasses, whose field names are the YAML keys), the status/reason table (rendered by
``errors.status_table``), every metric the gateway registers and the headers it sets. A key, a
reason or a metric added to the code without its line in the reference fails here, and so does a
line for one that no longer exists."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from gateway import config as gateway_config
from gateway.config import Config, ForwardConfig, Listen, parse_config
from gateway.errors import REASONS, ConfigError, status_table
from gateway.forward_headers import gateway_header_names
from gateway.metrics import Metrics

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
# | `key` | type | default | meaning |
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+?) \| (.+?) \| (.+) \|$")
REQUIRED = "required"


def text() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## ``."""
    doc = text()
    start = doc.index(f"\n## {title}\n")
    end = doc.find("\n## ", start + 1)
    return doc[start : end if end != -1 else len(doc)]


def _dataclass_in(hint: Any) -> type | None:
    """The config dataclass a field holds (directly, optional, or as tuple items), if any."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(hint):
            found = _dataclass_in(arg)
            if found is not None:
                return found
    return None


# Issuer sections read only for the issuer type of the same name.
_TYPED_SECTIONS = ("static_token", "standard_webhooks", *gateway_config.PROVIDER_TYPES)


def accepted(path: str) -> bool:
    """Whether the loader reads ``path`` (it reports every key it does not as "unknown key").
    Some dataclass fields are fixed by the code, not the config (a provider's header names)."""
    parts = path.split(".")
    data: dict[str, Any] = {}
    node = data
    shown_path = path
    if parts[0] == "issuers[]":
        issuer: dict[str, Any] = {"name": "a"}
        data["issuers"] = [issuer]
        parts = parts[1:]
        if len(parts) == 2 and parts[0] in _TYPED_SECTIONS:
            issuer["type"] = parts[0]
        node = issuer
        shown_path = "issuers[0]." + ".".join(parts)
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = "x"
    try:
        parse_config(data)
    except ConfigError as e:
        return not any(line.startswith(f"{shown_path}: unknown key") for line in e.problems)
    return True


def config_keys() -> Iterator[tuple[str, Any]]:
    """(YAML key path, default) of every key the loader reads; ``issuers[]`` is each issuer."""
    return ((path, default) for path, default in dataclass_keys() if accepted(path))


def dataclass_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, default) of every leaf field of the config dataclasses."""
    hints = typing.get_type_hints(cls, vars(gateway_config))
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived"):
            continue
        path = prefix + f.name
        inner = _dataclass_in(hints[f.name])
        if inner is None or inner is Listen:  # a listen address is one "host:port" string
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = REQUIRED
            args = typing.get_args(hints[f.name])
            if args and typing.get_origin(args[0]) is tuple:  # forward_claims: a YAML mapping
                default = dict(default)
            yield path, default
            continue
        yield from dataclass_keys(inner, path + ("[]." if path == "issuers" else "."))


def shown(default: Any) -> str:
    """A default as the reference writes it."""
    if default == REQUIRED:
        return REQUIRED
    if default is None:
        value = "null"
    elif isinstance(default, bool):
        value = "true" if default else "false"
    elif isinstance(default, float):
        value = f"{default:g}"
    elif isinstance(default, Listen | str):
        value = json.dumps(str(default))
    elif isinstance(default, dict):
        value = json.dumps(default)
    elif isinstance(default, tuple):
        value = json.dumps(list(default))
    else:
        value = str(default)
    return f"`{value}`"


def documented_keys() -> dict[str, tuple[str, str, str]]:
    rows: dict[str, tuple[str, str, str]] = {}
    for line in section("Configuration file").splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def test_the_walk_finds_the_config_keys() -> None:
    keys = dict(config_keys())
    assert keys["listen"] == Listen("0.0.0.0", 8080)
    assert keys["issuers[].jwks.ttl_seconds"] == 300.0
    assert keys["issuers[].static_token.token_files"] == ()
    assert keys["issuers[].name"] == REQUIRED
    assert "secret_files" not in keys  # derived, not a YAML key
    assert "issuers[].github.secrets" in keys
    assert "issuers[].github.signature_header" not in keys  # fixed by GitHub, not configurable
    assert accepted("limits.max_body_bytes") and not accepted("limits.max_body")
    assert len(keys) > 60


def test_every_config_key_is_documented_with_its_default() -> None:
    rows = documented_keys()
    keys = dict(config_keys())
    assert sorted(set(keys) - set(rows)) == [], "keys missing from docs/reference.md"
    assert sorted(set(rows) - set(keys)) == [], "docs/reference.md lists keys the code lacks"
    wrong = {
        key: (rows[key][1], shown(default))
        for key, default in keys.items()
        if not rows[key][1].startswith(shown(default))
    }
    assert wrong == {}, "documented default (left) != the code's (right)"
    for key, (kind, _, meaning) in rows.items():
        assert kind.strip() and len(meaning) > 10, key


def test_the_status_table_is_the_one_the_code_renders() -> None:
    assert status_table() in section("Status codes and reasons")
    for code in REASONS:
        assert f"`{code}`" in section("Status codes and reasons"), code


def _metrics() -> list[MetricWrapperBase]:
    m = Metrics(["orders"])
    return [v for v in vars(m).values() if isinstance(v, MetricWrapperBase)]


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    metrics = _metrics()
    assert len(metrics) > 15
    doc = section("Metrics")
    rows = {m.group(1): m for line in doc.splitlines() if (m := ROW.match(line))}
    for metric in metrics:
        name = metric._name + ("_total" if metric._type == "counter" else "")
        assert name in rows, f"{name} is not in docs/reference.md"
        kind, labels = rows[name].group(2), rows[name].group(3)
        assert kind == metric._type, name
        assert set(re.findall(r"`(\w+)`", labels)) == set(metric._labelnames), name
    names = {m._name + ("_total" if m._type == "counter" else "") for m in metrics}
    assert set(rows) - names == set(), "docs/reference.md lists metrics the code lacks"


def test_the_headers_the_gateway_sets_are_documented() -> None:
    doc = section("Headers").lower()

    def named(name: str) -> bool:  # `Name` alone or `Name: value`
        return re.search(rf"`{re.escape(name)}[`:]", doc) is not None

    # gateway_header_names: what the gateway sets toward the backend (and strips if sent).
    for name in gateway_header_names(ForwardConfig(), []):
        assert named(name), name
    for name in (
        "authorization",
        "www-authenticate",
        "retry-after",
        "x-content-type-options",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "if-none-match",
        "cache-control",
        "etag",
    ):
        assert named(name), name
