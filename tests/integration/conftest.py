"""Fixtures the integration modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mpc.aio import settle_grpc


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module, for a module's shared cluster (its servers live on it)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        try:
            # First gRPC's core answers the calls the stop ended (see mpc/aio.py): cancelled, its answers
            # would reach the next module's loop, which logs "Event loop is closed".
            loop.run_until_complete(settle_grpc())
            # As asyncio.run does: what the servers left running (a stream's handlers, cut by the stop)
            # is cancelled and run to its end here. Left pending, each would be destroyed whenever the
            # garbage collector came by, logging "Task was destroyed but it is pending!" from inside
            # whatever runs then; inside a compile(), Python 3.11.7 turns that into "SystemError: AST
            # constructor recursion depth mismatch" and fails the whole run.
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=10))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
