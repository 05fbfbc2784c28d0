"""Programs on secret shares (mpc/protocols/circuit.py, PROTOCOLS.md §2, §5, §8) run by n
`CircuitParty` engines joined by the in-memory router of tests/sim/common.py, with a trusted
dealer's preprocessing (tests/sim/dealer.py) sized by `plan`. Against the plaintext result:
multiply, bit_to_arith, select, at_least and less_than at the edges; `plan` against what a run
draws; the engine's refusals; and what a party receives, round by round, against uniform.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.ot.arith import ArithTriples, DaBits
from mpc.prg import AesCtrRng, Rng, SystemRng, random_words
from mpc.protocols.circuit import (
    CircuitParty,
    Context,
    Open,
    Plan,
    Program,
    ProgramFactory,
    and_gates,
    at_least,
    bit_to_arith,
    less_than,
    multiply,
    plan,
    public,
    select,
    sign_bit,
)
from mpc.ring import Words, words_from_bytes
from tests.sim.common import (
    FALSE_ALARM,
    NAMES,
    Dealt,
    Run,
    ZeroDealt,
    additive_shares,
    assert_balanced,
    balanced,
    deliver,
    exact_draw,
    rng,
    route,
    run_program,
    sends_to,
)
from tests.sim.dealer import TrustedDealer

EDGES = (0, 1, 1 << 63, (1 << 64) - 1)
MASK = (1 << 64) - 1


def xor_shares(bits: Words, n: int, r: Rng) -> list[Words]:
    shares = [random_words(r, bits.size) & np.uint64(1) for _ in range(n - 1)]
    first = bits.copy()
    for s in shares:
        first ^= s
    return [first, *shares]


def words(values: Sequence[int]) -> Words:
    return np.array([v & MASK for v in values], dtype=np.uint64)


# --------------------------------------------------------------------------- programs

def two_inputs(op: Callable[[Context, Words, Words], Program[Words]]) -> ProgramFactory:
    """A program on [x | y] (this party's shares of both halves)."""
    def factory(ctx: Context, share: Words) -> Program[Words]:
        half = share.size // 2
        return (yield from op(ctx, share[:half], share[half:]))
    return factory


def run_binary(op: Callable[[Context, Words, Words], Program[Words]], x: Words, y: Words, n: int,
               label: str) -> Run:
    r = rng(label + "/in")
    xs, ys = additive_shares(x, n, r), additive_shares(y, n, r)
    run = run_program(two_inputs(op), [np.concatenate((a, b)) for a, b in zip(xs, ys)], label)
    exact_draw(run)
    return run


word = st.one_of(st.sampled_from(EDGES), st.integers(0, MASK))


# --------------------------------------------------------------------------- multiply

@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 5), data=st.data(), seed=st.binary(min_size=8, max_size=8))
def test_multiply_matches_plaintext(n: int, data: st.DataObject, seed: bytes) -> None:
    xs = data.draw(st.lists(word, min_size=1, max_size=40))
    ys = data.draw(st.lists(word, min_size=len(xs), max_size=len(xs)))
    run = run_binary(lambda ctx, x, y: multiply(ctx, "mul", x, y), words(xs), words(ys), n, f"mul{seed.hex()}")
    assert run.added().tolist() == [(x * y) & MASK for x, y in zip(xs, ys)]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_multiply_every_pair_of_edge_words(n: int) -> None:
    pairs = [(x, y) for x in EDGES for y in EDGES]
    run = run_binary(lambda ctx, x, y: multiply(ctx, "mul", x, y), words([x for x, _ in pairs]),
                     words([y for _, y in pairs]), n, f"muledge{n}")
    assert run.added().tolist() == [(x * y) & MASK for x, y in pairs]
    assert run.plan == Plan((("mul", 2 * len(pairs)),), 0, len(pairs), 0, len(pairs))


def test_dealer_arith_triples_and_dabits() -> None:
    for n in (2, 3, 5):
        dealer = TrustedDealer(n, rng(f"deal{n}"))
        ts: list[ArithTriples] = [p.take(200) for p in dealer.arith_pools(200)]
        a, b, c = (sum(getattr(t, f) for t in ts) for f in "abc")
        assert np.array_equal(c, a * b)
        ds: list[DaBits] = [p.take(300) for p in dealer.dabit_pools(300)]
        bits = np.bitwise_xor.reduce([d.bits for d in ds])
        assert set(np.unique(bits).tolist()) == {0, 1}
        assert np.array_equal(sum(d.arith for d in ds), bits)
    pool = TrustedDealer(2, rng("once")).arith_pools(3)[1]
    pool.take(2)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        pool.take(2)
    with pytest.raises(LocalProtocolError, match="at least one"):
        pool.take(0)
    assert pool.take(1).count == 1 and pool.remaining == 0


# --------------------------------------------------------------------------- bit_to_arith, select

@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_bit_to_arith_on_every_bit_and_every_share_pattern(n: int) -> None:
    """Every XOR sharing of 0 and of 1 among n parties (2^n share vectors), batched in one run."""
    patterns = np.array([[(p >> i) & 1 for i in range(n)] for p in range(1 << n)], dtype=np.uint64)
    shares = [np.ascontiguousarray(patterns[:, i]) for i in range(n)]
    expected = np.bitwise_xor.reduce(patterns, axis=1)

    def factory(ctx: Context, share: Words) -> Program[Words]:
        return (yield from bit_to_arith(ctx, "b2a", share))

    run = run_program(factory, shares, f"b2a{n}")
    exact_draw(run)
    assert run.added().tolist() == expected.tolist()
    assert run.plan == Plan((("b2a", 1 << n),), 0, 0, 1 << n, 1 << n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 5), bits=st.lists(st.integers(0, 1), min_size=1, max_size=64),
       seed=st.binary(min_size=8, max_size=8))
def test_bit_to_arith_property(n: int, bits: list[int], seed: bytes) -> None:
    label = f"b2ap{seed.hex()}"
    shares = xor_shares(words(bits), n, rng(label + "/in"))

    def factory(ctx: Context, share: Words) -> Program[Words]:
        return (yield from bit_to_arith(ctx, "b2a", share))

    assert run_program(factory, shares, label).added().tolist() == bits


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 5), data=st.data(), seed=st.binary(min_size=8, max_size=8))
def test_select_matches_plaintext(n: int, data: st.DataObject, seed: bytes) -> None:
    size = data.draw(st.integers(1, 30))
    cs = data.draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    xs = data.draw(st.lists(word, min_size=size, max_size=size))
    ys = data.draw(st.lists(word, min_size=size, max_size=size))
    label = f"sel{seed.hex()}"
    r = rng(label + "/in")
    shares = [np.concatenate(parts) for parts in zip(additive_shares(words(cs), n, r),
                                                     additive_shares(words(xs), n, r),
                                                     additive_shares(words(ys), n, r))]

    def factory(ctx: Context, share: Words) -> Program[Words]:
        c, x, y = np.split(share, 3)
        return (yield from select(ctx, "sel", c, x, y))

    run = run_program(factory, shares, label)
    exact_draw(run)
    assert run.added().tolist() == [x if c else y for c, x, y in zip(cs, xs, ys)]


def test_select_both_bits_on_edge_words() -> None:
    for n in (2, 5):
        triples = [(c, x, y) for c in (0, 1) for x in EDGES for y in EDGES]
        r = rng(f"seledge{n}")
        c_sh, x_sh, y_sh = (additive_shares(words([t[k] for t in triples]), n, r) for k in range(3))

        def factory(ctx: Context, share: Words) -> Program[Words]:
            c, x, y = np.split(share, 3)
            return (yield from select(ctx, "sel", c, x, y))

        run = run_program(factory, [np.concatenate(p) for p in zip(c_sh, x_sh, y_sh)], f"seledge{n}")
        assert run.added().tolist() == [x if c else y for c, x, y in triples]


def test_compare_then_convert_then_multiply() -> None:
    """The module docstring's example, [x >= 0] * x, on signed 32-bit values."""
    values = [0, 1, -1, 5, -5, (1 << 31) - 1, -(1 << 31), 12345, -12345]

    def factory(ctx: Context, x: Words) -> Program[Words]:
        b = yield from at_least(ctx, "cmp", x, 0, 32)
        b = yield from bit_to_arith(ctx, "b2a", b)
        return (yield from multiply(ctx, "mul", b, x))

    for n in (2, 3, 5):
        run = run_program(factory, additive_shares(words(values), n, rng(f"ex{n}")), f"ex{n}")
        exact_draw(run)
        assert run.added().tolist() == [v & MASK if v >= 0 else 0 for v in values]


# --------------------------------------------------------------------------- comparisons

def run_at_least(xs: Sequence[int], k: int | Sequence[int], n: int, ell: int, label: str) -> list[int]:
    kw: int | Words = k if isinstance(k, int) else words(k)

    def factory(ctx: Context, share: Words) -> Program[Words]:
        return (yield from at_least(ctx, "ge", share, kw, ell))

    run = run_program(factory, additive_shares(words(xs), n, rng(label)), label)
    exact_draw(run)
    out = run.xored()
    assert set(out.tolist()) <= {0, 1}
    return [int(v) for v in out]


def diffs(ell: int) -> list[int]:
    half = 1 << (ell - 1)
    return sorted(d for d in {-1, 0, 1, -2, 2, -half, -half + 1, half - 1, half - 2} if -half <= d < half)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("ell", [2, 3, 8, 32, 35, 64])
def test_at_least_at_the_edges(n: int, ell: int) -> None:
    half = 1 << (ell - 1)
    for k in {0, 1, -1, 37 % half, -half + 1}:
        xs = [k + d for d in diffs(ell)]
        assert run_at_least(xs, k, n, ell, f"ge{n}/{ell}/{k}") == [int(x >= k) for x in xs], k
    # a threshold per value, at both ends of the range
    ks = [half - 1, -half, 0, 1, -1]
    xs = [half - 1, -half, -1, 1, -half]
    assert run_at_least(xs, ks, n, ell, f"gev{n}/{ell}") == [int(x >= kk) for x, kk in zip(xs, ks)]


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("ell", [2, 8, 33, 64])
def test_less_than_at_the_edges(n: int, ell: int) -> None:
    half = 1 << (ell - 1)
    quarter = half // 2
    ys = [0, 5 % half, -quarter, quarter - 1 if ell > 2 else 0]
    pairs = [(y + d, y) for y in ys for d in diffs(ell) if -half <= y + d - y < half]
    # the extreme differences with both operands away from 0
    pairs += [(-quarter, quarter), (quarter - 1, -quarter)] if ell > 2 else [(-1, 1), (0, -1)]

    def lt(ctx: Context, x: Words, y: Words) -> Program[Words]:
        return less_than(ctx, "lt", x, y, ell)

    run = run_binary(lt, words([x for x, _ in pairs]), words([y for _, y in pairs]), n, f"lt{n}/{ell}")
    assert run.xored().tolist() == [int(x < y) for x, y in pairs]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 5), ell=st.integers(2, 64), data=st.data(), seed=st.binary(min_size=8, max_size=8))
def test_at_least_property(n: int, ell: int, data: st.DataObject, seed: bytes) -> None:
    half = 1 << (ell - 1)
    k = data.draw(st.integers(-(1 << 63), (1 << 63) - 1))
    ds = data.draw(st.lists(st.one_of(st.sampled_from(diffs(ell)), st.integers(-half, half - 1)), min_size=1,
                            max_size=50))
    xs = [k + d for d in ds]
    assert run_at_least(xs, k, n, ell, f"gep{seed.hex()}") == [int(d >= 0) for d in ds]


def test_sign_bit_and_and_gates_refuse_bad_shapes() -> None:
    ctx = Dealt(Plan((), 1, 1, 1, 0), 2, rng("shapes")).context(0, 2)
    with pytest.raises(LocalProtocolError, match="ell must be in 2..64"):
        next(sign_bit(ctx, "s", np.zeros(2, np.uint64), 1))
    with pytest.raises(LocalProtocolError, match="ell must be in 2..64"):
        next(sign_bit(ctx, "s", np.zeros(2, np.uint64), 65))
    with pytest.raises(LocalProtocolError, match="AND of shapes"):
        next(and_gates(ctx, "a", np.zeros(2, np.bool_), np.zeros(3, np.bool_)))
    with pytest.raises(LocalProtocolError, match="product of shapes"):
        next(multiply(ctx, "m", np.zeros(2, np.uint64), np.zeros(3, np.uint64)))


def test_and_gates_on_every_bit_pair() -> None:
    for n in (2, 3, 5):
        left = np.array([[0, 0, 1, 1]] * 50, dtype=np.bool_)
        right = np.array([[0, 1, 0, 1]] * 50, dtype=np.bool_)
        r = rng(f"and{n}")
        ls = xor_shares(left.reshape(-1).astype(np.uint64), n, r)
        rs = xor_shares(right.reshape(-1).astype(np.uint64), n, r)

        def factory(ctx: Context, share: Words) -> Program[Words]:
            half = share.size // 2
            z = yield from and_gates(ctx, "and", share[:half].astype(np.bool_).reshape(50, 4),
                                     share[half:].astype(np.bool_).reshape(50, 4))
            return z.reshape(-1).astype(np.uint64)

        run = run_program(factory, [np.concatenate(p) for p in zip(ls, rs)], f"and{n}")
        exact_draw(run)
        assert run.xored().tolist() == (left & right).reshape(-1).astype(int).tolist()
        assert run.plan.rounds == (("and", 2 * 4),) and run.plan.bit_words == 4   # 200 gates: 4 packed words


# --------------------------------------------------------------------------- plan

def mixed(ctx: Context, share: Words) -> Program[Words]:
    """Every primitive once, on this party's shares of [x | y]: ((x < y and x >= 3) ? x : y)^2, and 7."""
    half = share.size // 2
    x, y = share[:half], share[half:]
    lt = yield from less_than(ctx, "lt", x, y, 20)
    ge = yield from at_least(ctx, "ge", x, 3, 20)
    both = yield from and_gates(ctx, "and", lt.astype(np.bool_), ge.astype(np.bool_))
    b = yield from bit_to_arith(ctx, "b2a", both.astype(np.uint64))
    z = yield from select(ctx, "sel", b, x, y)
    w = yield from multiply(ctx, "sq", z, z)
    return np.concatenate((w, public(ctx, np.array([7], dtype=np.uint64))))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("size", [1, 63, 64, 65, 300])
def test_plan_equals_what_a_run_draws(n: int, size: int) -> None:
    r = rng(f"plan{n}/{size}")
    x = random_words(r, size) % np.uint64(1 << 18)
    y = random_words(r, size) % np.uint64(1 << 18)
    xs, ys = additive_shares(x, n, r), additive_shares(y, n, r)
    run = run_program(mixed, [np.concatenate(p) for p in zip(xs, ys)], f"plan{n}/{size}", prefix="plan/x")
    exact_draw(run)   # no pool has anything left, and nothing ran short
    p = run.plan
    assert p.arith_triples == 2 * size and p.dabits == size and p.output_words == size + 1
    assert [label for label, _ in p.rounds][-3:] == ["b2a", "sel", "sq"]
    assert sum(words for label, words in p.rounds if label == "and") == 2 * -(-size // 64)
    lt, ge = x < y, x >= 3
    z = np.where(lt & ge, x, y)
    assert run.added().tolist() == [*(z * z).tolist(), 7]


def test_plan_of_a_program_that_opens_nothing() -> None:
    def local(ctx: Context, share: Words) -> Program[Words]:
        return share + public(ctx, np.ones_like(share))
        yield  # a generator that never yields

    assert plan(local, 3, 4) == Plan((), 0, 0, 0, 4)
    run = run_program(local, additive_shares(words([1, 2, 3, 4]), 3, rng("local")), "local")
    assert run.added().tolist() == [2, 3, 4, 5] and all(e.rounds == 0 for e in run.engines)


# --------------------------------------------------------------------------- the engine's refusals

def ge_program(ctx: Context, share: Words) -> Program[Words]:
    return (yield from at_least(ctx, "ge", share, 5, 8))


def three(label: str = "ref", prefix: str = "pre") -> list[CircuitParty]:
    p = plan(ge_program, 3, 4)
    pre = Dealt(p, 3, rng(label))
    return [CircuitParty("sess", me, NAMES[:3], ge_program(pre.context(i, 3), np.zeros(4, np.uint64)), prefix)
            for i, me in enumerate(NAMES[:3])]


def test_refuses_a_payload_of_the_wrong_length() -> None:
    a, b, _ = three()
    msg = sends_to(a.start(), "bob")
    b.start()
    for bad in (msg.payload[:-8], msg.payload + bytes(8), msg.payload[:-3], b""):
        with pytest.raises(RemoteProtocolError, match="bytes") as info:
            b.receive("alice", msg.step, bad)
        assert not isinstance(info.value, RoundMismatch)
        assert "alice" in str(info.value) and "sess" in str(info.value)
    assert b.receive("alice", msg.step, msg.payload) == []   # the good one is still taken
    # a short message kept for the next round is refused when that round begins
    a, b, c = three("short")
    round0 = {p.me: p.start() for p in (a, b, c)}
    ahead = round1_of_alice(a, round0)
    deliver(b, [("alice", sends_to(round0["alice"], "bob"))])
    assert b.receive("alice", ahead.step, ahead.payload[:-8]) == []
    with pytest.raises(RemoteProtocolError, match="'pre/ge/gen' from 'alice'.*bytes") as info:
        deliver(b, [("carlos", sends_to(round0["carlos"], "bob"))])
    assert not isinstance(info.value, RoundMismatch)


def test_refuses_a_step_from_a_non_peer() -> None:
    a, b, _ = three()
    msg = sends_to(a.start(), "bob")
    for sender in ("mallory", "bob", ""):
        with pytest.raises(RemoteProtocolError, match="not a peer") as info:
            b.receive(sender, msg.step, msg.payload)
        assert not isinstance(info.value, RoundMismatch)


def astuple(msg: Send) -> tuple[str, bytes]:
    return msg.step, msg.payload


def round1_of_alice(a: CircuitParty, round0: Mapping[str, list[Send | Output]]) -> Send:
    """Alice's round-1 words to bob: she has everyone's round-0 words."""
    out = deliver(a, [(p, sends_to(round0[p], "alice")) for p in ("bob", "carlos")])
    return sends_to(out, "bob")


def test_refuses_a_message_two_rounds_ahead() -> None:
    """A peer needs our words to finish a round, so it is at most one round ahead: one message
    per peer may wait (even one that overtook its predecessor), never two."""
    a, b, c = three()
    round0 = {p.me: p.start() for p in (a, b, c)}
    ahead = round1_of_alice(a, round0)
    assert ahead.step == "pre/ge/gen" and sends_to(round0["alice"], "bob").step == "pre/ge/csa/0"
    assert deliver(b, [("alice", sends_to(round0["alice"], "bob")), ("alice", ahead)]) == []   # kept
    with pytest.raises(RoundMismatch, match="sess.*'alice'"):
        b.receive("alice", ahead.step, ahead.payload)             # a second later message while bob is in round 0
    # the later message first, overtaking alice's round 0: kept, and then a third is too many
    a, b, c = three("ovt")
    round0 = {p.me: p.start() for p in (a, b, c)}
    ahead = round1_of_alice(a, round0)
    assert b.receive("alice", ahead.step, ahead.payload) == []
    with pytest.raises(RoundMismatch, match="'alice'"):
        b.receive("alice", ahead.step, ahead.payload)
    # before start, only round 0 can come (nobody finishes round 0 without our words)
    _, b2, _ = three("ref2")
    assert b2.receive("alice", ahead.step, ahead.payload) == []
    with pytest.raises(RoundMismatch, match="'alice'"):
        b2.receive("alice", ahead.step, ahead.payload)


@pytest.mark.parametrize("wrong", ["pre/ge/ks/0", "other/ge/csa/0", "pre/ge/csa/0x", "ge/csa/0",
                                   "pre/not-a-step"])
def test_refuses_a_wrong_label(wrong: str) -> None:
    """A message whose label is not the round's may be kept as a later round's, but it is refused
    at the latest when the round it would belong to begins; the session never outputs."""
    a, b, c = three(wrong)
    round0 = {p.me: p.start() for p in (a, b, c)}
    good = sends_to(round0["alice"], "bob")
    with pytest.raises(RoundMismatch, match=f"got {wrong!r} from 'alice'"):
        b.receive("alice", wrong, good.payload)
        deliver(b, [("alice", good), ("carlos", sends_to(round0["carlos"], "bob"))])
    assert not b.finished


def test_refuses_a_wrong_label_before_start() -> None:
    _, b, _ = three("ref3")
    assert b.receive("alice", "pre/not-a-step", bytes(8)) == []
    with pytest.raises(RoundMismatch, match="expected step 'pre/ge/csa/0', got 'pre/not-a-step' from 'alice'"):
        b.start()


def test_refuses_a_replayed_round() -> None:
    a, b, c = three("replay")
    round0 = {p.me: p.start() for p in (a, b, c)}
    deliver(b, [(p, sends_to(round0[p], "bob")) for p in ("alice", "carlos")])
    assert b.waiting_for == ("alice", "carlos") and b.rounds == 2
    carlos1 = sends_to(deliver(c, [(p, sends_to(round0[p], "carlos")) for p in ("alice", "bob")]), "bob")
    with pytest.raises(RoundMismatch, match="got 'pre/ge/csa/0' from 'alice'"):
        b.receive("alice", *astuple(sends_to(round0["alice"], "bob")))        # may be kept as if for round 2 ...
        deliver(b, [("alice", round1_of_alice(a, round0)), ("carlos", carlos1)])


def test_refuses_replays_after_the_end_and_a_second_start() -> None:
    engines = {p.me: p for p in three("end")}
    _, views = route(engines, rng("end"))
    bob = engines["bob"]
    assert bob.finished and bob.waiting_for == ()
    for sender, step, payload in views["bob"][-2:]:
        with pytest.raises(RoundMismatch, match="after the end"):
            bob.receive(sender, step, payload)
    with pytest.raises(LocalProtocolError, match="already started"):
        bob.start()
    with pytest.raises(LocalProtocolError, match="not among the parties"):
        CircuitParty("s", "zed", NAMES[:2], ge_program(Dealt(plan(ge_program, 2, 4), 2, rng("z")).context(0, 2),
                                                       np.zeros(4, np.uint64)), "p")


def lockstep_until_last_round(engines: Mapping[str, CircuitParty], me: str) -> dict[str, Send]:
    """Deliver everything, round by round, until `me` is in its last round; hold what comes to it then.

    Returns: the peers' last-round messages to `me`, undelivered.
    """
    pending: dict[str, list[Send | Output]] = {name: e.start() for name, e in engines.items()}
    last = len(plan(ge_program, len(engines), 4).rounds)
    while engines[me].rounds < last:
        outs: dict[str, list[Send | Output]] = {name: [] for name in engines}
        for sender, events in pending.items():
            for ev in events:
                if isinstance(ev, Send):
                    outs[ev.to] += engines[ev.to].receive(sender, ev.step, ev.payload)
        pending = outs
    return {name: sends_to(events, me) for name, events in pending.items() if name != me}


def test_refuses_a_wrong_label_in_the_last_round() -> None:
    """RoundMismatch for an unexpected step, in the last round too: a wrong-labelled message is kept as
    if for a later round, and refused when the program ends instead of dropped."""
    engines = {p.me: p for p in three("last")}
    held = lockstep_until_last_round(engines, "bob")
    with pytest.raises(RoundMismatch):
        engines["bob"].receive("alice", "pre/ge/csa/0", held["alice"].payload)   # stale, kept "for later"
        deliver(engines["bob"], [("alice", held["alice"]), ("carlos", held["carlos"])])


def test_the_last_round_completes() -> None:
    engines = {p.me: p for p in three("last2")}
    held = lockstep_until_last_round(engines, "bob")
    out = deliver(engines["bob"], [("alice", held["alice"]), ("carlos", held["carlos"])])
    assert len(out) == 1 and isinstance(out[0], Output) and engines["bob"].finished


def test_refuses_a_label_too_long() -> None:
    def long_label(ctx: Context, share: Words) -> Program[Words]:
        return (yield Open("x" * 49, share, "add"))

    party = CircuitParty("s", "alice", NAMES[:2], long_label(Dealt(Plan((), 0, 0, 0, 0), 2, rng("l")).context(0, 2),
                                                             np.zeros(1, np.uint64)), "p")
    with pytest.raises(LocalProtocolError, match="too long"):
        party.start()


def test_a_message_may_overtake_its_predecessor() -> None:
    """Peer P sends round r, gets everyone's round-r words, sends round r + 1: over separate RPCs
    the second can arrive first. Both orders give the same result."""
    values = words([5, 4, 6, 0, 250, 255])
    expected = [int((int(v) if v < 128 else int(v) - 256) >= 5) for v in values]
    for attempt in range(10):
        for overtaking in (True, False):
            run = run_program(ge_program, additive_shares(values, 3, rng("ovt")), f"ovt{attempt}",
                              overtaking=overtaking)
            assert run.xored().tolist() == expected
    a, b, c = three("ovt2")
    round0 = {p.me: p.start() for p in (a, b, c)}
    ahead = round1_of_alice(a, round0)
    assert b.receive("alice", ahead.step, ahead.payload) == []                  # round 1 first ...
    assert b.receive("alice", *astuple(sends_to(round0["alice"], "bob"))) == []  # ... then round 0
    out = b.receive("carlos", *astuple(sends_to(round0["carlos"], "bob")))
    assert sends_to(out, "alice").step == "pre/ge/gen" and b.waiting_for == ("carlos",)


# --------------------------------------------------------------------------- views

def per_round(run: Run, me: str) -> list[tuple[str, np.ndarray]]:
    """What `me` received, round by round (all peers' words of a round together)."""
    out: list[tuple[str, np.ndarray]] = []
    prefix = run.engines[NAMES.index(me)].prefix + "/"
    for label, _ in run.plan.rounds:
        got = [words_from_bytes(p) for _, step, p in run.views[me] if step == prefix + label]
        out.append((label, np.concatenate(got)))
    return out


def view_checks(run: Run, me: str) -> list[tuple[str, np.ndarray]]:
    """(label, packed bits that should be fair coins): whole words, or the low bit of a daBit opening."""
    checks = []
    for label, received in per_round(run, me):
        if label.endswith("b2a"):
            assert set(np.unique(received).tolist()) <= {0, 1}, label   # e = b ^ r: a bit, nothing above
            checks.append((label, np.packbits(received.astype(np.uint8))))
        else:
            checks.append((label, received.view(np.uint8)))
    return checks


def structured_inputs(n: int, size: int) -> list[Words]:
    """Inputs held by P_0 alone, the others' shares 0: any unmasked opening would show."""
    x = np.arange(size, dtype=np.uint64) % np.uint64(7)
    y = np.full(size, 5, dtype=np.uint64)
    shares = [np.concatenate((x, y))] + [np.zeros(2 * size, np.uint64) for _ in range(n - 1)]
    return shares


@pytest.mark.parametrize("n", [2, 3, 5])
def test_what_a_party_receives_looks_uniform(n: int) -> None:
    """Every round's words are fair coins (false alarm < 1e-6 for the whole test), the daBit
    conversions' openings fair bits; with zero preprocessing the same check fails."""
    size, runs = 256, 16
    gathered: dict[tuple[str, str], list[np.ndarray]] = {}
    for attempt in range(runs):
        run = run_program(mixed, structured_inputs(n, size), f"view{n}/{attempt}",
                          order=AesCtrRng(SystemRng().random_bytes(16)),
                          dealt=lambda p, k: Dealt(p, k, AesCtrRng(SystemRng().random_bytes(16))))
        x = np.arange(size) % 7
        z = np.where((x < 5) & (x >= 3), x, 5)
        assert run.added().tolist() == [*(z * z).tolist(), 7]
        for me in NAMES[:n]:
            for label, bits in view_checks(run, me):
                gathered.setdefault((me, label), []).append(bits)
    labels = {label for _, label in gathered}
    assert {"b2a", "sel", "sq", "and"} <= labels and any(lbl.startswith("lt/") for lbl in labels)
    alpha = FALSE_ALARM / len(gathered)
    for (me, label), chunks in gathered.items():
        assert_balanced(np.concatenate(chunks), alpha)

    leaky = run_program(mixed, structured_inputs(n, size), f"leak{n}", dealt=ZeroDealt)
    assert not all(balanced(bits, alpha) for me in NAMES[:n] for _, bits in view_checks(leaky, me))
