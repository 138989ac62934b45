"""Logging: one JSON object per line, one schema, one stream (stdout).

Access lines (one per request outcome) and application lines (startup, JWKS fetches, warnings)
share the field names of the Elastic Common Schema, as flat dotted keys: ``@timestamp`` (RFC 3339,
UTC, milliseconds), ``log.level``, ``log.logger``, ``message``, ``ecs.version``; access lines add
``http.*``, ``url.path``, ``client.ip``, ``event.*`` and ``jwksgate.*`` (docs/operating.md lists
them all). Never the token, never a header value, never the body: a request is identified by its
request id and the SHA-256 of its replay key. Untrusted strings (a kid, a path) are truncated and
JSON-escaped.

The stream handler writes whole lines with ``os.write``, batched per event-loop iteration and cut
at line boundaries into pieces no larger than ``PIPE_BUF``, so that several workers sharing one
stdout pipe never interleave inside a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "ACCESS_LOGGER",
    "ECS_VERSION",
    "AccessLog",
    "clip",
    "configure_logging",
    "rfc3339",
]

ACCESS_LOGGER = "jwksgate.access"
ECS_VERSION = "8.11.0"
# Writes to a pipe up to this size are atomic (POSIX guarantees at least 512; Linux has 4096).
_ATOMIC_WRITE = 4096

_second: list[Any] = [None, ""]


def rfc3339(t: float) -> str:
    """``t`` (Unix seconds) as RFC 3339 UTC with milliseconds: ``2026-12-03T15:13:54.123Z``."""
    whole = int(t)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((t - whole) * 1000):03d}Z"


# json.dumps with arguments builds an encoder per call; the line's encoder is built once.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def dumps(line: dict[str, Any]) -> str:
    return _ENCODER.encode(line)


class _EcsFormatter(logging.Formatter):
    """Application records as ECS lines; access records arrive rendered and pass as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER and not record.args:
            return str(record.msg)
        line: dict[str, Any] = {
            "@timestamp": rfc3339(record.created),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "ecs.version": ECS_VERSION,
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error.type"] = type(exc).__name__
            line["error.message"] = str(exc)[:1024]
            line["error.stack_trace"] = self.formatException(record.exc_info)
        return dumps(line)


class _LineHandler(logging.Handler):
    """Formatted lines to a file descriptor: queued, then written once per event-loop iteration
    (at once when no loop runs), in whole-line pieces of at most ``_ATOMIC_WRITE`` bytes."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[bytes] = []
        # The loop a flush is scheduled on; None when none is.
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        self._queue(data)

    def emit_line(self, line: str) -> None:
        """What ``emit`` does with an access record, from its rendered line (no LogRecord)."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        self.acquire()
        try:
            self._queue(data)
        finally:
            self.release()

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        if self._scheduled is not None and not self._scheduled.is_closed():
            return  # a flush is due on this loop (asking for the running loop costs a getpid)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # another thread, or no loop (startup, shutdown): write now
            return
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._scheduled = None
            pending, self._pending = self._pending, []
            if pending:
                self._write(pending)
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()

    def _write(self, pending: list[bytes]) -> None:
        try:
            # Anything printed through sys.stdout goes first, to keep the order.
            self.stream.flush()
            fd = self.stream.fileno()
        except (OSError, ValueError, AttributeError):
            # No descriptor behind the stream (a test's capture): through the stream itself.
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(b"".join(pending).decode("utf-8"))
                self.stream.flush()
            return
        piece: list[bytes] = []
        size = 0
        for data in pending:
            if piece and size + len(data) > _ATOMIC_WRITE:
                _write_all(fd, b"".join(piece))
                piece, size = [], 0
            piece.append(data)
            size += len(data)
        if piece:
            _write_all(fd, b"".join(piece))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return  # stdout went away: logging must never take the gateway down
        view = view[written:]


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Every line, access and application, to stdout in the one ECS schema."""
    # The records' process, thread and caller fields are never shown: skip collecting them
    # (the "Optimization" advice of the logging HOWTO; each costs a system call or a frame walk).
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger("jwksgate")
    root.setLevel(level)
    for h in root.handlers:
        h.flush()
    root.handlers.clear()
    handler = _LineHandler(stream or sys.stdout)
    handler.setFormatter(_EcsFormatter())
    root.addHandler(handler)
    root.propagate = False
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers.clear()
    # Access lines reach the one handler through the parent logger.
    access.propagate = True


def clip(value: str | None, limit: int = 128) -> str | None:
    return None if value is None else value[:limit]


class AccessLog:
    """Writes the per-outcome line. Rejection floods are sampled here, never in the metrics:
    beyond ``max_rejections_per_second`` rejected lines a second, the rest are counted and the
    count is reported on the next line written (``jwksgate.suppressed_before``)."""

    def __init__(
        self, max_rejections_per_second: int = 100, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)
        self._clock = clock
        self._limit = max_rejections_per_second
        self._window = 0
        self._in_window = 0
        self._suppressed = 0

    def admit(self, rejected: bool) -> int | None:
        """Whether a line may be written now: None when not (INFO is off, or it is a rejected
        line past this second's bound: it is counted), else how many were left out before it
        (to be reported on it as ``jwksgate.suppressed_before``, last)."""
        if not self._log.isEnabledFor(logging.INFO):
            return None
        if rejected:
            second = int(self._clock())
            if second != self._window:
                self._window, self._in_window = second, 0
            self._in_window += 1
            if self._in_window > self._limit:
                self._suppressed += 1
                return None
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed

    def emit(self, line: str) -> None:
        """Write one rendered line (after ``admit``)."""
        handler = _sole_handler(self._log)
        if handler is not None:
            handler.emit_line(line)
        else:
            self._log.info(line)


def _sole_handler(log: logging.Logger) -> _LineHandler | None:
    """The gateway's line handler when it is the only thing an INFO record of ``log`` would
    reach (``configure_logging``'s setup: no filter, no other handler, no propagation past
    it), so that the line can be handed to it without a LogRecord; else None: through logging.
    Cheaper than the LogRecord it saves (about 5 us an access line)."""
    parent = log.parent
    if log.handlers or log.filters or log.disabled or not log.propagate or parent is None:
        return None
    handlers = parent.handlers
    if len(handlers) != 1 or parent.propagate or parent.disabled:
        return None
    h = handlers[0]
    if (
        type(h) is not _LineHandler
        or h.filters
        or h.level > logging.INFO
        or type(h.formatter) is not _EcsFormatter
    ):
        return None
    return h
