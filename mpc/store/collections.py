"""Collections: the tables `collections` (each one's public spec), `revoked` (the credentials its
owner revoked) and `submissions` (one share per credential, DESIGN.md §12).

Contributors who run no node submit additive shares of their values to a few nodes; a node keeps,
per collection, each credential's share with the submission's nonce. A share is uniformly random
on its own. Shares, nonces and full credential ids never appear in a repr or an error message:
a credential is named by the first 8 hex digits of its id.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from mpc.config import INPUT_NAME, NODE_NAME
from mpc.encoding import MAX_OPTIONS
from mpc.errors import AuthError, InputError, MpcError, PolicyError, StoreError, quoted
from mpc.store.base import StoreBase, _now

COLLECTION_KINDS = ("ballot", "range", "option")
RESUBMIT_RULES = ("refuse", "replace")
MAX_LENGTH = 4096              # words per submission
BOUND_LIMIT = 2**62            # -BOUND_LIMIT < lo <= hi < BOUND_LIMIT
CREDENTIAL_BYTES = 16
NONCE_BYTES = 16
OWNER_KEY_BYTES = 32

_WORD = np.dtype("<u8")
_CHUNK = 500                   # parameters of one `IN (...)` lookup, well under SQLite's limit


def _short(credential: bytes) -> str:
    """Returns: how a message names a credential: the first 8 hex digits of its id, never all of it."""
    return credential[:4].hex()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """A collection's public spec: what each submission holds and the rule for a second one.

    kind "ballot" is a 0/1 value (lo=0, hi=1), "range" an integer in lo..hi, "option" one of
    `length` options, submitted one-hot (`length` words of 0 or 1 adding up to 1; lo=0, hi=1);
    `length` words per submission; a session needs at least `min_batch` submissions; `resubmit` says whether a second
    submission under one credential is refused or replaces the first; `owner_key` is the owner's
    32-byte public key that verifies the collection's credentials; `nodes` are the nodes that hold
    its shares, sorted: contributors split over exactly them, and a session must take all of them
    (over fewer, an excluded node that colludes with the coordinator would learn about values).
    """

    name: str
    kind: str
    lo: int
    hi: int
    length: int
    min_batch: int
    resubmit: str
    owner_key: bytes
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Raises: InputError naming the first bad field and the collection."""
        name = self.name
        if not isinstance(name, str) or INPUT_NAME.match(name) is None:
            shown = quoted(name, 60) if isinstance(name, str) else type(name).__name__
            raise InputError(f"collection name {shown} is not valid: use 1 to 128 ASCII letters, digits, '_', "
                             "'.' or '-', starting with a letter or digit")
        where = f"collection {name!r}"
        if not isinstance(self.kind, str) or self.kind not in COLLECTION_KINDS:
            shown = quoted(self.kind, 20) if isinstance(self.kind, str) else type(self.kind).__name__
            raise InputError(f"{where}: kind {shown} is not one of {', '.join(COLLECTION_KINDS)}")
        for field in ("lo", "hi", "length", "min_batch"):
            if not _is_int(getattr(self, field)):
                raise InputError(f"{where}: {field} must be an int, got {type(getattr(self, field)).__name__}")
        if self.kind in ("ballot", "option") and (self.lo, self.hi) != (0, 1):
            raise InputError(f"{where}: a{'n' if self.kind == 'option' else ''} {self.kind} collection has lo=0 and "
                             f"hi=1, got lo={self.lo} and hi={self.hi}")
        if self.kind == "option" and not 2 <= self.length <= MAX_OPTIONS:
            raise InputError(f"{where}: an option collection has 2 to {MAX_OPTIONS} options (its length), got "
                             f"{self.length}")
        if not -BOUND_LIMIT < self.lo < BOUND_LIMIT:
            raise InputError(f"{where}: lo must lie strictly between -2**62 and 2**62, got {self.lo}")
        if not -BOUND_LIMIT < self.hi < BOUND_LIMIT:
            raise InputError(f"{where}: hi must lie strictly between -2**62 and 2**62, got {self.hi}")
        if self.lo > self.hi:
            raise InputError(f"{where}: lo ({self.lo}) is above hi ({self.hi})")
        if not 1 <= self.length <= MAX_LENGTH:
            raise InputError(f"{where}: length must be 1 to {MAX_LENGTH} words, got {self.length}")
        if self.min_batch < 1:
            raise InputError(f"{where}: min_batch must be at least 1, got {self.min_batch}")
        if not isinstance(self.resubmit, str) or self.resubmit not in RESUBMIT_RULES:
            shown = quoted(self.resubmit, 20) if isinstance(self.resubmit, str) else type(self.resubmit).__name__
            raise InputError(f"{where}: resubmit {shown} is not one of {', '.join(RESUBMIT_RULES)}")
        if not isinstance(self.owner_key, bytes) or len(self.owner_key) != OWNER_KEY_BYTES:
            got = f"{len(self.owner_key)} bytes" if isinstance(self.owner_key, bytes) else type(self.owner_key).__name__
            raise InputError(f"{where}: owner_key must be {OWNER_KEY_BYTES} bytes, got {got}")
        nodes = self.nodes
        if not isinstance(nodes, tuple) or not all(isinstance(n, str) and NODE_NAME.match(n) for n in nodes) \
                or list(nodes) != sorted(set(nodes)) or len(nodes) == 1:
            raise InputError(f"{where}: nodes must be at least two distinct node names, sorted, got "
                             f"{quoted(str(nodes), 120)}")

    def describe(self) -> dict[str, object]:
        """Returns: the public spec as a JSON-able dict, owner_key as hex (what session digests bind)."""
        return {"name": self.name, "kind": self.kind, "lo": self.lo, "hi": self.hi, "length": self.length,
                "min_batch": self.min_batch, "resubmit": self.resubmit, "owner_key": self.owner_key.hex(),
                "nodes": list(self.nodes)}


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection's spec and how many submissions this node stores for it."""

    spec: CollectionSpec
    submissions: int
    closed: bool = False


@dataclass(frozen=True, slots=True)
class SubmissionOutcome:
    """What became of one accepted submission: stored (also for an idempotent retry), and whether it
    overwrote an earlier submission under the same credential."""

    stored: bool
    replaced: bool


_SPEC_COLUMNS = "name, kind, lo, hi, length, min_batch, resubmit, nodes, owner_key"


def _spec(row: Sequence[Any]) -> CollectionSpec:
    name, kind, lo, hi, length, min_batch, resubmit, nodes, owner_key = row
    return CollectionSpec(str(name), str(kind), int(lo), int(hi), int(length), int(min_batch), str(resubmit),
                          bytes(owner_key), tuple(str(nodes).split(",")) if nodes else ())


def _well_formed(entry: object) -> TypeGuard[tuple[bytes, bytes, bytes]]:
    """Returns: whether a batch entry is three bytes objects (their sizes are checked later)."""
    return (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], bytes)
            and isinstance(entry[1], bytes) and isinstance(entry[2], bytes))


def _chunks(items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _lookup(conn: sqlite3.Connection, sql: str, name: str, credentials: Sequence[bytes]) -> list[Any]:
    """Returns: the rows of `sql` (ending in `credential IN `) for `credentials`, looked up in chunks."""
    rows: list[Any] = []
    for chunk in _chunks(credentials):
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(f"{sql}({marks})", (name, *chunk)).fetchall())
    return rows


class CollectionsMixin(StoreBase):
    """The store's collections: their specs, revoked credentials and the contributors' shares."""

    def create_collection(self, spec: CollectionSpec) -> bool:
        """Create a collection at this node.

        Returns: True if created; False if one of that name exists with the identical spec (idempotent).
        Raises: InputError if one of that name exists with another spec (naming the fields that differ).
        """
        if not isinstance(spec, CollectionSpec):
            raise InputError(f"a collection needs a CollectionSpec, got {type(spec).__name__}")
        with self._writing() as conn:
            row = conn.execute(f"SELECT {_SPEC_COLUMNS} FROM collections WHERE name = ?", (spec.name,)).fetchone()
            if row is None and conn.execute("SELECT 1 FROM inputs WHERE name = ?", (spec.name,)).fetchone():
                raise InputError(f"{spec.name!r} names an input at this node; a collection needs another name")
            if row is None:
                conn.execute(f"INSERT INTO collections ({_SPEC_COLUMNS}, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (spec.name, spec.kind, spec.lo, spec.hi, spec.length, spec.min_batch, spec.resubmit,
                              ",".join(spec.nodes), spec.owner_key, _now()))
                return True
        existing = _spec(row)
        if existing == spec:
            return False
        differ = [f.name for f in fields(CollectionSpec) if getattr(existing, f.name) != getattr(spec, f.name)]
        raise InputError(f"collection {spec.name!r} exists at this node with another spec (it differs in "
                         f"{', '.join(differ)})")

    def get_collection(self, name: str) -> CollectionSpec:
        """Returns: the collection's spec. Raises: InputError if there is none at this node."""
        with self._reading() as conn:
            return self._collection(conn, name)

    @staticmethod
    def _collection(conn: sqlite3.Connection, name: str) -> CollectionSpec:
        row = conn.execute(f"SELECT {_SPEC_COLUMNS} FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            shown = quoted(name, 60) if isinstance(name, str) else type(name).__name__
            raise InputError(f"no collection {shown} at this node")
        return _spec(row)

    def list_collections(self) -> list[CollectionInfo]:
        """Returns: every collection's spec and count of stored submissions, sorted by name."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_SPEC_COLUMNS}, (SELECT count(*) FROM submissions s WHERE s.collection = c.name), "
                "EXISTS (SELECT 1 FROM closed_collections k WHERE k.name = c.name) "
                "FROM collections c ORDER BY name").fetchall()
        return [CollectionInfo(_spec(row[:-2]), int(row[-2]), bool(row[-1])) for row in rows]

    def close_collection(self, name: str) -> bool:
        """Close a collection: from now on it takes no submission and no revocation, and sessions may
        run over it (mpc/protocols/collection.py).

        Returns: True if it was open until now.
        Raises: InputError for an unknown collection.
        """
        with self._writing() as conn:
            self._collection(conn, name)
            return conn.execute("INSERT OR IGNORE INTO closed_collections (name, closed_at) VALUES (?, ?)",
                                (name, _now())).rowcount == 1

    def is_closed(self, name: str) -> bool:
        """Returns: whether the collection is closed (False for an unknown one)."""
        with self._reading() as conn:
            return conn.execute("SELECT 1 FROM closed_collections WHERE name = ?", (name,)).fetchone() is not None

    @staticmethod
    def _open(conn: sqlite3.Connection, name: str, what: str) -> CollectionSpec:
        spec = CollectionsMixin._collection(conn, name)
        if conn.execute("SELECT 1 FROM closed_collections WHERE name = ?", (name,)).fetchone() is not None:
            raise PolicyError(f"collection {name!r} is closed: it takes no {what}")
        return spec

    def revoke(self, name: str, credential_ids: Sequence[bytes]) -> int:
        """Revoke credentials of a collection, deleting their stored submissions (their pages are zeroed, the
        log erased) in the same transaction; later submissions under them are refused.

        Returns: how many of them were not revoked before.
        Raises: InputError for an unknown collection or an id that is not 16 bytes (nothing is revoked).
        """
        ids = list(credential_ids)
        for i, cid in enumerate(ids, 1):
            if not isinstance(cid, bytes) or len(cid) != CREDENTIAL_BYTES:
                raise InputError(f"collection {name!r}: credential id {i} of {len(ids)} is not {CREDENTIAL_BYTES} "
                                 "bytes; nothing was revoked")
        with self._writing() as conn:
            self._open(conn, name, "revocation (its submissions are fixed)")
            newly = conn.executemany("INSERT OR IGNORE INTO revoked (collection, credential) VALUES (?, ?)",
                                     [(name, cid) for cid in ids]).rowcount
            conn.executemany("DELETE FROM submissions WHERE collection = ? AND credential = ?",
                             [(name, cid) for cid in ids])
        self._erase_log(f"revoking credentials of collection {name!r}")
        return int(newly)

    def is_revoked(self, name: str, credential_id: bytes) -> bool:
        """Returns: whether the credential is revoked in the collection (False for an unknown one)."""
        with self._reading() as conn:
            row = conn.execute("SELECT 1 FROM revoked WHERE collection = ? AND credential = ?",
                               (name, credential_id)).fetchone()
        return row is not None

    def put_submissions(self, name: str,
                        batch: Sequence[tuple[bytes, bytes, bytes]]) -> list[SubmissionOutcome | MpcError]:
        """Store a batch of submissions (credential id, nonce, share) in one write transaction.

        Each entry is checked in order, and a refused one does not stop the others: a revoked
        credential (AuthError); a share other than the collection's 8 * length bytes, or an id or nonce
        other than 16 bytes (InputError); the same nonce as the stored submission is an idempotent
        retry, stored without change (InputError if its share differs: a retry resends the same
        share); a new nonce when one is stored is refused under the rule "refuse" (PolicyError) and
        replaces it under "replace". An id twice in one batch: the second is a resubmission.

        Returns: per entry, in order, a SubmissionOutcome or the error that refused it.
        Raises: InputError for an unknown collection or a batch that is not a sequence; StoreError.
        """
        if not isinstance(batch, Sequence) or isinstance(batch, (bytes, str)):
            raise InputError(f"collection {name!r}: a batch is a sequence of (credential, nonce, share)")
        with self._writing() as conn:
            spec = self._open(conn, name, "submission")
            size = 8 * spec.length
            good = [e for e in batch if _well_formed(e)]
            ids = list({e[0] for e in good if len(e[0]) == CREDENTIAL_BYTES})
            revoked = {bytes(c) for (c,) in _lookup(
                conn, "SELECT credential FROM revoked WHERE collection = ? AND credential IN ", name, ids)}
            stored = {bytes(c): bytes(n) for c, n in _lookup(
                conn, "SELECT credential, nonce FROM submissions WHERE collection = ? AND credential IN ", name, ids)}
            # Only a retry (the stored nonce again) needs the stored share, to check that it is the same.
            retried = list({e[0] for e in good if stored.get(e[0]) == e[1]})
            earlier = {bytes(c): bytes(s) for c, s in _lookup(
                conn, "SELECT credential, share FROM submissions WHERE collection = ? AND credential IN ", name, retried)}
            writes: dict[bytes, tuple[bytes, bytes]] = {}
            outcomes = [self._decide(spec, size, i, entry, revoked, stored, earlier, writes)
                        for i, entry in enumerate(batch, 1)]
            now = _now()
            conn.executemany(
                "INSERT INTO submissions (collection, credential, nonce, received_at, share) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (collection, credential) DO UPDATE SET nonce = excluded.nonce, "
                "received_at = excluded.received_at, share = excluded.share",
                ((name, cid, nonce, now, share) for cid, (nonce, share) in writes.items()))
        return outcomes

    @staticmethod
    def _decide(spec: CollectionSpec, size: int, i: int, entry: object, revoked: set[bytes],
                stored: dict[bytes, bytes], earlier: dict[bytes, bytes],
                writes: dict[bytes, tuple[bytes, bytes]]) -> SubmissionOutcome | MpcError:
        """One entry's outcome against what is stored and what this batch wrote before it (`writes`,
        updated here). Returns: its SubmissionOutcome, or the error that refuses it."""
        where = f"collection {spec.name!r}"
        if not _well_formed(entry):
            return InputError(f"{where}: entry {i} of the batch is not (credential id, nonce, share) as bytes")
        cid, nonce, share = entry
        if cid in revoked:
            return AuthError(f"credential {_short(cid)} of {where} is revoked")
        if len(share) != size:
            return InputError(f"{where}: entry {i} of the batch (credential {_short(cid)}) has a share of "
                              f"{len(share)} bytes; expected {size} ({spec.length} words of 8 bytes)")
        if len(cid) != CREDENTIAL_BYTES or len(nonce) != NONCE_BYTES:
            return InputError(f"{where}: entry {i} of the batch has a credential id of {len(cid)} bytes and a nonce "
                              f"of {len(nonce)} bytes; expected {CREDENTIAL_BYTES} and {NONCE_BYTES}")
        now = writes.get(cid)
        current = stored.get(cid) if now is None else now[0]
        if current is None:
            writes[cid] = (nonce, share)
            return SubmissionOutcome(stored=True, replaced=False)
        if current == nonce:
            # A retry after a lost reply resends the very same submission: not refused, not changed.
            kept = earlier[cid] if now is None else now[1]
            if hmac.compare_digest(kept, share):
                return SubmissionOutcome(stored=True, replaced=False)
            return InputError(f"credential {_short(cid)} of {where}: the stored submission's nonce with another "
                              "share (a retry resends the same share; a new submission has a new nonce)")
        if spec.resubmit == "refuse":
            return PolicyError(f"credential {_short(cid)} already submitted to {where}; its rule is refuse")
        writes[cid] = (nonce, share)
        return SubmissionOutcome(stored=True, replaced=True)

    def submission_count(self, name: str) -> int:
        """Returns: how many submissions this node stores for the collection. Raises: InputError if unknown."""
        with self._reading() as conn:
            self._collection(conn, name)
            return int(conn.execute("SELECT count(*) FROM submissions WHERE collection = ?", (name,)).fetchone()[0])

    def submission_keys(self, name: str) -> list[tuple[bytes, bytes]]:
        """Returns: the (credential id, nonce) of every stored submission, sorted by credential id (the
        shares are not read). Raises: InputError for an unknown collection."""
        with self._reading() as conn:
            self._collection(conn, name)
            rows = conn.execute("SELECT credential, nonce FROM submissions WHERE collection = ? ORDER BY credential",
                                (name,)).fetchall()
        return [(bytes(c), bytes(n)) for c, n in rows]

    def submission_shares(self, name: str, keys: Sequence[tuple[bytes, bytes]]) -> npt.NDArray[np.uint64]:
        """The shares of exactly these submissions, in this order.

        Returns: a read-only uint64 array of shape (len(keys), length), row i the share stored for keys[i].
        Raises: InputError for an unknown collection, or a key that is missing, has another nonce here,
        or appears twice.
        """
        wanted = list(keys)
        for i, key in enumerate(wanted, 1):
            if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], bytes)
                    and isinstance(key[1], bytes)):
                raise InputError(f"collection {name!r}: key {i} is not (credential id, nonce) as bytes")
        with self._reading() as conn:
            spec = self._collection(conn, name)
            sql = "SELECT credential, nonce, share FROM submissions WHERE collection = ?"
            count = int(conn.execute("SELECT count(*) FROM submissions WHERE collection = ?", (name,)).fetchone()[0])
            if 4 * len(wanted) >= count:   # most of the collection: one scan beats a lookup per key
                rows = conn.execute(sql, (name,)).fetchall()
            else:
                rows = _lookup(conn, sql + " AND credential IN ", name, [k[0] for k in wanted])
        found: dict[bytes, tuple[bytes, bytes, bytes]] = {row[0]: row for row in rows}
        size = 8 * spec.length
        shares: list[bytes] = []
        for cid, nonce in wanted:
            got = found.pop(cid, None)   # popped: a key given twice finds nothing the second time
            if got is None or got[1] != nonce:
                if got is None and any(cid == c for c, _ in wanted[:len(shares)]):
                    raise InputError(f"credential {_short(cid)} appears twice in the keys of collection {name!r}")
                what = "no submission" if got is None else "a submission with another nonce"
                raise InputError(f"collection {name!r}: credential {_short(cid)} has {what} at this node")
            if len(got[2]) != size:
                raise StoreError(f"collection {name!r} is damaged in the store: a share is not {size} bytes")
            shares.append(got[2])
        # One zero-copy view of the joined shares; astype is a no-op on little-endian hosts.
        words = np.frombuffer(b"".join(shares), dtype=_WORD).astype(np.uint64, copy=False)
        return words.reshape(len(shares), spec.length)
