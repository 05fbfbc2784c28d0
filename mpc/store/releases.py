"""Releases: the table `releases` (append-only), the releases each input version took part in
and whether each counted against the version's budget (DESIGN.md §9), and beside it
`release_queries`, the distinct queries of each version (what a decision reads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from mpc.errors import StoreError
from mpc.store.base import StoreBase, _now
from mpc.store.sessions import AUDIT_INSERT, SESSION_INSERT, NewSession, SessionsMixin, Transfer, _audit_protocol, \
    _audit_row, _names_json

# Whether a session's release may be deferred as a repeat (`defer_repeat`): the input's version now, whether
# the session is known, and whether the version released the query before.
REPEAT_CHECK = ("SELECT (SELECT m.version FROM inputs i JOIN input_meta m USING (name) WHERE name = ?), "
                "EXISTS (SELECT 1 FROM sessions WHERE session_id = ?), "
                "EXISTS (SELECT 1 FROM release_queries WHERE input_name = ? AND version = ? AND query = ?)")
RELEASE_INSERT = ("INSERT INTO releases (at, session_id, input_name, version, query, counted, epsilon, delta) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


@dataclass(frozen=True, slots=True)
class RepeatRecords:
    """What record_release writes for a new session whose release repeats a query the input version
    released before, word for word, and which ends with it, as its transaction leaves them: the session
    "done" (its "prepared" status never seen outside the transaction), its three audit entries, and the
    release (its query, recorded before, adds no distinct query). Made once (`of`) for the sessions that
    differ in their id alone (a RepeatPlan's, mpc/node/core.py), and `rows` for each. Such a release counts
    against nothing, and its description is what deciding on it says (node/releases.py `decide`: the
    first of the version's distinct queries that implies it, which stays the first, as they are
    append-only)."""

    input_name: str
    version: int
    query: str
    description: str              # what deciding on the release said
    session: tuple[object, ...]   # the session row between its id and its two times
    audit: tuple[tuple[str, tuple[object, ...]], ...]   # each audit row's event, and its fields after the id

    @classmethod
    def of(cls, new: NewSession, input_name: str, version: int, query: str, description: str,
           done: Sequence[Transfer]) -> RepeatRecords:
        """The records of `new` and of sessions like it; done: what each sends (its output share).

        Raises: StoreError for a malformed session (NewSession.check).
        """
        new.check()
        audited = _audit_protocol(new.protocol)
        audit = tuple((event, _audit_row("", event, "", new.coordinator, audited, [name], new.participants, sent,
                                         reason)[3:])
                      for event, name, sent, reason in (("prepared", new.input_name, (), ""),
                                                        ("released", input_name, (), description),
                                                        ("done", new.input_name, done, "")))
        session = (new.protocol, new.input_name, _names_json(new.participants), new.coordinator, "done", "")
        return cls(input_name, version, query, description, session, audit)

    def rows(self, session_id: str, now: str) -> list[tuple[str, tuple[object, ...]]]:
        """The INSERT statements and their parameters for session `session_id`, recorded at `now`."""
        return [(SESSION_INSERT, (session_id, *self.session, now, now)),
                *((AUDIT_INSERT, (now, event, session_id[:64], *fields)) for event, fields in self.audit),
                (RELEASE_INSERT, (now, session_id, self.input_name, self.version, self.query, 0, None, None))]


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """One release an input version took part in: the query (canonical JSON) and whether it
    counted against the version's budget (a repeat, or an output implied by an earlier one, does not)."""

    seq: int
    at: str
    session_id: str
    input_name: str
    version: int
    query: str
    counted: bool
    epsilon: Decimal | None = None   # what a differentially private release spent (None: an exact release)
    delta: Decimal | None = None


class ReleasesMixin(StoreBase):
    """The store's release log; each release also appends a "released" event to the audit log."""

    def releases(self, input_name: str, version: int | None = None) -> list[ReleaseRecord]:
        """The releases of one input (one version of it, or all), oldest first."""
        return self._releases(None, input_name, version)

    def _releases(self, conn: sqlite3.Connection | None, input_name: str, version: int | None) -> list[ReleaseRecord]:
        sql = ("SELECT seq, at, session_id, input_name, version, query, counted, epsilon, delta FROM releases "
               "WHERE input_name = ?")
        args: tuple[object, ...] = (input_name,)
        if version is not None:
            sql, args = sql + " AND version = ?", (input_name, version)
        if conn is None:
            with self._reading() as reader:
                rows = reader.execute(sql + " ORDER BY seq", args).fetchall()
        else:
            rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
        return [ReleaseRecord(int(q), str(a), str(sid), str(n), int(v), str(j), bool(c),
                              None if e is None else Decimal(e), None if d is None else Decimal(d))
                for q, a, sid, n, v, j, c, e, d in rows]

    def distinct_releases(self, input_name: str, version: int) -> list[tuple[str, bool]]:
        """The distinct queries an input version took part in, in order of their first release, each
        with whether it counted against the version's budget. A repeated query adds a row to the
        log but nothing here, so deciding on the next release does not slow down as the log grows."""
        with self._reading(deferred=False) as reader:   # deferred releases add no distinct query
            return self._distinct(reader, input_name, version)

    @staticmethod
    def _distinct(conn: sqlite3.Connection, input_name: str, version: int) -> list[tuple[str, bool]]:
        rows = conn.execute("SELECT query, counted FROM release_queries WHERE input_name = ? AND version = ? "
                            "ORDER BY first_seq", (input_name, version)).fetchall()
        return [(str(q), bool(c)) for q, c in rows]

    def dp_spent(self, input_name: str) -> tuple[Decimal, Decimal]:
        """What the differentially private releases of an input (all versions) spent: exact (epsilon, delta)."""
        with self._reading() as reader:
            return self._dp_spent(reader, input_name)

    @staticmethod
    def _dp_spent(conn: sqlite3.Connection, input_name: str) -> tuple[Decimal, Decimal]:
        epsilon = delta = Decimal(0)
        for e, d in conn.execute("SELECT epsilon, delta FROM releases WHERE input_name = ? AND epsilon IS NOT NULL",
                                 (input_name,)):
            epsilon += Decimal(e)
            delta += Decimal(d or 0)
        return epsilon, delta

    def record_release(self, session_id: str, input_name: str, version: int, query: str,
                       decide: Callable[[list[tuple[str, bool]]], tuple[bool, str]], *,
                       spend: tuple[Decimal, Decimal] | None = None,
                       afford: Callable[[tuple[Decimal, Decimal]], None] | None = None,
                       new: NewSession | None = None, durable: bool = True,
                       done: Sequence[Transfer] | None = None) -> str:
        """Count a session's release against an input version's budget, atomically.

        `decide` sees the version's distinct earlier queries (`distinct_releases`) and returns
        (counted, description), or raises (PolicyError) to refuse; the check and the insert share
        one transaction, so two sessions cannot both take the last release. The audit log gets a
        "released" event with the description in the same transaction. A differentially private
        release records its `spend` (epsilon, delta); `afford` sees what the input's earlier DP
        releases spent (`dp_spent`, all versions) and raises to refuse, in the same transaction.

        new: a session not recorded yet (a one-round session), recorded as "prepared" in the same
        transaction, before its release.
        done: the session ends with this release (its output share is all it sends, and that is
        ready): it is recorded as "done", having sent `done`, in the same transaction, after its
        release; as set_session_status would, one transaction later.
        durable=False: for a release the caller knows a recorded one implies (a repeat): committed
        without an fsync (StoreBase._writing). A release that `decide` counts, or any with a `spend`,
        is refused then (StoreError, nothing recorded): what the budget rests on is always on disk.
        Such a repeat of a query the version has released before, word for word, of a session that
        is `new` and ends with it (`done`), is deferred (`defer_repeat`, if the input is at that version
        still, as it is unless it was replaced during the session): decided against the
        version's distinct queries now (which it leaves as they are), and written with the next
        transaction, before any read but of inputs, of those queries, or of whether a session is known.

        Returns: the description. Raises: whatever `decide` or `afford` raise; StoreError for an unknown session.
        """
        if new is not None:
            new.check()
        if not durable and spend is not None:
            raise StoreError(f"session {session_id!r}: a differentially private release is always committed to disk")
        if not durable and new is not None and done is not None and afford is None and new.session_id == session_id:
            distinct = self.distinct_releases(input_name, version)
            if any(q == query for q, _ in distinct):
                counted, description = decide(distinct)
                _check_repeat(session_id, input_name, version, counted)
                if self.defer_repeat(RepeatRecords.of(new, input_name, version, query, description, done),
                                     session_id):
                    return description
        with self._writing(durable=durable) as conn:
            now = _now()
            recorded = self._recorded(conn, session_id, new, now)
            if afford is not None:
                afford(self._dp_spent(conn, input_name))
            counted, description = decide(self._distinct(conn, input_name, version))
            if not durable:
                _check_repeat(session_id, input_name, version, counted)
            self._write_release(conn, session_id, recorded, input_name, version, query, counted, description, spend,
                                now, done)
        return description

    def defer_repeat(self, records: RepeatRecords, session_id: str) -> bool:
        """Defer the records of a new session (`session_id`) whose release repeats a query the input
        version released before, word for word, and which ends with it: `records`' rows for it, written
        with the next transaction (StoreBase._defer), as record_release(new=..., durable=False, done=...)
        would write them (see RepeatRecords).

        Returns: whether it was deferred; False, recording nothing, unless the input is at the records'
        version now, the version released their query before, and the session is unknown (its records
        neither written nor deferred). One statement reads all three.
        Raises: StoreError if a full batch of deferred records cannot be written (nothing of this
        session is recorded).
        """
        with self._reading(deferred=False) as conn:
            current, known, released = conn.execute(REPEAT_CHECK, (records.input_name, session_id, records.input_name,
                                                                   records.version, records.query)).fetchone()
            if current != records.version or known or not released or session_id in self._deferred_ids:
                return False
            self._defer(session_id, records.rows(session_id, _now()))
            return True

    @staticmethod
    def _recorded(conn: sqlite3.Connection, session_id: str, new: NewSession | None, now: str) -> NewSession:
        """The session as recorded: `new` inserted now, unless it is there already (then as its row says).

        Raises: StoreError for a session that is neither new nor recorded.
        """
        if new is not None and SessionsMixin._insert_session(conn, new, now, if_absent=True):
            return new
        row = conn.execute("SELECT protocol, input_name, participants, coordinator FROM sessions "
                           "WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"no session {session_id!r} at this node")
        return NewSession(session_id, row[0], row[1], tuple(json.loads(row[2])), row[3])

    @staticmethod
    def _write_release(conn: sqlite3.Connection, session_id: str, recorded: NewSession, input_name: str,
                       version: int, query: str, counted: bool, description: str,
                       spend: tuple[Decimal, Decimal] | None, now: str, done: Sequence[Transfer] | None) -> None:
        """A decided release's rows, its audit entry and (done) the session's end, in the caller's transaction."""
        epsilon, delta = (None, None) if spend is None else (str(spend[0]), str(spend[1]))
        seq = conn.execute(RELEASE_INSERT, (now, session_id, input_name, version, query, int(counted), epsilon,
                                            delta)).lastrowid
        # A query seen before keeps its first row's `counted` (a repeat is never counted).
        conn.execute("INSERT INTO release_queries (input_name, version, query, counted, first_seq) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (input_name, version, query) DO NOTHING",
                     (input_name, version, query, int(counted), seq))
        SessionsMixin._append_audit(conn, now, "released", session_id, recorded.coordinator,
                                    _audit_protocol(recorded.protocol), [input_name], recorded.participants, (),
                                    description)
        if done is not None:
            SessionsMixin._set_status(conn, session_id, "done", "", done, now, recorded)


def _check_repeat(session_id: str, input_name: str, version: int, counted: bool) -> None:
    """Raises: StoreError if a release committed without an fsync (a repeat) counts after all."""
    if counted:
        raise StoreError(f"session {session_id!r}: its release of {input_name!r} v{version} counts against "
                         f"the budget, so it must be committed to disk; it was expected to be a repeat")
