"""Simulation of the OT setup and of dealerless bit-triple generation (mpc/ot/triples.py,
PROTOCOLS.md §3-4) with an in-memory router: no grpc, messages delivered in a CSPRNG-shuffled
order, also before the receiving party has started. Checks c = a ∧ b on every bit after XOR
over all parties, the TriplePool's refusal to hand out a word twice, and that what a party
receives (IKNP messages, corrections) looks uniform (false-alarm rate < 10^-6 per test).
The router, the balance check and the ideal base-OT double are tests/sim/common.py's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import reduce

import numpy as np
import pytest

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot.base import ELEMENT_BYTES
from mpc.ot.extension import KAPPA
from mpc.ot.triples import (ALL, STEP_BASE_A, STEP_BASE_B, STEP_T, STEP_U, OtReady, PairwiseOt, PairwiseOtSetup,
                            TripleDealerless, TriplePool, holds)
from mpc.prg import AesCtrRng, SystemRng
from mpc.protocols.beaver import BitTriples
from mpc.events import Send
from mpc.ring import Words
from tests.sim.common import FALSE_ALARM, Router, assert_balanced, ideal_setup, names

IKNP_HEADER = 16
OtState = Mapping[str, Mapping[str, PairwiseOt]]


def real_setup(parties: Sequence[str]) -> dict[str, dict[str, PairwiseOt]]:
    router = Router({p: PairwiseOtSetup(p, parties, SystemRng(), session_id="setup-1") for p in parties})
    router.run()
    results = router.single()
    for p, ready in results.items():
        assert isinstance(ready, OtReady) and set(ready.pairs) == set(parties) - {p}
    # each party got exactly one A and one B batch from each peer
    for p in parties:
        steps = sorted(step for _, step, _ in router.received[p])
        assert steps == sorted([STEP_BASE_A, STEP_BASE_B] * (len(parties) - 1))
    return {p: dict(ready.pairs) for p, ready in results.items()}


@pytest.fixture(scope="module")
def three_real() -> dict[str, dict[str, PairwiseOt]]:
    """Real Chou-Orlandi setup among three parties, kept for the module like a node keeps it."""
    return real_setup(names(3))


def run_triples(parties: Sequence[str], ot: OtState, words: int,
                session: str = "s") -> tuple[dict[str, BitTriples], Router]:
    router = Router({p: TripleDealerless(p, parties, words, AesCtrRng(os.urandom(16)), ot[p], session)
                     for p in parties})
    router.run()
    results = router.single()
    assert all(isinstance(t, BitTriples) and t.words == words for t in results.values())
    return results, router


def reconstruct(triples: Mapping[str, BitTriples]) -> tuple[Words, Words, Words]:
    ts = list(triples.values())
    return (reduce(np.bitwise_xor, [t.a for t in ts]), reduce(np.bitwise_xor, [t.b for t in ts]),
            reduce(np.bitwise_xor, [t.c for t in ts]))


def check_batches(parties: Sequence[str], ot: OtState, batches: int = 4, words: int = 64) -> None:
    for k in range(batches):
        triples, _ = run_triples(parties, ot, words, session=f"batch-{k}")
        a, b, c = reconstruct(triples)
        assert np.array_equal(c, a & b), f"batch {k}: c != a & b"
        for t in triples.values():  # no party's c share is the plain a & b of its own shares
            assert not np.array_equal(t.c, t.a & t.b)


# --- correctness --------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_triples_with_real_base_ot(n: int, three_real: dict[str, dict[str, PairwiseOt]]) -> None:
    check_batches(names(n), three_real)


@pytest.mark.parametrize("n", [4, 5])
def test_triples_many_parties(n: int) -> None:
    check_batches(names(n), ideal_setup(names(n)))


def test_odd_sizes_and_one_word(three_real: dict[str, dict[str, PairwiseOt]]) -> None:
    for words in (1, 3, 17):
        a, b, c = reconstruct(run_triples(names(3), three_real, words)[0])
        assert np.array_equal(c, a & b)


@pytest.mark.slow
def test_triples_five_parties_real_base_ot(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("20 real base-OT batches take 15-25 s here; run with -m slow")
    check_batches(names(5), real_setup(names(5)), batches=2)


# A layout of holder sets, as the carry-save adders of five parties make: runs among P0..P2, among
# P2..P4, among P3, P4 and among everyone (the gates' holders, mpc/protocols/compare.py).
LAYOUT5 = ((ALL, 3), (0b00111, 2), (0b11100, 4), (0b11000, 1))


def test_triples_among_holder_sets_are_correct_among_their_holders_and_absent_elsewhere() -> None:
    """Each run of a layout is a correct triple among its holders alone; every pair makes (and sends)
    exactly the words of the runs both are among; the others hold nothing of it."""
    parties = names(5)
    words = sum(n for _, n in LAYOUT5)
    ot = ideal_setup(parties)
    engines = {p: TripleDealerless(p, parties, words, AesCtrRng(os.urandom(16)), ot[p], "s", layout=LAYOUT5)
               for p in parties}
    router = Router(engines)
    router.run()
    results = router.single()
    pools = {p: TriplePool(results[p], LAYOUT5, i) for i, p in enumerate(parties)}
    for i, p in enumerate(parties):
        assert results[p].words == sum(n for h, n in LAYOUT5 if holds(h, i))
        for j, q in enumerate(parties):
            common = sum(n for h, n in LAYOUT5 if holds(h, i) and holds(h, j))
            if q != p:
                assert engines[p].pair_words(q) == common
                sizes = {step: len(payload) for sender, step, payload in router.received[p] if sender == q}
                # the IKNP message (KAPPA columns of the OTs) and the correction t, or none at all
                assert set(sizes) == ({STEP_U, STEP_T} if common else set())
                assert not common or sizes[STEP_T] == 8 * common and sizes[STEP_U] > KAPPA * 8 * common
    for holders, n in LAYOUT5:
        taken = {p: pools[p].take(n, holders) for p in parties}
        a, b, c = reconstruct(taken)
        assert np.array_equal(c, a & b) and np.count_nonzero(a) and np.count_nonzero(b)
        for i, p in enumerate(parties):
            if not holds(holders, i):   # zeros outside: the holders' shares alone reconstruct
                assert not (taken[p].a.any() or taken[p].b.any() or taken[p].c.any())
        with pytest.raises(LocalProtocolError, match="triple reuse refused"):
            next(pools[p] for i, p in enumerate(parties) if holds(holders, i)).take(1, holders)
    assert all(pool.remaining == 0 for pool in pools.values())


def test_a_layout_that_does_not_add_up_is_refused() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    with pytest.raises(LocalProtocolError, match="runs"):
        TripleDealerless("alice", parties, 5, SystemRng(), ot["alice"], layout=((ALL, 3), (0b011, 1)))
    with pytest.raises(LocalProtocolError, match="runs"):
        TripleDealerless("alice", parties, 3, SystemRng(), ot["alice"], layout=((ALL, 3), (0b011, 0)))
    triples, _ = run_triples(parties, ot, 4)
    with pytest.raises(LocalProtocolError, match="layout"):
        TriplePool(triples["alice"], ((ALL, 2), (0b110, 1)), 0)   # alice holds 2 words of it, not 4


# --- what a party sees --------------------------------------------------------------------------

def test_received_messages_are_balanced(three_real: dict[str, dict[str, PairwiseOt]]) -> None:
    corrections: list[bytes] = []
    u_rows: list[bytes] = []
    for k in range(4):
        _, router = run_triples(names(3), three_real, 64, session=f"view-{k}")
        for _, step, payload in router.received["alice"]:
            (corrections if step == STEP_T else u_rows).append(payload if step == STEP_T else payload[IKNP_HEADER:])
    assert len(corrections) == len(u_rows) == 8
    assert_balanced(np.frombuffer(b"".join(corrections), dtype=np.uint8), FALSE_ALARM / 2)
    assert_balanced(np.frombuffer(b"".join(u_rows), dtype=np.uint8), FALSE_ALARM / 2)


def test_shares_of_a_and_b_are_balanced() -> None:
    parties = names(3)
    triples, _ = run_triples(parties, ideal_setup(parties), 512)
    for t in triples.values():
        for share in (t.a, t.b, t.c):
            assert_balanced(share.view(np.uint8), FALSE_ALARM / 9)


# --- protocol errors ----------------------------------------------------------------------------

def test_triple_engine_rejects_bad_messages() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    alice = TripleDealerless("alice", parties, 4, SystemRng(), ot["alice"], "s1")
    bob = TripleDealerless("bob", parties, 4, SystemRng(), ot["bob"], "s1")
    with pytest.raises(RoundMismatch):
        alice.receive("bob", STEP_T, bytes(32))  # before alice's IKNP message went out
    (u_bob,) = bob.start()
    assert isinstance(u_bob, Send) and u_bob.step == STEP_U
    assert alice.receive("bob", STEP_U, u_bob.payload) == []  # kept until start
    with pytest.raises(RoundMismatch):
        alice.receive("bob", STEP_U, u_bob.payload)
    with pytest.raises(RemoteProtocolError):
        alice.receive("mallory", STEP_U, u_bob.payload)
    with pytest.raises(RoundMismatch):
        alice.receive("bob", "sum/seed", b"")
    events = alice.start()
    assert sorted(e.step for e in events if isinstance(e, Send)) == [STEP_T, STEP_U]
    with pytest.raises(LocalProtocolError):
        alice.start()
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_T, bytes(31))
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_T, bytes(40))


def test_triple_engine_rejects_bad_iknp_message() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    alice = TripleDealerless("alice", parties, 4, SystemRng(), ot["alice"])
    alice.start()
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_U, bytes(IKNP_HEADER + KAPPA * 16 * 2 + 1))


def test_concurrent_sessions_on_the_same_pairs_interleave() -> None:
    """Two sessions over the same OT state, started in opposite orders at the two parties."""
    parties = names(2)
    ot = ideal_setup(parties)
    first = {p: TripleDealerless(p, parties, 2, SystemRng(), ot[p], "first") for p in parties}
    second = {p: TripleDealerless(p, parties, 2, SystemRng(), ot[p], "second") for p in parties}
    outputs: dict[str, dict[str, BitTriples]] = {"first": {}, "second": {}}
    queue: list[tuple[str, str, str, Send]] = []
    for label, engines, order in (("first", first, ("alice", "bob")), ("second", second, ("bob", "alice"))):
        for p in order:
            queue += [(label, p, e.to, e) for e in engines[p].start() if isinstance(e, Send)]
    queue.reverse()  # deliver the later extensions first
    sessions = {"first": first, "second": second}
    while queue:
        label, sender, to, event = queue.pop(0)
        for out in sessions[label][to].receive(sender, event.step, event.payload):
            if isinstance(out, Send):
                queue.append((label, to, out.to, out))
            else:
                outputs[label][to] = out
    for label in ("first", "second"):
        a = outputs[label]["alice"]
        b = outputs[label]["bob"]
        assert np.array_equal((a.a ^ b.a) & (a.b ^ b.b), a.c ^ b.c)


def test_replayed_extension_is_refused() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    first = {p: TripleDealerless(p, parties, 2, SystemRng(), ot[p], "first") for p in parties}
    second = {p: TripleDealerless(p, parties, 2, SystemRng(), ot[p], "second") for p in parties}
    (u1,) = first["bob"].start()
    first["alice"].start()
    second["alice"].start()
    assert isinstance(u1, Send)
    first["alice"].receive("bob", u1.step, u1.payload)
    with pytest.raises(RoundMismatch):  # the same PRG window presented to another session
        second["alice"].receive("bob", u1.step, u1.payload)


def test_engine_misuse() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    with pytest.raises(LocalProtocolError):
        TripleDealerless("zoe", parties, 1, SystemRng(), ot["alice"])
    with pytest.raises(LocalProtocolError):
        TripleDealerless("alice", parties, 0, SystemRng(), ot["alice"])
    with pytest.raises(LocalProtocolError):
        TripleDealerless("alice", parties + ["david"], 1, SystemRng(), ot["alice"])
    with pytest.raises(LocalProtocolError):
        TripleDealerless("alice", ["alice"], 1, SystemRng(), ot["alice"])
    with pytest.raises(LocalProtocolError):
        PairwiseOtSetup("alice", ["alice", "alice"], SystemRng())


def test_setup_rejects_bad_messages() -> None:
    parties = names(2)
    alice = PairwiseOtSetup("alice", parties, SystemRng())
    bob = PairwiseOtSetup("bob", parties, SystemRng())
    with pytest.raises(RoundMismatch):
        alice.receive("bob", STEP_BASE_B, bytes(KAPPA * ELEMENT_BYTES))  # before alice's A
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_BASE_A, (1).to_bytes(ELEMENT_BYTES, "big"))
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_BASE_A, bytes(10))
    with pytest.raises(RemoteProtocolError):
        alice.receive("mallory", STEP_BASE_A, bytes(ELEMENT_BYTES))
    with pytest.raises(RoundMismatch):
        alice.receive("bob", "triples/u", b"")
    (a_bob,) = bob.start()
    assert isinstance(a_bob, Send)
    alice.receive("bob", STEP_BASE_A, a_bob.payload)
    with pytest.raises(RoundMismatch):
        alice.receive("bob", STEP_BASE_A, a_bob.payload)
    alice.start()
    with pytest.raises(LocalProtocolError):
        alice.start()
    with pytest.raises(RemoteProtocolError):
        alice.receive("bob", STEP_BASE_B, bytes(KAPPA * ELEMENT_BYTES - 1))


# --- the pool -----------------------------------------------------------------------------------

def test_pool_hands_out_each_word_once() -> None:
    parties = names(2)
    triples, _ = run_triples(parties, ideal_setup(parties), 10)
    mine = triples["alice"]
    pool = TriplePool(mine)
    assert pool.remaining == 10
    first, second = pool.take(3), pool.take(7)
    assert np.array_equal(np.concatenate([first.a, second.a]), mine.a)
    assert np.array_equal(np.concatenate([first.c, second.c]), mine.c)
    assert pool.remaining == 0
    with pytest.raises(LocalProtocolError, match="triple reuse refused"):
        pool.take(1)
    with pytest.raises(ValueError):
        first.a[0] = 0  # handed-out shares are read-only
    more, _ = run_triples(parties, ideal_setup(parties), 2)
    pool.add(more["alice"])
    with pytest.raises(LocalProtocolError, match="triple reuse refused"):
        pool.take(3)  # overdraw
    with pytest.raises(LocalProtocolError):
        pool.take(0)
    last = pool.take(2)
    assert np.array_equal(last.b, more["alice"].b)


def test_pools_of_all_parties_stay_aligned(three_real: dict[str, dict[str, PairwiseOt]]) -> None:
    triples, _ = run_triples(names(3), three_real, 8)
    pools = {p: TriplePool(t) for p, t in triples.items()}
    for words in (1, 5, 2):
        taken = {p: pool.take(words) for p, pool in pools.items()}
        a, b, c = reconstruct(taken)
        assert np.array_equal(c, a & b)
    assert all(pool.remaining == 0 for pool in pools.values())
