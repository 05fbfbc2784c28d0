"""Simulation of the binomial noise made inside MPC (mpc/protocols/noise.py, PROTOCOLS.md §10):
dealer-free daBits from `ArithDealerless` (mpc/ot/arith.py) over ideal base-OT setups, joined by
the in-memory router of tests/sim/common.py, then the `joint_noise` program on `CircuitParty`
engines, as a session runs them.

Checks, each against the exact Binomial(m, 1/2) pmf with tests/unit/test_dp.py's
`assert_binomial` (false failure below 10^-6 per test):
- the noise x + N − m/2 − x for 2, 3 and 4 parties, at the edge words 0, 1, 2^63, 2^64 − 1 too;
  words after the noised ones unchanged;
- the coalition: n − 1 nodes whose random bits are known (constant-byte test doubles, or AES-CTR
  keys the test keeps) and the coordinator, who sees the output, still face Binomial noise,
  given what they know (their bits' XOR, by its weight), for every choice of the honest node;
  and the check has power: with every node's bits known, it fails;
- what each party receives in the preprocessing: the sizes the protocol fixes, uniform bits;
  the program itself exchanges nothing;
- local noise: n nodes' own Binomial(m) − m/2 add up to Binomial(n·m) − n·m/2.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pytest

import mpc.ot.arith as arith
from mpc.ot.arith import STEP_U, ArithDealerless, DaBitPool, DaBits, fold_step
from mpc.prg import AesCtrRng, Rng, SystemRng, random_words
from mpc.protocols.circuit import Plan
from mpc.protocols.noise import joint_noise, local_noise
from mpc.ring import Words
from tests.sim.common import (
    FALSE_ALARM,
    Dealt,
    Router,
    Views,
    ZeroDealt,
    additive_shares,
    assert_balanced,
    exact_draw,
    ideal_setup,
    names,
    run_program,
)
from tests.unit.test_dp import assert_binomial

COINS = 16
NOISED = 20_000
TAIL = 8                      # words after the noised ones: the program leaves them alone
EDGES = [0, 1, 1 << 63, (1 << 64) - 1]
IKNP_HEADER = struct.Struct("<QQ")   # running offset, number of OTs (mpc/ot/extension.py)
MIN_STRATUM = 200             # the conditional checks look at strata with at least this many words


# --------------------------------------------------------------------------- test doubles

class ConstantRng:
    """A test double Rng: every byte is `byte`, so whoever knows the byte knows every draw."""

    def __init__(self, byte: int) -> None:
        self.byte = byte

    def random_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n


class Refused:
    """A preprocessing source the noise program must not draw from (it draws daBits only)."""

    remaining = 0

    def take(self, n: int) -> object:
        raise AssertionError(f"the noise program drew {n} items that are not daBits")


class DealerlessDaBits(Dealt):
    """Preprocessing for `run_program`: each party's pool of its dealer-free daBits, nothing else."""

    def __init__(self, dabits: Sequence[DaBits]) -> None:
        n = len(dabits)
        self.bits = [Refused()] * n
        self.arith = [Refused()] * n
        self.dabits = [DaBitPool(d) for d in dabits]


# --------------------------------------------------------------------------- running it

def inputs() -> Words:
    """NOISED + TAIL words: the edge words at the start of both parts, CSPRNG words elsewhere."""
    x = np.frombuffer(os.urandom(8 * (NOISED + TAIL)), dtype=np.uint64).copy()
    x[:len(EDGES)] = EDGES
    x[NOISED:NOISED + len(EDGES)] = EDGES
    return x


def dealerless(parties: Sequence[str], count: int, rngs: Mapping[str, Rng]) -> tuple[dict[str, DaBits], Views]:
    """`count` daBits made by ArithDealerless among the parties (ideal base OTs, shuffled delivery).

    Returns: each party's DaBits, and what each party received.
    """
    ot = ideal_setup(parties)
    engines = {p: ArithDealerless(p, parties, 0, count, rngs[p], ot[p], "noise") for p in parties}
    router = Router(engines, SystemRng())
    results = router.run()
    assert all(e.finished and e.waiting_for == () for e in engines.values())
    out = {}
    for p in parties:
        [d] = results[p]
        assert isinstance(d, DaBits) and d.count == count
        out[p] = d
    return out, router.received


@dataclass
class NoiseRun:
    """One session: the noise per noised word (output − input, signed), the daBits, the views."""

    noise: np.ndarray
    dabits: dict[str, DaBits]
    preprocessing: Views
    program: Views


def noise_run(parties: Sequence[str], rngs: Mapping[str, Rng] | None = None) -> NoiseRun:
    """Make COINS·NOISED daBits, run joint_noise(COINS, NOISED) on additive shares of `inputs()`.

    Returns: the NoiseRun (after checking that the words after NOISED came out unchanged).
    """
    n = len(parties)
    assert list(parties) == names(n)   # run_program's party order
    rngs = rngs or {p: SystemRng() for p in parties}
    dabits, pre_views = dealerless(parties, COINS * NOISED, rngs)
    x = inputs()
    shares = additive_shares(x, n, AesCtrRng(os.urandom(16)))

    def dealt(p: Plan, count: int) -> Dealt:
        assert count == n and p.rounds == () and p.bit_words == p.arith_triples == 0
        assert p.dabits == COINS * NOISED and p.output_words == NOISED + TAIL
        return DealerlessDaBits([dabits[q] for q in parties])

    run = run_program(joint_noise(COINS, NOISED), shares, os.urandom(8).hex(), dealt=dealt)
    exact_draw(run)   # every daBit used, no rounds, no messages
    diff = (run.added() - x).view(np.int64)
    assert not np.any(diff[NOISED:]), "a word after the noised ones changed"
    return NoiseRun(diff[:NOISED].copy(), dabits, pre_views, run.views)


@functools.cache
def honest(n: int) -> NoiseRun:
    """One run with every party on the OS CSPRNG, shared by the tests below."""
    return noise_run(names(n))


def assert_blind(noise: np.ndarray, known: Sequence[Words]) -> None:
    """The noise is Binomial(COINS) − COINS/2 given the known bits: overall, and within each stratum
    of words by the weight of the known bits' XOR (the noise, were the other bits all 0), and by
    the weight of each party's known bits.

    known: the daBit bits of the parties whose bits are known, COINS per noised word, in order.
    """
    summaries = [reduce(np.bitwise_xor, known)] + (list(known) if len(known) > 1 else [])
    weights = [bits.reshape(NOISED, COINS).sum(axis=1) for bits in summaries]
    strata = [weight == w for weight in weights for w in range(COINS + 1)
              if np.count_nonzero(weight == w) >= MIN_STRATUM]
    alpha = FALSE_ALARM / (len(strata) + 1)
    assert_binomial(noise, COINS, alpha=alpha)
    for words in strata:
        assert_binomial(noise[words], COINS, alpha=alpha)


# --------------------------------------------------------------------------- the noise

@pytest.mark.parametrize("n", [2, 3, 4])
def test_joint_noise_is_binomial(n: int) -> None:
    r = honest(n)
    assert r.noise.shape == (NOISED,)
    assert_binomial(r.noise, COINS)
    # the noise is the XOR of every party's bits, summed: nothing else got in
    xor = reduce(np.bitwise_xor, [d.bits for d in r.dabits.values()]).reshape(NOISED, COINS)
    assert np.array_equal(r.noise, xor.sum(axis=1).astype(np.int64) - COINS // 2)


def test_no_noised_words_is_the_identity() -> None:
    x = inputs()[:16]
    shares = additive_shares(x, 3, AesCtrRng(os.urandom(16)))
    run = run_program(joint_noise(COINS, 0), shares, "no-noise", dealt=ZeroDealt)
    assert run.plan.dabits == 0 and run.plan.rounds == ()
    assert np.array_equal(run.added(), x)


# --------------------------------------------------------------------------- the coalition

KEPT_KEYS = {p: os.urandom(16) for p in names(3)}     # the coalition's AES keys, kept by the test


def known_rng(kind: str, party: str) -> Rng:
    """An Rng whose every byte the coalition knows."""
    if kind == "aes":
        return AesCtrRng(KEPT_KEYS[party])
    return ConstantRng(0xFF if kind == "ff" else 0x00)


@pytest.mark.parametrize("kind", ["ff", "00", "aes"])
@pytest.mark.parametrize("honest_index", [0, 1, 2])
def test_coalition_still_faces_binomial_noise(honest_index: int, kind: str) -> None:
    """The output minus everything that n − 1 nodes and the coordinator know (all inputs, the
    output, the coalition's random bits) still has the claimed noise distribution, for every choice
    of the one honest node."""
    parties = names(3)
    good = parties[honest_index]
    coalition = [p for p in parties if p != good]
    r = noise_run(parties, {p: SystemRng() if p == good else known_rng(kind, p) for p in parties})
    known = [r.dabits[p].bits for p in coalition]
    if kind != "aes":   # the same known bytes give the same bits: the rng alone fixes them
        assert np.array_equal(known[0], known[1]) and known[0].any() and not known[0].all()
    assert_blind(r.noise, known)


def test_coalition_check_has_power() -> None:
    """With every node's bits known, the noise is a function of them (N = the weight of their XOR)
    and the conditional check fails; it needs one node the coalition does not know."""
    parties = names(3)
    for rngs in ({p: known_rng("aes", p) for p in parties}, {p: ConstantRng(0xFF) for p in parties}):
        r = noise_run(parties, rngs)
        known = [r.dabits[p].bits for p in parties]
        weight = reduce(np.bitwise_xor, known).reshape(NOISED, COINS).sum(axis=1).astype(np.int64)
        assert np.array_equal(r.noise, weight - COINS // 2)
        assert_binomial(r.noise, COINS, alpha=FALSE_ALARM / 2)   # the bits look random: the marginal cannot tell
        with pytest.raises(AssertionError):
            assert_blind(r.noise, known)


def raw_words(rng: Rng, n: int) -> Words:
    """random_words without the AES expansion for the constant-byte double: its bytes are the words."""
    if isinstance(rng, ConstantRng):
        return np.frombuffer(rng.random_bytes(8 * n), dtype=np.uint64).copy()
    return random_words(rng, n)


@pytest.mark.parametrize("honest_index", [0, 1, 2])
def test_coalition_with_constant_bits(monkeypatch: pytest.MonkeyPatch, honest_index: int) -> None:
    """The coalition's daBit bits literally constant (one node all ones, the other all zeros):
    the noise is still Binomial. With every node constant, the noise is constant and the check fails."""
    monkeypatch.setattr(arith, "random_words", raw_words)
    parties = names(3)
    good = parties[honest_index]
    bytes_of = dict(zip([p for p in parties if p != good], (0xFF, 0x00)))
    r = noise_run(parties, {p: SystemRng() if p == good else ConstantRng(bytes_of[p]) for p in parties})
    known = [r.dabits[p].bits for p in parties if p != good]
    assert sorted(int(k.sum()) for k in known) == [0, COINS * NOISED]
    assert_blind(r.noise, known)
    if honest_index == 0:
        everyone = noise_run(parties, {p: ConstantRng(0xFF) for p in parties})   # 1 ⊕ 1 ⊕ 1 = 1
        assert np.all(everyone.noise == COINS - COINS // 2)
        with pytest.raises(AssertionError):
            assert_binomial(everyone.noise, COINS)


# --------------------------------------------------------------------------- the views

@pytest.mark.parametrize("n", [2, 3, 4])
def test_views_have_fixed_sizes_and_look_uniform(n: int) -> None:
    """P_k receives from each peer P_j: its IKNP message ("arith/u") if j >= 1, fold k's corrections
    if k >= 1, and nothing else; the IKNP rows and the corrections look uniform."""
    r = honest(n)
    parties = names(n)
    d = COINS * NOISED
    iknp_bytes = IKNP_HEADER.size + 16 * (-(-d // 128) * 128)
    chunks: list[bytes] = []
    for k, me in enumerate(parties):
        got = sorted((sender, step) for sender, step, _ in r.preprocessing[me])
        expected = sorted([(p, STEP_U) for j, p in enumerate(parties) if p != me and j >= 1]
                          + ([(p, fold_step(k)) for p in parties if p != me] if k else []))
        assert got == expected, (me, got)
        rows, folds = [], []
        for sender, step, payload in r.preprocessing[me]:
            if step == STEP_U:
                assert len(payload) == iknp_bytes
                _, m = IKNP_HEADER.unpack_from(payload)
                assert m == d
                rows.append(payload[IKNP_HEADER.size:])
            else:
                assert len(payload) == 8 * d
                folds.append(payload)
        chunks += [b"".join(part) for part in (rows, folds) if part]
        assert r.program[me] == []    # the noise program opens nothing
    for chunk in chunks:
        assert_balanced(chunk, FALSE_ALARM / len(chunks))


# --------------------------------------------------------------------------- local noise

@pytest.mark.parametrize(("n", "coins"), [(3, 16), (5, 10), (2, 64)])
def test_local_noise_adds_up_to_binomial(n: int, coins: int) -> None:
    count, tail = 50_000, 5
    contributions = [np.frombuffer(os.urandom(8 * (count + tail)), dtype=np.uint64).copy() for _ in range(n)]
    contributions[0][:len(EDGES)] = EDGES
    before = [c.copy() for c in contributions]
    noisy = [local_noise(SystemRng(), coins, c, count) for c in contributions]
    assert all(np.array_equal(c, b) for c, b in zip(contributions, before))   # inputs untouched
    own = [(y - c).view(np.int64) for y, c in zip(noisy, contributions)]
    assert all(not np.any(o[count:]) for o in own)
    total = reduce(np.add, own[1:], own[0].copy())[:count]
    alpha = FALSE_ALARM / 2
    assert_binomial(total, n * coins, centre=n * coins // 2, alpha=alpha)
    assert_binomial(own[0][:count], coins, alpha=alpha)        # each node's own: Binomial(m) − m/2
