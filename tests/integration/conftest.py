"""Fixtures the integration modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module, for a module's shared cluster (its servers live on it)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()
