"""The text log format (mpc/logs.py TextFormatter): one line per record, whatever a message quotes."""

from __future__ import annotations

import io
import logging
import re

import pytest

from mpc.logs import TextFormatter

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
FORGED = "2030-01-01 00:00:00,000 CRITICAL mpc.node: session deadbeef released every input"


def _logged(message: str, *args: object, exc: bool = False, error: str = "boom") -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("mpc.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise ValueError(error)
            except ValueError:
                logger.exception(message, *args)
        else:
            logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return out.getvalue()


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1b[2K\r"])
def test_a_quoted_line_break_cannot_start_a_line_of_its_own(breaker: str) -> None:
    for text in (_logged("session s aborted: %s", f"x{breaker}{FORGED}"), _logged(f"reason x{breaker}{FORGED}")):
        lines = text.splitlines()   # str.splitlines breaks on every separator a viewer might
        assert len(lines) == 1, lines
        assert LINE.match(lines[0]) and FORGED in lines[0], lines


def test_escapes_say_which_character_was_there() -> None:
    line = _logged("%s", "a\nb\rc\td\x1be\u2028f")
    assert line.rstrip("\n").endswith(r"a\nb\rc\td\x1be\u2028f"), line


def test_a_backslash_in_a_message_cannot_pass_for_an_escape() -> None:
    """A quoted text that spells out an escape ("\\n") reads otherwise than a line break that was escaped."""
    spelled, broken = _logged("%s", "a\\nb"), _logged("%s", "a\nb")
    assert spelled.rstrip("\n").endswith(r"a\\nb") and broken.rstrip("\n").endswith(r"a\nb"), (spelled, broken)
    assert spelled != broken


@pytest.mark.parametrize("breaker", ["\n", "\r", "\u2028", "\x85"])
def test_an_exception_message_in_a_traceback_cannot_start_a_line_of_its_own(breaker: str) -> None:
    """A logged traceback ends with its exception's message, which may quote a peer's text: escaped
    alike, while the traceback's own lines stay as they are."""
    lines = _logged("failed", exc=True, error=f"bad reply{breaker}{FORGED}").splitlines()
    assert LINE.match(lines[0]) and lines[1] == "Traceback (most recent call last):", lines
    assert lines[-1].startswith("ValueError: bad reply\\") and lines[-1].endswith(FORGED), lines
    assert not any(LINE.match(line) for line in lines[1:]), lines


def test_plain_text_and_other_unicode_are_left_as_they_are() -> None:
    line = _logged("input %r of node %s: café, 東京", "raise", "alice")
    assert line.rstrip("\n").endswith("input 'raise' of node alice: café, 東京"), line


def test_a_traceback_still_follows_on_lines_of_its_own() -> None:
    lines = _logged("failed: %s", "x\ny", exc=True).splitlines()
    assert LINE.match(lines[0]) and lines[0].endswith(r"failed: x\ny"), lines
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom", lines
