from __future__ import annotations

import aiohttp

from tests.support import World


async def test_valid_push_is_forwarded_and_replay_refused(
    w: World, http: aiohttp.ClientSession
) -> None:
    body = b'{"task":"t1","state":"completed"}'
    token = w.token(body, sub="agent-7")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with http.post(w.url + "/hook?x=1", data=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == b'{"ok":true}'
    assert len(w.backend.received) == 1
    got = w.backend.received[0]
    assert got.body == body
    assert got.path_qs == "/hook?x=1"
    assert got.header("X-Jwt-Issuer") == "sender"
    assert got.header("X-Jwt-Sub") == "agent-7"
    assert got.header("Authorization") is None
    async with http.post(w.url + "/hook?x=1", data=body, headers=headers) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"] == "replayed"
    assert len(w.backend.received) == 1
