"""Sign bit and comparison engines joined by an in-memory router with shuffled delivery
(PROTOCOLS.md §2, §5, §6), against the plaintext result; Beaver AND as a property; views."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Protocol

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.prg import AesCtrRng, Rng, SystemRng, random_words
from mpc.protocols.beaver import BitTriples, TripleSource, beaver_finish, beaver_open_message
from mpc.protocols.compare import AtLeastPublicParty, LessThanParty, SignBitParty, ell_for_tally
from mpc.events import Output, Send
from mpc.ring import Words, reduce_bits, words_from_bytes
from tests.sim.dealer import TrustedDealer

NAMES = ("alice", "bob", "carlos", "david", "erin")
Events = list[Send | Output]


class Engine(Protocol):
    def receive(self, sender: str, step: str, payload: bytes) -> Events: ...


def rng(label: str) -> AesCtrRng:
    """A reproducible CSPRNG per test case."""
    return AesCtrRng(label.encode().ljust(16, b".")[:16])


def pick(order: Rng, size: int) -> int:
    return int.from_bytes(order.random_bytes(8), "little") % size


def additive_shares(values: Words, n: int, r: Rng) -> list[Words]:
    shares = [random_words(r, values.size) for _ in range(n - 1)]
    first = values.copy()
    for s in shares:
        first -= s
    return [first, *shares]


def xor_shares(values: Words, n: int, r: Rng) -> list[Words]:
    shares = [random_words(r, values.size) for _ in range(n - 1)]
    return [values ^ xor_all(shares), *shares]


def xor_all(words: Sequence[Words]) -> Words:
    out = np.zeros_like(words[0])
    for w in words:
        out ^= w
    return out


Views = dict[str, list[tuple[str, str, bytes]]]


def run(engines: Mapping[str, Engine], starts: Mapping[str, Callable[[], Events]], order: Rng) -> tuple[dict[str, Words], Views]:
    """Start the parties and deliver every message in a random order (starts interleaved too).

    Returns: each party's output words, and what each party received (sender, step, payload).
    """
    pending: list[tuple[str, str, str, bytes] | str] = list(starts)
    outputs: dict[str, Words] = {}
    views: Views = {name: [] for name in engines}
    budget = 10_000
    while pending:
        budget -= 1
        assert budget > 0, "router did not terminate"
        item = pending.pop(pick(order, len(pending)))
        if isinstance(item, str):
            me, events = item, starts[item]()
        else:
            sender, me, step, payload = item
            views[me].append((sender, step, payload))
            events = engines[me].receive(sender, step, payload)
        for ev in events:
            if isinstance(ev, Send):
                pending.append((me, ev.to, ev.step, ev.payload))
            else:
                assert me not in outputs, f"{me} output twice"
                outputs[me] = ev.words
    assert set(outputs) == set(engines), f"no output from {set(engines) - set(outputs)}"
    return outputs, views


def run_sign_bit(values: Words, n: int, ell: int, label: str) -> tuple[Words, list[SignBitParty], Views]:
    r = rng(label)
    names = NAMES[:n]
    pools = TrustedDealer(n, r).pools(SignBitParty.triple_words(n, ell, values.size))
    shares = additive_shares(values, n, r)
    engines = {me: SignBitParty("s1", me, names, ell, values.size, pools[i]) for i, me in enumerate(names)}
    starts = {me: partial(engines[me].start, shares[i]) for i, me in enumerate(names)}
    outputs, views = run(engines, starts, r)
    assert all(p.remaining == 0 for p in pools), "triple count is not exact"
    return xor_all([outputs[m] for m in names]), list(engines.values()), views


def msb(values: Words, ell: int) -> Words:
    return (reduce_bits(values, ell) >> np.uint64(ell - 1)) & np.uint64(1)


def edge_values(ell: int) -> Words:
    half = 1 << (ell - 1)
    return np.array([0, 1, half - 1, half, half + 1, (1 << ell) - 1, (1 << ell) - 2], dtype=np.uint64)


def to_ring(values: Sequence[int], ell: int) -> Words:
    return np.array([v % (1 << ell) for v in values], dtype=np.uint64)


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
    n, ell = 3, 8
    pools = TrustedDealer(n, rng("exhaust")).pools(SignBitParty.triple_words(n, ell, 4))
    SignBitParty("s", "alice", NAMES[:n], ell, 4, pools[0]).start(np.zeros(4, np.uint64))
    second = SignBitParty("s2", "alice", NAMES[:n], ell, 4, pools[0])
    with pytest.raises(LocalProtocolError, match="exhausted"):
        second.start(np.zeros(4, np.uint64))


# --------------------------------------------------------------------------- sign bit

@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("ell", [2, 8, 12, 32, 64])
@pytest.mark.parametrize("batch", [1, 1000])
def test_sign_bit_matches_plaintext(n: int, ell: int, batch: int) -> None:
    label = f"msb{n}/{ell}/{batch}"
    values = reduce_bits(random_words(rng(label + "v"), batch), ell)
    if batch > 7:
        values[:7] = edge_values(ell)
    got, engines, views = run_sign_bit(values, n, ell, label)
    assert got.dtype == np.uint64 and set(np.unique(got)) <= {0, 1}
    assert np.array_equal(got, msb(values, ell))
    rounds = SignBitParty.rounds(n, ell)
    assert {step for _, step, _ in views["alice"]} == set(engines[0].steps) and len(engines[0].steps) == rounds
    assert len(views["alice"]) == rounds * (n - 1)  # one message per peer per round
    assert all(e.finished and e.waiting_for == () for e in engines)


@pytest.mark.parametrize("ell", [2, 3, 12, 64])
def test_sign_bit_edges_one_at_a_time(ell: int) -> None:
    for v in edge_values(ell):
        values = np.array([v], dtype=np.uint64)
        got, _, _ = run_sign_bit(values, 3, ell, f"edge{ell}/{int(v)}")
        assert np.array_equal(got, msb(values, ell)), int(v)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 5), ell=st.integers(2, 64), data=st.data())
def test_sign_bit_property(n: int, ell: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=70))
    words = reduce_bits(np.array(values, dtype=np.uint64), ell)
    got, _, _ = run_sign_bit(words, n, ell, f"prop{n}/{ell}/{len(values)}")
    assert np.array_equal(got, msb(words, ell))


def test_shares_are_reduced_mod_two_to_the_ell() -> None:
    """Shares mod 2^64 work as given: reducing them keeps a sharing of x mod 2^ell."""
    n, ell = 3, 12
    r = rng("reduce")
    values = np.array([0, 5, 2047, 2048, 4095], dtype=np.uint64)
    shares = additive_shares(values, n, r)  # full 64-bit shares, not reduced
    pools = TrustedDealer(n, r).pools(SignBitParty.triple_words(n, ell, 5))
    engines = {me: SignBitParty("s", me, NAMES[:n], ell, 5, pools[i]) for i, me in enumerate(NAMES[:n])}
    outs, _ = run(engines, {me: partial(engines[me].start, shares[i])
                            for i, me in enumerate(NAMES[:n])}, r)
    assert np.array_equal(xor_all(list(outs.values())), msb(values, ell))


# --------------------------------------------------------------------------- comparisons

def run_at_least(xs: Sequence[int], k: int | Words, n: int, ell: int, label: str) -> Words:
    r = rng(label)
    names, batch = NAMES[:n], len(xs)
    pools = TrustedDealer(n, r).pools(AtLeastPublicParty.triple_words(n, ell, batch))
    shares = additive_shares(to_ring(xs, ell), n, r)
    engines = {me: AtLeastPublicParty("v", me, names, ell, batch, k, pools[i]) for i, me in enumerate(names)}
    starts = {me: partial(engines[me].start, shares[i]) for i, me in enumerate(names)}
    outs, _ = run(engines, starts, r)
    return xor_all([outs[m] for m in names])


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
    names = NAMES[:n]
    pools = TrustedDealer(n, r).pools(LessThanParty.triple_words(n, ell, batch))
    x_sh = additive_shares(to_ring(xs, ell), n, r)
    y_sh = additive_shares(to_ring(ys, ell), n, r)
    engines = {me: LessThanParty("lt", me, names, ell, batch, pools[i]) for i, me in enumerate(names)}
    starts = {me: partial(engines[me].start, x_sh[i], y_sh[i]) for i, me in enumerate(names)}
    outs, _ = run(engines, starts, r)
    assert xor_all([outs[m] for m in names]).tolist() == [int(x < y) for x, y in zip(xs, ys)]


# --------------------------------------------------------------------------- protocol errors

def three_parties(ell: int = 8, batch: int = 3, prefix: str = "cmp") -> list[SignBitParty]:
    pools = TrustedDealer(3, rng("err" + prefix)).pools(SignBitParty.triple_words(3, ell, batch))
    return [SignBitParty("sess", me, NAMES[:3], ell, batch, pools[i], prefix) for i, me in enumerate(NAMES[:3])]


def test_messages_before_start_are_buffered() -> None:
    a, b, c = three_parties()
    zeros = np.zeros(3, np.uint64)
    to_c = [ev for ev in a.start(zeros) + b.start(zeros) if isinstance(ev, Send) and ev.to == "carlos"]
    assert c.receive("alice", to_c[0].step, to_c[0].payload) == []
    assert c.receive("bob", to_c[1].step, to_c[1].payload) == []
    out = c.start(zeros)   # both round-0 openings are in: carlos goes straight to round 1
    assert {ev.step for ev in out if isinstance(ev, Send)} == {c.steps[0], c.steps[1]}


def test_wrong_repeated_early_and_malformed_messages() -> None:
    a, b, c = three_parties()
    zeros = np.zeros(3, np.uint64)
    sends = [ev for ev in a.start(zeros) if isinstance(ev, Send) and ev.to == "bob"]
    msg = sends[0]
    with pytest.raises(RoundMismatch, match="sum/seed"):
        b.receive("alice", "sum/seed", msg.payload)
    with pytest.raises(RoundMismatch, match="ahead"):
        b.receive("alice", b.steps[1], msg.payload)   # not started: only round 0 can come
    with pytest.raises(RemoteProtocolError, match="bytes") as info:
        b.receive("alice", msg.step, msg.payload[:-8])
    assert not isinstance(info.value, RoundMismatch)
    with pytest.raises(RemoteProtocolError, match="not a peer"):
        b.receive("mallory", msg.step, msg.payload)
    with pytest.raises(RemoteProtocolError, match="not a peer"):
        b.receive("bob", msg.step, msg.payload)
    assert b.receive("alice", msg.step, msg.payload) == []
    with pytest.raises(RoundMismatch, match="already received"):
        b.receive("alice", msg.step, msg.payload)
    assert b.waiting_for == ("carlos",)
    b.start(zeros)
    with pytest.raises(RoundMismatch, match="ahead"):
        b.receive("carlos", b.steps[2], bytes(16 * 1))
    with pytest.raises(LocalProtocolError, match="already started"):
        b.start(zeros)


def test_stale_and_after_finish_messages() -> None:
    parties = three_parties()
    zeros = np.zeros(3, np.uint64)
    round0 = {p.me: [ev for ev in p.start(zeros) if isinstance(ev, Send)] for p in parties}
    bob = parties[1]
    for sender in ("alice", "carlos"):
        ev = next(m for m in round0[sender] if m.to == "bob")
        bob.receive(sender, ev.step, ev.payload)
    assert bob.waiting_for == ("alice", "carlos")   # now in round 1
    ev = next(m for m in round0["alice"] if m.to == "bob")
    with pytest.raises(RoundMismatch, match="expected step 'cmp/gen'"):
        bob.receive("alice", ev.step, ev.payload)   # a replay of a finished round

    engines = {p.me: p for p in three_parties(prefix="again")}
    _, views = run(engines, {me: partial(e.start, zeros) for me, e in engines.items()}, rng("stale"))
    assert all(p.finished for p in engines.values())
    sender, step, payload = views["bob"][-1]
    with pytest.raises(RoundMismatch, match="finished"):
        engines["bob"].receive(sender, step, payload)


def test_bad_shares_and_parameters() -> None:
    a = three_parties()[0]
    with pytest.raises(LocalProtocolError):
        a.start(np.zeros(3, np.int64))
    with pytest.raises(LocalProtocolError):
        a.start(np.zeros(4, np.uint64))
    pool = TrustedDealer(2, rng("p")).pools(1)[0]
    bad: list[tuple[str, tuple[str, ...], int]] = [
        ("zed", NAMES[:2], 8), ("alice", ("alice",), 8), ("alice", NAMES[:2], 1), ("alice", NAMES[:2], 65),
        ("alice", ("alice", "alice"), 8)]
    for me, names, ell in bad:
        with pytest.raises(LocalProtocolError):
            SignBitParty("s", me, names, ell, 1, pool)
    with pytest.raises(LocalProtocolError):
        SignBitParty.triple_words(3, 8, 0)


def test_step_labels_carry_the_prefix() -> None:
    steps = three_parties(ell=32, prefix="vote/cmp")[0].steps
    assert steps == ("vote/cmp/csa/0", "vote/cmp/gen", "vote/cmp/ks/0", "vote/cmp/ks/1", "vote/cmp/ks/2",
                     "vote/cmp/ks/3", "vote/cmp/ks/4")


def test_round_and_triple_counts() -> None:
    assert SignBitParty.rounds(3, 32) == 7 == 1 + 1 + math.ceil(math.log2(31))
    assert SignBitParty.rounds(2, 2) == 1 and SignBitParty.rounds(5, 64) == 3 + 1 + 6
    assert SignBitParty.triple_words(3, 32, 1) == 7           # one (partly used) word per round
    assert SignBitParty.triple_words(3, 32, 64) == 118        # 118 AND gates per value
    for n, ell in [(2, 12), (4, 12), (5, 64)]:
        assert SignBitParty.triple_words(n, ell, 640) == 10 * SignBitParty.triple_words(n, ell, 64)


# --------------------------------------------------------------------------- views

def balanced(samples: np.ndarray, delta: float) -> bool:
    """Every bit position, and all bits together, look like fair coins across runs.

    `samples` is runs x positions of 0/1; Hoeffding's bound with a union bound over the
    positions makes a fair source fail with probability at most `delta`.
    """
    runs, positions = samples.shape
    ones = samples.sum(axis=0)
    slack = math.sqrt(runs * math.log(4 * positions / delta) / 2)   # half of delta per position set
    total_slack = math.sqrt(samples.size * math.log(4 / delta) / 2)  # the other half for the total
    return bool(np.all(np.abs(ones - runs / 2) <= slack) and abs(ones.sum() - samples.size / 2) <= total_slack)


class ZeroTriples:
    """a = b = c = 0: valid triples that mask nothing (the negative control of the views test)."""

    def take(self, words: int) -> BitTriples:
        z = np.zeros(words, np.uint64)
        return BitTriples(z, z.copy(), z.copy())


def received_bits(n: int, ell: int, fixed: list[Words], sources: Callable[[], list[TripleSource]], order: Rng) -> np.ndarray:
    names = NAMES[:n]
    pools = sources()
    engines = {me: SignBitParty("v", me, names, ell, fixed[0].size, pools[i]) for i, me in enumerate(names)}
    starts = {me: partial(engines[me].start, fixed[i]) for i, me in enumerate(names)}
    _, views = run(engines, starts, order)
    view = sorted(views["alice"], key=lambda m: (engines["alice"].steps.index(m[1]), m[0]))
    words = np.concatenate([words_from_bytes(p) for _, _, p in view])
    return np.unpackbits(words.view(np.uint8))


def test_openings_a_party_receives_are_uniform_bits() -> None:
    """d and e from the peers are fair coins across runs with the inputs held fixed
    (false-failure probability < 1e-6); with zero triples the same test catches the leak."""
    n, ell, batch, runs = 3, 12, 2, 400
    fixed = additive_shares(np.array([1000, 3], dtype=np.uint64), n, rng("fixed"))
    system = SystemRng()
    size = SignBitParty.triple_words(n, ell, batch)

    def fresh() -> list[TripleSource]:
        return list(TrustedDealer(n, AesCtrRng(system.random_bytes(16))).pools(size))

    samples = np.stack([received_bits(n, ell, fixed, fresh, system) for _ in range(runs)])
    assert samples.shape[1] == 2 * 2 * 64 * size   # two peers, d and e, every triple word
    assert balanced(samples, 1e-6)
    leaky = np.stack([received_bits(n, ell, fixed, lambda: [ZeroTriples()] * n, system) for _ in range(runs)])
    assert not balanced(leaky, 1e-6)
