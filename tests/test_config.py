"""Configuration loading (gateway/config.py) and ``check-config`` / ``run`` on the command line.

An invalid config never starts: every problem is reported at once, one line each, naming its YAML
path. The example config shipped in ``config/example.yaml`` must stay valid and keep
showing every key the gateway accepts.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, Listen, load_config, parse_config, read_files
from gateway.errors import ConfigError
from tests.tls_support import TestCA

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "admin_listen": "127.0.0.1:9090",
    "upstream": {"url": "http://127.0.0.1:3000"},
    "issuers": [
        {
            "name": "orders",
            "issuer": "https://orders.example",
            "jwks_url": "https://orders.example/.well-known/jwks.json",
        },
        {
            "name": "billing",
            "issuer": "https://billing.example",
            "jwks_url": "https://billing.example/jwks",
            "path_prefix": "/billing",
        },
    ],
}


def base(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(top)
    return data


def with_issuer(index: int, **changes: Any) -> dict[str, Any]:
    data = base()
    data["issuers"][index].update(changes)
    return data


# A real certificate and key: the config loads them to check they are a usable pair.
_PEM_DIR = tempfile.mkdtemp(prefix="jwksgate-test-config-")
atexit.register(shutil.rmtree, _PEM_DIR, True)
_CERT, _KEY = TestCA().server_cert().write(Path(_PEM_DIR), "server")


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_minimal_config_is_valid_with_the_documented_defaults() -> None:
    config = parse_config(base())
    assert isinstance(config, Config)
    assert config.listen == Listen("127.0.0.1", 8080)
    assert config.workers == 1
    assert config.replay.store == "memory"
    assert config.forward.header_prefix == "X-Jwt-"
    orders = config.issuers[0]
    assert orders.algorithms == ("RS256",)
    assert orders.allowed_types == ("JWT",)
    assert orders.require_kid is True
    assert orders.path_prefix == "/"
    assert orders.require_claims == ("iat", "jti")
    assert orders.replay_key == "jti"
    assert orders.body_hash is None
    assert orders.jwks.ttl_seconds == 300
    assert config.issuers[1].path_prefix == "/billing"


# --- one line per problem, naming its YAML path ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            with_issuer(1, jwks_url="ftp://billing.example/jwks"),
            'issuers[1].jwks_url: must be an http(s) URL, not "ftp://billing.example/jwks"',
        ),
        (
            with_issuer(0, jwks_url="orders.example/jwks"),
            'issuers[0].jwks_url: must be an http(s) URL, not "orders.example/jwks"',
        ),
        (
            with_issuer(0, jwks_url=42),
            "issuers[0].jwks_url: 42 is an integer; expected an http(s) URL",
        ),
        (
            with_issuer(0, name="Orders!"),
            'issuers[0].name: must match [a-z0-9_-]+ (at most 64 characters), not "Orders!"',
        ),
        (
            # Long values are cut at 60 characters.
            with_issuer(0, name="x" * 65),
            f'issuers[0].name: must match [a-z0-9_-]+ (at most 64 characters), not "{"x" * 60}"...',
        ),
        (with_issuer(0, algorithms=[]), "issuers[0].algorithms: must not be empty"),
        (
            with_issuer(0, algorithms="RS256"),
            "issuers[0].algorithms: "
            '"RS256" is a string; expected a list of strings, e.g. ["RS256"]',
        ),
        (
            with_issuer(0, algorithms=["RS256", 5]),
            "issuers[0].algorithms: is a list; expected a list of strings; item 1 is an integer",
        ),
        (
            with_issuer(0, audiences="https://gw"),
            "issuers[0].audiences: "
            '"https://gw" is a string; expected a list of strings, e.g. ["https://gw"]',
        ),
        (
            with_issuer(1, path_prefix="billing"),
            'issuers[1].path_prefix: must start with "/", not "billing"',
        ),
        (
            with_issuer(0, require_kid="false"),
            'issuers[0].require_kid: "false" is a string; expected true or false',
        ),
        (
            with_issuer(0, clock_skew_seconds=-1),
            "issuers[0].clock_skew_seconds: must be a number >= 0, not -1",
        ),
        (
            with_issuer(0, max_token_age_seconds=0),
            "issuers[0].max_token_age_seconds: must be a number >= 1, not 0",
        ),
        (
            with_issuer(0, max_lifetime_seconds=float("inf")),
            "issuers[0].max_lifetime_seconds: must be a number >= 1, not .inf",
        ),
        (
            with_issuer(0, replay_key="both"),
            'issuers[0].replay_key: must be one of jti, token, not "both"',
        ),
        (
            with_issuer(0, replay_key="tokne"),
            'issuers[0].replay_key: must be one of jti, token, not "tokne"; did you mean token?',
        ),
        (
            with_issuer(0, body_hash={"encoding": "base32"}),
            'issuers[0].body_hash.encoding: must be one of hex, base64url, not "base32"',
        ),
        (
            with_issuer(0, body_hash={"over": "canonical"}),
            'issuers[0].body_hash.over: must be one of raw, json, raw_or_json, not "canonical"',
        ),
        (
            with_issuer(0, body_hash="sha256"),
            "issuers[0].body_hash: is a string; expected a mapping",
        ),
        (
            with_issuer(0, jwks={"ttl_seconds": 0}),
            "issuers[0].jwks.ttl_seconds: must be a number >= 1, not 0",
        ),
        (
            with_issuer(0, jwks={"max_keys": 0}),
            "issuers[0].jwks.max_keys: must be an integer >= 1, not 0",
        ),
        (
            with_issuer(0, forward_claims={"sub": "X Jwt Sub"}),
            "issuers[0].forward_claims.sub: must be a valid HTTP header name "
            '(letters, digits and !#$%&\'*+.^_`|~-), not "X Jwt Sub"',
        ),
        (
            with_issuer(0, forward_claims={"sub": 5}),
            "issuers[0].forward_claims.sub: must map a claim name to a header name",
        ),
        (
            with_issuer(1, forward_claims={"sub": "X-Jwt-Sub", "tenant": "Authorization"}),
            "issuers[1].forward_claims.tenant: Authorization cannot be set",
        ),
        (
            base(upstream={"url": "127.0.0.1:3000"}),
            'upstream.url: must be an http(s) URL, not "127.0.0.1:3000"',
        ),
        (
            base(upstream={"url": "http://[::1"}),
            'upstream.url: must be an http(s) URL, not "http://[::1"',
        ),
        (
            base(upstream={"url": "http://user:pw@x:99999"}),
            "upstream.url: must be an http(s) URL",
        ),
        (
            base(upstream={"url": "http://backend/?a=1"}),
            "upstream.url: must not have a query or fragment (the request's are appended)",
        ),
        (
            base(upstream={"timeout_seconds": "30s"}),
            'upstream.timeout_seconds: "30s" is a string; expected a number >= 0.001',
        ),
        (
            base(limits={"max_body_bytes": -1}),
            "limits.max_body_bytes: must be an integer >= 0, not -1",
        ),
        (
            base(limits={"max_inflight": True}),
            "limits.max_inflight: true is a boolean; expected an integer >= 1",
        ),
        (
            base(limits={"max_inflight": 1.5}),
            "limits.max_inflight: 1.5 is a decimal number; expected an integer >= 1",
        ),
        (
            base(limits={"max_inflight": 10**400}),
            "limits.max_inflight: must be an integer >= 1, not a 401-digit number; "
            "the largest allowed is 9223372036854775807",
        ),
        (
            base(limits={"body_timeout_seconds": 10**400}),
            "limits.body_timeout_seconds: must be a number >= 0.01, not a 401-digit number; "
            "too large for a number",
        ),
        (
            base(limits={"body_timeout_seconds": float("nan")}),
            "limits.body_timeout_seconds: must be a number >= 0.01, not .nan",
        ),
        (
            base(replay={"store": "sqlite"}),
            'replay.store: must be one of memory, redis, not "sqlite"',
        ),
        (
            base(replay={"store": "rediss"}),
            'replay.store: must be one of memory, redis, not "rediss"; did you mean redis?',
        ),
        (base(replay={"store": "redis"}), "replay.redis_url: is required when store is redis"),
        (
            base(replay={"store": "redis", "redis_url": "http://redis:6379"}),
            "replay.redis_url: must be a redis:// or rediss:// URL",
        ),
        (
            base(replay={"store": "redis", "redis_url": "rediss://r:6380/0?ssl_cert_reqs=none"}),
            "replay.redis_url: must be a redis:// or rediss:// URL; it takes no query options "
            "(the database is the path's number; TLS and timeouts are replay.redis_ca_file and "
            "replay.redis_timeout_seconds)",
        ),
        (
            base(forward={"header_prefix": "X Jwt"}),
            "forward.header_prefix: must be a valid HTTP header name "
            '(letters, digits and !#$%&\'*+.^_`|~-), not "X Jwt"',
        ),
        (
            base(forward={"keep_token": "yes"}),
            'forward.keep_token: "yes" is a string; expected true or false',
        ),
        (base(tls={"cert_file": "/tls/crt"}), "tls.key_file: is required"),
        (base(tls="on"), "tls: is a string; expected a mapping"),
        (base(workers=0), "workers: must be an integer >= 1, not 0"),
        (
            base(shutdown_grace_seconds=-5),
            "shutdown_grace_seconds: must be a number >= 0, not -5",
        ),
        (base(upstream="http://x"), "upstream: is a string; expected a mapping"),
        (base(issuers=[]), "issuers: must be a non-empty list of trusted issuers"),
        (base(issuers={"name": "x"}), "issuers: must be a non-empty list of trusted issuers"),
        (base(issuers=["orders"]), "issuers[0]: is a string; expected a mapping"),
        (base(admin_listen="127.0.0.1:8080"), "admin_listen: must differ from listen"),
    ],
)
def test_each_problem_names_its_yaml_path(data: dict[str, Any], line: str) -> None:
    assert line in problems(data)


@pytest.mark.parametrize("key", ["name", "jwks_url"])
def test_required_issuer_keys(key: str) -> None:
    data = base()
    del data["issuers"][1][key]
    assert f"issuers[1].{key}: is required" in problems(data)


def test_issuer_is_optional_for_tokens_routed_by_path() -> None:
    data = base()
    del data["issuers"][1]["issuer"]
    assert parse_config(data).issuers[1].issuer is None


def test_missing_issuers() -> None:
    data = base()
    del data["issuers"]
    assert problems(data) == ["issuers: must be a non-empty list of trusted issuers"]


@pytest.mark.parametrize(
    ("document", "kind"), [(["a"], "a list"), ("text", "a string"), (5, "an integer")]
)
def test_top_level_must_be_a_mapping(document: Any, kind: str) -> None:
    # Only that line: the keys a non-mapping lacks are not problems of their own.
    assert problems(document) == [f"(top level): is {kind}; expected a mapping"]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (base(listne="0.0.0.0:1"), "listne: unknown key"),
        (base(upstream={"url": "http://x", "retries": 3}), "upstream.retries: unknown key"),
        (
            base(limits={"max_body": 1}),
            "limits.max_body: unknown key; did you mean max_body_bytes?",
        ),
        (base(replay={"ttl": 1}), "replay.ttl: unknown key"),
        (base(forward={"prefix": "X-"}), "forward.prefix: unknown key"),
        (
            base(tls={"cert_file": _CERT, "key_file": _KEY, "ca_file": "c"}),
            "tls.ca_file: unknown key",
        ),
        (
            with_issuer(1, audience="x"),
            "issuers[1].audience: unknown key; did you mean audiences?",
        ),
        (
            with_issuer(0, jwks={"ttl": 5}),
            "issuers[0].jwks.ttl: unknown key; did you mean ttl_seconds?",
        ),
        (
            with_issuer(0, body_hash={"claim": "h", "algorithm": "sha256"}),
            "issuers[0].body_hash.algorithm: unknown key",
        ),
    ],
)
def test_unknown_keys_are_errors_at_every_level(data: dict[str, Any], line: str) -> None:
    assert problems(data) == [line]


def test_all_problems_are_reported_at_once() -> None:
    data = base(workers=0, listne=1, limits={"max_inflight": 0})
    data["issuers"][0]["jwks_url"] = "nope"
    data["issuers"][1]["algorithms"] = ["none", "HS256"]
    data["issuers"][1]["jwks"] = {"bogus": 1}
    found = problems(data)
    assert len(found) == 7, found
    for expected in [
        "workers: must be an integer >= 1",
        "listne: unknown key",
        "limits.max_inflight: must be an integer >= 1",
        "issuers[0].jwks_url: must be an http(s) URL",
        "issuers[1].algorithms[0]: ",
        "issuers[1].algorithms[1]: ",
        "issuers[1].jwks.bogus: unknown key",
    ]:
        assert any(p.startswith(expected) for p in found), (expected, found)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "HS384", "HS512", "hs256"])
def test_none_and_hmac_algorithms_are_refused_with_a_clear_message(alg: str) -> None:
    found = problems(with_issuer(0, algorithms=["RS256", alg]))
    assert len(found) == 1
    assert found[0].startswith(
        f"issuers[0].algorithms[1]: {alg!r} is never allowed (RFC 8725); use one of RS256"
    )


def test_unsupported_algorithm_is_named_as_such() -> None:
    found = problems(with_issuer(0, algorithms=["ES256K"]))
    assert found == [
        "issuers[0].algorithms[0]: 'ES256K' is not supported; use one of "
        + "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"
    ]


def test_every_supported_algorithm_is_accepted() -> None:
    algs = [
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    ]
    assert parse_config(with_issuer(0, algorithms=algs)).issuers[0].algorithms == tuple(algs)


def test_several_workers_need_the_redis_store() -> None:
    found = problems(base(workers=2))
    assert len(found) == 1
    assert found[0].startswith("workers: > 1 needs replay.store: redis")
    config = parse_config(
        base(workers=4, replay={"store": "redis", "redis_url": "rediss://redis:6380/0"})
    )
    assert config.workers == 4
    assert config.replay.redis_url == "rediss://redis:6380/0"


def test_duplicate_issuer_names() -> None:
    data = base()
    data["issuers"].append({**data["issuers"][0], "path_prefix": "/other"})
    assert problems(data) == ["issuers[2].name: duplicates issuers[0].name"]


def test_same_issuer_on_the_same_prefix_is_ambiguous() -> None:
    data = base()
    data["issuers"].append({**data["issuers"][1], "name": "billing2", "path_prefix": "/billing/"})
    assert problems(data) == [
        "issuers[2]: same issuer and path_prefix as issuers[1]: routing is ambiguous"
    ]


def test_jti_replay_key_needs_jti_required() -> None:
    assert problems(with_issuer(0, require_claims=["iat"])) == [
        'issuers[0].require_claims: must contain "jti" when replay_key is jti'
        " (or set replay_key: token)"
    ]
    config = parse_config(with_issuer(0, require_claims=["iat"], replay_key="token"))
    assert config.issuers[0].replay_key == "token"


@pytest.mark.parametrize(
    "listen",
    [
        "8080",
        "localhost",
        "host:",
        ":",
        "host:99999",
        "host:65536",
        "host:-1",
        "host:http",
        "a b:80",
        "[::1]",
        "[not-ip]:80:80",
        "ho_st:80",
    ],
)
def test_bad_listen_strings(listen: str) -> None:
    assert problems(base(listen=listen)) == [
        f'listen: must be "host:port", e.g. "0.0.0.0:8080" or "[::1]:8080", not "{listen}"'
    ]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:8080", Listen("0.0.0.0", 8080)),
        ("[::1]:8443", Listen("::1", 8443)),
        ("[::]:80", Listen("::", 80)),
        ("localhost:0", Listen("localhost", 0)),
        ("gw.internal:9000", Listen("gw.internal", 9000)),
        (":8081", Listen("0.0.0.0", 8081)),
    ],
)
def test_good_listen_strings(listen: str, expected: Listen) -> None:
    assert parse_config(base(listen=listen)).listen == expected


def test_listen_must_be_a_string() -> None:
    assert problems(base(admin_listen=9090)) == [
        'admin_listen: 9090 is an integer; expected "host:port", e.g. "0.0.0.0:8080" or '
        '"[::1]:8080"'
    ]


# --- environment interpolation -----------------------------------------------------------------


def test_env_variables_are_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JG_TEST_UPSTREAM", "http://backend.internal:3000")
    monkeypatch.setenv("JG_TEST_AUD", "https://hooks.example")
    monkeypatch.setenv("JG_TEST_HOST", "orders.example")
    data = base(upstream={"url": "${JG_TEST_UPSTREAM}"})
    data["issuers"][0]["audiences"] = ["${JG_TEST_AUD}", "static"]
    data["issuers"][0]["jwks_url"] = "https://${JG_TEST_HOST}/jwks?v=${JG_TEST_HOST}"
    config = parse_config(data)
    assert config.upstream.url == "http://backend.internal:3000"
    assert config.issuers[0].audiences == ("https://hooks.example", "static")
    assert config.issuers[0].jwks_url == "https://orders.example/jwks?v=orders.example"


def test_env_default_is_used_only_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JG_TEST_UNSET", raising=False)
    monkeypatch.setenv("JG_TEST_SET", "redis://set:6379/0")
    monkeypatch.setenv("JG_TEST_EMPTY", "")
    data = base(
        upstream={"url": "${JG_TEST_UNSET:-http://fallback:3000}"},
        replay={
            "store": "${JG_TEST_UNSET:-memory}",
            "redis_url": "${JG_TEST_SET:-redis://default}",
        },
        forward={"claims_header": "X-Jwt-Claims${JG_TEST_EMPTY:-Ignored}"},
    )
    config = parse_config(data)
    assert config.upstream.url == "http://fallback:3000"
    assert config.replay.store == "memory"
    assert config.replay.redis_url == "redis://set:6379/0"
    assert config.forward.claims_header == "X-Jwt-Claims"  # set but empty is still set


def test_env_value_is_not_interpolated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JG_TEST_OUTER", "${JG_TEST_INNER}")
    monkeypatch.setenv("JG_TEST_INNER", "should-not-appear")
    config = parse_config(with_issuer(0, audiences=["${JG_TEST_OUTER}"]))
    assert config.issuers[0].audiences == ("${JG_TEST_INNER}",)


def test_missing_env_variable_names_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JG_TEST_MISSING", raising=False)
    monkeypatch.delenv("JG_TEST_MISSING2", raising=False)
    data = base(upstream={"url": "${JG_TEST_MISSING}"})
    data["issuers"][1]["audiences"] = ["ok", "${JG_TEST_MISSING2}"]
    found = problems(data)
    assert "upstream.url: environment variable JG_TEST_MISSING is not set" in found
    assert "issuers[1].audiences[1]: environment variable JG_TEST_MISSING2 is not set" in found


def test_env_reference_in_a_number_field_must_still_be_a_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JG_TEST_WORKERS", "2")
    assert problems(base(workers="${JG_TEST_WORKERS}")) == [
        'workers: "2" is a string; expected an integer >= 1'
    ]


# --- files -------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str | bytes, name: str = "gw.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


VALID_YAML = """\
listen: "127.0.0.1:18080"
admin_listen: "127.0.0.1:19090"
upstream:
  url: "http://127.0.0.1:3000"
issuers:
  - name: orders
    issuer: "https://orders.example"
    jwks_url: "https://orders.example/.well-known/jwks.json"
    algorithms: ["RS256", "ES256"]
    body_hash: {claim: request_body_sha256}
    forward_claims: {sub: X-Jwt-Sub}
"""

INVALID_YAML = """\
listen: "8080"
upstream:
  url: "http://127.0.0.1:3000"
issuers:
  - name: orders
    jwks_url: "ftp://orders.example/jwks"
    algorithms: ["none"]
    colour: blue
"""
INVALID_PROBLEMS = [
    'listen: must be "host:port", e.g. "0.0.0.0:8080" or "[::1]:8080", not "8080"',
    'issuers[0].jwks_url: must be an http(s) URL, not "ftp://orders.example/jwks"',
    "issuers[0].algorithms[0]: 'none' is never allowed (RFC 8725); use one of "
    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA",
    "issuers[0].colour: unknown key",
]


def test_load_config_reads_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID_YAML))
    assert config.issuers[0].algorithms == ("RS256", "ES256")
    assert config.issuers[0].forward_claims == (("sub", "X-Jwt-Sub"),)


def test_load_config_reports_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, INVALID_YAML))
    assert sorted(info.value.problems) == sorted(INVALID_PROBLEMS)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('listen: "x:1"\nupstream:\n  url: "http://x"\n bad: 1\n', "(line 4, column 2)"),
        ("issuers:\n  - name: a\n    jwks_url: 'https://a\n", "(line 4, column 1)"),
        ("listen: 1\n\tworkers: 2\n", "(line 2, column 1)"),
    ],
)
def test_invalid_yaml_reports_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.problems
    assert line.startswith(f"{path}: not valid YAML {where}: "), line


def test_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    [line] = info.value.problems
    assert line.startswith(f"{tmp_path / 'absent.yaml'}: cannot read: ")


def test_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, b"listen: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.problems
    assert line.startswith(f"{path}: "), line
    assert "UTF-8" in line


def test_empty_file_reports_the_missing_issuers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert info.value.problems == ["issuers: must be a non-empty list of trusted issuers"]


# --- the example config ------------------------------------------------------------------------

# Every config key; issuers[] stands for each issuer.
CONFIG_KEYS = {
    "listen", "workers", "shutdown_grace_seconds", "admin_listen", "tls",
    "upstream.url", "upstream.timeout_seconds",
    "limits.max_body_bytes", "limits.header_timeout_seconds", "limits.body_timeout_seconds",
    "limits.max_inflight",
    "replay.store", "replay.redis_url", "replay.max_entries",
    "forward.header_prefix", "forward.claims_header", "forward.keep_token",
    "issuers[].name", "issuers[].issuer", "issuers[].jwks_url", "issuers[].algorithms",
    "issuers[].audiences", "issuers[].allowed_types", "issuers[].require_kid",
    "issuers[].path_prefix", "issuers[].clock_skew_seconds", "issuers[].max_token_age_seconds",
    "issuers[].max_lifetime_seconds", "issuers[].require_claims", "issuers[].replay_key",
    "issuers[].body_hash.claim", "issuers[].body_hash.encoding", "issuers[].body_hash.over",
    "issuers[].jwks.ttl_seconds", "issuers[].jwks.min_refresh_interval_seconds",
    "issuers[].jwks.timeout_seconds", "issuers[].jwks.max_stale_seconds",
    "issuers[].forward_claims",
}  # fmt: skip


def key_paths(value: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            paths.add(path)
            if not path.endswith("forward_claims"):  # its keys are claim names
                paths |= key_paths(v, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JWKSGATE_"):
            monkeypatch.delenv(name)
    config = load_config(EXAMPLE)
    assert len(config.issuers) >= 2
    assert {i.replay_key for i in config.issuers} == {"jti", "token"}


def test_example_config_shows_every_config_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    missing = CONFIG_KEYS - key_paths(data)
    assert not missing, f"config/example.yaml lacks {sorted(missing)}"
    assert EXAMPLE.read_text(encoding="utf-8").count("#") >= 20, "the example explains its keys"


# --- command line ------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKSGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_check_config_prints_a_summary_and_exits_0(tmp_path: Path) -> None:
    result = cli("check-config", str(write(tmp_path, VALID_YAML)))
    assert result.returncode == 0, result.stderr
    assert "orders" in result.stdout
    assert "https://orders.example/.well-known/jwks.json" in result.stdout
    assert result.stdout.rstrip().endswith("config OK")
    assert len(result.stdout.splitlines()) <= 40, "one screen"


def test_check_config_accepts_the_example() -> None:
    result = cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr


def test_check_config_prints_one_line_per_problem_and_exits_1(tmp_path: Path) -> None:
    result = cli("check-config", str(write(tmp_path, INVALID_YAML)))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert sorted(lines) == sorted(f"config error: {p}" for p in INVALID_PROBLEMS)


def test_check_config_on_broken_files_exits_1_without_a_traceback(tmp_path: Path) -> None:
    for path in (
        write(tmp_path, b"listen: \xff\n", "latin.yaml"),
        write(tmp_path, "a: [\n", "bad.yaml"),
        tmp_path / "absent.yaml",
    ):
        result = cli("check-config", str(path))
        assert result.returncode == 1, (path, result.stderr)
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"config error: {path}: ")


def test_run_without_config_exits_non_zero() -> None:
    result = cli("run")
    assert result.returncode != 0
    assert "--config" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_an_invalid_config_never_starts(tmp_path: Path) -> None:
    result = cli("run", "--config", str(write(tmp_path, INVALID_YAML)))
    assert result.returncode == 1
    assert sorted(result.stderr.splitlines()) == sorted(
        f"config error: {p}" for p in INVALID_PROBLEMS
    )


def test_console_script_behaves_as_the_module() -> None:
    script = Path(sys.executable).with_name("jwksgate")
    assert script.exists(), "the package is installed with its jwksgate entry point"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKSGATE_")}
    result = subprocess.run(
        [str(script), "run"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode != 0
    assert "--config" in result.stderr


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("issuers:\n  - name: a\n    jwks_url: https://a.example/j\n    name: b\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "duplicate key 'name'" in err.value.problems[0]
    assert "line 4" in err.value.problems[0]


def test_tls_files_must_be_a_usable_certificate_and_key(tmp_path: Path) -> None:
    other = TestCA().server_cert().write(tmp_path, "other")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    data = base(
        tls={"cert_file": _CERT, "key_file": other[1]},
        upstream={"url": "https://x.example", "ca_file": str(not_pem)},
    )
    config = parse_config(data)  # pure: the files are the second pass's
    with pytest.raises(ConfigError) as info:
        read_files(config)
    lines = info.value.problems
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as loaded:
        load_config(path)
    assert loaded.value.problems == lines
    assert any(line.startswith("tls.cert_file: and key_file are not a PEM") for line in lines)
    assert any(
        line.startswith("upstream.ca_file: ") and "not a PEM CA bundle" in line for line in lines
    )
