"""The one fetcher of key material: a JWKS URL, or an OpenID discovery document and then its
``jwks_uri``. Used by the refreshing cache and by ``jwksgate explain --fetch``, so both see the
same bytes under the same rules:

- at most ``jwks.max_bytes`` read (by ``Content-Length`` before reading, and while streaming);
- ``jwks.timeout_seconds`` for the whole exchange;
- redirects are never followed (a 3xx is a failed fetch: a redirect could point the gateway at
  a key set nobody configured);
- certificates always verified, against the system CAs or ``jwks.ca_file``;
- ``If-None-Match`` with the last ETag; ``Cache-Control`` handed back to the cache.

This is the edge: every aiohttp, TLS or timeout error becomes a ``FetchError`` here, so callers
only ever see ``JwksError`` and its subclass.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from gateway.config import IssuerConfig, JwksConfig
from gateway.jwks import JwksError, jwks_uri_from_discovery

__all__ = ["FetchError", "Fetched", "Fetcher", "fetch_issuer_jwks"]

_JWKS_ACCEPT = "application/json, application/jwk-set+json"


class FetchError(JwksError):
    """The document could not be fetched (network, TLS, timeout, status, size)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """One answer: ``body`` None means 304 Not Modified (the ETag sent still holds)."""

    url: str
    body: bytes | None
    etag: str | None
    cache_control: str | None


def ssl_context(cfg: JwksConfig) -> ssl.SSLContext | bool:
    """Certificates are always verified: system CAs, or the configured bundle. A TLS failure
    is a fetch failure, never a downgrade."""
    return ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else True


class Fetcher:
    """Bounded GETs for one issuer's key material over a shared ``ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession, cfg: JwksConfig) -> None:
        self._session = session
        self._cfg = cfg
        self._ssl = ssl_context(cfg)

    async def get(
        self, url: str, *, etag: str | None = None, accept: str = _JWKS_ACCEPT
    ) -> Fetched:
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        try:
            return await self._get(url, headers, etag is not None)
        except FetchError:
            raise
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError) as e:
            raise FetchError(str(e) or type(e).__name__) from e

    async def _get(self, url: str, headers: dict[str, str], revalidating: bool) -> Fetched:
        cfg = self._cfg
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds)
        async with self._session.get(
            url, headers=headers, timeout=timeout, allow_redirects=False, ssl=self._ssl
        ) as resp:
            cache_control = resp.headers.get("Cache-Control")
            if resp.status == 304 and revalidating:
                return Fetched(url, None, headers.get("If-None-Match"), cache_control)
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status} from {url} (redirects are not followed)")
            if resp.content_length is not None and resp.content_length > cfg.max_bytes:
                raise FetchError(f"{resp.content_length} bytes exceeds {cfg.max_bytes}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body += chunk
                if len(body) > cfg.max_bytes:
                    raise FetchError(f"larger than {cfg.max_bytes} bytes")
            return Fetched(url, bytes(body), resp.headers.get("ETag"), cache_control)

    async def jwks_url(self, issuer: IssuerConfig) -> str:
        """Where the issuer's key set is: ``jwks_url``, or the discovery document's
        ``jwks_uri`` (fetched now, under the same rules; its ``issuer`` must match)."""
        if issuer.discovery_url is None:
            return issuer.jwks_url
        doc = await self.get(issuer.discovery_url, accept="application/json")
        assert doc.body is not None  # no ETag was sent, so never a 304
        return jwks_uri_from_discovery(doc.body, issuer.discovery_url, issuer.issuer)


async def fetch_issuer_jwks(issuer: IssuerConfig) -> bytes:
    """The issuer's JWKS document, fetched once, as the gateway would (``explain --fetch``)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        fetcher = Fetcher(session, issuer.jwks)
        got = await fetcher.get(await fetcher.jwks_url(issuer))
        assert got.body is not None
        return got.body
