"""Binomial noise made inside MPC and added to shares before anything is opened (PROTOCOLS.md §10).

Each of the m coins of a noised word is the XOR of one CSPRNG bit from every node: a daBit
(Rotaru & Wood, INDOCRYPT 2019; mpc/ot/arith.py) holds it both as XOR shares and as additive
shares mod 2^64, and only the additive side is used here. The sum of m such shares is an additive
sharing of N ~ Binomial(m, 1/2) as soon as one node drew its bits honestly; one party subtracts the
public m/2. No coin is ever opened, so the program has no round of its own: its cost is the daBits'
preprocessing ((n − 1)^2 correlated OTs and correction words per coin, in n − 1 folds). The output shares then leave
for the coordinator as in a sum: only x + N − m/2 is ever reconstructed (Dwork et al., EUROCRYPT
2006, §3; draft-case-ppm-binomial-dp-01 §3; calibration in mpc/dp.py).

Local noise (`local_noise`) is the cheaper alternative for long vectors: each node adds its own
Binomial(m) − m/2 to its contribution, so the total noise has n times the variance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mpc.dp import randomized_round, round_int, sample_local
from mpc.errors import InputError, LocalProtocolError
from mpc.prg import Rng
from mpc.protocols.circuit import Context, Program, ProgramFactory
from mpc.ring import Signed, Words


def joint_noise(coins: int, noised: int) -> ProgramFactory:
    """A program that adds jointly made Binomial(coins, 1/2) − coins/2 to the first `noised` words.

    Returns: the program factory (no openings; coins·noised daBits).
    """
    if coins < 2 or coins % 2 or not 0 <= noised:
        raise LocalProtocolError(f"joint noise needs an even number of coins (at least 2) and a non-negative count "
                                 f"of noised words, got {coins} and {noised}")

    def program(ctx: Context, x: Words) -> Program[Words]:
        if noised > x.size:
            raise LocalProtocolError(f"joint noise for {noised} words of a {x.size}-word input")
        out = np.array(x, dtype=np.uint64, copy=True)
        if noised:
            bits = ctx.dabits.take(coins * noised)
            out[:noised] += bits.arith.reshape(noised, coins).sum(axis=1, dtype=np.uint64)
            if ctx.first:
                out[:noised] -= np.uint64(coins // 2)
        return out
        yield  # a generator without openings   # noqa: unreachable
    return program


def local_noise(rng: Rng, coins: int, contribution: Words, noised: int) -> Words:
    """This node's contribution with its own Binomial(coins, 1/2) − coins/2 added to the first `noised` words.

    Returns: a new array (mod 2^64).
    """
    out = np.array(contribution, dtype=np.uint64, copy=True)
    out[:noised] += sample_local(rng, coins, noised).astype(np.uint64)
    return out


# ---- what a node contributes to a DP release -------------------------------------------------

MAX_BINS = 10_000


def units(rng: Rng, values: Signed, bounds: tuple[int, int], frac_bits: int, unit: int) -> Signed:
    """A DP sum's values in the session's public unit 2^unit: clipped to the declared bounds, then
    rounded down or up at random, unbiasedly (mpc/dp.py `randomized_round`).

    Args:
        values, bounds: encoded at `frac_bits` fractional bits.
    Returns: int64 units, each within [⌊lo/2^unit⌋, ⌈hi/2^unit⌉].
    """
    clipped = np.clip(np.asarray(values, dtype=np.int64), bounds[0], bounds[1])
    return randomized_round(rng, clipped, frac_bits + unit)


def units_total(rng: Rng, values: Signed, bounds: tuple[int, int], frac_bits: int, unit: int) -> int:
    """A DP average's one value per node over its records: the records clipped to the declared bounds,
    added up exactly, and the total rounded at random, unbiasedly, to the public unit 2^unit, once.

    One record moves the total by at most hi − lo, so its rounding by at most ⌈(hi − lo)/2^unit⌉ units for
    any value of the node's random draw, which the session's sensitivity (⌈hi/2^unit⌉ − ⌊lo/2^unit⌋)
    covers: the same guarantee as rounding each record (`units`). But the rounding error stays below one
    unit however many records there are, where rounding each record adds N errors of up to a unit
    each, whose standard deviation (up to sqrt(N)/2 units) outgrows the noise's from a few thousand
    records on, and which the interval printed with the release did not cover.
    Returns: the total in units (a Python int: the exact sum may exceed int64 before it is rounded).
    """
    clipped = np.clip(np.asarray(values, dtype=np.int64), bounds[0], bounds[1])
    # Exactly, in two halves each of which fits int64 summed over up to 2^31 records.
    total = (int(np.sum(clipped >> np.int64(32), dtype=np.int64)) << 32) + \
        int(np.sum(clipped & np.int64(0xFFFFFFFF), dtype=np.int64))
    return round_int(rng, total, frac_bits + unit)


def check_edges(edges: Sequence[int]) -> None:
    """Refuse histogram bins that are too few or too many, unsorted or overlapping (public data).

    Raises: InputError naming the first edge at fault.
    """
    if not 2 <= len(edges) <= MAX_BINS + 1:
        raise InputError(f"a histogram needs 2..{MAX_BINS + 1} bin edges (1..{MAX_BINS} bins), got {len(edges)}")
    for i, (a, b) in enumerate(zip(edges, edges[1:])):
        if b <= a:
            raise InputError(f"histogram bins must be sorted and must not overlap: edge {i + 2} ({b}) does not "
                             f"come after edge {i + 1} ({a})")
    if not (-(1 << 62) < edges[0] and edges[-1] < 1 << 62):
        raise InputError("histogram edges must lie within +-2^62")


def histogram_counts(values: Signed, frac_bits: int, edges: Sequence[int]) -> Signed:
    """How many of this node's records fall into each bin [e_i, e_(i+1)) (the last bin closed);
    records below the first edge count in the first bin, above the last in the last (clipping).

    Args:
        values: encoded at `frac_bits`; edges: integers.
    Returns: int64 counts, one per bin.
    """
    inner = np.array([int(e) << frac_bits for e in edges[1:-1]], dtype=object)
    encoded = np.asarray(values, dtype=np.int64)
    if not inner.size:
        index = np.zeros(encoded.size, dtype=np.int64)
    elif all(-(1 << 62) < int(e) < 1 << 62 for e in inner):
        index = np.searchsorted(inner.astype(np.int64), encoded, side="right")
    else:   # edges beyond int64 at this scale: compare as Python integers
        index = np.array([sum(1 for e in inner if int(v) >= e) for v in encoded.tolist()], dtype=np.int64)
    return np.bincount(index, minlength=len(edges) - 1).astype(np.int64)
