"""The event loop the gateway runs on: asyncio's own unless uvloop is asked for.

``JWKSGATE_EVENT_LOOP``: ``asyncio`` (the default), ``uvloop`` (an error if it is not installed:
``pip install 'jwksgate[fast]'``) or ``auto`` (uvloop when installed, else asyncio). In
``bench/`` (bench/RESULTS.md, ``jwksgate-uvloop`` beside ``jwksgate`` in the same run) uvloop
saved at most 5 % of the CPU per push on this code, and the p99 latency seen by the senders at
64 connections was 1.6-3.9x asyncio's over five runs (the time inside the handler was not
longer: the wait is before or after it), so it is not the default.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gateway.errors import ConfigError

__all__ = ["CHOICES", "ENV", "loop_factory", "run"]

ENV = "JWKSGATE_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop", "auto")
T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(value: str | None = None) -> LoopFactory | None:
    """The factory for ``value`` (default: the environment); None means asyncio's default loop.

    Raises ``ConfigError`` for an unknown value, or for ``uvloop`` when it is not installed.
    """
    choice = (os.environ.get(ENV, "") if value is None else value).strip().lower() or "asyncio"
    if choice not in CHOICES:
        raise ConfigError([f"{ENV}: must be one of {', '.join(CHOICES)} (not {choice[:20]!r})"])
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return None
        raise ConfigError(
            [f"{ENV}: uvloop is not installed (pip install 'jwksgate[fast]')"]
        ) from None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``asyncio.run(main)`` on a loop made by ``factory`` (asyncio's own when None)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
