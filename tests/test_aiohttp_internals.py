"""The aiohttp private names gateway/listener.py and gateway/upstream_pool.py rely on exist on
the installed aiohttp.

The listener subclasses ``RequestHandler`` and ``web.Server`` and reads or sets private
attributes; pyproject allows any aiohttp 3.14.x. A rename in an upgrade would otherwise not fail
loudly: setting ``_lingering_time`` on a subclass with a ``__dict__`` would just create a new
attribute. These checks fail first, by name (review finding 7).
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

# Instance attributes of RequestHandler that listener._Connection reads or sets.
HANDLER_SLOTS = ("_messages", "_waiter", "_request_count", "_lingering_time")
# Methods listener.py overrides or calls through super().
HANDLER_METHODS = ("finish_response", "handle_error", "eof_received", "data_received")


def _slots(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    return names


@pytest.mark.parametrize("name", HANDLER_SLOTS)
def test_request_handler_still_has_the_slot(name: str) -> None:
    assert name in _slots(RequestHandler), f"aiohttp RequestHandler lost {name}"


@pytest.mark.parametrize("name", HANDLER_METHODS)
def test_request_handler_still_has_the_method(name: str) -> None:
    assert callable(getattr(RequestHandler, name, None)), f"RequestHandler.{name} is gone"


def test_server_make_request_keeps_its_signature() -> None:
    params = list(inspect.signature(web.Server._make_request).parameters)
    assert params == ["self", "message", "payload", "protocol", "writer", "task"]


async def test_server_still_keeps_loop_and_kwargs() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler, loop=asyncio.get_running_loop(), max_line_size=1234)
    assert server._loop is asyncio.get_running_loop()
    assert server._kwargs == {"max_line_size": 1234}


def test_stream_writer_still_counts_its_output() -> None:
    assert "output_size" in dir(StreamWriter)


# What gateway/upstream_pool.py uses of aiohttp's client protocol.
RESPONSE_HANDLER_NAMES = ("set_response_params", "read", "is_connected", "close", "should_close")


@pytest.mark.parametrize("name", RESPONSE_HANDLER_NAMES)
def test_response_handler_still_has(name: str) -> None:
    from aiohttp.client_proto import ResponseHandler

    assert hasattr(ResponseHandler, name), f"aiohttp ResponseHandler lost {name}"


def test_response_handler_still_takes_the_parameters_the_pool_sets() -> None:
    from aiohttp.client_proto import ResponseHandler

    params = set(inspect.signature(ResponseHandler.set_response_params).parameters)
    wanted = {"skip_payload", "auto_decompress", "read_bufsize", "max_line_size",
              "max_field_size", "max_headers"}  # fmt: skip
    assert wanted <= params
