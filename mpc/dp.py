"""Differential privacy for mpc's outputs: the binomial mechanism, calibrated exactly (DESIGN.md §11).

**Mechanism.** An output word x (an integer: a count, or a sum in public units) is released as
x + N − m/2 with N ~ Binomial(m, 1/2) and m even: an integer noise with mean 0 and variance m/4
(Dwork, Kenthapadi, McSherry, Mironov, Naor, "Our Data, Ourselves: Privacy via Distributed Noise
Generation", EUROCRYPT 2006, §3; Case & Thomson, draft-case-ppm-binomial-dp-01, "Simple and
Efficient Binomial Protocols for Differential Privacy in MPC", §3). Inside MPC each of the m coins
is the XOR of one random bit from every node, converted to additive shares with a daBit
(PROTOCOLS.md §10; mpc/protocols/noise.py): uniform as soon as one node is honest, so the noise
is exactly the curator's Binomial(m, 1/2) whatever n is, and no coalition of n − 1 nodes with the
coordinator knows it. Not 2N − m: its steps of 2 would reveal the aggregate's parity.

**Calibration.** m is the smallest even number for which the mechanism is (ε, δ)-DP for an integer
sensitivity Δ, checked from the probability mass function p of Binomial(m, 1/2), not by a bound
or by sampling: for neighbouring outputs x and x + Δ the privacy profile is

    δ(ε) = Σ_k max(0, p(k) − e^ε · p(k − Δ)),

taken in both directions (the draft's §3 gives closed-form parameters; the exact profile gives
fewer coins for the same guarantee). It is computed in log space with numpy;
tests/unit/test_dp.py recomputes it with exact integers.

**Units.** A sum's values are clipped to the input's declared bounds and rounded at the node to a
public unit 2^e, unbiasedly at random (`randomized_round`), so Δ = ⌈hi/2^e⌉ − ⌊lo/2^e⌋ units is
public and small (at most TARGET_SENSITIVITY) and m stays in the tens of thousands. Counts
(histograms, a plurality's counts) have Δ = 1.

**Neighbours.** Every release protects the value of one record: neighbouring data differ in one
record's value within the declared bounds. Record counts are public (an input's length, an
average's count), so they are not protected. In counts (a histogram, a plurality) one record
changing its bin moves two counts by 1: each count is calibrated for (ε/2, δ/2), which composes to
(ε, δ) (mpc/protocols/catalogue.py `count_budget`). One record may move every element of a vector,
so a DP sum of a k-element vector spends k·(ε, δ) of the owner's budget unless the owner declares
each element a record of its own (`dp_per_element`; mpc/node/core.py). A histogram or an average
over records of a vector adds its elements up in one noised value, which that one record could move
by k times the calibrated sensitivity: refused unless the owner sets `dp_per_element`
(mpc/protocols/catalogue.py `privacy_units`).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from mpc.errors import InputError
from mpc.prg import Rng

MAX_EPSILON = 10.0              # beyond this a "guarantee" means nothing (e^10 ≈ 22,000)
MIN_DELTA = 1e-30
TARGET_SENSITIVITY = 16         # a sum's unit is chosen so that one record moves it by at most this many units
MAX_COINS = 1 << 22             # per noised word (std 1,024 units)
MAX_JOINT_COINS = 1 << 21       # per session, coins made jointly (each a daBit: (n - 1)^2 correlated OTs;
                                # about 150 MB of OT state per node at this limit)
NOISE_MODES = ("joint", "local")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _finite(value: object, name: str) -> float:
    """Returns: value as a finite float. Raises: InputError naming `name` otherwise (bools, NaN, infinities,
    integers too large for a float)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a finite number, got {str(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {str(value)[:40]}")
    return number


def check_epsilon(epsilon: object) -> float:
    """Returns: ε as a float. Raises: InputError unless 0 < ε <= MAX_EPSILON (NaN and infinities refused)."""
    epsilon = _finite(epsilon, "epsilon")
    if not 0 < epsilon <= MAX_EPSILON:
        raise InputError(f"epsilon must lie in (0, {MAX_EPSILON:g}], got {epsilon!r}")
    return epsilon


def check_delta(delta: object) -> float:
    """Returns: δ as a float. Raises: InputError unless MIN_DELTA <= δ < 1."""
    delta = _finite(delta, "delta")
    if not 0 < delta < 1:
        raise InputError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    if delta < MIN_DELTA:
        raise InputError(f"delta must be at least {MIN_DELTA:g}, got {delta!r}")
    return delta


def decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as `value` ("0.1", not 0.1000000000000000055...): budgets
    add up as people write them, so ten releases of ε = 0.1 spend exactly 1."""
    return Decimal(repr(float(value)))


# ---- the binomial mechanism ------------------------------------------------------------------

def log_pmf(m: int) -> np.ndarray:
    """log p(k) for k = 0..m, p the pmf of Binomial(m, 1/2)."""
    k = np.arange(1, m + 1, dtype=np.float64)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(m - k + 1) - np.log(k))))
    return log_comb - m * math.log(2.0)


def privacy_delta(m: int, epsilon: float, sensitivity: int) -> float:
    """δ(ε) of Binomial(m, 1/2) noise for outputs `sensitivity` apart: the larger of both directions.

    Returns: Σ_x max(0, P(x) − e^ε Q(x)) maximised over (P, Q) = (p, p shifted by Δ) and back.
    """
    lp = log_pmf(m)
    worst = 0.0
    for shift in (sensitivity, -sensitivity):
        # P(x) = p(x) on x = 0..m; Q(x) = p(x - shift).
        x = np.arange(m + 1)
        y = x - shift
        inside = (y >= 0) & (y <= m)
        p = np.exp(lp)
        term = p.copy()                     # where Q(x) = 0 the whole of P(x) counts
        ratio = np.exp(np.minimum(epsilon + lp[np.clip(y, 0, m)] - lp, 700.0))
        term[inside] = p[inside] * np.maximum(0.0, 1.0 - ratio[inside])
        worst = max(worst, float(term.sum()))
    return worst


@functools.lru_cache(maxsize=256)
def calibrate(epsilon: float, delta: float, sensitivity: int) -> int:
    """The fewest coins m (even, to within 0.1%) for which Binomial(m, 1/2) − m/2 noise is (ε, δ)-DP at this sensitivity.

    Returns: m. Raises: InputError when more than MAX_COINS would be needed.
    """
    check_epsilon(epsilon)
    check_delta(delta)
    if sensitivity < 1:
        raise InputError(f"sensitivity must be at least 1 unit, got {sensitivity}")

    def ok(m: int) -> bool:
        return privacy_delta(m, epsilon, sensitivity) <= delta

    # Bracket from the Gaussian mechanism's σ = Δ·sqrt(2 ln(1.25/δ))/ε (variance m/4), then bisect to
    # within 0.1% (or to the exact smallest even m below 2,048 coins).
    sigma = sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    if sigma * sigma > MAX_COINS:   # the binomial needs over half the Gaussian estimate's 4σ² coins: refuse at once
        raise InputError(f"epsilon {epsilon!r} and delta {delta!r} at a sensitivity of {sensitivity} unit(s) "
                         f"need more than {MAX_COINS} noise coins per value; raise epsilon or delta")
    high = min(MAX_COINS, max(2, 2 * math.ceil(2 * sigma * sigma)))
    while not ok(high):
        if high >= MAX_COINS:
            raise InputError(f"epsilon {epsilon!r} and delta {delta!r} at a sensitivity of {sensitivity} unit(s) "
                             f"need more than {MAX_COINS} noise coins per value; raise epsilon or delta")
        high = min(MAX_COINS, 2 * high)
    low = high // 2 // 2 * 2
    while low > 0 and ok(low):
        high, low = low, low // 2 // 2 * 2
    while high - low > max(2, high >> 10):  # invariant: ok(high), and low = 0 or not ok(low); both even
        middle = (low + high) // 4 * 2
        low, high = (low, middle) if ok(middle) else (middle, high)
    return high


@functools.lru_cache(maxsize=256)
def coins_suffice(coins: int, epsilon: float, delta: float, sensitivity: int) -> bool:
    """Whether `coins` (even, within MAX_COINS) give (ε, δ) at this sensitivity."""
    return (0 < coins <= MAX_COINS and coins % 2 == 0 and sensitivity >= 1
            and privacy_delta(coins, epsilon, sensitivity) <= delta)


def coins_calibrated(coins: int, epsilon: float, delta: float, sensitivity: int) -> bool:
    """How a node checks a coordinator's choice: `coins` give (ε, δ), and no more than `calibrate`'s
    slack (0.1%, or 2 coins below 2,048) fewer would, so a coordinator can neither weaken the
    guarantee nor drown the output (and the node's time) in noise. Two evaluations of the pmf."""
    if not coins_suffice(coins, epsilon, delta, sensitivity):
        return False
    # calibrate stops when its even bracket is at most max(2, m >> 10) wide, i.e. 2·max(1, m >> 11).
    fewer = coins - 2 * max(1, coins >> 11)
    return fewer < 2 or not coins_suffice(fewer, epsilon, delta, sensitivity)


def noise_std(coins: int) -> float:
    """The noise's standard deviation in units: sqrt(m)/2."""
    return math.sqrt(coins) / 2


@functools.lru_cache(maxsize=256)
def interval95(coins: int) -> int:
    """The smallest t with P(|N − m/2| <= t) >= 0.95, from the pmf (units)."""
    if coins > MAX_COINS:   # a sum of many nodes' local noise: the normal approximation (within 1e-3 here)
        return math.ceil(1.959963984540054 * math.sqrt(coins) / 2)
    p = np.exp(log_pmf(coins))
    centre = coins // 2
    tail = p[centre + 1:]                                   # p(c + t) = p(c − t): the pmf is symmetric
    mass = p[centre] + 2 * np.concatenate(([0.0], np.cumsum(tail)))
    return int(np.searchsorted(mass, 0.95))


def sample_local(rng: Rng, coins: int, count: int) -> np.ndarray:
    """`count` independent draws of Binomial(coins, 1/2) − coins/2 from the CSPRNG (one bit a coin).

    Returns: int64 array.
    """
    out = np.zeros(count, dtype=np.int64)
    if coins < 1 or count < 1:
        return out
    width = -(-coins // 8)
    last = coins - 8 * (width - 1)                       # coins in the last byte of each draw
    mask = np.uint8((1 << last) - 1)
    rows = max(1, (1 << 23) // width)                   # about 8 MiB of random bytes at a time
    for start in range(0, count, rows):
        n = min(rows, count - start)
        raw = np.frombuffer(rng.random_bytes(n * width), dtype=np.uint8).reshape(n, width).copy()
        raw[:, -1] &= mask
        out[start:start + n] = _POPCOUNT[raw].sum(axis=1, dtype=np.int64) - coins // 2
    return out


def randomized_round(rng: Rng, values: np.ndarray, shift: int) -> np.ndarray:
    """values / 2^shift rounded down or up at random, unbiasedly (up with probability the remainder's
    fraction); for shift <= 0 exact. Values are int64 (encoded fixed point).

    Returns: int64 array.
    """
    values = np.asarray(values, dtype=np.int64)
    if shift <= 0:
        out: np.ndarray = values << np.int64(-shift)
        return out
    if shift > 62:   # a unit far coarser than this node's values: exact with Python integers
        return np.array([round_int(rng, v, shift) for v in values.tolist()], dtype=np.int64)
    low = values >> np.int64(shift)                      # floor, also for negative values
    remainder = (values - (low << np.int64(shift))).astype(np.uint64)
    draws = np.frombuffer(rng.random_bytes(8 * values.size), dtype=np.uint64) >> np.uint64(64 - shift)
    out = low + (draws < remainder).astype(np.int64)
    return out


def round_int(rng: Rng, value: int, shift: int) -> int:
    """value / 2^shift rounded down or up at random, unbiasedly (up with probability the remainder's
    fraction, from exactly `shift` random bits); for shift <= 0 exact. Any Python integer, any shift."""
    if shift <= 0:
        return value << -shift
    low = value >> shift                                  # floor, also for negative values
    draw = int.from_bytes(rng.random_bytes((shift + 7) // 8), "little") & ((1 << shift) - 1)
    return low + (draw < value - (low << shift))


# ---- choosing a sum's unit -----------------------------------------------------------------

def _units(value: Fraction, exponent: int, up: bool) -> int:
    scaled = value / Fraction(2) ** exponent
    return math.ceil(scaled) if up else math.floor(scaled)


def sensitivity_at(bounds: tuple[Fraction, Fraction], exponent: int) -> int:
    """Units one record can move a sum by, at unit 2^exponent: ⌈hi/2^e⌉ − ⌊lo/2^e⌋ (at least 1)."""
    return max(1, _units(bounds[1], exponent, True) - _units(bounds[0], exponent, False))


def choose_unit(bounds: tuple[Fraction, Fraction], finest: int) -> tuple[int, int]:
    """The finest unit 2^e (e >= finest) at which one record moves a sum by at most TARGET_SENSITIVITY units.

    Args:
        bounds: the widest declared bounds over the nodes, as real numbers.
        finest: −(the largest fractional bits of any node): no unit finer than the data.
    Returns: (e, the sensitivity in units).
    """
    e = finest
    while sensitivity_at(bounds, e) > TARGET_SENSITIVITY:
        e += 1
    return e, sensitivity_at(bounds, e)


@dataclass(frozen=True, slots=True)
class NoiseReport:
    """What the coordinator prints about a DP release's noise, in the output's own units."""

    epsilon: float
    delta: float
    mode: str                   # "joint": one Binomial(m) made inside MPC; "local": one per node
    coins: int                  # m, per noised value (per node in local mode)
    unit: float                 # the output's resolution (1 for counts)
    sensitivity: int            # Δ in units
    std: float                  # the noise's standard deviation, in output units
    interval: float             # half-width of the 95% interval of the noise (output units)
    central_std: float          # the same mechanism run by one trusted curator
    rounding_std: float = 0.0   # at most this: the nodes' rounding to the unit, each once per value (output units)

    @property
    def error_interval(self) -> float:
        """Half-width of a 95% interval of the output's whole error, noise and rounding: the noise's own
        combined with 1.96 rounding standard deviations as independent normal errors combine."""
        return math.hypot(self.interval, 1.959963984540054 * self.rounding_std)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"epsilon": self.epsilon, "delta": self.delta, "mechanism": f"binomial ({self.mode} noise)",
                "coins": self.coins, "unit": self.unit, "sensitivity_units": self.sensitivity,
                "noise_std": self.std, "interval95": self.interval, "central_std": self.central_std,
                "rounding_std_max": self.rounding_std, "error_interval95": self.error_interval}


def report(epsilon: float, delta: float, mode: str, coins: int, unit: float, sensitivity: int, parties: int,
           scale: float = 1.0, rounded: bool = False) -> NoiseReport:
    """The noise of a release: `scale` divides the output (an average divides the sum by its count).

    In local mode every node adds its own full Binomial(m): variance n·m/4, std sqrt(n) times the curator's.
    rounded: each node rounded its value to the unit at random, once (a sum's or an average's; counts are
    exact): n errors of less than a unit, each of variance at most unit²/4, so std at most unit·sqrt(n)/2.
    """
    copies = parties if mode == "local" else 1
    central = noise_std(coins) * unit / scale
    std = central * math.sqrt(copies)
    if copies == 1:
        half = interval95(coins) * unit / scale
    else:   # a sum of n binomials is Binomial(n·m)
        half = interval95(coins * copies) * unit / scale
    rounding = unit * math.sqrt(parties) / 2 / scale if rounded else 0.0
    return NoiseReport(epsilon, delta, mode, coins, unit, sensitivity, std, half, central, rounding)
