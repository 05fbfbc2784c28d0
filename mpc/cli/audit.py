"""`mpc audit`: what was computed on this node's data, by whom, and what left the machine.

Run on the node's own machine: it reads the node's store (the audit log lives there, next to
the inputs), never the network. One line per session: when, which coordinator (its
certificate identity), which protocol on which inputs with which parties, how it ended, and
what this node sent: kinds, recipients and sizes, never values.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING

from mpc.cli.inputs import add_store_arguments, open_store
from mpc.errors import ConfigError

if TYPE_CHECKING:
    from mpc.store import AuditEntry

SPIFFE = "spiffe://mpc/"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?\Z")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` command."""
    p = sub.add_parser("audit", help="this node's audit log: every session on its data and what left (local only)")
    p.add_argument("--input", dest="input_name", help="only sessions that used this input")
    p.add_argument("--since", help="only sessions started at or after this UTC date/time (YYYY-MM-DD[THH:MM[:SS]])")
    p.add_argument("--until", help="only sessions started up to this UTC date/time, inclusive")
    p.add_argument("--limit", type=int, default=1000, help="at most this many sessions, the newest (default 1000)")
    p.add_argument("--detail", action="store_true", help="list every kind of message sent, per recipient")
    p.add_argument("--json", action="store_true", help="one JSON array of sessions")
    add_store_arguments(p)
    p.set_defaults(run=run)


def _date(flag: str, value: str | None) -> str | None:
    from datetime import datetime

    if value is None:
        return None
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        datetime.fromisoformat(value)   # a real date and time: not 2026-13-45
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected a UTC date or time like 2026-11-23 or 2026-11-23T14:05") \
            from None
    return value


def size(n: int) -> str:
    """Bytes in a short human form (1000-based, as network sizes are)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def shown(text: str) -> str:
    """A field as the table prints it: a refused request's fields come from the caller, so
    anything unprintable (escape sequences, newlines) is shown escaped, never sent to the terminal."""
    return text if text.isprintable() else repr(text)[1:-1]


def plural(n: int, noun: str) -> str:
    """"1 message", "3 messages"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def summary(entry: AuditEntry) -> str:
    """What the node sent in a session, in one phrase."""
    if not entry.sent:
        return "nothing"
    to_coordinator = [t for t in entry.sent if t.to == entry.coordinator]
    to_peers = [t for t in entry.sent if t.to != entry.coordinator]
    parts = [f"{t.kind} of {size(t.bytes)} to the coordinator" for t in to_coordinator]
    if to_peers:
        peers = sorted({t.to for t in to_peers})
        messages = sum(t.messages for t in to_peers)
        parts.append(f"{size(sum(t.bytes for t in to_peers))} in {plural(messages, 'message')} to {', '.join(peers)}")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Print the audit log as a table or JSON."""
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    since, until = _date("--since", args.since), _date("--until", args.until)
    with open_store(args, must_exist=True) as store:
        entries = store.audit_log(input_name=args.input_name, since=since, until=until, limit=args.limit)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=1))
        return 0
    if not entries:
        print("no sessions in the audit log" + (" match" if args.input_name or since or until else ""))
        return 0
    print(f"{'started (UTC)':<23} {'session':<12} {'protocol':<9} {'inputs':<12} {'outcome':<11} "
          f"{'coordinator':<24} {'participants':<24} sent")
    for e in entries:
        print(f"{e.started_at[:23]:<23} {shown(e.session_id[:12]):<12} {shown(e.protocol):<9} "
              f"{shown(','.join(e.inputs)):<12} {e.outcome:<11} {shown(e.coordinator.removeprefix(SPIFFE)):<24} "
              f"{shown(','.join(e.participants)):<24} {shown(summary(e))}")
        if e.reason and e.outcome != "done":
            print(f"{'':<23} reason: {shown(e.reason)}")
        if e.release:
            print(f"{'':<23} released: {shown(e.release)}")
        if args.detail:
            for t in e.sent:
                to = shown(t.to.removeprefix(SPIFFE))
                print(f"{'':<23} sent {t.kind:<14} to {to:<24} {plural(t.messages, 'message'):>12} {size(t.bytes):>10}")
    return 0
