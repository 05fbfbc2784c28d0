"""The node's local SQLite store: its owner's private inputs and its session records (DESIGN §6).

One file per node, opened by the daemon and, at the same time, by `mpc input put` in another
process on the same machine. WAL mode lets the two read and write side by side; every write is
one `BEGIN IMMEDIATE` transaction, so a `kill -9` leaves either the old or the new row.
Inputs are stored as little-endian int64 BLOBs (a set's identifiers beside them), contributors'
shares in collections as little-endian uint64 BLOBs; neither appears in a repr or an error message.

The store is a package, one module per thing it stores: `schema` (the migrations), `base` (the
file, the connection and its transactions), `inputs`, `sessions` (with the audit log),
`releases` and `collections` (contributors' submissions, their specs and revoked credentials).
`Store` puts them together; import everything from `mpc.store`.
"""

from __future__ import annotations

from mpc.store.base import BUSY_TIMEOUT_MS, FILE_NAME, StoreBase
from mpc.store.collections import CollectionInfo, CollectionsMixin, CollectionSpec, SubmissionOutcome
from mpc.store.inputs import (
    COUNTS_HIDDEN,
    KINDS,
    MAX_FRAC_BITS,
    MAX_IDENTIFIER_BYTES,
    MAX_SET_SIZE,
    InputInfo,
    InputsMixin,
    StoredInput,
    StoredSet,
)
from mpc.store.releases import ReleaseRecord, ReleasesMixin, RepeatRecords
from mpc.store.schema import _MIGRATIONS as _MIGRATIONS
from mpc.store.schema import AUDIT_EVENTS, SCHEMA_VERSION
from mpc.store.sessions import (
    RESTART_REASON,
    SESSION_STATES,
    TERMINAL_STATES,
    AuditEntry,
    NewSession,
    SessionRecord,
    SessionsMixin,
    Transfer,
)

__all__ = [
    "NewSession",
    "AUDIT_EVENTS",
    "BUSY_TIMEOUT_MS",
    "FILE_NAME",
    "MAX_FRAC_BITS",
    "MAX_IDENTIFIER_BYTES",
    "MAX_SET_SIZE",
    "RESTART_REASON",
    "SCHEMA_VERSION",
    "SESSION_STATES",
    "TERMINAL_STATES",
    "AuditEntry",
    "CollectionInfo",
    "CollectionSpec",
    "COUNTS_HIDDEN",
    "InputInfo",
    "KINDS",
    "ReleaseRecord",
    "RepeatRecords",
    "SessionRecord",
    "Store",
    "StoredInput",
    "StoredSet",
    "SubmissionOutcome",
    "Transfer",
]


class Store(InputsMixin, SessionsMixin, ReleasesMixin, CollectionsMixin, StoreBase):
    """A node's SQLite store; safe to share between threads, and between processes via the file."""
