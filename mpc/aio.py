"""The event loop every `mpc` process runs on: uvloop's (libuv) where it is installed, else asyncio's.

grpc.aio runs on any asyncio event loop. A node handles a few callbacks, futures and timers per
peer message (some 250 per vote over three nodes), and uvloop runs that machinery in C: see the
README's performance section for what it saves. MPC_EVENT_LOOP=asyncio keeps asyncio's own loop
(e.g. for its debug mode).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from mpc.errors import InputError

T = TypeVar("T")


LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop (as asyncio.run does), and close the loop.

    Raises: InputError if MPC_EVENT_LOOP names neither loop (`main` is closed, never run).
    """
    chosen = os.environ.get("MPC_EVENT_LOOP", "uvloop").strip().lower() or "uvloop"
    if chosen not in LOOPS:
        main.close()
        raise InputError(f"MPC_EVENT_LOOP must be {' or '.join(LOOPS)}, got {os.environ['MPC_EVENT_LOOP']!r}")
    if chosen == "uvloop":
        try:
            import uvloop
        except ImportError:   # a platform without uvloop's wheels (its dependency is Linux and macOS only)
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
