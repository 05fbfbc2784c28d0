"""`mpc` commands print their results whole into a pipe whose reader is slow (mpc/cli/output.py):
CPython's own stdout drops what follows a write interrupted part-way, which a full pipe and a signal
(or io_uring's task work) bring about, and the command still exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

CHILD = """
import os, signal, sys
from mpc.cli.output import whole_stdout
whole_stdout()
if {nonblocking}:
    os.set_blocking(1, False)
signal.signal(signal.SIGALRM, lambda *args: None)
signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)   # interrupts the writes while the pipe is full
print(" ".join(str(i % 10) for i in range(150_000)))
print("and after it, é")
sys.stdout.flush()
signal.setitimer(signal.ITIMER_REAL, 0, 0)
"""
EXPECTED = (" ".join(str(i % 10) for i in range(150_000)) + "\nand after it, é\n").encode()


@pytest.mark.parametrize("nonblocking", [False, True])
def test_a_result_longer_than_a_pipe_holds_reaches_a_slow_reader_whole(nonblocking: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(nonblocking=nonblocking)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    time.sleep(1.0)   # the reader is busy: the child fills the pipe (64 KiB) and waits, its writes interrupted
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert len(out) == len(EXPECTED) and out == EXPECTED, (len(out), len(EXPECTED))


def test_it_leaves_a_capture_without_a_descriptor_alone(capsys: pytest.CaptureFixture[str]) -> None:
    from mpc.cli.output import whole_stdout
    before = sys.stdout
    whole_stdout()
    assert sys.stdout is before
    print("captured")
    assert capsys.readouterr().out == "captured\n"
