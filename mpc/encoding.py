"""Fixed-point encoding of private inputs into int64, and the overflow bound (PROTOCOLS.md §1).

encode(v) = round(v * 2^f) as int64, with f fractional bits (0 for exact integers, default 16
for reals); decode(w) = int64(w) / 2^f. A sum over n parties of values |w| <= (2^63 - 1) // n
cannot wrap, so that bound is checked before anything is shared.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from mpc.errors import InputError
# Decoding is pure Python (mpc/fixedpoint.py), re-exported here beside the encoding.
from mpc.fixedpoint import decode_ratio as decode_ratio
from mpc.fixedpoint import decode_value as decode_value
from mpc.ring import Signed

DEFAULT_FRAC_BITS = 16
MAX_FRAC_BITS = 32
INT64_MAX = (1 << 63) - 1
# Every input declares its bounds (public); this is the default, the int32 range, at any scale.
DEFAULT_BOUND = (1 << 31) - 1
# Ballots one node may hold: a public cap, so that no vote is ever refused on a secret count.
MAX_BALLOTS = 1 << 22
MAX_OPTIONS = 256               # options of a plurality vote: ballots are indices 0..MAX_OPTIONS-1
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
# At most 4 exponent digits: "1e999999999" would otherwise cost an enormous exact power of ten.
# The mantissa has one way to match only ("[0-9]+\.?[0-9]*" backtracks quadratically on long cells).
_MANTISSA = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_REAL = re.compile(_MANTISSA + r"([eE][+-]?[0-9]{1,4})?\Z")
_LONG_EXPONENT = re.compile(_MANTISSA + r"[eE][+-]?[0-9]{5,}\Z")  # a real but for its exponent's length


def _check_frac_bits(frac_bits: int) -> None:
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise InputError(f"fractional bits must be in 0..{MAX_FRAC_BITS}, got {frac_bits}")


def encode_texts(texts: Sequence[str], frac_bits: int | None = None,
                 where: Callable[[int], str] = lambda i: f"value {i + 1}") -> tuple[Signed, int]:
    """Parse decimal strings and encode them in fixed point.

    With frac_bits None, integers are kept exact (f = 0) and any real switches every value to
    the default f = 16. Reals are rounded to the nearest multiple of 2^-f (ties to even).

    Returns: (int64 array, frac_bits used).
    Raises: InputError naming the offending entry (via `where`) for an empty list, a
    non-number, NaN or infinity, or a value too large for int64 at that scale.
    """
    if len(texts) == 0:
        raise InputError("no values given: an input needs at least one value")
    stripped = [t.strip() for t in texts]
    all_integers = True
    for i, t in enumerate(stripped):
        if _INTEGER.match(t):
            continue
        all_integers = False
        if not _REAL.match(t):
            low = t.lower().lstrip("+-")
            if low in ("nan", "inf", "infinity"):
                raise InputError(f"{where(i)}: {t[:40]!r} is not a finite number")
            if _LONG_EXPONENT.match(t):
                raise InputError(f"{where(i)}: {t[:40]!r} has an exponent out of range (at most 4 digits)")
            raise InputError(f"{where(i)}: {t[:40]!r} is not a number")
    if frac_bits is None:
        frac_bits = 0 if all_integers else DEFAULT_FRAC_BITS
    _check_frac_bits(frac_bits)
    scale = 1 << frac_bits
    out = np.empty(len(stripped), dtype=np.int64)
    for i, t in enumerate(stripped):
        # Fraction parses decimal text exactly, so rounding happens once, at the 2^-f grid.
        try:
            w = int(t) * scale if _INTEGER.match(t) else round(Fraction(t) * scale)
        except ValueError:  # Python refuses integer strings beyond sys.get_int_max_str_digits()
            raise InputError(f"{where(i)}: {t[:40]!r} has too many digits") from None
        if not -INT64_MAX <= w <= INT64_MAX:
            raise InputError(f"{where(i)}: the value is too large to encode with {frac_bits} fractional bits "
                             f"(|value| must be below {INT64_MAX / scale:.6g})")
        out[i] = w
    return out, frac_bits


def encode_floats(values: Sequence[float] | np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> Signed:
    """Encode floats in fixed point (round to nearest, ties to even).

    Returns: an int64 array.
    Raises: InputError for NaN, infinity or a value beyond int64 at that scale.
    """
    _check_frac_bits(frac_bits)
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"value {int(np.argmin(np.isfinite(arr))) + 1} is not a finite number")
    scaled = np.rint(arr * float(1 << frac_bits))
    if scaled.size and np.max(np.abs(scaled)) >= 2.0**63:
        raise InputError(f"a value is too large to encode with {frac_bits} fractional bits")
    return scaled.astype(np.int64)


def rescale(values: Signed, from_bits: int, to_bits: int) -> Signed:
    """Move encoded values from from_bits to to_bits fractional bits (to_bits >= from_bits), exactly.

    Returns: a new int64 array.
    Raises: InputError if a value would no longer fit in int64.
    """
    _check_frac_bits(to_bits)
    if to_bits < from_bits:
        raise InputError(f"cannot reduce precision from {from_bits} to {to_bits} fractional bits")
    shift = to_bits - from_bits
    if shift == 0:
        return values.copy()
    limit = INT64_MAX >> shift
    if values.size and (int(values.max()) > limit or int(values.min()) < -limit):
        raise InputError(f"a value is too large to rescale to {to_bits} fractional bits")
    return values << np.int64(shift)


def default_bounds(frac_bits: int) -> tuple[int, int]:
    """The bounds an input gets when its owner declares none: +-DEFAULT_BOUND.

    Returns: (lo, hi) encoded at `frac_bits` fractional bits.
    """
    return -(DEFAULT_BOUND << frac_bits), DEFAULT_BOUND << frac_bits


def sum_bound(parties: int) -> int:
    """The largest |encoded value| each party may contribute so that a sum over `parties` cannot wrap.

    Returns: (2^63 - 1) // parties.
    """
    return INT64_MAX // max(parties, 1)


def check_sum_bound(values: Signed, parties: int, frac_bits: int, what: str) -> None:
    """Refuse values whose sum over `parties` contributions could overflow, before anything is shared.

    Raises: InputError naming `what` and the bound (never the offending value).
    """
    bound = sum_bound(parties)
    if values.size and (int(values.max()) > bound or int(values.min()) < -bound):
        raise InputError(f"{what} has a value too large for a sum over {parties} parties: each |value| must be "
                         f"at most {bound / (1 << frac_bits):.6g} with {frac_bits} fractional bits; nothing was shared")


def exact_local_sum(values: Signed, what: str) -> int:
    """Sum int64 values exactly (no wraparound) for a node's local aggregate.

    Returns: the sum as a Python int, guaranteed to fit in int64.
    Raises: InputError if the local sum leaves int64.
    """
    # numpy's int64 sum wraps silently: use it on a chunk only when the chunk cannot wrap,
    # and fall back to exact Python ints otherwise.
    total = 0
    for start in range(0, values.size, 1 << 20):
        chunk = values[start:start + (1 << 20)]
        hi = max(int(chunk.max()), -int(chunk.min())) if chunk.size else 0
        if hi * chunk.size <= INT64_MAX:
            total += int(chunk.sum(dtype=np.int64))
        else:
            total += sum(int(v) for v in chunk)
    if not -INT64_MAX <= total <= INT64_MAX:
        raise InputError(f"{what}: the sum of this node's records does not fit in 64 bits")
    return total


