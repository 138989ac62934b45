"""Review findings on the listener and the path rules (review1), through raw sockets."""

from __future__ import annotations

import pytest

from tests.httpkit import raw_status
from tests.support import claims_for, sign, world
from tests.test_fuzz_wire import backend_view
from tests.test_fuzz_wire import configure as nested_issuers
from tests.test_hardening_wire import exchange


@pytest.mark.parametrize("target", ["/hooks/payments/..#x", "/hooks/payments/.%2e#"])
async def test_a_fragment_cannot_hide_a_trailing_dot_segment(target: str) -> None:
    """The path rule sees "..#x" as an ordinary segment; the client drops "#x" and the backend
    gets "/hooks/payments/..", which it serves as "/hooks": the payments sender delivers to the
    hooks issuer's path."""
    async with world(nested_issuers) as w:
        body = b'{"e":1}'
        claims = claims_for(body, w.clock(), issuer="https://payments.test")
        data = (
            f"POST {target} HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {sign(w.key, claims)}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        raw = await exchange(w, data, half_close=True)
        served = [backend_view(r.path_qs) for r in w.backend.received]
        assert raw_status(raw) == 400 and served == [], (
            [r.path_qs for r in w.backend.received],
            served,
        )
