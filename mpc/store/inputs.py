"""Private inputs: the tables `inputs` (the values, as little-endian int64 BLOBs) and
`input_meta` (what each input declares in public: its version, kind and bounds).

The values never appear in a repr or an error message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from mpc.config import INPUT_NAME
from mpc.encoding import MAX_BALLOTS, MAX_OPTIONS, default_bounds
from mpc.errors import InputError, StoreError
from mpc.store.base import StoreBase, _now

MAX_FRAC_BITS = 32

_BLOB_DTYPE = np.dtype("<i8")
# What an input declares it is. Each kind but "number" is made for one protocol, which alone may use
# it unless the owner's policy names it for another (`allow`): ballots (0/1) for a yes/no vote,
# options (indices 0..K-1) for a plurality vote, a net-demand curve for a clearing price, bids for
# an auction. A vote's and a plurality's count is never shown; a curve never increases.
KINDS = ("number", "ballots", "options", "curve", "bids")
COUNTS_HIDDEN = ("ballots", "options")   # kinds whose number of values is shown nowhere


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
        data, frac = _check_input(name, values, frac_bits, is_scalar)
        lo, hi = _check_bounds(name, data, frac, bounds, kind)
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

        Returns: (the input with no values (for ballots with their tally per option), yes ballots
        (0 for a number input), length).
        Raises: StoreError if there is none.
        """
        with self._reading() as conn:
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
