"""Live reload: the config file and the secret files it reads, SIGHUP, and the TLS certificate.

A ConfigMap or Secret changes by symlink swap, so contents are compared, not mtimes; cert-manager
rotates the certificate and key in place. A new config is validated first and refused whole when
invalid; the old one stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import load_config
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.lifecycle import RunningGateway

__all__ = ["Watcher"]

log = logging.getLogger("jwksgate")


def _digest(*paths: str | None) -> bytes | None:
    h = hashlib.sha256()
    try:
        for path in paths:
            if path:
                h.update(Path(path).read_bytes())
    except OSError:
        return None
    return h.digest()


class Watcher:
    """Watches one running gateway's config file, secret files and TLS pair."""

    def __init__(self, running: RunningGateway, path: str | None, interval: float = 2.0) -> None:
        self.running = running
        self.path = path
        self.interval = interval
        self._lock = asyncio.Lock()
        self.config_digest = self._config_digest()
        self.tls_digest = self._tls_digest()

    def _config_digest(self) -> bytes | None:
        if self.path is None:
            return None
        return _digest(self.path, *self.running.gateway.config.secret_files)

    def _tls_digest(self) -> bytes | None:
        tls = self.running.gateway.config.tls
        return _digest(tls.cert_file, tls.key_file) if tls else None

    async def reload(self, why: str) -> bool:
        """Load, validate and swap the config; True when the new one is in force."""
        if self.path is None:
            return False
        metrics = self.running.gateway.metrics
        async with self._lock:
            try:
                new = load_config(self.path)
                await self.running.gateway.reload(new)
            except Exception as e:
                # Whatever failed, the old config stays in force and the watcher keeps going:
                # a dead watcher would also stop certificate rotation.
                self.config_digest = self._config_digest()
                metrics.config_reloads.labels(result="failure").inc()
                problems = e.problems if isinstance(e, ConfigError) else [repr(e)]
                for line in problems:
                    log.error("config reload (%s) refused, old config kept: %s", why, line)
                return False
            self.config_digest = self._config_digest()
            metrics.config_reloads.labels(result="success").inc()
            log.info("config reloaded (%s): %d issuers", why, len(new.issuers))
            return True

    def reload_tls(self) -> bool:
        tls, ctx = self.running.gateway.config.tls, self.running.ssl_context
        if tls is None or ctx is None:
            return False
        try:
            # Try the pair on a scratch context first: a failed load_cert_chain on the live one
            # can leave it holding the new certificate without its key, so that every new
            # handshake fails. New handshakes use the new pair; established connections stay.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file
            )
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            log.error("TLS certificate reload failed, old certificate kept: %s", e)
            return False
        log.info("TLS certificate reloaded from %s", tls.cert_file)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self._config_digest() not in (None, self.config_digest):
                    await self.reload("file changed")
                tls_digest = self._tls_digest()
                if tls_digest is not None and tls_digest != self.tls_digest:
                    self.tls_digest = tls_digest
                    self.reload_tls()
            except Exception:
                log.exception("config watcher: unexpected error; still watching")
