"""A one-line progress display for coordinator commands that take a while.

Shown only when stderr is a terminal and the command is not asked for --json; nothing appears
for the first second (most sessions are over by then), and the line is redrawn at most ten
times a second and erased when the command ends, so the result on stdout stands alone.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from mpc.cli.audit import size

if TYPE_CHECKING:
    from mpc.coordinator.client import ProgressReport

DELAY_S = 1.0
REDRAW_S = 0.1
ERASE_TO_END = "\x1b[K"


class TerminalProgress:
    """Draws ProgressReports on a terminal line (use as the Coordinator's progress callback)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    @classmethod
    def wanted(cls, json_output: bool, stream: TextIO | None = None) -> bool:
        """Whether to show progress at all: on a terminal, and not for machine-readable output."""
        stream = stream if stream is not None else sys.stderr
        return not json_output and stream.isatty()

    def __call__(self, report: ProgressReport) -> None:
        """Take a report; redraw if the delay has passed and the last redraw is old enough."""
        now = time.monotonic()
        if now - self.start < DELAY_S or now - self._last_draw < REDRAW_S:
            return
        self._last_draw = now
        line = f"{self.label}: {self.describe(report, now - self.start)}"
        # One terminal row, or the carriage return would only go back to the last wrapped row.
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        columns = columns or 80   # a terminal that does not say its width
        line = line[:columns - 1]
        self.stream.write("\r" + line + ERASE_TO_END)
        self.stream.flush()
        self._width = len(line)

    @staticmethod
    def describe(report: ProgressReport, elapsed: float) -> str:
        """One report as text."""
        if report.phase == "prepare":
            return f"{elapsed:.1f} s, preparing at {report.nodes} nodes"
        text = f"{elapsed:.1f} s, computing"
        if report.peer_messages:
            text += f"; nodes exchanged {size(report.peer_bytes)} in {report.peer_messages} messages"
        text += (f"; output shares from {report.nodes_done}/{report.nodes} nodes "
                 f"({size(report.share_bytes)} of {size(report.share_bytes_total)})")
        return text

    def close(self) -> None:
        """Erase the line if one was drawn."""
        if self._width:
            self.stream.write("\r" + ERASE_TO_END)
            self.stream.flush()
            self._width = 0
