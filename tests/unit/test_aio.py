"""mpc.aio.run: the event loop every mpc process runs on (uvloop's, unless MPC_EVENT_LOOP=asyncio)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

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
