"""Random OTs made ahead of time (mpc/ot/pool.py) and the triples sessions derandomise from them
(mpc/ot/triples.py "triples/r", mpc/protocols/compute.py hellos), in memory with the real IKNP.

What is checked, from what could go wrong rather than from one example:
- correctness: c = a ∧ b on every bit, with every direction pooled and with any mix of pooled
  and IKNP directions, for 2 to 4 parties, messages in a CSPRNG-chosen order;
- views: what a party receives in a pooled session (d and t) is balanced bit by bit, and the
  sender's d never equals the receiver's a (so it cannot be a in the clear);
- used once: a receiver range is never handed out twice (also from concurrent threads), a
  sender range is never answered twice (a replayed or overlapping reservation), a fill is
  never stored twice, and handed-out bits are zeroed in the pool;
- bounded: fills follow demand within the capacity, and a sender refuses a fill beyond its bound;
- restarts: a party whose pools are gone makes both ends fall back to IKNP for its directions,
  and the other end drops the batches it can no longer use.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from functools import reduce

import numpy as np
import pytest

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.ot.pool import (
    MAX_FILL_WORDS,
    MAX_TICKETS,
    MIN_FILL_WORDS,
    SETUP_ID_BYTES,
    TICKET_ID_BYTES,
    RotPools,
    Segment,
)
from mpc.ot.triples import STEP_R, STEP_T, STEP_U, OtSetups, PairwiseOt, TripleDealerless
from mpc.prg import AesCtrRng, SystemRng
from mpc.protocols.beaver import BitTriples
from mpc.protocols.agreement import STEP_DIGEST, AgreedParty
from mpc.protocols.compute import STEP_HELLO
from mpc.protocols.threshold import ThresholdParty
from mpc.ring import Words, from_signed
from tests.sim.common import Router, assert_balanced, ideal_setup, names

SETUP = b"s" * SETUP_ID_BYTES
CAPACITY = 1 << 20


def filled(parties: Sequence[str], ot: Mapping[str, Mapping[str, PairwiseOt]], words: int,
           capacity: int = CAPACITY) -> dict[str, RotPools]:
    """Pools where every party has made one fill of `words` with every peer (as the node does)."""
    pools = {p: RotPools(capacity) for p in parties}
    for r, s in itertools.permutations(parties, 2):
        fill(pools, ot, r, s, words)
    return pools


def fill(pools: Mapping[str, RotPools], ot: Mapping[str, Mapping[str, PairwiseOt]], r: str, s: str,
         words: int) -> None:
    made = pools[r].make_fill(s, SETUP, ot[r][s].as_receiver, words, SystemRng(), pools[r].held(s))
    assert pools[s].accept_fill(r, made.payload, ot[s][r].as_sender, "test") == words
    pools[r].commit(made)


def pooled_run(parties: Sequence[str], ot: Mapping[str, Mapping[str, PairwiseOt]], pools: Mapping[str, RotPools],
               words: int, directions: set[tuple[str, str]]) -> tuple[dict[str, BitTriples], Router]:
    """One triple session where the (receiver, sender) `directions` come from the pools."""
    reserved = {(r, s): pools[r].reserve(s, words) for r, s in directions}
    claimed = {(r, s): pools[s].claim(r, res.segments, "test") for (r, s), res in reserved.items() if res}
    assert len(claimed) == len(directions)
    engines = {p: TripleDealerless(p, parties, words, AesCtrRng(os.urandom(16)), ot[p], "s",
                                   pooled_recv={s: reserved[p, s] for r, s in directions if r == p},
                                   pooled_send={r: claimed[r, p] for r, s in directions if s == p})
               for p in parties}
    router = Router(engines)
    router.run()
    results = router.single()
    return results, router


def check_triples(results: Mapping[str, BitTriples]) -> None:
    a = reduce(np.bitwise_xor, (t.a for t in results.values()))
    b = reduce(np.bitwise_xor, (t.b for t in results.values()))
    c = reduce(np.bitwise_xor, (t.c for t in results.values()))
    assert np.array_equal(c, a & b)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_pooled_triples_are_triples_in_every_mix_of_pooled_and_iknp_directions(n: int) -> None:
    parties = names(n)
    ot = ideal_setup(parties)
    words = 96
    every = set(itertools.permutations(parties, 2))
    mixes = [every, set(), {next(iter(sorted(every)))}]
    order = SystemRng()
    mixes += [{d for d in sorted(every) if order.random_bytes(1)[0] & 1} for _ in range(3)]
    pools = filled(parties, ot, MIN_FILL_WORDS)
    for directions in mixes:
        results, router = pooled_run(parties, ot, pools, words, directions)
        check_triples(results)
        for me, got in router.received.items():
            steps = [step for _, step, _ in got]
            iknp = {s for s in parties if s != me and (me, s) not in directions}   # we choose by IKNP with s
            assert steps.count(STEP_U) == sum((r, me) not in directions for r in parties if r != me)
            assert steps.count(STEP_T) == len(iknp)
            touched = {p for d in directions if me in d for p in d} - {me}
            assert steps.count(STEP_R) == len(touched)


def test_a_pooled_session_sends_one_derandomisation_message_per_peer_that_looks_uniform() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, 4 * MIN_FILL_WORDS)
    words = 4 * MIN_FILL_WORDS
    results, router = pooled_run(parties, ot, pools, words, set(itertools.permutations(parties, 2)))
    check_triples(results)
    for me, got in router.received.items():
        assert sorted((s, step) for s, step, _ in got) == sorted((p, STEP_R) for p in parties if p != me)
        for sender, _, payload in got:
            assert len(payload) == 2 * 8 * words   # d and t, one bit each per triple
            assert_balanced(payload)
            d = np.frombuffer(payload, dtype="<u8")[:words]
            assert not np.array_equal(d, results[sender].a)   # d = a ⊕ c, never a itself
            assert_balanced(d ^ results[sender].a)            # ... and c, the mask, is balanced


def test_reservations_are_disjoint_also_from_concurrent_threads_and_zeroed_in_the_pool() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MAX_FILL_WORDS // 4)
    alice = pools["alice"]
    taken: list[list[Segment]] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(20):
            res = alice.reserve("bob", 7)
            if res is None:
                return
            with lock:
                taken.append(list(res.segments))

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted((s.start, s.start + s.count) for segs in taken for s in segs)
    assert len(spans) == 80 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert alice.level("bob") == MAX_FILL_WORDS // 4 - 80 * 7
    batch = alice._receiving["bob"][0]   # the pool keeps zeros where it handed out
    assert not batch.choices[:80 * 7].any() and not batch.chosen[:80 * 7].any()
    # bob answers each range once, in any order, and refuses every replay and overlap
    for segs in reversed(taken):
        bob_m0, _ = pools["bob"].claim("alice", segs, "test")
        assert bob_m0.size == 7
    for segs in taken[:5]:
        with pytest.raises(RoundMismatch, match="used before"):
            pools["bob"].claim("alice", segs, "test")
    first = taken[0][0]
    with pytest.raises(RoundMismatch, match="used before"):
        pools["bob"].claim("alice", [Segment(first.batch, first.start + 3, 10)], "test")


def test_a_reservation_overlapping_itself_or_outside_any_batch_is_refused() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MIN_FILL_WORDS)
    batch = pools["alice"]._receiving["bob"][0].id
    for segments, why in (([Segment(batch, 0, 10), Segment(batch, 5, 10)], "used before"),
                          ([Segment(batch, MIN_FILL_WORDS - 1, 2)], "not held"),
                          ([Segment(b"\0" * 8, 0, 1)], "not held")):
        with pytest.raises(RoundMismatch, match=why):
            pools["bob"].claim("alice", segments, "test")
    assert pools["bob"].sending_level("alice") == MIN_FILL_WORDS   # a refused claim takes nothing


def test_a_fill_is_stored_once_and_only_with_the_setup_it_names() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    alice, bob = RotPools(CAPACITY), RotPools(CAPACITY)
    made = alice.make_fill("bob", SETUP, ot["alice"]["bob"].as_receiver, MIN_FILL_WORDS, SystemRng(),
                           alice.held("bob"))
    with pytest.raises(RemoteProtocolError, match="does not hold"):
        bob.accept_fill("alice", made.payload, None, "test")
    bob.accept_fill("alice", made.payload, ot["bob"]["alice"].as_sender, "test")
    with pytest.raises(RoundMismatch):
        bob.accept_fill("alice", made.payload, ot["bob"]["alice"].as_sender, "test")
    for bad in (made.payload[:10], made.payload[:SETUP_ID_BYTES + 9] + b"\0" * 4,
                made.payload[:-1]):
        with pytest.raises(RemoteProtocolError):
            bob.accept_fill("alice", bad, ot["bob"]["alice"].as_sender, "test")


def test_fills_follow_demand_within_the_capacity_and_a_sender_refuses_beyond_its_bound() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    assert RotPools(0).next_fill_words("bob") == 0 and not RotPools(0).enabled
    with pytest.raises(LocalProtocolError):
        RotPools(100)
    alice = RotPools(CAPACITY)
    assert alice.next_fill_words("bob") == 0            # no session yet: nothing wanted
    assert alice.reserve("bob", 7) is None              # a miss still notes the demand
    assert alice.next_fill_words("bob") == MIN_FILL_WORDS
    assert alice.reserve("bob", 10_000) is None
    assert alice.next_fill_words("bob") == MAX_FILL_WORDS    # twice 10,000 words, one fill at a time
    small = RotPools(256 * 64)                          # capacity 256 words
    small.reserve("bob", 10_000)
    assert small.next_fill_words("bob") == 256
    # a sender holds at most twice its own capacity from one peer
    bob = RotPools(4 * 64 * MIN_FILL_WORDS // 4)        # capacity MIN_FILL_WORDS words
    pools = {"alice": alice, "bob": bob}
    fill(pools, ot, "alice", "bob", MIN_FILL_WORDS)
    fill(pools, ot, "alice", "bob", MIN_FILL_WORDS)
    made = alice.make_fill("bob", SETUP, ot["alice"]["bob"].as_receiver, MIN_FILL_WORDS, SystemRng(),
                           alice.held("bob"))
    with pytest.raises(RemoteProtocolError, match="beyond its bound"):
        bob.accept_fill("alice", made.payload, ot["bob"]["alice"].as_sender, "test")


def test_a_fill_names_what_its_receiver_holds_and_the_sender_drops_the_rest() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    alice, bob = RotPools(CAPACITY), RotPools(CAPACITY)
    lost = alice.make_fill("bob", SETUP, ot["alice"]["bob"].as_receiver, MIN_FILL_WORDS, SystemRng(),
                           alice.held("bob"))
    bob.accept_fill("alice", lost.payload, ot["bob"]["alice"].as_sender, "test")   # its acknowledgement lost
    assert bob.sending_level("alice") == MIN_FILL_WORDS and alice.level("bob") == 0
    fill({"alice": alice, "bob": bob}, ot, "alice", "bob", MIN_FILL_WORDS)
    assert bob.sending_level("alice") == MIN_FILL_WORDS == alice.level("bob")
    assert bob.holdings("alice") == tuple(b.id for b in alice._receiving["bob"])


@dataclass
class Started:
    """A ThresholdParty with its contribution bound, as the Router starts engines."""

    engine: ThresholdParty
    contribution: Words

    def start(self) -> list[Send | Output]:
        return self.engine.start(self.contribution)

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        return self.engine.receive(sender, step, payload)


def threshold_engines(parties: Sequence[str], setups: Mapping[str, OtSetups], totals: Sequence[int],
                      sid: str) -> dict[str, Started]:
    """The first party contributes the totals, the others zeros: [total >= 0] for each."""
    shares = {p: np.zeros(len(totals), dtype=np.uint64) for p in parties}
    shares[parties[0]] = from_signed(np.array(totals, dtype=np.int64))
    return {p: Started(ThresholdParty(sid, p, parties, len(totals), 0, SystemRng(), setups[p], 32), shares[p])
            for p in parties}


def run_threshold(parties: Sequence[str], setups: Mapping[str, OtSetups], totals: Sequence[int]) -> Router:
    router = Router(threshold_engines(parties, setups, totals, os.urandom(16).hex()))
    router.run()
    bits = reduce(np.bitwise_xor, (out.words for out in router.single().values()))
    assert bits.tolist() == [int(t >= 0) for t in totals]
    return router


def registries(parties: Sequence[str], ot: Mapping[str, Mapping[str, PairwiseOt]],
               pools: Mapping[str, RotPools | None]) -> dict[str, OtSetups]:
    setups = {p: OtSetups(pools=pools[p]) for p in parties}
    for p in parties:
        for q, pair in ot[p].items():
            setups[p].add(q, SETUP, pair)
    return setups


def test_sessions_spend_the_pools_and_a_party_without_them_makes_both_ends_fall_back_to_iknp() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    totals = [5, -1, 0, -7]
    pools = filled(parties, ot, MIN_FILL_WORDS)
    setups = registries(parties, ot, pools)
    words = ThresholdParty("0" * 32, "alice", parties, len(totals), 0, SystemRng(), setups["alice"], 32).plan.bit_words
    for _ in range(3):
        router = run_threshold(parties, setups, totals)
        for me, got in router.received.items():
            assert {step for _, step, _ in got if step.startswith("triples/")} == {STEP_R}
    assert all(pools[p].level(q) == MIN_FILL_WORDS - 3 * words for p, q in itertools.permutations(parties, 2))
    # carlos restarts: no pools, the same setups (as if made again)
    restarted = dict(pools, carlos=RotPools(CAPACITY))
    setups = registries(parties, ot, restarted)
    router = run_threshold(parties, setups, totals)
    for me, got in router.received.items():
        for sender, step, _ in got:
            if step.startswith("triples/"):
                carlos_pair = "carlos" in (me, sender)
                assert (step == STEP_R) != carlos_pair, (me, sender, step)
    # alice and bob dropped their batches with carlos: he holds none of them
    assert restarted["alice"].level("carlos") == restarted["bob"].level("carlos") == 0
    assert restarted["alice"].level("bob") == MIN_FILL_WORDS - 4 * words


def test_a_replayed_hello_cannot_make_a_sender_answer_its_range_twice() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MIN_FILL_WORDS)
    setups = registries(parties, ot, pools)
    router = Router(threshold_engines(parties, setups, [3], "ab" * 16))
    router.run()
    hello = next(p for s, step, p in router.received["bob"] if step == STEP_HELLO and s == "alice")
    again = threshold_engines(parties, setups, [3], "cd" * 16)["bob"]
    again.start()
    with pytest.raises(RoundMismatch, match="used before"):
        again.receive("alice", STEP_HELLO, hello)


def test_the_first_and_layer_opens_before_the_triples_are_complete_and_finishes_only_with_them() -> None:
    """A Beaver opening needs only a and b, so the comparison's first layer goes out in the same round
    as the derandomisation; finishing it needs c, so with every peer's first-layer words in and the
    derandomisations held back, no party goes on; once they arrive, every party finishes correctly."""
    parties = names(3)
    ot = ideal_setup(parties)
    totals = [5, -1, 0, -7, 1 << 20]
    setups = registries(parties, ot, filled(parties, ot, MIN_FILL_WORDS))
    engines = threshold_engines(parties, setups, totals, os.urandom(16).hex())
    pending: list[tuple[str, Send]] = []
    held: list[tuple[str, Send]] = []
    sent: dict[str, list[str]] = {p: [] for p in parties}
    outputs: dict[str, Output] = {}

    def take(me: str, events: Sequence[object]) -> None:
        for e in events:
            if isinstance(e, Send):
                sent[me].append(e.step)
                (held if e.step == STEP_R else pending).append((me, e))
            elif isinstance(e, Output):
                outputs[me] = e

    def deliver_all() -> None:
        for _ in range(10_000):   # bounded
            if not pending:
                return
            sender, send = pending.pop(0)
            take(send.to, engines[send.to].receive(sender, send.step, send.payload))
        raise AssertionError("did not settle")

    for p in parties:
        take(p, engines[p].start())
    deliver_all()   # everything but the derandomisations
    first = f"cmp/{engines['alice'].engine.plan.rounds[0][0]}"
    assert len(held) == 6 and not outputs
    for p in parties:   # the first layer went out, to both peers, and nothing after it
        assert [step for step in sent[p] if step.startswith("cmp/")] == [first, first], sent[p]
    pending, held = held, []
    deliver_all()
    bits = reduce(np.bitwise_xor, (outputs[p].words for p in parties))
    assert bits.tolist() == [int(t >= 0) for t in totals]


# ---- tickets: ranges reserved one session ahead (mpc/ot/pool.py "Tickets") ------------------------


def test_a_ticket_is_issued_with_every_peer_or_none_redeemed_once_and_its_batches_stay_held() -> None:
    parties = names(3)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MIN_FILL_WORDS)
    alice = pools["alice"]
    assert alice.issue(dict.fromkeys(["bob", "carlos"], MIN_FILL_WORDS + 1)) is None   # too few with either: none
    assert alice.level("bob") == alice.level("carlos") == MIN_FILL_WORDS
    issued = alice.issue(dict.fromkeys(["bob", "carlos"], MIN_FILL_WORDS))   # every word: the batches leave the pool
    assert issued is not None and set(issued) == {"bob", "carlos"}
    assert alice.level("bob") == 0 and alice._receiving["bob"] == []
    ticket, reservation = issued["bob"]
    # A fill still names the batch the ticket reserved from, so the sender keeps it.
    assert reservation.segments[0].batch in alice.held("bob")
    other = Segment(reservation.segments[0].batch, 1, MIN_FILL_WORDS - 1)
    assert alice.redeem("bob", ticket, [other]) is None          # other ranges: refused, and dropped
    assert alice.redeem("bob", ticket, reservation.segments) is None
    assert reservation.segments[0].batch not in alice.held("bob")
    ticket, reservation = issued["carlos"]
    assert alice.redeem("bob", ticket, reservation.segments) is None   # another peer's ticket
    got = alice.redeem("carlos", ticket, reservation.segments)
    assert got is not None and np.array_equal(got.choices, reservation.choices)
    assert alice.redeem("carlos", ticket, reservation.segments) is None   # once
    with pytest.raises(RoundMismatch, match="used before|not held"):   # the sender answers its ranges once
        for _ in range(2):
            pools["carlos"].claim("alice", reservation.segments, "test")


def test_a_sender_takes_a_ticket_only_as_its_receiver_issued_it() -> None:
    """A coordinator sees a ticket's id and ranges, never the key its id is a MAC under: the sender refuses
    an id it made up, a real id stated with other ranges (moved, shortened, lengthened, another batch's) or
    for another receiver, and any ticket once the batch is gone, all before it claims anything; the real
    ticket then claims its ranges, once."""
    parties = names(3)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, 2 * MIN_FILL_WORDS)
    alice, bob = pools["alice"], pools["bob"]
    issued = alice.issue({"bob": 16, "carlos": 16})
    assert issued is not None
    ticket, reservation = issued["bob"]
    (seg,) = reservation.segments
    level = bob.sending_level("alice")
    forged = [(os.urandom(TICKET_ID_BYTES), reservation.segments),
              (ticket, [Segment(seg.batch, seg.start + 16, seg.count)]),
              (ticket, [Segment(seg.batch, seg.start, seg.count - 1)]),
              (ticket, [Segment(seg.batch, seg.start, seg.count + 1)]),
              (ticket, [Segment(os.urandom(len(seg.batch)), seg.start, seg.count)]),
              (ticket, [*reservation.segments, Segment(seg.batch, seg.start + 16, 1)]),
              (ticket, []),
              (issued["carlos"][0], reservation.segments)]
    for ident, segments in forged:
        assert not bob.authentic("alice", ident, segments), (ident.hex(), segments)
    assert not pools["carlos"].authentic("alice", ticket, reservation.segments)   # another sender's view
    assert not bob.authentic("carlos", ticket, reservation.segments)              # as if carlos had issued it
    assert bob.sending_level("alice") == level                                    # nothing was claimed
    assert bob.authentic("alice", ticket, reservation.segments)
    m0, m1 = bob.claim("alice", reservation.segments, "test")
    assert np.array_equal(reservation.chosen, (m0 & ~reservation.choices) | (m1 & reservation.choices))   # m_c
    with pytest.raises(RoundMismatch, match="used before"):
        bob.claim("alice", reservation.segments, "test")
    assert bob.authentic("alice", ticket, reservation.segments)   # still its own id: the claim is what refuses
    # Ticket ids are distinct, and none is an id of the same ranges under another batch's key.
    more = [alice.issue({"bob": 1}) for _ in range(8)]
    ids = [t["bob"][0] for t in more if t is not None] + [ticket]
    assert len(set(ids)) == len(ids) == 9


def test_tickets_are_bounded_per_peer_and_dropped_with_batches_the_peer_lost() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MIN_FILL_WORDS)
    alice = pools["alice"]
    tickets = [alice.issue({"bob": 1}) for _ in range(MAX_TICKETS + 2)]
    assert all(t is not None for t in tickets)
    kept = [t["bob"] for t in tickets if t is not None]
    assert [alice.redeem("bob", t, r.segments) is None for t, r in kept[:2]] == [True, True]   # the oldest were dropped
    assert alice.redeem("bob", kept[2][0], kept[2][1].segments) is not None
    alice.forget_missing("bob", [])   # bob restarted: he holds none of alice's batches
    assert alice.redeem("bob", kept[3][0], kept[3][1].segments) is None


def test_a_dropped_ticket_is_held_no_longer_and_its_batches_leave_held() -> None:
    parties = names(2)
    ot = ideal_setup(parties)
    alice = filled(parties, ot, MIN_FILL_WORDS)["alice"]
    issued = alice.issue({"bob": MIN_FILL_WORDS})   # the whole batch: only the ticket keeps it held
    assert issued is not None and alice.tickets("bob") == 1
    ticket, reservation = issued["bob"]
    assert reservation.segments[0].batch in alice.held("bob")
    assert alice.drop("bob", os.urandom(TICKET_ID_BYTES)) is False   # not one of ours: nothing changes
    assert alice.drop("bob", ticket) is True and alice.tickets("bob") == 0
    assert reservation.segments[0].batch not in alice.held("bob")
    assert alice.redeem("bob", ticket, reservation.segments) is None
    assert alice.drop("bob", ticket) is False


def ticketed_engines(parties: Sequence[str], pools: Mapping[str, RotPools], setups: Mapping[str, OtSetups],
                     totals: Sequence[int], sid: str) -> dict[str, tuple[ThresholdParty, Words]]:
    """Every receiver issues a ticket to every peer; each party takes its side of all of them.

    Returns: each party's engine and its input share (the first party holds every total).
    """
    issued = {r: pools[r].issue(ThresholdParty("0" * 32, r, parties, len(totals), 0, SystemRng(), setups[r],
                                               32).ticket_words) for r in parties}
    seeds = {frozenset(pair): os.urandom(16) for pair in itertools.combinations(parties, 2)}   # keyed, as in one round
    engines = {}
    for me in parties:
        mine = issued[me]
        assert mine is not None
        recv = {s: pools[me].redeem(s, mine[s][0], mine[s][1].segments) for s in mine}
        send = {r: pools[me].claim(r, got[me][1].segments, "test") for r, got in issued.items()
                if r != me and got is not None}
        assert all(v is not None for v in recv.values())
        shares = np.zeros(len(totals), dtype=np.uint64)
        if me == parties[0]:
            shares = from_signed(np.array(totals, dtype=np.int64))
        engines[me] = (ThresholdParty(sid, me, parties, len(totals), 0, SystemRng(), setups[me], 32,
                                      mask_seeds={p: seeds[frozenset((me, p))] for p in parties if p != me},
                                      pooled=(recv, send)), shares)   # type: ignore[arg-type]
    return engines


@dataclass
class Agreeing:
    """An engine behind the node's agreement wrapper, started with its share and a digest."""

    party: AgreedParty
    share: Words
    digest: bytes

    def start(self) -> list[Send | Output]:
        return self.party.start(self.share, self.digest)

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        return self.party.receive(sender, step, payload)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_with_tickets_a_comparison_sends_no_hello_takes_a_round_fewer_and_gives_the_plaintext(n: int) -> None:
    """Also from four parties on, where pairs make different numbers of triples (the carry-save gates
    among subsets) and each ticket reserves its pair's."""
    parties = names(n)
    ot = ideal_setup(parties)
    totals = [5, -1, 0, -7, 1 << 20]
    pools = filled(parties, ot, MIN_FILL_WORDS)
    setups = registries(parties, ot, pools)
    sid = os.urandom(16).hex()
    engines = ticketed_engines(parties, pools, setups, totals, sid)
    plan_rounds = [f"cmp/{label}" for label, _ in engines["alice"][0].plan.rounds]
    router = Router({p: Agreeing(AgreedParty(e, sid, p, parties), share, b"d" * 32)
                     for p, (e, share) in engines.items()})
    router.run()
    bits = reduce(np.bitwise_xor, (out.words for out in router.single().values()))
    assert bits.tolist() == [int(t >= 0) for t in totals]
    for me in parties:
        steps = [step for _, step, _ in router.received[me]]
        assert STEP_HELLO not in steps and STEP_U not in steps and steps.count(STEP_R) == n - 1
        assert sorted({s for s in steps if s.startswith("cmp/")}) == sorted(plan_rounds)
        # From each peer: its digest, its derandomisation and one message per program round, nothing else
        # (the derandomisation travels with the first round's openings: the program's rounds are all).
        assert sorted(steps) == sorted([STEP_DIGEST, STEP_R, *plan_rounds] * (n - 1))
    words = {(me, peer): len(payload) // 16 for me in parties for peer, step, payload in router.received[me]
             if step == STEP_R}   # d and t: one word each per triple word of the pair
    plan = engines["alice"][0].plan
    assert words == {(a, b): plan.pair_words(parties.index(a), parties.index(b)) for a in parties for b in parties
                     if a != b}
    assert (n > 3) == (len(set(words.values())) > 1)


def test_with_tickets_only_masked_first_openings_leave_before_agreement_and_look_uniform() -> None:
    """The first message to each peer carries the digest, the derandomisation and the first openings.
    Told another description than its peers (another digest), a party gets no output, refuses at the
    first digest, and every party's first messages are uniformly random over many sessions."""
    parties = names(3)
    ot = ideal_setup(parties)
    pools = filled(parties, ot, MIN_FILL_WORDS)
    setups = registries(parties, ot, pools)
    totals = [123, -45, 6]
    first_round = f"cmp/{ThresholdParty('0' * 32, 'alice', parties, 3, 0, SystemRng(), setups['alice'], 32).plan.rounds[0][0]}"
    opened = []
    for _ in range(24):
        sid = os.urandom(16).hex()
        engines = ticketed_engines(parties, pools, setups, totals, sid)
        agreed = {p: AgreedParty(e, sid, p, parties) for p, (e, _) in engines.items()}
        digests = {p: (b"x" if p == "carlos" else b"d") * 32 for p in parties}
        first = {p: agreed[p].start(engines[p][1], digests[p]) for p in parties}
        for p, events in first.items():
            assert not any(isinstance(e, Output) for e in events)
            assert {e.step for e in events if isinstance(e, Send)} == {STEP_DIGEST, STEP_R, first_round}
            opened += [e.payload for e in events if isinstance(e, Send) and e.step == first_round]
        digest = next(e.payload for e in first["carlos"] if isinstance(e, Send) and e.to == "alice")
        with pytest.raises(RemoteProtocolError, match="different session description"):
            agreed["alice"].receive("carlos", STEP_DIGEST, digest)
        if len(pools["alice"]._receiving["bob"]) == 0 or pools["alice"].level("bob") < 64:
            pools = filled(parties, ot, MIN_FILL_WORDS)
            setups = registries(parties, ot, pools)
    assert_balanced(b"".join(opened))
