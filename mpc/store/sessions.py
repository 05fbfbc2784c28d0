"""Sessions and the audit log: the tables `sessions` (what this node remembers of each session
and its status) and `audit` (append-only: one row per event of a session that touched this
node's inputs, with the sizes and kinds of what left the node, never values).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from mpc.errors import StoreError
from mpc.store.base import StoreBase, _now
from mpc.store.schema import AUDIT_EVENTS

SESSION_STATES = ("prepared", "running", "done", "failed", "aborted", "interrupted")
TERMINAL_STATES = frozenset({"done", "failed", "aborted", "interrupted"})

RESTART_REASON = "node restarted during the session"

_SESSION_COLUMNS = (
    "session_id, protocol, input_name, participants, coordinator, status, reason, "
    "created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session to record as "prepared": what record_session takes."""

    session_id: str
    protocol: str
    input_name: str
    participants: tuple[str, ...]
    coordinator: str

    def check(self) -> None:
        """Raises: StoreError for an empty or non-text field, or no participants."""
        _check_text("id", self.session_id)
        _check_text("protocol", self.protocol)
        _check_text("input name", self.input_name)
        _check_text("coordinator", self.coordinator)
        if not self.participants:
            raise StoreError(f"session {self.session_id!r}: participants must be a non-empty list")
        for p in self.participants:
            _check_text("participant", p)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What this node remembers about one session."""

    session_id: str
    protocol: str
    input_name: str
    participants: tuple[str, ...]
    coordinator: str
    status: str
    reason: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """What left the node in one session, to one recipient, of one kind: counts and sizes only."""

    kind: str          # e.g. "output share", "sum/seed", "triples/u"
    to: str            # a node name, or the coordinator's certificate identity
    messages: int
    bytes: int

    def as_dict(self) -> dict[str, object]:
        """Returns: the transfer as a JSON-ready dict."""
        return {"kind": self.kind, "to": self.to, "messages": self.messages, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One session as this node's audit log tells it: who asked, for what, and what left."""

    session_id: str
    started_at: str
    ended_at: str
    coordinator: str
    protocol: str
    inputs: tuple[str, ...]
    participants: tuple[str, ...]
    outcome: str       # refused, prepared (still open, or the node stopped), done, failed, ...
    reason: str
    sent: tuple[Transfer, ...]
    release: str = ""  # the release this session counted against the input's budget, if it got that far

    @property
    def bytes_sent(self) -> int:
        """Total bytes this node sent in the session."""
        return sum(t.bytes for t in self.sent)

    def as_dict(self) -> dict[str, object]:
        """Returns: the entry as a JSON-ready dict."""
        return {"session": self.session_id, "started_at": self.started_at, "ended_at": self.ended_at,
                "coordinator": self.coordinator, "protocol": self.protocol, "inputs": list(self.inputs),
                "participants": list(self.participants), "outcome": self.outcome, "reason": self.reason,
                "sent": [t.as_dict() for t in self.sent], "bytes_sent": self.bytes_sent, "release": self.release}


@functools.lru_cache(maxsize=64)
def _names_json(names: tuple[str, ...]) -> str:
    """The JSON list of names a session row or audit row stores (a node's rows repeat the same few; a
    few dozen kept, so that refused requests' lists, which a caller chooses, hold at most about 1 MB)."""
    return json.dumps(list(names))


AUDIT_INSERT = ("INSERT INTO audit (at, event, session_id, coordinator, protocol, inputs, participants, sent, "
                "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
SESSION_INSERT = f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _audit_row(at: str, event: str, session_id: str, coordinator: str, protocol: str, inputs: Sequence[str],
               participants: Sequence[str], sent: Sequence[Transfer], reason: str) -> tuple[object, ...]:
    """The parameters of AUDIT_INSERT for one event. Raises: StoreError for an unknown event."""
    if event not in AUDIT_EVENTS:
        raise StoreError(f"unknown audit event {event!r}; expected one of {', '.join(AUDIT_EVENTS)}")
    return (at, event, str(session_id)[:64], str(coordinator)[:256], str(protocol)[:32],
            _names_json(tuple(str(i)[:128] for i in inputs)), _names_json(tuple(str(p)[:128] for p in participants)),
            json.dumps([t.as_dict() for t in sent]) if sent else "[]", str(reason)[:1000])


def _audit_protocol(protocol: str) -> str:
    """The protocol name the audit log shows: the catalogue's policy name, as the node records it
    ("average-records" and "average-elementwise" are how stores before the catalogue recorded an average)."""
    return "average" if protocol in ("average-records", "average-elementwise") else protocol


def _check_text(what: str, value: object, *, allow_empty: bool = False) -> str:
    """Returns: `value` if it is a (non-empty) str. Raises: StoreError otherwise."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise StoreError(f"session {what} must be a {'' if allow_empty else 'non-empty '}string, "
                         f"got {value!r}")
    return value


def _session_from_row(row: tuple[object, ...]) -> SessionRecord:
    """Returns: the SessionRecord for a row selected with _SESSION_COLUMNS."""
    session_id, protocol, input_name, participants, coordinator, status, reason, created, updated = map(str, row)
    return SessionRecord(session_id, protocol, input_name, tuple(json.loads(participants)), coordinator, status,
                         reason, created, updated)


class SessionsMixin(StoreBase):
    """The store's session records and audit log."""

    def record_session(self, session_id: str, protocol: str, input_name: str,
                       participants: Sequence[str], coordinator: str) -> None:
        """Record a new session as "prepared". Raises: StoreError if the id is known already, or for
        empty or non-text fields or participants that are not a list of names."""
        if isinstance(participants, (str, bytes)):
            raise StoreError(f"session {session_id!r}: participants must be a non-empty list")
        new = NewSession(session_id, protocol, input_name, tuple(participants), coordinator)
        new.check()
        with self._writing(durable=False) as conn:
            self._insert_session(conn, new, _now())

    @staticmethod
    def _insert_session(conn: sqlite3.Connection, new: NewSession, now: str, *, if_absent: bool = False) -> bool:
        """Insert a checked new session as "prepared", with its audit entry (same transaction).

        if_absent: a session that is already recorded is left as it is (a one-round session's release
        and its end may race to record it: its id was checked fresh when it was prepared).
        Returns: whether it was inserted (False: it was there already, if_absent).
        Raises: StoreError if it is known already (unless if_absent).
        """
        if SessionsMixin._known(conn, new.session_id):
            if if_absent:
                return False
            raise StoreError(f"session {new.session_id!r} is already known at this node (replayed session id)")
        conn.execute(
            SESSION_INSERT,
            (new.session_id, new.protocol, new.input_name, _names_json(new.participants), new.coordinator,
             "prepared", "", now, now),
        )
        # The audit row goes in the same transaction: no session without its entry.
        SessionsMixin._append_audit(conn, now, "prepared", new.session_id, new.coordinator,
                                    _audit_protocol(new.protocol), [new.input_name], new.participants, (), "")
        return True

    def set_session_status(self, session_id: str, status: str, reason: str = "",
                           sent: Sequence[Transfer] = (), new: NewSession | None = None) -> None:
        """Move a session to `status`; when it ends, append its audit entry (with what the node
        `sent`) in the same transaction. new: a session not recorded yet (a one-round session that
        ends before its release), recorded now, in the same transaction. Raises: StoreError if the
        status is unknown, the session is unknown, or it has already ended."""
        if status not in SESSION_STATES:
            raise StoreError(
                f"session {session_id!r}: unknown status {status!r}; expected one of "
                f"{', '.join(SESSION_STATES)}"
            )
        _check_text("reason", reason, allow_empty=True)
        now = _now()
        if new is not None:
            new.check()
        with self._writing(durable=False) as conn:
            # A row written just now is not read back for the audit entry.
            recorded = new if new is not None and self._insert_session(conn, new, now, if_absent=True) else None
            self._set_status(conn, session_id, status, reason, sent, now, recorded)

    @staticmethod
    def _set_status(conn: sqlite3.Connection, session_id: str, status: str, reason: str, sent: Sequence[Transfer],
                    now: str, recorded: NewSession | None = None) -> None:
        """set_session_status inside the caller's transaction (checked arguments).

        recorded: the session as its row holds it, if the caller has just written that row (not read again).
        Raises: StoreError if the session is unknown or has already ended.
        """
        terminal = tuple(sorted(TERMINAL_STATES))
        marks = ", ".join("?" * len(terminal))
        # One conditional UPDATE, so a concurrent writer cannot slip in between check and set.
        changed = conn.execute(
            f"UPDATE sessions SET status = ?, reason = ?, updated_at = ? "
            f"WHERE session_id = ? AND status NOT IN ({marks})",
            (status, reason, now, session_id, *terminal),
        ).rowcount
        if changed:
            if status in TERMINAL_STATES:
                if recorded is None:
                    protocol, input_name, participants, coordinator = conn.execute(
                        "SELECT protocol, input_name, participants, coordinator FROM sessions "
                        "WHERE session_id = ?", (session_id,)).fetchone()
                    recorded = NewSession(session_id, protocol, input_name, tuple(json.loads(participants)),
                                          coordinator)
                SessionsMixin._append_audit(conn, now, status, session_id, recorded.coordinator,
                                            _audit_protocol(recorded.protocol), [recorded.input_name],
                                            recorded.participants, sent, reason)
            return
        row = conn.execute("SELECT status FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"no session {session_id!r} at this node")
        raise StoreError(f"session {session_id!r} has already ended ({row[0]}); cannot set it to {status!r}")

    def has_session(self, session_id: str) -> bool:
        """Whether this node knows the session (its records written or deferred), read without
        writing the deferred ones first: what a new session's id is checked against."""
        with self._reading(deferred=False) as conn:
            return session_id in self._deferred_ids or self._known(conn, session_id)

    @staticmethod
    def _known(conn: sqlite3.Connection, session_id: str) -> bool:
        """Whether the session has a row (written; not counting deferred ones)."""
        return conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is not None

    def get_session(self, session_id: str) -> SessionRecord | None:
        """Returns: the session's record, or None if this node does not know it."""
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return None if row is None else _session_from_row(row)

    def mark_unfinished_interrupted(self) -> int:
        """Mark every prepared or running session "interrupted" (on daemon start), in the
        session table and in the audit log. Returns: how many sessions were marked."""
        now = _now()
        with self._writing() as conn:
            rows = conn.execute(
                "SELECT session_id, protocol, input_name, participants, coordinator FROM sessions "
                "WHERE status IN ('prepared', 'running')"
            ).fetchall()
            conn.execute(
                "UPDATE sessions SET status = 'interrupted', reason = ?, updated_at = ? "
                "WHERE status IN ('prepared', 'running')",
                (RESTART_REASON, now),
            )
            for session_id, protocol, input_name, participants, coordinator in rows:
                self._append_audit(conn, now, "interrupted", session_id, coordinator, _audit_protocol(protocol),
                                   [input_name], json.loads(participants), (), RESTART_REASON)
            return len(rows)

    def list_sessions(self, limit: int = 100) -> list[SessionRecord]:
        """Returns: up to `limit` sessions, newest first. Raises: StoreError if limit < 1."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"list_sessions: limit must be a positive int, got {limit!r}")
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_session_from_row(row) for row in rows]

    # -- audit log ----------------------------------------------------------------------------

    def append_audit(self, event: str, session_id: str, coordinator: str, protocol: str,
                     inputs: Sequence[str], participants: Sequence[str],
                     sent: Sequence[Transfer] = (), reason: str = "") -> None:
        """Append one event to the audit log. Sessions get theirs from record_session and
        set_session_status; this is for what never becomes a session (a refused request).

        Raises: StoreError for an unknown event.
        """
        with self._writing(durable=False) as conn:
            self._append_audit(conn, _now(), event, session_id, coordinator, protocol, inputs,
                               participants, sent, reason)

    @staticmethod
    def _append_audit(conn: sqlite3.Connection, at: str, event: str, session_id: str, coordinator: str,
                      protocol: str, inputs: Sequence[str], participants: Sequence[str],
                      sent: Sequence[Transfer], reason: str) -> None:
        conn.execute(AUDIT_INSERT, _audit_row(at, event, session_id, coordinator, protocol, inputs, participants,
                                              sent, reason))

    def audit_log(self, *, input_name: str | None = None, since: str | None = None,
                  until: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        """The audit log, one entry per session, oldest first.

        Args:
            input_name: only sessions that used this input.
            since, until: ISO-8601 bounds on when the session started (`until` inclusive of
                any time with that prefix, so "2026-11-23" means the whole day).
            limit: at most this many sessions (the newest).
        Raises: StoreError if limit < 1.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"audit_log: limit must be a positive int, got {limit!r}")
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, at, event, session_id, coordinator, protocol, inputs, participants, sent, reason "
                "FROM audit ORDER BY seq").fetchall()
        # One entry per session, keyed by its first row; a refusal is always an entry of its own
        # (its id may be anything a caller sent, even the id of another session).
        entries: dict[int, AuditEntry] = {}
        open_sessions: dict[str, int] = {}
        for seq, at, event, session_id, coordinator, protocol, inputs, participants, sent, reason in rows:
            transfers = tuple(Transfer(**t) for t in json.loads(sent))
            first = None if event == "refused" else open_sessions.get(session_id)
            if first is None:
                entries[seq] = AuditEntry(session_id, at, at, coordinator, protocol, tuple(json.loads(inputs)),
                                          tuple(json.loads(participants)), event, reason, transfers)
                if event != "refused":
                    open_sessions[session_id] = seq
            elif event == "released":
                e = entries[first]
                entries[first] = AuditEntry(session_id, e.started_at, e.ended_at, e.coordinator, e.protocol,
                                            e.inputs, e.participants, e.outcome, e.reason, e.sent, reason)
            else:
                e = entries[first]
                entries[first] = AuditEntry(session_id, e.started_at, at, e.coordinator, e.protocol, e.inputs,
                                            e.participants, event, reason or e.reason, e.sent + transfers,
                                            e.release)
        chosen = [e for e in entries.values()
                  if (input_name is None or input_name in e.inputs)
                  and (since is None or e.started_at >= since)
                  and (until is None or e.started_at[:len(until)] <= until)]
        return chosen[-limit:]
