"""Private inputs: the tables `inputs` (the values, as little-endian int64 BLOBs),
`input_meta` (what each input declares in public: its version, kind and bounds) and
`set_members` (the identifiers of a set input, DESIGN.md §14).

The values and identifiers never appear in a repr or an error message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpc.config import COUNTS_HIDDEN as COUNTS_HIDDEN
from mpc.config import INPUT_NAME
from mpc.config import KINDS as KINDS
from mpc.encoding import MAX_BALLOTS, MAX_OPTIONS, default_bounds
from mpc.errors import InputError, StoreError
from mpc.store.base import StoreBase, _now

MAX_FRAC_BITS = 32

_BLOB_DTYPE = np.dtype("<i8")
MAX_SET_SIZE = 1_000_000                 # identifiers in one set input: a public, declared limit
MAX_IDENTIFIER_BYTES = 256               # bytes of one identifier (after normalisation)


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
    kind: str = "number"                       # one of KINDS
    bounds: tuple[int, int] | None = None      # declared [lo, hi], encoded; None: undeclared
    tally: tuple[int, ...] = ()                # ballots: the count per option 0..hi (private, like the values)

    def __repr__(self) -> str:
        """Returns: the metadata only; the values are never shown."""
        return (
            f"StoredInput(name={self.name!r}, length={len(self.values)}, "
            f"frac_bits={self.frac_bits}, <values redacted>)"
        )


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class StoredSet:
    """A set input as stored: its distinct identifiers, in the stored order, and their associated values."""

    name: str
    version: int
    identifiers: tuple[bytes, ...]
    values: np.ndarray                 # int64, read-only, one per identifier (all 0 when has_values is false)
    has_values: bool
    bounds: tuple[int, int]            # the declared [lo, hi] of the values

    def __repr__(self) -> str:
        """Returns: the metadata only; the identifiers and values are never shown."""
        return (f"StoredSet(name={self.name!r}, version={self.version}, size={len(self.identifiers)}, "
                f"has_values={self.has_values}, <identifiers and values redacted>)")


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
    has_values: bool = False           # a set: whether it has associated values (else they are all 0)


def _check_name(name: object) -> str:
    """Returns: `name` if it is a valid input name. Raises: InputError naming it otherwise."""
    if not isinstance(name, str) or INPUT_NAME.match(name) is None:
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
                  kind: str) -> tuple[int, int]:
    """Returns: the (lo, hi) to declare. Raises: InputError naming the first value outside them (by position)."""
    counted = kind in ("ballots", "options")
    if kind == "ballots":
        if frac_bits != 0 or (bounds is not None and tuple(bounds) != (0, 1)):
            raise InputError(f"input {name!r}: ballots are the integers 0 and 1 (no other bounds or scale; option "
                             f"indices for a plurality vote are stored with --options K)")
        bounds = (0, 1)
    if kind == "options":
        if frac_bits != 0 or bounds is None or int(bounds[0]) != 0 or not 1 <= int(bounds[1]) < MAX_OPTIONS:
            raise InputError(f"input {name!r}: options are ballots 0..K-1 for K from 2 to {MAX_OPTIONS} "
                             f"(--options K); no other bounds or scale")
    if counted and data.size > MAX_BALLOTS:
        raise InputError(f"input {name!r}: at most {MAX_BALLOTS} ballots per node, got {data.size}")
    if kind == "bids" and frac_bits != 0:
        raise InputError(f"input {name!r}: bids are integers (no fractional bits)")
    lo, hi = default_bounds(frac_bits) if bounds is None else (int(bounds[0]), int(bounds[1]))
    if lo > hi:
        raise InputError(f"input {name!r}: the lower bound is above the upper bound")
    outside = np.flatnonzero((data < lo) | (data > hi))
    if outside.size:
        what = f"is not a ballot ({lo}..{hi})" if counted else "lies outside the declared bounds"
        hint = "" if counted or bounds is not None else " (the default, +-2147483647: declare wider ones with --bounds)"
        raise InputError(f"input {name!r}: value {int(outside[0]) + 1} {what}{hint}; nothing was stored")
    if kind == "curve":
        rises = np.flatnonzero(np.diff(data) > 0)
        if rises.size:
            i = int(rises[0])
            raise InputError(f"input {name!r}: value {i + 2} is above value {i + 1}; a net-demand curve never "
                             f"increases with the price (demand positive, supply negative); nothing was stored")
    return lo, hi


def _check_identifiers(name: str, identifiers: object) -> tuple[bytes, ...]:
    """Returns: the identifiers as a tuple.

    Raises: InputError naming the input and the 1-based position (never the identifier) for an empty
    set, more than MAX_SET_SIZE identifiers, one that is not bytes, empty or longer than
    MAX_IDENTIFIER_BYTES, or two that are equal (naming both positions).
    """
    if isinstance(identifiers, (bytes, bytearray, memoryview, str)) or not isinstance(identifiers, Sequence):
        raise InputError(f"input {name!r}: the identifiers must be a sequence of bytes, got "
                         f"{type(identifiers).__name__}")
    ids = tuple(identifiers)
    if not ids:
        raise InputError(f"input {name!r}: the set is empty (a set needs at least one identifier)")
    if len(ids) > MAX_SET_SIZE:
        raise InputError(f"input {name!r}: at most {MAX_SET_SIZE} identifiers per set, got {len(ids)}")
    first: dict[bytes, int] = {}
    for i, identifier in enumerate(ids, 1):
        if not isinstance(identifier, bytes):
            raise InputError(f"input {name!r}: identifier {i} is not bytes (got {type(identifier).__name__})")
        if not identifier:
            raise InputError(f"input {name!r}: identifier {i} is empty")
        if len(identifier) > MAX_IDENTIFIER_BYTES:
            raise InputError(f"input {name!r}: identifier {i} is longer than {MAX_IDENTIFIER_BYTES} bytes")
        seen = first.setdefault(identifier, i)
        if seen != i:
            raise InputError(f"input {name!r}: identifiers {seen} and {i} are equal (a set's identifiers are "
                             f"distinct: merge or drop duplicates before storing it)")
    return ids


def _pack(identifiers: Sequence[bytes]) -> bytes:
    """Returns: the identifiers, each as a 2-byte little-endian length and its bytes, in order."""
    return b"".join(len(x).to_bytes(2, "little") + x for x in identifiers)


def _unpack(name: str, blob: object, size: int) -> tuple[bytes, ...]:
    """Returns: the `size` identifiers packed in `blob`. Raises: StoreError if it is not such a packing."""
    if not isinstance(blob, bytes):
        raise StoreError(f"input {name!r} is damaged in the store: its identifiers are not a blob")
    out: list[bytes] = []
    pos, end = 0, len(blob)
    while pos < end:
        length = blob[pos] | (blob[pos + 1] << 8) if pos + 2 <= end else 0
        if not 1 <= length <= MAX_IDENTIFIER_BYTES or pos + 2 + length > end:
            raise StoreError(f"input {name!r} is damaged in the store: identifier {len(out) + 1} is malformed")
        out.append(blob[pos + 2:pos + 2 + length])
        pos += 2 + length
    if len(out) != size:
        raise StoreError(f"input {name!r} is damaged in the store: {len(out)} identifiers for a set of {size}")
    return tuple(out)


class InputsMixin(StoreBase):
    """The store's private inputs: put, get, declare, list and delete."""

    def put_input(self, name: str, values: np.ndarray, frac_bits: int, is_scalar: bool, *,
                  overwrite: bool = False, bounds: tuple[int, int] | None = None, ballots: bool = False,
                  kind: str = "number") -> int:
        """Store a private input, with its public declaration, in one transaction.

        Args:
            bounds: the declared [lo, hi], encoded at `frac_bits` (default: DEFAULT_BOUND at that
                scale; ballots are always [0, 1]). Every value must lie within them.
            ballots: the values are 0/1 ballots (the same as kind="ballots").
            kind: what the input is (KINDS): "options" need bounds (0, K-1); only the protocol made for
                a kind may use it unless the node's policy says otherwise; the number of ballots or
                options is never shown; a "curve" never increases.
        Returns: the new version of the input (versions of a name are never reused).
        Raises: InputError if malformed or a value lies outside the bounds (naming its position,
        never the value); StoreError if the name exists and `overwrite` is false.
        """
        name = _check_name(name)
        if ballots and kind not in ("number", "ballots"):
            raise InputError(f"input {name!r}: ballots or {kind}, not both")
        kind = "ballots" if ballots else kind
        if kind not in KINDS:
            raise InputError(f"input {name!r}: unknown kind {kind[:20]!r}; known: {', '.join(KINDS)}")
        if kind == "set":
            raise InputError(f"input {name!r}: a set is stored with put_set (`mpc input put-set`), with its "
                             f"identifiers")
        data, frac = _check_input(name, values, frac_bits, is_scalar)
        lo, hi = _check_bounds(name, data, frac, bounds, kind)
        return self._write(name, data, frac, bool(is_scalar), kind, lo, hi, overwrite=overwrite)

    def put_set(self, name: str, identifiers: Sequence[bytes], values: np.ndarray | None = None, *,
                bounds: tuple[int, int] | None = None, overwrite: bool = False) -> int:
        """Store a set input (DESIGN.md §14): distinct identifiers, each with an associated integer value.

        The values are stored as the input's int64 values (all 0 without `values`), so that its length
        (the set's size, which is public), bounds and version are those of any input; the identifiers
        are stored beside them in the same transaction, in the order given. The identifiers must
        already be normalised and distinct (mpc.inputs.read_set_csv does both).

        Args:
            values: one int64 per identifier, or None for a set without values.
            bounds: the declared [lo, hi] of the values (default +-2147483647); none without values.
        Returns: the new version of the input (versions of a name are never reused).
        Raises: InputError naming the input and the 1-based position, never an identifier or a
        value: an empty set, more than MAX_SET_SIZE identifiers, an empty identifier, one longer than
        MAX_IDENTIFIER_BYTES, two equal ones (both positions), a number of values other than the number
        of identifiers, a value outside the bounds, bounds without values; StoreError if the name exists
        and `overwrite` is false.
        """
        name = _check_name(name)
        ids = _check_identifiers(name, identifiers)
        if values is None:
            if bounds is not None:
                raise InputError(f"input {name!r}: a set without values takes no bounds (they declare its values)")
            data = np.zeros(len(ids), dtype=_BLOB_DTYPE)
        else:
            if isinstance(values, np.ndarray) and values.ndim == 1 and values.size != len(ids):
                raise InputError(f"input {name!r}: {values.size} values for {len(ids)} identifiers (one value "
                                 f"per identifier)")
            data, _ = _check_input(name, values, 0, False)
        lo, hi = _check_bounds(name, data, 0, bounds, "set")
        return self._write(name, data, 0, False, "set", lo, hi, overwrite=overwrite,
                           members=(values is not None, _pack(ids)))

    def _write(self, name: str, data: np.ndarray, frac: int, is_scalar: bool, kind: str, lo: int, hi: int, *,
               overwrite: bool, members: tuple[bool, bytes] | None = None) -> int:
        """Write a checked input, its declaration and (a set's) identifiers in one transaction.

        Args:
            members: a set's (has_values, packed identifiers); None for any other kind, whose name then
                keeps no identifiers.
        Returns: the new version. Raises: StoreError if the name exists and `overwrite` is false.
        """
        now = _now()
        row = (name, int(data.size), frac, int(is_scalar), now, now, np.ascontiguousarray(data).data.cast("B"))
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
            if conn.execute("SELECT 1 FROM collections WHERE name = ?", (name,)).fetchone() is not None:
                raise StoreError(f"{name!r} names a collection at this node; an input needs another name")
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
            yes = int(np.count_nonzero(data)) if kind == "ballots" else None
            tally = json.dumps(np.bincount(data, minlength=hi + 1).tolist()) if kind in ("ballots", "options") else None
            conn.execute(
                "INSERT INTO input_meta (name, version, kind, lo, hi, yes, tally) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version, kind = excluded.kind, "
                "lo = excluded.lo, hi = excluded.hi, yes = excluded.yes, tally = excluded.tally",
                (name, version, kind, lo, hi, yes, tally))
            if members is None:
                conn.execute("DELETE FROM set_members WHERE name = ?", (name,))
            else:
                conn.execute("INSERT OR REPLACE INTO set_members (name, size, has_values, identifiers) "
                             "VALUES (?, ?, ?, ?)", (name, int(data.size), int(members[0]), members[1]))
        if exists is not None:   # the old values are gone from the database file: from its log too
            self._erase_log(f"replacing input {name!r}")
        return version

    def get_set(self, name: str) -> StoredSet:
        """Returns: the stored set, its identifiers in the stored order and its values (read-only).

        Raises: StoreError if there is no such input (or it is damaged); InputError if it is not a set.
        """
        with self._reading(deferred=False) as conn:
            row = conn.execute(
                "SELECT i.length, m.version, m.kind, m.lo, m.hi, s.size, s.has_values, i.data, s.identifiers "
                "FROM inputs i JOIN input_meta m USING (name) LEFT JOIN set_members s USING (name) "
                "WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no input named {_shown(name)} at this node")
        length, version, kind, lo, hi, size, has_values, blob, packed = row
        if kind != "set":
            raise InputError(f"input {name!r} is not a set (it holds {kind}); store one with `mpc input put-set`")
        if size is None or int(size) != int(length) or lo is None or hi is None:
            raise StoreError(f"input {name!r} is damaged in the store: its set declaration is missing")
        if not isinstance(blob, bytes) or len(blob) != 8 * int(length):
            raise StoreError(f"input {name!r} is damaged in the store: wrong blob length")
        identifiers = _unpack(name, packed, int(size))
        values = np.frombuffer(blob, dtype=_BLOB_DTYPE).astype(np.int64, copy=False)
        values.setflags(write=False)
        return StoredSet(name, int(version), identifiers, values, bool(has_values), (int(lo), int(hi)))

    def get_input(self, name: str) -> StoredInput:
        """Returns: the stored input (values read-only). Raises: StoreError if there is none."""
        with self._reading(deferred=False) as conn:
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

        Returns: (the input with no values (for ballots with their tally per option), yes ballots
        (0 for a number input), length).
        Raises: StoreError if there is none.
        """
        with self._reading(deferred=False) as conn:
            row = conn.execute(
                "SELECT i.length, i.frac_bits, i.is_scalar, i.created_at, i.updated_at, m.version, m.kind, "
                "m.lo, m.hi, m.yes, m.tally FROM inputs i JOIN input_meta m USING (name) WHERE name = ?",
                (name,)).fetchone()
        if row is None:
            raise StoreError(f"no input named {_shown(name)} at this node")
        length, frac_bits, is_scalar, created_at, updated_at, version, kind, lo, hi, yes, tally = row
        counts: tuple[int, ...] = ()
        if tally is not None:
            counts = tuple(int(c) for c in json.loads(str(tally)))
        elif kind == "ballots":   # 0/1 ballots stored before the tally per option was kept
            counts = (int(length) - int(yes), int(yes))
        declared = StoredInput(name, np.empty(0, dtype=np.int64), int(frac_bits), bool(is_scalar), str(created_at),
                               str(updated_at), int(version), str(kind), _bounds(lo, hi), counts)
        return declared, 0 if yes is None else int(yes), int(length)

    def list_inputs(self) -> list[InputInfo]:
        """Returns: every input's metadata, sorted by name; the values and identifiers are not read."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT i.name, i.length, i.frac_bits, i.is_scalar, i.updated_at, m.version, m.kind, m.lo, m.hi, "
                "s.has_values FROM inputs i JOIN input_meta m USING (name) LEFT JOIN set_members s USING (name) "
                "ORDER BY name"
            ).fetchall()
        return [
            InputInfo(name=str(n), length=int(ln), frac_bits=int(f), is_scalar=bool(s),
                      updated_at=str(u), version=int(v), kind=str(k), bounds=_bounds(lo, hi),
                      has_values=bool(hv))
            for n, ln, f, s, u, v, k, lo, hi, hv in rows
        ]

    def delete_input(self, name: str) -> None:
        """Delete an input, and a set's identifiers with it (their pages are zeroed, the log erased).

        Raises: StoreError if there is none.
        """
        with self._writing() as conn:
            deleted = conn.execute("DELETE FROM inputs WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM set_members WHERE name = ?", (name,))
        if deleted == 0:
            raise StoreError(f"no input named {name!r} at this node")
        self._erase_log(f"deleting input {name!r}")
