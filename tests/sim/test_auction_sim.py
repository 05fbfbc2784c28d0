"""Sealed-bid auctions, the market-clearing price and the plurality winner (mpc/protocols/auction.py,
clearing.py, the catalogue's entries; PROTOCOLS.md §5, §8, §9) run by n CircuitParty engines with
a trusted dealer's preprocessing (tests/sim/common.py's runner), against plaintext.

Each node's contribution comes from its catalogue entry (`contribute`), the coordinator's
result from the entry's `decode`; what the engines open is checked to be exactly the declared
output. The input of a `summed` protocol (clearing price, plurality) is what the secure sum
hands each node: a fresh additive sharing of the total.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import InputError, RemoteProtocolError
from mpc.prg import Rng, SystemRng, random_words
from mpc.protocols import auction, catalogue, clearing
from mpc.protocols.catalogue import (
    AuctionParams,
    ClearingParams,
    Contributing,
    Declared,
    Opened,
    PluralityParams,
)
from mpc.protocols.circuit import Context, Program
from mpc.protocols.contribution import COMPARE_BITS, COMPARE_BOUND
from mpc.results import AuctionResult, PluralityResult
from mpc.ring import Words
from mpc.store import Store
from tests.sim.common import NAMES, Run, additive_shares, exact_draw, pick, rng, run_program

AUCTION = catalogue.entry("auction")
CLEARING = catalogue.entry("clearing-price")
PLURALITY = catalogue.entry("plurality")
INT32 = (1 << 31) - 1


def declared(node: str, values: Sequence[int], bounds: tuple[int, int] | None = None,
             kind: str = "number") -> Declared:
    lo_hi = bounds if bounds is not None else (min(values), max(values))
    return Declared("in", node, kind, lo_hi, len(values), 0, False)


def contributing(decl: Declared, values: Sequence[int], parties: int, offset: int, total: int) -> Contributing:
    """What the node hands its entry at compute: for ballots and options also their tally per option
    0..hi, as the store keeps it (and a yes count for 0/1 ballots only, as Store.get_declared gives)."""
    fields = {f.name for f in dataclasses.fields(Contributing)}
    data = np.array(values, dtype=np.int64)
    counted = decl.kind in ("ballots", "options") and decl.bounds is not None
    tally = np.bincount(data, minlength=decl.bounds[1] + 1) if counted and decl.bounds else data[:0]
    yes = int(np.count_nonzero(data)) if decl.kind == "ballots" else 0
    given: dict[str, Any] = {"declared": decl, "values": data, "yes": yes,
                             "tally": tuple(int(t) for t in tally), "scale": 0, "parties": parties,
                             "offset": offset, "total": total, "rng": SystemRng()}
    return Contributing(**{k: v for k, v in given.items() if k in fields})


def contributions(entry: Any, params: Any, per_node: Sequence[Sequence[int]],
                  bounds: tuple[int, int] | None = None) -> tuple[list[Words], dict[str, int]]:
    """Every node's contribution by its entry, after the entry's checks; and the reported lengths."""
    n = len(per_node)
    nodes = NAMES[:n]
    kind = sorted(entry.kinds)[0]
    decl = [declared(nodes[i], v, bounds, kind) for i, v in enumerate(per_node)]
    for d in decl:
        entry.check(params, d, n, 0)
    lengths = {nodes[i]: entry.length(params, d) for i, d in enumerate(decl)}
    total = sum(lengths.values())
    words = entry.contribution_length(params, lengths)
    out, offset = [], 0
    for i, values in enumerate(per_node):
        c = entry.contribute(params, contributing(decl[i], values, n, offset, total))
        assert c.dtype == np.uint64 and c.shape == (words,)
        out.append(c)
        offset += lengths[nodes[i]]
    return out, lengths


def summed(parts: Sequence[Words], r: Rng) -> list[Words]:
    """What the secure sum hands every node: a fresh additive sharing of the total."""
    total = np.zeros_like(parts[0])
    for p in parts:
        total += p
    return additive_shares(total, len(parts), r)


def opened(entry: Any, params: Any, lengths: dict[str, int], run: Run) -> Opened:
    words = run.xored() if entry.combine == "xor" else run.added()
    assert words.size == entry.output_length(params, lengths)
    if entry.combine == "add":   # no single node's output share is the output: the shares are masked words
        assert not any(np.array_equal(share, words) for share in run.outputs)
    return Opened("sess", "in", tuple(lengths), lengths, words, 0, False)


# --------------------------------------------------------------------------- auctions

def run_auction(bids: Sequence[Sequence[int]], second: bool, label: str) -> tuple[Any, Words]:
    params = AuctionParams(second_price=second)
    parts, lengths = contributions(AUCTION, params, bids, (-INT32, INT32))
    run = run_program(auction.second_price if second else auction.first_price, parts, label, prefix="auc")
    exact_draw(run)
    o = opened(AUCTION, params, lengths, run)
    return AUCTION.decode(params, o), o.words


def check_auction(bids: Sequence[Sequence[int]], second: bool, label: str) -> None:
    """Against plaintext: the first of the highest bids (node order, then index) wins; the price is
    the highest bid, or the second-highest counting ties. Only the declared output is opened."""
    flat = [v for node in bids for v in node]
    m = len(flat)
    g = flat.index(max(flat))
    where = [(NAMES[i], j) for i, node in enumerate(bids) for j in range(len(node))]
    runner_up = sorted(flat)[-2]
    result, words = run_auction(bids, second, label)
    assert (result.winner_node, result.winner_index) == where[g], (bids, second)
    assert result.price == (runner_up if second else max(flat)), (bids, second)
    assert result.pricing == ("second" if second else "first") and result.bids == m
    if second:   # exactly (winner position, second value): no key, and the winner's own bid nowhere
        assert words.tolist() == [g, runner_up + auction.VALUE_OFFSET + 1]
    else:
        assert words.tolist() == [((max(flat) + auction.VALUE_OFFSET) << auction.index_bits(m)) | (m - 1 - g)]
        assert auction.decode_key(int(words[0]), m) == (g, max(flat))


@pytest.mark.parametrize("second", [False, True])
def test_every_order_of_two_nodes_with_two_bids(second: bool) -> None:
    """All of [0, 3]^4: every pattern of order and ties among four bids (all 75 weak orders),
    so, as the circuit only compares and selects, every case of [0, 7]^4 up to relabelling."""
    for combo in itertools.product(range(4), repeat=4):
        check_auction([combo[:2], combo[2:]], second, f"ex{second:d}{''.join(map(str, combo))}")


@pytest.mark.parametrize("second", [False, True])
def test_a_sample_of_two_nodes_with_two_bids_in_0_7(second: bool) -> None:
    r = rng(f"s22{second}")
    combos = list(itertools.product(range(8), repeat=4))
    for _ in range(400):
        combo = combos[pick(r, len(combos))]
        check_auction([combo[:2], combo[2:]], second, f"s{second:d}{''.join(map(str, combo))}")


@pytest.mark.parametrize("second", [False, True])
def test_a_sample_of_larger_shapes(second: bool) -> None:
    """2..4 nodes, 1..3 bids each, bids in [0, 7]: every shape, random bids, with ties likely."""
    r = rng(f"shapes{second}")
    for n in (2, 3, 4):
        for counts in itertools.product((1, 2, 3), repeat=n):
            for attempt in range(2 if n < 4 else 1):
                bids = [[pick(r, 8) for _ in range(c)] for c in counts]
                check_auction(bids, second, f"sh{second:d}{n}{counts}{attempt}")


@pytest.mark.parametrize("second", [False, True])
@pytest.mark.parametrize("bids", [
    [[9], [9]], [[7, 7], [7, 7]], [[0, 0, 0], [0], [0, 0], [0, 0, 0]], [[1, 9], [9, 3]], [[3], [9, 9]],
    [[9], [8], [9]], [[2], [5, 5, 1], [5]], [[1], [2]], [[2], [1]], [[-5, -3], [-3, -7]],
    [[-INT32, -INT32], [-INT32]], [[INT32], [INT32, -INT32]], [[-INT32, INT32 - 1], [INT32]], [[0], [-1]],
])
def test_the_tie_rule_and_the_extremes(bids: list[list[int]], second: bool) -> None:
    check_auction(bids, second, f"tie{second:d}{bids}"[:16])


def test_two_nines_pay_nine() -> None:
    result, words = run_auction([[9], [9]], True, "nines")
    assert (result.winner_node, result.winner_index, result.price) == ("alice", 0, 9)
    result, _ = run_auction([[3, 9], [9, 9]], True, "nines2")
    assert (result.winner_node, result.winner_index, result.price) == ("alice", 1, 9)
    result, _ = run_auction([[3, 8], [9, 1]], True, "nines3")
    assert (result.winner_node, result.winner_index, result.price) == ("bob", 0, 8)


@pytest.mark.parametrize("second", [False, True])
@pytest.mark.parametrize("bids", [[[9], [9]], [[3, 9], [9, 9]], [[2], [5, 5, 1], [5]], [[1], [7], [7, 7]]])
def test_the_layout_follows_the_names_not_the_session_order(bids: list[list[int]], second: bool) -> None:
    """Bids are laid out in the participants' name order (the nodes contribute at offsets in that
    order): whatever order a session lists them in, the same opened words name the same winner, so
    a reordered session (free, as a repeat) cannot break a tie the other way and name a tied loser."""
    params = AuctionParams(second_price=second)
    parts, lengths = contributions(AUCTION, params, bids, (-INT32, INT32))   # NAMES are in name order
    run = run_program(auction.second_price if second else auction.first_price, parts,
                      f"ord{second:d}{bids}"[:16], prefix="auc")
    words = opened(AUCTION, params, lengths, run).words
    flat = [v for node in bids for v in node]
    where = [(NAMES[i], j) for i, node in enumerate(bids) for j in range(len(node))]
    expected = (*where[flat.index(max(flat))], sorted(flat)[-2] if second else max(flat))
    for order in itertools.permutations(lengths):
        o = Opened("sess", "in", order, {node: lengths[node] for node in order}, words, 0, False)
        result = AUCTION.decode(params, o)
        assert isinstance(result, AuctionResult)
        assert (result.winner_node, result.winner_index, result.price) == expected, (bids, order)


def random_bids(r: Rng, m: int, lo: int, hi: int) -> list[int]:
    return [lo + int(v) for v in random_words(r, m) % np.uint64(hi - lo + 1)]


def split(flat: list[int], r: Rng, n: int) -> list[list[int]]:
    """flat cut into n non-empty runs, one per node (n <= len(flat))."""
    assert 1 <= n <= len(flat)
    cuts = sorted({1 + pick(r, len(flat) - 1) for _ in range(n - 1)})
    while len(cuts) < n - 1:   # distinct cuts: every node holds at least one bid
        cuts = sorted(set(cuts) | {1 + pick(r, len(flat) - 1)})
    edges = [0, *cuts, len(flat)]
    return [flat[edges[i]:edges[i + 1]] for i in range(n)]


@pytest.mark.parametrize("second", [False, True])
def test_ten_thousand_int32_bids_over_three_nodes(second: bool) -> None:
    r = rng(f"10k{second}")
    flat = random_bids(r, 10_000, -INT32, INT32)
    flat[1234] = flat[8765] = INT32          # a tie for the top, across nodes
    flat[5000] = -INT32
    bids = split(flat, r, 3)
    check_auction(bids, second, f"10k{second:d}")


@pytest.mark.parametrize("second", [False, True])
def test_random_auctions_with_negative_bounds(second: bool) -> None:
    r = rng(f"neg{second}")
    for case, (m, lo, hi) in enumerate([(2, -3, -1), (17, -40, -30), (300, -5, 5), (1025, -INT32, -INT32 + 9),
                                        (777, -INT32, INT32), (64, -1, -1), (1000, INT32 - 3, INT32)]):
        n = min(2 + pick(r, 2), m)
        check_auction(split(random_bids(r, m, lo, hi), r, n), second, f"neg{second:d}/{case}")


def test_key_layout() -> None:
    assert [auction.index_bits(m) for m in (2, 3, 4, 5, 1024, 1025, 10_000)] == [1, 2, 2, 3, 10, 11, 14]
    assert auction.key_ell(10_000) == 32 + 14 + 1
    for m in (2, 3, 10_000, auction.MAX_BIDS):
        bids = np.array([INT32, -INT32], dtype=np.int64)
        keys = auction.bid_keys(bids, m - 2, m)
        assert int(keys.max()) < 1 << (auction.key_ell(m) - 1)
        assert [auction.decode_key(int(k), m) for k in keys[-2:]] == [(m - 2, INT32), (m - 1, -INT32)]
        assert not keys[:m - 2].any()
        values = auction.bid_values(bids, 0, m)
        assert values[:2].tolist() == [1 << 32, 2] and not values[2:].any()


def test_check_bid_count() -> None:
    for m in (0, 1):
        with pytest.raises(InputError, match=f"at least two bids in all, got {m}"):
            auction.check_bid_count(m)
    with pytest.raises(InputError, match=f"at most {auction.MAX_BIDS} bids in all, got {auction.MAX_BIDS + 1}"):
        auction.check_bid_count(auction.MAX_BIDS + 1)
    auction.check_bid_count(2)
    auction.check_bid_count(auction.MAX_BIDS)
    with pytest.raises(InputError, match="at least two bids"):
        AUCTION.contribution_length(AuctionParams(), {"alice": 1})


def test_auction_entry_refusals() -> None:
    params = AuctionParams()
    with pytest.raises(InputError, match="input 'in' at node alice declares bounds"):
        AUCTION.check(params, declared("alice", [0], (-(INT32 + 1), 0)), 2, 0)
    with pytest.raises(InputError, match="fixed point"):
        AUCTION.check(params, Declared("in", "alice", "number", (0, 1), 1, 16, False), 2, 0)
    with pytest.raises(RemoteProtocolError, match="beyond the 4 bids"):
        AUCTION.decode(AuctionParams(True), Opened("s", "in", ("alice", "bob"), {"alice": 2, "bob": 2},
                                                   np.array([4, 7], np.uint64), 0, False))


def garbage_first_price_key() -> int:
    """A first-price key whose position part is beyond the 5 bids: low bits 5 give position -1."""
    return ((7 + auction.VALUE_OFFSET) << auction.index_bits(5)) | 5


@pytest.mark.parametrize("second, words", [(False, [garbage_first_price_key()]), (True, [1, 0])])
def test_auction_decode_refuses_what_no_auction_opens(second: bool, words: list[int]) -> None:
    """Output shares that do not agree are refused (as a position beyond the bids already is)."""
    with pytest.raises(RemoteProtocolError, match="do not agree"):
        AUCTION.decode(AuctionParams(second), Opened("s", "in", ("alice", "bob"), {"alice": 2, "bob": 3},
                                                     np.array(words, np.uint64), 0, False))


# --------------------------------------------------------------------------- clearing price

def run_clearing(curves: Sequence[Sequence[int]], prices: Sequence[int], label: str) -> Any:
    params = ClearingParams(tuple(prices))
    CLEARING.validate(params)
    parts, lengths = contributions(CLEARING, params, curves)
    run = run_program(clearing.clearing_program, summed(parts, rng(label + "/sum")), label, prefix="clr")
    exact_draw(run)
    o = opened(CLEARING, params, lengths, run)
    assert set(o.words.tolist()) <= {0, 1} and int(o.words.sum()) <= 1
    return CLEARING.decode(params, o)


def clears_at(aggregate: Sequence[int]) -> int | None:
    return next((g for g, d in enumerate(aggregate) if d <= 0), None)


def monotone_curve(r: Rng, g: int, lo: int, hi: int) -> list[int]:
    return sorted(random_bids(r, g, lo, hi), reverse=True)


def test_clearing_price_on_random_monotone_curves() -> None:
    r = rng("clear")
    for case in range(40):
        n, g = 2 + pick(r, 4), 1 + pick(r, 20)
        scale = (3, 50, (COMPARE_BOUND - 1) // n)[case % 3]
        curves = [monotone_curve(r, g, -scale, scale) for _ in range(n)]
        start, step = pick(r, 1000) - 500, 1 + pick(r, 50)
        prices = list(range(start, start + step * g, step))
        result = run_clearing(curves, prices, f"clr{case}")
        index = clears_at([sum(c[k] for c in curves) for k in range(g)])
        assert result.index == index, (curves, index)
        assert result.price == (None if index is None else prices[index])


@pytest.mark.parametrize("g", [1, 2, 3, 7, 8, 9, 16, 20])
def test_clearing_price_at_the_ends(g: int) -> None:
    prices = [10 * (k + 1) for k in range(g)]
    short = [[5 + g - k for k in range(g)], [-1] * g]               # demand exceeds supply everywhere
    assert run_clearing(short, prices, f"none{g}").price is None
    first = [[0] * g, [-k for k in range(g)], [0] * g]               # D_0 = 0: clears at the first price
    assert run_clearing(first, prices, f"first{g}").index == 0
    last = [[g - 1 - k for k in range(g)], [0] * g]                  # D_g hits 0 at the last price only
    assert run_clearing(last, prices, f"last{g}").index == g - 1
    limit = (COMPARE_BOUND - 1) // 2
    extreme = [[limit] * g, [limit - 1] + [-limit] * (g - 1)]        # |D| up to 2^30 - 2
    assert run_clearing(extreme, prices, f"ext{g}").index == (None if g == 1 else 1)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 5), data=st.data(), seed=st.binary(min_size=8, max_size=8))
def test_clearing_program_on_any_aggregate(n: int, data: st.DataObject, seed: bytes) -> None:
    """Even for a non-monotone aggregate the opened vector is one-hot at the first g with D_g <= 0,
    or all zero: it is a function of that index alone."""
    bound = COMPARE_BOUND - 1
    d = data.draw(st.lists(st.one_of(st.integers(-bound, bound), st.sampled_from([-bound, -1, 0, 1, bound])),
                           min_size=1, max_size=20))
    label = f"any{seed.hex()}"
    run = run_program(clearing.clearing_program, additive_shares(np.array(d, np.int64).astype(np.uint64), n,
                                                                 rng(label + "/in")), label, prefix="clr")
    exact_draw(run)
    index = clears_at(d)
    assert run.xored().tolist() == [int(k == index) for k in range(len(d))]


def test_clearing_program_on_a_zigzag() -> None:
    for d in ([5, -1, 5, -1], [1, 1, 0, 7, -3], [-2, 9, 9], [3, 2, 1, 4, 5, 6, 1, 0, -1, 5]):
        run = run_program(clearing.clearing_program, additive_shares(np.array(d, np.int64).astype(np.uint64), 3,
                                                                     rng(f"zz{d}")), f"zz{d}"[:16], prefix="clr")
        index = clears_at(d)
        assert run.xored().tolist() == [int(k == index) for k in range(len(d))]


def test_check_grid() -> None:
    with pytest.raises(InputError, match="needs a price grid"):
        clearing.check_grid(())
    with pytest.raises(InputError, match=f"at most {clearing.MAX_PRICES} prices, got {clearing.MAX_PRICES + 1}"):
        clearing.check_grid(tuple(range(clearing.MAX_PRICES + 1)))
    with pytest.raises(InputError, match=r"strictly increasing: price 3 \(3\) is not above price 2 \(3\)"):
        clearing.check_grid((1, 3, 3))
    with pytest.raises(InputError, match=r"price 2 \(4\) is not above price 1 \(5\)"):
        clearing.check_grid((5, 4, 9))
    clearing.check_grid((7,))
    clearing.check_grid(tuple(range(clearing.MAX_PRICES)))
    with pytest.raises(InputError):
        CLEARING.validate(ClearingParams((2, 1)))
    with pytest.raises(RemoteProtocolError, match="clearing-price"):
        catalogue.params_from_wire(CLEARING, {"prices": (2, 2)})


def test_a_rising_curve_is_refused_when_stored(tmp_path: Path) -> None:
    """clearing.check_monotone moved to the store: a curve is checked once, when it is stored
    (a refusal at prepare would depend on the values); the message names positions, not values."""
    with Store.open_dir(tmp_path) as store:
        with pytest.raises(InputError) as info:
            store.put_input("demand", np.array([1000, 999, 1234, 5], np.int64), 0, False, kind="curve")
        message = str(info.value)
        assert "'demand'" in message and "value 3 is above value 2" in message
        assert not {"1000", "999", "1234"} & set(message.split())
        store.put_input("flat", np.array([3, 3, -INT32], np.int64), 0, False, kind="curve")
        assert store.get_input("flat").kind == "curve"
    params = ClearingParams((1, 2, 3))
    with pytest.raises(InputError, match="one net demand per price"):
        contributions(CLEARING, params, [[1, 0], [0, 0]])


def test_clearing_decode_refuses_two_prices() -> None:
    with pytest.raises(RemoteProtocolError, match="more than one price"):
        CLEARING.decode(ClearingParams((1, 2, 3)), Opened("s", "in", ("alice", "bob"), {"alice": 3, "bob": 3},
                                                          np.array([0, 1, 1], np.uint64), 0, False))


# --------------------------------------------------------------------------- plurality, winner only

def winner_program(ctx: Context, counts: Words) -> Program[Words]:
    """The node's program of a winner-only plurality, as the catalogue's engine runs it."""
    return (yield from auction.winner(ctx, counts, COMPARE_BITS - 1))


def run_winner(counts: Sequence[int], n: int, label: str) -> int:
    options = len(counts)
    params = PluralityParams(options, winner_only=True)
    PLURALITY.validate(params)
    program = winner_program
    run = run_program(program, additive_shares(np.array(counts, np.uint64), n, rng(label)), label, prefix="plu")
    exact_draw(run)
    o = opened(PLURALITY, params, {NAMES[i]: options for i in range(n)}, run)
    result = PLURALITY.decode(params, o)
    assert isinstance(result, PluralityResult) and result.counts is None
    return int(result.winner)


def plain_winner(counts: Sequence[int]) -> int:
    return counts.index(max(counts))     # the lowest option among the most votes


@pytest.mark.parametrize("counts", [
    [0, 0], [1, 0], [0, 1], [3, 5, 5, 1], [5, 5, 5], [0] * 17, [2, 9, 1, 9, 9, 0, 3], [7] * 256,
    [COMPARE_BOUND - 1, COMPARE_BOUND - 1, 0], [0, COMPARE_BOUND - 1], [COMPARE_BOUND - 2, COMPARE_BOUND - 1],
    [1] * 255 + [2],
])
def test_plurality_winner_with_ties(counts: list[int]) -> None:
    assert run_winner(counts, 3, f"plu{len(counts)}{counts[:4]}"[:16]) == plain_winner(counts)


def test_plurality_winner_from_ballots() -> None:
    r = rng("ballots")
    for case in range(12):
        options, n = 2 + pick(r, 12), 2 + pick(r, 4)
        ballots = [[pick(r, options) for _ in range(pick(r, 30))] for _ in range(n)]
        if case == 0:
            ballots = [[0, 1], [1, 0]] + [[] for _ in range(n - 2)]   # a tie: option 0 wins
        params = PluralityParams(options, winner_only=True)
        parts, lengths = contributions(PLURALITY, params, ballots, (0, options - 1))
        counts = [sum(b.count(k) for b in ballots) for k in range(options)]
        program = winner_program
        run = run_program(program, summed(parts, rng(f"bal{case}/sum")), f"bal{case}", prefix="plu")
        result = PLURALITY.decode(params, opened(PLURALITY, params, lengths, run))
        assert isinstance(result, PluralityResult)
        assert result.winner == plain_winner(counts), (ballots, counts)
        # the full counts variant decodes the same winner from the opened counts
        full = PLURALITY.decode(PluralityParams(options), Opened("s", "in", tuple(lengths), lengths,
                                                                 np.sum(parts, axis=0), 0, False))
        assert isinstance(full, PluralityResult)
        assert full.counts == counts and full.winner == result.winner


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 6), min_size=2, max_size=12), n=st.integers(2, 5),
       seed=st.binary(min_size=8, max_size=8))
def test_plurality_winner_property(counts: list[int], n: int, seed: bytes) -> None:
    assert run_winner(counts, n, f"plp{seed.hex()}") == plain_winner(counts)


def test_plurality_decode_refuses_a_non_option() -> None:
    with pytest.raises(RemoteProtocolError, match="not an option"):
        PLURALITY.decode(PluralityParams(3, True), Opened("s", "in", ("alice", "bob"), {"alice": 3, "bob": 3},
                                                          np.array([3], np.uint64), 0, False))
