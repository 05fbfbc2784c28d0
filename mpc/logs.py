"""Log set-up for every `mpc` command: text for people, or one JSON object per line.

What may be logged is fixed by the call sites, not filtered here: names, session ids, protocol
step labels, counts, sizes, times and error messages (which never carry values). No share, seed,
key or input value is ever passed to a logger (tests/integration/test_logs.py scans every line
of a sum and a vote at debug level for them).

A record about a session carries its id as `extra={"session": ...}`; the JSON form puts it in
its own field, so `jq 'select(.session == "...")'` follows one session across nodes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else was passed in `extra` and is kept as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# What could end a text line or forge one: C0 and C1 control characters and Unicode's line and
# paragraph separators (which some viewers break lines on); and the backslash, so that an escape
# written out in a message cannot pass for one of ours.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _chain(exc: traceback.TracebackException) -> list[traceback.TracebackException]:
    """An exception as traceback formats it, with every cause and context it shows."""
    found: list[traceback.TracebackException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return found


class TextFormatter(logging.Formatter):
    """A record per line: its time, level, logger and message, with any line break or other control
    character in them escaped, and backslashes doubled (a peer's or coordinator's text quoted in a
    message cannot start a line of its own that looks like the node's, nor pass for an escape); a
    traceback follows on lines of its own, the exceptions' messages in it escaped alike (their
    frames are this program's own source)."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Returns: the record's line, escaped."""
        return _UNSAFE.sub(_escaped, super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """Returns: the traceback, each exception's own text (its type, message and notes) escaped."""
        formatted = traceback.TracebackException(*ei)
        said = {line for exc in _chain(formatted) for line in exc.format_exception_only()}
        text = "".join(_UNSAFE.sub(_escaped, chunk[:-1]) + "\n" if chunk in said else chunk
                       for chunk in formatted.format())
        return text[:-1] if text.endswith("\n") else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, session, and other extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Returns: the record as a single line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    """Send log records of `level` and above to stderr in format `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format shows where a call was made, or the thread and process: not looked up for every
    # record (the logging HOWTO's "Optimization"; a node logs a line per session).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def announce(message: str, fmt: str, logger: str) -> None:
    """Write a line people wait for (a node's "serving on") to stderr whatever the log level: as it is in
    text, as a record of level info from `logger` in JSON, so that the output stays one object per line."""
    if fmt == "json":
        message = JsonFormatter().format(logging.LogRecord(logger, logging.INFO, "", 0, message, None, None))
    print(message, file=sys.stderr, flush=True)
