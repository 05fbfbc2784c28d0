"""tests/conftest.py fails a test in which the event loop logged an error, and the run if one came after it.

Each case runs a small test file in a pytest of its own (a subprocess, so that what its loop logs
reaches only its own handler) with this suite's conftest, and reads the outcome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).resolve().parent.parent / "conftest.py").read_text()

CASES = '''
import asyncio
import gc

import pytest


def test_clean():
    async def main():
        await asyncio.sleep(0)
    asyncio.run(main())


def test_callback_raises():
    async def main():
        def boom():
            raise RuntimeError("callback boom")
        asyncio.get_running_loop().call_soon(boom)
        await asyncio.sleep(0.01)
    asyncio.run(main())


def test_exception_never_retrieved():
    async def fails():
        raise ValueError("nobody looked")

    async def main():
        asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0.01)
    asyncio.run(main())
    gc.collect()


def test_clean_after():
    assert True
'''

LATE = '''
import asyncio

import pytest


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.call_soon(lambda: 1 / 0)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()


def test_uses_loop(loop):
    loop.run_until_complete(asyncio.sleep(0))
'''


def test_each_error_fails_its_own_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=4, errors=2)
    out = result.stdout.str()
    assert "ERROR at teardown of test_callback_raises" in out
    assert "callback boom" in out
    assert "ERROR at teardown of test_exception_never_retrieved" in out
    assert "Task exception was never retrieved" in out and "nobody looked" in out
    assert "PASSED test_cases.py::test_clean_after" in out


def test_an_error_after_the_last_test_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_late=LATE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "the event loop logged an error outside any test" in out
    assert "ZeroDivisionError" in out
