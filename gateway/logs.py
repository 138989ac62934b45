"""Logging: one JSON line per request outcome on stdout; operational messages on stderr.

Never the token, never the body: a request is identified by its request id and the SHA-256 of its
replay key. Untrusted strings (a kid, a path) are truncated and JSON-escaped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AccessLog", "configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


def configure_logging(level: str = "INFO") -> None:
    """Levels and operational messages go to stderr as JSON; access lines to stdout."""
    root = logging.getLogger("jwksgate")
    root.setLevel(level)
    root.handlers.clear()
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(_JsonFormatter())
    root.addHandler(err)
    root.propagate = False
    access = logging.getLogger("jwksgate.access")
    access.handlers.clear()
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(out)
    access.propagate = False


def clip(value: str | None, limit: int = 128) -> str | None:
    return None if value is None else value[:limit]


class AccessLog:
    """Writes the per-outcome line. Rejection floods are sampled here, never in the metrics:
    beyond ``max_rejections_per_second`` rejected lines a second, the rest are counted and the
    count is reported on the next line written."""

    def __init__(
        self, max_rejections_per_second: int = 100, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logging.getLogger("jwksgate.access")
        self._clock = clock
        self._limit = max_rejections_per_second
        self._window = 0
        self._in_window = 0
        self._suppressed = 0

    def write(self, fields: dict[str, Any], rejected: bool) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        if rejected:
            second = int(self._clock())
            if second != self._window:
                self._window, self._in_window = second, 0
            self._in_window += 1
            if self._in_window > self._limit:
                self._suppressed += 1
                return
        if self._suppressed:
            fields["suppressed_before"] = self._suppressed
            self._suppressed = 0
        self._log.info(json.dumps(fields, ensure_ascii=True, separators=(",", ":")))
