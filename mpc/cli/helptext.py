"""Help text completed only when it is shown.

A little of the help names values from modules that are slow to import (the coordinator's
default delta comes with grpc and numpy, the identifier rules with numpy). Importing them to
build the parser would slow every command, `mpc --version` included, so such text is filled in
by `when_shown` just before a parser's help is formatted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mpc import MAX_SESSION_TIMEOUT_S


class MpcParser(argparse.ArgumentParser):
    """The `mpc` parser; its subcommands' parsers are of this class too (add_subparsers uses the parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: with them the top parser reads a subcommand's `--lo` as an ambiguous
        # prefix of its own `--log-level` and `--log-format`, and refuses the command line.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.fill_ins: list[Callable[[], None]] = []

    def format_help(self) -> str:
        """The help, after running the fill-ins registered with `when_shown`."""
        while self.fill_ins:
            self.fill_ins.pop(0)()
        return super().format_help()


def when_shown(parser: argparse.ArgumentParser, fill_in: Callable[[], None]) -> None:
    """Run `fill_in`, which sets some of `parser`'s help text, before that help is first formatted
    (at once if `parser` is a plain ArgumentParser)."""
    if isinstance(parser, MpcParser):
        parser.fill_ins.append(fill_in)
    else:
        fill_in()


def seconds(text: str) -> float:
    """An argparse type for a deadline: a finite number of seconds in (0, 86400].

    Raises: argparse.ArgumentTypeError naming the value (argparse reports it as a usage error).
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_SESSION_TIMEOUT_S:   # NaN fails this too
        raise argparse.ArgumentTypeError(f"a number of seconds above 0 and at most {MAX_SESSION_TIMEOUT_S:.0f}, "
                                         f"got {text!r}")
    return value
