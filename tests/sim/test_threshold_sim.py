"""The threshold engine (mpc/protocols/threshold.py, PROTOCOLS.md §2-§5) in memory.

ThresholdParty (a ComputeParty, mpc/protocols/compute.py) composes "mpc/hello", the
pairwise-masked sum, OT setup and bit triples and the sign-bit comparison; here every party's
engine is joined by an in-memory router that delivers messages in a CSPRNG-shuffled order
(secrets), interleaved with the starts, across one or several concurrent sessions. Each party
keeps one OT setup registry (mpc.ot.triples.OtSetups, bounded per peer as NodeCore.ot_setups
is) that its engines read and add to, so a module's sessions reuse the setups. The router
reads each party's registry around every engine call to see which session added what.

- n = 2, 3: real Chou-Orlandi base OTs, run by the engine itself in the module's first
  session (the only fresh setup but one); n = 4, 5: the ideal base-OT test double of
  tests/sim/test_triples_sim.py (`ideal_setup`) registered under one setup id that every
  party advertises, so that no base OT runs.
- [sum >= k] equals the plaintext for random vectors and at the edges (total - k in
  {-1, 0, 1}, total 0, negative totals, the +-2^30 bounds the node enforces); votes with the
  half rule (contributions 2t - n from vote_contribution) and with explicit thresholds.
- OT state: a second session reuses the setups (no "ot/base/" step, nothing added to any
  registry); a party that lost its setups forces fresh ones with exactly its own pairs.
- Only the preprocessing the program needs is made: bit triples, no "arith/" step.
- Engine errors: unknown, repeated or malformed messages, non-peers, a second start.

The only statistical assertion (each party's output share bits are balanced) uses a
Hoeffding bound with false-failure probability below 1e-6 for the whole file.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.node.core import MAX_OT_SETUPS_PER_PEER
from mpc.ot.triples import STEP_BASE_A, STEP_BASE_B, STEP_T, STEP_U, OtSetups, PairwiseOt, parse_session_hello
from mpc.prg import SystemRng
from mpc.encoding import MAX_BALLOTS
from mpc.protocols.contribution import (
    COMPARE_BITS,
    check_threshold,
    compare_contribution,
    vote_bits,
    vote_contribution,
    vote_threshold,
)
from mpc.events import Output, Send
from mpc.protocols.sum import STEP_SEED
from mpc.protocols.threshold import MAX_SETUPS_ADVERTISED, SETUP_ID_BYTES, STEP_HELLO, ThresholdParty
from mpc.ring import Words, from_signed
from tests.sim.test_triples_sim import ideal_setup

NAMES = ("alice", "bob", "carlos", "david", "erin")
ELL = COMPARE_BITS                       # what the node runs (mpc/node/core.py)
IDEAL_ID = b"ideal-setup-0001"        # the id every party advertises for the ideal setups


def hello(*ids: bytes) -> bytes:
    """A session hello advertising these setup ids, with no pool reservation and no pool holdings."""
    return bytes([len(ids)]) + b"".join(ids) + b"\0\0"


def setup_ids(payload: bytes) -> bytes:
    """The setup ids a session hello advertises, joined in order."""
    return b"".join(sorted(parse_session_hello(payload, "test").setups))
FAMILY_ALPHA = 1e-6                      # false-failure probability of the whole file
Setups = dict[str, dict[bytes, PairwiseOt]]


def names(n: int) -> tuple[str, ...]:
    return NAMES[:n]


def _largest(accepts: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest x in [lo, hi] with accepts(x), for accepts true up to it and false after (bisection)."""
    assert accepts(lo) and not accepts(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepts(mid) else (lo, mid)
    return lo


def _accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except InputError:
        return False
    return True


@functools.cache
def limit(n: int) -> int:
    """The largest |contribution| the node's own check (compare_contribution) accepts for n parties."""
    def ok(v: int) -> bool:
        return _accepts(lambda: compare_contribution(np.array([v, -v], dtype=np.int64), 0, n, "x"))
    return _largest(ok, 0, 1 << 62)


# The public thresholds the node's own check (check_threshold) accepts: K_LO..K_HI.
K_HI = _largest(lambda k: _accepts(lambda: check_threshold(k)), 0, 1 << 62)
K_LO = -_largest(lambda k: _accepts(lambda: check_threshold(-k)), 0, 1 << 62)
RING = 1 << ELL


def in_range(total: int, k: int) -> bool:
    """Whether [total >= k] is within what a sign bit mod 2^ell can decide (PROTOCOLS.md §5)."""
    return -RING // 2 <= total - k < RING // 2


# ---- parties and the router ------------------------------------------------------------------


def registry(held: Mapping[str, Mapping[bytes, PairwiseOt]] | None = None) -> OtSetups:
    """An OT setup registry bounded like the node's, holding `held` (per peer, oldest first)."""
    setups = OtSetups(MAX_OT_SETUPS_PER_PEER)
    for peer, ids in (held or {}).items():
        for setup_id, pair in ids.items():
            setups.add(peer, setup_id, pair)
    return setups


@dataclass
class Party:
    """What a node keeps across sessions: its OT setup registry (NodeCore.ot_setups)."""

    name: str
    setups: OtSetups = field(default_factory=registry)

    def holds(self) -> Setups:
        """The setups this party's registry holds, per peer with at least one (copies)."""
        return {q: ids for q in NAMES if q != self.name and (ids := self.setups.known(q))}


@dataclass(frozen=True)
class NewSetup:
    """A setup that appeared in a party's registry during one engine call of a session."""

    peer: str
    setup_id: bytes
    pair: PairwiseOt


def added(before: Setups, after: Setups) -> list[NewSetup]:
    """What a registry gained between two snapshots: new ids, or ids now holding another pair."""
    return [NewSetup(q, setup_id, pair) for q, ids in after.items() for setup_id, pair in ids.items()
            if before.get(q, {}).get(setup_id) is not pair]


@dataclass
class Run:
    """One session's outcome at every party."""

    session_id: str
    parties: tuple[str, ...]
    outputs: dict[str, Words] = field(default_factory=dict)
    sent: list[tuple[str, str, str, bytes]] = field(default_factory=list)       # (sender, to, step, payload)
    new_setups: list[tuple[str, NewSetup]] = field(default_factory=list)        # (party, what it added)
    refused: list[tuple[str, str, str]] = field(default_factory=list)           # duplicates refused
    engines: dict[str, ThresholdParty] = field(default_factory=dict)

    @property
    def bits(self) -> Words:
        out = np.zeros_like(self.outputs[self.parties[0]])
        for words in self.outputs.values():
            out ^= words
        return out

    def steps(self) -> set[str]:
        return {step for _, _, step, _ in self.sent}

    def base_ot_pairs(self) -> set[frozenset[str]]:
        return {frozenset((s, t)) for s, t, step, _ in self.sent if step.startswith("ot/")}


@dataclass
class Spec:
    """A session to run: its parties, each party's signed contribution, the public k and the ring width."""

    parties: tuple[str, ...]
    contributions: Mapping[str, Sequence[int]]
    k: int
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    ell: int = ELL


def run_sessions(pool: Mapping[str, Party], specs: Sequence[Spec], *, duplicate_cmp: bool = False) -> list[Run]:
    """Run the sessions at once: every start and every message in one CSPRNG-shuffled queue.

    Each engine is built (like NodeCore) on its party's registry, which it reads when built and
    adds its new setups to; what each engine call added is recorded in its session's
    `new_setups`. With `duplicate_cmp`, the first "cmp/" message a party gets after its own
    comparison began is delivered twice in every session, and the second copy must be refused
    (RoundMismatch) without disturbing the run.
    Returns: one Run per spec, every party finished.
    """
    engines: dict[tuple[str, str], ThresholdParty] = {}
    runs = {s.session_id: Run(s.session_id, s.parties) for s in specs}
    starts: list[tuple[str, str, Words]] = []
    for s in specs:
        length = len(next(iter(s.contributions.values())))
        for p in s.parties:
            engines[s.session_id, p] = ThresholdParty(s.session_id, p, s.parties, length, s.k, SystemRng(),
                                                      pool[p].setups, s.ell)
            starts.append((s.session_id, p, from_signed(np.asarray(s.contributions[p], dtype=np.int64))))
    queue: list[tuple[str, str, str, str, bytes]] = []   # (session, sender, to, step, payload)
    for _ in range(200_000):  # bounded
        if not queue and not starts:
            break
        if starts and (not queue or secrets.randbelow(3) == 0):
            sid, me, words = starts.pop(secrets.randbelow(len(starts)))
            before = pool[me].holds()
            events = engines[sid, me].start(words)
        else:
            sid, sender, me, step, payload = queue.pop(secrets.randbelow(len(queue)))
            before = pool[me].holds()
            events = engines[sid, me].receive(sender, step, payload)
            run = runs[sid]
            if (duplicate_cmp and step.startswith("cmp/") and not run.refused
                    and any(s == me and st.startswith("cmp/") for s, _, st, _ in run.sent)):
                with pytest.raises(RoundMismatch):   # "already received", or stale if it closed a round
                    engines[sid, me].receive(sender, step, payload)
                run.refused.append((sender, me, step))
        run = runs[sid]
        run.new_setups += [(me, new) for new in added(before, pool[me].holds())]
        for e in events:
            if isinstance(e, Send):
                assert e.to in run.parties and e.to != me
                queue.append((sid, me, e.to, e.step, e.payload))
                run.sent.append((me, e.to, e.step, e.payload))
            else:
                assert isinstance(e, Output), e
                assert me not in run.outputs, f"{me} output twice in {sid}"
                run.outputs[me] = np.asarray(e.words, dtype=np.uint64)
    else:  # pragma: no cover
        raise AssertionError("router did not settle")
    for run, s in zip(runs.values(), specs):
        assert set(run.outputs) == set(s.parties), f"no output from {set(s.parties) - set(run.outputs)}"
        length = len(next(iter(s.contributions.values())))
        for p, words in run.outputs.items():
            # one uint64 word per element, each 0 or 1 (an XOR share of the result bit)
            assert words.shape == (length,) and words.dtype == np.uint64
            assert np.all(words <= 1), f"{p}'s output share is not made of 0/1 words"
        run.engines = {p: engines[s.session_id, p] for p in s.parties}
        assert all(e.waiting_for == () for e in run.engines.values())
    return list(runs.values())


def run_one(pool: Mapping[str, Party], spec: Spec, **kw: bool) -> Run:
    return run_sessions(pool, [spec], **kw)[0]


def plaintext(spec: Spec) -> np.ndarray:
    columns = zip(*(spec.contributions[p] for p in spec.parties))
    return np.array([int(sum(col) >= spec.k) for col in columns], dtype=np.uint64)


def split(total: int, n: int) -> list[int]:
    """A CSPRNG split of `total` into n contributions, each within the node's +-limit(n)."""
    lim = limit(n)
    assert abs(total) <= n * lim
    parts, rest = [], total
    for i in range(n - 1):
        slack = (n - 1 - i) * lim
        lo, hi = max(-lim, rest - slack), min(lim, rest + slack)
        part = lo + secrets.randbelow(hi - lo + 1)
        parts.append(part)
        rest -= part
    parts.append(rest)
    assert sum(parts) == total and all(abs(p) <= lim for p in parts)
    return parts


def spec_for_totals(parties: Sequence[str], totals: Sequence[int], k: int) -> Spec:
    n = len(parties)
    columns = [split(t, n) for t in totals]
    return Spec(tuple(parties), {p: [c[i] for c in columns] for i, p in enumerate(parties)}, k)


def hoeffding_band(trials: int, alpha: float) -> float:
    """t with P(|Binomial(trials, 1/2) - trials/2| >= t) <= alpha (Hoeffding: 2 exp(-2 t^2 / trials))."""
    return math.sqrt(trials * math.log(2 / alpha) / 2)


# ---- fixtures: real setups for n = 2, 3; ideal ones for n = 4, 5 -----------------------------


@dataclass
class RealSetup:
    pool: dict[str, Party]
    first: Run
    spec: Spec


@pytest.fixture(scope="module")
def real3() -> RealSetup:
    """alice, bob, carlos with no setups: the first session runs the real base OTs (once)."""
    parties = names(3)
    pool = {p: Party(p) for p in parties}
    spec = spec_for_totals(parties, [5, -5, 0, 1, -1], 0)
    first = run_one(pool, spec)
    return RealSetup(pool, first, spec)


def ideal_pool(n: int, ids: Sequence[bytes] = (IDEAL_ID,)) -> dict[str, Party]:
    """Parties holding ideal-functionality setups (test double) under the given ids, advertised by all."""
    parties = names(n)
    pool = {p: Party(p) for p in parties}
    for setup_id in ids:
        ot = ideal_setup(parties)
        for p in parties:
            for q, pair in ot[p].items():
                pool[p].setups.add(q, setup_id, pair)
    return pool


_IDEAL_POOLS = {n: ideal_pool(n) for n in (2, 3, 4, 5)}   # shared by the tests that need no real OT


def pool_for(n: int, real3: RealSetup) -> dict[str, Party]:
    if n <= 3:
        return {p: real3.pool[p] for p in names(n)}
    return ideal_pool(n)


# ---- setups: fresh once, then reused -------------------------------------------------------


def test_first_session_makes_exactly_one_setup_per_pair(real3: RealSetup) -> None:
    run, spec = real3.first, real3.spec
    assert np.array_equal(run.bits, plaintext(spec)) and run.bits.tolist() == [1, 0, 1, 1, 0]
    parties = spec.parties
    # exactly one new setup in each party's registry per peer, all under the session's setup id
    expected_id = bytes.fromhex(spec.session_id)[:SETUP_ID_BYTES]
    got = sorted((p, e.peer) for p, e in run.new_setups)
    assert got == sorted((p, q) for p in parties for q in parties if q != p)
    assert {e.setup_id for _, e in run.new_setups} == {expected_id}
    assert all(isinstance(e.pair, PairwiseOt) and e.pair.peer == e.peer for _, e in run.new_setups)
    assert all("keys redacted" in repr(e.pair) for _, e in run.new_setups)
    assert all("keys redacted" in repr(real3.pool[p].setups) for p in parties)
    # base OTs: one A and one B batch in each direction of every pair, nothing else under ot/
    base = sorted((s, t, step) for s, t, step, _ in run.sent if step.startswith("ot/"))
    assert base == sorted((s, t, step) for s in parties for t in parties if s != t
                          for step in (STEP_BASE_A, STEP_BASE_B))
    # every party greeted every peer with an empty list of setups
    hellos = [(s, t, payload) for s, t, step, payload in run.sent if step == STEP_HELLO]
    assert len(hellos) == 6 and all(payload == hello() for *_, payload in hellos)
    assert run.steps() >= {STEP_HELLO, STEP_SEED, STEP_BASE_A, STEP_BASE_B, STEP_U, STEP_T}
    assert all(step == STEP_HELLO or step.startswith(("sum/", "ot/", "triples/", "cmp/")) for step in run.steps())
    # both ends of every pair now hold the same setup id
    for p in parties:
        assert {q: set(ids) for q, ids in real3.pool[p].holds().items()} == {
            q: {expected_id} for q in parties if q != p}


@pytest.mark.parametrize("n", [2, 3])
def test_later_sessions_reuse_the_setups(n: int, real3: RealSetup) -> None:
    pool = pool_for(n, real3)
    before = {p: pool[p].holds() for p in pool}
    for _ in range(2):
        spec = spec_for_totals(names(n), [7, -7, 0, 2 * n], 1)
        run = run_one(pool, spec)
        assert np.array_equal(run.bits, plaintext(spec))
        assert run.new_setups == []
        assert not any(step.startswith("ot/") for step in run.steps()), run.steps()
        assert run.steps() == {STEP_HELLO, STEP_SEED, STEP_U, STEP_T} | {s for s in run.steps() if s.startswith("cmp/")}
        # each hello advertises the setup ids the sender holds with that receiver
        for s, t, step, payload in run.sent:
            if step == STEP_HELLO:
                assert payload == hello(*sorted(pool[s].setups.known(t)))
    after = {p: pool[p].holds() for p in pool}
    assert after == before


def test_a_party_that_lost_its_setups_forces_fresh_ones_with_its_own_pairs(real3: RealSetup) -> None:
    pool = {p: Party(p, registry(real3.pool[p].holds())) for p in names(3)}
    pool["carlos"] = Party("carlos")   # carlos restarted with an empty registry: advertises nothing
    old = {p: set(pool[p].setups.known("carlos")) for p in ("alice", "bob")}
    assert old["alice"] and old["bob"]
    spec = spec_for_totals(names(3), [3, -3, 0], 0)
    run = run_one(pool, spec)
    assert np.array_equal(run.bits, plaintext(spec))
    fresh = {frozenset(("alice", "carlos")), frozenset(("bob", "carlos"))}
    assert run.base_ot_pairs() == fresh          # no base OT between alice and bob
    assert sorted((p, e.peer) for p, e in run.new_setups) == [
        ("alice", "carlos"), ("bob", "carlos"), ("carlos", "alice"), ("carlos", "bob")]
    new_id = bytes.fromhex(spec.session_id)[:SETUP_ID_BYTES]
    assert {e.setup_id for _, e in run.new_setups} == {new_id}
    hellos = {(s, t): payload for s, t, step, payload in run.sent if step == STEP_HELLO}
    assert hellos["carlos", "alice"] == hellos["carlos", "bob"] == hello()
    assert hellos["alice", "bob"] == hello(*sorted(real3.pool["alice"].setups.known("bob")))
    # alice and bob keep both setups with carlos (the one carlos lost and the new one); the
    # next session uses the new one, the only one carlos advertises
    for p in ("alice", "bob"):
        assert set(pool[p].setups.known("carlos")) == old[p] | {new_id}
    assert set(pool["carlos"].holds()) == {"alice", "bob"}
    assert all(set(ids) == {new_id} for ids in pool["carlos"].holds().values())
    again = run_one(pool, spec_for_totals(names(3), [1], 1))
    assert again.new_setups == [] and again.base_ot_pairs() == set()
    assert again.bits.tolist() == [1]


def test_only_the_common_newest_setup_is_used() -> None:
    """Two common setups (both ends pick the largest common id) and one only alice holds."""
    parties = names(3)
    first, second = bytes(SETUP_ID_BYTES), b"\xff" * SETUP_ID_BYTES
    pool = ideal_pool(3, [first, second])
    stale = ideal_setup(parties)["alice"]["bob"]
    pool["alice"].setups.add("bob", b"\x7f" * SETUP_ID_BYTES, stale)    # bob never had it
    held = pool["carlos"].holds()
    del held["alice"][second]                                            # carlos lost the newest with alice
    pool["carlos"] = Party("carlos", registry(held))
    for _ in range(2):
        spec = spec_for_totals(parties, [4, -4, 0, 1, -1], 0)
        run = run_one(pool, spec)
        assert run.new_setups == [] and run.base_ot_pairs() == set()
        assert np.array_equal(run.bits, plaintext(spec))


# ---- [sum >= k] against the plaintext ---------------------------------------------------------


def edge_specs(n: int) -> list[Spec]:
    """Sessions (one public k each) whose totals sit at the edges the node lets through."""
    parties = names(n)
    top = n * limit(n)                                  # the largest total the node accepts
    k_random = secrets.randbelow(2 * top + 1) - top
    cases: dict[int, list[int]] = {
        0: [-1, 0, 1, 2, -2, top, -top],
        1: [0, 1, 2, -1],
        -1: [-2, -1, 0, -top],
        -5: [-6, -5, -4, 5, -top, top],
        k_random: [v for v in (k_random - 1, k_random, k_random + 1, 0, top, -top) if abs(v) <= top],
        top: [top, top - 1, -top, 0],
        top + 1: [top, 0],
        K_HI: [top, -top, 0],
        -top: [-top, -top + 1, 0, top],
        K_LO + 1: [-top, top, 0],
        K_LO: [-top, top, 0],
    }
    # (top, K_LO) is left out where it cannot be decided: test_range_checks_keep_total_minus_k_in_the_ring
    return [spec_for_totals(parties, [t for t in totals if in_range(t, k)], k) for k, totals in cases.items()]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_at_least_matches_plaintext_at_the_edges(n: int, real3: RealSetup) -> None:
    pool = pool_for(n, real3)
    specs = edge_specs(n)
    runs = run_sessions(pool, specs)     # all of them at once, over the same OT setups
    for spec, run in zip(specs, runs):
        assert np.array_equal(run.bits, plaintext(spec)), (spec.k, [sum(c) for c in zip(*spec.contributions.values())])
        assert run.new_setups == []


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_at_least_matches_plaintext_on_random_vectors(n: int, real3: RealSetup) -> None:
    pool = pool_for(n, real3)
    lim, length = limit(n), 1000
    for _ in range(2):
        k = K_LO + 1 + secrets.randbelow(K_HI - K_LO)                       # K_LO < k <= K_HI
        contributions = {p: [secrets.randbelow(2 * lim + 1) - lim for _ in range(length)] for p in names(n)}
        spec = Spec(names(n), contributions, k)
        run = run_one(pool, spec)
        assert np.array_equal(run.bits, plaintext(spec))
    # near-threshold totals are the interesting ones: draw them too
    totals = [secrets.randbelow(41) - 20 for _ in range(length)]
    spec = spec_for_totals(names(n), totals, 0)
    assert np.array_equal(run_one(pool, spec).bits, plaintext(spec))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(2, 5))
def test_at_least_property(data: st.DataObject, n: int) -> None:
    lim = limit(n)
    length = data.draw(st.integers(1, 20), label="length")
    contributions = {p: data.draw(st.lists(st.integers(-lim, lim), min_size=length, max_size=length), label=p)
                     for p in names(n)}
    k = data.draw(st.integers(K_LO, K_HI), label="k")
    # the one undecidable corner is left to test_range_checks_keep_total_minus_k_in_the_ring
    assume(all(in_range(sum(col), k) for col in zip(*contributions.values())))
    spec = Spec(names(n), contributions, k)
    assert np.array_equal(run_one(_IDEAL_POOLS[n], spec).bits, plaintext(spec))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_range_checks_keep_total_minus_k_in_the_ring(n: int) -> None:
    """The extreme total and threshold the node's checks accept must still compare right."""
    for total, k in ((n * limit(n), K_LO), (-n * limit(n), K_HI)):
        spec = Spec(names(n), {p: [total // n] for p in names(n)}, k)
        assert run_one(_IDEAL_POOLS[n], spec).bits.tolist() == [int(total >= k)], (total, k)


# ---- votes -------------------------------------------------------------------------------------


def ballots_for(tallies: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Ballot vectors (t yes out of m) in a CSPRNG-shuffled order."""
    out = []
    for yes, cast in tallies:
        b = [1] * yes + [0] * (cast - yes)
        for i in range(len(b) - 1, 0, -1):
            j = secrets.randbelow(i + 1)
            b[i], b[j] = b[j], b[i]
        out.append(np.array(b, dtype=np.int64))
    return out


def vote_spec(parties: Sequence[str], tallies: Sequence[tuple[int, int]], threshold: int | None) -> Spec:
    """A vote as the node runs it (catalogue.VoteEntry): contributions from the tallies, k clamped to the
    tallies' public range, on the vote's ring width."""
    contributions = {}
    for p, ballots in zip(parties, ballots_for(tallies)):
        contributions[p] = vote_words(int(np.count_nonzero(ballots)), ballots.size, threshold)
    k = 0 if threshold is None else vote_threshold(threshold, len(parties))
    return Spec(tuple(parties), contributions, k, ell=vote_bits(len(parties)))


def vote_words(yes: int, cast: int, threshold: int | None) -> list[int]:
    return [int(w) for w in vote_contribution(yes, cast, threshold is None).view(np.int64)]


# (yes, cast) per node -> the half rule's outcome: 2T >= N
HALF_RULE = [
    ([(2, 3), (2, 2), (1, 3), (1, 1)], True),     # the referendum: T = 6, N = 9
    ([(1, 2), (1, 2), (0, 0), (2, 4)], True),     # T = N/2 exactly, N even
    ([(1, 2), (0, 1), (0, 0), (2, 4)], False),    # T = (N - 1)/2, N odd: one below half
    ([(1, 2), (1, 1), (0, 0), (2, 4)], True),     # T = (N + 1)/2, N odd
    ([(0, 3), (0, 2), (0, 1), (0, 1)], False),    # T = 0
    ([(3, 3), (2, 2), (1, 1), (1, 1)], True),     # T = N (unanimous)
    ([(0, 0), (0, 0), (0, 0), (0, 0)], True),     # no ballot cast: 0 >= 0
    ([(500, 1000), (0, 0), (0, 0), (0, 0)], True),
    ([(499, 1000), (0, 0), (0, 0), (0, 1)], False),
]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_vote_half_rule(n: int, real3: RealSetup) -> None:
    pool = pool_for(n, real3)
    cases = []
    for tallies, passed in HALF_RULE:
        if n < 4:  # fold the last nodes' ballots into the last party: the tally stays the same
            tallies = [*tallies[:n - 1], (sum(t for t, _ in tallies[n - 1:]), sum(m for _, m in tallies[n - 1:]))]
        big_t, big_n = sum(t for t, _ in tallies), sum(m for _, m in tallies)
        assert (2 * big_t >= big_n) == passed
        cases.append((vote_spec(names(n), tallies, None), big_t, big_n, passed))
    runs = run_sessions(pool, [spec for spec, *_ in cases])
    for (spec, big_t, big_n, passed), run in zip(cases, runs):
        assert run.bits.tolist() == [int(passed)], (big_t, big_n)
        # each node contributes 2t - m: the comparison is 2T - N >= 0, neither T nor N is formed
        assert sum(c[0] for c in spec.contributions.values()) == 2 * big_t - big_n
        assert spec.k == 0


@pytest.mark.parametrize("threshold,passed", [(6, True), (7, False), (0, True), (5, True), (9, False),
                                              (-1, True), (K_HI, False)])
def test_vote_with_an_explicit_threshold(threshold: int, passed: bool) -> None:
    spec = vote_spec(names(4), [(2, 3), (2, 2), (1, 3), (1, 1)], threshold)   # T = 6, N = 9
    assert sorted(c[0] for c in spec.contributions.values()) == [1, 1, 2, 2]   # t, not 2t - m
    assert run_one(_IDEAL_POOLS[4], spec).bits.tolist() == [int(passed)]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_votes_at_the_edges_of_the_public_tally_range(n: int) -> None:
    """Every node at its public cap of ballots (MAX_BALLOTS), all yes or all no, and thresholds at, just
    beyond and far beyond the tallies' range: right on the vote's narrower ring (25 bits for 3 nodes)."""
    top = n * MAX_BALLOTS
    assert vote_bits(n) < ELL and 1 << (vote_bits(n) - 1) > top
    parties = tuple(names(n))
    cases = []
    for yes in (0, MAX_BALLOTS):
        half = Spec(parties, {p: vote_words(yes, MAX_BALLOTS, None) for p in parties}, 0, ell=vote_bits(n))
        cases.append((half, True if yes else False))
        for k in (-K_HI, -1, 0, 1, top, top + 1, top + 2, K_HI):
            spec = Spec(parties, {p: vote_words(yes, MAX_BALLOTS, k) for p in parties}, vote_threshold(k, n),
                        ell=vote_bits(n))
            cases.append((spec, n * yes >= k))
    runs = run_sessions(_IDEAL_POOLS[n], [spec for spec, _ in cases])
    assert [run.bits.tolist() for run in runs] == [[int(passed)] for _, passed in cases]


def test_output_shares_are_balanced_bits() -> None:
    """Each party's output share alone is a fair coin, whatever the result (here all 1s)."""
    pool, sessions, length = _IDEAL_POOLS[3], 4, 1000
    shares: dict[str, list[Words]] = {p: [] for p in names(3)}
    for _ in range(sessions):
        spec = spec_for_totals(names(3), [1] * length, 0)
        run = run_one(pool, spec)
        assert run.bits.tolist() == [1] * length
        for p, words in run.outputs.items():
            shares[p].append(words)
    band = hoeffding_band(sessions * length, FAMILY_ALPHA / 3)
    for p, parts in shares.items():
        ones = int(np.concatenate(parts).sum())
        assert abs(ones - sessions * length / 2) < band, (p, ones)


# ---- concurrency over the same setups ----------------------------------------------------------


def test_concurrent_sessions_share_the_setups(real3: RealSetup) -> None:
    """Six sessions of different lengths at once: IKNP windows of the same pairs interleave."""
    pool = pool_for(3, real3)
    specs = [spec_for_totals(names(3), [secrets.randbelow(21) - 10 for _ in range(length)], 0)
             for length in (1, 1, 70, 1, 300, 5)]
    for spec, run in zip(specs, run_sessions(pool, specs)):
        assert np.array_equal(run.bits, plaintext(spec))
        assert run.new_setups == []


# ---- engine errors -----------------------------------------------------------------------------


def fresh_engine(pool: Mapping[str, Party] | None = None, me: str = "alice") -> ThresholdParty:
    pool = pool or _IDEAL_POOLS[3]
    return ThresholdParty(secrets.token_hex(16), me, names(3), 2, 0, SystemRng(), pool[me].setups, ELL)


def start(engine: ThresholdParty) -> list[object]:
    return list(engine.start(from_signed(np.array([1, -1], dtype=np.int64))))


def test_start_greets_every_peer_and_refuses_a_second_start() -> None:
    engine = fresh_engine()
    assert engine.waiting_for == ("bob", "carlos")
    events = start(engine)
    hellos = [e for e in events if isinstance(e, Send) and e.step == STEP_HELLO]
    assert sorted(e.to for e in hellos) == ["bob", "carlos"] and all(e.payload == hello(IDEAL_ID) for e in hellos)
    with pytest.raises(LocalProtocolError):
        start(engine)


def test_unknown_steps_are_round_mismatches() -> None:
    engine = fresh_engine()
    start(engine)
    for step in ("bogus", "vote/bye", "vote/hello", "mpc/bye", "sum/open", "hello", "", "VOTE/HELLO", "MPC/HELLO"):
        with pytest.raises(RoundMismatch):
            engine.receive("bob", step, b"")


def test_second_hello_is_a_round_mismatch() -> None:
    engine = fresh_engine()
    assert engine.receive("bob", STEP_HELLO, hello(IDEAL_ID)) == []       # before start: kept
    with pytest.raises(RoundMismatch):
        engine.receive("bob", STEP_HELLO, hello(IDEAL_ID))
    start(engine)
    engine.receive("carlos", STEP_HELLO, hello())
    with pytest.raises(RoundMismatch):
        engine.receive("carlos", STEP_HELLO, hello())


MALFORMED_HELLOS = {
    "empty": b"",
    "an id cut short": b"\x01" + bytes(15),
    "too many ids": bytes([MAX_SETUPS_ADVERTISED + 1]) + bytes(SETUP_ID_BYTES * (MAX_SETUPS_ADVERTISED + 1)) + b"\0\0",
    "no reservation": hello()[:1],
    "no holdings": hello()[:2],
    "a range cut short": b"\0\x01" + bytes(10),
    "an empty range": b"\0\x01" + bytes(16) + b"\0",
    "holdings cut short": b"\0\0\x02" + bytes(8),
    "bytes after the end": hello() + b"\0",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_HELLOS))
def test_malformed_hello_is_a_remote_protocol_error(case: str) -> None:
    engine = fresh_engine()
    start(engine)
    with pytest.raises(RemoteProtocolError) as err:
        engine.receive("bob", STEP_HELLO, MALFORMED_HELLOS[case])
    assert not isinstance(err.value, RoundMismatch)
    assert "hello from 'bob'" in str(err.value)
    # the most ids a hello may carry is fine
    most = hello(*(bytes([i]) * SETUP_ID_BYTES for i in range(MAX_SETUPS_ADVERTISED)))
    assert isinstance(engine.receive("carlos", STEP_HELLO, most), list)


def test_a_hello_reserving_another_number_of_words_is_refused() -> None:
    engine = fresh_engine()
    start(engine)
    words = engine.plan.bit_words
    wrong = b"\0\x01" + bytes(8) + (0).to_bytes(4, "little") + (words + 1).to_bytes(4, "little") + b"\0"
    with pytest.raises(RemoteProtocolError, match=f"reserved {words + 1} pool words"):
        engine.receive("bob", STEP_HELLO, wrong)


@pytest.mark.parametrize("sender", ["mallory", "alice", "", "Bob"])
def test_message_from_a_non_peer_is_a_remote_protocol_error(sender: str) -> None:
    engine = fresh_engine()
    start(engine)
    for step, payload in ((STEP_HELLO, b""), (STEP_SEED, bytes(24)), (STEP_U, b""), ("cmp/gen", b"")):
        with pytest.raises(RemoteProtocolError) as err:
            engine.receive(sender, step, payload)
        assert not isinstance(err.value, RoundMismatch)
        assert "not a peer" in str(err.value)


def test_duplicate_cmp_step_during_a_session_is_refused(real3: RealSetup) -> None:
    """A second copy of a comparison opening is a RoundMismatch, and the first copy still counts."""
    specs = [spec_for_totals(names(3), [3, -3, 0], 0), spec_for_totals(names(3), [9], 10)]
    for spec, run in zip(specs, run_sessions(pool_for(3, real3), specs, duplicate_cmp=True)):
        assert len(run.refused) == 1
        assert np.array_equal(run.bits, plaintext(spec))


def test_every_message_replayed_after_the_session_is_refused(real3: RealSetup) -> None:
    """Replays into finished engines: hellos, seeds, IKNP messages, corrections, openings."""
    for spec in (spec_for_totals(names(3), [2, -2], 0), real3.spec):
        if spec is real3.spec:   # the fresh-setup session: its base-OT messages too
            run, engines = real3.first, real3.first.engines
        else:
            run = run_one(pool_for(3, real3), spec)
            engines = run.engines
        assert run.sent
        for sender, to, step, payload in run.sent:
            with pytest.raises(RoundMismatch):
                engines[to].receive(sender, step, payload)


@pytest.mark.parametrize("step", ["cmp/bogus", "triples/bogus", "ot/bogus"])
def test_unknown_step_under_a_known_prefix_is_refused_at_once(step: str) -> None:
    engine = fresh_engine()
    start(engine)
    with pytest.raises(RoundMismatch):
        engine.receive("bob", step, b"")


def test_repeated_early_message_is_refused_on_arrival() -> None:
    pool = _IDEAL_POOLS[3]
    sid = secrets.token_hex(16)
    bob = ThresholdParty(sid, "bob", names(3), 2, 0, SystemRng(), pool["bob"].setups, ELL)
    alice = ThresholdParty(sid, "alice", names(3), 2, 0, SystemRng(), pool["alice"].setups, ELL)
    events = bob.start(from_signed(np.array([1, -1], dtype=np.int64)))
    events += bob.receive("alice", STEP_HELLO, hello(IDEAL_ID))
    events += bob.receive("carlos", STEP_HELLO, hello(IDEAL_ID))
    u = next(e for e in events if isinstance(e, Send) and e.step == STEP_U and e.to == "alice")
    start(alice)
    alice.receive("bob", STEP_HELLO, hello(IDEAL_ID))     # alice still waits for carlos's hello
    alice.receive("bob", STEP_U, u.payload)         # kept: alice's triples do not exist yet
    # Today the repeat is kept too, and the RoundMismatch comes out of the next message that
    # creates the triples -- carlos's honest hello -- so the node blames carlos.
    with pytest.raises(RoundMismatch):
        alice.receive("bob", STEP_U, u.payload)     # the repeat: refused on arrival, from bob
    alice.receive("carlos", STEP_HELLO, hello(IDEAL_ID))   # an honest message does not fail for bob's repeat


def test_base_ot_message_is_refused_when_no_setup_is_being_made() -> None:
    pool = _IDEAL_POOLS[3]
    engine = fresh_engine(pool)
    start(engine)
    engine.receive("bob", STEP_HELLO, hello(IDEAL_ID))
    engine.receive("carlos", STEP_HELLO, hello(IDEAL_ID))       # every setup is common: no base OT in this session
    with pytest.raises(RoundMismatch):
        engine.receive("bob", STEP_BASE_A, bytes(32))
