"""Configuration: one loader from YAML into frozen dataclasses, validated up front.

Every problem is reported with its YAML path (``issuers[1].jwks_url: must be an http(s) URL``), all
of them at once; unknown keys are errors; any string may reference ``${NAME}`` (or
``${NAME:-default}``) from the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from gateway.errors import ConfigError
from gateway.profiles import PROFILES, REQUIRED, apply_profile

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "BodyHashConfig",
    "Config",
    "ForwardConfig",
    "IssuerConfig",
    "JwksConfig",
    "LimitsConfig",
    "Listen",
    "ReplayConfig",
    "TlsConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]

# Asymmetric JWS algorithms only (RFC 8725 3.1/3.2): never "none", never HS* with a JWKS.
SUPPORTED_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = "http://127.0.0.1:3000"
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    max_connections: int = 256
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 1048576
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_inflight: int = 1024
    max_connections: int = 10000


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    store: str = "memory"
    redis_url: str | None = None
    max_entries: int = 1_000_000
    redis_mode: str = "standalone"
    redis_pool_size: int = 64
    redis_timeout_seconds: float = 0.5
    redis_ca_file: str | None = None
    key_prefix: str = "jwksgate:replay:"
    on_store_error: str = "deny"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    header_prefix: str = "X-Jwt-"
    claims_header: str = "X-Jwt-Claims"
    keep_token: bool = False


@dataclass(frozen=True, slots=True)
class BodyHashConfig:
    claim: str = "request_body_sha256"
    encoding: str = "hex"
    over: str = "raw"


@dataclass(frozen=True, slots=True)
class JwksConfig:
    ttl_seconds: float = 300.0
    min_refresh_interval_seconds: float = 10.0
    timeout_seconds: float = 5.0
    max_stale_seconds: float = 86400.0
    max_bytes: int = 1048576
    max_keys: int = 100
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class StaticTokenConfig:
    """``type: static_token``: a fixed shared secret in a header (what the A2A SDKs send)."""

    headers: tuple[str, ...] = ("Authorization",)
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StandardWebhooksConfig:
    """``type: standard_webhooks``: webhook-id/-timestamp/-signature, v1 HMAC and v1a Ed25519."""

    secrets: tuple[bytes, ...] = ()
    public_keys: tuple[bytes, ...] = ()
    tolerance_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    name: str
    jwks_url: str
    issuer: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    audiences: tuple[str, ...] = ()
    allowed_types: tuple[str, ...] = ("JWT",)
    require_kid: bool = True
    path_prefix: str = "/"
    clock_skew_seconds: float = 30.0
    max_token_age_seconds: float = 300.0
    max_lifetime_seconds: float = 3600.0
    require_claims: tuple[str, ...] = ("iat", "jti")
    replay_key: str = "jti"
    body_hash: BodyHashConfig | None = None
    jwks: JwksConfig = field(default_factory=JwksConfig)
    forward_claims: tuple[tuple[str, str], ...] = ()
    type: str = "jwt"
    profile: str | None = None
    handshake: str = "off"
    static_token: StaticTokenConfig | None = None
    standard_webhooks: StandardWebhooksConfig | None = None
    # OIDC discovery instead of jwks_url: the URL of the provider's configuration document
    # (``discovery: true`` means ``<issuer>/.well-known/openid-configuration``).
    discovery: bool = False
    discovery_url: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    issuers: tuple[IssuerConfig, ...]
    listen: Listen = Listen("0.0.0.0", 8080)
    admin_listen: Listen = Listen("0.0.0.0", 9090)
    workers: int = 1
    shutdown_grace_seconds: float = 20.0
    tls: TlsConfig | None = None
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    # Mounted secrets the config reads (token_files, secret_files): a change reloads the config.
    # Not a YAML key (metadata "derived"): what the loader read besides the file itself.
    secret_files: tuple[str, ...] = field(default=(), compare=False, metadata={"derived": True})

    def issuer_names(self) -> list[str]:
        return [i.name for i in self.issuers]


# --------------------------------------------------------------------------------------------
# Loading

T = TypeVar("T")
_MISSING: Any = object()


class _Problems:
    """What parsing collects beside the values: problems, and the secret files it read."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.files: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")


class _Section:
    """Typed reads from one YAML mapping; every read records problems under the mapping's path."""

    def __init__(self, data: Any, path: str, problems: _Problems) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if data is None or data is _MISSING:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path or "(top level)", "must be a mapping")
            data = {}
        self.data: Mapping[Any, Any] = data

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key, _MISSING)

    def _read(self, key: str, default: T, check: Callable[[Any], T | None], what: str) -> T:
        value = self.raw(key)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                self.problems.add(self.at(key), "is required")
            return default
        result = check(value)
        if result is None:
            self.problems.add(self.at(key), f"must be {what}")
            return default
        return result

    def string(self, key: str, default: Any = _MISSING) -> Any:
        return self._read(key, default, lambda v: v if isinstance(v, str) else None, "a string")

    def boolean(self, key: str, default: bool) -> bool:
        return self._read(
            key, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        def check(v: Any) -> int | None:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
            return v if ok else None

        return self._read(key, default, check, f"an integer >= {minimum}")

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        def check(v: Any) -> float | None:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            f = float(v)
            return f if minimum <= f < float("inf") else None

        return self._read(key, default, check, f"a number >= {minimum:g}")

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def check(v: Any) -> tuple[str, ...] | None:
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(v)
            return None

        return self._read(key, default, check, "a list of strings")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def check(v: Any) -> str | None:
            return v if v in choices else None

        return self._read(key, default, check, "one of " + ", ".join(choices))

    def section(self, key: str) -> _Section:
        return _Section(self.raw(key), self.at(key), self.problems)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.seen:
                self.problems.add(self.at(str(key)), "unknown key")


def _interpolate(value: Any, path: str, problems: _Problems) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            env = os.environ.get(m.group(1))
            if env is not None:
                return env
            if m.group(2) is not None:
                return m.group(2)
            problems.add(path, f"environment variable {m.group(1)} is not set")
            return ""

        return ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), problems)
            for k, v in value.items()
        }
    return value


def _listen(s: _Section, key: str, default: Listen) -> Listen:
    value = s.string(key, None)
    if value is None:
        return default
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        # Port 0 asks the OS for a free port (tests, the demo).
        if not sep or not 0 <= int(port) < 65536:
            raise ValueError
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            ipaddress.ip_address(host)
    except ValueError:
        s.problems.add(s.at(key), 'must be "host:port" (e.g. "0.0.0.0:8080" or "[::1]:8080")')
        return default
    return Listen(host, int(port))


def _url(s: _Section, key: str, default: Any = _MISSING) -> Any:
    value = s.string(key, default)
    if isinstance(value, str) and (value or default is _MISSING):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            s.problems.add(s.at(key), "must be an http(s) URL")
    return value


def _file(s: _Section, key: str, required: bool = False) -> Any:
    value = s.string(key) if required else s.string(key, None)
    if isinstance(value, str) and not os.path.isfile(value):
        s.problems.add(s.at(key), f"{value} is not a readable file")
    return value


def _ca_file(s: _Section, key: str) -> Any:
    """A CA bundle, loaded once here so that a bad one is a config error, not a crash later."""
    value = _file(s, key)
    if isinstance(value, str) and os.path.isfile(value):
        try:
            ssl.create_default_context(cafile=value)
        except (ssl.SSLError, OSError, ValueError) as e:
            s.problems.add(s.at(key), f"{value} is not a PEM CA bundle ({e})")
    return value


def _cert_pair(s: _Section, cert_key: str, key_key: str, cert: Any, key: Any) -> None:
    if not (isinstance(cert, str) and isinstance(key, str)):
        return
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as e:
        s.problems.add(s.at(cert_key), f"and {key_key} are not a PEM certificate and its key ({e})")


def _header_name(s: _Section, path: str, value: str) -> None:
    if not HEADER_NAME_RE.match(value):
        s.problems.add(path, "must be a valid HTTP header name")


def _upstream(s: _Section) -> UpstreamConfig:
    d = UpstreamConfig()
    url = _url(s, "url", d.url)
    if isinstance(url, str) and (urlsplit(url).query or urlsplit(url).fragment):
        s.problems.add(
            s.at("url"), "must not have a query or fragment (the request's are appended)"
        )
    cfg = UpstreamConfig(
        url=url.rstrip("/"),
        timeout_seconds=s.number("timeout_seconds", d.timeout_seconds, 0.001),
        connect_timeout_seconds=s.number(
            "connect_timeout_seconds", d.connect_timeout_seconds, 0.001
        ),
        max_connections=s.integer("max_connections", d.max_connections, 1),
        ca_file=_ca_file(s, "ca_file"),
        client_cert_file=_file(s, "client_cert_file"),
        client_key_file=_file(s, "client_key_file"),
    )
    if (cfg.client_cert_file is None) != (cfg.client_key_file is None):
        s.problems.add(s.path, "client_cert_file and client_key_file go together")
    _cert_pair(s, "client_cert_file", "client_key_file", cfg.client_cert_file, cfg.client_key_file)
    s.finish()
    return cfg


def _limits(s: _Section) -> LimitsConfig:
    d = LimitsConfig()
    cfg = LimitsConfig(
        max_body_bytes=s.integer("max_body_bytes", d.max_body_bytes, 0),
        header_timeout_seconds=s.number("header_timeout_seconds", d.header_timeout_seconds, 0.01),
        body_timeout_seconds=s.number("body_timeout_seconds", d.body_timeout_seconds, 0.01),
        max_inflight=s.integer("max_inflight", d.max_inflight, 1),
        max_connections=s.integer("max_connections", d.max_connections, 1),
    )
    s.finish()
    return cfg


def _replay(s: _Section) -> ReplayConfig:
    d = ReplayConfig()
    cfg = ReplayConfig(
        store=s.choice("store", d.store, ("memory", "redis")),
        redis_url=s.string("redis_url", None),
        max_entries=s.integer("max_entries", d.max_entries, 1),
        redis_mode=s.choice("redis_mode", d.redis_mode, ("standalone", "cluster")),
        redis_pool_size=s.integer("redis_pool_size", d.redis_pool_size, 1),
        redis_timeout_seconds=s.number("redis_timeout_seconds", d.redis_timeout_seconds, 0.001),
        redis_ca_file=_ca_file(s, "redis_ca_file"),
        key_prefix=s.string("key_prefix", d.key_prefix),
        on_store_error=s.choice("on_store_error", d.on_store_error, ("deny", "allow")),
    )
    if cfg.redis_url is not None and urlsplit(cfg.redis_url).scheme not in ("redis", "rediss"):
        s.problems.add(s.at("redis_url"), "must be a redis:// or rediss:// URL")
    if cfg.store == "redis" and not cfg.redis_url:
        s.problems.add(s.at("redis_url"), "is required when store is redis")
    s.finish()
    return cfg


def _forward(s: _Section) -> ForwardConfig:
    d = ForwardConfig()
    cfg = ForwardConfig(
        header_prefix=s.string("header_prefix", d.header_prefix),
        claims_header=s.string("claims_header", d.claims_header),
        keep_token=s.boolean("keep_token", d.keep_token),
    )
    _header_name(s, s.at("header_prefix"), cfg.header_prefix)
    _header_name(s, s.at("claims_header"), cfg.claims_header)
    s.finish()
    return cfg


def _body_hash(s: _Section) -> BodyHashConfig:
    d = BodyHashConfig()
    cfg = BodyHashConfig(
        claim=s.string("claim", d.claim),
        encoding=s.choice("encoding", d.encoding, ("hex", "base64url")),
        over=s.choice("over", d.over, ("raw", "json", "raw_or_json")),
    )
    s.finish()
    return cfg


def _jwks(s: _Section) -> JwksConfig:
    d = JwksConfig()
    cfg = JwksConfig(
        ttl_seconds=s.number("ttl_seconds", d.ttl_seconds, 1),
        min_refresh_interval_seconds=s.number(
            "min_refresh_interval_seconds", d.min_refresh_interval_seconds, 0
        ),
        timeout_seconds=s.number("timeout_seconds", d.timeout_seconds, 0.01),
        max_stale_seconds=s.number("max_stale_seconds", d.max_stale_seconds, 0),
        max_bytes=s.integer("max_bytes", d.max_bytes, 64),
        max_keys=s.integer("max_keys", d.max_keys, 1),
        ca_file=_ca_file(s, "ca_file"),
    )
    s.finish()
    return cfg


def _secret_values(s: _Section, key: str, files_key: str) -> list[str]:
    """Inline values (usually ``${ENV}``) plus one value per mounted file, stripped."""
    values = list(s.strings(key, ()))
    for i, path in enumerate(s.strings(files_key, ())):
        s.problems.files.append(path)
        try:
            values.append(Path(path).read_text(encoding="utf-8").strip())
        except OSError as e:
            s.problems.add(f"{s.at(files_key)}[{i}]", f"cannot read {path}: {e.strerror or e}")
    return values


def _static_token(s: _Section) -> StaticTokenConfig:
    d = StaticTokenConfig()
    headers = s.strings("headers", d.headers)
    for i, h in enumerate(headers):
        _header_name(s, f"{s.at('headers')}[{i}]", h)
    tokens = _secret_values(s, "tokens", "token_files")
    if not tokens:
        s.problems.add(s.at("tokens"), "at least one token is required (tokens or token_files)")
    for i, t in enumerate(tokens):
        if len(t) < 16:
            s.problems.add(f"{s.at('tokens')}[{i}]", "must be at least 16 characters")
    s.finish()
    return StaticTokenConfig(headers=headers, tokens=tuple(tokens))


def _b64_prefixed(s: _Section, path: str, value: str, prefix: str, size: int | None) -> bytes:
    try:
        raw = base64.b64decode(value.removeprefix(prefix), validate=True)
        if not raw or (size is not None and len(raw) != size):
            raise ValueError
        return raw
    except (ValueError, binascii.Error):
        what = f"{size} bytes" if size else "bytes"
        s.problems.add(path, f"must be {prefix}<base64 of {what}>")
        return b""


def _standard_webhooks(s: _Section) -> StandardWebhooksConfig:
    d = StandardWebhooksConfig()
    secrets = [
        _b64_prefixed(s, f"{s.at('secrets')}[{i}]", v, "whsec_", None)
        for i, v in enumerate(_secret_values(s, "secrets", "secret_files"))
    ]
    keys = [
        _b64_prefixed(s, f"{s.at('public_keys')}[{i}]", v, "whpk_", 32)
        for i, v in enumerate(s.strings("public_keys", ()))
    ]
    if not secrets and not keys:
        s.problems.add(s.path, "needs secrets (v1, whsec_...) or public_keys (v1a, whpk_...)")
    cfg = StandardWebhooksConfig(
        secrets=tuple(secrets),
        public_keys=tuple(keys),
        tolerance_seconds=s.number("tolerance_seconds", d.tolerance_seconds, 1),
    )
    s.finish()
    return cfg


def _with_profile(s: _Section) -> tuple[_Section, str | None]:
    profile = s.raw("profile")
    if profile is _MISSING or profile is None:
        return s, None
    if profile not in PROFILES:
        s.problems.add(s.at("profile"), "must be one of " + ", ".join(PROFILES))
        return s, None
    for key in REQUIRED[profile]:
        if key not in s.data:
            s.problems.add(s.at(key), f"is required with profile {profile}")
    return _Section(apply_profile(profile, dict(s.data)), s.path, s.problems), profile


def _issuer(s: _Section) -> IssuerConfig:
    d = IssuerConfig(name="", jwks_url="")
    s, profile = _with_profile(s)
    kind = s.choice("type", d.type, ("jwt", "static_token", "standard_webhooks"))
    name = s.string("name")
    if isinstance(name, str) and not NAME_RE.match(name):
        s.problems.add(s.at("name"), "must match [a-z0-9_-]+ (at most 64 characters)")
    algorithms = s.strings("algorithms", d.algorithms)
    for i, alg in enumerate(algorithms):
        if alg not in SUPPORTED_ALGORITHMS:
            why = (
                "is never allowed (RFC 8725)"
                if alg.lower() == "none" or alg.upper().startswith("HS")
                else "is not supported"
            )
            s.problems.add(
                f"{s.at('algorithms')}[{i}]",
                f"{alg!r} {why}; use one of {', '.join(SUPPORTED_ALGORITHMS)}",
            )
    if not algorithms:
        s.problems.add(s.at("algorithms"), "must not be empty")
    path_prefix = s.string("path_prefix", d.path_prefix)
    if isinstance(path_prefix, str) and not path_prefix.startswith("/"):
        s.problems.add(s.at("path_prefix"), 'must start with "/"')
    body_hash_raw = s.raw("body_hash")
    body_hash = (
        None
        if body_hash_raw is _MISSING or body_hash_raw is None
        else _body_hash(_Section(body_hash_raw, s.at("body_hash"), s.problems))
    )
    fc_section = s.section("forward_claims")
    forward_claims: list[tuple[str, str]] = []
    for claim, header in fc_section.data.items():
        fc_section.seen.add(claim)
        path = fc_section.at(str(claim))
        if not isinstance(claim, str) or not isinstance(header, str):
            s.problems.add(path, "must map a claim name to a header name")
            continue
        _header_name(s, path, header)
        forward_claims.append((claim, header))
    jwks_url, discovery, discovery_url = _discovery(s, kind)
    static_token = standard_webhooks = None
    if kind == "static_token":
        static_token = _static_token(s.section("static_token"))
    elif s.raw("static_token") is not _MISSING:
        s.problems.add(s.at("static_token"), "only applies to type: static_token")
    if kind == "standard_webhooks":
        standard_webhooks = _standard_webhooks(s.section("standard_webhooks"))
    elif s.raw("standard_webhooks") is not _MISSING:
        s.problems.add(s.at("standard_webhooks"), "only applies to type: standard_webhooks")
    cfg = IssuerConfig(
        name=name if isinstance(name, str) else "",
        type=kind,
        profile=profile,
        handshake=s.choice("handshake", d.handshake, ("off", "echo")),
        static_token=static_token,
        standard_webhooks=standard_webhooks,
        issuer=s.string("issuer", None),
        jwks_url=jwks_url,
        algorithms=algorithms,
        audiences=s.strings("audiences", d.audiences),
        allowed_types=s.strings("allowed_types", d.allowed_types),
        require_kid=s.boolean("require_kid", d.require_kid),
        path_prefix=path_prefix,
        clock_skew_seconds=s.number("clock_skew_seconds", d.clock_skew_seconds, 0),
        max_token_age_seconds=s.number("max_token_age_seconds", d.max_token_age_seconds, 1),
        max_lifetime_seconds=s.number("max_lifetime_seconds", d.max_lifetime_seconds, 1),
        require_claims=s.strings("require_claims", d.require_claims),
        replay_key=s.choice("replay_key", d.replay_key, ("jti", "token")),
        body_hash=body_hash,
        jwks=_jwks(s.section("jwks")),
        forward_claims=tuple(forward_claims),
        discovery=discovery,
        discovery_url=discovery_url,
    )
    s.finish()
    return cfg


def _discovery(s: _Section, kind: str) -> tuple[str, bool, str | None]:
    """``(jwks_url, discovery, discovery_url)``: a JWT issuer names its key set either directly
    or through its OIDC discovery document, never both (which one would win is a guess)."""
    discovery = s.boolean("discovery", False)
    discovery_url = _url(s, "discovery_url", None)
    if kind != "jwt" or not (discovery or discovery_url is not None):
        jwks_url = _url(s, "jwks_url") if kind == "jwt" else _url(s, "jwks_url", "")
        return jwks_url, discovery, discovery_url
    if s.raw("jwks_url") is not _MISSING:
        s.problems.add(s.at("jwks_url"), "cannot be set with discovery or discovery_url")
    issuer = s.raw("issuer")
    if not isinstance(issuer, str) or not issuer:
        # OIDC Discovery 1.0 4.3: the document's issuer must equal the configured one.
        s.problems.add(s.at("issuer"), "is required with discovery or discovery_url")
        return "", discovery, discovery_url
    if discovery and discovery_url is not None:
        s.problems.add(s.at("discovery"), "and discovery_url are alternatives: set one")
    if discovery_url is None:
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        parts = urlsplit(discovery_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            s.problems.add(s.at("discovery"), "needs an issuer that is an http(s) URL")
    return "", discovery, discovery_url


def parse_config(data: Any) -> Config:
    """Validate parsed YAML into a ``Config``; raise ``ConfigError`` listing every problem."""
    problems = _Problems()
    data = _interpolate(data, "", problems)
    top = _Section(data, "", problems)
    d_listen, d_admin = Config(issuers=()).listen, Config(issuers=()).admin_listen
    listen = _listen(top, "listen", d_listen)
    admin_listen = _listen(top, "admin_listen", d_admin)
    workers = top.integer("workers", 1, 1)
    grace = top.number("shutdown_grace_seconds", 20.0, 0)
    tls_raw = top.raw("tls")
    tls = None
    if tls_raw is not _MISSING and tls_raw is not None:
        ts = _Section(tls_raw, "tls", problems)
        tls = TlsConfig(_file(ts, "cert_file", True), _file(ts, "key_file", True))
        _cert_pair(ts, "cert_file", "key_file", tls.cert_file, tls.key_file)
        ts.finish()
    upstream = _upstream(top.section("upstream"))
    limits = _limits(top.section("limits"))
    replay = _replay(top.section("replay"))
    forward = _forward(top.section("forward"))
    issuers_raw = top.raw("issuers")
    issuers: list[IssuerConfig] = []
    if not isinstance(issuers_raw, list) or not issuers_raw:
        problems.add("issuers", "must be a non-empty list of trusted issuers")
    else:
        for i, item in enumerate(issuers_raw):
            issuers.append(_issuer(_Section(item, f"issuers[{i}]", problems)))
    top.finish()
    _cross_checks(issuers, workers, replay, listen, admin_listen, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        issuers=tuple(issuers),
        listen=listen,
        admin_listen=admin_listen,
        workers=workers,
        shutdown_grace_seconds=grace,
        tls=tls,
        upstream=upstream,
        limits=limits,
        replay=replay,
        forward=forward,
        secret_files=tuple(problems.files),
    )


def _cross_checks(
    issuers: list[IssuerConfig],
    workers: int,
    replay: ReplayConfig,
    listen: Listen,
    admin_listen: Listen,
    problems: _Problems,
) -> None:
    seen: dict[str, int] = {}
    routes: dict[tuple[str, str | None], int] = {}
    for i, iss in enumerate(issuers):
        if iss.name in seen:
            problems.add(f"issuers[{i}].name", f"duplicates issuers[{seen[iss.name]}].name")
        seen.setdefault(iss.name, i)
        route = (_normal_prefix(iss.path_prefix), iss.issuer)
        if route in routes:
            problems.add(
                f"issuers[{i}]",
                f"same issuer and path_prefix as issuers[{routes[route]}]: routing is ambiguous",
            )
        routes.setdefault(route, i)
        if iss.type != "jwt":
            shared = [
                j
                for j, other in enumerate(issuers)
                if j != i and _normal_prefix(other.path_prefix) == _normal_prefix(iss.path_prefix)
            ]
            if shared:
                problems.add(
                    f"issuers[{i}].path_prefix",
                    f"a {iss.type} issuer needs a path of its own (shared with issuers{shared})",
                )
        elif iss.replay_key == "jti" and "jti" not in iss.require_claims:
            problems.add(
                f"issuers[{i}].require_claims",
                'must contain "jti" when replay_key is jti (or set replay_key: token)',
            )
        for claim, header in iss.forward_claims:
            if header.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
                # forward_claims is a mapping: its entries are named by claim, not by index.
                problems.add(f"issuers[{i}].forward_claims.{claim}", f"{header} cannot be set")
    if workers > 1 and replay.store != "redis":
        problems.add(
            "workers",
            "> 1 needs replay.store: redis (each worker's memory store would let a replay "
            "through another worker)",
        )
    if listen == admin_listen and listen.port != 0:
        problems.add("admin_listen", "must differ from listen")


def _normal_prefix(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: with unknown keys an error, a key written twice
    (the first silently ignored) would be the one surprise left."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}"]) from e
    return parse_config(data)
