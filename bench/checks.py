"""Before a setup is measured, prove it does the job it is measured for.

Every setup must answer a valid push with a 2xx; a setup that forwards claims must deliver the
token's ``sub`` to the backend (the backend's ``/echo`` path answers with the headers it saw).
Each check a setup is configured to enforce must be refused: 401 for no token, a bad signature,
an expired token, a wrong audience or a body that does not match its hash claim; 409 for a
token sent a second time. Checks a setup does not enforce are still sent, and what it answered
is recorded (a 200 there is what the setup cannot check, not a failure).
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench import tokens
from bench.setups import CHECKS, SetupSpec

__all__ = ["CheckOutcome", "SetupCheck", "check_setup"]

_EXPECTED = {name: 409 if name == "replay" else 401 for name in CHECKS}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    status: int
    expected: str  # "2xx", "401", "409", or "-" when the setup does not enforce it
    enforced: bool
    ok: bool
    note: str = ""


@dataclass
class SetupCheck:
    setup: str
    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {"setup": self.setup, "passed": self.passed,
                "outcomes": [asdict(o) for o in self.outcomes]}  # fmt: skip

    def failures(self) -> list[str]:
        out = []
        for o in self.outcomes:
            if not o.ok:
                note = f" ({o.note})" if o.note else ""
                out.append(f"{o.name}: got {o.status}, expected {o.expected}{note}")
        return out


def _post(url: str, path: str, body: bytes, token: str | None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[10] != "A" else "B").join((sig[:10], sig[11:]))
    return f"{head}.{payload}.{flipped}"


def check_setup(spec: SetupSpec, url: str, keys: tokens.Keys, body: bytes) -> SetupCheck:
    """Send the checks to the setup at ``url`` and record what it answered."""
    result = SetupCheck(spec.name)
    now = int(time.time())

    # A valid push, sent to /echo so that the backend shows what reached it.
    valid = tokens.sign_token(keys, body)
    status, seen = _post(url, "/echo", body, valid)
    result.outcomes.append(CheckOutcome("valid", status, "2xx", True, 200 <= status < 300))
    if spec.sub_header is not None:
        try:
            headers = {k.lower(): v for k, v in json.loads(seen).items()}
        except ValueError:
            headers = {}
        got = headers.get(spec.sub_header.lower())
        ok = got == tokens.SUBJECT
        result.outcomes.append(
            CheckOutcome("claims_reach_backend", status, f"{spec.sub_header}: {tokens.SUBJECT}",
                         True, ok, note=f"backend saw {spec.sub_header}: {got!r}")
        )  # fmt: skip

    wrong_body = body[:-3] + b'x"}' if body.endswith(b'"}') else body + b" "
    attempts: dict[str, tuple[bytes, str | None]] = {
        "no_token": (body, None),
        "bad_signature": (body, _tamper(tokens.sign_token(keys, body))),
        "expired": (body, tokens.sign_token(keys, body, iat=now - 7200, exp=now - 3600)),
        "wrong_audience": (body, tokens.sign_token(keys, body, aud="someone-else")),
        "body_hash": (wrong_body, tokens.sign_token(keys, body)),
        "replay": (body, valid),
    }
    for name in CHECKS:
        data, token = attempts[name]
        status, _ = _post(url, "/hook", data, token)
        enforced = name in spec.enforces
        want = _EXPECTED[name]
        if enforced:
            outcome = CheckOutcome(name, status, str(want), True, status == want)
        else:
            outcome = CheckOutcome(name, status, "-", False, True, note="not checked by this setup")
        result.outcomes.append(outcome)
    return result
