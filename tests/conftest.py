"""What every test is held to: an error the event loop logs fails the test it happened in.

asyncio does not raise what goes wrong outside any awaiting caller (an exception in a callback,
a task whose exception nobody retrieved, a task destroyed while still pending): it logs it, at
ERROR, on the "asyncio" logger (uvloop too), and the test that caused it would pass. Here each
such record fails the test during which it was logged, with the record's text and traceback; one
logged after the last test (a module's loop closing) fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class _LoopErrors(logging.Handler):
    """Keeps what the asyncio logger says at ERROR or above, formatted as it would be printed."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))


_ERRORS = _LoopErrors()
_taken = 0                       # how many of _ERRORS.seen have been handed out
_outside_tests: list[str] = []   # logged between tests (a fixture's teardown, a module's loop closing)


def _new() -> list[str]:
    global _taken
    new = _ERRORS.seen[_taken:]
    _taken = len(_ERRORS.seen)
    return new


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("asyncio").addHandler(_ERRORS)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger("asyncio").removeHandler(_ERRORS)


@pytest.fixture(autouse=True)
def _no_event_loop_errors() -> Iterator[None]:
    _outside_tests.extend(_new())
    yield
    new = _new()
    if new:
        pytest.fail("the event loop logged an error during this test:\n" + "\n".join(new), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _outside_tests.extend(_new())
    if _outside_tests:
        session.config.get_terminal_writer().line(
            "the event loop logged an error outside any test:\n" + "\n".join(_outside_tests), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
