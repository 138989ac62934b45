"""Command line: ``jwksgate run | check-config | explain | demo``. Every refusal is one line on
stderr and a non-zero exit, never a traceback: a bad flag, an unreadable or invalid config, a
port that cannot be had."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from gateway import __version__, eventloop
from gateway.admission import refetch_waiters, unverified_cap
from gateway.bind import BindError
from gateway.config import Config, IssuerConfig, TokenFromConfig, load_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.providers import ProviderConfig, SlackConfig, StripeConfig

__all__ = ["build_parser", "main", "summary"]


def summary(config: Config) -> str:
    """The one-screen summary printed by ``check-config``: effective values, issuer by issuer."""
    lim = config.limits
    jwt = sum(1 for i in config.issuers if i.type == "jwt")
    lines = [
        f"listen {config.listen}  admin {config.admin_listen}  workers {config.workers}"
        f"  tls {'on' if config.tls else 'off'}",
        f"upstream {config.upstream.url} (timeout {config.upstream.timeout_seconds:g}s)",
        f"limits body {lim.max_body_bytes} B, headers {lim.header_timeout_seconds:g}s,"
        f" body {lim.body_timeout_seconds:g}s, in flight {lim.max_inflight}"
        f" (awaiting a body unauthenticated {unverified_cap(lim)})",
        f"replay {config.replay.store}"
        + (f" {config.replay.redis_url}" if config.replay.redis_url else "")
        + f" (max {config.replay.max_entries} entries)",
        f"forward prefix {config.forward.header_prefix}"
        f"  claims header {config.forward.claims_header}"
        f"  keep_token {str(config.forward.keep_token).lower()}"
        f"  trusted_hops {config.forward.trusted_hops}"
        + (
            f"  preserve {', '.join(config.forward.preserve_headers)}"
            if config.forward.preserve_headers
            else ""
        ),
        f"readiness {config.readiness}"
        f"  awaiting a JWKS refetch <= {refetch_waiters(lim, jwt)} per JWT issuer"
        f" (<= {refetch_waiters(lim, jwt) * jwt} of {lim.max_inflight} in flight)",
        f"issuers ({len(config.issuers)}):",
    ]
    for i in config.issuers:
        lines += _issuer_lines(i, config.replay.max_entries)
    return "\n".join(lines)


def _provider_line(p: ProviderConfig, max_entries: int) -> str:
    line = f"      secrets {len(p.secrets)}  id header {p.id_header}"
    line += f"  keep_signature {str(p.keep_signature).lower()}"
    if isinstance(p, StripeConfig | SlackConfig):
        line += f"  tolerance {p.tolerance_seconds:g}s"
        if isinstance(p, SlackConfig):
            line += f"  answer_challenge {str(p.answer_challenge).lower()}"
        return line
    # Every delivered id is kept for the whole window: what a memory store can hold says how
    # many deliveries a second it takes, sustained, before it answers replay_store_full.
    rate = max_entries / p.dedupe_seconds
    return line + f"  dedupe {p.dedupe_seconds:g}s (memory store: <= {rate:.3g}/s sustained)"


def _token_from(tf: TokenFromConfig) -> str:
    """Where a JWT issuer's token is read: ``header Authorization scheme Bearer``, ``header
    X-Token (whole value)`` or ``query access_token``; and whether it is forwarded."""
    if tf.query is not None:
        where = f"query {tf.query}"
    else:
        where = f"header {tf.header} " + (f"scheme {tf.scheme}" if tf.scheme else "(whole value)")
    return where + ("  keep_token true" if tf.keep_token else "")


def _issuer_lines(i: IssuerConfig, max_entries: int) -> list[str]:
    head = f"  - {i.name}: type {i.type}  path {i.path_prefix}"
    head += f"  profile {i.profile}" if i.profile else ""
    head += "  handshake echo" if i.handshake == "echo" else ""
    forward = "      forward " + (
        ", ".join(f"{c}->{h}" for c, h in i.forward_claims) or "(claims header only)"
    )
    if i.static_token is not None:
        st = i.static_token
        return [head, f"      headers {', '.join(st.headers)}  tokens {len(st.tokens)}", forward]
    if i.standard_webhooks is not None:
        sw = i.standard_webhooks
        return [
            head,
            f"      v1 secrets {len(sw.secrets)}  v1a public keys {len(sw.public_keys)}"
            f"  tolerance {sw.tolerance_seconds:g}s  replay key webhook-id",
            forward,
        ]
    if i.provider is not None:
        return [head, _provider_line(i.provider, max_entries), forward]
    body = (
        f"{i.body_hash.claim} {i.body_hash.encoding} over {i.body_hash.over}"
        if i.body_hash
        else "off"
    )
    return [
        head + f"  iss {i.issuer or '(none: by path)'}",
        f"      jwks {i.jwks_url or f'from discovery {i.discovery_url}'}"
        f" (ttl {i.jwks.ttl_seconds:g}s, refetch >= "
        f"{i.jwks.min_refresh_interval_seconds:g}s, stale <= {i.jwks.max_stale_seconds:g}s)",
        f"      algorithms {','.join(i.algorithms)}  types {','.join(i.allowed_types)}"
        f"  require_kid {str(i.require_kid).lower()}  audiences {','.join(i.audiences) or '-'}",
        f"      skew {i.clock_skew_seconds:g}s  max age {i.max_token_age_seconds:g}s"
        f"  max lifetime {i.max_lifetime_seconds:g}s"
        f"  require {','.join(i.require_claims) or '-'}",
        f"      replay key {i.replay_key}  body hash {body}",
        f"      token_from {_token_from(i.token_from)}",
        forward,
    ]


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        for line in e.problems:
            print(f"config error: {line}", file=sys.stderr)
        return None


def _read_file(what: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _Refused(f"{what} {path}: cannot read: {e.strerror or e}") from None


class _Refused(Exception):
    """A problem the command reports as one line (no traceback)."""


def _provider_issuer(config: Config | None, name: str | None, path: str) -> IssuerConfig | None:
    """The provider issuer a request is explained for: named by --issuer, else owning --path."""
    if config is None:
        return None
    if name is not None:
        return next((i for i in config.issuers if i.name == name and i.provider), None)
    from gateway.verify import candidates

    owners = candidates(config.issuers, path)
    return owners[0] if owners and owners[0].provider is not None else None


def _explain(args: argparse.Namespace) -> int:
    from gateway.explain import explain, fetch_jwks

    config = None
    if args.config:
        config = _load(args.config)
        if config is None:
            return 2
    try:
        body = _read_file("--body", args.body)
        jwks = _read_file("--jwks", args.jwks)
    except _Refused as e:
        print(f"jwksgate explain: error: {e}", file=sys.stderr)
        return 2
    provider = _provider_issuer(config, args.issuer, args.path)
    if args.issuer is not None and provider is None:
        known = [i.name for i in config.issuers if i.provider] if config else []
        print(
            f"explain: --issuer {args.issuer}: no such provider issuer in --config"
            f" (provider issuers: {', '.join(known) or 'none'})",
            file=sys.stderr,
        )
        return 2
    if provider is not None:
        from gateway.explain_provider import explain_provider, parse_header_lines

        try:
            headers = parse_header_lines(args.header)
        except ValueError as e:
            print(f"explain: {e}", file=sys.stderr)
            return 2
        answer = explain_provider(provider, headers, body, now=args.now)
        print(answer.render())
        return 0 if answer.verdict is None else 1
    if args.token is None:
        print("explain: a token is needed (or --issuer naming a provider issuer)", file=sys.stderr)
        return 2
    token = sys.stdin.read() if args.token == "-" else args.token  # noqa: S105
    result = explain(
        token,
        config=config,
        path=args.path,
        body=body,
        jwks=jwks,
        fetch=fetch_jwks if args.fetch else None,
        now=args.now,
    )
    print(result.render())
    return 0 if result.verdict is None else 1


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}"
        )
    return value.upper()


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65533:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a port from 0 to 65533 (the demo uses it and the next two)"
        )
    return port


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit code 1, like every other refusal of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jwksgate",
        description="Verifying gateway for signed webhook pushes.",
        epilog="Exit codes: 0 success, 1 error (bad config, flag or port; explain: the token "
        "would be rejected), 2 explain could not judge (unusable --config, --body or --jwks).",
    )
    parser.add_argument(
        "--version", action="version", version=f"jwksgate {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run the gateway until SIGTERM/SIGINT", description="Run the gateway."
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("JWKSGATE_CONFIG"),
        help="the YAML config file (default: $JWKSGATE_CONFIG)",
    )
    run.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        default=os.environ.get("JWKSGATE_LOG_LEVEL", "info"),
        help=f"one of {', '.join(LOG_LEVELS)} (default: $JWKSGATE_LOG_LEVEL or info)",
    )
    check = sub.add_parser(
        "check-config",
        help="validate a config and print a summary",
        description="Validate a config file (and the files it names) and print a summary.",
    )
    check.add_argument("file", metavar="FILE", help="the YAML config file to check")
    exp = sub.add_parser(
        "explain",
        help="say, check by check, why a token would pass or fail",
        description="Say, check by check, why the gateway would accept or reject a token. "
        "Without --config the token is checked on its own (shape, algorithm, time claims).",
    )
    exp.add_argument(
        "token",
        nargs="?",
        help='the token, "Bearer <token>", or - to read it from stdin (not for a provider)',
    )
    exp.add_argument(
        "--config", metavar="FILE", help="the gateway config (default: the token's own issuer)"
    )
    exp.add_argument("--path", default="/", help="request path, for routing (default /)")
    exp.add_argument(
        "--body",
        "--body-file",
        dest="body",
        metavar="FILE",
        help="file with the request body (the raw bytes), for the body hash or a provider's MAC",
    )
    exp.add_argument(
        "--issuer",
        metavar="NAME",
        help="explain a provider webhook (github, stripe, ...) for this issuer",
    )
    exp.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a provider webhook's header, 'Name: value' (repeat for each)",
    )
    exp.add_argument(
        "--jwks", metavar="FILE", help="file with the issuer's JWKS, to check the signature"
    )
    exp.add_argument(
        "--fetch", action="store_true", help="fetch the issuer's JWKS as the gateway does"
    )
    exp.add_argument(
        "--now", type=float, metavar="UNIX_TIME", help="evaluate at this unix time (default: now)"
    )
    demo = sub.add_parser(
        "demo",
        help="run an embedded issuer, backend and gateway, and show",
        description="Run an embedded issuer, an echo backend and the gateway on loopback, "
        "send valid and hostile pushes, and print what happened to each.",
    )
    demo.add_argument(
        "--port",
        type=_port,
        default=8480,
        help="gateway port; admin is PORT+1, the issuer PORT+2 (default 8480)",
    )
    demo.add_argument("--no-wait", action="store_true", help="exit after the scripted pushes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _command(parser, args)
    except BindError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "check-config":
        config = _load(args.file)
        if config is None:
            return 1
        print(summary(config))
        print("config OK")
        return 0
    if args.command == "explain":
        return _explain(args)
    if args.command == "run":
        if not args.config:
            print("config error: --config FILE (or JWKSGATE_CONFIG) is required", file=sys.stderr)
            return 1
        config = _load(args.config)
        if config is None:
            return 1
        try:
            loop = eventloop.loop_factory()
        except ConfigError as e:
            for line in e.problems:
                print(f"config error: {line}", file=sys.stderr)
            return 1
        configure_logging(args.log_level)
        if config.workers > 1:
            from gateway.workers import run_workers

            return run_workers(config, args.log_level, args.config)
        from gateway.lifecycle import serve

        eventloop.run(serve(config, config_path=args.config), loop)
        return 0
    if args.command == "demo":
        from gateway.demo import run_demo

        configure_logging("WARNING")
        return asyncio.run(run_demo(args.port, wait=not args.no_wait))
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse refuses it


if __name__ == "__main__":
    sys.exit(main())
