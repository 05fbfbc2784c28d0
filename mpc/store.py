"""The node's local SQLite store: its owner's private inputs and its session records (DESIGN §6).

One file per node, opened by the daemon and, at the same time, by `mpc input put` in another
process on the same machine. WAL mode lets the two read and write side by side; every write is
one `BEGIN IMMEDIATE` transaction, so a `kill -9` leaves either the old or the new row.
Inputs are stored as little-endian int64 BLOBs and never appear in a repr or an error message.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mpc.encoding import MAX_BALLOTS, default_bounds
from mpc.errors import InputError, StoreError

SESSION_STATES = ("prepared", "running", "done", "failed", "aborted", "interrupted")
TERMINAL_STATES = frozenset({"done", "failed", "aborted", "interrupted"})

FILE_NAME = "node.sqlite3"
MAX_FRAC_BITS = 32
BUSY_TIMEOUT_MS = 5000
RESTART_REASON = "node restarted during the session"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)
_BLOB_DTYPE = np.dtype("<i8")

# _MIGRATIONS[v] takes the schema from user_version v to v + 1. Append, never edit.
# The BLOB column comes last so that list_inputs() never touches its overflow pages.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE inputs (
            name TEXT PRIMARY KEY, length INTEGER NOT NULL CHECK (length >= 1),
            frac_bits INTEGER NOT NULL CHECK (frac_bits BETWEEN 0 AND 32),
            is_scalar INTEGER NOT NULL CHECK (is_scalar IN (0, 1)),
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            data BLOB NOT NULL CHECK (length(data) = 8 * length))""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY, protocol TEXT NOT NULL, input_name TEXT NOT NULL,
            participants TEXT NOT NULL, coordinator TEXT NOT NULL, status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX sessions_by_created ON sessions (created_at)",
        "CREATE INDEX sessions_by_status ON sessions (status)",
    ),
    (
        # The audit log: one row per event of a session that touched this node's inputs (its
        # prepare, its end, or its refusal). Sizes and kinds of what left the node, never values.
        # Rows are only ever appended: the triggers refuse UPDATE and DELETE.
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('prepared', 'refused', 'done', 'failed', 'aborted',
                                                 'interrupted')),
            session_id TEXT NOT NULL, coordinator TEXT NOT NULL, protocol TEXT NOT NULL,
            inputs TEXT NOT NULL, participants TEXT NOT NULL,
            sent TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX audit_by_session ON audit (session_id)",
        "CREATE INDEX audit_by_time ON audit (at)",
        """CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ),
)
AUDIT_EVENTS = ("prepared", "refused", "released", "done", "failed", "aborted", "interrupted")
_AUDIT_TABLE = """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('prepared', 'refused', 'released', 'done', 'failed',
                                                 'aborted', 'interrupted')),
            session_id TEXT NOT NULL, coordinator TEXT NOT NULL, protocol TEXT NOT NULL,
            inputs TEXT NOT NULL, participants TEXT NOT NULL,
            sent TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '')"""
_APPEND_ONLY = tuple(
    f"""CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table}
            BEGIN SELECT RAISE(ABORT, 'the {what} is append-only'); END"""
    for table, what in (("audit", "audit log"), ("releases", "release log")) for op in ("UPDATE", "DELETE"))
_MIGRATIONS += (
    (
        # What each stored input declares in public: its version (never reused for a name, even
        # after `input rm`), its kind, and its bounds (encoded at its own scale; NULL for an input
        # stored by an older mpc, which must be stored again with bounds before it is used).
        # A separate table, so that reading it never touches an input's BLOB overflow pages.
        """CREATE TABLE input_meta (
            name TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
            kind TEXT NOT NULL CHECK (kind IN ('number', 'ballots')), lo INTEGER, hi INTEGER,
            yes INTEGER CHECK ((kind = 'ballots') = (yes IS NOT NULL)),
            CHECK ((lo IS NULL) = (hi IS NULL) AND (lo IS NULL OR lo <= hi)))""",
        "INSERT INTO input_meta (name, version, kind, lo, hi, yes) SELECT name, 1, 'number', NULL, NULL, NULL "
        "FROM inputs",
        # The releases each input version took part in (DESIGN.md §9); append-only, like the audit log.
        """CREATE TABLE releases (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, session_id TEXT NOT NULL,
            input_name TEXT NOT NULL, version INTEGER NOT NULL, query TEXT NOT NULL,
            counted INTEGER NOT NULL CHECK (counted IN (0, 1)))""",
        "CREATE INDEX releases_by_input ON releases (input_name, version)",
        # The audit log learns the event "released": rebuilt with the wider CHECK, rows kept.
        _AUDIT_TABLE.replace("CREATE TABLE audit", "CREATE TABLE audit_v3"),
        "INSERT INTO audit_v3 SELECT * FROM audit",
        "DROP TABLE audit",
        "ALTER TABLE audit_v3 RENAME TO audit",
        "CREATE INDEX audit_by_session ON audit (session_id)",
        "CREATE INDEX audit_by_time ON audit (at)",
        *_APPEND_ONLY,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SESSION_COLUMNS = (
    "session_id, protocol, input_name, participants, coordinator, status, reason, "
    "created_at, updated_at"
)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class StoredInput:
    """A private input as stored: fixed-point encoded int64 values and their metadata."""

    name: str
    values: np.ndarray
    frac_bits: int
    is_scalar: bool
    created_at: str
    updated_at: str
    version: int = 1
    kind: str = "number"                       # "number" or "ballots"
    bounds: tuple[int, int] | None = None      # declared [lo, hi], encoded; None: undeclared

    def __repr__(self) -> str:
        """Returns: the metadata only; the values are never shown."""
        return (
            f"StoredInput(name={self.name!r}, length={len(self.values)}, "
            f"frac_bits={self.frac_bits}, <values redacted>)"
        )


@dataclass(frozen=True, slots=True)
class InputInfo:
    """An input's metadata, without its values."""

    name: str
    length: int
    frac_bits: int
    is_scalar: bool
    updated_at: str
    version: int = 1
    kind: str = "number"
    bounds: tuple[int, int] | None = None


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


def _audit_protocol(aggregate: str) -> str:
    """The protocol name the audit log shows for a session's aggregate ("average-records" -> "average")."""
    return aggregate.split("-")[0]


def _now() -> str:
    """Returns: the current UTC time as ISO-8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _check_name(name: object) -> str:
    """Returns: `name` if it is a valid input name. Raises: InputError naming it otherwise."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InputError(
            f"input name {name!r} is not valid: use 1 to 128 ASCII letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return name


def _check_input(
    name: str, values: object, frac_bits: object, is_scalar: object
) -> tuple[np.ndarray, int]:
    """Returns: (values as contiguous little-endian int64, frac_bits). Raises: InputError."""
    if not isinstance(values, np.ndarray):
        raise InputError(f"input {name!r} must be a numpy array, got {type(values).__name__}")
    if values.dtype.kind != "i" or values.dtype.itemsize != 8 or values.ndim != 1:
        raise InputError(
            f"input {name!r} must be a 1-D int64 array, got {values.dtype} of shape {values.shape}"
        )
    if values.size == 0:
        raise InputError(f"input {name!r} is empty")
    if not isinstance(is_scalar, bool):
        raise InputError(f"input {name!r}: is_scalar must be a bool, got {is_scalar!r}")
    if is_scalar and values.size != 1:
        raise InputError(f"input {name!r} is marked scalar but has {values.size} values")
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
        raise InputError(f"input {name!r}: frac_bits must be an int, got {frac_bits!r}")
    if not 0 <= int(frac_bits) <= MAX_FRAC_BITS:
        raise InputError(
            f"input {name!r}: frac_bits must be in 0..{MAX_FRAC_BITS}, got {int(frac_bits)}"
        )
    return np.ascontiguousarray(values, dtype=_BLOB_DTYPE), int(frac_bits)


def _bounds(lo: object, hi: object) -> tuple[int, int] | None:
    return None if lo is None or hi is None else (int(lo), int(hi))  # type: ignore[call-overload]


def _shown(text: str, limit: int = 60) -> str:
    """A caller-supplied name as an error message may quote it: repr'd and cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _check_bounds(name: str, data: np.ndarray, frac_bits: int, bounds: tuple[int, int] | None,
                  ballots: bool) -> tuple[int, int]:
    """Returns: the (lo, hi) to declare. Raises: InputError naming the first value outside them (by position)."""
    if ballots:
        if frac_bits != 0 or (bounds is not None and bounds != (0, 1)):
            raise InputError(f"input {name!r}: ballots are the integers 0 and 1 (no other bounds or scale)")
        if data.size > MAX_BALLOTS:
            raise InputError(f"input {name!r}: at most {MAX_BALLOTS} ballots per node, got {data.size}")
        bounds = (0, 1)
    lo, hi = default_bounds(frac_bits) if bounds is None else (int(bounds[0]), int(bounds[1]))
    if lo > hi:
        raise InputError(f"input {name!r}: the lower bound is above the upper bound")
    outside = np.flatnonzero((data < lo) | (data > hi))
    if outside.size:
        what = "is not a ballot (0 or 1)" if ballots else "lies outside the declared bounds"
        hint = "" if ballots or bounds is not None else " (the default, +-2147483647: declare wider ones with --bounds)"
        raise InputError(f"input {name!r}: value {int(outside[0]) + 1} {what}{hint}; nothing was stored")
    return lo, hi


def _check_text(what: str, value: object, *, allow_empty: bool = False) -> str:
    """Returns: `value` if it is a (non-empty) str. Raises: StoreError otherwise."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise StoreError(f"session {what} must be a {'' if allow_empty else 'non-empty '}string, "
                         f"got {value!r}")
    return value


def _session_from_row(row: tuple[object, ...]) -> SessionRecord:
    """Returns: the SessionRecord for a row selected with _SESSION_COLUMNS."""
    text = [str(value) for value in row]
    return SessionRecord(*text[:3], tuple(json.loads(text[3])), *text[4:])


def _create_private_file(path: Path) -> None:
    """Create `path` with mode 0600 (and its parent with 0700) if missing. Raises: StoreError."""
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the store {str(path)!r}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    """A node's SQLite store; safe to share between threads, and between processes via the file."""

    def __init__(self, path: Path) -> None:
        """Open (creating if missing) the store at `path`. Raises: StoreError."""
        self.path = Path(path)
        self._lock = threading.Lock()
        _create_private_file(self.path)
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the
            # write lock up front and waits on busy_timeout instead of failing on upgrade.
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {str(self.path)!r}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_dir(cls, data_dir: Path) -> Store:
        """Returns: the store `node.sqlite3` in the node's data directory. Raises: StoreError."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        """Returns: this store, closed again when the `with` block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    def __repr__(self) -> str:
        """Returns: the store's path."""
        return f"Store({str(self.path)!r})"

    # -- connection plumbing ------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection under the lock. Raises: StoreError if closed or SQLite fails."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the store {str(self.path)!r} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(self.path)!r}: {exc}") from exc

    @contextmanager
    def _writing(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Yield the connection inside one BEGIN IMMEDIATE transaction, committed on success.

        durable=False commits without fsync (WAL + synchronous=NORMAL): still atomic and safe
        against kill -9, only a power cut may lose the last such commits. Session bookkeeping
        uses it so that a session does not wait on the disk; inputs always use FULL.
        """
        with self._reading() as conn:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with conn:  # commits on success, rolls back on any exception
                    conn.execute("BEGIN IMMEDIATE")
                    yield conn
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")

    def _configure(self) -> None:
        """Set WAL, busy timeout and durability pragmas. Raises: StoreError."""
        with self._reading() as conn:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"store {str(self.path)!r}: cannot use WAL mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            # FULL: a commit is on disk when put_input returns, even across a power cut.
            conn.execute("PRAGMA synchronous = FULL")
            # Deleted or replaced inputs are overwritten with zeros, not left in free pages.
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA trusted_schema = OFF")

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION. Raises: StoreError if the file is newer than us."""
        with self._writing() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {str(self.path)!r} has schema version {version}, but this mpc "
                    f"knows only up to {SCHEMA_VERSION}; upgrade mpc"
                )
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- inputs -------------------------------------------------------------------------------

    def put_input(self, name: str, values: np.ndarray, frac_bits: int, is_scalar: bool, *,
                  overwrite: bool = False, bounds: tuple[int, int] | None = None, ballots: bool = False) -> int:
        """Store a private input, with its public declaration, in one transaction.

        Args:
            bounds: the declared [lo, hi], encoded at `frac_bits` (default: DEFAULT_BOUND at that
                scale; ballots are always [0, 1]). Every value must lie within them.
            ballots: the values are ballots (0 or 1, integers); only a vote may use them unless
                the node's policy says otherwise, and their number is never shown.
        Returns: the new version of the input (versions of a name are never reused).
        Raises: InputError if malformed or a value lies outside the bounds (naming its position,
        never the value); StoreError if the name exists and `overwrite` is false.
        """
        name = _check_name(name)
        data, frac = _check_input(name, values, frac_bits, is_scalar)
        lo, hi = _check_bounds(name, data, frac, bounds, ballots)
        now = _now()
        row = (name, int(data.size), frac, int(is_scalar), now, now, memoryview(data).cast("B"))
        sql = (
            "INSERT INTO inputs (name, length, frac_bits, is_scalar, created_at, updated_at, "
            "data) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        if overwrite:  # an update keeps created_at
            sql += (
                " ON CONFLICT (name) DO UPDATE SET length = excluded.length, frac_bits = "
                "excluded.frac_bits, is_scalar = excluded.is_scalar, updated_at = "
                "excluded.updated_at, data = excluded.data"
            )
        with self._writing() as conn:
            exists = conn.execute("SELECT 1 FROM inputs WHERE name = ?", (name,)).fetchone()
            if exists is not None and not overwrite:
                raise StoreError(
                    f"input {name!r} already exists at this node; pass --overwrite to replace it"
                )
            conn.execute(sql, row)
            last = conn.execute("SELECT version FROM input_meta WHERE name = ?", (name,)).fetchone()
            version = 1 if last is None else int(last[0]) + 1
            # A ballot input's tally is kept beside it, so that a vote never reads (or takes time
            # proportional to) the ballots themselves: how long it takes says nothing of their number.
            yes = int(np.count_nonzero(data)) if ballots else None
            conn.execute(
                "INSERT INTO input_meta (name, version, kind, lo, hi, yes) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version, kind = excluded.kind, "
                "lo = excluded.lo, hi = excluded.hi, yes = excluded.yes",
                (name, version, "ballots" if ballots else "number", lo, hi, yes))
        return version

    def get_input(self, name: str) -> StoredInput:
        """Returns: the stored input (values read-only). Raises: StoreError if there is none."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT i.length, i.frac_bits, i.is_scalar, i.created_at, i.updated_at, m.version, m.kind, "
                "m.lo, m.hi, i.data FROM inputs i JOIN input_meta m USING (name) WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise StoreError(f"no input named {_shown(name)} at this node")
        length, frac_bits, is_scalar, created_at, updated_at, version, kind, lo, hi, blob = row
        if not isinstance(blob, bytes) or len(blob) != 8 * int(length):
            raise StoreError(f"input {name!r} is damaged in the store: wrong blob length")
        # One zero-copy view of the blob; astype is a no-op on little-endian hosts.
        values = np.frombuffer(blob, dtype=_BLOB_DTYPE).astype(np.int64, copy=False)
        return StoredInput(name, values, int(frac_bits), bool(is_scalar), str(created_at),
                           str(updated_at), int(version), str(kind), _bounds(lo, hi))

    def get_declared(self, name: str) -> tuple[StoredInput, int, int]:
        """An input's declaration, its length, and for ballots their tally, without reading its values
        (so that how long it takes does not depend on how many there are).

        Returns: (the input with no values, yes ballots (0 for a number input), length).
        Raises: StoreError if there is none.
        """
        with self._reading() as conn:
            row = conn.execute(
                "SELECT i.length, i.frac_bits, i.is_scalar, i.created_at, i.updated_at, m.version, m.kind, "
                "m.lo, m.hi, m.yes FROM inputs i JOIN input_meta m USING (name) WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no input named {_shown(name)} at this node")
        length, frac_bits, is_scalar, created_at, updated_at, version, kind, lo, hi, yes = row
        declared = StoredInput(name, np.empty(0, dtype=np.int64), int(frac_bits), bool(is_scalar), str(created_at),
                               str(updated_at), int(version), str(kind), _bounds(lo, hi))
        return declared, 0 if yes is None else int(yes), int(length)

    def list_inputs(self) -> list[InputInfo]:
        """Returns: every input's metadata, sorted by name; the values are not read."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT i.name, i.length, i.frac_bits, i.is_scalar, i.updated_at, m.version, m.kind, m.lo, m.hi "
                "FROM inputs i JOIN input_meta m USING (name) ORDER BY name"
            ).fetchall()
        return [
            InputInfo(name=str(n), length=int(ln), frac_bits=int(f), is_scalar=bool(s),
                      updated_at=str(u), version=int(v), kind=str(k), bounds=_bounds(lo, hi))
            for n, ln, f, s, u, v, k, lo, hi in rows
        ]

    def delete_input(self, name: str) -> None:
        """Delete an input (its pages are zeroed). Raises: StoreError if there is none."""
        with self._writing() as conn:
            deleted = conn.execute("DELETE FROM inputs WHERE name = ?", (name,)).rowcount
        if deleted == 0:
            raise StoreError(f"no input named {name!r} at this node")

    # -- sessions -----------------------------------------------------------------------------

    def record_session(self, session_id: str, protocol: str, input_name: str,
                       participants: Sequence[str], coordinator: str) -> None:
        """Record a new session as "prepared". Raises: StoreError if the id is known already."""
        _check_text("id", session_id)
        _check_text("protocol", protocol)
        _check_text("input name", input_name)
        _check_text("coordinator", coordinator)
        if isinstance(participants, (str, bytes)) or not participants:
            raise StoreError(f"session {session_id!r}: participants must be a non-empty list")
        parties = [_check_text("participant", p) for p in participants]
        now = _now()
        with self._writing(durable=False) as conn:
            known = conn.execute(
                "SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if known is not None:
                raise StoreError(
                    f"session {session_id!r} is already known at this node (replayed session id)"
                )
            conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, protocol, input_name, json.dumps(parties), coordinator,
                 "prepared", "", now, now),
            )
            # The audit row goes in the same transaction: no session without its entry.
            self._append_audit(conn, now, "prepared", session_id, coordinator, _audit_protocol(protocol),
                               [input_name], parties, (), "")

    def set_session_status(self, session_id: str, status: str, reason: str = "",
                           sent: Sequence[Transfer] = ()) -> None:
        """Move a session to `status`; when it ends, append its audit entry (with what the node
        `sent`) in the same transaction. Raises: StoreError if the status is unknown, the
        session is unknown, or it has already ended."""
        if status not in SESSION_STATES:
            raise StoreError(
                f"session {session_id!r}: unknown status {status!r}; expected one of "
                f"{', '.join(SESSION_STATES)}"
            )
        _check_text("reason", reason, allow_empty=True)
        terminal = tuple(sorted(TERMINAL_STATES))
        marks = ", ".join("?" * len(terminal))
        now = _now()
        with self._writing(durable=False) as conn:
            # One conditional UPDATE, so a concurrent writer cannot slip in between check and set.
            changed = conn.execute(
                f"UPDATE sessions SET status = ?, reason = ?, updated_at = ? "
                f"WHERE session_id = ? AND status NOT IN ({marks})",
                (status, reason, now, session_id, *terminal),
            ).rowcount
            if changed:
                if status in TERMINAL_STATES:
                    protocol, input_name, participants, coordinator = conn.execute(
                        "SELECT protocol, input_name, participants, coordinator FROM sessions "
                        "WHERE session_id = ?", (session_id,)).fetchone()
                    self._append_audit(conn, now, status, session_id, coordinator, _audit_protocol(protocol),
                                       [input_name], json.loads(participants), sent, reason)
                return
            row = conn.execute(
                "SELECT status FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"no session {session_id!r} at this node")
        raise StoreError(
            f"session {session_id!r} has already ended ({row[0]}); cannot set it to {status!r}"
        )

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
        if event not in AUDIT_EVENTS:
            raise StoreError(f"unknown audit event {event!r}; expected one of {', '.join(AUDIT_EVENTS)}")
        conn.execute(
            "INSERT INTO audit (at, event, session_id, coordinator, protocol, inputs, participants, sent, "
            "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, event, str(session_id)[:64], str(coordinator)[:256], str(protocol)[:32],
             json.dumps([str(i)[:128] for i in inputs]), json.dumps([str(p)[:128] for p in participants]),
             json.dumps([t.as_dict() for t in sent]), str(reason)[:1000]),
        )

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

    # -- releases -----------------------------------------------------------------------------

    def releases(self, input_name: str, version: int | None = None) -> list[ReleaseRecord]:
        """The releases of one input (one version of it, or all), oldest first."""
        return self._releases(None, input_name, version)

    def _releases(self, conn: sqlite3.Connection | None, input_name: str, version: int | None) -> list[ReleaseRecord]:
        sql = "SELECT seq, at, session_id, input_name, version, query, counted FROM releases WHERE input_name = ?"
        args: tuple[object, ...] = (input_name,)
        if version is not None:
            sql, args = sql + " AND version = ?", (input_name, version)
        if conn is None:
            with self._reading() as reader:
                rows = reader.execute(sql + " ORDER BY seq", args).fetchall()
        else:
            rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
        return [ReleaseRecord(int(q), str(a), str(sid), str(n), int(v), str(j), bool(c))
                for q, a, sid, n, v, j, c in rows]

    def record_release(self, session_id: str, input_name: str, version: int, query: str,
                       decide: Callable[[list[ReleaseRecord]], tuple[bool, str]]) -> str:
        """Count a session's release against an input version's budget, atomically.

        `decide` sees the version's earlier releases and returns (counted, description), or
        raises (PolicyError) to refuse; the check and the insert share one transaction, so two
        sessions cannot both take the last release. The audit log gets a "released" event with
        the description in the same transaction.

        Returns: the description. Raises: whatever `decide` raises; StoreError for an unknown session.
        """
        with self._writing() as conn:
            row = conn.execute("SELECT protocol, participants, coordinator FROM sessions WHERE session_id = ?",
                               (session_id,)).fetchone()
            if row is None:
                raise StoreError(f"no session {session_id!r} at this node")
            counted, description = decide(self._releases(conn, input_name, version))
            now = _now()
            conn.execute("INSERT INTO releases (at, session_id, input_name, version, query, counted) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (now, session_id, input_name, version, query, int(counted)))
            protocol, participants, coordinator = row
            self._append_audit(conn, now, "released", session_id, coordinator, _audit_protocol(protocol),
                               [input_name], json.loads(participants), (), description)
        return description

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
