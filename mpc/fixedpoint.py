"""Fixed-point words decoded to numbers in pure Python (mpc/encoding.py encodes them, with numpy).

Apart from mpc/encoding.py so that what only shows results and status (the coordinator's
`status`, the CLI) starts without importing numpy.
"""

from __future__ import annotations

import math
from fractions import Fraction


def decode_value(w: int, frac_bits: int) -> int | float:
    """Decode one signed fixed-point integer.

    Returns: an int when frac_bits is 0 (exact), else the nearest float.
    """
    if frac_bits == 0:
        return w
    return float(Fraction(w, 1 << frac_bits))


def decode_ratio(total: int, count: int, frac_bits: int) -> float:
    """Decode total / (count * 2^f) with a single rounding, for averages.

    Returns: the nearest float, or NaN when count is 0.
    """
    if count == 0:
        return math.nan
    return float(Fraction(total, count << frac_bits))
