"""LongCall.end (mpc/transport/peers.py): a long-lived stream ended as gRPC ends a call, or cut.

A real grpc.aio server on loopback with one bidirectional method, whose handler either returns once
the client has stopped writing (as a node's Run and Peer.Stream handlers do) or never does. Ended
gracefully, the call's status is OK and gRPC's core has nothing left to answer when `end` returns (an
answer left over would reach the process's next event loop: mpc/aio.py); a far end that does not
return within the bound gets the call cut, and its handler sees the cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from mpc import aio
from mpc.transport.peers import LongCall

METHOD = "/test.Echo/Chat"


class Echoed(LongCall):
    """The client end: what comes back is kept; `fail` records why the call ended."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.got: list[bytes] = []
        self.failed: list[BaseException] = []
        super().__init__(channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)())

    def route(self, message: Any) -> None:
        self.got.append(message)

    def fail(self, failure: BaseException) -> None:
        self.failed.append(failure)


async def serving(after_eof: Callable[[], Awaitable[None]],
                  body: Callable[[grpc.aio.Channel, list[str]], Awaitable[Any]]) -> Any:
    """Run `body(channel, seen)` against a server whose handler echoes each message, then, at the
    client's end of writing, awaits `after_eof()` before it returns; `seen` gets how the handler ended."""
    seen: list[str] = []

    async def chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            async for request in requests:
                yield request
            await after_eof()
            seen.append("returned")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await body(channel, seen)
    finally:
        await server.stop(None)


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):   # bounded: 10 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def returns_at_once() -> None:
    return None


@pytest.mark.parametrize("loop", aio.LOOPS)
def test_a_call_ended_gracefully_has_status_ok_and_nothing_left_for_grpc_to_answer(
        monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
    monkeypatch.setenv("MPC_EVENT_LOOP", loop)

    async def body(channel: grpc.aio.Channel, seen: list[str]) -> tuple[Any, ...]:
        call = Echoed(channel)
        for word in (b"one", b"two"):
            await call.write(word)
        await until(lambda: len(call.got) == 2, "the echoes")
        await asyncio.wait_for(call.end(10.0), 20.0)
        left = aio.grpc_status_waits()   # before anything else runs on the loop
        await until(lambda: bool(seen), "the handler's end")
        return call.got, [str(f) for f in call.failed], await call.call.code(), left, list(seen)
    got, failed, code, left, seen = aio.run(serving(returns_at_once, body))
    assert got == [b"one", b"two"]
    assert failed == ["the far end ended the stream"] and code == grpc.StatusCode.OK
    assert left == [] and seen == ["returned"]


def test_a_far_end_that_does_not_return_gets_the_call_cut_at_the_bound() -> None:
    held = asyncio.Event()   # never set: the handler would wait for ever

    async def body(channel: grpc.aio.Channel, seen: list[str]) -> tuple[Any, ...]:
        call = Echoed(channel)
        await call.write(b"one")
        await until(lambda: call.got == [b"one"], "the echo")
        await asyncio.wait_for(call.end(0.2), 10.0)   # the test's own bound, far past end's
        await until(lambda: bool(seen), "the handler's end")
        return [str(f) for f in call.failed], call.call.cancelled(), list(seen)
    failed, cancelled, seen = aio.run(serving(held.wait, body))
    assert failed == ["the stream was closed"] and cancelled
    assert seen == ["cancelled"]


def test_ending_a_call_that_already_failed_returns_at_once_and_tells_nothing_more() -> None:
    async def body(channel: grpc.aio.Channel, seen: list[str]) -> tuple[Any, ...]:
        call = Echoed(channel)
        await call.write(b"one")
        await until(lambda: call.got == [b"one"], "the echo")
        call.close()   # cut: the reader tells its waiters once
        await until(lambda: bool(call.failed), "the reader's end")
        await asyncio.wait_for(call.end(30.0), 5.0)
        return [str(f) for f in call.failed]
    assert aio.run(serving(returns_at_once, body)) == ["the stream was closed"]
