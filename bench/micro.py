"""The verification steps alone, in-process: what each costs per token, and the floor.

``python -m bench.micro --iterations N`` prints one JSON object of microseconds per call, made with
the benchmark's own keys, tokens and config, through the gateway's own functions in the order of
a request: what the verification part of jwksgate's cost per request is made of, without the
event loop. Not part of ``bench/run``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway import verify
from gateway.config import parse_config
from gateway.jwks import parse_jwks
from gateway.replay import MemoryReplayStore

__all__ = ["main", "measure"]


def _per_call(fn: Callable[[], object], iterations: int) -> float:
    """Microseconds per call: the best of 5 batches."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e6


def measure(out: Path, iterations: int) -> dict[str, Any]:
    from bench import setups
    from bench import tokens as tk

    keys = tk.ensure_keys(out)
    body = tk.body_of_size(1024)
    path = tk.ensure_tokens(out, keys, "RS256", body, 200, 1)
    token = path.read_text().splitlines()[0]
    ctx = setups.Context(
        out=out,
        keys=keys,
        backend_port=9,
        jwks_url="http://127.0.0.1:9/jwks.json",
        jwks_https_url="https://127.0.0.1:9/jwks.json",
        ca_file=out / "ca.pem",
        public_key=out / "key.pem",
    )
    spec = next(s for s in setups.SPECS if s.name == "jwksgate")
    cfg = parse_config(setups.jwksgate_config(ctx, spec, 1, 2, None))
    issuer = cfg.issuers[0]
    keyset, dropped = parse_jwks(keys.jwks, issuer.algorithms, 100)
    assert not dropped
    now = time.time()
    auth = [f"Bearer {token}"]
    parsed = verify.parse_token(verify.extract_bearer(auth))
    _alg, kid = verify.check_header(parsed.header, issuer)
    assert kid is not None
    vkey = keyset.by_kid[kid]
    assert vkey.verify(parsed.signing_input, parsed.signature)
    rule = issuer.body_hash
    assert rule is not None
    pub = vkey.public_key
    assert isinstance(pub, rsa.RSAPublicKey)
    store = MemoryReplayStore(10_000_000, time.time)
    loop = asyncio.new_event_loop()
    counter = iter(range(10**9))

    async def reserve_commit(n: int) -> None:
        for _ in range(n):
            k = b"bench:" + next(counter).to_bytes(32, "big")
            await store.reserve(k, 35.0)
            await store.commit(k, 300.0)

    def store_step() -> None:
        loop.run_until_complete(reserve_commit(100))

    steps: dict[str, Callable[[], object]] = {
        "extract_bearer": lambda: verify.extract_bearer(auth),
        "parse_token": lambda: verify.parse_token(token),
        "route": lambda: verify.route(
            verify.candidates(cfg.issuers, "/hook"), cfg.issuers, parsed.claims
        ),
        "check_header": lambda: verify.check_header(parsed.header, issuer),
        "key_verify": lambda: vkey.verify(parsed.signing_input, parsed.signature),
        "check_claims": lambda: verify.check_claims(parsed.claims, issuer, now),
        "check_body_hash": lambda: verify.check_body_hash(parsed.claims, body, rule),
        "replay_key": lambda: verify.replay_key(issuer, parsed),
        "replay_ttl": lambda: verify.replay_ttl(parsed.claims, issuer, now),
    }
    result: dict[str, Any] = {k: _per_call(fn, iterations) for k, fn in steps.items()}
    result["store_reserve_commit"] = _per_call(store_step, max(1, iterations // 100)) / 100
    loop.close()
    result["gateway_steps_total"] = sum(result.values())
    pad, sha = padding.PKCS1v15(), hashes.SHA256()
    result["floor_rsa2048_verify"] = _per_call(
        lambda: pub.verify(parsed.signature, parsed.signing_input, pad, sha), iterations
    )
    result["floor_sha256_1KiB"] = _per_call(lambda: hashlib.sha256(body).digest(), iterations)
    result["iterations"] = iterations
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.out is None:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(Path(d), args.iterations)))
    else:
        print(json.dumps(measure(args.out, args.iterations)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
