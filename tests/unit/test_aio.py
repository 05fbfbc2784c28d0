"""mpc.aio.run: the event loop every mpc process runs on (uvloop's, unless MPC_EVENT_LOOP=asyncio)."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mpc import aio
from mpc.errors import InputError


async def loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_run_uses_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPC_EVENT_LOOP", raising=False)
    assert issubclass(aio.run(loop_type()), uvloop.Loop)


def test_mpc_event_loop_asyncio_keeps_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPC_EVENT_LOOP", "asyncio")
    found = aio.run(loop_type())
    assert not issubclass(found, uvloop.Loop) and issubclass(found, asyncio.BaseEventLoop)


def test_run_returns_the_result_and_raises_what_the_coroutine_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPC_EVENT_LOOP", raising=False)

    async def fails() -> None:
        raise ValueError("from inside")
    assert aio.run(asyncio.sleep(0, result=7)) == 7
    with pytest.raises(ValueError, match="from inside"):
        aio.run(fails())


@pytest.mark.parametrize("value", ["ASYNCIO", " asyncio\n"])
def test_mpc_event_loop_is_read_without_case_or_spaces(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MPC_EVENT_LOOP", value)
    assert not issubclass(aio.run(loop_type()), uvloop.Loop)


def test_an_unknown_mpc_event_loop_is_named_and_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPC_EVENT_LOOP", "tokio")
    ran: list[bool] = []

    async def job() -> None:
        ran.append(True)
    with pytest.raises(InputError, match=r"MPC_EVENT_LOOP must be uvloop or asyncio, got 'tokio'"):
        aio.run(job())
    assert ran == []


async def a_cancelled_call() -> list["asyncio.Task[object]"]:
    """A server-streaming call waiting for a channel that never connects (nothing listens at its port),
    cancelled: gRPC's task waiting for its status is still pending when this returns."""
    with socket.socket() as unused:   # bound, not listening: connecting there is refused
        unused.bind(("127.0.0.1", 0))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{unused.getsockname()[1]}")
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True,
                                                         timeout=30)
        for _ in range(100):   # bounded: until gRPC has started the call (its status task exists)
            if aio.grpc_status_waits():
                break
            await asyncio.sleep(0)
        call.cancel()
        await channel.close()
        return aio.grpc_status_waits()


@pytest.mark.parametrize("loop", aio.LOOPS)
def test_run_lets_grpc_answer_the_calls_that_ended_before_the_loop_closes(
        monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
    """Cancelled by asyncio.run's end instead, gRPC's answer would reach the next loop of the process,
    which logs "Event loop is closed" (see mpc/aio.py)."""
    monkeypatch.setenv("MPC_EVENT_LOOP", loop)
    waits = aio.run(a_cancelled_call())
    assert waits, "the call's status task had ended before the call's coroutine returned: nothing tested"
    assert all(t.done() and not t.cancelled() for t in waits), waits
