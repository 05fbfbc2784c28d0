"""What `mpc` commands print goes out whole, however slowly the reader takes it.

CPython 3.11 loses output written to a pipe when a write is interrupted part-way: a blocking write
to a full pipe that a signal (or the kernel's task work, which libuv's io_uring uses) interrupts after
some bytes returns that count, the BufferedWriter behind sys.stdout returns the short count to the
TextIOWrapper above it, and that drops the rest without a word. `mpc threshold` over 60,000 elements
piped to a reader that was busy for a few seconds printed its first 64 KiB (a pipe's capacity) and
exited 0 (tests/integration/test_progress.py caught it once in a loaded run of the suite).

`whole_stdout` puts sys.stdout on a raw writer that writes each chunk in full, looping over short
writes (and waiting for a non-blocking descriptor to take more), under the same encoding, error
handling and line buffering as before.
"""

from __future__ import annotations

import io
import os
import select
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class WholeWrites(io.RawIOBase):
    """A file descriptor every write of which is written in full (see the module docstring); closing it
    leaves the descriptor open (it is the process's)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        """Write all of `data`. Returns: its length. Raises: OSError as os.write does (BrokenPipeError
        when the reader has gone), and whatever a signal handler raises."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += os.write(self._fd, view[done:])
            except BlockingIOError:   # a non-blocking descriptor whose reader is behind: wait for room
                select.select([], [self._fd], [])
        return done


def whole_stdout() -> None:
    """Put sys.stdout on WholeWrites of its descriptor; nothing if it has none (a test's capture) or
    it is on one already."""
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or isinstance(getattr(out.buffer, "raw", None), WholeWrites):
        return
    try:
        fd = out.fileno()
    except (OSError, ValueError):   # io.UnsupportedOperation is both
        return
    out.flush()
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(WholeWrites(fd)), encoding=out.encoding, errors=out.errors,
                                  line_buffering=out.line_buffering)
