"""Simulation of dealerless arithmetic triples and daBits (mpc/ot/arith.py, PROTOCOLS.md §8)
over real IKNP extensions, with an in-memory router: no grpc, messages delivered in a
CSPRNG-shuffled order, also before the receiving party has started.

Checks Σ c = Σ a · Σ b mod 2^64 for every triple and ⊕ bits = Σ arith mod 2^64 for every
daBit, for 2 to 5 parties; the Gilboa gadget at the edge words 0, 1, 2^63, 2^64 − 1; the round
count; the pools' refusal to hand anything out twice; that what a party receives looks uniform
(false-alarm rate < 10^-6 per test); and the protocol errors. The router, the balance check
and the ideal base-OT double are tests/sim/common.py's.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpc.ot.arith as arith
from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Send
from mpc.ot.arith import (STEP_T, STEP_U, ArithDealerless, ArithPool, ArithTriples, DaBitPool, DaBits,
                          cot_receive, cot_send, fold_step, gilboa_receive, gilboa_send, low_words)
from mpc.ot.triples import OtReady, PairwiseOt, PairwiseOtSetup, TripleDealerless
from mpc.prg import AesCtrRng, SystemRng
from mpc.ring import Words
from tests.sim.common import FALSE_ALARM, Router, assert_balanced, ideal_setup, names

IKNP_HEADER = 16
EDGES = np.array([0, 1, 1 << 63, (1 << 64) - 1], dtype=np.uint64)
OtState = Mapping[str, Mapping[str, PairwiseOt]]


# --- the OT states ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real5() -> dict[str, dict[str, PairwiseOt]]:
    """Real Chou-Orlandi base OTs among five parties (about 20 s), kept like a node keeps them.

    Every pair's state is the same whichever session it serves, so the sessions of 2, 3 and 4
    parties use the pairs among their members.
    """
    parties = names(5)
    router = Router({p: PairwiseOtSetup(p, parties, SystemRng(), session_id="arith-setup") for p in parties})
    results = router.run()
    assert set(results) == set(parties)
    ready = {p: events for p, events in results.items()}
    assert all(len(events) == 1 and isinstance(events[0], OtReady) for events in ready.values())
    return {p: dict(events[0].pairs) for p, events in ready.items()}


def among(ot: OtState, parties: Sequence[str]) -> dict[str, dict[str, PairwiseOt]]:
    return {p: {q: ot[p][q] for q in parties if q != p} for p in parties}


def run(parties: Sequence[str], ot: OtState, triples: int, dabits: int,
        session: str = "s") -> tuple[dict[str, ArithTriples], dict[str, DaBits], Router]:
    engines = {p: ArithDealerless(p, parties, triples, dabits, AesCtrRng(os.urandom(16)), ot[p], session)
               for p in parties}
    router = Router(engines)
    results = router.run()
    assert all(e.finished and e.waiting_for == () for e in engines.values())
    for p in parties:
        kinds = sorted(type(e).__name__ for e in results.get(p, []))
        assert kinds == sorted((["ArithTriples"] if triples else []) + (["DaBits"] if dabits else []))
    out_t = {p: e for p in parties for e in results.get(p, []) if isinstance(e, ArithTriples)}
    out_d = {p: e for p in parties for e in results.get(p, []) if isinstance(e, DaBits)}
    assert all(t.count == triples for t in out_t.values()) and all(d.count == dabits for d in out_d.values())
    return out_t, out_d, router


def check(out_t: Mapping[str, ArithTriples], out_d: Mapping[str, DaBits]) -> None:
    if out_t:
        ts = list(out_t.values())
        a, b, c = (reduce(np.add, [getattr(t, f) for t in ts]) for f in ("a", "b", "c"))
        assert np.array_equal(c, a * b), "Σ c != Σ a · Σ b"
    if out_d:
        ds = list(out_d.values())
        assert all(int(d.bits.max()) <= 1 for d in ds)
        r = reduce(np.bitwise_xor, [d.bits for d in ds])
        assert np.array_equal(reduce(np.add, [d.arith for d in ds]), r), "Σ arith != ⊕ bits"


# --- correctness ----------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 64, 1000])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_identities(n: int, count: int, real5: dict[str, dict[str, PairwiseOt]]) -> None:
    parties = names(n)
    out_t, out_d, _ = run(parties, among(real5, parties), count, count, f"id-{n}-{count}")
    check(out_t, out_d)
    for t in out_t.values():  # each party's c is more than its local product
        assert not np.array_equal(t.c, t.a * t.b)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_triples_only_and_dabits_only(n: int, real5: dict[str, dict[str, PairwiseOt]]) -> None:
    parties = names(n)
    for triples, dabits in ((5, 0), (0, 65)):
        out_t, out_d, router = run(parties, among(real5, parties), triples, dabits)
        check(out_t, out_d)
        if not triples:  # P_0 chooses no OTs, so it sends no "arith/u"
            assert all(not (s == parties[0] and step == STEP_U)
                       for msgs in router.received.values() for s, step, _ in msgs)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 5), triples=st.integers(0, 70), dabits=st.integers(0, 130))
def test_identities_property(n: int, triples: int, dabits: int) -> None:
    if triples + dabits == 0:
        return
    parties = names(n)
    check(*run(parties, ideal_setup(parties), triples, dabits)[:2])


def test_gilboa_gadget_at_edge_words() -> None:
    a = np.repeat(EDGES, 4)   # every pair (a, b) of edge words
    b = np.tile(EDGES, 4)
    m0, m1 = np.frombuffer(os.urandom(8 * 64 * 16), dtype=np.uint64), np.frombuffer(os.urandom(8 * 64 * 16),
                                                                                        dtype=np.uint64)
    tau, keep = gilboa_send(m0, m1, a)
    bits = ((b[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).reshape(-1)
    chosen = np.where(bits == 1, m1, m0)
    got = gilboa_receive(chosen, b, tau)
    assert np.array_equal(got + keep, a * b)
    assert [int(x) for x in got + keep] == [(int(x) * int(y)) % (1 << 64) for x, y in zip(a, b)]
    # the correlated OT underneath, with a 2^64 − 1 offset
    tau1, keep1 = cot_send(m0[:4], m1[:4], EDGES)
    for c in (0, 1):
        choice = np.full(4, c, dtype=np.uint64)
        assert np.array_equal(cot_receive(m1[:4] if c else m0[:4], choice, tau1) + keep1, choice * EDGES)


def test_low_words_reads_little_endian() -> None:
    blocks = np.zeros((2, 16), dtype=np.uint8)
    blocks[0, 0], blocks[1, 7], blocks[1, 8] = 1, 0x80, 0xFF
    assert [int(x) for x in low_words(blocks)] == [1, 1 << 63]


class ScriptedRng:
    """A test Rng whose `random_words` draws are scripted (see the monkeypatch below)."""

    def __init__(self, script: list[Words]) -> None:
        self.script = list(script)

    def random_bytes(self, n: int) -> bytes:
        raise AssertionError("the engine should draw words only")


def test_engine_at_edge_words(monkeypatch: pytest.MonkeyPatch, real5: dict[str, dict[str, PairwiseOt]]) -> None:
    """Every party's a and b run over 0, 1, 2^63, 2^64 − 1 in patterns that meet every pair."""
    monkeypatch.setattr(arith, "random_words", lambda rng, n: rng.script.pop(0)[:n].copy())
    parties = names(3)
    patterns = [np.repeat(EDGES, 16), np.tile(np.repeat(EDGES, 4), 4), np.tile(EDGES, 16)]
    bits = [np.array([0, (1 << 64) - 1], dtype=np.uint64), np.array([0x5555555555555555, 0], dtype=np.uint64),
            np.array([(1 << 64) - 1, 0x3333333333333333], dtype=np.uint64)]
    engines = {p: ArithDealerless(p, parties, 64, 128, ScriptedRng([patterns[i], patterns[(i + 1) % 3], bits[i]]),
                                  among(real5, parties)[p], "edges") for i, p in enumerate(parties)}
    results = Router(engines).run()
    out_t = {p: next(e for e in results[p] if isinstance(e, ArithTriples)) for p in parties}
    out_d = {p: next(e for e in results[p] if isinstance(e, DaBits)) for p in parties}
    check(out_t, out_d)
    r = reduce(np.bitwise_xor, [d.bits for d in out_d.values()])
    assert set(int(x) for x in r) == {0, 1}


def test_rounds_and_message_sizes() -> None:
    """Lock-step delivery: max(2, n) rounds with daBits, 2 without; sizes as documented."""
    for n in (2, 3, 4, 5):
        parties = names(n)
        for triples, dabits in ((3, 100), (3, 0), (0, 100)):
            ot = ideal_setup(parties)
            engines = {p: ArithDealerless(p, parties, triples, dabits, SystemRng(), ot[p]) for p in parties}
            outbox = [(p, e) for p in parties for e in engines[p].start() if isinstance(e, Send)]
            rounds = 0
            while outbox:
                rounds += 1
                nxt = []
                for sender, send in outbox:
                    assert send.step.startswith("arith/") and len(send.step) <= 40
                    k = parties.index(sender if send.step == STEP_U else send.to)
                    m = 64 * triples + (dabits if k else 0)
                    size = {STEP_U: IKNP_HEADER + 16 * -(-m // 128) * 128, STEP_T: 8 * 64 * triples}
                    assert len(send.payload) == size.get(send.step, 8 * dabits), send
                    if send.step.startswith("arith/fold/"):
                        assert send.step == fold_step(parties.index(send.to))
                    nxt += [(send.to, e) for e in engines[send.to].receive(sender, send.step, send.payload)
                            if isinstance(e, Send)]
                outbox = nxt
            assert all(e.finished for e in engines.values())
            assert rounds == (max(2, n) if dabits else 2), (n, triples, dabits, rounds)


def test_concurrent_with_bit_triples(real5: dict[str, dict[str, PairwiseOt]]) -> None:
    """A bit-triple session and an arithmetic one over the same PairwiseOts, interleaved."""

    class Both:
        def __init__(self, p: str, parties: list[str], ot: Mapping[str, PairwiseOt]) -> None:
            self.bit = TripleDealerless(p, parties, 8, SystemRng(), ot, "mixed")
            self.ari = ArithDealerless(p, parties, 40, 40, SystemRng(), ot, "mixed")
            self.first_bit = secrets.randbelow(2) == 1

        def start(self) -> list[Any]:
            order = (self.bit, self.ari) if self.first_bit else (self.ari, self.bit)
            return [*order[0].start(), *order[1].start()]

        def receive(self, sender: str, step: str, payload: bytes) -> list[Any]:
            return (self.ari if step.startswith("arith/") else self.bit).receive(sender, step, payload)

    parties = names(4)
    ot = among(real5, parties)
    results = Router({p: Both(p, parties, ot[p]) for p in parties}).run()
    out_t = {p: next(e for e in results[p] if isinstance(e, ArithTriples)) for p in parties}
    out_d = {p: next(e for e in results[p] if isinstance(e, DaBits)) for p in parties}
    check(out_t, out_d)
    bit = [next(e for e in results[p] if not isinstance(e, (ArithTriples, DaBits))) for p in parties]
    a, b, c = (reduce(np.bitwise_xor, [getattr(t, f) for t in bit]) for f in ("a", "b", "c"))
    assert np.array_equal(c, a & b)


# --- what a party sees ------------------------------------------------------------------------

def test_received_messages_are_balanced(real5: dict[str, dict[str, PairwiseOt]]) -> None:
    parties = names(3)
    seen: dict[str, list[bytes]] = {"u": [], "t": [], "fold": []}
    for k in range(3):
        _, _, router = run(parties, among(real5, parties), 16, 512, f"view-{k}")
        for _, step, payload in router.received["bob"]:  # bob is P_1: he gets fold corrections
            kind = step.split("/")[1]
            seen[kind].append(payload[IKNP_HEADER:] if kind == "u" else payload)
    assert [len(v) for v in seen.values()] == [6, 6, 6]
    for chunks in seen.values():
        assert_balanced(b"".join(chunks), FALSE_ALARM / 3)


def test_shares_and_bits_are_balanced() -> None:
    parties = names(3)
    out_t, out_d, _ = run(parties, ideal_setup(parties), 512, 20_000)
    samples: list[bytes] = [getattr(t, f).tobytes() for t in out_t.values() for f in ("a", "b", "c")]
    samples += [np.packbits(d.bits.astype(np.uint8)).tobytes() for d in out_d.values()]
    r = reduce(np.bitwise_xor, [d.bits for d in out_d.values()])
    samples.append(np.packbits(r.astype(np.uint8)).tobytes())  # the daBits' r themselves
    for x in samples:
        assert_balanced(x, FALSE_ALARM / len(samples))


# --- protocol errors --------------------------------------------------------------------------

def test_engine_rejects_bad_messages() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    alice, bob, _ = (ArithDealerless(p, parties, 2, 10, SystemRng(), ot[p], "s7") for p in parties)
    with pytest.raises(RoundMismatch, match="s7.*arith/t.*alice.*before our"):
        bob.receive("alice", STEP_T, bytes(8 * 128))        # a correction before bob's u went out
    with pytest.raises(RoundMismatch, match="before our"):
        bob.receive("alice", fold_step(1), bytes(80))
    u_alice = {e.to: e for e in alice.start() if isinstance(e, Send)}
    assert bob.receive("alice", STEP_U, u_alice["bob"].payload) == []   # kept until start
    with pytest.raises(RoundMismatch, match="twice"):
        bob.receive("alice", STEP_U, u_alice["bob"].payload)
    with pytest.raises(RemoteProtocolError, match="not a peer"):
        bob.receive("mallory", STEP_U, u_alice["bob"].payload)
    for step in ("arith/x", "triples/u", fold_step(2), fold_step(0), "arith/fold/01"):
        with pytest.raises(RoundMismatch, match="not a step"):
            bob.receive("alice", step, bytes(80))
    with pytest.raises(RemoteProtocolError, match="bytes"):
        bob.receive("carlos", STEP_U, bytes(len(u_alice["bob"].payload) + 16))
    events = bob.start()
    assert sorted(e.step for e in events if isinstance(e, Send)) == [STEP_T, STEP_U, STEP_U]
    with pytest.raises(LocalProtocolError):
        bob.start()
    for step, size in ((STEP_T, 8 * 128 - 8), (STEP_T, 8 * 128 + 1), (fold_step(1), 88), (fold_step(1), 72)):
        with pytest.raises(RemoteProtocolError, match="bytes") as info:
            bob.receive("alice", step, bytes(size))
        assert not isinstance(info.value, RoundMismatch)
    bob.receive("alice", STEP_T, bytes(8 * 128))
    with pytest.raises(RoundMismatch, match="twice"):
        bob.receive("alice", STEP_T, bytes(8 * 128))
    bob.receive("alice", fold_step(1), bytes(80))
    with pytest.raises(RoundMismatch, match="twice"):
        bob.receive("alice", fold_step(1), bytes(80))
    assert bob.waiting_for == ("carlos",) and not bob.finished


def test_count_zero_kinds_have_no_steps() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    only_dabits = ArithDealerless("bob", parties, 0, 4, SystemRng(), ot["bob"])
    only_dabits.start()
    for step in (STEP_T, STEP_U):  # alice (P_0) sends no u and no t without triples
        with pytest.raises(RoundMismatch):
            only_dabits.receive("alice", step, b"")
    only_triples = ArithDealerless("bob", parties, 1, 0, SystemRng(), ot["bob"])
    only_triples.start()
    with pytest.raises(RoundMismatch):
        only_triples.receive("alice", fold_step(1), b"")


def test_replayed_extension_is_refused() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    first = {p: ArithDealerless(p, parties, 1, 1, SystemRng(), ot[p], "first") for p in parties}
    second = ArithDealerless("alice", parties, 1, 1, SystemRng(), ot["alice"], "second")
    u = next(e for e in first["bob"].start() if isinstance(e, Send))
    first["alice"].start()
    second.start()
    first["alice"].receive("bob", u.step, u.payload)
    with pytest.raises(RoundMismatch, match="second.*bob.*already used"):  # same PRG window, other session
        second.receive("bob", u.step, u.payload)


def test_engine_misuse() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    for args in (("zoe", parties, 1, 1), ("alice", parties, 0, 0), ("alice", parties, -1, 3),
                 ("alice", parties + ["david"], 1, 1), ("alice", ["alice"], 1, 1),
                 ("alice", ["alice", "alice", "bob"], 1, 1), ("alice", parties, 1 << 26, 1)):
        with pytest.raises(LocalProtocolError):
            ArithDealerless(args[0], args[1], args[2], args[3], SystemRng(), ot["alice"])


def test_share_types() -> None:
    w = np.zeros(3, dtype=np.uint64)
    t = ArithTriples(w, w.copy(), w.copy())
    d = DaBits(np.array([0, 1, 1], dtype=np.uint64), w.copy())
    assert "redacted" in repr(t) and "redacted" in repr(d) and t.count == d.count == 3
    for x in (t, d):
        with pytest.raises(TypeError):
            bool(x)
    assert t != ArithTriples(t.a, t.b, t.c)  # eq=False: no comparison of shares
    with pytest.raises(LocalProtocolError):
        ArithTriples(w, w[:2], w)
    with pytest.raises(LocalProtocolError):
        ArithTriples(w.astype(np.int64), w, w)
    with pytest.raises(LocalProtocolError):
        DaBits(np.array([0, 2, 1], dtype=np.uint64), w)
    with pytest.raises(LocalProtocolError):
        DaBits(w.reshape(3, 1), w)


# --- the pools --------------------------------------------------------------------------------

def test_pools_hand_out_each_item_once() -> None:
    parties = names(2)
    out_t, out_d, _ = run(parties, ideal_setup(parties), 10, 10)
    more_t, more_d, _ = run(parties, ideal_setup(parties), 2, 2)
    cases: list[tuple[Any, Any, Any, tuple[str, ...], str]] = [
        (ArithPool, out_t["alice"], more_t["alice"], ("a", "b", "c"), "triple"),
        (DaBitPool, out_d["alice"], more_d["alice"], ("bits", "arith"), "daBit")]
    for pool_type, mine, more, fields, noun in cases:
        pool = pool_type(mine)
        assert pool.remaining == 10 and pool.handed_out == 0
        first, second = pool.take(3), pool.take(7)
        for f in fields:
            assert np.array_equal(np.concatenate([getattr(first, f), getattr(second, f)]), getattr(mine, f))
        assert pool.remaining == 0 and pool.handed_out == 10
        assert all(not np.any(part) for part in pool._parts)  # zeroed what it handed out
        with pytest.raises(LocalProtocolError, match=f"{noun} reuse refused"):
            pool.take(1)
        with pytest.raises(ValueError):
            getattr(first, fields[0])[0] = 0  # handed-out shares are read-only
        pool.add(more)
        with pytest.raises(LocalProtocolError, match=f"{noun} reuse refused"):
            pool.take(3)
        with pytest.raises(LocalProtocolError):
            pool.take(0)
        last = pool.take(2)
        assert all(np.array_equal(getattr(last, f), getattr(more, f)) for f in fields) and pool.remaining == 0
    assert ArithPool().remaining == DaBitPool().remaining == 0


def test_pools_of_all_parties_stay_aligned() -> None:
    parties = names(3)
    out_t, out_d, _ = run(parties, ideal_setup(parties), 8, 8)
    tpools = {p: ArithPool(t) for p, t in out_t.items()}
    dpools = {p: DaBitPool(d) for p, d in out_d.items()}
    for n in (1, 5, 2):
        check({p: pool.take(n) for p, pool in tpools.items()}, {p: pool.take(n) for p, pool in dpools.items()})
    assert all(pool.remaining == 0 for pool in tpools.values())
    assert all(pool.remaining == 0 for pool in dpools.values())
