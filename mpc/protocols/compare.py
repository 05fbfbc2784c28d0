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

Each carry-save gate runs among the parties that hold its summands (Holders, mpc/ot/triples.py):
P_i's share is held by P_i alone, a CSA's sum and carry by the union of its three summands'
holders. Its triples are made among those parties only and its d and e go to them only (the
engine's segments, mpc/protocols/circuit.py). The tree keeps each adder's holders few, in as many
levels as a Wallace tree's (`_csa_tree`): blocks of parties reduce their own summands, then merge into
blocks two or three times larger, so a party's holders grow geometrically along its path and its
triples per peer stay bounded. For 1,000 values of 32 bits, the busiest node's triples per peer are
1.53x those of 3 parties at 10 parties, 1.64x at 20, 1.77x at 50 and 100, against 2.83x, 5.46x and
13.3x at 10, 20 and 50 were every gate among all (`triple_layout`, `pair_words`); at most 2.2x up to
128 parties but for the counts just below those where a Wallace tree needs a level more (40-42, 58-63,
85-94, 127-128), which leave the blocks no level to spare (up to 2.9x).
Security is unchanged: a coalition that holds all of a gate's summands knows its inputs, and any
other sees d and e masked by the fresh triple shares of a holder outside it. The g layer and the
prefix run among all parties.

Only gates that reach the output bit are evaluated: carries are computed for bits
0..ell-2 (the top carry falls off the ring), g only where the prefix reads it, and the
Kogge-Stone levels only on the (G, P) positions that feed G_{ell-2}; the last level has a
single gate. Costs, per compared value (batch B takes ceil(gates * B / 64) words per round):

    rounds = CSA depth(n) + 1 + ceil(log2(ell - 1))      (CSA depth: 0, 1, 2, 3, 3 for n = 2..6)
    gates  = (n - 2) * (ell - 1) + prefix gates(ell)       (g and Kogge-Stone together)

    ell            2   8   12   32   64
    prefix gates   1  17   29   87  182     e.g. n = 3, ell = 32: 118 gates (1.84 triple
    rounds, n = 3  2   5    6    7    8     words) per value, 7 rounds for any batch

For a few values (at most FAN_MAX_BATCH), where a round costs more than gates do, the prefix is
instead a tree of multi-input AND gates in fewer levels (the fan-in prefix, below), with g either a
layer of its own or folded into the first level (each G_k of a block read as the two factors A_k and
B_k): for n = 3 and ell = 32, 4 rounds (carry-save, g, a level of radix 5, one of radix 7) with 536
gates per value; for ell = 25 (a vote among 3 nodes, mpc/protocols/contribution.py), 3 rounds
(carry-save, then levels of radix 3 and 8 with g folded in) with 540; from n = 4 on, g folded in
on 32 bits too. The choice depends on n, ell and the batch size only, so every party makes the same.

`rounds` and `triple_words` compute both exactly from the same circuit. The circuit is a
coroutine that yields one round at a time (its AND gates and the bits it opens); it runs as a
program in the engine of mpc/protocols/circuit.py (`sign_bit`, `at_least`, `less_than` on a
`CircuitParty`), which opens each round's d and e words and masked bits to every peer in one
message and draws the triple words from the party's TripleSource in program order. `sign_bit`
returns this party's XOR share of each MSB, one uint64 word (0 or 1) per value; it reduces the
input shares mod 2^ell first, which keeps them a sharing of x mod 2^ell (DESIGN.md §3).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mpc.errors import InputError, LocalProtocolError
from mpc.ot.triples import ALL, Holders, holds
from mpc.ring import RING_BITS, WORD, Words

Bits = npt.NDArray[np.bool_]
# One group of AND gates among the same holders: (holders, left inputs, right inputs), each (rows, batch).
Gates = tuple[Holders, Bits, Bits]
# One round of the circuit: (step label, its gate groups (each holder set once), bits to open by every
# party (rows, batch)); the engine sends back this party's shares of each group's left & right, and the
# opened bits.
_Layer = tuple[str, list[Gates], Bits]
_Circuit = Generator[_Layer, tuple[list[Bits], Bits], Bits]


def merge_gates(groups: list[Gates]) -> list[Gates]:
    """One group per holder set, in the order each set first appears (rows concatenated)."""
    merged: dict[Holders, list[Gates]] = {}
    for group in groups:
        merged.setdefault(group[0], []).append(group)
    return [(h, np.concatenate([g[1] for g in gs]), np.concatenate([g[2] for g in gs])) if len(gs) > 1 else gs[0]
            for h, gs in merged.items()]


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


# ---- the fan-in prefix: fewer rounds for a few values -----------------------------------------
#
# Multi-input AND gates on products of masks (the multi-input multiplication of Patra, Schneider,
# Suresh & Yalame, "ABY2.0", USENIX Security 2021, here for n parties over Beaver ANDs): for a
# monomial x_1...x_k of XOR-shared bits, open e_v = x_v ^ r_v for each input once; then
#     x_1 ... x_k = XOR over S of (AND of e_v for v not in S) & r_S,    r_S = AND of r_v for v in S,
# which is linear in this party's shares of the r_S (r_{} = 1, held by P_0). Every r_v is fresh
# and used by one gate group only, so every e_v is uniform. The r_v are XORs of every party's own
# coins, and the r_S are made with ordinary Beaver ANDs in the rounds up to the level that uses
# them, in the same messages as the carry-save and generate layers and the levels themselves: a
# product of k inputs is ready after ceil(log2 k) rounds, the last of them the level's own (its
# finish reads the product's shares after the round's messages; the r's are independent of the
# inputs, so opening their Beaver masks in that round or an earlier one shows the same). A block of
# c positions then combines in one round,
#     G = XOR_k G_k & P_{k+1} & ... & P_{c-1},    P = P_0 & ... & P_{c-1},
# so the prefix over ell - 1 positions takes e.g. 2 rounds (radix 5 then 7) instead of 5 for 3
# parties on 32 bits, for about five times the AND gates; it is used for up to FAN_MAX_BATCH values.
# Folded, the first level takes X = [A; B; P] and reads G_k = A_k & B_k as two factors of its G
# monomials (one more factor each, so a smaller radix), which saves g's round.

MAX_FAN_IN = 8          # 2^8 subsets of a gate group's inputs at most
FAN_MAX_BATCH = 32      # beyond this many values, the Kogge-Stone prefix's fewer gates win
ROUND_GATES = 4096      # a round among the nodes costs about as much as this many AND gates
Rows = npt.NDArray[np.intp]


def _block_products(c: int, with_p: bool, fold: bool = False) -> int:
    """The r_S (|S| >= 2) one block of c children needs: subsets of its G and P monomials (fold: each
    G_k the product A_k & B_k of the adder's two inputs, two factors instead of one)."""
    if c < 2 and not fold:
        return 0
    if fold:   # subsets with A_k or B_k or both, and any P's above position k, less {A_k} and {B_k}
        g_part = 3 * ((1 << c) - 1) - 2 * c
    else:      # subsets with one G_k and any P's above it
        g_part = (1 << c) - 1 - c
    return g_part + ((1 << c) - 1 - c if with_p else (1 << (c - 1)) - c)   # P-only subsets


def _needs_p(m: int, radices: tuple[int, ...]) -> list[list[bool]]:
    """Per level, per block: whether its P is read by the next level (the last reads only G)."""
    counts = [m]
    for r in radices:
        counts.append(-(-counts[-1] // r))
    need = [False] * counts[-1]
    out: list[list[bool]] = []
    for level in reversed(range(len(radices))):
        out.append(need)
        r, cnt = radices[level], counts[level]
        below = [False] * cnt
        for b in range(counts[level + 1]):
            lo, hi = b * r, min((b + 1) * r, cnt)
            for j in range(lo + 1, hi):
                below[j] = True
            below[lo] = below[lo] or need[b]
        need = below
    return out[::-1]


def _fan_cost(m: int, radices: tuple[int, ...], fold: bool = False) -> int:
    """The AND gates the r_S of a prefix with these radices take, per value (fold: g folded into the
    first level)."""
    total, cnt = 0, m
    for t, (r, need) in enumerate(zip(radices, _needs_p(m, radices), strict=True)):
        total += sum(_block_products(min(r, cnt - b * r), need[b], fold and t == 0) for b in range(len(need)))
        cnt = len(need)
    return total


def _ks_gates(ell: int) -> int:
    """The AND gates of the Kogge-Stone prefix (g and every level), per value."""
    g_rows, levels = _kogge_stone_plan(ell)
    return len(g_rows) + sum(len(g) + len(p) for g, p in levels)


@functools.lru_cache(maxsize=512)
def _fan_radices(m: int, before: int, batch: int) -> tuple[tuple[int, ...], bool] | None:
    """The radices of the fan-in prefix over m positions after the circuit's `before` carry-save
    rounds, and whether g is folded into its first level; None where the Kogge-Stone prefix is
    cheaper. A round counts as ROUND_GATES AND gates of the whole batch.

    Unfolded, the generate layer g = A & B takes round `before` and level t round before + 1 + t;
    folded, level 0 reads A_k and B_k as two factors of its G monomials (no g round) and level t
    takes round before + t. A level in round R (from 0) can read products of 2^(R + 1) masks: the
    last of their Beaver ANDs rides in its own round's messages (the masks are the parties' own
    coins, independent of the inputs, so when their products are opened changes nothing in a view).
    """
    ks_levels = (m - 1).bit_length()
    best: tuple[int, tuple[tuple[int, ...], bool] | None] = (
        ks_levels * ROUND_GATES + _ks_gates(m + 1) * batch, None)
    for fold in (False, True):
        first = before if fold else before + 1
        for levels in range(1, ks_levels + 1):
            rounds = levels + (not fold)
            if rounds * ROUND_GATES >= best[0]:   # no more levels can be cheaper
                break
            caps = [min(MAX_FAN_IN, 1 << (first + t + 1)) - (fold and t == 0) for t in range(levels)]
            if caps[0] < 2:
                continue
            for radices in itertools.product(*(range(2, cap + 1) for cap in caps)):
                total = math.prod(radices)
                if total < m or any(total // r * (r - 1) >= m for r in radices):   # too few, or a radix to spare
                    continue
                gates = _fan_cost(m, radices, fold) + (0 if fold else m)
                cost = (rounds - 1) * ROUND_GATES + gates * batch   # as the Kogge-Stone cost: g's round not counted
                best = min(best, (cost, (radices, fold)), key=lambda c: c[0])
    return best[1]


@dataclass(frozen=True, eq=False)
class _FanLevel:
    """One level: opens some of its inputs X = [G; P] masked by single r's, then sums terms."""

    blocks: int
    opened: Rows      # rows of X opened, each masked by ...
    masks: Rows       # ... this row of the r table
    out_rows: Rows    # rows of [G_out; P_out] computed, one per run of terms
    starts: Rows      # where each out row's terms start
    source: Rows      # per term: a row of [r table; X; one]
    factors: Rows     # per term: (width,) rows of [e; ones] whose AND is the term's coefficient


@dataclass(frozen=True, eq=False)
class _FanPlan:
    """The whole fan-in prefix: the r table (single r's, then products by round) and the levels; fold:
    the first level's inputs are X = [A; B; P] (g = A & B folded into its G monomials), else [G; P]."""

    singles: int
    rows: int
    gen: tuple[tuple[Rows, Rows, Rows], ...]   # per round from the circuit's first: left, right, out rows
    levels: tuple[_FanLevel, ...]
    fold: bool = False


def _split(key: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    half = (len(key) + 1) // 2
    return key[:half], key[half:]


def _product_round(key: tuple[int, ...]) -> int:
    return (len(key) - 1).bit_length()   # ceil(log2 |S|): the round after which r_S is ready


def _fan_plan(m: int, before: int, batch: int) -> _FanPlan | None:
    """The fan-in prefix over m positions for `batch` values after `before` carry-save rounds; None
    where the Kogge-Stone prefix is cheaper."""
    chosen = _fan_radices(m, before, batch)
    return None if chosen is None else _fan_levels(m, *chosen)


@functools.lru_cache(maxsize=128)
def _fan_levels(m: int, radices: tuple[int, ...], fold: bool = False) -> _FanPlan:
    """The fan-in prefix over m positions with these radices (the same for every batch that chose them)."""
    singles = 0
    keys: set[tuple[int, ...]] = set()                   # every r_S needed, by its single r rows
    drafts: list[tuple[int, int, dict[int, int], list[tuple[int, int | tuple[int, ...], tuple[int, ...]]], int]] = []
    cnt = m
    for level, (r, need) in enumerate(zip(radices, _needs_p(m, radices), strict=True)):
        nb = len(need)
        folded = fold and level == 0
        p_at = 2 * cnt if folded else cnt   # X = [A; B; P] or [G; P]
        monomials: list[tuple[int, tuple[int, ...]]] = []            # (row of [G_out; P_out], rows of X)
        for b in range(nb):
            lo, hi = b * r, min((b + 1) * r, cnt)
            monomials += [(b, (j, *((cnt + j,) if folded else ()), *range(p_at + j + 1, p_at + hi)))
                          for j in range(lo, hi)]
            if need[b]:
                monomials.append((nb + b, tuple(range(p_at + lo, p_at + hi))))
        single_of: dict[int, int] = {}                                 # opened row of X -> its r's row
        for _, xs in monomials:
            for x in xs if len(xs) > 1 else ():
                if x not in single_of:
                    single_of[x] = singles
                    singles += 1
        terms: list[tuple[int, int | tuple[int, ...], tuple[int, ...]]] = []   # (out, X row or r_S key, factors)
        for out, xs in monomials:
            if len(xs) == 1:
                terms.append((out, xs[0], ()))
                continue
            for subset in range(1 << len(xs)):
                key = tuple(sorted(single_of[x] for i, x in enumerate(xs) if subset >> i & 1))
                terms.append((out, key, tuple(x for i, x in enumerate(xs) if not subset >> i & 1)))
                if len(key) > 1:
                    keys.add(key)
        drafts.append((nb, cnt, single_of, terms, p_at + cnt))
        cnt = nb
    ordered = sorted(keys, key=lambda k: (_product_round(k), k))
    row_of = {k: singles + i for i, k in enumerate(ordered)} | {(s,): s for s in range(singles)}
    rows = singles + len(ordered)
    gen: list[tuple[Rows, Rows, Rows]] = []
    for rnd in range(1, _product_round(ordered[-1]) + 1 if ordered else 1):
        made = [k for k in ordered if _product_round(k) == rnd]
        halves = [_split(k) for k in made]
        gen.append((np.array([row_of[h[0]] for h in halves], dtype=np.intp),
                    np.array([row_of[h[1]] for h in halves], dtype=np.intp),
                    np.array([row_of[k] for k in made], dtype=np.intp)))
    levels: list[_FanLevel] = []
    for nb, cnt, single_of, terms, x_rows in drafts:
        opened = sorted(single_of)
        e_row = {x: i for i, x in enumerate(opened)}
        terms.sort(key=lambda t: t[0])
        width = max(len(t[2]) for t in terms)
        source = [rows + t[1] if isinstance(t[1], int) else (row_of[t[1]] if t[1] else rows + x_rows) for t in terms]
        factors = [[e_row[x] for x in t[2]] + [len(opened)] * (width - len(t[2])) for t in terms]
        outs = [t[0] for t in terms]
        starts = [i for i in range(len(outs)) if i == 0 or outs[i] != outs[i - 1]]
        levels.append(_FanLevel(nb, np.array(opened, dtype=np.intp),
                                np.array([single_of[x] for x in opened], dtype=np.intp),
                                np.array([outs[i] for i in starts], dtype=np.intp), np.array(starts, dtype=np.intp),
                                np.array(source, dtype=np.intp),
                                np.array(factors, dtype=np.intp).reshape(len(terms), width)))
    return _FanPlan(singles, rows, tuple(gen), tuple(levels), fold)


def _csa_depth(parties: int) -> int:
    depth = 0
    while parties > 2:
        parties = 2 * (parties // 3) + parties % 3
        depth += 1
    return depth


PAIR_SEARCH = 64   # summands up to which a carry-save adder's two partners are chosen together


_Tree = tuple[tuple[tuple[tuple[int, int, int], ...], tuple[int, ...]], ...]


@functools.lru_cache(maxsize=64)
def _csa_tree(parties: int) -> _Tree:
    """Which summands each carry-save level adds: per level, the index triples of its adders and the
    indices of the summands it passes on; the next level's summands are each adder's sum and carry, in
    order, then those passed on. As many levels as a Wallace tree (no round more). Of the trees tried,
    the one whose busiest party has the fewest peers summed over its gates (the triples it makes):
    adders chosen greedily to keep their holders few, the Wallace tree's groups of consecutive summands,
    or blocks of parties merged into larger blocks (`_block_tree`); on a tie, the first of those three.
    Every party computes the same tree from the party count.
    """
    depth = _csa_depth(parties)
    trees = [_greedy_tree(parties), _wallace_tree(parties), _block_tree(parties, depth)]
    return min((t for t in trees if t is not None and len(t) == depth), key=lambda t: _tree_cost(parties, t))


def _wallace_tree(parties: int) -> _Tree:
    levels, count = [], parties
    while count > 2:
        adders = tuple((3 * q, 3 * q + 1, 3 * q + 2) for q in range(count // 3))
        levels.append((adders, tuple(range(3 * len(adders), count))))
        count = 2 * len(adders) + count % 3
    return tuple(levels)


def _tree_cost(parties: int, tree: _Tree) -> int:
    """The busiest party's peers summed over the carry-save groups it takes part in."""
    holders, cost = [1 << i for i in range(parties)], [0] * parties
    for adders, passed in tree:
        unions = [holders[a] | holders[b] | holders[c] for a, b, c in adders]
        for union in unions:
            for i in range(parties):
                cost[i] += bin(union).count("1") - 1 if union >> i & 1 else 0
        holders = [h for u in unions for h in (u, u)] + [holders[k] for k in passed]
    return max(cost)


@functools.lru_cache(maxsize=64)
def _greedy_tree(parties: int) -> _Tree:
    """Each adder from the summand with the fewest holders and the two whose union with it is smallest
    (beyond PAIR_SEARCH summands, the second and then the third one by one)."""
    def size(*ks: int) -> int:
        return bin(functools.reduce(operator.or_, (holders[k] for k in ks))).count("1")

    holders = [1 << i for i in range(parties)]
    levels = []
    while len(holders) > 2:
        left = sorted(range(len(holders)), key=lambda k: (size(k), holders[k]))
        adders = []
        for _ in range(len(holders) // 3):
            first = left.pop(0)
            if len(left) <= PAIR_SEARCH:
                _, i, j = min((size(first, left[i], left[j]), i, j)
                              for i in range(len(left)) for j in range(i + 1, len(left)))
            else:
                _, i = min((size(first, left[i]), i) for i in range(len(left)))
                _, j = min((size(first, left[i], left[j]), j) for j in range(len(left)) if j != i)
                i, j = min(i, j), max(i, j)
            adders.append((first, left[i], left[j]))
            del left[j], left[i]
        levels.append((tuple(adders), tuple(left)))
        holders = [h for a, b, c in adders for h in [holders[a] | holders[b] | holders[c]] * 2] + \
            [holders[k] for k in left]
    return tuple(levels)


BLOCK_PARTIES = 128   # party counts up to which block trees are searched (0.4 s once at 128 parties)
BLOCK_FLAT = 16       # blocks up to this many parties may also be a greedy tree of their own


@dataclass(frozen=True)
class _Block:
    """One way for a block of consecutive parties to reduce their summands to at most two: a tree of its
    own (`tree`), or its sub-blocks side by side (`parts`: (parties, levels) of each) and then a Wallace
    tree over their outputs (`tree`, on their at most two summands each, in order). `cost`: its busiest
    party's peers summed over its carry-save groups (for merged blocks an upper bound: each part's
    busiest party as if it were the one the merge costs most)."""

    cost: int
    tree: _Tree
    parts: tuple[tuple[int, int], ...] = ()


@functools.cache
def _block_front(size: int) -> dict[int, _Block]:
    """The cheapest ways for a block of `size` parties to reduce their summands, by levels, keeping only
    the levels where fewer levels cost more. A block's groups are among its own parties, so a party's
    cost in a merged block is its own in its part plus the merge's.

    Merging two blocks of at most two summands each takes as many levels as their summands less two
    (3 -> 2: one adder; 4 -> 3 -> 2: two, each among both blocks); merging three blocks of two summands
    (6 -> 4 -> 3 -> 2) takes three: each outer block with the middle one, then two adders among all.
    Blocks whose holders double or triple from merge to merge keep every party's cost within about four
    times the block's size, where a flat tree's last levels run among nearly all parties one after another.
    """
    if size <= 2:
        return {0: _Block(0, ())}
    best: dict[int, _Block] = {}

    def put(levels: int, block: _Block) -> None:
        if levels <= _csa_depth(size) + 2 and (levels not in best or block.cost < best[levels].cost):
            best[levels] = block

    for tree in [_wallace_tree(size)] + ([_greedy_tree(size)] if size <= BLOCK_FLAT else []):
        put(len(tree), _Block(_tree_cost(size, tree), tree))
    for a in range(1, size // 2 + 1):   # two blocks: every merging adder among both
        b = size - a
        outputs = min(a, 2) + min(b, 2)
        for (da, pa), (db, pb) in itertools.product(_block_front(a).items(), _block_front(b).items()):
            cost = max(pa.cost, pb.cost) + (outputs - 2) * (size - 1)
            put(max(da, db) + outputs - 2, _Block(cost, _wallace_tree(outputs), ((a, da), (b, db))))
    # three blocks of about equal size (none smaller than a quarter, the first at most twice the middle), the
    # middle one the smallest, as it joins both outer ones (searching every split gives the same trees up to 128)
    for mid in range(max(2, size // 4), size // 3 + 1):
        for a in range(mid, min(2 * mid, (size - mid) // 2) + 1):
            c = size - mid - a
            left, right = a + mid - 1, mid + c - 1
            for (da, pa), (dm, pm), (dc, pc) in itertools.product(
                    _block_front(a).items(), _block_front(mid).items(), _block_front(c).items()):
                cost = max(pa.cost + left, pm.cost + left + right, pc.cost + right) + 2 * (size - 1)
                put(max(da, dm, dc) + 3, _Block(cost, _wallace_tree(6), ((a, da), (mid, dm), (c, dc))))
    front, cheapest = {}, None
    for levels in sorted(best):
        if cheapest is None or best[levels].cost < cheapest:
            front[levels], cheapest = best[levels], best[levels].cost
    return front


def _block_tree(parties: int, depth: int) -> _Tree | None:
    """The block tree of `parties` in `depth` levels (`_block_front`), or None: none that deep, or more
    than BLOCK_PARTIES parties."""
    if parties > BLOCK_PARTIES:
        return None
    for size in range(3, parties):   # smaller blocks first: no deep recursion
        _block_front(size)
    if depth not in _block_front(parties):
        return None
    levels, _ = _block_levels(0, parties, depth, itertools.count(parties))
    # Summands by name (parties 0..n-1, then each adder's sum and carry as it makes them) to indices.
    summands, tree = list(range(parties)), []
    for level in levels:
        at = {name: i for i, name in enumerate(summands)}
        adders = tuple((at[x], at[y], at[z]) for x, y, z, _, _ in level)
        used = {i for adder in adders for i in adder}
        passed = tuple(i for i in range(len(summands)) if i not in used)
        tree.append((adders, passed))
        summands = [out for *_, s, c in level for out in (s, c)] + [summands[i] for i in passed]
    return tuple(tree)


_Adder = tuple[int, int, int, int, int]   # its three summands' names, then those of its sum and carry


def _block_levels(first: int, size: int, depth: int, fresh: Iterator[int]) -> tuple[list[list[_Adder]], list[int]]:
    """The adders of each level of the block of parties first..first+size-1 in `depth` levels, and the
    names of its (at most two) output summands: its parts' levels side by side, then its own tree's."""
    block = _block_front(size)[depth]
    levels: list[list[_Adder]] = []
    summands = [] if block.parts else list(range(first, first + size))
    for part, part_depth in block.parts:
        part_levels, outs = _block_levels(first, part, part_depth, fresh)
        side_by_side: Iterator[tuple[list[_Adder], list[_Adder]]] = itertools.zip_longest(
            levels, part_levels, fillvalue=[])
        levels = [x + y for x, y in side_by_side]
        summands += outs
        first += part
    for adders, passed in block.tree:
        level, made = [], []
        for a, b, c in adders:
            s, k = next(fresh), next(fresh)
            level.append((summands[a], summands[b], summands[c], s, k))
            made += [s, k]
        levels.append(level)
        summands = made + [summands[k] for k in passed]
    return levels, summands


def _coin_bits(coins: Callable[[int], bytes], rows: int, batch: int) -> Bits:
    raw = np.frombuffer(coins(-(-rows * batch // 8)), dtype=np.uint8)
    bits: Bits = np.unpackbits(raw, count=rows * batch).reshape(rows, batch).astype(np.bool_)
    return bits


class _Tuples:
    """This party's shares of a fan-in prefix's r table, made round by round with the circuit's gates."""

    def __init__(self, plan: _FanPlan, batch: int, coins: Callable[[int], bytes]) -> None:
        self.plan = plan
        self.table = np.zeros((plan.rows, batch), dtype=np.bool_)
        self.table[:plan.singles] = _coin_bits(coins, plan.singles, batch)   # this party's coins of each r_v
        self.round = 0


def _layer(tuples: _Tuples | None, label: str, groups: list[Gates],
           reveal: Bits | None = None) -> Generator[_Layer, tuple[list[Bits], Bits], tuple[list[Bits], Bits]]:
    """One round: the circuit's AND gate groups and openings, plus the r_S products due this round
    (among every party)."""
    batch = groups[0][1].shape[1]
    if reveal is None:
        reveal = np.zeros((0, batch), dtype=np.bool_)
    due = None
    if tuples is not None:
        due = tuples.plan.gen[tuples.round] if tuples.round < len(tuples.plan.gen) else None
        tuples.round += 1
    if due is not None:
        assert tuples is not None
        groups = [*groups, (ALL, tuples.table[due[0]], tuples.table[due[1]])]
    merged = merge_gates([g for g in groups if g[1].shape[0]])
    z, opened = yield (label, merged, reveal)
    by_holders = dict(zip((h for h, _, _ in merged), z, strict=True))
    offsets: dict[Holders, int] = {}
    out: list[Bits] = []
    for h, left, _ in groups:
        if not left.shape[0]:
            out.append(np.zeros((0, batch), dtype=np.bool_))
            continue
        start = offsets.get(h, 0)
        out.append(by_holders[h][start:start + left.shape[0]])
        offsets[h] = start + left.shape[0]
    if due is not None:
        assert tuples is not None
        tuples.table[due[2]] = out.pop()
    return out, opened


def _fan_finish(level: _FanLevel, x: Bits, e: Bits, table: Bits, first: bool) -> tuple[Bits, Bits]:
    """This party's shares of the level's block G's and P's from the opened e = x ^ r."""
    batch = x.shape[1]
    coefficient = np.logical_and.reduce(np.concatenate((e, np.ones((1, batch), dtype=np.bool_)))[level.factors],
                                        axis=1)
    source = np.concatenate((table, x, np.full((1, batch), first)))[level.source]
    out = np.zeros((2 * level.blocks, batch), dtype=np.bool_)
    out[level.out_rows] = np.bitwise_xor.reduceat(coefficient & source, level.starts, axis=0)
    return out[:level.blocks], out[level.blocks:]


def sign_bit_circuit(own: Bits, me: int, parties: int, coins: Callable[[int], bytes] = os.urandom,
                     fan: bool | None = None) -> _Circuit:
    """The MSB circuit on XOR shares, as a coroutine that yields one round at a time: (label, its AND
    gate groups (holders, left inputs, right inputs), bits to open), and is sent back (each group's
    ANDs, the opened bits).

    Args:
        coins: this party's CSPRNG, for its coins of the fan-in prefix's masks.
        fan: None: the fan-in prefix where it is cheaper for this batch (at most FAN_MAX_BATCH
            values); True: wherever it saves rounds (as for one value); False: never.
    Returns (as the generator's value): this party's shares of MSB, shape (batch,).
    """
    ell, batch = own.shape
    chosen_for = (batch if batch <= FAN_MAX_BATCH else 0) if fan is None else int(fan)
    plan = _fan_plan(ell - 1, _csa_depth(parties), chosen_for) if chosen_for else None
    tuples = None if plan is None else _Tuples(plan, batch, coins)
    zero = np.zeros_like(own)
    everyone = (1 << parties) - 1
    # Each summand with its holders: the parties whose shares of it may be non-zero. A carry-save
    # adder's gates run among the union of its three summands' holders only (the others' shares of
    # its inputs are 0): a coalition that holds all of them knows the inputs already, and any other
    # sees openings masked by an outside member's triple shares (triples among those holders).
    summands = [(own if i == me else zero, 1 << i) for i in range(parties)]
    for level, (adders, passed) in enumerate(_csa_tree(parties)):   # carry-save adders, depth CSA depth(n)
        groups = [[summands[k] for k in adder] for adder in adders]
        unions = [ha | hb | hc for (_, ha), (_, hb), (_, hc) in groups]
        unions = [ALL if h == everyone else h for h in unions]
        gates = [(h, a[:-1] ^ c[:-1], b[:-1] ^ c[:-1])
                 for h, ((a, _), (b, _), (c, _)) in zip(unions, groups, strict=True)]
        majs, _ = yield from _layer(tuples, f"csa/{level}", gates)
        reduced: list[tuple[Bits, Holders]] = []
        for h, maj, ((a, _), (b, _), (c, _)) in zip(unions, majs, groups, strict=True):
            carry = np.zeros_like(own)
            carry[1:] = maj ^ c[:-1]  # carry = MAJ << 1
            reduced += [(a ^ b ^ c, h), (carry, h)]
        summands = reduced + [summands[k] for k in passed]
    (a, _), (b, _) = summands
    p = a ^ b
    if tuples is not None:   # the fan-in prefix over positions 0..ell-2
        m = ell - 1
        if tuples.plan.fold:   # g = A & B is two factors of the first level's G monomials
            x = np.concatenate((a[:m], b[:m], p[:m]))
        else:
            (big_g,), _ = yield from _layer(tuples, "gen", [(ALL, a[:m], b[:m])])
            big_p = p[:m]
        nothing = np.zeros((0, batch), dtype=np.bool_)
        for t, fan_level in enumerate(tuples.plan.levels):
            if t or not tuples.plan.fold:
                x = np.concatenate((big_g, big_p))
            _, e = yield from _layer(tuples, f"fan/{t}", [(ALL, nothing, nothing)],
                                     x[fan_level.opened] ^ tuples.table[fan_level.masks])
            big_g, big_p = _fan_finish(fan_level, x, e, tuples.table, me == 0)
        fan_msb: Bits = p[ell - 1] ^ big_g[0]   # big_g[0]: the carry into bit ell-1
        return fan_msb
    g_rows, levels = _kogge_stone_plan(ell)
    rows = np.array(g_rows, dtype=np.intp)
    big_g = np.zeros_like(own)
    (big_g[rows],), _ = yield from _layer(None, "gen", [(ALL, a[rows], b[rows])])
    big_p = p.copy()
    for t, (g_gates, p_gates) in enumerate(levels):
        d = 1 << t
        gi = np.array(g_gates, dtype=np.intp)
        pi = np.array(p_gates, dtype=np.intp)
        (z,), _ = yield from _layer(None, f"ks/{t}", [(ALL, np.concatenate((big_p[gi], big_p[pi])),
                                                       np.concatenate((big_g[gi - d], big_p[pi - d])))])
        big_g[gi] ^= z[:gi.size]
        big_p[pi] = z[gi.size:]
    msb: Bits = p[ell - 1] ^ big_g[ell - 2]  # MSB(A + B) = p_{ell-1} ^ carry into bit ell-1
    return msb


def _shape_batch(batch: int) -> int:
    """A batch of the same circuit shape: every batch beyond FAN_MAX_BATCH has Kogge-Stone's."""
    return min(batch, FAN_MAX_BATCH + 1)


@functools.lru_cache(maxsize=512)
def _mask_plan(parties: int, ell: int, batch: int) -> tuple[tuple[str, tuple[tuple[Holders, int], ...], int], ...]:
    """Dry-run the circuit on `batch` values to list its rounds.

    Returns: (step label, (holders, AND gates per value) per gate group, opened bits per value) for
    every round, in order.
    """
    circuit = sign_bit_circuit(np.zeros((ell, batch), dtype=np.bool_), 0, parties, bytes)
    plan: list[tuple[str, tuple[tuple[Holders, int], ...], int]] = []
    try:
        label, groups, reveal = next(circuit)
        while True:
            plan.append((label, tuple((h, left.shape[0]) for h, left, _ in groups), reveal.shape[0]))
            label, groups, reveal = circuit.send(([np.zeros_like(left) for _, left, _ in groups],
                                                  np.zeros_like(reveal)))
    except StopIteration:
        return tuple(plan)


def _layer_plan(parties: int, ell: int, batch: int) -> tuple[tuple[str, int, int], ...]:
    """(step label, AND gates per value over every group, opened bits per value) for every round."""
    return tuple((label, sum(g for _, g in groups), opened)
                 for label, groups, opened in _mask_plan(parties, ell, batch))


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


def rounds(parties: int, ell: int, batch: int) -> int:
    """The number of communication rounds of the circuit on `batch` values.

    Returns: CSA depth(parties) + 1 + ceil(log2(ell - 1)) with the Kogge-Stone prefix (more than
    FAN_MAX_BATCH values), fewer with the fan-in prefix where it has fewer levels.
    Raises: LocalProtocolError for fewer than 2 parties, ell outside 2..64 or batch < 1.
    """
    _check_sizes("sign bit", parties, ell, batch)
    return len(_layer_plan(parties, ell, _shape_batch(batch)))


def triple_layout(parties: int, ell: int, batch: int) -> dict[Holders, int]:
    """The packed triple words one run of the circuit takes, by the holders of their gates (ALL:
    every party); the parties' TripleSources hand them out (mpc/protocols/circuit.py).

    Returns: holders -> the sum over rounds of ceil(that group's gates per value * batch / 64).
    Raises: LocalProtocolError for fewer than 2 parties, ell outside 2..64 or batch < 1.
    """
    _check_sizes("sign bit", parties, ell, batch)
    layout: dict[Holders, int] = {}
    for _, groups, _ in _mask_plan(parties, ell, _shape_batch(batch)):
        for holders, gates in groups:
            layout[holders] = layout.get(holders, 0) + _words_for(gates, batch)
    return layout


def triple_words(parties: int, ell: int, batch: int) -> int:
    """The number of packed triple words one run of the circuit takes, over every holder set.

    Returns: the sum of `triple_layout`.
    Raises: LocalProtocolError for fewer than 2 parties, ell outside 2..64 or batch < 1.
    """
    return sum(triple_layout(parties, ell, batch).values())


def pair_words(layout: dict[Holders, int], i: int, j: int) -> int:
    """The triple words of a layout whose gates parties i and j both take part in: the random OTs
    their pair spends in each direction (mpc/ot/triples.py)."""
    return sum(words for holders, words in layout.items() if holds(holders, i) and holds(holders, j))


def node_words(layout: dict[Holders, int], parties: int) -> list[int]:
    """Each party's triple words of a layout summed over its peers (its random OTs of each direction)."""
    return [sum(pair_words(layout, i, j) for j in range(parties) if j != i) for i in range(parties)]


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
