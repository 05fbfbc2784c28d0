"""Sign bit and comparison on additive shares mod 2^ell, for n parties and a dishonest majority
(PROTOCOLS.md §5; DESIGN.md §4, "Threshold vote").

Arithmetic to boolean as in CrypTen (Knott et al., NeurIPS 2021, "CrypTen: Secure Multi-Party
Computation Meets Machine Learning", its arithmetic-to-binary conversion): P_i's additive share
x_i is already an XOR sharing of the summand x_i in which every other party holds 0. Carry-save
adders in a Wallace tree (Wallace, IEEE Trans. Electronic Computers 1964, "A Suggestion for a
Fast Multiplier") reduce the n summands to two, three at a time (S = A ^ B ^ C, carry = MAJ << 1 with
MAJ = ((A ^ C) & (B ^ C)) ^ C, one AND layer per level, every CSA of a level in one round);
then g = A & B, p = A ^ B and a Kogge-Stone prefix (Kogge & Stone, IEEE Trans. Computers
1973) G <- G ^ (P & (G << d)), P <- P & (P << d) for d = 1, 2, 4, ..., both ANDs of a level
in one round, give MSB(A + B) = p_{ell-1} ^ G_{ell-2}. Every AND is a Beaver gate
(mpc.protocols.beaver, PROTOCOLS.md §2); shifts and XORs are local.

Layout (documented choice): bits live in bit planes, a bool array of shape (ell, batch) whose
row j holds bit j of every value, so that a gate layer is one numpy operation for the whole
batch. The gates of one round, every bit and every value, are packed densely into uint64
words (np.packbits, little-endian, zero padding) just for the Beaver opening, so one triple
word buys 64 real gates whatever ell and the batch size are, and one round is one message per
peer: d words then e words, little-endian uint64.

Only gates that reach the output bit are evaluated: carries are computed for bits
0..ell-2 (the top carry falls off the ring), g only where the prefix reads it, and the
Kogge-Stone levels only on the (G, P) positions that feed G_{ell-2}; the last level has a
single gate. Costs, per compared value (batch B takes ceil(gates * B / 64) words per round):

    rounds = CSA depth(n) + 1 + ceil(log2(ell - 1))      (CSA depth: 0, 1, 2, 3, 3 for n = 2..6)
    gates  = (n - 2) * (ell - 1) + prefix gates(ell)       (g and Kogge-Stone together)

    ell            2   8   12   32   64
    prefix gates   1  17   29   87  182     e.g. n = 3, ell = 32: 118 gates (1.84 triple
    rounds, n = 3  2   5    6    7    8     words) per value, 7 rounds for any batch

`rounds` and `triple_words` compute both exactly from the same circuit. The circuit is a
coroutine that yields one AND layer per round; it runs as a program in the engine of
mpc/protocols/circuit.py (`sign_bit`, `at_least`, `less_than` on a `CircuitParty`), which opens
each layer's d and e words to every peer and draws the triple words from the party's
TripleSource in program order. `sign_bit` returns this party's XOR share of each MSB, one
uint64 word (0 or 1) per value; it reduces the input shares mod 2^ell first, which keeps them
a sharing of x mod 2^ell (DESIGN.md §3).
"""

from __future__ import annotations

import functools
from collections.abc import Generator

import numpy as np
import numpy.typing as npt

from mpc.errors import InputError, LocalProtocolError
from mpc.ring import RING_BITS, WORD, Words

Bits = npt.NDArray[np.bool_]
# One AND layer of the circuit: (step label, left inputs, right inputs), each (gates, batch);
# the engine sends back this party's shares of left & right, same shape.
_Layer = tuple[str, Bits, Bits]
_Circuit = Generator[_Layer, Bits, Bits]


@functools.lru_cache(maxsize=128)
def _kogge_stone_plan(ell: int) -> tuple[tuple[int, ...], tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]]:
    """Which positions of the Kogge-Stone prefix reach G_{ell-2}, found backwards from it.

    Returns: (the rows of g that are read, and per level t (d = 2^t) the rows j >= d whose
    G_j resp. P_j gets an AND gate).
    """
    levels = (ell - 2).bit_length()  # 2^levels >= ell - 1 bits of carry prefix
    need_g: set[int] = {ell - 2}
    need_p: set[int] = set()
    gates: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for t in reversed(range(levels)):
        d = 1 << t
        g_gates = tuple(sorted(j for j in need_g if j >= d))
        p_gates = tuple(sorted(j for j in need_p if j >= d))
        gates.append((g_gates, p_gates))
        # G_j needs G_j, and if j >= d also P_j and G_{j-d}; P_j needs P_j and, if j >= d, P_{j-d}.
        need_p = need_p | set(g_gates) | {j - d for j in p_gates}
        need_g = need_g | {j - d for j in g_gates}
    return tuple(sorted(need_g)), tuple(reversed(gates))


def sign_bit_circuit(own: Bits, me: int, parties: int) -> _Circuit:
    """The MSB circuit on XOR shares, as a coroutine that yields one AND layer per round.

    Returns (as the generator's value): this party's shares of MSB, shape (batch,).
    """
    ell = own.shape[0]
    zero = np.zeros_like(own)
    summands = [own if i == me else zero for i in range(parties)]
    level = 0
    while len(summands) > 2:  # carry-save adders, a Wallace tree of depth CSA depth(n)
        groups = [summands[3 * q:3 * q + 3] for q in range(len(summands) // 3)]
        left = np.concatenate([a[:-1] ^ c[:-1] for a, _, c in groups])
        right = np.concatenate([b[:-1] ^ c[:-1] for _, b, c in groups])
        maj = yield (f"csa/{level}", left, right)
        reduced: list[Bits] = []
        for q, (a, b, c) in enumerate(groups):
            carry = np.zeros_like(own)
            carry[1:] = maj[q * (ell - 1):(q + 1) * (ell - 1)] ^ c[:-1]  # carry = MAJ << 1
            reduced += [a ^ b ^ c, carry]
        summands = reduced + summands[3 * len(groups):]
        level += 1
    a, b = summands
    p = a ^ b
    g_rows, levels = _kogge_stone_plan(ell)
    rows = np.array(g_rows, dtype=np.intp)
    big_g = np.zeros_like(own)
    big_g[rows] = yield ("gen", a[rows], b[rows])
    big_p = p.copy()
    for t, (g_gates, p_gates) in enumerate(levels):
        d = 1 << t
        gi = np.array(g_gates, dtype=np.intp)
        pi = np.array(p_gates, dtype=np.intp)
        z = yield (f"ks/{t}", np.concatenate((big_p[gi], big_p[pi])),
                   np.concatenate((big_g[gi - d], big_p[pi - d])))
        big_g[gi] ^= z[:gi.size]
        big_p[pi] = z[gi.size:]
    msb: Bits = p[ell - 1] ^ big_g[ell - 2]  # MSB(A + B) = p_{ell-1} ^ carry into bit ell-1
    return msb


@functools.lru_cache(maxsize=128)
def _layer_plan(parties: int, ell: int) -> tuple[tuple[str, int], ...]:
    """Dry-run the circuit on one value to list its rounds.

    Returns: (step label, AND gates per value) for every round, in order.
    """
    circuit = sign_bit_circuit(np.zeros((ell, 1), dtype=np.bool_), 0, parties)
    plan: list[tuple[str, int]] = []
    try:
        label, left, _ = next(circuit)
        while True:
            plan.append((label, left.shape[0]))
            label, left, _ = circuit.send(np.zeros_like(left))
    except StopIteration:
        return tuple(plan)


def _words_for(gates: int, batch: int) -> int:
    return -(-gates * batch // 64)


def to_bit_planes(words: Words, ell: int) -> Bits:
    """Bit planes of words: row j holds bit j of every word (shape (ell, len(words)))."""
    shifts = np.arange(ell, dtype=np.uint64)[:, None]
    return ((words[None, :] >> shifts) & np.uint64(1)).astype(np.bool_)


def pack_bits(bits: Bits) -> Words:
    """Pack bits of any shape densely into uint64 words, little-endian, zero padded."""
    # The zero padding of the last word opens as bits of a (resp. b) that no gate ever uses.
    flat = np.packbits(bits.reshape(-1), bitorder="little")
    buf = np.zeros(8 * _words_for(bits.size, 1), dtype=np.uint8)
    buf[:flat.size] = flat
    return buf.view(WORD).astype(np.uint64, copy=False)


def unpack_bits(words: Words, shape: tuple[int, ...]) -> Bits:
    """The inverse of pack_bits for bits of the given shape."""
    raw = np.ascontiguousarray(words, dtype=WORD).view(np.uint8)
    bits: Bits = np.unpackbits(raw, count=int(np.prod(shape)), bitorder="little").reshape(shape).astype(np.bool_)
    return bits


def _check_sizes(where: str, parties: int, ell: int, batch: int) -> None:
    if parties < 2:
        raise LocalProtocolError(f"{where}: a comparison needs at least 2 parties, got {parties}")
    if not 2 <= ell <= RING_BITS:
        raise LocalProtocolError(f"{where}: ell must be in 2..{RING_BITS}, got {ell}")
    if batch < 1:
        raise LocalProtocolError(f"{where}: a comparison needs at least one value, got {batch}")


def rounds(parties: int, ell: int) -> int:
    """The number of communication rounds (AND layers) of the circuit, whatever the batch size.

    Returns: CSA depth(parties) + 1 + ceil(log2(ell - 1)).
    Raises: LocalProtocolError for fewer than 2 parties or ell outside 2..64.
    """
    _check_sizes("sign bit", parties, ell, 1)
    return len(_layer_plan(parties, ell))


def triple_words(parties: int, ell: int, batch: int) -> int:
    """The number of packed triple words one run of the circuit takes from each party's TripleSource.

    Returns: the sum over rounds of ceil(gates per value * batch / 64).
    Raises: LocalProtocolError for fewer than 2 parties, ell outside 2..64 or batch < 1.
    """
    _check_sizes("sign bit", parties, ell, batch)
    return sum(_words_for(gates, batch) for _, gates in _layer_plan(parties, ell))


def ell_for_tally(ballots: int) -> int:
    """The ring width for comparing a tally of `ballots` 0/1 votes with a threshold (PROTOCOLS.md §5).

    ell = ceil(log2(N + 1)) + 2, so that T - k stays in [-2^(ell-1), 2^(ell-1)) for every
    tally 0 <= T <= N and every public threshold 0 <= k <= 2(N + 1).
    Returns: ell, at least 2 and at most 64.
    Raises: InputError for a negative count or one too large for a 64-bit ring.
    """
    if ballots < 0:
        raise InputError(f"a tally needs a non-negative number of ballots, got {ballots}")
    ell = max(2, ballots.bit_length() + 2)  # bit_length(N) == ceil(log2(N + 1))
    if ell > RING_BITS:
        raise InputError(f"{ballots} ballots need a {ell}-bit ring; at most {RING_BITS} bits are supported")
    return ell
