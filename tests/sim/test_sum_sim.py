"""Simulation of the pairwise-masked secure sum (mpc/protocols/sum.py, PROTOCOLS.md §1) with an
in-memory router: no grpc, messages delivered in a CSPRNG-shuffled order, also before the
receiver has started. Also the contributions that enter the sum (mpc/protocols/contribution.py).
"""

from __future__ import annotations

import math
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mpc.encoding import INT64_MAX, sum_bound
from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.prg import SEED_BYTES, AesCtrRng, SystemRng, random_words
from mpc.protocols.catalogue import AverageEntry, AverageParams, Declared, NoParams, SumEntry
from mpc.protocols.contribution import elementwise_contribution, records_contribution, sum_contribution
from mpc.events import Output, Send
from mpc.protocols.sum import STEP_SEED, SecureSumParty, keyed_share
from mpc.ring import Words, from_signed, to_signed, words_to_bytes

SESSION = "7f3a0c1e"
SEED_MESSAGE_BYTES = SEED_BYTES + 8
FALSE_ALARM = 1e-6  # per test (PROTOCOLS.md §6)


def names(n: int) -> list[str]:
    return [f"node-{i}" for i in range(n)]


def engine(me: str, parties: Sequence[str], length: int) -> SecureSumParty:
    return SecureSumParty(SESSION, me, parties, length, AesCtrRng(secrets.token_bytes(16)))


def seed_payload(length: int) -> bytes:
    return secrets.token_bytes(SEED_BYTES) + length.to_bytes(8, "little")


def outputs_of(events: Sequence[Send | Output]) -> list[Words]:
    return [e.words for e in events if isinstance(e, Output)]


def sends_of(events: Sequence[Send | Output]) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def chi_square_critical(df: int, p: float) -> float:
    """Upper-p critical value of chi-square (Wilson-Hilferty; 377.25 for df=255, p=1e-6, exact 377.08)."""
    z = statistics.NormalDist().inv_cdf(1.0 - p)
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square_uniform(samples: np.ndarray, bins: int) -> float:
    counts = np.bincount(samples, minlength=bins)
    assert counts.size == bins
    expected = samples.size / bins
    return float(((counts - expected) ** 2).sum() / expected)


@dataclass
class Router:
    """n SecureSumParty engines joined by an in-memory network that delivers in a random order."""

    inputs: list[Words]
    parties: list[str] = field(init=False)
    engines: dict[str, SecureSumParty] = field(init=False)
    pending: list[tuple[str, Send]] = field(default_factory=list)
    outputs: dict[str, list[Words]] = field(init=False)
    started: set[str] = field(default_factory=set)
    sends: list[tuple[str, Send]] = field(default_factory=list)
    early_deliveries: int = 0
    trace: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parties = names(len(self.inputs))
        length = self.inputs[0].size
        self.engines = {p: engine(p, self.parties, length) for p in self.parties}
        self.outputs = {p: [] for p in self.parties}

    def _absorb(self, party: str, events: Sequence[Send | Output]) -> None:
        for event in events:
            if isinstance(event, Send):
                self.pending.append((party, event))
                self.sends.append((party, event))
            elif isinstance(event, Output):
                self.outputs[party].append(event.words)
            else:
                raise AssertionError(f"unexpected event {event!r}")

    def start(self, party: str) -> None:
        self.trace.append(f"start {party}")
        self.started.add(party)
        self._absorb(party, self.engines[party].start(self.inputs[self.parties.index(party)]))

    def deliver(self, index: int) -> None:
        sender, send = self.pending.pop(index)
        self.trace.append(f"{sender} -> {send.to}")
        if send.to not in self.started:
            self.early_deliveries += 1
        self._absorb(send.to, self.engines[send.to].receive(sender, send.step, send.payload))

    def run_shuffled(self) -> None:
        """Start parties and deliver messages in a uniformly random interleaving (CSPRNG choices)."""
        while len(self.started) < len(self.parties) or self.pending:
            waiting = [p for p in self.parties if p not in self.started]
            choice = secrets.randbelow(len(waiting) + len(self.pending))
            if choice < len(waiting):
                self.start(waiting[choice])
            else:
                self.deliver(choice - len(waiting))

    def total(self) -> Words:
        assert all(len(o) == 1 for o in self.outputs.values()), self.trace
        acc = np.zeros(self.inputs[0].size, dtype=np.uint64)
        for p in self.parties:
            acc += self.outputs[p][0]
        return acc


def plaintext_sum(inputs: Sequence[Words]) -> Words:
    return np.array([sum(int(x[k]) for x in inputs) % (1 << 64) for k in range(inputs[0].size)], dtype=np.uint64)


def check_run(router: Router) -> None:
    n = len(router.parties)
    for p in router.parties:
        assert len(router.outputs[p]) == 1, f"{p} output {len(router.outputs[p])} times; {router.trace}"
        assert router.engines[p].finished
    assert np.array_equal(router.total(), plaintext_sum(router.inputs)), router.trace
    # One seed per pair, always from the lower-indexed party to the higher one.
    assert len(router.sends) == n * (n - 1) // 2
    assert sorted((router.parties.index(s), router.parties.index(m.to)) for s, m in router.sends) == \
        [(i, j) for i in range(n) for j in range(i + 1, n)]
    for _, send in router.sends:
        assert send.step == STEP_SEED and len(send.payload) == SEED_MESSAGE_BYTES


# -- correctness ---------------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(n=st.integers(2, 7), length=st.integers(1, 50), data=st.data())
def test_outputs_sum_to_the_plaintext_sum_in_any_order(n: int, length: int, data: st.DataObject) -> None:
    inputs = [data.draw(hnp.arrays(np.uint64, length)) for _ in range(n)]
    router = Router(inputs)
    router.run_shuffled()
    check_run(router)


@pytest.mark.parametrize("n", range(2, 8))
def test_random_vectors_random_schedules(n: int) -> None:
    for _ in range(5):
        length = 1 + secrets.randbelow(50)
        router = Router([random_words(SystemRng(), length) for _ in range(n)])
        router.run_shuffled()
        check_run(router)


@pytest.mark.parametrize("n", range(2, 8))
def test_every_message_delivered_before_its_receiver_starts(n: int) -> None:
    router = Router([random_words(SystemRng(), 7) for _ in range(n)])
    # Parties start from the first; each one's seeds reach later parties that have not started yet.
    for p in router.parties:
        router.start(p)
        while router.pending:
            router.deliver(0)
    assert router.early_deliveries == n * (n - 1) // 2
    check_run(router)


@pytest.mark.parametrize("n", range(2, 8))
def test_parties_started_last_to_first(n: int) -> None:
    router = Router([random_words(SystemRng(), 3) for _ in range(n)])
    for p in reversed(router.parties):
        router.start(p)
    assert all(not router.outputs[p] for p in router.parties[1:])  # they wait for seeds
    assert len(router.outputs[router.parties[0]]) == 1            # the first waits for none
    while router.pending:
        router.deliver(secrets.randbelow(len(router.pending)))
    assert router.early_deliveries == 0
    check_run(router)


def test_signed_inputs_sum_exactly() -> None:
    values = [np.array([-5, 7, -(1 << 40)], dtype=np.int64), np.array([3, -7, 1], dtype=np.int64),
              np.array([1, 0, 1 << 40], dtype=np.int64)]
    router = Router([from_signed(v) for v in values])
    router.run_shuffled()
    check_run(router)
    assert to_signed(router.total()).tolist() == [-1, 0, 1]


def test_waiting_for_lists_missing_seeds_in_order() -> None:
    parties = names(4)
    last = engine(parties[3], parties, 2)
    assert last.waiting_for == tuple(parties[:3])
    last.receive(parties[1], STEP_SEED, seed_payload(2))
    assert last.waiting_for == (parties[0], parties[2])
    assert not last.finished


def test_waiting_for_is_empty_once_finished() -> None:
    parties = names(3)
    party = engine(parties[2], parties, 2)
    party.start(np.zeros(2, dtype=np.uint64))
    party.receive(parties[0], STEP_SEED, seed_payload(2))
    assert outputs_of(party.receive(parties[1], STEP_SEED, seed_payload(2)))
    assert party.finished
    assert party.waiting_for == ()


# -- misuse by a peer ----------------------------------------------------------------------------


def test_a_duplicated_seed_raises_round_mismatch_before_and_after_start_and_after_output() -> None:
    parties = names(3)
    payload = seed_payload(4)
    before = engine(parties[2], parties, 4)
    before.receive(parties[0], STEP_SEED, payload)
    with pytest.raises(RoundMismatch, match=parties[0]):
        before.receive(parties[0], STEP_SEED, payload)

    started = engine(parties[2], parties, 4)
    started.start(np.zeros(4, dtype=np.uint64))
    started.receive(parties[1], STEP_SEED, payload)
    with pytest.raises(RoundMismatch):
        started.receive(parties[1], STEP_SEED, payload)

    done = engine(parties[1], parties, 4)
    done.start(np.zeros(4, dtype=np.uint64))
    assert len(outputs_of(done.receive(parties[0], STEP_SEED, payload))) == 1
    with pytest.raises(RoundMismatch):
        done.receive(parties[0], STEP_SEED, payload)


def test_a_duplicate_inside_a_full_run_raises_round_mismatch() -> None:
    router = Router([random_words(SystemRng(), 5) for _ in range(4)])
    for p in router.parties:
        router.start(p)
    router.pending.append(router.pending[secrets.randbelow(len(router.pending))])  # the network duplicates one
    with pytest.raises(RoundMismatch, match=SESSION):
        while router.pending:
            router.deliver(secrets.randbelow(len(router.pending)))


@pytest.mark.parametrize("step", ["sum/seeds", "", "sum/output", STEP_SEED.upper()])
def test_a_wrong_step_raises_round_mismatch(step: str) -> None:
    parties = names(3)
    party = engine(parties[2], parties, 2)
    with pytest.raises(RoundMismatch, match=SESSION):
        party.receive(parties[0], step, seed_payload(2))
    party.start(np.zeros(2, dtype=np.uint64))
    with pytest.raises(RoundMismatch):
        party.receive(parties[1], step, seed_payload(2))


@pytest.mark.parametrize(("me", "sender"), [(0, 1), (0, 2), (1, 2), (1, 1), (2, 2)])
def test_a_seed_from_a_party_that_owes_none_is_refused(me: int, sender: int) -> None:
    parties = names(3)
    party = engine(parties[me], parties, 2)
    with pytest.raises(RemoteProtocolError, match="does not send a seed"):
        party.receive(parties[sender], STEP_SEED, seed_payload(2))


def test_a_seed_from_a_stranger_is_refused() -> None:
    parties = names(3)
    with pytest.raises(RemoteProtocolError):
        engine(parties[2], parties, 2).receive("mallory", STEP_SEED, seed_payload(2))


@pytest.mark.parametrize("size", [0, 1, SEED_BYTES, SEED_MESSAGE_BYTES - 1, SEED_MESSAGE_BYTES + 1, 64])
def test_a_payload_of_the_wrong_size_is_refused(size: int) -> None:
    parties = names(2)
    party = engine(parties[1], parties, 3)
    with pytest.raises(RemoteProtocolError, match=f"{size} bytes"):
        party.receive(parties[0], STEP_SEED, secrets.token_bytes(size))
    assert party.waiting_for == (parties[0],)


@pytest.mark.parametrize("declared", [0, 2, 4, 1 << 63])
def test_a_payload_declaring_another_length_is_refused(declared: int) -> None:
    parties = names(2)
    party = engine(parties[1], parties, 3)
    with pytest.raises(RemoteProtocolError, match=f"contributes {declared} words"):
        party.receive(parties[0], STEP_SEED, seed_payload(declared))
    assert party.waiting_for == (parties[0],)


# -- misuse by the caller ------------------------------------------------------------------------


def test_start_twice_while_waiting_raises() -> None:
    parties = names(3)
    party = engine(parties[2], parties, 2)
    party.start(np.zeros(2, dtype=np.uint64))
    with pytest.raises(LocalProtocolError, match="already started"):
        party.start(np.zeros(2, dtype=np.uint64))


@pytest.mark.parametrize("index", [0, 2])
def test_start_twice_after_output_raises(index: int) -> None:
    parties = names(3)
    party = engine(parties[index], parties, 2)
    for lower in parties[:index]:
        party.receive(lower, STEP_SEED, seed_payload(2))
    assert len(outputs_of(party.start(np.zeros(2, dtype=np.uint64)))) == 1
    try:
        again = party.start(np.zeros(2, dtype=np.uint64))
    except LocalProtocolError:
        return
    raise AssertionError(f"second start returned {again} instead of raising LocalProtocolError")


@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), ()])
def test_start_with_the_wrong_shape_raises(shape: tuple[int, ...]) -> None:
    party = engine("a", ["a", "b"], 3)
    with pytest.raises(LocalProtocolError, match="shape"):
        party.start(np.zeros(shape, dtype=np.uint64))
    assert outputs_of(party.start(np.zeros(3, dtype=np.uint64)))  # still usable


def test_constructor_checks() -> None:
    with pytest.raises(LocalProtocolError, match="not among"):
        engine("z", ["a", "b"], 1)
    with pytest.raises(LocalProtocolError, match="repeat"):
        engine("a", ["a", "b", "a"], 1)
    with pytest.raises(LocalProtocolError, match="at least one word"):
        engine("a", ["a", "b"], 0)


def test_output_share_is_redacted_and_has_no_truth_value() -> None:
    secret = np.array([123456789], dtype=np.uint64)
    (out,) = outputs_of(engine("a", ["a", "b"], 1).start(secret))
    assert "123456789" not in repr(Output(out))
    with pytest.raises(TypeError):
        bool(Output(out))
    send = Send("b", STEP_SEED, seed_payload(1))
    assert send.payload.hex() not in repr(send)


# -- contributions -------------------------------------------------------------------------------


BUILD = {"sum": sum_contribution, "average-records": records_contribution,
         "average-elementwise": elementwise_contribution}


def contribution(aggregate: str, values: np.ndarray, frac: int, session: int, parties: int, what: str) -> np.ndarray:
    return BUILD[aggregate](values, frac, session, parties, what)


def test_contribution_lengths() -> None:
    declared = Declared("x", "alice", "number", (-1, 1), 5, 0, False)
    assert SumEntry().length(NoParams(), declared) == 5
    assert AverageEntry().length(AverageParams(elementwise=False), declared) == 2
    assert AverageEntry().length(AverageParams(elementwise=True), declared) == 6


@settings(deadline=None, max_examples=50)
@given(values=st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=20),
       frac=st.integers(0, 16), extra=st.integers(0, 16), parties=st.integers(1, 7))
def test_contribution_values(values: list[int], frac: int, extra: int, parties: int) -> None:
    arr = np.array(values, dtype=np.int64)
    session = frac + extra
    scaled = [v << extra for v in values]
    for aggregate, expected in (("sum", scaled), ("average-records", [sum(scaled), len(values)]),
                                ("average-elementwise", [*scaled, 1])):
        words = contribution(aggregate, arr, frac, session, parties, "input 'x'")
        assert words.dtype == np.uint64
        assert to_signed(words).tolist() == expected


@pytest.mark.parametrize("parties", [2, 3, 7])
@pytest.mark.parametrize("aggregate", ["sum", "average-elementwise"])
def test_contribution_refuses_values_beyond_the_bound(parties: int, aggregate: str) -> None:
    bound = sum_bound(parties)
    contribution(aggregate, np.array([bound, -bound], dtype=np.int64), 0, 0, parties, "x")
    for bad in (bound + 1, -bound - 1):
        with pytest.raises(InputError, match=f"input 'salary'.*{parties} parties") as err:
            contribution(aggregate, np.array([0, bad], dtype=np.int64), 0, 0, parties, "input 'salary'")
        assert str(bad) not in str(err.value) and str(abs(bad)) not in str(err.value)


@pytest.mark.parametrize("parties", [2, 3, 7])
def test_average_records_refuses_a_record_sum_beyond_the_bound(parties: int) -> None:
    bound = sum_bound(parties)
    half = bound // 2 + 1  # each record is fine, their sum is not
    contribution("average-records", np.array([bound // 2, bound // 2], dtype=np.int64), 0, 0, parties, "x")
    with pytest.raises(InputError, match="input 'salary'"):
        contribution("average-records", np.array([half, half], dtype=np.int64), 0, 0, parties, "input 'salary'")


def test_contribution_refuses_a_rescale_overflow() -> None:
    with pytest.raises(InputError, match="rescale"):
        contribution("sum", np.array([1 << 50], dtype=np.int64), 0, 16, 3, "input 'x'")


@pytest.mark.parametrize("n", range(2, 8))
def test_contributions_at_the_bound_sum_exactly_through_the_protocol(n: int) -> None:
    bound = sum_bound(n)
    signs = [1 if secrets.randbits(1) else -1 for _ in range(n)]
    contributions = [contribution("average-elementwise", np.array([s * bound, -s * bound, s], dtype=np.int64),
                                  0, 0, n, "x") for s in signs]
    router = Router(contributions)
    router.run_shuffled()
    check_run(router)
    total = to_signed(router.total()).tolist()
    assert total == [sum(signs) * bound, -sum(signs) * bound, sum(signs), n]
    assert all(abs(t) <= INT64_MAX for t in total)


# -- privacy -------------------------------------------------------------------------------------


def test_honest_outputs_seen_by_the_coordinator_are_uniform() -> None:
    """PROTOCOLS.md §6: with a FIXED input, y_0 and y_1 (two of three output shares) are uniform.

    The coordinator receives y_0, y_1, y_2; y_2 is fixed by the sum, so (y_0, y_1) is all it learns
    beyond the sum and must be uniform. Three chi-square tests share the 1e-6 false-alarm budget.
    """
    runs, length, n = 2000, 8, 3
    inputs = [np.array([50_000 + 1_000 * i + k for k in range(length)], dtype=np.uint64) for i in range(n)]
    raw_words = {int(w) for x in inputs for w in x}
    raw_bytes = [words_to_bytes(x[k:k + 1]) for x in inputs for k in range(length)]
    y0 = np.empty((runs, length), dtype=np.uint64)
    y1 = np.empty((runs, length), dtype=np.uint64)
    for r in range(runs):
        router = Router(inputs)
        router.run_shuffled()
        total = router.total()
        y0[r], y1[r] = router.outputs["node-0"][0], router.outputs["node-1"][0]
        assert np.array_equal(total, plaintext_sum(inputs))
        for p in router.parties:
            assert not raw_words & {int(w) for w in router.outputs[p][0]}, "an output share equals a raw input"
        for _, send in router.sends:
            assert not any(b in send.payload for b in raw_bytes), "a raw input travels in a seed message"
    crit = chi_square_critical(255, FALSE_ALARM / 3)
    low0 = (y0 & np.uint64(0xFF)).astype(np.int64).ravel()
    low1 = (y1 & np.uint64(0xFF)).astype(np.int64).ravel()
    joint = ((y0 & np.uint64(0x0F)) << np.uint64(4) | (y1 & np.uint64(0x0F))).astype(np.int64).ravel()
    assert chi_square_uniform(low0, 256) < crit, "low byte of y_0 is not uniform"
    assert chi_square_uniform(low1, 256) < crit, "low byte of y_1 is not uniform"
    assert chi_square_uniform(joint, 256) < crit, "(y_0, y_1) low nibbles are not jointly uniform"
    # The same statistic on the raw inputs is enormous: the test can tell.
    raw_low = np.tile((inputs[0] & np.uint64(0xFF)).astype(np.int64), runs)
    assert chi_square_uniform(raw_low, 256) > 100 * crit


@pytest.mark.parametrize("value", [0, 1, 12686, 2**63, 2**64 - 1])
def test_a_scalars_keyed_share_is_masked_as_a_vectors_first_word(value: int) -> None:
    """keyed_share adds a scalar up as Python ints (no array op per peer); it is the vector path's
    masking of the same word, mod 2^64 both ways round, for any peers before and after."""
    for before, after in ((["a"], ["b", "c"]), ([], ["a", "b", "c"]), (["a", "b", "c"], []), (["a", "b"], ["c"])):
        seeds = {p: secrets.token_bytes(SEED_BYTES) for p in "abc"}
        scalar = keyed_share(np.array([value], dtype=np.uint64), before, after, seeds)
        vector = keyed_share(np.array([value, 7], dtype=np.uint64), before, after, seeds)
        assert scalar.dtype == np.uint64 and scalar.shape == (1,) and int(scalar[0]) == int(vector[0])
