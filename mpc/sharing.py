"""Additive secret sharing over Z_2^64 (PROTOCOLS.md §1).

x = x_1 + ... + x_n mod 2^64 with n - 1 shares uniform from a CSPRNG; any n - 1 shares are
uniform and independent of x.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mpc.prg import Rng, random_words
from mpc.ring import Words


def share(secret: Words, parties: int, rng: Rng) -> list[Words]:
    """Split a vector of ring words into `parties` additive shares.

    Returns: a list of uint64 arrays, each the shape of `secret`.
    Raises: ValueError if parties < 1.
    """
    if parties < 1:
        raise ValueError(f"need at least one party, got {parties}")
    secret = np.asarray(secret, dtype=np.uint64)
    shares = [random_words(rng, secret.size).reshape(secret.shape) for _ in range(parties - 1)]
    last = secret.copy()
    for s in shares:
        last -= s
    return [last, *shares]


def reconstruct(shares: Sequence[Words]) -> Words:
    """Add additive shares back together mod 2^64.

    Returns: the secret as a uint64 array.
    Raises: ValueError if there are no shares or their shapes differ.
    """
    if not shares:
        raise ValueError("no shares to reconstruct")
    total = np.array(shares[0], dtype=np.uint64, copy=True)
    for s in shares[1:]:
        if s.shape != total.shape:
            raise ValueError(f"share shapes differ: {total.shape} vs {s.shape}")
        total += s
    return total
