"""Configuration: YAML into frozen dataclasses, validated up front, in two passes.

1. ``parse_config(data)`` is pure: it checks YAML-shaped data (types, ranges, choices, unknown keys
   with a "did you mean", rules across fields) and touches no file, so it can judge a config
   written for another machine (a chart's mounts, a container's paths).
2. ``read_files(config)`` is the filesystem pass: it reads token and secret files and checks that
   CA bundles and certificate/key pairs load, so that a bad file is a config error, not a failure
   at the first request.

``load_config(path)`` reads the file with a loader that builds only plain values (strings,
numbers, true/false, null, lists, mappings) and runs both passes, reporting every problem of both
at once. Every problem names its YAML path and, where it helps, the value found and the form
expected (``listen: 8080 is an integer; expected "host:port", e.g. "0.0.0.0:8080"``). Any string
may reference ``${NAME}`` (or ``${NAME:-default}``) from the environment.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml

from gateway.errors import ConfigError
from gateway.profiles import PROFILES, REQUIRED, apply_profile
from gateway.providers import (
    GitHubConfig,
    GitLabConfig,
    ProviderConfig,
    ShopifyConfig,
    SlackConfig,
    StripeConfig,
)

__all__ = [
    "CLIENT_FORWARDING_HEADERS",
    "PROVIDER_TYPES",
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
    "TokenFromConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
    "read_files",
]

# Asymmetric JWS algorithms only (RFC 8725 3.1/3.2): never "none", never HS* with a JWKS.
SUPPORTED_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
READINESS = ("per_issuer", "all_issuers")
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Headers that tell a backend who the client is or which URL it asked for, which a client can
# send itself: stripped unless listed in forward.preserve_headers. (X-Forwarded-For, -Proto,
# -Host, Forwarded and X-Real-IP are set by the gateway from what it saw, per trusted_hops.)
CLIENT_FORWARDING_HEADERS = (
    "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl",
    "X-Forwarded-Scheme", "X-Forwarded-Uri", "X-Forwarded-Path", "X-Forwarded",
    "X-Original-Forwarded-For", "True-Client-IP", "X-Client-IP", "Client-IP",
    "X-Cluster-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP", "X-Original-URL",
    "X-Rewrite-URL", "X-Original-URI", "X-Original-Host", "X-Host", "X-Url-Scheme",
    "Front-End-Https", "X-Envoy-External-Address", "X-Envoy-Original-Path",
)  # fmt: skip
MAX_TRUSTED_HOPS = 16


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
    # Of max_inflight, how many may wait for a body before their credential is checked
    # (Standard Webhooks signs the body); None: a quarter of max_inflight.
    max_unverified_inflight: int | None = None


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
    # How many proxies in front of the gateway append to X-Forwarded-For and are trusted (0:
    # the gateway is the edge, client-sent forwarding headers are replaced or stripped).
    trusted_hops: int = 0
    # Client-sent forwarding headers (of CLIENT_FORWARDING_HEADERS) passed on unchanged.
    preserve_headers: tuple[str, ...] = ()
    # The stable per-push key the backend de-duplicates on (IETF draft-ietf-httpapi-idempotency-
    # key-header); "" sends none. An inbound copy is always removed.
    idempotency_header: str = "Idempotency-Key"


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
class TokenFromConfig:
    """Where a ``type: jwt`` issuer's token is: a header (with an auth scheme, or the whole
    value) or a query parameter. ``keep_token``: forward what carried it (else removed)."""

    header: str | None = "Authorization"
    # None: the header's whole value is the token (no scheme word before it).
    scheme: str | None = "Bearer"
    query: str | None = None
    keep_token: bool = False


@dataclass(frozen=True, slots=True)
class StaticTokenConfig:
    """``type: static_token``: a fixed shared secret in a header (what the A2A SDKs send)."""

    headers: tuple[str, ...] = ("Authorization",)
    # The inline tokens, then (after ``read_files``) one per token file.
    tokens: tuple[str, ...] = ()
    token_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StandardWebhooksConfig:
    """``type: standard_webhooks``: webhook-id/-timestamp/-signature, v1 HMAC and v1a Ed25519."""

    # The inline secrets, then (after ``read_files``) one per secret file.
    secrets: tuple[bytes, ...] = ()
    public_keys: tuple[bytes, ...] = ()
    tolerance_seconds: float = 300.0
    secret_files: tuple[str, ...] = ()


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
    # type: github|stripe|slack|shopify|gitlab: the section of the same name (gateway/providers.py).
    github: GitHubConfig | None = None
    stripe: StripeConfig | None = None
    slack: SlackConfig | None = None
    shopify: ShopifyConfig | None = None
    gitlab: GitLabConfig | None = None
    # OIDC discovery instead of jwks_url: the URL of the provider's configuration document
    # (``discovery: true`` means ``<issuer>/.well-known/openid-configuration``).
    discovery: bool = False
    discovery_url: str | None = None
    token_from: TokenFromConfig = field(default_factory=TokenFromConfig)

    @property
    def provider(self) -> ProviderConfig | None:
        """The provider section of a provider webhook issuer, else None."""
        return self.github or self.stripe or self.slack or self.shopify or self.gitlab


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
    # per_issuer: /readyz is 200 once the replay store answers and every issuer's first key
    # fetch was tried; an issuer without usable keys answers its own pushes 503. all_issuers:
    # 503 until every JWT issuer has a usable key set.
    readiness: str = "per_issuer"
    # Mounted secrets the config reads (token_files, secret_files): a change reloads the config.
    # Not a YAML key (metadata "derived"): what the loader read besides the file itself.
    secret_files: tuple[str, ...] = field(default=(), compare=False, metadata={"derived": True})

    def issuer_names(self) -> list[str]:
        return [i.name for i in self.issuers]


# --------------------------------------------------------------------------------------------
# Reading values: every read records its problem under the value's YAML path.

T = TypeVar("T")
_MISSING: Any = object()

# Nested deeper, or more values once aliases are expanded, is no config: refuse it rather than
# let a recursive or "billion laughs" document exhaust the stack or the memory.
MAX_DEPTH = 64
MAX_VALUES = 100_000
MAX_FILE_BYTES = 4 * 1024 * 1024
_MAX_INT = 2**63 - 1
_SHOWN_CHARS = 60


class _Problems:
    """The problems found so far, in the order a reader should meet them (causes first)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        # Paths whose problems are the effect of a misspelt key (jwks_ulr explains a missing
        # jwks_url): their lines would only send the reader after the wrong fix.
        self.explained: set[str] = set()

    def add(self, path: str, message: str) -> None:
        if not any(_under(path, e) for e in self.explained):
            self.entries.append((path, message))

    def insert(self, index: int, path: str, message: str) -> None:
        self.entries.insert(index, (path, message))

    def mute(self, path: str) -> None:
        """Drop what is found below ``path`` (not at it): a section that is no mapping would
        otherwise add an "is required" for each of its keys."""
        self.explained.add(path + "/")

    def explain(self, path: str) -> None:
        self.explained.add(path)
        self.entries = [(p, m) for p, m in self.entries if not _under(p, path)]

    def about(self, path: str) -> bool:
        """Whether a problem under ``path`` is already recorded (no second line for it)."""
        return any(_under(p, path) for p, _ in self.entries)

    @property
    def lines(self) -> list[str]:
        return [f"{p}: {m}" for p, m in self.entries]


def _under(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):  # below a muted section, not at it
        below = prefix[:-1]
        return not below or path.startswith((below + ".", below + "["))
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


class _Wrong(Exception):
    """A check's verdict on a value: of the wrong type, or of the right type but not allowed."""

    def __init__(self, wrong_type: bool, hint: str = "") -> None:
        super().__init__(hint)
        self.wrong_type = wrong_type
        self.hint = hint


def _kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """A scalar as the reader wrote it, short and on one line; control characters escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # str() of a huge int is slow (and refused past 4300 digits): say its size instead.
        if value.bit_length() > 128:
            return f"a {int(value.bit_length() * 0.30103) + 1}-digit number"
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        cut = value[:_SHOWN_CHARS]
        return json.dumps(cut) + ("..." if len(value) > _SHOWN_CHARS else "")
    return _kind(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float)


def _near(word: str, choices: Iterable[str]) -> str | None:
    """The choice the reader probably meant: a close spelling, or the one ``word`` begins."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    if close:
        return close[0]
    prefixed = [c for c in options if c.startswith(word + "_")] if word else []
    return prefixed[0] if len(prefixed) == 1 else None


def _complaint(value: Any, what: str, wrong: _Wrong, secret: bool) -> str:
    if wrong.wrong_type:
        shown = f"{_show(value)} is " if _is_scalar(value) and not secret else "is "
        message = f"{shown}{_kind(value)}; expected {what}"
    else:
        message = f"must be {what}" if secret else f"must be {what}, not {_show(value)}"
    return message + (f"; {wrong.hint}" if wrong.hint else "")


class _Section:
    """Typed reads from one YAML mapping; every read records problems under the mapping's path."""

    def __init__(self, data: Any, path: str, problems: _Problems, start: int | None = None) -> None:
        self.path = path
        self.problems = problems
        # Where this section's own lines begin: its unknown keys go first (causes first).
        self.start = len(problems.entries) if start is None else start
        self.seen: set[str] = set()
        if data is None or data is _MISSING:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path or "(top level)", f"is {_kind(data)}; expected a mapping")
            problems.mute(path)
            data = {}
        self.data: Mapping[Any, Any] = data

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key, _MISSING)

    def read(
        self,
        key: str,
        default: T,
        check: Callable[[Any], T],
        what: str,
        *,
        secret: bool = False,
    ) -> T:
        """``check`` returns the value to use or raises ``_Wrong``; a missing key (or null
        where the default is null) is the default, or "is required" without one."""
        value = self.raw(key)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                self.problems.add(self.at(key), "is required")
            return default
        try:
            return check(value)
        except _Wrong as wrong:
            self.problems.add(self.at(key), _complaint(value, what, wrong, secret))
            return default

    def string(self, key: str, default: Any = _MISSING, *, secret: bool = False) -> Any:
        return self.read(key, default, _string, "a string", secret=secret)

    def boolean(self, key: str, default: bool) -> bool:
        def check(v: Any) -> bool:
            if not isinstance(v, bool):
                raise _Wrong(True)
            return v

        return self.read(key, default, check, "true or false")

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int = _MAX_INT) -> int:
        def check(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise _Wrong(True)
            if v < minimum:
                raise _Wrong(False)
            if v > maximum:
                raise _Wrong(False, f"the largest allowed is {maximum}")
            return v

        return self.read(key, default, check, f"an integer >= {minimum}")

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        def check(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _Wrong(True)
            try:
                f = float(v)
            except OverflowError:  # an integer too large for a float
                raise _Wrong(False, "too large for a number") from None
            if not minimum <= f < float("inf"):
                raise _Wrong(False)
            return f

        return self.read(key, default, check, f"a number >= {minimum:g}")

    def strings(
        self, key: str, default: tuple[str, ...], *, secret: bool = False
    ) -> tuple[str, ...]:
        raw = self.data.get(key)
        what = "a list of strings"
        if isinstance(raw, str) and not secret:  # the commonest slip: one item, no brackets
            what += f", e.g. [{json.dumps(raw[:_SHOWN_CHARS])}]"

        def check(v: Any) -> tuple[str, ...]:
            if not isinstance(v, list):
                raise _Wrong(True)
            for i, item in enumerate(v):
                if not isinstance(item, str):
                    raise _Wrong(True, f"item {i} is {_kind(item)}")
            return tuple(v)

        return self.read(key, default, check, what, secret=secret)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def check(v: Any) -> str:
            if not isinstance(v, str):
                raise _Wrong(True)
            if v not in choices:
                near = _near(v, choices)
                raise _Wrong(False, f"did you mean {near}?" if near else "")
            return v

        return self.read(key, default, check, "one of " + ", ".join(choices))

    def section(self, key: str) -> _Section:
        return _Section(self.raw(key), self.at(key), self.problems)

    def finish(self) -> None:
        """Unknown keys are errors, reported before this section's other problems. A near miss
        of a key that is absent names it, and the absent key's problems (its "is required")
        are dropped: they are the typo's effect, and the typo is the thing to fix."""
        known = {k for k in self.seen if k not in self.data}
        explained: list[str] = []
        index = self.start
        for key in self.data:
            if key in self.seen:
                continue
            near = _near(key, known) if isinstance(key, str) else None
            message = "unknown key" + (f"; did you mean {near}?" if near else "")
            self.problems.insert(index, self.at(str(key)), message)
            index += 1
            if near:
                explained.append(self.at(near))
        for path in explained:
            self.problems.explain(path)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Wrong(True)
    return v


class _TooLarge(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _interpolate(
    value: Any, path: str, problems: _Problems, depth: int = 0, count: list[int] | None = None
) -> Any:
    """``${NAME}`` references replaced, in a copy. The copy is bounded in depth and size: data
    shared through YAML aliases is expanded here, so a small document could otherwise stand
    for a huge (or, with Python data, endless) one."""
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _TooLarge(path, f"more than {MAX_VALUES} values (with aliases expanded)")
    if depth > MAX_DEPTH:
        raise _TooLarge(path, f"nested more than {MAX_DEPTH} levels deep")
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
        return [
            _interpolate(v, f"{path}[{i}]", problems, depth + 1, count) for i, v in enumerate(value)
        ]
    if isinstance(value, Mapping):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), problems, depth + 1, count)
            for k, v in value.items()
        }
    return value


# --------------------------------------------------------------------------------------------
# The pure pass: one small function per section.

_LISTEN_FORM = '"host:port", e.g. "0.0.0.0:8080" or "[::1]:8080"'
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def _listen(s: _Section, key: str, default: Listen) -> Listen:
    def check(v: Any) -> Listen:
        if v is None:
            return default
        if not isinstance(v, str):
            raise _Wrong(True)
        host, sep, port = v.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        # Port 0 asks the OS for a free port (tests, the demo).
        if not sep or not _PORT_RE.fullmatch(port) or int(port) > 65535:
            raise _Wrong(False)
        if not _HOST_RE.fullmatch(host):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise _Wrong(False) from None
        return Listen(host, int(port))

    return s.read(key, default, check, _LISTEN_FORM)


def _url_check(v: Any, schemes: tuple[str, ...], optional: bool) -> str:
    if not isinstance(v, str):
        raise _Wrong(True)
    if not v and optional:
        return v
    try:
        parts = urlsplit(v)
        ok = parts.scheme in schemes and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or too large
    except ValueError:
        ok = False
    if not ok:
        raise _Wrong(False)
    return v


def _url(s: _Section, key: str, default: Any = _MISSING) -> Any:
    raw = s.data.get(key)
    # A URL with user:password@ is shown only by its type: problems end up in logs.
    secret = isinstance(raw, str) and "@" in raw
    optional = default is not _MISSING
    return s.read(
        key,
        default,
        lambda v: _url_check(v, ("http", "https"), optional),
        "an http(s) URL",
        secret=secret,
    )


def _path(s: _Section, key: str, required: bool = False) -> Any:
    """A file's path: only its shape here; ``read_files`` opens it."""

    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise _Wrong(True)
        if not v or "\0" in v:
            raise _Wrong(False)
        return v

    return s.read(key, _MISSING if required else None, check, "a file path")


def _paths(s: _Section, key: str) -> tuple[str, ...]:
    paths = s.strings(key, ())
    for i, p in enumerate(paths):
        if not p or "\0" in p:
            s.problems.add(f"{s.at(key)}[{i}]", f"must be a file path, not {_show(p)}")
    return tuple(p for p in paths if p and "\0" not in p)


_HEADER_FORM = "a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"


def _header_name(s: _Section, path: str, value: str) -> None:
    if not HEADER_NAME_RE.match(value):
        s.problems.add(path, f"must be {_HEADER_FORM}, not {_show(value)}")


def _tls(top: _Section) -> TlsConfig | None:
    raw = top.raw("tls")
    if raw is _MISSING or raw is None:
        return None
    s = _Section(raw, "tls", top.problems)
    cert, key = _path(s, "cert_file", True), _path(s, "key_file", True)
    s.finish()
    return TlsConfig(cert, key) if isinstance(cert, str) and isinstance(key, str) else None


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
        ca_file=_path(s, "ca_file"),
        client_cert_file=_path(s, "client_cert_file"),
        client_key_file=_path(s, "client_key_file"),
    )
    if (cfg.client_cert_file is None) != (cfg.client_key_file is None):
        s.problems.add(s.path, "client_cert_file and client_key_file go together")
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
        max_unverified_inflight=_unverified_inflight(s),
    )
    s.finish()
    return cfg


def _unverified_inflight(s: _Section) -> int | None:
    """``limits.max_unverified_inflight``: at most ``max_inflight`` (null: a quarter of it)."""
    value = s.raw("max_unverified_inflight")
    if value is _MISSING or value is None:
        return None
    cap = s.integer("max_unverified_inflight", 1, 1)
    top = s.data.get("max_inflight", LimitsConfig().max_inflight)
    if isinstance(top, int) and not isinstance(top, bool) and cap > top:
        s.problems.add(s.at("max_unverified_inflight"), f"is more than max_inflight ({top})")
    return cap


def _redis_url(v: Any) -> str:
    if not isinstance(v, str):
        raise _Wrong(True)
    try:
        parts = urlsplit(v)
    except ValueError:
        raise _Wrong(False) from None
    if parts.scheme not in ("redis", "rediss"):
        raise _Wrong(False)
    if parts.query:
        # redis-py would read them for a Cluster and the standalone connection would not: one
        # rule for both, and the gateway's own keys for what they would set.
        raise _Wrong(
            False,
            "it takes no query options (the database is the path's number; TLS and timeouts "
            "are replay.redis_ca_file and replay.redis_timeout_seconds)",
        )
    return v


def _replay(s: _Section) -> ReplayConfig:
    d = ReplayConfig()
    cfg = ReplayConfig(
        store=s.choice("store", d.store, ("memory", "redis")),
        # Shown only by its type in problems: a Redis URL usually carries a password.
        redis_url=s.read(
            "redis_url",
            None,
            _redis_url,
            "a redis:// or rediss:// URL",
            secret=True,
        ),
        max_entries=s.integer("max_entries", d.max_entries, 1),
        redis_mode=s.choice("redis_mode", d.redis_mode, ("standalone", "cluster")),
        redis_pool_size=s.integer("redis_pool_size", d.redis_pool_size, 1),
        redis_timeout_seconds=s.number("redis_timeout_seconds", d.redis_timeout_seconds, 0.001),
        redis_ca_file=_path(s, "redis_ca_file"),
        key_prefix=s.string("key_prefix", d.key_prefix),
        on_store_error=s.choice("on_store_error", d.on_store_error, ("deny", "allow")),
    )
    if cfg.store == "redis" and not cfg.redis_url and not s.problems.about(s.at("redis_url")):
        s.problems.add(s.at("redis_url"), "is required when store is redis")
    s.finish()
    return cfg


# Headers no configured header name (forward.idempotency_header, a provider's id_header, a
# forward_claims target) may take the place of: framing, credentials and the ones the gateway
# sets itself on every push (forward_headers.py). Any X-Forwarded-* is reserved too, and so are
# forward.claims_header and forward.idempotency_header (see _gateway_sets).
_RESERVED_FORWARD_HEADERS = frozenset(
    {
        "authorization",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-jwt-issuer",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    }
)


def _gateway_sets(name: str, forward: ForwardConfig) -> bool:
    """Whether ``name`` (compared as backends fold it: any case, ``_`` for ``-``) is a header
    the gateway sets on a forwarded push itself."""
    n = name.lower().replace("_", "-")
    own = {forward.claims_header.lower().replace("_", "-")}
    if forward.idempotency_header:
        own.add(forward.idempotency_header.lower().replace("_", "-"))
    return n in _RESERVED_FORWARD_HEADERS or n in own or n.startswith("x-forwarded-")


def _forward(s: _Section) -> ForwardConfig:
    d = ForwardConfig()
    cfg = ForwardConfig(
        header_prefix=s.string("header_prefix", d.header_prefix),
        claims_header=s.string("claims_header", d.claims_header),
        keep_token=s.boolean("keep_token", d.keep_token),
        **_client_forwarding(s),
        idempotency_header=s.string("idempotency_header", d.idempotency_header),
    )
    _header_name(s, s.at("header_prefix"), cfg.header_prefix)
    _header_name(s, s.at("claims_header"), cfg.claims_header)
    if cfg.idempotency_header:
        _header_name(s, s.at("idempotency_header"), cfg.idempotency_header)
        if cfg.idempotency_header.lower() in _RESERVED_FORWARD_HEADERS | {
            cfg.claims_header.lower()
        }:
            s.problems.add(s.at("idempotency_header"), "names a header the gateway sets itself")
    s.finish()
    return cfg


def _client_forwarding(s: _Section) -> dict[str, Any]:
    """``forward.trusted_hops`` and ``forward.preserve_headers`` (names of
    ``CLIENT_FORWARDING_HEADERS``, any case, kept in their canonical spelling)."""
    hops = s.integer("trusted_hops", 0, 0, MAX_TRUSTED_HOPS)
    canonical = {n.lower(): n for n in CLIENT_FORWARDING_HEADERS}
    preserve: list[str] = []
    for i, name in enumerate(s.strings("preserve_headers", ())):
        known = canonical.get(name.lower().replace("_", "-"))
        if known is None:
            near = _near(name, CLIENT_FORWARDING_HEADERS)
            hint = f"; did you mean {near}?" if near else ""
            s.problems.add(
                f"{s.at('preserve_headers')}[{i}]",
                f"{_show(name)} is not a client forwarding header the gateway strips{hint}"
                f" (one of {', '.join(CLIENT_FORWARDING_HEADERS)})",
            )
        elif known not in preserve:
            preserve.append(known)
    return {"trusted_hops": hops, "preserve_headers": tuple(preserve)}


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
        ca_file=_path(s, "ca_file"),
    )
    s.finish()
    return cfg


_MIN_TOKEN_CHARS = 16


def _static_token(s: _Section) -> StaticTokenConfig:
    d = StaticTokenConfig()
    headers = s.strings("headers", d.headers)
    for i, h in enumerate(headers):
        _header_name(s, f"{s.at('headers')}[{i}]", h)
    tokens = s.strings("tokens", (), secret=True)
    files = _paths(s, "token_files")
    if not tokens and not files and not s.problems.about(s.at("tokens")):
        s.problems.add(s.at("tokens"), "at least one token is required (tokens or token_files)")
    for i, t in enumerate(tokens):
        if len(t) < _MIN_TOKEN_CHARS:
            s.problems.add(
                f"{s.at('tokens')}[{i}]", f"must be at least {_MIN_TOKEN_CHARS} characters"
            )
    s.finish()
    return StaticTokenConfig(headers=headers, tokens=tokens, token_files=files)


def decode_prefixed(value: str, prefix: str, size: int | None = None) -> bytes | None:
    """``whsec_<base64>`` / ``whpk_<base64>`` to bytes, or None. The base64 ``=`` padding is
    optional: the Standard Webhooks libraries sign with secrets written without it."""
    body = value.removeprefix(prefix)
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None
    if not raw or (size is not None and len(raw) != size):
        return None
    return raw


def _b64_prefixed(
    s: _Section, path: str, value: str, prefix: str, size: int | None
) -> bytes | None:
    raw = decode_prefixed(value, prefix, size)
    if raw is None:
        # Never the value itself: it is a secret.
        s.problems.add(path, f"must be {prefix}<base64 of {f'{size} bytes' if size else 'bytes'}>")
    return raw


def _standard_webhooks(s: _Section) -> StandardWebhooksConfig:
    d = StandardWebhooksConfig()
    secrets = [
        _b64_prefixed(s, f"{s.at('secrets')}[{i}]", v, "whsec_", None)
        for i, v in enumerate(s.strings("secrets", (), secret=True))
    ]
    keys = [
        _b64_prefixed(s, f"{s.at('public_keys')}[{i}]", v, "whpk_", 32)
        for i, v in enumerate(s.strings("public_keys", ()))
    ]
    files = _paths(s, "secret_files")
    if not (secrets or keys or files):
        s.problems.add(s.path, "needs secrets (v1, whsec_...) or public_keys (v1a, whpk_...)")
    cfg = StandardWebhooksConfig(
        secrets=tuple(x for x in secrets if x is not None),
        public_keys=tuple(x for x in keys if x is not None),
        tolerance_seconds=_tolerance(s, d.tolerance_seconds),
        secret_files=files,
    )
    s.finish()
    return cfg


# --- provider webhooks: type github|stripe|slack|shopify|gitlab (gateway/providers.py) -------

PROVIDER_TYPES = ("github", "stripe", "slack", "shopify", "gitlab")
_PROVIDER_CLASSES: dict[str, type[ProviderConfig]] = {
    "github": GitHubConfig,
    "stripe": StripeConfig,
    "slack": SlackConfig,
    "shopify": ShopifyConfig,
    "gitlab": GitLabConfig,
}
# Providers that sign a timestamp (a window) and those that do not (a remembered body hash or id).
_TIMESTAMPED = ("stripe", "slack")
# The replay window of an id-only provider. Every delivered id stays in the replay store for the
# whole window, so the window is what bounds the store: the memory store holds ``max_entries``,
# i.e. at most max_entries / dedupe_seconds deliveries a second sustained (check-config says).
# Below a minute an id-only provider has no replay protection to speak of; a week is past every
# provider's own redelivery (GitHub 3 days, Shopify 48 hours of retries).
MIN_DEDUPE_SECONDS = 60.0
MAX_DEDUPE_SECONDS = 7 * 86_400.0
_RESERVED_HEADERS = ("authorization", "host", "content-length", "transfer-encoding")
# A signed timestamp's window: a capture is accepted while it lasts and its replay key is kept
# for twice as long. Stripe, Slack and Standard Webhooks use 300 s; an hour is generous.
MAX_TOLERANCE_SECONDS = 3600.0


def _tolerance(s: _Section, default: float) -> float:
    value = s.number("tolerance_seconds", default, 1)
    if value > MAX_TOLERANCE_SECONDS:
        s.problems.add(
            s.at("tolerance_seconds"),
            f"must be at most {MAX_TOLERANCE_SECONDS:g} (1 hour): a captured request is "
            "accepted again for this long and its replay key kept for twice as long",
        )
        return default
    return value


def _provider_default(kind: str, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(_PROVIDER_CLASSES[kind]) if f.name == name)


def _provider_secret(s: _Section, kind: str, path: str, value: str) -> bytes | None:
    """A provider secret as the bytes the provider keys its HMAC (or compares) with: the
    string's UTF-8, as is. A Stripe ``whsec_...`` secret is used whole, never base64-decoded:
    Stripe's own libraries key the HMAC with the literal string."""
    if kind == "stripe" and not value.startswith("whsec_"):
        s.problems.add(path, "must be the endpoint's signing secret (whsec_...), not an API key")
        return None
    if len(value) < _MIN_TOKEN_CHARS:
        s.problems.add(path, f"must be at least {_MIN_TOKEN_CHARS} characters")
        return None
    return value.encode()


def _provider(s: _Section, kind: str, namespace: bytes) -> ProviderConfig:
    """The ``github:`` (``stripe:``, ...) section of a provider issuer."""
    secrets = [
        _provider_secret(s, kind, f"{s.at('secrets')}[{i}]", v)
        for i, v in enumerate(s.strings("secrets", (), secret=True))
    ]
    files = _paths(s, "secret_files")
    if not secrets and not files and not s.problems.about(s.at("secrets")):
        s.problems.add(s.at("secrets"), "at least one secret is required (secrets or secret_files)")
    id_header = s.string("id_header", _provider_default(kind, "id_header"))
    if isinstance(id_header, str) and id_header:  # "": no id header
        _header_name(s, s.at("id_header"), id_header)
        if id_header.lower() in _RESERVED_HEADERS:
            s.problems.add(s.at("id_header"), f"{id_header} cannot be set")
    kw: dict[str, Any] = {
        "namespace": namespace,
        "secrets": tuple(dict.fromkeys(x for x in secrets if x is not None)),
        "secret_files": files,
        "keep_signature": s.boolean("keep_signature", False),
        "id_header": id_header if isinstance(id_header, str) else "X-Webhook-Id",
    }
    if kind in _TIMESTAMPED:
        default = _provider_default(kind, "tolerance_seconds")
        kw["tolerance_seconds"] = _tolerance(s, default)
    else:
        default = _provider_default(kind, "dedupe_seconds")
        dedupe = s.number("dedupe_seconds", default, MIN_DEDUPE_SECONDS)
        if dedupe > MAX_DEDUPE_SECONDS:
            s.problems.add(
                s.at("dedupe_seconds"),
                f"must be at most {MAX_DEDUPE_SECONDS:g} (7 days): every delivered id is kept "
                "in the replay store for this long",
            )
            dedupe = default
        kw["dedupe_seconds"] = dedupe
    if kind == "slack":
        kw["answer_challenge"] = s.boolean("answer_challenge", False)
    if kind == "gitlab":
        # The first one present is the delivery's id (GitLab 17.4+ sends Idempotency-Key).
        names = s.strings("dedupe_headers", _provider_default(kind, "dedupe_headers"))
        for i, h in enumerate(names):
            _header_name(s, f"{s.at('dedupe_headers')}[{i}]", h)
        kw["dedupe_headers"] = names
    s.finish()
    return _PROVIDER_CLASSES[kind](**kw)


_SCHEME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}")
_QUERY_NAME_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# Headers that frame or route the request: never a token's carrier.
_NOT_A_TOKEN_HEADER = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "cookie"}
)


def _token_from(s: _Section) -> TokenFromConfig:
    """``token_from``: ``{header: Authorization, scheme: Bearer}`` by default; another scheme,
    another header (``scheme`` omitted or null: the whole value), or ``{query: <name>}``."""
    d = TokenFromConfig()
    has_header, has_query = s.raw("header") is not _MISSING, s.raw("query") is not _MISSING
    has_scheme = s.raw("scheme") is not _MISSING
    keep = s.boolean("keep_token", d.keep_token)
    if has_header and has_query:
        s.problems.add(s.path, "header and query are alternatives: set one")
    if has_query:
        query = s.string("query", None)
        if isinstance(query, str) and not _QUERY_NAME_RE.fullmatch(query):
            s.problems.add(
                s.at("query"),
                f"must be a query parameter name ([A-Za-z0-9._~-]), not {_show(query)}",
            )
        if has_scheme:
            s.problems.add(s.at("scheme"), "only applies with header (a query has no scheme)")
        s.finish()
        return TokenFromConfig(header=None, scheme=None, query=query, keep_token=keep)
    header = s.string("header", d.header)
    if not isinstance(header, str) or header is None:
        header = d.header
    _header_name(s, s.at("header"), header)
    if header.lower() in _NOT_A_TOKEN_HEADER:
        s.problems.add(s.at("header"), f"{header} cannot carry a token")
    # The scheme word is Bearer on Authorization unless written; elsewhere none unless written.
    default_scheme = "Bearer" if header.lower() == "authorization" else None
    scheme = s.string("scheme", None) if has_scheme else default_scheme
    if isinstance(scheme, str) and not _SCHEME_RE.fullmatch(scheme):
        s.problems.add(
            s.at("scheme"),
            f"must be one word (an HTTP auth scheme such as Bearer), not {_show(scheme)}",
        )
    s.finish()
    return TokenFromConfig(header=header, scheme=scheme, query=None, keep_token=keep)


def _with_profile(s: _Section) -> tuple[_Section, str | None]:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise _Wrong(True)
        if v not in PROFILES:
            near = _near(v, PROFILES)
            raise _Wrong(False, f"did you mean {near}?" if near else "")
        return v

    profile = s.read("profile", None, check, "one of " + ", ".join(PROFILES))
    if profile is None:
        return s, None
    discovers = any(k in s.data for k in ("discovery", "discovery_url"))
    for key in REQUIRED[profile]:
        # OIDC discovery names the key set instead of jwks_url.
        if key == "jwks_url" and discovers:
            continue
        if key not in s.data:
            s.problems.add(s.at(key), f"is required with profile {profile}")
    merged = apply_profile(profile, dict(s.data))
    # The profile's presets read as if written here; the start stays so that an unknown key
    # is still reported before the "is required with profile" it may explain.
    return _Section(merged, s.path, s.problems, start=s.start), profile


def _algorithms(s: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    algorithms = s.strings("algorithms", default)
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
    return algorithms


def _forward_claims(s: _Section) -> tuple[tuple[str, str], ...]:
    fc = s.section("forward_claims")
    claims: list[tuple[str, str]] = []
    for claim, header in fc.data.items():
        fc.seen.add(claim)
        path = fc.at(str(claim))
        if not isinstance(claim, str) or not isinstance(header, str):
            s.problems.add(path, "must map a claim name to a header name")
            continue
        _header_name(s, path, header)
        claims.append((claim, header))
    return tuple(claims)


def _optional_section(s: _Section, key: str, kind: str, wanted: str) -> _Section | None:
    """The section for ``key`` when the issuer's type is ``wanted``; elsewhere a problem."""
    present = s.raw(key) is not _MISSING
    if kind == wanted:
        return s.section(key)
    if present:
        s.problems.add(s.at(key), f"only applies to type: {wanted}")
    return None


def _issuer(s: _Section) -> IssuerConfig:
    d = IssuerConfig(name="", jwks_url="")
    s, profile = _with_profile(s)
    kind = s.choice("type", d.type, ("jwt", "static_token", "standard_webhooks", *PROVIDER_TYPES))
    name = s.string("name")
    if isinstance(name, str) and not NAME_RE.match(name):
        s.problems.add(
            s.at("name"), f"must match [a-z0-9_-]+ (at most 64 characters), not {_show(name)}"
        )
    path_prefix = s.string("path_prefix", d.path_prefix)
    if isinstance(path_prefix, str) and not path_prefix.startswith("/"):
        s.problems.add(s.at("path_prefix"), f'must start with "/", not {_show(path_prefix)}')
    body_hash_raw = s.raw("body_hash")
    body_hash = (
        None
        if body_hash_raw is _MISSING or body_hash_raw is None
        else _body_hash(_Section(body_hash_raw, s.at("body_hash"), s.problems))
    )
    st = _optional_section(s, "static_token", kind, "static_token")
    swh = _optional_section(s, "standard_webhooks", kind, "standard_webhooks")
    providers: dict[str, Any] = {}
    for p in PROVIDER_TYPES:
        section = _optional_section(s, p, kind, p)
        if section is not None:
            # verify.replay_namespace's rule (its iss, else its name), the other issuers' keys.
            iss = s.data.get("issuer")
            ns = iss if isinstance(iss, str) and iss else name
            providers[p] = _provider(section, p, ns.encode() if isinstance(ns, str) else b"")
    jwks_url, discovery, discovery_url = _discovery(s, kind)
    tf = _optional_section(s, "token_from", kind, "jwt")
    cfg = IssuerConfig(
        name=name if isinstance(name, str) else "",
        type=kind,
        profile=profile,
        handshake=s.choice("handshake", d.handshake, ("off", "echo")),
        static_token=_static_token(st) if st else None,
        standard_webhooks=_standard_webhooks(swh) if swh else None,
        issuer=s.string("issuer", None),
        jwks_url=jwks_url,
        algorithms=_algorithms(s, d.algorithms),
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
        forward_claims=_forward_claims(s),
        discovery=discovery,
        discovery_url=discovery_url,
        token_from=_token_from(tf) if tf else TokenFromConfig(),
    )
    if providers:
        cfg = replace(cfg, **providers)
    s.finish()
    return cfg


def _issuers(top: _Section) -> list[IssuerConfig]:
    raw = top.raw("issuers")
    if not isinstance(raw, list) or not raw:
        top.problems.add("issuers", "must be a non-empty list of trusted issuers")
        return []
    return [_issuer(_Section(item, f"issuers[{i}]", top.problems)) for i, item in enumerate(raw)]


def _secret_paths(issuers: Iterable[IssuerConfig]) -> tuple[str, ...]:
    paths: list[str] = []
    for iss in issuers:
        if iss.static_token:
            paths += iss.static_token.token_files
        if iss.standard_webhooks:
            paths += iss.standard_webhooks.secret_files
        if iss.provider:
            paths += iss.provider.secret_files
    return tuple(paths)


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


def _parse(data: Any) -> tuple[Config, list[str]]:
    """The config and its problems; with problems, the config holds defaults where values were
    wrong (so that the file pass can still check the rest)."""
    problems = _Problems()
    try:
        data = _interpolate(data, "", problems)
    except _TooLarge as e:
        # The size is the whole document's: name no path, the limit was only reached there.
        path = e.path if "deep" in e.message else ""
        raise ConfigError([f"{path or '(top level)'}: {e.message}"]) from None
    top = _Section(data, "", problems)
    defaults = Config(issuers=())
    listen = _listen(top, "listen", defaults.listen)
    admin_listen = _listen(top, "admin_listen", defaults.admin_listen)
    workers = top.integer("workers", 1, 1)
    grace = top.number("shutdown_grace_seconds", 20.0, 0)
    tls = _tls(top)
    upstream = _upstream(top.section("upstream"))
    limits = _limits(top.section("limits"))
    replay = _replay(top.section("replay"))
    forward = _forward(top.section("forward"))
    readiness = top.choice("readiness", defaults.readiness, READINESS)
    issuers = _issuers(top)
    top.finish()
    _cross_checks(issuers, workers, replay, listen, admin_listen, problems)
    _check_idempotency_header(issuers, forward, problems)
    config = Config(
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
        readiness=readiness,
        secret_files=_secret_paths(issuers),
    )
    return config, problems.lines


def parse_config(data: Any) -> Config:
    """Validate parsed YAML into a ``Config``; raise ``ConfigError`` listing every problem.

    Pure: no file is read. Token and secret files are listed (``token_files``,
    ``secret_files``) but read by ``read_files``, which ``load_config`` runs too."""
    config, problems = _parse(data)
    if problems:
        raise ConfigError(problems)
    return config


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
        else:
            _same_token_location(issuers, i, problems)
        if iss.type == "jwt" and iss.replay_key == "jti" and "jti" not in iss.require_claims:
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


def _same_token_location(issuers: list[IssuerConfig], i: int, problems: _Problems) -> None:
    """JWT issuers of one path_prefix share where the token is: it is read before the token's
    iss can say which of them sent it."""
    iss = issuers[i]
    for j in range(i):
        other = issuers[j]
        if (
            other.type == "jwt"
            and _normal_prefix(other.path_prefix) == _normal_prefix(iss.path_prefix)
            and other.token_from != iss.token_from
        ):
            problems.add(
                f"issuers[{i}].token_from",
                f"differs from issuers[{j}].token_from on the same path_prefix (the token is "
                "found before its iss names the issuer)",
            )
            return


def _normal_prefix(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


# --------------------------------------------------------------------------------------------
# The file pass: what the config names on disk must be there and load.


class _FileProblem(Exception):
    pass


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise _FileProblem(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # e.g. an embedded NUL byte from Python data
        raise _FileProblem(f"cannot read {path}: {e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _FileProblem(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _read_text(path: str) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise _FileProblem(f"{path} is not UTF-8 text (byte {e.start})") from None


def _no_password() -> bytes:
    # An encrypted key would otherwise make OpenSSL prompt on the terminal and hang.
    return b""


def _check_idempotency_header(
    issuers: list[IssuerConfig], forward: ForwardConfig, problems: _Problems
) -> None:
    """No forward_claims target or provider id_header may name a header the gateway sets
    itself: it is written last and would replace the gateway's own (for GitHub, Shopify and
    GitLab the id is an unsigned header the sender chooses)."""
    name = forward.idempotency_header.lower()
    for i, iss in enumerate(issuers):
        for claim, header in iss.forward_claims:
            if name and header.lower() == name:
                problems.add(
                    f"issuers[{i}].forward_claims.{claim}",
                    f"{header} is forward.idempotency_header",
                )
            elif header.lower() not in _RESERVED_HEADERS and _gateway_sets(header, forward):
                problems.add(
                    f"issuers[{i}].forward_claims.{claim}",
                    f"{header} names a header the gateway sets itself",
                )
        provider = iss.provider
        id_header = provider.id_header if provider is not None else ""
        # Framing and credentials (_RESERVED_HEADERS) are reported where the section is read.
        if (
            id_header
            and id_header.lower() not in _RESERVED_HEADERS
            and _gateway_sets(id_header, forward)
        ):
            problems.add(
                f"issuers[{i}].{iss.type}.id_header",
                f"{id_header} names a header the gateway sets itself",
            )


def _check_ca(problems: _Problems, at: str, path: str | None) -> None:
    if path is None:
        return
    try:
        _read_bytes(path)
        ssl.create_default_context(cafile=path)
    except _FileProblem as e:
        problems.add(at, str(e))
    except (ssl.SSLError, OSError, ValueError) as e:
        problems.add(at, f"{path} is not a PEM CA bundle ({e})")


def _check_pair(
    problems: _Problems, section: str, cert_key: str, key_key: str, cert: str, key: str
) -> None:
    readable = True
    for name, path in ((cert_key, cert), (key_key, key)):
        try:
            _read_bytes(path)
        except _FileProblem as e:
            problems.add(f"{section}.{name}", str(e))
            readable = False
    if not readable:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError, ValueError) as e:
        problems.add(
            f"{section}.{cert_key}",
            f"and {key_key} are not a PEM certificate and its (unencrypted) key ({e})",
        )


def _token_files(
    problems: _Problems, at: str, cfg: StaticTokenConfig | None
) -> StaticTokenConfig | None:
    if cfg is None or not cfg.token_files:
        return cfg
    tokens = list(cfg.tokens)
    for i, path in enumerate(cfg.token_files):
        try:
            token = _read_text(path)
        except _FileProblem as e:
            problems.add(f"{at}.token_files[{i}]", str(e))
            continue
        if len(token) < _MIN_TOKEN_CHARS:
            problems.add(
                f"{at}.token_files[{i}]",
                f"the token in {path} must be at least {_MIN_TOKEN_CHARS} characters",
            )
        tokens.append(token)
    # dict.fromkeys: reading the files twice (read_files on a read config) adds nothing.
    return replace(cfg, tokens=tuple(dict.fromkeys(tokens)))


def _secret_files(
    problems: _Problems, at: str, cfg: StandardWebhooksConfig | None
) -> StandardWebhooksConfig | None:
    if cfg is None or not cfg.secret_files:
        return cfg
    secrets = list(cfg.secrets)
    for i, path in enumerate(cfg.secret_files):
        try:
            raw = decode_prefixed(_read_text(path), "whsec_")
        except _FileProblem as e:
            problems.add(f"{at}.secret_files[{i}]", str(e))
            continue
        if raw is None:
            problems.add(f"{at}.secret_files[{i}]", f"{path} must hold whsec_<base64 of bytes>")
            continue
        secrets.append(raw)
    return replace(cfg, secrets=tuple(dict.fromkeys(secrets)))


_P = TypeVar("_P", GitHubConfig, StripeConfig, SlackConfig, ShopifyConfig, GitLabConfig)


def _provider_files(problems: _Problems, at: str, cfg: _P | None) -> _P | None:
    """A provider section with one secret per ``secret_files`` entry added: the file's text,
    less surrounding whitespace, as the inline secrets are (Stripe's ``whsec_`` kept whole)."""
    if cfg is None or not cfg.secret_files:
        return cfg
    kind = next(k for k, c in _PROVIDER_CLASSES.items() if isinstance(cfg, c))
    secrets = list(cfg.secrets)
    for i, path in enumerate(cfg.secret_files):
        where = f"{at}.{kind}.secret_files[{i}]"
        try:
            text = _read_text(path)
        except _FileProblem as e:
            problems.add(where, str(e))
            continue
        if kind == "stripe" and not text.startswith("whsec_"):
            problems.add(where, f"{path} must hold the endpoint's signing secret (whsec_...)")
        elif len(text) < _MIN_TOKEN_CHARS:
            problems.add(where, f"{path} must hold at least {_MIN_TOKEN_CHARS} characters")
        else:
            secrets.append(text.encode())
    return replace(cfg, secrets=tuple(dict.fromkeys(secrets)))


def _read_files(config: Config) -> tuple[Config, list[str]]:
    problems = _Problems()
    if config.tls:
        _check_pair(
            problems, "tls", "cert_file", "key_file", config.tls.cert_file, config.tls.key_file
        )
    up = config.upstream
    _check_ca(problems, "upstream.ca_file", up.ca_file)
    if up.client_cert_file and up.client_key_file:
        _check_pair(
            problems,
            "upstream",
            "client_cert_file",
            "client_key_file",
            up.client_cert_file,
            up.client_key_file,
        )
    _check_ca(problems, "replay.redis_ca_file", config.replay.redis_ca_file)
    issuers = []
    for i, iss in enumerate(config.issuers):
        at = f"issuers[{i}]"
        _check_ca(problems, f"{at}.jwks.ca_file", iss.jwks.ca_file)
        issuers.append(
            replace(
                iss,
                static_token=_token_files(problems, f"{at}.static_token", iss.static_token),
                standard_webhooks=_secret_files(
                    problems, f"{at}.standard_webhooks", iss.standard_webhooks
                ),
                github=_provider_files(problems, at, iss.github),
                stripe=_provider_files(problems, at, iss.stripe),
                slack=_provider_files(problems, at, iss.slack),
                shopify=_provider_files(problems, at, iss.shopify),
                gitlab=_provider_files(problems, at, iss.gitlab),
            )
        )
    return replace(config, issuers=tuple(issuers)), problems.lines


def read_files(config: Config) -> Config:
    """The file pass: the config with its token and secret files read, once its CA bundles and
    certificate/key pairs are known to load; ``ConfigError`` lists every problem."""
    config, problems = _read_files(config)
    if problems:
        raise ConfigError(problems)
    return config


# --------------------------------------------------------------------------------------------
# YAML: plain values only.

_YAML = "tag:yaml.org,2002:"
_PLAIN_KEYS = (str, int, float, bool, type(None))


class _Refused(yaml.constructor.ConstructorError):
    """Valid YAML that a config does not accept, located at its line and column."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


def _excerpt(value: Any) -> str:
    text = str(value)
    return repr(text[:_SHOWN_CHARS] + ("..." if len(text) > _SHOWN_CHARS else ""))


class _PlainLoader(yaml.SafeLoader):
    """A SafeLoader that builds only plain values: strings, integers, decimals, true/false,
    null, lists and mappings with plain keys, each key once.

    Whole classes of loader crashes vanish with it: dates are strings (YAML 1.2 has no
    timestamps, and ``2001-13-45`` made PyYAML raise), every other tag is refused, a malformed
    ``!!int``/``!!float``/``!!bool`` value, a list as a key, a recursive alias and deep
    nesting are errors with a line and a column instead of a Python exception."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open_anchors: set[str] = set()
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Refused(
                    f"the alias *{event.anchor} is inside the node it names (a recursive "
                    "structure)",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _YAML + "merge":
                    continue  # << merges another mapping; its keys may be overridden here
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, _PLAIN_KEYS):
                    raise _Refused(
                        f"a key must be a string, a number, true/false or null, not {_kind(key)}",
                        key_node.start_mark,
                    )
                if key in seen:
                    # With unknown keys an error, a key written twice (the first silently
                    # ignored) would be the one surprise left.
                    raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Plain scalars resolve as in YAML 1.1 (so "yes"/"on" stay booleans, as they always were here),
# except timestamps and the rarely meant "=" (value) and "!" (yaml) forms, which stay strings.
_RESOLVED = tuple(_YAML + t for t in ("null", "bool", "int", "float", "merge"))
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in _RESOLVED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _scalar(build: Callable[[Any, Any], Any], what: str) -> Callable[[Any, Any], Any]:
    def construct(loader: Any, node: Any) -> Any:
        try:
            return build(loader, node)
        except yaml.YAMLError:
            raise
        except Exception as e:
            # PyYAML's scalar constructors signal a malformed value with whatever Python
            # raises on it (ValueError for "!!int 0b", KeyError for "!!bool maybe", IndexError
            # for an empty "!!int", ValueError past 4300 digits).
            raise _Refused(f"{_excerpt(node.value)} is not {what}", node.start_mark) from e

    return construct


def _refuse_tag(loader: Any, node: Any) -> NoReturn:
    tag = str(node.tag).replace(_YAML, "!!")
    raise _Refused(
        f"the tag {tag} is not supported (only strings, numbers, true/false, null, lists "
        "and mappings)",
        node.start_mark,
    )


_SC = yaml.constructor.SafeConstructor
_PlainLoader.yaml_constructors = {
    _YAML + "null": _SC.construct_yaml_null,
    _YAML + "bool": _scalar(_SC.construct_yaml_bool, "true or false"),
    _YAML + "int": _scalar(_SC.construct_yaml_int, "an integer"),
    _YAML + "float": _scalar(_SC.construct_yaml_float, "a number"),
    _YAML + "str": _SC.construct_yaml_str,
    _YAML + "seq": _SC.construct_yaml_seq,
    _YAML + "map": _SC.construct_yaml_map,
    None: _refuse_tag,
}


def _position(text: bytes, offset: int) -> str:
    line = text.count(b"\n", 0, offset) + 1
    column = offset - (text.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The file's YAML as plain values; ``ConfigError`` (one line naming the file) otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except ValueError as e:
        raise ConfigError([f"{path}: cannot read: {e}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_FILE_BYTES} bytes; not a config file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = _position(raw, e.start)
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start}, {where})"]) from None
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{path}: {where}{e.problem}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or e
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file, its token and secret files and its TLS files;
    ``ConfigError`` lists every problem of both passes."""
    config, problems = _parse(read_yaml(path))
    config, file_problems = _read_files(config)
    if problems or file_problems:
        raise ConfigError(problems + file_problems)
    return config
