"""Binding the listeners: an address that cannot be had becomes one line for the operator, naming
the config key, the address, why, and what to do (a free port nearby), instead of a traceback."""

from __future__ import annotations

import errno
import socket

from gateway.config import Listen

__all__ = ["BindError", "bind_error", "bindable", "free_port_near", "probe", "reason"]

# How far above a busy port to look for a free one to suggest.
_NEAR = 20


class BindError(Exception):
    """A listener could not bind: ``str()`` is the whole line to print."""

    def __init__(self, key: str, address: str, reason: str, hint: str) -> None:
        super().__init__(f"{key}: cannot listen on {address}: {reason}; {hint}")
        self.key = key
        self.address = address
        self.reason = reason


def reason(error: OSError) -> str:
    """Why a bind failed, in words."""
    if error.errno == errno.EADDRINUSE:
        return "the address is already in use (another process listens there)"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if error.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this machine has that address"
    return error.strerror or str(error)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bindable(host: str, port: int, reuse_port: bool = False) -> None:
    """Bind and release a socket as the listener would (SO_REUSEADDR, as asyncio sets it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))


def free_port_near(host: str, port: int) -> int | None:
    """The first port above ``port`` that binds on ``host`` now (it may be taken again later)."""
    for candidate in range(port + 1, min(port + _NEAR, 65535) + 1):
        try:
            bindable(host, candidate)
        except OSError:
            continue
        return candidate
    return None


def bind_error(key: str, address: Listen, error: OSError) -> BindError:
    """The line for config key ``key`` (``listen``, ``admin_listen``) failing to bind."""
    hint = f"set {key} to another address or port"
    if error.errno == errno.EADDRINUSE or error.errno == errno.EACCES:
        start = max(address.port, 1023) if error.errno == errno.EACCES else address.port
        near = free_port_near(address.host, start) if address.port else None
        if near is not None:
            hint += f', e.g. {key}: "{Listen(address.host, near)}"'
    return BindError(key, str(address), reason(error), hint)


def probe(key: str, address: Listen, *, reuse_port: bool = False) -> None:
    """Raise ``BindError`` now if ``address`` cannot be bound (the supervisor's check before it
    starts workers that would each fail on it)."""
    try:
        bindable(address.host, address.port, reuse_port)
    except OSError as e:
        raise bind_error(key, address, e) from None
