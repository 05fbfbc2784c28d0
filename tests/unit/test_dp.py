"""Tests of mpc.dp: the binomial mechanism's calibration, checked with exact integers, not by
sampling; its samplers against the exact Binomial(m, 1/2) pmf; the choice of a sum's unit; and
the noise report.

**Exactness.** p(k) = C(m, k)/2^m is an integer over 2^m, so the privacy profile
δ(ε) = Σ_k max(0, p(k) − e^ε p(k − Δ)) is a rational once e^ε is replaced by a rational L. With
L <= e^ε every term can only grow: a rigorous upper bound on δ(ε); with L >= e^ε a rigorous
lower bound.

**Statistics.** `assert_binomial` (imported by tests/sim/test_noise_sim.py) fails correct samples
with probability below FALSE_ALARM = 10^-6: for every event it tests (each likely value of N, the
two pooled tails, each {N <= k}) Bernstein's inequality for a sum of S Bernoulli(p) indicators,
    P(|X − Sp| >= t) <= 2 exp(−t² / (2(Sp(1 − p) + t/3))),
at the event's share of FALSE_ALARM, and a union bound over the events. Randomness comes from
os.urandom (mpc.prg.SystemRng) only.
"""

from __future__ import annotations

import math
import os
import tracemalloc
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest

from mpc.dp import (
    MAX_COINS,
    MAX_EPSILON,
    MIN_DELTA,
    TARGET_SENSITIVITY,
    calibrate,
    check_delta,
    check_epsilon,
    choose_unit,
    coins_calibrated,
    coins_suffice,
    interval95,
    log_pmf,
    noise_std,
    privacy_delta,
    randomized_round,
    round_int,
    report,
    sample_local,
    sensitivity_at,
)
from mpc.errors import InputError
from mpc.prg import SystemRng
from mpc.protocols.catalogue import count_budget
from mpc.protocols.noise import units, units_total

FALSE_ALARM = 1e-6
EXACT_BELOW = 2048          # calibrate's m is the exact smallest even m below this many coins
CASES = [(1.0, 1e-6, 1), (1.0, 1e-8, 1), (0.5, 1e-6, 2), (2.0, 1e-9, 3), (0.3, 1e-5, 1), (5.0, 1e-8, 1),
         (0.2, 1e-6, 1), (0.1, 1e-6, 1), (0.25, 1e-7, 2)]   # the last two need more than 2,048 coins


# --------------------------------------------------------------------------- exact arithmetic

def binomials(m: int) -> list[int]:
    """C(m, k) for k = 0..m (exact integers)."""
    c = [1] * (m + 1)
    for k in range(m):
        c[k + 1] = c[k] * (m - k) // (k + 1)
    return c


def exact_delta(m: int, ratio: Fraction, shift: int) -> Fraction:
    """Σ_k max(0, p(k) − L·p(k − shift)) with L = ratio, exactly; p the pmf of Binomial(m, 1/2)."""
    a, b = ratio.numerator, ratio.denominator
    c = binomials(m)
    total = 0
    for k in range(m + 1):
        j = k - shift
        v = b * c[k] - (a * c[j] if 0 <= j <= m else 0)
        if v > 0:
            total += v
    return Fraction(total, b << m)


def profile(m: int, ratio: Fraction, sensitivity: int) -> Fraction:
    """The larger of both directions at a shift of exactly `sensitivity`."""
    return max(exact_delta(m, ratio, sensitivity), exact_delta(m, ratio, -sensitivity))


def e_bounds(epsilon: float) -> tuple[Fraction, Fraction]:
    """Rationals L_low <= e^ε <= L_high (math.exp errs by far less than 10^-12 relative)."""
    e = Fraction(math.exp(epsilon))
    return e * (1 - Fraction(1, 10**12)), e * (1 + Fraction(1, 10**12))


def below_promise(m: int) -> int:
    """The largest m' calibrate promises is not enough: m − 2 below 2,048 coins, else the next
    even number below m(1 − 1/1024) − 2."""
    if m < EXACT_BELOW:
        return m - 2
    bound = Fraction(m * 1023, 1024) - 2
    return (math.ceil(bound) - 1) // 2 * 2


# --------------------------------------------------------------------------- statistics

def bernstein_halfwidth(trials: int, p: float, alpha: float) -> float:
    """t with P(|X − trials·p| >= t) <= alpha for X ~ Binomial(trials, p), by Bernstein."""
    log_term = math.log(2 / alpha)
    variance = trials * p * (1 - p)
    return log_term / 3 + math.sqrt(log_term * log_term / 9 + 2 * log_term * variance)


def assert_bernoulli(hits: int, trials: int, p: float, alpha: float = FALSE_ALARM) -> None:
    """hits is a plausible draw of Binomial(trials, p) (false failure below alpha)."""
    t = bernstein_halfwidth(trials, p, alpha)
    assert abs(hits - trials * p) < t, f"{hits} of {trials}, expected {trials * p:.1f} ± {t:.1f}"


def assert_binomial(samples: npt.ArrayLike, m: int, centre: int | None = None,
                    alpha: float = FALSE_ALARM) -> None:
    """The samples are independent draws of N − centre, N ~ Binomial(m, 1/2) (centre m // 2 unless given).

    Fails a correct sample with probability below alpha (Bernstein per event, union bound over
    events): every value outside 0..m fails at once; each value k with an expected count of at
    least 1 is an event, the unlikely values below and above them are pooled into two events, and
    each {N <= k} is an event too.
    Raises: AssertionError naming the events out of their bands.
    """
    x = np.asarray(samples).astype(np.int64) + (m // 2 if centre is None else centre)
    size = int(x.size)
    assert size > 0, "no samples"
    outside = int(np.count_nonzero((x < 0) | (x > m)))
    assert outside == 0, f"{outside} of {size} samples outside the support 0..{m}"
    counts = np.bincount(x, minlength=m + 1).astype(np.int64)
    pmf = [Fraction(c, 1 << m) for c in binomials(m)]
    likely = [k for k in range(m + 1) if size * pmf[k] >= 1]      # a contiguous run around m/2
    first, last = (likely[0], likely[-1]) if likely else (m + 1, -1)
    events: list[tuple[str, int, Fraction]] = [(f"N = {k}", int(counts[k]), pmf[k]) for k in likely]
    for name, tail in ((f"N < {first}", range(0, first)), (f"N > {last}", range(last + 1, m + 1))):
        if tail:
            events.append((name, int(counts[list(tail)].sum()), sum((pmf[k] for k in tail), Fraction(0))))
    cumulative_count, cumulative_p = 0, Fraction(0)
    for k in range(m):
        cumulative_count += int(counts[k])
        cumulative_p += pmf[k]
        events.append((f"N <= {k}", cumulative_count, cumulative_p))
    each = alpha / len(events)
    bad = []
    for name, observed, p in events:
        t = bernstein_halfwidth(size, float(p), each)
        if abs(observed - size * float(p)) >= t:
            bad.append(f"{name}: {observed}, expected {size * float(p):.1f} ± {t:.1f}")
    assert not bad, f"{size} samples are not Binomial({m}, 1/2): " + "; ".join(bad[:6])


def wrong_binomial(m: int, count: int, numerator: int) -> npt.NDArray[np.int64]:
    """count draws of Binomial(m, numerator/65536) from os.urandom (a deliberately wrong sampler)."""
    u = np.frombuffer(os.urandom(2 * m * count), dtype=np.uint16).reshape(count, m)
    draws: npt.NDArray[np.int64] = (u < numerator).sum(axis=1, dtype=np.int64)
    return draws


class ConstantRng:
    """A test double Rng: every byte is `byte`."""

    def __init__(self, byte: int) -> None:
        self.byte = byte
        self.drawn = 0

    def random_bytes(self, n: int) -> bytes:
        self.drawn += n
        return bytes([self.byte]) * n


class NoRng:
    """A test double Rng that must not be asked for anything."""

    def random_bytes(self, n: int) -> bytes:
        raise AssertionError("no randomness expected")


# --------------------------------------------------------------------------- calibration, exactly

@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), CASES)
def test_calibrate_is_private_and_minimal_exactly(epsilon: float, delta: float, sensitivity: int) -> None:
    m = calibrate(epsilon, delta, sensitivity)
    assert m % 2 == 0 and 0 < m <= MAX_COINS
    low_e, high_e = e_bounds(epsilon)
    # private: a rigorous upper bound on δ, at every shift up to Δ (neighbours differ by up to Δ units)
    for shift in range(1, sensitivity + 1):
        upper = profile(m, low_e, shift)
        assert upper <= Fraction(delta), (m, shift, float(upper))
    # not wastefully large: a rigorous lower bound on δ at the largest m' calibrate promises fails
    smaller = below_promise(m)
    if smaller > 0:
        lower = profile(smaller, high_e, sensitivity)
        assert lower > Fraction(delta), (m, smaller, float(lower))
    # the float profile agrees with the exact one (at the float e^ε privacy_delta uses)
    exact = profile(m, Fraction(math.exp(epsilon)), sensitivity)
    assert math.isclose(privacy_delta(m, epsilon, sensitivity), float(exact), rel_tol=1e-6)
    if smaller > 0:
        exact = profile(smaller, Fraction(math.exp(epsilon)), sensitivity)
        assert math.isclose(privacy_delta(smaller, epsilon, sensitivity), float(exact), rel_tol=1e-6)


def test_exact_profile_is_tight() -> None:
    """The exact bounds bracket a known value: Binomial(2, 1/2) at Δ = 1, p = (1/4, 1/2, 1/4):
    δ(ε) = 1/4 + max(0, 1/2 − e^ε/4) + max(0, 1/4 − e^ε/2)."""
    for epsilon in (0.1, 0.5, 1.0):
        e = math.exp(epsilon)
        expected = 0.25 + max(0.0, 0.5 - e / 4) + max(0.0, 0.25 - e / 2)
        low_e, high_e = e_bounds(epsilon)
        assert profile(2, high_e, 1) <= Fraction(expected) * (1 + Fraction(1, 10**9))
        assert profile(2, low_e, 1) >= Fraction(expected) * (1 - Fraction(1, 10**9))
        assert math.isclose(privacy_delta(2, epsilon, 1), expected, rel_tol=1e-12)


def test_log_pmf_against_exact() -> None:
    for m in (1, 2, 16, 37, 1000):
        lp = log_pmf(m)
        exact = [math.log(c) - m * math.log(2) for c in binomials(m)]
        assert lp.shape == (m + 1,)
        assert np.allclose(lp, exact, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), CASES)
def test_coins_suffice(epsilon: float, delta: float, sensitivity: int) -> None:
    m = calibrate(epsilon, delta, sensitivity)
    assert coins_suffice(m, epsilon, delta, sensitivity)
    if m < EXACT_BELOW and m > 2:
        assert not coins_suffice(m - 2, epsilon, delta, sensitivity)
    assert not coins_suffice(m + 1, epsilon, delta, sensitivity)        # odd, though more coins
    assert not coins_suffice(0, epsilon, delta, sensitivity)
    assert not coins_suffice(-m, epsilon, delta, sensitivity)
    assert not coins_suffice(MAX_COINS + 2, epsilon, delta, sensitivity)
    assert not coins_suffice(m, epsilon, delta, 0)


def slack(coins: int) -> int:
    """What coins_calibrated tolerates above the fewest coins that suffice: a count c is refused once
    c − 2·max(1, c >> 11) coins suffice too (calibrate's bisection slack, even: about 0.1%, or the
    exact minimum below 2,048 coins)."""
    return 2 * max(1, coins >> 11)


@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), CASES)
def test_coins_calibrated_refuses_too_few_and_too_many(epsilon: float, delta: float, sensitivity: int) -> None:
    """How a node checks the coordinator's coin count: calibrate's own count passes; fewer that do not
    suffice, an odd count, and more than the slack above the fewest that suffice (twice the calibrated
    count, say) are refused."""
    m = calibrate(epsilon, delta, sensitivity)
    assert coins_calibrated(m, epsilon, delta, sensitivity)
    smaller = below_promise(m)
    if smaller > 0:                       # not enough for (ε, δ): a weaker guarantee than promised
        assert not coins_calibrated(smaller, epsilon, delta, sensitivity)
    if m < EXACT_BELOW and m > 2:
        assert not coins_calibrated(m - 2, epsilon, delta, sensitivity)
    assert not coins_calibrated(m + 1, epsilon, delta, sensitivity)         # odd
    assert not coins_calibrated(2 * m, epsilon, delta, sensitivity)         # drowns the output in noise
    assert not coins_calibrated(MAX_COINS + 2, epsilon, delta, sensitivity)
    assert not coins_calibrated(m, epsilon, delta, 0)
    # Exactly the counts whose fewer-by-the-slack count does not suffice pass, around the calibrated one.
    for c in range(max(2, m - 2 * slack(m)), m + 3 * slack(m), 2):
        expected = coins_suffice(c, epsilon, delta, sensitivity) and not coins_suffice(
            c - slack(c), epsilon, delta, sensitivity)
        assert coins_calibrated(c, epsilon, delta, sensitivity) == expected, c
        if expected:
            assert c - m <= slack(c), (m, c)


def test_calibrate_refusals() -> None:
    with pytest.raises(InputError, match="sensitivity"):
        calibrate(1.0, 1e-6, 0)
    with pytest.raises(InputError, match="epsilon"):
        calibrate(0.0, 1e-6, 1)
    with pytest.raises(InputError, match="delta"):
        calibrate(1.0, 1.5, 1)


def test_calibrate_refuses_more_than_max_coins_without_a_huge_allocation() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"more than {MAX_COINS} noise coins"):
            calibrate(0.01, 1e-9, 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A single profile at MAX_COINS coins (float arrays of 2^22 entries) is all it may cost.
    assert peak < 512 << 20, f"{peak >> 20} MiB"


# --------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("bad", [0, 0.0, -0.5, -1, float("nan"), float("inf"), float("-inf"),
                                 MAX_EPSILON * 1.0001, 11, True, False, "1", None, 10**400])
def test_check_epsilon_refuses(bad: object) -> None:
    with pytest.raises(InputError, match="epsilon"):
        check_epsilon(bad)


@pytest.mark.parametrize("bad", [0, 0.0, -1e-9, 1, 1.0, 1.5, float("nan"), float("inf"), float("-inf"),
                                 MIN_DELTA / 2, 1e-300, True, False, "1e-6", None])
def test_check_delta_refuses(bad: object) -> None:
    with pytest.raises(InputError, match="delta"):
        check_delta(bad)


def test_checks_refuse_huge_integers_with_input_error() -> None:
    for check in (check_epsilon, check_delta):
        with pytest.raises(InputError):
            check(10**400)


def test_checks_accept_the_edges() -> None:
    assert check_epsilon(MAX_EPSILON) == MAX_EPSILON
    assert check_epsilon(1) == 1.0 and isinstance(check_epsilon(1), float)
    assert check_epsilon(1e-9) == 1e-9
    assert check_delta(MIN_DELTA) == MIN_DELTA
    assert check_delta(0.999) == 0.999


# --------------------------------------------------------------------------- interval95, exactly

@pytest.mark.parametrize("m", [2, 16, 28, 80, 118, 512, 1048, 5280])
def test_interval95_exact(m: int) -> None:
    t = interval95(m)
    c = binomials(m)
    centre = m // 2

    def within(w: int) -> int:           # 2^m · P(|N − m/2| <= w)
        return sum(c[centre - w:centre + w + 1]) if w >= 0 else 0

    assert 20 * within(t) >= 19 << m     # P(|N − m/2| <= t) >= 0.95
    assert 20 * within(t - 1) < 19 << m  # and t is the smallest such


def test_interval95_above_max_coins_is_the_normal_approximation_without_a_big_allocation() -> None:
    """Above MAX_COINS (the sum of several nodes' local noise) the interval is ⌈z·sqrt(m)/2⌉, z the
    normal 97.5% quantile, computed without the pmf; at MAX_COINS, where the pmf is still used, the
    two agree to within one unit (1e-3 relative)."""
    z = 1.959963984540054
    interval95.cache_clear()
    tracemalloc.start()
    try:
        for m in (MAX_COINS + 2, 3 * MAX_COINS, 10 * MAX_COINS, 1 << 40):
            assert interval95(m) == math.ceil(z * math.sqrt(m) / 2), m
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes"                  # a pmf of 3·2^22 entries would take 100 MB
    exact = interval95(MAX_COINS)                            # from the pmf
    assert abs(exact - math.ceil(z * math.sqrt(MAX_COINS) / 2)) <= 1 and abs(exact - z * 1024) / exact < 1e-3
    assert interval95(MAX_COINS) <= interval95(MAX_COINS + 2) <= interval95(MAX_COINS) + 1


# --------------------------------------------------------------------------- counts: two move at once

COUNT_CASES = [(1.0, 1e-8), (0.5, 1e-6), (2.0, 1e-9), (0.3, 1e-5)]


@pytest.mark.parametrize(("epsilon", "delta"), COUNT_CASES)
def test_counts_are_calibrated_for_half_the_budget_each_exactly(epsilon: float, delta: float) -> None:
    """A histogram's (or plurality's) record counts are public, so neighbouring data differ in one
    record's bin: two counts move by 1 at once. Each count gets independent Binomial(m, 1/2) noise
    with m = calibrate(ε/2, δ/2, 1): each is (ε/2, δ/2)-DP at a shift of 1, checked with exact
    integers (a rigorous upper bound on δ), so the pair is (ε, δ)-DP by basic composition. The count
    calibrated for the whole (ε, δ) would not give (ε/2, δ/2) per count (a rigorous lower bound)."""
    assert count_budget(epsilon, delta) == (epsilon / 2, delta / 2)
    half_e, half_d = count_budget(epsilon, delta)
    m = calibrate(half_e, half_d, 1)
    low_e, _ = e_bounds(half_e)
    per_count = profile(m, low_e, 1)
    assert per_count <= Fraction(half_d), (m, float(per_count))
    assert 2 * per_count <= Fraction(delta)                 # composed: (ε/2 + ε/2, δ/2 + δ/2)
    assert coins_calibrated(m, half_e, half_d, 1)
    whole = calibrate(epsilon, delta, 1)                    # what a count got before: too few for two moving
    assert whole < m and not coins_calibrated(whole, half_e, half_d, 1)
    _, high_e = e_bounds(half_e)
    assert profile(whole, high_e, 1) > Fraction(half_d), whole


# --------------------------------------------------------------------------- the samplers

def test_sample_local_matches_the_pmf() -> None:
    draws = sample_local(SystemRng(), 16, 200_000)
    assert draws.dtype == np.int64 and draws.shape == (200_000,)
    assert_binomial(draws, 16)


def test_sample_local_odd_coins_across_chunks() -> None:
    """37 coins: five bytes a draw, three bits of the last masked off; more draws than one chunk."""
    rows = (1 << 23) // 5
    draws = sample_local(SystemRng(), 37, rows + 1000)
    assert draws.shape == (rows + 1000,)
    assert_binomial(draws, 37, alpha=FALSE_ALARM / 2)            # N − 18
    assert_binomial(draws[rows:], 37, alpha=FALSE_ALARM / 2)     # the second chunk on its own


def test_sample_local_counts_one_bit_a_coin() -> None:
    for coins in (1, 8, 16, 37, 64):
        ones, zeros = ConstantRng(0xFF), ConstantRng(0x00)
        assert np.all(sample_local(ones, coins, 10) == coins - coins // 2)
        assert np.all(sample_local(zeros, coins, 10) == -(coins // 2))
        assert ones.drawn == 10 * -(-coins // 8)


def test_assert_binomial_fails_wrong_samples() -> None:
    """The check has power: it rejects a biased coin, 2N − m, a shift by one, a constant, and
    values outside the support, and accepts the exact sampler."""
    m, count = 16, 200_000
    right = sample_local(SystemRng(), m, count)
    assert_binomial(right, m, alpha=FALSE_ALARM / 2)
    assert_binomial(right + m // 2, m, centre=0, alpha=FALSE_ALARM / 2)
    wrong = {"p = 0.55": wrong_binomial(m, count, 36045) - m // 2,
             "2N − m": 2 * right,
             "shifted": right + 1,
             "constant": np.zeros(count, dtype=np.int64),
             "Binomial(m + 2) − 9": sample_local(SystemRng(), m + 2, count),
             "one outside": np.concatenate([right[:-1], [m]])}
    for name, samples in wrong.items():
        with pytest.raises(AssertionError):
            assert_binomial(samples, m)
            pytest.fail(f"assert_binomial accepted {name}")


def test_randomized_round_values_and_exact_shifts() -> None:
    values = np.frombuffer(os.urandom(8 * 10_000), dtype=np.int64) >> np.int64(20)   # |v| < 2^43
    values = np.concatenate([values, [0, 1, -1, 7, -7, 8, -8, (1 << 43) - 1, -(1 << 43)]]).astype(np.int64)
    for shift in (1, 3, 5, 16, 40):
        out = randomized_round(SystemRng(), values, shift)
        assert out.dtype == np.int64 and out.shape == values.shape
        floor = np.array([v // (1 << shift) for v in values.tolist()], dtype=np.int64)
        exact = values % (1 << shift) == 0
        assert np.all((out == floor) | (out == floor + 1))
        assert np.array_equal(out[exact], floor[exact])         # nothing to round: exact
    for shift in (0, -1, -5):
        assert np.array_equal(randomized_round(NoRng(), values, shift), values * (1 << -shift))


def test_randomized_round_is_unbiased() -> None:
    """Up with probability the remainder's fraction, for positive and negative values: each case a
    Binomial count, Bernstein at FALSE_ALARM / cases."""
    trials = 200_000
    cases = [(13, 3), (-13, 3), (1, 4), (-1, 4), (5, 1), (-5, 1), ((3 << 40) + 12345, 20),
             (-(3 << 40) - 12345, 20)]
    for value, shift in cases:
        out = randomized_round(SystemRng(), np.full(trials, value, dtype=np.int64), shift)
        floor = value // (1 << shift)
        fraction = (value - floor * (1 << shift)) / (1 << shift)
        assert set(np.unique(out).tolist()) <= {floor, floor + 1}
        ups = int(np.count_nonzero(out == floor + 1))
        assert_bernoulli(ups, trials, fraction, FALSE_ALARM / len(cases))


def test_round_int_is_exact_or_next_and_unbiased_for_any_integer_and_shift() -> None:
    """round_int: floor or floor + 1 of value / 2^shift, the fraction's chance of up (exact shifts from
    the int64 path's up to far beyond 128 bits, where randomized_round's wide path draws 128 bits only)."""
    for value, shift in [(0, 5), (7, 0), (-7, -3), (1 << 200, 150), (-(5 << 130) - 3, 131), (12345, 64)]:
        floor = value >> shift if shift > 0 else value << -shift
        got = round_int(SystemRng(), value, shift)
        assert got in ((floor,) if shift <= 0 or value % (1 << shift) == 0 else (floor, floor + 1)), (value, shift)
    trials = 20_000
    cases = [(13, 3), (-13, 3), ((1 << 129) + (1 << 127), 129), (-(1 << 140) - (1 << 137), 140), (3, 200)]
    for value, shift in cases:
        floor = value >> shift
        fraction = Fraction(value - (floor << shift), 1 << shift)
        ups = sum(round_int(SystemRng(), value, shift) - floor for _ in range(trials))
        assert_bernoulli(ups, trials, float(fraction), FALSE_ALARM / len(cases))


def test_an_average_over_records_is_rounded_once_per_node_not_once_per_record() -> None:
    """A node's DP average over many records: its one value in units is its clipped total rounded once,
    within a unit of the exact total (rounding each record, as before, added up to N errors: for 20,000
    records a standard deviation of up to 70 units, beyond the noise of the release from some 1.5·m
    records on, and not in its printed interval). Clipping comes first; a total beyond int64 is exact."""
    frac_bits, unit, bounds = 0, 10, (0, 10_000)
    values = (np.frombuffer(os.urandom(8 * 20_000), dtype=np.uint64) % np.uint64(12_000)).astype(np.int64)
    values[:5] = [-50, 10_001, 20_000, 0, 10_000]
    clipped = np.clip(values, *bounds)
    exact = Fraction(int(clipped.sum()), 1 << (frac_bits + unit))
    for _ in range(20):
        got = units_total(SystemRng(), values, bounds, frac_bits, unit)
        assert isinstance(got, int) and math.floor(exact) <= got <= math.ceil(exact)
    per_record = [int(units(SystemRng(), values, bounds, frac_bits, unit).sum()) for _ in range(5)]
    assert max(abs(p - exact) for p in per_record) > 1   # what rounding each record did (std ~ 40 units here)
    huge = np.full(4, (1 << 62) + 5, dtype=np.int64)     # four of them overflow int64; the exact total does not
    assert units_total(SystemRng(), huge, (0, 1 << 63 - 1), 0, 62) in (4, 5)
    assert units_total(SystemRng(), -huge, (-(1 << 63), 0), 0, 62) in (-5, -4)


# --------------------------------------------------------------------------- units

def test_choose_unit_examples() -> None:
    assert choose_unit((Fraction(0), Fraction(1)), 0) == (0, 1)
    e, s = choose_unit((Fraction(0), Fraction(100)), 0)
    assert s <= TARGET_SENSITIVITY and (e, s) == (3, 13)
    assert sensitivity_at((Fraction(0), Fraction(100)), e - 1) > TARGET_SENSITIVITY   # the finest such
    # fixed point with 16 fractional bits
    bounds = (Fraction(-3, 2), Fraction(5, 4))
    e, s = choose_unit(bounds, -16)
    assert (e, s) == (-2, 11)                    # ⌈1.25·4⌉ − ⌊−1.5·4⌋; at 2^-3 it would be 10 + 12 = 22
    assert sensitivity_at(bounds, e - 1) == 22 > TARGET_SENSITIVITY
    tiny = (Fraction(0), Fraction(3, 1 << 16))
    assert choose_unit(tiny, -16) == (-16, 3)
    # lo == hi: one record moves nothing, sensitivity 1 all the same
    for v in (Fraction(5), Fraction(7, 3), Fraction(-1, 8)):
        assert sensitivity_at((v, v), 0) == 1
        e, s = choose_unit((v, v), -16)
        assert s <= TARGET_SENSITIVITY and e == -16
    assert sensitivity_at((Fraction(5), Fraction(5)), 0) == 1


@pytest.mark.parametrize(("lo", "hi", "frac_bits"), [(0, 1, 0), (0, 100, 0), (-100, 100, 0), (-3, 7, 4),
                                                     (Fraction(-3, 2), Fraction(5, 4), 16), (0, 1000, 2),
                                                     (Fraction(-1, 1 << 16), Fraction(1, 1 << 16), 16),
                                                     (12345, 12345, 3)])
def test_rounded_values_stay_within_the_sensitivity(lo: Fraction | int, hi: Fraction | int, frac_bits: int) -> None:
    """Any encoded value within bounds rounds, at the chosen unit, into [⌊lo/2^e⌋, ⌈hi/2^e⌉], a span
    of at most the sensitivity: what one record can move a sum by."""
    bounds = (Fraction(lo), Fraction(hi))
    e, s = choose_unit(bounds, -frac_bits)
    assert 1 <= s <= TARGET_SENSITIVITY and e >= -frac_bits
    unit = Fraction(2) ** e
    first, last = math.floor(bounds[0] / unit), math.ceil(bounds[1] / unit)
    assert last - first <= s
    lo_enc, hi_enc = math.ceil(bounds[0] * 2**frac_bits), math.floor(bounds[1] * 2**frac_bits)
    width = hi_enc - lo_enc + 1
    randoms = np.frombuffer(os.urandom(8 * 5000), dtype=np.uint64) % np.uint64(width)
    encoded = np.concatenate([randoms.astype(np.int64) + lo_enc, [lo_enc, hi_enc]]).astype(np.int64)
    for _ in range(3):
        units = randomized_round(SystemRng(), encoded, e + frac_bits)
        assert int(units.min()) >= first and int(units.max()) <= last
        assert int(units.max()) - int(units.min()) <= s


# --------------------------------------------------------------------------- the report

@pytest.mark.parametrize("n", [3, 6, 10])
def test_report_local_and_joint(n: int) -> None:
    epsilon, delta = 1.0, 1e-6
    m = calibrate(epsilon, delta, 1)
    joint = report(epsilon, delta, "joint", m, 1.0, 1, n)
    local = report(epsilon, delta, "local", m, 1.0, 1, n)
    assert joint.central_std == local.central_std == noise_std(m) == math.sqrt(m) / 2
    assert joint.std == joint.central_std
    assert math.isclose(local.std, math.sqrt(n) * local.central_std, rel_tol=1e-12)
    assert joint.interval == interval95(m) and local.interval == interval95(n * m)
    assert joint.as_dict()["mechanism"] == "binomial (joint noise)"
    assert local.as_dict()["noise_std"] == local.std and local.as_dict()["coins"] == m
    # an average of a sum in units of 1/4, divided by a count of 50
    scaled = report(epsilon, delta, "local", m, 0.25, 3, n, scale=50.0)
    assert math.isclose(scaled.central_std, math.sqrt(m) / 2 * 0.25 / 50, rel_tol=1e-12)
    assert math.isclose(scaled.std, math.sqrt(n) * scaled.central_std, rel_tol=1e-12)
    assert math.isclose(scaled.interval, interval95(n * m) * 0.25 / 50, rel_tol=1e-12)
    # counts are exact: no rounding, the whole error is the noise
    assert joint.rounding_std == 0 and joint.error_interval == joint.interval
    # a sum's or an average's nodes each round once: std at most unit·sqrt(n)/2, in the output's units
    rounded = report(epsilon, delta, "joint", m, 0.25, 3, n, scale=50.0, rounded=True)
    assert math.isclose(rounded.rounding_std, 0.25 * math.sqrt(n) / 2 / 50, rel_tol=1e-12)
    assert math.isclose(rounded.error_interval, math.hypot(rounded.interval, 1.959963984540054 * rounded.rounding_std),
                        rel_tol=1e-12)
    assert rounded.interval < rounded.error_interval
    assert rounded.as_dict()["error_interval95"] == rounded.error_interval
