"""The ring Z_2^64 on numpy uint64 words (DESIGN.md §3).

Addition, subtraction and multiplication of uint64 arrays wrap modulo 2^64 natively, so the
ring needs no code of its own beyond conversions: signed values live in two's complement and
reducing words mod 2^ell keeps a sharing of x mod 2^ell (PROTOCOLS.md §5).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RING_BITS = 64
WORD = np.dtype("<u8")
Words = npt.NDArray[np.uint64]
Signed = npt.NDArray[np.int64]


def from_signed(values: Signed) -> Words:
    """Reinterpret int64 values as ring words (two's complement).

    Returns: a uint64 view of the same memory.
    """
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)


def to_signed(words: Words) -> Signed:
    """Reinterpret ring words as signed int64 values (two's complement).

    Returns: an int64 view of the same memory.
    """
    return np.ascontiguousarray(words, dtype=np.uint64).view(np.int64)


def reduce_bits(words: Words, ell: int) -> Words:
    """Reduce words mod 2^ell (1 <= ell <= 64): a sharing mod 2^64 becomes a sharing mod 2^ell.

    Returns: a new array.
    Raises: ValueError if ell is out of range.
    """
    if not 1 <= ell <= RING_BITS:
        raise ValueError(f"ell must be in 1..64, got {ell}")
    if ell == RING_BITS:
        return words.copy()
    return words & np.uint64((1 << ell) - 1)


def words_to_bytes(words: Words) -> bytes:
    """Serialise words as fixed-width little-endian bytes (never pickle).

    Returns: 8 * len(words) bytes.
    """
    return np.ascontiguousarray(words, dtype=WORD).tobytes()


def words_from_bytes(data: bytes | bytearray | memoryview, expected_words: int | None = None) -> Words:
    """Parse little-endian uint64 words, refusing a length that is not a whole number of words.

    Returns: a read-only uint64 array over `data`.
    Raises: ValueError naming the byte length when it is wrong or differs from expected_words.
    """
    size = len(data)
    if size % 8:
        raise ValueError(f"{size} bytes is not a whole number of 8-byte words")
    if expected_words is not None and size != 8 * expected_words:
        raise ValueError(f"expected {expected_words} words ({8 * expected_words} bytes), got {size} bytes")
    return np.frombuffer(data, dtype=WORD).astype(np.uint64, copy=False)
