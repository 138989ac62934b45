"""Fixtures shared by the end-to-end tests.

``w`` is a running world (JWKS server, backend, gateway on port 0, see ``tests.support.world``);
parametrise it indirectly with the keyword arguments of ``world()`` to change what it runs::

    @pytest.mark.parametrize("w", [{"configure": redis_config}], indirect=True)

``http`` is a client session, closed after the test and before the world stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support import World, world


@pytest.fixture
async def w(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    options: dict[str, Any] = getattr(request, "param", {})
    async with world(**options) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
