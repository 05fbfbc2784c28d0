"""How a node serves its Run stream (mpc/node/servicer.py `_each_answered`), on asyncio alone: what gRPC's
reader/writer API does is a read that returns the next request or EOF and a write that may wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from mpc import aio
from mpc.node import servicer
from mpc.node.servicer import _each_answered


class Stream:
    """A stream's far end: requests go in (`send`, `end`), what is written comes out in `written`."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[object] = asyncio.Queue()
        self.written: list[str] = []
        self.started: list[str] = []   # requests whose handlers have started
        self.reads = 0

    def send(self, *requests: str) -> None:
        for r in requests:
            self.requests.put_nowait(r)

    def end(self) -> None:
        self.requests.put_nowait(grpc.aio.EOF)

    async def read(self) -> object:
        self.reads += 1
        return await self.requests.get()

    async def write(self, answer: str) -> None:
        await asyncio.sleep(0)   # a write that yields, as gRPC's does
        self.written.append(answer)


def serving(stream: Stream, released: dict[str, asyncio.Event], closing: asyncio.Event | None = None
            ) -> asyncio.Task[None]:
    """Serve `stream`: "quick:x" is answered at once ("x", twice: one request's answers go together); "slow:x"
    in a task that waits for released["x"], then answers "x done"."""

    def at_once(request: str, answer: Callable[[str], None]) -> bool:
        kind, _, name = request.partition(":")
        if kind != "quick":
            return False
        answer(name)
        answer(name)
        return True

    async def handle(request: str, answer: Callable[[str], None]) -> None:
        name = request.partition(":")[2]
        stream.started.append(name)
        await released.setdefault(name, asyncio.Event()).wait()
        answer(f"{name} done")

    return asyncio.ensure_future(_each_answered(stream.read, stream.write, handle, closing or asyncio.Event(),
                                                at_once))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_quick_request_is_answered_while_a_slow_one_waits_and_each_requests_answers_go_together() -> None:
    async def main() -> None:
        stream, released = Stream(), {"a": asyncio.Event()}
        task = serving(stream, released)
        stream.send("slow:a", "quick:b", "quick:c")
        await settle()
        assert stream.written == ["b", "b", "c", "c"]   # not held up by "a"
        released["a"].set()
        await settle()
        assert stream.written[4:] == ["a done"]
        stream.end()
        await asyncio.wait_for(task, 5)
    aio.run(main())


def test_at_the_end_of_the_stream_the_running_handlers_finish_and_write_before_it_returns() -> None:
    async def main() -> None:
        stream, released = Stream(), {"a": asyncio.Event()}
        task = serving(stream, released)
        stream.send("slow:a")
        stream.end()
        await settle()
        assert not task.done()   # "a" still runs
        released["a"].set()
        await asyncio.wait_for(task, 5)
        assert stream.written == ["a done"]
    aio.run(main())


def test_a_stopping_node_reads_no_more_and_lets_the_running_handlers_finish() -> None:
    async def main() -> None:
        stream, released, closing = Stream(), {"a": asyncio.Event()}, asyncio.Event()
        task = serving(stream, released, closing)
        stream.send("slow:a")
        await settle()
        closing.set()
        await settle()
        stream.send("quick:b")   # after the node began to stop: never read
        released["a"].set()
        await asyncio.wait_for(task, 5)
        assert stream.written == ["a done"]
    aio.run(main())


def test_a_caller_that_goes_away_cancels_the_handlers_still_running() -> None:
    async def main() -> None:
        stream, released = Stream(), {}
        task = serving(stream, released)
        stream.send("slow:a", "slow:b")
        await settle()
        handlers = [t for t in asyncio.all_tasks() if "handled" in repr(t.get_coro())]
        assert len(handlers) == 2
        task.cancel()   # what gRPC does to the handler when the call ends
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all(t.cancelled() for t in handlers) and stream.written == []
    aio.run(main())


def test_no_more_than_max_handling_requests_run_at_once_and_reading_resumes_as_they_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servicer, "MAX_HANDLING", 3)

    async def main() -> None:
        stream, released = Stream(), {}
        task = serving(stream, released)
        stream.send(*(f"slow:{i}" for i in range(5)), "quick:q")
        await settle()
        # The 4th is read, and waits: no further request is read while 3 run.
        assert stream.started == ["0", "1", "2"] and stream.reads == 4 and stream.written == []
        released.setdefault("0", asyncio.Event()).set()
        await settle()
        assert stream.started == ["0", "1", "2", "3"] and stream.reads == 5 and stream.written == ["0 done"]
        for i in range(1, 5):
            released.setdefault(str(i), asyncio.Event()).set()
        await settle()
        assert sorted(stream.written) == sorted(["0 done", "1 done", "2 done", "3 done", "4 done", "q", "q"])
        stream.end()
        await asyncio.wait_for(task, 5)
    aio.run(main())
