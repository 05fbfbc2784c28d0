"""The sign-bit circuit of mpc/protocols/compare.py and the comparisons on it (PROTOCOLS.md §2, §5,
§6), run as programs (mpc/protocols/circuit.py `sign_bit`, `at_least`, `less_than`) on n
`CircuitParty` engines joined by the in-memory router of tests/sim/common.py, with the trusted
dealer's bit triples sized by `plan`; against the plaintext result, on every value of small
rings and at the edges. Also: Beaver AND as a property; `rounds` and `triple_words` against their
formulas and against what a run draws; step labels; what a party receives against uniform; and
the engine's refusals, with the plan's round labels given as the node gives them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Send
from mpc.prg import AesCtrRng, Rng, SystemRng, random_words
from mpc.protocols.beaver import BitTriples, TripleSource, beaver_finish, beaver_open_message
from mpc.protocols.circuit import (
    CircuitParty,
    Context,
    Plan,
    Program,
    ProgramFactory,
    at_least,
    less_than,
    plan,
    sign_bit,
)
from mpc.protocols.compare import (
    FAN_MAX_BATCH,
    _block_tree,
    _csa_depth,
    _csa_tree,
    _fan_plan,
    _greedy_tree,
    _layer_plan,
    _mask_plan,
    _tree_cost,
    _wallace_tree,
    ell_for_tally,
    node_words,
    rounds,
    triple_layout,
    triple_words,
)
from mpc.ot.triples import ALL
from mpc.ring import Words, reduce_bits, words_from_bytes
from tests.sim.common import (
    Dealt,
    Run,
    ZeroCoins,
    ZeroDealt,
    additive_shares,
    deliver,
    exact_draw,
    names,
    planned,
    rng,
    route,
    run_program,
    sends_to,
)
from tests.sim.dealer import TrustedDealer

PREFIX = "cmp"   # the threshold protocol's step prefix (mpc/protocols/threshold.py)
CSA_DEPTH = (0, 1, 2, 3, 3)   # for n = 2..6


def xor_shares(values: Words, n: int, r: Rng) -> list[Words]:
    shares = [random_words(r, values.size) for _ in range(n - 1)]
    return [values ^ xor_all(shares), *shares]


def xor_all(words: Sequence[Words]) -> Words:
    out = np.zeros_like(words[0])
    for w in words:
        out ^= w
    return out


def msb(values: Words, ell: int) -> Words:
    return (reduce_bits(values, ell) >> np.uint64(ell - 1)) & np.uint64(1)


def edge_values(ell: int) -> Words:
    half = 1 << (ell - 1)
    return np.array([0, 1, half - 1, half, half + 1, (1 << ell) - 1, (1 << ell) - 2], dtype=np.uint64)


def to_ring(values: Sequence[int], ell: int) -> Words:
    return np.array([v % (1 << ell) for v in values], dtype=np.uint64)


def steps_of(run: Run) -> list[str]:
    """The step labels of the run's rounds, in order."""
    return [f"{run.engines[0].prefix}/{label}" for label, _ in run.plan.rounds]


# --------------------------------------------------------------------------- programs

@functools.cache
def msb_program(ell: int) -> ProgramFactory:
    """The sign bit of this party's shares mod 2^ell (one factory per ell, so plans are cached)."""
    def factory(ctx: Context, share: Words) -> Program[Words]:
        return (yield from sign_bit(ctx, "", share, ell))
    return factory


@functools.cache
def lt_program(ell: int) -> ProgramFactory:
    """[x < y] on this party's shares of [x | y]."""
    def factory(ctx: Context, share: Words) -> Program[Words]:
        x, y = np.split(share, 2)
        return (yield from less_than(ctx, "", x, y, ell))
    return factory


def checked(run: Run, n: int, ell: int, batch: int) -> Words:
    """The run drew exactly its plan, which is the circuit's: rounds(n, ell, batch) rounds, triple_words
    words, one message per peer per round. Returns: the XOR of the output shares, checked to be bits."""
    exact_draw(run)
    p = run.plan
    assert p.bit_words == triple_words(n, ell, batch) and p.arith_triples == p.dabits == 0
    assert len(p.rounds) == rounds(n, ell, batch) and p.output_words == batch
    for me in names(n):
        assert len(run.views[me]) == rounds(n, ell, batch) * (n - 1)
    got = run.xored()
    assert got.dtype == np.uint64 and set(np.unique(got).tolist()) <= {0, 1}
    return got


def run_sign_bit(values: Words, n: int, ell: int, label: str) -> Run:
    shares = additive_shares(values, n, rng(label + "/in"))   # full 64-bit shares
    return run_program(msb_program(ell), shares, label, prefix=PREFIX, labels=True)


def sign_bit_of(values: Words, n: int, ell: int, label: str) -> Words:
    return checked(run_sign_bit(values, n, ell, label), n, ell, values.size)


def run_at_least(xs: Sequence[int], k: int | Words, n: int, ell: int, label: str) -> Words:
    def factory(ctx: Context, share: Words) -> Program[Words]:
        return (yield from at_least(ctx, "", share, k, ell))

    shares = additive_shares(to_ring(xs, ell), n, rng(label + "/in"))
    return checked(run_program(factory, shares, label, prefix=PREFIX, labels=True), n, ell, len(xs))


def run_less_than(xs: Sequence[int], ys: Sequence[int], n: int, ell: int, label: str) -> Words:
    r = rng(label + "/in")
    shares = [np.concatenate(p) for p in zip(additive_shares(to_ring(xs, ell), n, r),
                                              additive_shares(to_ring(ys, ell), n, r))]
    return checked(run_program(lt_program(ell), shares, label, prefix=PREFIX, labels=True), n, ell, len(xs))


# --------------------------------------------------------------------------- Beaver AND

@settings(max_examples=60, deadline=None)
@given(x=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=16), data=st.data(),
       n=st.integers(2, 5), seed=st.binary(min_size=16, max_size=16))
def test_beaver_and_identity(x: list[int], data: st.DataObject, n: int, seed: bytes) -> None:
    y = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(x), max_size=len(x)))
    r = AesCtrRng(seed)
    xw, yw = np.array(x, dtype=np.uint64), np.array(y, dtype=np.uint64)
    xs, ys = xor_shares(xw, n, r), xor_shares(yw, n, r)
    triples = [p.take(len(x)) for p in TrustedDealer(n, r).pools(len(x))]
    opened = [beaver_open_message(xs[i], ys[i], triples[i]) for i in range(n)]
    d, e = xor_all([o[0] for o in opened]), xor_all([o[1] for o in opened])
    z = [beaver_finish(i == 0, d, e, triples[i]) for i in range(n)]
    assert np.array_equal(xor_all(z), xw & yw)


def test_dealer_triples_satisfy_c_is_a_and_b() -> None:
    for n in (2, 3, 5):
        ts = [p.take(100) for p in TrustedDealer(n, rng(f"dealer{n}")).pools(100)]
        a, b, c = (xor_all([getattr(t, f) for t in ts]) for f in "abc")
        assert np.array_equal(c, a & b)
        assert "redacted" in repr(ts[0]) and str(int(ts[0].a[0])) not in repr(ts[0])


def test_beaver_rejects_mismatched_lengths() -> None:
    t = TrustedDealer(2, rng("len")).pools(3)[0].take(3)
    with pytest.raises(LocalProtocolError):
        beaver_open_message(np.zeros(2, np.uint64), np.zeros(2, np.uint64), t)
    with pytest.raises(LocalProtocolError):
        beaver_finish(True, np.zeros(3, np.uint64), np.zeros(4, np.uint64), t)
    with pytest.raises(LocalProtocolError):
        BitTriples(np.zeros(2, np.uint64), np.zeros(3, np.uint64), np.zeros(2, np.uint64))


def test_triple_source_refuses_reuse_and_exhaustion() -> None:
    pool = TrustedDealer(3, rng("reuse")).pools(10)[1]
    source: TripleSource = pool
    first = pool.take_range(0, 4)
    with pytest.raises(LocalProtocolError, match="already handed out"):
        pool.take_range(2, 4)          # the same words asked for again
    with pytest.raises(LocalProtocolError, match="already handed out"):
        source.take(4)                 # the cursor starts at 0: words 0..3 are gone
    assert pool.take_range(4, 6).words == 6 and first.words == 4
    with pytest.raises(LocalProtocolError, match="exhausted"):
        pool.take_range(10, 1)
    assert pool.remaining == 0


def test_engine_refuses_an_exhausted_source() -> None:
    """A run takes exactly triple_words(n, ell, batch) words; a second run on the same pool finds none."""
    n, ell = 3, 8
    dealt: list[Dealt] = []

    def deal(p: Plan, k: int) -> Dealt:
        dealt.append(Dealt(p, k, rng("exhaust")))
        return dealt[-1]

    run = run_program(msb_program(ell), additive_shares(np.arange(4, dtype=np.uint64), n, rng("exhaust/in")),
                      "exhaust", prefix=PREFIX, dealt=deal)
    checked(run, n, ell, 4)
    assert dealt[0].bits[0].size == triple_words(n, ell, 4)
    second = CircuitParty("s2", "alice", names(n), msb_program(ell)(dealt[0].context(0, n), np.zeros(4, np.uint64)),
                          PREFIX)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        second.start()


# --------------------------------------------------------------------------- sign bit

@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("ell", [2, 8, 12, 32, 64])
@pytest.mark.parametrize("batch", [1, 1000])
def test_sign_bit_matches_plaintext(n: int, ell: int, batch: int) -> None:
    label = f"msb{n}/{ell}/{batch}"
    values = reduce_bits(random_words(rng(label + "v"), batch), ell)
    if batch > 7:
        values[:7] = edge_values(ell)
    run = run_sign_bit(values, n, ell, label)
    got = checked(run, n, ell, batch)
    assert np.array_equal(got, msb(values, ell))
    steps = steps_of(run)
    assert {step for _, step, _ in run.views["alice"]} == set(steps) and len(steps) == rounds(n, ell, batch)
    assert len(run.views["alice"]) == rounds(n, ell, batch) * (n - 1)  # one message per peer per round
    assert all(e.finished and e.waiting_for == () for e in run.engines)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_sign_bit_on_every_value_of_small_rings(n: int) -> None:
    for ell in range(2, 9):
        values = np.arange(1 << ell, dtype=np.uint64)
        assert sign_bit_of(values, n, ell, f"all{n}/{ell}").tolist() == [int(v >> (ell - 1)) for v in values], ell


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_sign_bit_on_every_value_of_small_rings_a_few_at_a_time(n: int) -> None:
    """The fan-in prefix (at most FAN_MAX_BATCH values), on every value of rings up to 2^9."""
    for ell in range(2, 10):
        values = np.arange(1 << ell, dtype=np.uint64)
        for start in range(0, values.size, FAN_MAX_BATCH):
            chunk = values[start:start + FAN_MAX_BATCH]
            assert sign_bit_of(chunk, n, ell, f"few{n}/{ell}/{start}").tolist() == [int(v >> (ell - 1)) for v in chunk]


@pytest.mark.parametrize(("n", "ell"), [(3, 2), (3, 3), (3, 12), (3, 25), (3, 32), (3, 64), (4, 32), (5, 25)])
def test_sign_bit_edges_one_at_a_time(n: int, ell: int) -> None:
    """One value at a time: the fan-in prefix, g folded into its first level for 3 parties on 25 bits
    (the vote's) and from 4 parties on."""
    for v in edge_values(ell):
        values = np.array([v], dtype=np.uint64)
        assert np.array_equal(sign_bit_of(values, n, ell, f"edge{n}/{ell}/{int(v)}"), msb(values, ell)), int(v)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 5), ell=st.integers(2, 64), data=st.data())
def test_sign_bit_property(n: int, ell: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=70))
    words = reduce_bits(np.array(values, dtype=np.uint64), ell)
    assert np.array_equal(sign_bit_of(words, n, ell, f"prop{n}/{ell}/{len(values)}"), msb(words, ell))


def test_shares_are_reduced_mod_two_to_the_ell() -> None:
    """Shares mod 2^64 work as given: reducing them keeps a sharing of x mod 2^ell."""
    n, ell = 3, 12
    values = np.array([0, 5, 2047, 2048, 4095], dtype=np.uint64)
    shares = additive_shares(values, n, rng("reduce"))   # full 64-bit shares, not reduced
    assert any(int(s.max()) >= 1 << ell for s in shares)
    run = run_program(msb_program(ell), shares, "reduce", prefix=PREFIX, labels=True)
    assert np.array_equal(checked(run, n, ell, values.size), msb(values, ell))


# --------------------------------------------------------------------------- comparisons

@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("ell", [8, 12, 32, 64])
def test_at_least_public_edges(n: int, ell: int) -> None:
    half = 1 << (ell - 1)
    k = 37 if ell > 8 else 5
    diffs = [-1, 0, 1, -2, 2, -half, half - 1, -half + 1, half - 2, -k]
    xs = [k + d for d in diffs]
    got = run_at_least(xs, k, n, ell, f"ge{n}/{ell}")
    assert got.tolist() == [int(x >= k) for x in xs]
    # a per-value threshold, and thresholds near the top of the ring
    ks = [half - 1, 0, 1, -half + 4, 2]
    ys = [0, 0, 0, 3, 1]
    got = run_at_least(ys, to_ring(ks, ell), n, ell, f"gev{n}/{ell}")
    assert got.tolist() == [int(y >= kk) for y, kk in zip(ys, ks)]


def signed_pairs(ell: int) -> list[tuple[int, int]]:
    """Every pair of signed ell-bit values whose difference is a signed ell-bit value too."""
    half = 1 << (ell - 1)
    return [(x, y) for x in range(-half, half) for y in range(-half, half) if -half <= x - y < half]


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("ell", [2, 3, 4, 5])
def test_comparisons_on_every_pair_of_small_rings(n: int, ell: int) -> None:
    pairs = signed_pairs(ell)
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    assert run_less_than(xs, ys, n, ell, f"lta{n}/{ell}").tolist() == [int(x < y) for x, y in pairs]
    got = run_at_least(xs, to_ring(ys, ell), n, ell, f"gea{n}/{ell}")
    assert got.tolist() == [int(x >= y) for x, y in pairs]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("ballots", [0, 1, 4, 7, 100, 1000])
def test_threshold_vote_on_a_tally(n: int, ballots: int) -> None:
    """[T >= k] for tallies 0 <= T <= N: T = 0, T = N, and around k (at least half; k = 0, N + 1)."""
    ell = ell_for_tally(ballots)
    for k in {(ballots + 1) // 2, 0, ballots + 1, ballots, 2 * (ballots + 1)}:
        tallies = sorted({0, ballots, max(k - 1, 0), min(k, ballots), min(k + 1, ballots), ballots // 3})
        got = run_at_least(tallies, k, n, ell, f"vote{n}/{ballots}/{k}")
        assert got.tolist() == [int(t >= k) for t in tallies], (k, tallies)


def test_ell_for_tally() -> None:
    assert [ell_for_tally(n) for n in (0, 1, 2, 3, 4, 7, 8, 1000)] == [2, 3, 4, 4, 5, 5, 6, 12]
    for n in range(0, 600):
        ell = ell_for_tally(n)
        assert ell >= math.ceil(math.log2(n + 1)) + 2 and 2 ** (ell - 1) >= 2 * (n + 1) > n
    with pytest.raises(InputError):
        ell_for_tally(-1)
    with pytest.raises(InputError):
        ell_for_tally(2**63)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("ell", [2, 8, 32, 64])
@pytest.mark.parametrize("batch", [1, 1000])
def test_less_than_random(n: int, ell: int, batch: int) -> None:
    label = f"lt{n}/{ell}/{batch}"
    r = rng(label)
    quarter = 1 << max(ell - 2, 0)
    # signed values in [-2^(ell-2), 2^(ell-2)): every difference is in range
    raw = random_words(r, 2 * batch) % np.uint64(2 * quarter)
    xs = [int(v) - quarter for v in raw[:batch]]
    ys = [int(v) - quarter for v in raw[batch:]]
    if batch > 4:  # the extreme differences -2^(ell-1) and 2^(ell-1) - 1, and ties
        half = 1 << (ell - 1)
        xs[:4], ys[:4] = [-(half // 2), half // 2 - 1, 3 % half, 0], [half // 2, -(half // 2), 3 % half, 0]
    assert run_less_than(xs, ys, n, ell, label).tolist() == [int(x < y) for x, y in zip(xs, ys)]


# --------------------------------------------------------------------------- protocol errors

def three_parties(ell: int = 8, batch: int = 3, prefix: str = PREFIX, label: str = "err") -> list[CircuitParty]:
    """Three engines of the sign bit on zeros, given the plan's round labels as the node gives them."""
    factory = msb_program(ell)
    p = planned(factory, 3, batch)
    pre = Dealt(p, 3, rng(label + prefix))
    labels = [step for step, _ in p.rounds]
    return [CircuitParty("sess", me, names(3), factory(pre.context(i, 3), np.zeros(batch, np.uint64)), prefix, labels)
            for i, me in enumerate(names(3))]


def steps(ell: int = 8, batch: int = 3, prefix: str = PREFIX) -> list[str]:
    return [f"{prefix}/{label}" for label, _ in planned(msb_program(ell), 3, batch).rounds]


def test_messages_before_start_are_buffered() -> None:
    a, b, c = three_parties()
    to_c = [ev for ev in a.start() + b.start() if isinstance(ev, Send) and ev.to == "carlos"]
    assert [ev.step for ev in to_c] == [steps()[0]] * 2
    assert c.receive("alice", to_c[0].step, to_c[0].payload) == []
    assert c.receive("bob", to_c[1].step, to_c[1].payload) == []
    out = c.start()   # both round-0 openings are in: carlos goes straight to round 1
    assert {ev.step for ev in out if isinstance(ev, Send)} == {steps()[0], steps()[1]}


def test_wrong_repeated_early_and_malformed_messages() -> None:
    a, b, c = three_parties()
    s = steps()
    msg = sends_to(a.start(), "bob")
    with pytest.raises(RoundMismatch, match="sum/seed"):
        b.receive("alice", "sum/seed", msg.payload)
    with pytest.raises(RoundMismatch, match="neither this round's nor the next"):
        b.receive("alice", s[1], msg.payload)   # not started: only round 0 can come
    for sender in ("mallory", "bob"):
        with pytest.raises(RemoteProtocolError, match="not a peer") as info:
            b.receive(sender, msg.step, msg.payload)
        assert not isinstance(info.value, RoundMismatch)
    assert b.receive("alice", msg.step, msg.payload) == []
    with pytest.raises(RoundMismatch, match="'alice'.*already waiting"):
        b.receive("alice", msg.step, msg.payload)   # kept for round 0, and a second one is too many
    b.start()
    assert b.waiting_for == ("carlos",)   # alice's kept message counts for round 0
    with pytest.raises(RoundMismatch, match="already received"):
        b.receive("alice", msg.step, msg.payload)
    with pytest.raises(RoundMismatch, match="neither this round's nor the next"):
        b.receive("carlos", s[2], bytes(16 * 1))   # two rounds ahead
    from_c = sends_to(c.start(), "bob")
    with pytest.raises(RemoteProtocolError, match="bytes") as info:
        b.receive("carlos", from_c.step, from_c.payload[:-8])
    assert not isinstance(info.value, RoundMismatch)
    with pytest.raises(LocalProtocolError, match="already started"):
        b.start()
    assert sends_to(b.receive("carlos", from_c.step, from_c.payload), "alice").step == s[1]   # the good one counts
    # a malformed message that comes before start is kept, and refused when its round begins
    _, early, _ = three_parties(label="early")
    assert early.receive("alice", msg.step, msg.payload[:-8]) == []
    with pytest.raises(RemoteProtocolError, match="'cmp/csa/0' from 'alice'.*bytes") as info:
        early.start()
    assert not isinstance(info.value, RoundMismatch)


def test_stale_and_after_finish_messages() -> None:
    parties = three_parties()
    round0 = {p.me: p.start() for p in parties}
    bob = parties[1]
    deliver(bob, [(p, sends_to(round0[p], "bob")) for p in ("alice", "carlos")])
    assert bob.waiting_for == ("alice", "carlos") and bob.rounds == 2   # now in round 1, 'cmp/gen'
    stale = sends_to(round0["alice"], "bob")
    with pytest.raises(RoundMismatch, match="'cmp/csa/0' from 'alice' is neither this round's nor the next"):
        bob.receive("alice", stale.step, stale.payload)   # a replay of a finished round

    engines = {p.me: p for p in three_parties(prefix="again")}
    _, views = route(engines, rng("stale"))
    assert all(p.finished for p in engines.values())
    sender, step, payload = views["bob"][-1]
    with pytest.raises(RoundMismatch, match="after the end"):
        engines["bob"].receive(sender, step, payload)


def test_bad_shares_thresholds_and_parameters() -> None:
    pre = Dealt(planned(msb_program(8), 2, 300), 2, rng("bad"))
    wrong: list[Any] = [np.zeros(3, np.int64), np.zeros((3, 1), np.uint64), np.zeros(3, np.float64)]
    for shares in wrong:
        party = CircuitParty("s", "alice", names(2), msb_program(8)(pre.context(0, 2), shares), PREFIX)
        with pytest.raises(LocalProtocolError, match="one-dimensional uint64"):
            party.start()
    for ell in (1, 65):
        party = CircuitParty("s", "alice", names(2), msb_program(ell)(pre.context(0, 2), np.zeros(3, np.uint64)),
                             PREFIX)
        with pytest.raises(LocalProtocolError, match="ell must be in 2..64"):
            party.start()

    def four_thresholds(ctx: Context, share: Words) -> Program[Words]:
        return (yield from at_least(ctx, "", share, np.zeros(4, np.uint64), 8))

    with pytest.raises(LocalProtocolError, match="4 thresholds for 3 values"):
        CircuitParty("s", "alice", names(2), four_thresholds(pre.context(0, 2), np.zeros(3, np.uint64)), PREFIX).start()
    # the number of values is public: a party with another count is refused by its peers
    alice = CircuitParty("s", "alice", names(2), msb_program(8)(pre.context(0, 2), np.zeros(300, np.uint64)), PREFIX)
    bob = CircuitParty("s", "bob", names(2), msb_program(8)(pre.context(1, 2), np.zeros(100, np.uint64)), PREFIX)
    msg = sends_to(alice.start(), "bob")
    bob.start()
    with pytest.raises(RemoteProtocolError, match="'alice'.*bytes"):
        bob.receive("alice", msg.step, msg.payload)
    for me, parties in [("zed", ("alice", "bob")), ("alice", ("alice",)), ("alice", ("alice", "alice")),
                        ("alice", ("alice", "bob", "alice"))]:
        with pytest.raises(LocalProtocolError):
            CircuitParty("s", me, parties, msb_program(8)(pre.context(0, 2), np.zeros(3, np.uint64)), PREFIX)
    for args in ((3, 8, 0), (1, 8, 1), (3, 1, 1), (3, 65, 1)):
        with pytest.raises(LocalProtocolError):
            triple_words(*args)
    for n, ell, batch in ((1, 8, 1), (3, 1, 1), (3, 65, 1), (3, 8, 0)):
        with pytest.raises(LocalProtocolError):
            rounds(n, ell, batch)


def test_step_labels_carry_the_prefix() -> None:
    few = ["vote/cmp/csa/0", "vote/cmp/gen", "vote/cmp/fan/0", "vote/cmp/fan/1"]            # the fan-in prefix
    many = ["vote/cmp/csa/0", "vote/cmp/gen", *(f"vote/cmp/ks/{t}" for t in range(5))]    # Kogge-Stone
    for batch, expected in ((3, few), (FAN_MAX_BATCH + 1, many)):
        assert steps(ell=32, batch=batch, prefix="vote/cmp") == expected
        engines = {p.me: p for p in three_parties(ell=32, batch=batch, prefix="vote/cmp")}
        _, views = route(engines, rng("labels"))
        for me in names(3):
            for peer in set(names(3)) - {me}:
                got = sorted((step for sender, step, _ in views[me] if sender == peer), key=expected.index)
                assert got == expected


def test_round_and_triple_counts() -> None:
    many = FAN_MAX_BATCH + 1                     # beyond it, always the Kogge-Stone prefix
    assert rounds(3, 32, many) == 7 == 1 + 1 + math.ceil(math.log2(31))
    assert rounds(2, 2, many) == 1 and rounds(5, 64, many) == 3 + 1 + 6
    assert triple_words(3, 32, 64) == 118        # 118 AND gates per value
    for n, ell in [(2, 12), (4, 12), (5, 64)]:
        assert triple_words(n, ell, 640) == 10 * triple_words(n, ell, 64)
    # the module docstring's formulas, for every n and ell it covers
    prefix_gates = {ell: sum(g for _, g, _ in _layer_plan(2, ell, many)) for ell in range(2, 65)}
    assert [prefix_gates[ell] for ell in (2, 8, 12, 32, 64)] == [1, 17, 29, 87, 182]
    for n in range(2, 7):
        for ell in range(2, 65):
            ks = CSA_DEPTH[n - 2] + 1 + math.ceil(math.log2(ell - 1))
            assert rounds(n, ell, many) == ks and _csa_depth(n) == CSA_DEPTH[n - 2], (n, ell)
            gates = (n - 2) * (ell - 1) + prefix_gates[ell]
            assert all(opened == 0 for _, _, opened in _layer_plan(n, ell, many))   # AND layers only
            assert sum(g for _, g, _ in _layer_plan(n, ell, many)) == gates, (n, ell)
            assert triple_words(n, ell, 64) == gates
            # a few values: the fan-in prefix where it has fewer levels, never more rounds
            assert rounds(n, ell, 1) <= ks and (ell < 8 or rounds(n, ell, 1) < ks), (n, ell)
            assert rounds(n, ell, 1) >= CSA_DEPTH[n - 2] + math.ceil(math.log(ell - 1, 8)), (n, ell)
    # one value among 3 parties on 32 bits: 4 rounds instead of 7
    assert rounds(3, 32, 1) == 4
    assert triple_words(3, 32, 1) == 9           # AND gates in three rounds, one partly used word each
    assert [label for label, _, _ in _layer_plan(3, 32, 1)] == ["csa/0", "gen", "fan/0", "fan/1"]
    # the vote's shape, 3 parties on 25 bits: g folded into the first fan-in level, 3 rounds
    assert [label for label, _, _ in _layer_plan(3, 25, 1)] == ["csa/0", "fan/0", "fan/1"]
    # from 4 parties on, g folded on 32 bits too: a round less than carry-save, g and two fan-in levels
    assert all(rounds(n, 32, 1) == _csa_depth(n) + 2 for n in (4, 5, 7, 10))
    # and the program the engine runs draws exactly that: per round and gate group ceil(gates * batch
    # / 64) words, d and e sent, then ceil(opened * batch / 64) words
    for n in (2, 3, 4, 5, 7):
        for ell in (2, 3, 8, 12, 32, 33, 64):
            for batch in (1, 5, 32, 33, 64, 65, 1000):
                p = plan(msb_program(ell), n, batch)
                layers = _mask_plan(n, ell, min(batch, many))
                assert p.bit_words == triple_words(n, ell, batch) and len(p.rounds) == rounds(n, ell, batch)
                assert dict(p.layout) == triple_layout(n, ell, batch)
                assert p.rounds == tuple((label, sum(2 * -(-g * batch // 64) for _, g in groups) + -(-v * batch // 64))
                                         for label, groups, v in layers)


def test_fan_in_masks_are_fresh_and_their_products_ready_in_time() -> None:
    """Every opened input of the fan-in prefix has a mask of its own (never one of another input, level
    or value), and every product of masks a level reads was made in that level's round at the latest."""
    for parties in (2, 3, 4, 7):
        for ell in (4, 8, 12, 24, 25, 32, 33, 64):
            for batch in (1, 8, 32):
                fan = _fan_plan(ell - 1, _csa_depth(parties), batch)
                if fan is None:
                    continue
                # level 0's round (from 1): after the carry-save adders, and g unless it is folded in
                first = _csa_depth(parties) + 1 + (not fan.fold)
                masks = np.concatenate([level.masks for level in fan.levels])
                assert np.unique(masks).size == masks.size and masks.max() < fan.singles
                ready = {int(row): 0 for row in range(fan.singles)}   # the round after which a row is ready
                for rnd, (left, right, out) in enumerate(fan.gen, start=1):
                    assert all(ready[int(a)] < rnd and ready[int(b)] < rnd for a, b in zip(left, right))
                    ready |= {int(row): rnd for row in out}
                for t, level in enumerate(fan.levels):
                    read = [int(row) for row in level.source if row < fan.rows]
                    assert all(ready[row] <= first + t for row in read), (parties, ell, batch, t)


def test_carry_save_gates_run_among_their_summands_holders_only() -> None:
    """From four parties on, a carry-save adder's AND gates run among the parties that hold its three
    summands: those pairs alone make their triples, and their openings go to those parties alone. With
    four parties and many values (the Kogge-Stone prefix: no fan-in products in the carry-save rounds),
    csa/0 adds P0..P2's shares, so P3 makes none of its triples and gets none of its openings."""
    many, ell = FAN_MAX_BATCH + 1, 32
    p = planned(msb_program(ell), 4, many)
    csa0 = -(-(ell - 1) * many // 64)
    assert dict(p.layout) == {ALL: p.bit_words - csa0, 0b0111: csa0}
    assert p.pair_words(0, 1) == p.pair_words(1, 2) == p.bit_words
    assert p.pair_words(0, 3) == p.pair_words(2, 3) == p.bit_words - csa0
    assert [p.words_between(0, i, j) for i, j in [(0, 1), (2, 1), (0, 3), (3, 2)]] == [2 * csa0] * 2 + [0] * 2
    values = reduce_bits(random_words(rng("holders"), many), ell)
    run = run_sign_bit(values, 4, ell, "holders")
    assert np.array_equal(checked(run, 4, ell, many), msb(values, ell))   # checked: every message's size as planned
    csa = [(sender, payload) for sender, step, payload in run.views["david"] if step == f"{PREFIX}/csa/0"]
    assert sorted(sender for sender, _ in csa) == names(3) and not any(payload for _, payload in csa)


def test_each_nodes_triples_per_peer_stay_bounded_as_the_parties_grow() -> None:
    """Per node and peer (its random OTs with each peer), a comparison's triple words stay within a few
    times those of three parties however many parties there are, so a node's work grows about linearly
    with its peers: at most 2.2x up to twenty parties, where a tree whose every gate ran among all parties
    would take (n - 2) * 31 + 87 gates per value per peer (5.5x at twenty); at most 1.8x at 30, 50, 64
    and 100 parties, where the greedy tree alone took 2.2-3.0x (its last levels among nearly all parties
    one after another); at most about 2.2x up to 128 parties but for 21 counts that leave no level to
    spare. Every tree as deep as a Wallace tree (no round more), and never dearer for its busiest party
    than the Wallace or the greedy tree."""
    ell, batch = 32, 1000

    def per_peer(n: int) -> float:
        return max(node_words(triple_layout(n, ell, batch), n)) / (n - 1)

    three = per_peer(3)
    assert three == triple_words(3, ell, batch)   # three parties: every gate among all of them
    for n in range(4, 21):
        everyone = -(-((n - 2) * (ell - 1) + 87) * batch // 64)
        assert per_peer(n) <= 2.2 * three and per_peer(n) < everyone, n
    for n in (30, 50, 64, 100):
        assert per_peer(n) <= 1.8 * three, n
        assert _tree_cost(n, _greedy_tree(n)) >= 1.4 * _tree_cost(n, _csa_tree(n)), n
    # Up to 128 parties, in carry-save groups per peer: at most 5.6 (2.2x the words of three parties),
    # but for the counts just below a Wallace tree's next level, which leave the blocks no level to spare.
    tight = {*range(40, 43), *range(58, 64), *range(85, 95), 127, 128}
    for n in range(3, 129):
        tree = _csa_tree(n)
        assert len(tree) == _csa_depth(n), n
        cost = _tree_cost(n, tree)
        assert cost <= min(_tree_cost(n, _greedy_tree(n)), _tree_cost(n, _wallace_tree(n))), n
        assert cost <= (8.3 if n in tight else 5.6) * (n - 1), n


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (12, FAN_MAX_BATCH + 3)])
def test_block_trees_compute_the_sign_bit_among_many_parties(n: int, batch: int) -> None:
    """From ten parties the carry-save tree is made of blocks of parties merged into larger ones
    (`_block_tree`): the sign bits are right, every message is the size the plan says for its pair,
    and a node's triples differ from peer to peer (fewer with a peer it shares fewer groups with)."""
    ell = 32
    tree = _csa_tree(n)
    assert tree == _block_tree(n, _csa_depth(n)) and tree not in (_greedy_tree(n), _wallace_tree(n))
    values = reduce_bits(random_words(rng(f"blocks{n}"), batch), ell)
    run = run_sign_bit(values, n, ell, f"blocks{n}")
    assert np.array_equal(checked(run, n, ell, batch), msb(values, ell))
    p = run.plan
    assert len({p.pair_words(0, j) for j in range(1, n)}) > 1


# --------------------------------------------------------------------------- views

def positions_balanced(samples: np.ndarray, delta: float) -> bool:
    """Every bit position, and all bits together, look like fair coins across runs.

    `samples` is runs x positions of 0/1; Hoeffding's bound with a union bound over the
    positions makes a fair source fail with probability at most `delta`.
    """
    runs, positions = samples.shape
    ones = samples.sum(axis=0)
    slack = math.sqrt(runs * math.log(4 * positions / delta) / 2)   # half of delta per position set
    total_slack = math.sqrt(samples.size * math.log(4 / delta) / 2)  # the other half for the total
    return bool(np.all(np.abs(ones - runs / 2) <= slack) and abs(ones.sum() - samples.size / 2) <= total_slack)


def received_bits(ell: int, fixed: list[Words], dealt: Callable[[Plan, int], Dealt], order: Rng) -> np.ndarray:
    """Alice's view of one run on fixed input shares, round by round and peer by peer, as bits."""
    run = run_program(msb_program(ell), fixed, "views", prefix=PREFIX, dealt=dealt, order=order, labels=True)
    order_of = steps_of(run)
    view = sorted(run.views["alice"], key=lambda m: (order_of.index(m[1]), m[0]))
    words = np.concatenate([words_from_bytes(p) for _, _, p in view])
    return np.unpackbits(words.view(np.uint8))


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("batch", [2, FAN_MAX_BATCH + 1])
def test_openings_a_party_receives_are_uniform_bits(batch: int, n: int) -> None:
    """d and e from the peers, and the fan-in prefix's masked inputs, are fair coins across runs
    with the inputs held fixed (false-failure probability < 1e-6); with zero triples the same test
    catches the leak, and so it does with real triples but zero coins for the fan-in masks. With five
    parties the carry-save gates run among subsets (triples among their holders only)."""
    ell, runs = 12, 400
    values = np.resize(np.array([1000, 3], dtype=np.uint64), batch)
    fixed = additive_shares(values, n, rng("fixed"))
    system = SystemRng()
    p = planned(msb_program(ell), n, batch)
    fan = any(label.startswith("fan/") for label, _ in p.rounds)
    assert fan == (batch <= FAN_MAX_BATCH)

    def fresh(p: Plan, k: int) -> Dealt:
        return Dealt(p, k, AesCtrRng(system.random_bytes(16)))

    samples = np.stack([received_bits(ell, fixed, fresh, system) for _ in range(runs)])
    assert samples.shape[1] == 64 * sum(p.words_between(k, j, 0) for k in range(len(p.rounds)) for j in range(1, n))
    assert (n > 3) == any(h != ALL for h, _ in p.layout)
    assert positions_balanced(samples, 1e-6)
    leaky = np.stack([received_bits(ell, fixed, ZeroDealt, system) for _ in range(runs)])
    assert not positions_balanced(leaky, 1e-6)
    if fan:
        def coinless(p: Plan, k: int) -> Dealt:
            dealt = fresh(p, k)
            dealt.coins = ZeroCoins()
            return dealt

        leaky = np.stack([received_bits(ell, fixed, coinless, system) for _ in range(runs)])
        assert not positions_balanced(leaky, 1e-6)
