"""The event loop every `mpc` process runs on: uvloop's (libuv) where it is installed, else asyncio's.

grpc.aio runs on any asyncio event loop. A node handles a few callbacks, futures and timers per
peer message (some 250 per vote over three nodes), and uvloop runs that machinery in C: see the
README's performance section for what it saves. MPC_EVENT_LOOP=asyncio keeps asyncio's own loop
(e.g. for its debug mode).

gRPC's own tasks: a client call has a task of gRPC's that waits for the call's status from gRPC's core.
Cancelled before core has answered (as asyncio.run cancels what is left when `main` returns), the answer
still comes, through gRPC's completion queue, which is one per process: it is then handed to whatever
event loop of the process runs next, which has to post it to the closed loop and logs "Event loop is
closed" from PollerCompletionQueue._handle_events. `run` lets those tasks end first (`settle_grpc`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mpc.errors import InputError

T = TypeVar("T")


LOOPS = ("uvloop", "asyncio")
# How long `settle_grpc` waits at most: core answers a cancelled call at once (well under a millisecond here).
SETTLE_S = 2.0
_GRPC_STATUS_WAIT = "_handle_status_once_received"   # the name of gRPC's task, in grpc/_cython/.../call.pyx.pxi


def grpc_status_waits() -> list["asyncio.Task[Any]"]:
    """The running loop's tasks of gRPC's own that still wait for a call's status from gRPC's core."""
    return [task for task in asyncio.all_tasks() if not task.done()
            and getattr(getattr(task.get_coro(), "cr_code", None), "co_name", "") == _GRPC_STATUS_WAIT]


async def settle_grpc(timeout: float = SETTLE_S) -> None:
    """Wait, at most `timeout` seconds, until gRPC's core has answered every call of this loop that has
    ended (see the module's docstring); a call still live keeps its task, which this leaves as it is."""
    waits = grpc_status_waits()
    if waits:
        await asyncio.wait(waits, timeout=timeout)


async def in_thread_to_end(then: Callable[[], None], func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in a worker thread (asyncio.to_thread), awaited, and run to its end however the
    awaiting ends: a cancel of the caller does not end the thread (nothing could), nor is it taken to have
    ended; `then()` runs on the loop once the thread has, and the thread's exception is retrieved then if
    nobody awaits it any more. For a bound on work that runs in threads (a slot held until `then`)."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))

    def finished(done: "asyncio.Future[T]") -> None:
        then()
        if not done.cancelled():
            done.exception()
    work.add_done_callback(finished)
    return await asyncio.shield(work)


async def _settled(main: Coroutine[Any, Any, T]) -> T:
    try:
        return await main
    finally:
        await settle_grpc()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop (as asyncio.run does), let gRPC's core answer the
    calls it ended (`settle_grpc`), and close the loop.

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
            return uvloop.run(_settled(main))
    return asyncio.run(_settled(main))
