"""Client-side helpers for the end-to-end tests: signed pushes, raw sockets, scraped metrics.

Kept apart from ``support.py`` (the servers) so that tests read as what a sender, an operator's
Prometheus or a hostile client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway.config import Config
from tests.support import World, b64url, gateway_config


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def outcome(self) -> tuple[int, str | None]:
        """``(status, reason code)``: what a sender decides its next step on."""
        return self.status, self.reason

    @property
    def reason(self) -> str | None:
        """The gateway's reason code, when the answer is one of its own JSON errors."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data.get("error") if isinstance(data, dict) else None


def forge(header: Any, claims: Any) -> str:
    """A compact JWS with any header and payload and a signature that verifies nothing: cheap
    tokens for input the gateway must refuse before, or at, the signature check."""
    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), b"\x01" * 256]
    return ".".join(b64url(p) for p in parts)


async def send(
    http: aiohttp.ClientSession,
    url: str | URL,
    *,
    method: str = "POST",
    body: Any = b"",
    token: str | None = None,
    headers: dict[str, str] | CIMultiDict[str] | None = None,
) -> Reply:
    h: CIMultiDict[str] = CIMultiDict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, data=body, headers=h) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def push(
    http: aiohttp.ClientSession,
    w: World,
    body: bytes = b'{"event":"ping"}',
    *,
    path: str = "/hook",
    token: str | None = None,
    headers: dict[str, str] | CIMultiDict[str] | None = None,
    **claims: Any,
) -> Reply:
    """A push signed by the world's key for ``body`` (or with ``token``) to the gateway."""
    if token is None:
        token = w.token(body, **claims)
    # encoded=True: the path goes out exactly as written, never requoted by the client.
    url = URL(w.url + path, encoded=True)
    return await send(http, url, body=body, token=token, headers=headers)


async def get(http: aiohttp.ClientSession, url: str) -> Reply:
    async with http.get(url) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


# -- raw sockets ---------------------------------------------------------------------------------
def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def raw_exchange(
    url: str,
    *parts: bytes,
    pause: float = 0.0,
    responses: int = 1,
    read_timeout: float = 10.0,
) -> bytes:
    """Write ``parts`` (``pause`` seconds apart) while reading ``responses`` whole responses.

    Returns what was read (fewer responses when the server closes first). Writing stops as soon as
    the reading is done: a dribbling client is cut off, not waited for.
    """
    reader, writer = await asyncio.open_connection(*host_port(url))

    async def dribble() -> None:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()

    sending = asyncio.ensure_future(dribble())
    got = bytearray()
    try:
        async with asyncio.timeout(read_timeout):
            for _ in range(responses):
                head = await _read_head(reader)
                if head is None:
                    break
                got += head
                length = re.search(rb"\r\ncontent-length: *(\d+)\r\n", head.lower())
                got += await reader.readexactly(int(length.group(1)) if length else 0)
        return bytes(got)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        assert not e.partial, f"connection closed inside a response head: {e.partial[:200]!r}"
        return None


def raw_status(raw: bytes) -> int:
    """The status code of the first response in ``raw`` (an HTTP/1.x byte stream)."""
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), raw[:200]
    return int(line.split(b" ")[1])


def raw_json(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def request_bytes(
    method: str, target: str, headers: dict[str, str], body: bytes = b"", *, host: str = "gw"
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- metrics ------------------------------------------------------------------------------------
Labels = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """One /metrics answer: sample name -> {labels: value}, and family name -> type."""

    samples: dict[str, dict[Labels, float]]
    types: dict[str, str]
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with exactly these labels (KeyError when absent)."""
        return self.samples[name][frozenset(labels.items())]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get(name, {}).get(frozenset(labels.items()), default)

    def label_sets(self, name: str) -> set[Labels]:
        return set(self.samples.get(name, {}))

    def label_names(self, name: str) -> set[frozenset[str]]:
        return {frozenset(k for k, _ in labels) for labels in self.label_sets(name)}


def parse_metrics(text: str) -> Scrape:
    samples: dict[str, dict[Labels, float]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return Scrape(samples, types, text)


async def scrape(http: aiohttp.ClientSession, admin_url: str) -> Scrape:
    async with http.get(admin_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse_metrics(await resp.text())


def config_with(**overrides: Any) -> Callable[[World], Config]:
    """A ``world()`` configure hook: the default config with ``gateway_config`` overrides."""

    def configure(w: World) -> Config:
        return gateway_config(w.jwks_url, w.backend_url, **overrides)

    return configure
