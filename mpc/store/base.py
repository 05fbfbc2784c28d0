"""The store's file and connection: creating the file (0600), opening it, the WAL and durability
pragmas, the locked reader and the BEGIN IMMEDIATE writer, and bringing the schema up to date.

It stores nothing itself; mpc.store.inputs, .sessions and .releases each add the methods for
what they keep, and mpc.store.Store puts them together.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Self

from mpc.errors import StoreError
from mpc.store.schema import _MIGRATIONS, SCHEMA_VERSION

FILE_NAME = "node.sqlite3"
BUSY_TIMEOUT_MS = 5000
OPEN_ATTEMPTS = 5   # opening a store that another process is creating: 0.05 + 0.1 + 0.2 + 0.4 s of backoff
log = logging.getLogger("mpc.store")
DEFERRED_MAX = 64   # sessions whose records wait at most: the next one writes them all first


def _now() -> str:
    """Returns: the current UTC time as ISO-8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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


@contextmanager
def _transaction(conn: sqlite3.Connection, durable: bool) -> Iterator[sqlite3.Connection]:
    """One BEGIN IMMEDIATE transaction on conn, committed on success, rolled back on any exception;
    durable=False: committed without an fsync (synchronous=NORMAL for it alone)."""
    if not durable:
        conn.execute("PRAGMA synchronous = NORMAL")
    try:
        with conn:  # commits on success, rolls back on any exception
            conn.execute("BEGIN IMMEDIATE")
            yield conn
    finally:
        if not durable:
            conn.execute("PRAGMA synchronous = FULL")


class StoreBase:
    """The connection to a node's store file, with its lock; the base of mpc.store.Store."""

    def __init__(self, path: Path) -> None:
        """Open (creating if missing) the store at `path`. Raises: StoreError."""
        self.path = Path(path)
        self._lock = threading.Lock()
        # Rows deferred to the next transaction (`_defer`): (statement, parameters), oldest first,
        # and the sessions they record.
        self._deferred: list[tuple[str, tuple[object, ...]]] = []
        self._deferred_ids: set[str] = set()
        self._deferred_failed = False   # the last write of the deferred rows failed: defer nothing more
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
            for attempt in range(OPEN_ATTEMPTS):
                try:
                    self._configure()
                    self._migrate()
                    break
                except StoreError as exc:
                    # Two processes creating the same new store at once (two `mpc input put`s) can
                    # find it locked while the other switches it to WAL, without SQLite's busy
                    # wait: try again a few times, backing off, then give up with the error.
                    if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05 * 2 ** attempt)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_dir(cls, data_dir: Path) -> Self:
        """Returns: the store `node.sqlite3` in the node's data directory. Raises: StoreError."""
        return cls(Path(data_dir) / FILE_NAME)

    def close(self) -> None:
        """Write what is deferred and close the connection; later calls raise StoreError. Closing
        twice is harmless.

        Raises: StoreError if the deferred records cannot be written (the store is closed all the same).
        """
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if self._deferred:
                    self._write_deferred(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(self.path)!r}: closed without {len(self._deferred)} deferred "
                                 f"records: {exc}") from exc
            finally:
                conn.close()

    def __enter__(self) -> Self:
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
    def _reading(self, *, deferred: bool = True) -> Iterator[sqlite3.Connection]:
        """Yield the connection under the lock, the deferred records written first (deferred=False:
        not, for a read of what they never touch). Raises: StoreError if closed or SQLite fails."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the store {str(self.path)!r} is closed")
            try:
                if deferred and self._deferred:
                    self._write_deferred(self._conn)
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(self.path)!r}: {exc}") from exc

    @contextmanager
    def _writing(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Yield the connection inside one BEGIN IMMEDIATE transaction, committed on success (after
        the deferred records, in a transaction of their own).

        durable=False commits without fsync (WAL + synchronous=NORMAL): still atomic and safe
        against kill -9, only a power cut may lose the last such commits. Session bookkeeping
        uses it so that a session does not wait on the disk; inputs always use FULL.
        """
        with self._reading() as conn, _transaction(conn, durable):
            yield conn

    # -- deferred records -----------------------------------------------------------------------

    @property
    def deferred(self) -> int:
        """How many sessions' records wait to be written (`_defer`)."""
        return len(self._deferred_ids)

    def _erase_log(self, what: str) -> None:
        """After deleting or replacing private values (an input, revoked submissions): copy the write-ahead
        log into the database and cut it to zero bytes (a TRUNCATE checkpoint), waiting for other
        connections' reads as the busy timeout allows. secure_delete zeroes the pages a deletion frees in
        the database file, but the WAL keeps the frames that wrote the old values (a long-lived node never
        closes its connection, and a checkpoint alone reuses the log without shrinking it), where anyone
        who can read the data directory, or a backup of it, would find them.

        If another connection kept the log busy past the busy timeout, a warning says that the old values
        may stay in it until the log is cut or written over.
        """
        with self._reading(deferred=False) as conn:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("store %s: after %s, another connection kept its write-ahead log busy: the old values may "
                        "stay in %s-wal until a later change of this kind cuts it, or writes over them (%s of %s "
                        "frames copied); stop the node and run the command again to be sure", self.path, what,
                        self.path.name, done, frames)

    def write_deferred(self) -> None:
        """Write the deferred rows now, in one transaction. Raises: StoreError (they still wait)."""
        with self._reading():
            pass

    def _defer(self, session_id: str, rows: Sequence[tuple[str, tuple[object, ...]]]) -> None:
        """Keep a session's rows (INSERT statements and their parameters) in memory until the next
        transaction: written then, with the others deferred, before anything else is written or
        read (except by a read that says it needs none of them, `_reading(deferred=False)`); each
        table's rows in the order deferred. A session that finds DEFERRED_MAX waiting writes them
        first. Only for records that no decision of this store rests on: a kill -9 or a power cut
        loses those not written yet (`close` writes them). Called with the lock held.

        Raises: StoreError if a full batch cannot be written, or the last write of the rows waiting
        failed and this one does too (a full disk: no session may go on without its records on disk):
        this session's rows are not kept (its caller records nothing), the batch still waits.
        """
        if (len(self._deferred_ids) >= DEFERRED_MAX or self._deferred_failed) and self._conn is not None:
            try:
                self._write_deferred(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(self.path)!r}: {exc}") from exc
        self._deferred.extend(rows)
        self._deferred_ids.add(session_id)

    def _write_deferred(self, conn: sqlite3.Connection) -> None:
        """Write the deferred rows in one transaction without an fsync, one executemany per statement
        (so a table's rows keep their order); on failure they still wait (the error is raised).
        Called with the lock held."""
        batches: dict[str, list[tuple[object, ...]]] = {}
        for statement, parameters in self._deferred:
            batches.setdefault(statement, []).append(parameters)
        self._deferred_failed = True   # until the transaction below has committed
        with _transaction(conn, durable=False):
            for statement, rows in batches.items():
                conn.executemany(statement, rows)
        self._deferred_failed = False
        self._deferred.clear()
        self._deferred_ids.clear()

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
            # Deleted or replaced inputs are overwritten with zeros, not left in free pages (and the write-ahead
            # log that wrote them is cut to nothing after such a change: `_erase_log`).
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
