"""Differentially private releases over real node daemons (grpc.aio, mutual TLS, SQLite, loopback):
noisy results within rigorous bounds of the exact ones, the noise's distribution, the owner's
(epsilon, delta) budget across sessions, restarts and concurrent sessions, the `exact = false`
policy, refusals of bad parameters before anything is shared, what every party receives in a DP
session, and the `mpc` command (DESIGN.md §11; mpc/dp.py, mpc/protocols/noise.py,
mpc/node/releases.py).

One three-node cluster (alice, bob, carlos) serves the whole module on one event loop (the first
program session of each pair runs base OTs; later ones reuse them). Every owner lets any
participant set run any number of exact queries (harness.ANY_QUERIES) and gives every input a
large DP budget (EVERY_POLICY), except the inputs of PER_INPUT, whose tables set the budget or
rule a test is about: exact histograms (`exact_histograms`, off by default) for the inputs whose
tests compare with an exact histogram, and one spend per release of a vector (`dp_per_element`; by
default a DP sum of a vector, or its elementwise average, spends its length times epsilon, and a DP
histogram or average over records of a vector is refused) where a test needs a long vector's many
noised elements or counts a vector's records. Counts (histograms, plurality) are noised for
(epsilon/2, delta/2) each, one record moving two of them. The `mpc` command runs as `.venv/bin/mpc`
in subprocesses (asyncio, so the nodes on this loop keep serving: tests/integration/test_auctions.py
`mpc`).

**Statistics.** The file's false-failure probability is below 1e-6:
- every noised value checked against a bound uses the exact tail of Binomial(m, 1/2) (mpc.dp.log_pmf):
  P(|N - m/2| > t) <= VALUE_ALPHA = 1e-10, and fewer than MAX_CHECKED_VALUES = 1000 values are
  checked in the file (`noise_within` counts them and asserts it): below 1e-7 in all;
- the distribution test: tests/unit/test_dp.py `assert_binomial` at alpha STAT_ALPHA = 5e-7
  (Bernstein per event, union bound over events);
- the balanced-bit tests of the coordinator's output shares: Hoeffding at BALANCE_ALPHA = 1e-8
  each, three of them;
- "no share word below 2^20": 3 * 128 words * 2^-44, below 1e-10.
A sum's value also moves by the nodes' unbiased rounding to the public unit: each record by less
than one unit, so |noisy - exact| <= unit * (t + records) is certain once |N - m/2| <= t.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mpc import dp
from mpc.coordinator.client import Coordinator, Privacy
from mpc.errors import InputError, SessionFailed
from mpc.node.daemon import NodeServer
from mpc.ot.arith import STEP_U as ARITH_U
from mpc.ot.arith import fold_step
from mpc.ot.extension import KAPPA
from mpc.protocols.agreement import DIGEST_BYTES, STEP_DIGEST
from mpc.protocols.catalogue import count_budget
from mpc.ot.triples import parse_session_hello
from mpc.protocols.compute import STEP_HELLO
from mpc.protocols.sum import STEP_SEED
from mpc.ring import to_signed
from mpc.store import Store
from mpc.store.base import FILE_NAME as STORE_FILE
from mpc.v1 import mpc_pb2

from ..unit.test_dp import assert_binomial
from .harness import ANY_QUERIES, LocalCluster, prepare_request, running_cluster
from .test_auctions import bits_of, control, hoeffding_band, mpc, session_of, words_of
from .test_privacy import Views

T = TypeVar("T")
TRIO = ("alice", "bob", "carlos")
CALL_TIMEOUT = 10.0
DELTA = 1e-8                       # Privacy's default delta

VALUE_ALPHA = 1e-10
MAX_CHECKED_VALUES = 1000
STAT_ALPHA = 5e-7
BALANCE_ALPHA = 1e-8
_checked = [0]                     # noised values checked against a bound so far (see the docstring)

EVERY_POLICY = ANY_QUERIES + "\nepsilon = 1000\ndelta = 0.5"
PER_INPUT: dict[str, dict[str, object]] = {
    "budget4": {"epsilon": 1.0},             # four releases of 0.25
    "budget2": {"epsilon": 0.5},             # two releases of 0.25, asked for four at once
    "tenth": {"epsilon": 1},                 # ten releases of 0.1
    "dponly": {"exact": False},
    "cli_budget": {"epsilon": 3},
    "fpay": {"exact_histograms": True},      # an exact histogram beside the DP sum
    "recs": {"dp_per_element": True},        # an average over records: each a different person's
    "ages": {"exact_histograms": True, "dp_per_element": True},   # the exact histogram, for contrast
    "cli_ages": {"dp_per_element": True},
    "hist_default": {"dp_per_element": True},   # the default exact_histograms (off)
    "slot1": {"max_releases": 1, "exact_histograms": True, "dp_per_element": True},   # exact meets max_releases
    "nobounds": {"exact_histograms": True},  # refused for its bounds, not for being exact
    "coins01": {"dp_per_element": True},     # 20,000 elements, one spend
    "hist_exact": {"exact_histograms": True},
    "kvec1": {"dp_per_element": True},
    "kvec_budget": {"epsilon": 2},           # five elements: a sum at 0.5 would spend 2.5
}


def policy(node: str) -> str:
    lines = []
    for name, rules in PER_INPUT.items():
        lines.append(f"[nodes.{node}.policy.per_input.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in rules.items()]
    return "\n".join(lines)


# ---- exact tails of the binomial noise --------------------------------------------------------------


def tail_bound(coins: int, alpha: float = VALUE_ALPHA) -> int:
    """The smallest t with P(|N - m/2| > t) <= alpha for N ~ Binomial(m, 1/2), m = coins (even), from
    the pmf; one more unit than that, for the floating-point sums."""
    assert coins % 2 == 0, coins
    p = np.exp(dp.log_pmf(coins))
    at_least = np.cumsum(p[::-1])[::-1]            # at_least[k] = P(N >= k)
    centre = coins // 2
    for t in range(centre + 1):
        k = centre + t + 1
        if k > coins or 2 * at_least[k] <= alpha:
            return t + 1
    raise AssertionError("unreachable: t = m/2 leaves no tail")


def noise_within(noisy: object, exact: float, coins: int, unit: float, records: int = 0, scale: float = 1.0,
                 what: str = "") -> None:
    """|noisy - exact| <= unit * (t + records) / scale, t the VALUE_ALPHA tail of the noise (records: the
    rounding to the unit, less than one unit per record). Counted against MAX_CHECKED_VALUES."""
    assert isinstance(noisy, (int, float)), f"{what}: {noisy!r} is not a number"
    _checked[0] += 1
    assert _checked[0] < MAX_CHECKED_VALUES
    bound = unit * (tail_bound(coins) + records) / scale
    assert abs(noisy - exact) <= bound, f"{what}: noisy {noisy}, exact {exact}, allowed +-{bound}"


def expected_report(epsilon: float, delta: float, mode: str, sensitivity: int, unit: float,
                    scale: float = 1.0) -> dp.NoiseReport:
    """mpc.dp's report of a release over the three nodes, with the coins mpc.dp calibrates."""
    coins = dp.calibrate(epsilon, delta, sensitivity)
    return dp.report(epsilon, delta, mode, coins, unit, sensitivity, len(TRIO), scale, rounded=True)


def expected_count_report(epsilon: float, delta: float, mode: str) -> dp.NoiseReport:
    """The report of noisy counts (a histogram, a plurality): each count calibrated for (epsilon/2,
    delta/2), since one record moves two counts (catalogue.count_budget); the release is (epsilon, delta)."""
    coins = dp.calibrate(epsilon / 2, delta / 2, 1)
    return dp.report(epsilon, delta, mode, coins, 1.0, 1, len(TRIO))


def sum_unit(bounds: Sequence[tuple[int, int]], frac_bits: int = 0) -> tuple[int, int]:
    """The coordinator's unit exponent and sensitivity for declared bounds (encoded at frac_bits)."""
    scale = Fraction(1, 1 << frac_bits)
    lo = min(Fraction(b[0]) * scale for b in bounds)
    hi = max(Fraction(b[1]) * scale for b in bounds)
    return dp.choose_unit((lo, hi), -frac_bits)


def test_tail_bound_is_the_exact_quantile() -> None:
    # Against exact integers for a small m: P(|N - 5| > t) for Binomial(10, 1/2).
    m = 10
    counts = [math.comb(m, k) for k in range(m + 1)]
    for alpha in (1e-1, 1e-2, 1e-3):
        t = tail_bound(m, alpha) - 1
        outside = sum(c for k, c in enumerate(counts) if abs(k - m // 2) > t)
        assert Fraction(outside, 1 << m) <= alpha
        if t > 0:
            wider = sum(c for k, c in enumerate(counts) if abs(k - m // 2) > t - 1)
            assert Fraction(wider, 1 << m) > alpha
    # The tails the file uses: a few standard deviations wide, never the whole support.
    for coins in (118, 1476, 26658, 374664):
        t = tail_bound(coins)
        assert 5 * dp.noise_std(coins) < t < 8 * dp.noise_std(coins), (coins, t)


# ---- the module's cluster ------------------------------------------------------------------------------


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    lc: LocalCluster
    views: Views
    cluster_file: Path

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        """Run one scenario on the cluster's loop (bounded)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def coordinator(self, *, keyed: bool = True) -> Coordinator:
        return Coordinator(self.lc.cluster, observer=self.views.observe, keyed=keyed)

    def received(self, node: str, session: str) -> list[tuple[str, str, bytes]]:
        return [(s, st, p) for sid, s, st, p in self.lc.recorder.received.get(node, []) if sid == session]

    def store(self, node: str) -> Store:
        return self.lc.store(node)

    def releases(self, node: str, name: str) -> list[Any]:
        with self.store(node) as store:
            return store.releases(name)

    def spent(self, node: str, name: str) -> Decimal:
        return sum((r.epsilon or Decimal(0) for r in self.releases(node, name)), Decimal(0))

    def audit(self, node: str, session: str) -> list[Any]:
        with self.store(node) as store:
            return [e for e in store.audit_log(limit=100_000) if e.session_id == session]

    def audit_size(self, node: str) -> int:
        with self.store(node) as store:
            return len(store.audit_log(limit=100_000))

    async def restart_all(self) -> None:
        """Stop every node server and start it again over the same data directory."""
        for node in TRIO:
            await self.lc.stop(node)
        for node in TRIO:
            server = NodeServer(self.lc.cluster, node, observer=self.lc.recorder.for_node(node))
            await server.start()
            self.lc.servers[node] = server


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dp")
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        # No triple pools: the view test fixes every message of the IKNP path (tests/integration/test_pool.py
        # checks the pooled path's views).
        running_cluster(tmp, 3, every_policy=EVERY_POLICY, policies={n: policy(n) for n in TRIO}, triple_pool=0)))
    try:
        yield Env(loop, lc, Views(), lc.cluster.path)
    finally:
        loop.run_until_complete(stack.aclose())


def put_everywhere(env: Env, name: str, values: Mapping[str, Sequence[int] | np.ndarray], **kwargs: Any) -> None:
    for node, v in values.items():
        env.lc.put(node, name, v, **kwargs)


def assert_refused_before_sharing(env: Env, error: BaseException, name: str, releases_before: dict[str, int],
                                  *needles: str) -> str:
    """A coordinator's session refused at prepare by every node: every needle in the message, no message
    between the nodes, no output share, no release recorded, each node audits it refused with nothing sent.

    Returns: the session id.
    """
    message = str(error)
    assert "nothing was revealed" in message, message
    for needle in needles:
        assert needle in message, message
    session = session_of(error)
    assert session not in env.views.chunks
    for node in TRIO:
        assert not env.received(node, session), node
        assert len(env.releases(node, name)) == releases_before[node], node
        entries = env.audit(node, session)
        assert [(e.outcome, e.sent) for e in entries] == [("refused", ())], entries
    return session


# ==== 1. correctness within rigorous noise bounds ==========================================================


def test_dp_sums_scalar_and_local_are_the_exact_sum_plus_bounded_noise(env: Env) -> None:
    pay = {n: [secrets.randbelow(1001)] for n in TRIO}
    put_everywhere(env, "pay", pay, scalar=True, bounds=(0, 1000))
    exact = sum(v[0] for v in pay.values())

    async def go() -> None:
        async with env.coordinator() as c:
            # Joint noise: unit 2^6, sensitivity 16 (one record within 0..1000 moves the sum by 16 units).
            e, sens = sum_unit([(0, 1000)])
            assert (e, sens) == (6, 16)
            coins = dp.calibrate(1.0, DELTA, sens)
            r = await c.sum("pay", privacy=Privacy(1.0))
            assert isinstance(r.value, int) and r.value % (1 << e) == 0, r.value
            noise_within(r.value, exact, coins, 2.0 ** e, records=3, what="sum")
            assert r.noise == expected_report(1.0, DELTA, "joint", sens, 2.0 ** e)
            assert (r.noise.coins, r.noise.mode, r.noise.sensitivity, r.noise.unit) == (coins, "joint", 16, 64.0)
            assert r.noise.std == r.noise.central_std == math.sqrt(coins) / 2 * 64
            assert r.noise.interval == dp.interval95(coins) * 64

            # Local noise: every node adds its own Binomial(m): the total is Binomial(3m) - 3m/2.
            r = await c.sum("pay", privacy=Privacy(1.0, noise="local"))
            noise_within(r.value, exact, 3 * coins, 2.0 ** e, records=3, what="local sum")
            assert r.noise == expected_report(1.0, DELTA, "local", sens, 2.0 ** e)
            assert r.noise.std == pytest.approx(math.sqrt(3) * r.noise.central_std)
            assert r.noise.interval == dp.interval95(3 * coins) * 64
            assert (await c.sum("pay")).value == exact                      # the exact form, for contrast
    env.run(go())


def test_dp_sum_of_a_fixed_point_input(env: Env) -> None:
    """A DP sum of an input stored with fractional bits: the noisy sum within bounds of the exact one
    (the session runs at scale 0, in the sum's public unit, whatever the inputs' fractional bits)."""
    # 8 fractional bits, values within +-50 (encoded +-12800), one node declares narrower bounds.
    fbounds = {"alice": (-12800, 12800), "bob": (-12800, 12800), "carlos": (-6400, 12800)}
    fpay = {n: [max(secrets.randbelow(25601) - 12800, fbounds[n][0]) for _ in range(4)] for n in TRIO}
    for n in TRIO:
        env.lc.put(n, "fpay", fpay[n], frac_bits=8, bounds=fbounds[n])
    e, sens = sum_unit(list(fbounds.values()), 8)
    assert (e, sens) == (3, 14)                  # 2^3: 7 units each side of 0 over -50..50
    coins = dp.calibrate(0.5, 1e-9, sens)

    async def go() -> Any:
        async with env.coordinator() as c:
            # An exact histogram of the same fixed-point records: edges compare with the real values.
            h = await c.histogram("fpay", [-50, -10, 0, 10, 50])
            real = [Fraction(v, 256) for n in TRIO for v in fpay[n]]
            assert h.counts == [sum(1 for v in real if v < -10), sum(1 for v in real if -10 <= v < 0),
                                sum(1 for v in real if 0 <= v < 10), sum(1 for v in real if v >= 10)]
            return await c.sum("fpay", privacy=Privacy(0.5, 1e-9))
    r = env.run(go())
    assert isinstance(r.value, list) and len(r.value) == 4
    for i, noisy in enumerate(r.value):
        exact = sum(Fraction(fpay[n][i], 256) for n in TRIO)
        noise_within(noisy, float(exact), coins, 2.0 ** e, records=3, what=f"fixed-point sum [{i}]")
    assert r.noise == expected_report(0.5, 1e-9, "joint", sens, 2.0 ** e)
    for node in TRIO:                            # four elements: four times (0.5, 1e-9) of the budget
        assert [(r.epsilon, r.delta) for r in env.releases(node, "fpay") if r.epsilon is not None] == [
            (Decimal("2.0"), Decimal("4e-9"))]


def test_dp_averages_over_records_and_elementwise(env: Env) -> None:
    records = {n: [secrets.randbelow(101) for _ in range(k)] for n, k in zip(TRIO, (5, 7, 3))}
    put_everywhere(env, "recs", records, bounds=(0, 100))
    vec = {n: [secrets.randbelow(41) - 20 for _ in range(6)] for n in TRIO}
    put_everywhere(env, "vec", vec, bounds=(-20, 20))

    async def go() -> None:
        async with env.coordinator() as c:
            e, sens = sum_unit([(0, 100)])
            coins = dp.calibrate(2.0, DELTA, sens)
            r = await c.average("recs", privacy=Privacy(2.0))
            flat = [v for vs in records.values() for v in vs]
            assert r.count == len(flat) == 15 and r.mode == "records"       # the count stays exact
            # each node rounds its total once, not each record: less than a unit per node
            noise_within(r.total, sum(flat), coins, 2.0 ** e, records=3, what="records total")
            noise_within(r.average, sum(flat) / 15, coins, 2.0 ** e, records=3, scale=15, what="records average")
            assert isinstance(r.total, (int, float)) and r.average == pytest.approx(r.total / 15)
            assert r.noise == expected_report(2.0, DELTA, "joint", sens, 2.0 ** e, scale=15.0)

            e, sens = sum_unit([(-20, 20)])
            coins = dp.calibrate(1.0, DELTA, sens)
            r = await c.average("vec", elementwise=True, privacy=Privacy(1.0))
            assert r.count == 3 and r.mode == "elementwise"
            assert isinstance(r.average, list) and isinstance(r.total, list) and len(r.average) == 6
            for i in range(6):
                exact = sum(vec[n][i] for n in TRIO)
                noise_within(r.total[i], exact, coins, 2.0 ** e, records=3, what=f"elementwise total [{i}]")
                noise_within(r.average[i], exact / 3, coins, 2.0 ** e, records=3, scale=3, what=f"average [{i}]")
            assert r.noise == expected_report(1.0, DELTA, "joint", sens, 2.0 ** e, scale=3.0)
    env.run(go())
    # An average over records of "recs" (dp_per_element: each a different person's) spends epsilon once; an
    # elementwise one, as one person may move every element of a node's vector, its length times (the owner
    # has not set dp_per_element for "vec").
    for node in TRIO:
        assert [(r.epsilon, r.delta) for r in env.releases(node, "recs")] == [(Decimal("2.0"), dp.decimal(DELTA))]
        assert [(r.epsilon, r.delta) for r in env.releases(node, "vec")] == [
            (6 * Decimal("1.0"), 6 * dp.decimal(DELTA))]


def plain_histogram(values: Sequence[int], edges: Sequence[int]) -> list[int]:
    """Records per bin [e_i, e_(i+1)), the last closed; below the first edge in the first bin, above the
    last in the last."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        index = sum(1 for e in edges[1:-1] if v >= e)
        counts[index] += 1
    return counts


def test_dp_histogram_and_plurality_counts(env: Env) -> None:
    ages = {n: [secrets.randbelow(121) for _ in range(k)] for n, k in zip(TRIO, (20, 9, 14))}
    ages["alice"] += [0, 10, 18, 100, 120]         # edges themselves, and records beyond the first and last
    put_everywhere(env, "ages", ages, bounds=(0, 120))
    edges = [10, 18, 30, 50, 65, 100]
    ballots = {n: [secrets.randbelow(3) for _ in range(k)] for n, k in zip(TRIO, (6, 4, 8))}
    put_everywhere(env, "poll", ballots, kind="options", bounds=(0, 2))
    coins = dp.calibrate(0.5, DELTA / 2, 1)          # each count: one record moves two of them
    assert coins > dp.calibrate(1.0, DELTA, 1)

    async def go() -> None:
        async with env.coordinator() as c:
            r = await c.histogram("ages", edges, privacy=Privacy(1.0))
            exact = plain_histogram([v for vs in ages.values() for v in vs], edges)
            assert sum(exact) == 48 and r.edges == edges and len(r.counts) == 5
            for i, (noisy, count) in enumerate(zip(r.counts, exact)):
                noise_within(noisy, count, coins, 1.0, what=f"bin {i}")
            assert r.noise == expected_count_report(1.0, DELTA, "joint") and r.noise.coins == coins
            assert (r.noise.epsilon, r.noise.delta) == (1.0, DELTA)                   # the release's own
            exact_r = await c.histogram("ages", edges)                       # the exact form, for contrast
            assert exact_r.counts == exact and exact_r.noise is None

            r2 = await c.plurality("poll", 3, privacy=Privacy(1.0))
            exact = [sum(1 for vs in ballots.values() for b in vs if b == k) for k in range(3)]
            assert r2.counts is not None and len(r2.counts) == 3
            for k, (noisy, count) in enumerate(zip(r2.counts, exact)):
                noise_within(noisy, count, coins, 1.0, what=f"option {k}")
            counts = r2.counts
            assert r2.winner == max(range(3), key=lambda k: (counts[k], -k))       # of the noisy counts
            assert r2.noise == expected_count_report(1.0, DELTA, "joint") and r2.noise.coins == coins

            r3 = await c.plurality("poll", 3, privacy=Privacy(1.0, noise="local"))
            assert r3.counts is not None
            for k, (noisy, count) in enumerate(zip(r3.counts, exact)):
                noise_within(noisy, count, 3 * coins, 1.0, what=f"option {k}, local noise")
            assert r3.noise == expected_count_report(1.0, DELTA, "local") and r3.noise.coins == coins
    env.run(go())
    # Counts spend (epsilon, delta) once, however many bins: the two counts a record moves are calibrated for it.
    for node in TRIO:
        assert [(r.epsilon, r.delta) for r in env.releases(node, "ages") if r.epsilon is not None] == [
            (Decimal("1.0"), dp.decimal(DELTA))]
        assert [(r.epsilon, r.delta) for r in env.releases(node, "poll")] == [(Decimal("1.0"), dp.decimal(DELTA))] * 2


# ==== 2. the noise's distribution ==========================================================================


def test_joint_noise_is_binomial_over_real_daemons(env: Env) -> None:
    """A DP sum of a long 0/1 vector (bounds 0..1: unit 1, sensitivity 1) in joint mode: the output
    minus the exact sum is, element by element, an independent draw of Binomial(m, 1/2) - m/2."""
    length, epsilon, delta = 20_000, 2.0, 1e-3
    coins = dp.calibrate(epsilon, delta, 1)
    assert sum_unit([(0, 1)]) == (0, 1)
    bits = {n: np.frombuffer(secrets.token_bytes(length), dtype=np.uint8) & 1 for n in TRIO}
    put_everywhere(env, "coins01", {n: b.astype(np.int64) for n, b in bits.items()}, bounds=(0, 1))

    async def go() -> Any:
        async with env.coordinator() as c:
            return await c.sum("coins01", privacy=Privacy(epsilon, delta))
    r = env.run(go())
    assert r.noise == expected_report(epsilon, delta, "joint", 1, 1.0) and r.noise.coins == coins
    exact = sum(b.astype(np.int64) for b in bits.values())
    samples = np.asarray(r.value, dtype=np.int64) - exact
    assert samples.size == length
    assert_binomial(samples, coins, alpha=STAT_ALPHA)
    for node in TRIO:                  # dp_per_element: one (epsilon, delta) for all 20,000 elements
        assert [(r.epsilon, r.delta) for r in env.releases(node, "coins01")] == [(Decimal("2.0"), Decimal("0.001"))]


# ==== 3. the owner's budget ================================================================================

LEFT = r"has epsilon 0(?:\.0*)? and delta \S+ left of its differential-privacy budget"


async def budget_of(c: Coordinator, name: str) -> dict[str, dict[str, Any]]:
    """Each node's budget of `name`, as Status shows it."""
    out = {}
    for node in await c.status():
        [info] = [i for i in node.inputs if i.name == name]
        assert info.budget is not None, node
        out[node.name] = info.budget
    return out


def test_four_quarter_releases_spend_the_budget_the_fifth_is_refused_and_a_restart_changes_nothing(
        env: Env) -> None:
    values = {n: [secrets.randbelow(2)] for n in TRIO}
    put_everywhere(env, "budget4", values, scalar=True, bounds=(0, 1))
    coins = dp.calibrate(0.25, DELTA, 1)

    async def spend() -> list[str]:
        ids = []
        async with env.coordinator() as c:
            for _ in range(4):
                r = await c.sum("budget4", privacy=Privacy(0.25))
                noise_within(r.value, sum(v[0] for v in values.values()), coins, 1.0, records=0, what="budget4")
                ids.append(r.session_id)
        return ids
    ids = env.run(spend())
    for node in TRIO:
        assert [r.session_id for r in env.releases(node, "budget4")] == ids
        assert env.spent(node, "budget4") == Decimal(1)

    async def refused(releases_before: dict[str, int], epsilon: float) -> None:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.sum("budget4", privacy=Privacy(epsilon))
            budget = await budget_of(c, "budget4")
        assert_refused_before_sharing(env, err.value, "budget4", releases_before,
                                      f"would spend epsilon {dp.decimal(epsilon)}")
        for node in TRIO:                              # every owner refuses, in its own words
            assert re.search(rf"node {node} refused: node {node}: input 'budget4' {LEFT}", str(err.value)), err.value
            assert Decimal(budget[node]["epsilon_spent"]) == 1 and Decimal(budget[node]["epsilon_left"]) == 0
            assert Decimal(budget[node]["epsilon"]) == 1
            assert Decimal(budget[node]["delta_spent"]) == 4 * Decimal("1e-8")
            assert budget[node]["exact_allowed"] is True

    four = {n: 4 for n in TRIO}
    env.run(refused(four, 0.25))
    env.run(refused(four, 0.05))                       # nothing is left, not even for a sliver
    env.run(env.restart_all())                         # the same data directories, new servers
    env.run(refused(four, 0.25))
    run = env.run(mpc("budget", "--node", "bob", "--json", "--cluster", env.cluster_file))
    assert run.code == 0, str(run)
    shown = json.loads(run.stdout)["inputs"]["budget4"]
    assert (Decimal(shown["epsilon_spent"]), Decimal(shown["epsilon_left"])) == (Decimal(1), Decimal(0)), shown


def test_concurrent_sessions_cannot_overspend_together(env: Env) -> None:
    """budget2 holds epsilon 0.5: four sessions of 0.25 at once, at most two go; every refusal names
    the budget; the budget held by refused sessions comes back, so two releases in all fit exactly."""
    put_everywhere(env, "budget2", {n: [1] for n in TRIO}, scalar=True, bounds=(0, 1))

    async def at_once() -> list[Any]:
        async with env.coordinator() as c:
            return await asyncio.gather(*(c.sum("budget2", privacy=Privacy(0.25)) for _ in range(4)),
                                        return_exceptions=True)
    results = env.run(at_once())
    done = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(f, SessionFailed) for f in failed), failed
    assert len(done) <= 2, done
    for f in failed:
        assert "differential-privacy budget" in str(f), f
        session = session_of(f)
        assert session not in env.views.chunks             # no output share left any node
    for node in TRIO:
        recorded = env.releases(node, "budget2")
        assert env.spent(node, "budget2") <= Decimal("0.5"), recorded
        assert {r.session_id for r in done} <= {r.session_id for r in recorded}, node

    async def top_up() -> int:
        extra = 0
        async with env.coordinator() as c:
            for _ in range(3):                             # bounded: at most two more can ever fit
                try:
                    await c.sum("budget2", privacy=Privacy(0.25))
                except SessionFailed as exc:
                    assert re.search(LEFT, str(exc)), exc
                    return extra
                extra += 1
        raise AssertionError("a third release of 0.25 fitted into a budget of 0.5")
    env.run(top_up())
    for node in TRIO:
        assert env.spent(node, "budget2") == Decimal("0.5"), env.releases(node, "budget2")
        assert len(env.releases(node, "budget2")) == 2


def test_ten_releases_of_a_tenth_spend_exactly_one(env: Env) -> None:
    """One coordinator runs the repeats in one round (mpc/coordinator/client.py): the eleventh is
    refused there, before anything is shared, and audited as a refusal exactly as at prepare."""
    put_everywhere(env, "tenth", {n: [0] for n in TRIO}, scalar=True, bounds=(0, 1))

    async def go() -> tuple[dict[str, dict[str, Any]], SessionFailed]:
        async with env.coordinator() as c:
            for _ in range(10):
                await c.sum("tenth", privacy=Privacy(0.1))
            with pytest.raises(SessionFailed) as err:
                await c.sum("tenth", privacy=Privacy(0.1))
            assert re.search(LEFT, str(err.value)), err.value
            return await budget_of(c, "tenth"), err.value
    budget, refusal = env.run(go())
    assert_refused_before_sharing(env, refusal, "tenth", {n: 10 for n in TRIO}, "would spend epsilon 0.1")
    for node in TRIO:
        with env.store(node) as store:                             # and no session row
            assert store.get_session(session_of(refusal)) is None, node
        recorded = env.releases(node, "tenth")
        assert len(recorded) == 10 and all(r.epsilon == Decimal("0.1") for r in recorded), recorded
        assert env.spent(node, "tenth") == Decimal(1)              # exactly: no 0.9999999999999999
        assert Decimal(budget[node]["epsilon_spent"]) == 1 and Decimal(budget[node]["epsilon_left"]) == 0


def test_a_vector_release_spends_its_length_times_epsilon_unless_dp_per_element(env: Env) -> None:
    """One record may be a whole vector (one person's readings): a DP sum of a 5-element vector, or its
    elementwise average, spends 5·(epsilon, delta) by default, recorded and shown by Status; an average
    over its records, or a histogram of them, is refused at prepare by every owner (one noised value adds
    up all five, which one person could then move by five times the sensitivity the noise is calibrated
    for, and no spend makes up for that); with dp_per_element (kvec1) the owner declares each element a
    record of its own and every release spends 1·(epsilon, delta). kvec_budget (epsilon 2): a sum at 0.5
    would spend 2.5, refused at prepare by every owner naming what is left; at 0.4 it spends exactly the 2."""
    vectors = {n: [secrets.randbelow(2) for _ in range(5)] for n in TRIO}
    for name in ("kvec", "kvec1", "kvec_budget"):       # 0..1: sensitivity 1, few coins even at epsilon 0.25
        put_everywhere(env, name, vectors, bounds=(0, 1))
    d = dp.decimal(DELTA)

    async def go() -> dict[str, dict[str, Any]]:
        async with env.coordinator() as c:
            for name in ("kvec", "kvec1"):
                await c.sum(name, privacy=Privacy(0.5))
                await c.average(name, elementwise=True, privacy=Privacy(0.25))
            await c.average("kvec1", privacy=Privacy(0.25))
            await c.histogram("kvec1", [0, 1, 2], privacy=Privacy(0.25))
            return await budget_of(c, "kvec")
    budget = env.run(go())
    for node in TRIO:
        assert [(r.epsilon, r.delta) for r in env.releases(node, "kvec")] == [
            (Decimal("2.5"), 5 * d), (Decimal("1.25"), 5 * d)], node
        assert [(r.epsilon, r.delta) for r in env.releases(node, "kvec1")] == [
            (Decimal("0.5"), d), (Decimal("0.25"), d), (Decimal("0.25"), d), (Decimal("0.25"), d)], node
        assert Decimal(budget[node]["epsilon_spent"]) == Decimal("3.75")
        assert Decimal(budget[node]["delta_spent"]) == 10 * d

    for label, release in (("average", lambda c: c.average("kvec", privacy=Privacy(0.25))),
                           ("histogram", lambda c: c.histogram("kvec", [0, 1, 2], privacy=Privacy(0.25)))):
        async def whole(release: Any = release) -> SessionFailed:
            async with env.coordinator() as c:
                with pytest.raises(SessionFailed) as err:
                    await release(c)
                return err.value
        error = env.run(whole())
        assert_refused_before_sharing(env, error, "kvec", dict.fromkeys(TRIO, 2), *(
            f"node {n} refused: node {n}: a differentially private {label} of 'kvec' adds its values up in one "
            f"noised value, calibrated for one record, and policy says one person may hold them all "
            f"(dp_per_element = false)" for n in TRIO))
        assert "the owner sets dp_per_element if each value is a different person's record" in str(error)
        assert "[PERMISSION_DENIED]" in str(error)
        for node in TRIO:
            assert env.spent(node, "kvec") == Decimal("3.75"), node

    async def over() -> SessionFailed:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.sum("kvec_budget", privacy=Privacy(0.5))
            return err.value
    error = env.run(over())
    assert_refused_before_sharing(env, error, "kvec_budget", dict.fromkeys(TRIO, 0), "would spend epsilon 2.5")
    for node in TRIO:
        assert re.search(rf"node {node} refused: node {node}: input 'kvec_budget' has epsilon 2 and delta \S+ left "
                         rf"of its differential-privacy budget; sum with epsilon 0\.5, delta 1e-08 over "
                         rf"alice,bob,carlos would spend epsilon 2\.5 and delta 5E-8",
                         str(error)), error

    async def fits() -> Any:
        async with env.coordinator() as c:
            return await c.sum("kvec_budget", privacy=Privacy(0.4))
    r = env.run(fits())
    assert isinstance(r.value, list) and len(r.value) == 5
    for node in TRIO:
        assert env.spent(node, "kvec_budget") == Decimal(2), env.releases(node, "kvec_budget")


# ==== 4. the owner's policy ================================================================================


def test_exact_false_refuses_exact_releases_at_prepare_and_allows_dp_ones(env: Env) -> None:
    values = {n: [secrets.randbelow(101)] for n in TRIO}
    put_everywhere(env, "dponly", values, scalar=True, bounds=(0, 100), overwrite=True)   # the CLI test stores it too
    e, sens = sum_unit([(0, 100)])

    async def go() -> None:
        async with env.coordinator() as c:
            for exact in (lambda: c.sum("dponly"), lambda: c.average("dponly"),
                          lambda: c.histogram("dponly", [0, 50, 100])):
                with pytest.raises(SessionFailed) as err:
                    await exact()
                assert_refused_before_sharing(env, err.value, "dponly", dict.fromkeys(TRIO, 0), *(
                    f"node {n}: policy allows only differentially private releases of 'dponly' (exact = false)"
                    for n in TRIO))
            r = await c.sum("dponly", privacy=Privacy(1.0))
            noise_within(r.value, sum(v[0] for v in values.values()), dp.calibrate(1.0, DELTA, sens), 2.0 ** e,
                         records=3, what="dponly")
            h = await c.histogram("dponly", [0, 50, 100], privacy=Privacy(1.0))
            assert h.noise is not None
            assert {n: b["exact_allowed"] for n, b in (await budget_of(c, "dponly")).items()} == dict.fromkeys(
                TRIO, False)
    env.run(go())
    for node in TRIO:
        assert len(env.releases(node, "dponly")) == 2


def test_exact_histograms_need_the_owners_exact_histograms_dp_ones_do_not(env: Env) -> None:
    """hist_default keeps the default exact_histograms (off): an exact histogram (whose fine bins would open
    the values) is refused at prepare by every owner, before anything is shared, saying how to run it; a DP histogram
    goes. hist_exact's owners set exact_histograms: the exact histogram goes."""
    values = {n: [secrets.randbelow(101) for _ in range(6)] for n in TRIO}
    for name in ("hist_default", "hist_exact"):
        put_everywhere(env, name, values, bounds=(0, 100))
    edges = [0, 25, 50, 75, 100]
    exact = plain_histogram([v for vs in values.values() for v in vs], edges)

    async def refused() -> SessionFailed:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.histogram("hist_default", edges)
            return err.value
    error = env.run(refused())
    assert_refused_before_sharing(env, error, "hist_default", dict.fromkeys(TRIO, 0), *(
        f"node {n} refused: node {n}: an exact histogram of 'hist_default' opens how many records fall in each "
        f"bin" for n in TRIO))
    assert "(run it with --epsilon, or the owner sets exact_histograms)" in str(error)
    assert "[PERMISSION_DENIED]" in str(error)

    async def go() -> tuple[Any, Any]:
        async with env.coordinator() as c:
            noisy = await c.histogram("hist_default", edges, privacy=Privacy(1.0))
            return noisy, await c.histogram("hist_exact", edges)
    noisy, allowed = env.run(go())
    assert noisy.noise == expected_count_report(1.0, DELTA, "joint") and len(noisy.counts) == 4
    for i, (count, expected) in enumerate(zip(noisy.counts, exact)):
        noise_within(count, expected, noisy.noise.coins, 1.0, what=f"hist_default bin {i}")
    assert allowed.counts == exact and allowed.noise is None
    for node in TRIO:
        assert [r.epsilon for r in env.releases(node, "hist_default")] == [Decimal("1.0")]
        assert [r.epsilon for r in env.releases(node, "hist_exact")] == [None]


def test_dp_releases_take_no_max_releases_slot(env: Env) -> None:
    """slot1 allows one distinct exact query (max_releases = 1): DP releases before it take no slot,
    the exact sum still goes (and may repeat), a second distinct exact query does not, DP ones still do."""
    values = {n: [secrets.randbelow(101), secrets.randbelow(101)] for n in TRIO}
    put_everywhere(env, "slot1", values, bounds=(0, 100))
    exact = [sum(values[n][i] for n in TRIO) for i in range(2)]

    async def go() -> None:
        async with env.coordinator() as c:
            for _ in range(2):
                await c.sum("slot1", privacy=Privacy(1.0))
            assert (await c.sum("slot1")).value == exact
            assert (await c.sum("slot1")).value == exact          # a repeat is free
            with pytest.raises(SessionFailed) as err:
                await c.histogram("slot1", [0, 50, 100])
            assert "(max_releases)" in str(err.value), err.value
            await c.histogram("slot1", [0, 50, 100], privacy=Privacy(1.0))
    env.run(go())
    for node in TRIO:
        recorded = env.releases(node, "slot1")
        assert [(r.counted, r.epsilon is not None) for r in recorded] == [
            (False, True), (False, True), (True, False), (False, False), (False, True)], recorded


# ==== 5. bad parameters: refused before anything is shared =================================================


def real(value: float) -> mpc_pb2.Param:
    return mpc_pb2.Param(real=value)


BAD_BOUNDS = (0, 1000)            # unit 2^6, sensitivity 16
GOOD_SUM: dict[str, Any] = {"epsilon": real(1.0), "delta": real(DELTA), "coins": dp.calibrate(1.0, DELTA, 16),
                            "sensitivity": 16, "unit": 6}
GOOD_COUNTS: dict[str, Any] = {"epsilon": real(1.0), "delta": real(DELTA),
                               "coins": dp.calibrate(*count_budget(1.0, DELTA), 1), "sensitivity": 1}
INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
NOT_A_COIN_COUNT = ("noise coins are not calibrated for epsilon 1.0, delta 1e-08 at a sensitivity of 16 unit(s): "
                    "too few weaken the guarantee, more than needed waste the output")
NOT_COUNT_COINS = ("noise coins are not calibrated for epsilon 1.0, delta 1e-08 at a sensitivity of 1 unit(s): "
                   "too few weaken the guarantee, more than needed waste the output")
# case -> (protocol, input, parameters, status, words the refusal must contain)
BAD_PARAMS: dict[str, tuple[str, str, dict[str, Any], grpc.StatusCode, str]] = {
    "epsilon_zero": ("sum", "bad", GOOD_SUM | {"epsilon": real(0.0)}, INVALID, "epsilon must lie in (0, 10], got 0.0"),
    "epsilon_negative": ("sum", "bad", GOOD_SUM | {"epsilon": real(-1.0)}, INVALID,
                         "epsilon must lie in (0, 10], got -1.0"),
    "epsilon_nan": ("sum", "bad", GOOD_SUM | {"epsilon": real(math.nan)}, INVALID,
                    "epsilon must be a finite number, got nan"),
    "epsilon_infinite": ("sum", "bad", GOOD_SUM | {"epsilon": real(math.inf)}, INVALID,
                         "epsilon must be a finite number, got inf"),
    "epsilon_huge": ("sum", "bad", GOOD_SUM | {"epsilon": real(10.5)}, INVALID,
                     "epsilon must lie in (0, 10], got 10.5"),
    "epsilon_as_integer": ("sum", "bad", GOOD_SUM | {"epsilon": 1}, INVALID,
                           "parameter 'epsilon' must be a real number"),
    "delta_zero": ("sum", "bad", GOOD_SUM | {"delta": real(0.0)}, INVALID,
                   "delta must lie strictly between 0 and 1, got 0.0"),
    "delta_one": ("sum", "bad", GOOD_SUM | {"delta": real(1.0)}, INVALID,
                  "delta must lie strictly between 0 and 1, got 1.0"),
    "delta_above_one": ("sum", "bad", GOOD_SUM | {"delta": real(1.5)}, INVALID,
                        "delta must lie strictly between 0 and 1, got 1.5"),
    "delta_nan": ("sum", "bad", GOOD_SUM | {"delta": real(math.nan)}, INVALID, "delta must be a finite number"),
    "delta_missing": ("sum", "bad", GOOD_SUM | {"delta": None}, INVALID, "needs delta as well as epsilon"),
    "two_coins": ("sum", "bad", GOOD_SUM | {"coins": 2}, INVALID, f"2 {NOT_A_COIN_COUNT}"),
    "odd_coins": ("sum", "bad", GOOD_SUM | {"coins": GOOD_SUM["coins"] + 1}, INVALID,
                  f"{GOOD_SUM['coins'] + 1} {NOT_A_COIN_COUNT}"),
    "twice_the_coins": ("sum", "bad", GOOD_SUM | {"coins": 2 * GOOD_SUM["coins"]}, INVALID,
                        f"{2 * GOOD_SUM['coins']} {NOT_A_COIN_COUNT}"),
    "counts_calibrated_for_the_whole_budget": (      # one record moves two counts: each needs (eps/2, delta/2)
        "histogram", "bad", GOOD_COUNTS | {"edges": [0, 10], "coins": dp.calibrate(1.0, DELTA, 1)}, INVALID,
        f"{dp.calibrate(1.0, DELTA, 1)} {NOT_COUNT_COINS}"),
    "counts_twice_the_coins": ("plurality", "bad", GOOD_COUNTS | {"options": 3, "coins": 2 * GOOD_COUNTS["coins"]},
                               INVALID, f"{2 * GOOD_COUNTS['coins']} {NOT_COUNT_COINS}"),
    "coins_missing": ("sum", "bad", GOOD_SUM | {"coins": None}, INVALID, "needs its noise's coins and sensitivity"),
    "unit_missing": ("sum", "bad", GOOD_SUM | {"unit": None}, INVALID, "needs a unit exponent within +-64, got None"),
    "sensitivity_below_the_bounds": ("sum", "bad", GOOD_SUM | {"sensitivity": 1, "coins": dp.calibrate(1.0, DELTA, 1)},
                                     PRECONDITION, "moves the sum by up to 16 units of 2^6, more than the session's "
                                                   "sensitivity of 1"),
    "noise_without_epsilon": ("sum", "bad", {"coins": 100, "sensitivity": 1, "unit": 0}, INVALID,
                              "noise parameters without epsilon"),
    "local_noise_without_epsilon": ("average", "bad", {"local_noise": True}, INVALID,
                                    "noise parameters without epsilon"),
    "too_many_joint_coins": ("sum", "badvec", GOOD_SUM, PRECONDITION,
                             f"needs {200 * GOOD_SUM['coins']} daBits, more than a session makes"),
    "histogram_unsorted": ("histogram", "bad", GOOD_COUNTS | {"edges": [0, 50, 20]}, INVALID,
                           "histogram bins must be sorted and must not overlap: edge 3 (20) does not come after "
                           "edge 2 (50)"),
    "histogram_overlapping": ("histogram", "bad", {"edges": [0, 50, 50, 100]}, INVALID,
                              "histogram bins must be sorted and must not overlap: edge 3 (50) does not come after "
                              "edge 2 (50)"),
    "histogram_one_edge": ("histogram", "bad", GOOD_COUNTS | {"edges": [5]}, INVALID,
                           "a histogram needs 2..10001 bin edges (1..10000 bins), got 1"),
    "counts_at_sensitivity_2": ("histogram", "bad", GOOD_COUNTS | {"edges": [0, 10], "sensitivity": 2,
                                                                   "coins": dp.calibrate(1.0, DELTA, 2)},
                                INVALID, "one record moves them by 1 (sensitivity 1, no unit), got sensitivity 2"),
    "counts_with_a_unit": ("histogram", "bad", GOOD_COUNTS | {"edges": [0, 10], "unit": 3}, INVALID,
                           "(sensitivity 1, no unit), got sensitivity 1 and unit 3"),
    "undeclared_bounds": ("sum", "nobounds", GOOD_SUM, PRECONDITION,
                          "input 'nobounds' at node {node} declares no bounds"),
    "undeclared_bounds_histogram": ("histogram", "nobounds", {"edges": [0, 10]}, PRECONDITION,
                                    "input 'nobounds' at node {node} declares no bounds"),
    "a_yes_no_vote_has_no_epsilon": ("vote", "bad", {"epsilon": real(1.0)}, INVALID,
                                     "protocol vote takes no parameter 'epsilon'"),
    "plurality_winner_alone": ("plurality", "bad", GOOD_COUNTS | {"options": 3, "winner_only": True}, INVALID,
                               "a plurality vote's winner alone has no differentially private form"),
}


def store_without_bounds(env: Env, node: str, name: str, values: Sequence[int]) -> None:
    """An input as an older mpc stored it, with no declared bounds (the store's migration leaves them
    NULL; today's put always declares some): stored, then its declaration cleared in the node's SQLite file."""
    env.lc.put(node, name, values, overwrite=True)
    data_dir = env.lc.cluster.node(node).data_dir
    assert data_dir is not None
    conn = sqlite3.connect(Path(data_dir) / STORE_FILE, timeout=10)
    try:
        with conn:
            conn.execute("UPDATE input_meta SET lo = NULL, hi = NULL WHERE name = ?", (name,))
    finally:
        conn.close()
    with env.store(node) as store:
        assert store.get_input(name).bounds is None


@pytest.fixture(scope="module")
def bad_inputs(env: Env) -> None:
    for node in TRIO:
        env.lc.put(node, "bad", [secrets.randbelow(1001)], scalar=True, bounds=BAD_BOUNDS)
        env.lc.put(node, "badvec", [secrets.randbelow(1001) for _ in range(200)], bounds=BAD_BOUNDS)
        store_without_bounds(env, node, "nobounds", [1, 2, 3])


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_a_node_refuses_bad_dp_parameters_at_prepare(env: Env, bad_inputs: None, case: str) -> None:
    protocol, name, params, code, words = BAD_PARAMS[case]
    before_peer = env.lc.recorder.counts()
    releases = {n: len(env.releases(n, name)) for n in TRIO}

    async def go() -> str:
        session = secrets.token_hex(16)
        request = prepare_request(session, protocol, name, list(TRIO), params=params)
        for node in TRIO:
            async with control(env.lc, node) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Prepare(request, timeout=CALL_TIMEOUT)
            assert err.value.code() == code, (node, err.value)
            assert words.format(node=node) in (err.value.details() or ""), (node, err.value.details())
        async with env.coordinator() as c:
            assert {s.name: s.active_sessions for s in await c.status()} == dict.fromkeys(TRIO, 0)
        return session
    session = env.run(go())
    assert env.lc.recorder.counts() == before_peer
    assert session not in env.views.chunks
    for node in TRIO:
        [entry] = env.audit(node, session)
        assert entry.outcome == "refused" and entry.sent == (), entry
        assert words.format(node=node) in entry.reason, entry
        assert len(env.releases(node, name)) == releases[node]


COORDINATOR_REFUSALS: dict[str, tuple[Privacy, str]] = {
    "epsilon_zero": (Privacy(0.0), "epsilon must lie in (0, 10], got 0.0"),
    "epsilon_negative": (Privacy(-0.5), "epsilon must lie in (0, 10], got -0.5"),
    "epsilon_nan": (Privacy(math.nan), "epsilon must be a finite number, got nan"),
    "epsilon_huge": (Privacy(11.0), "epsilon must lie in (0, 10], got 11.0"),
    "epsilon_text": (Privacy("1"), "epsilon must be a finite number, got 1"),     # type: ignore[arg-type]
    "delta_zero": (Privacy(1.0, 0.0), "delta must lie strictly between 0 and 1, got 0.0"),
    "delta_one": (Privacy(1.0, 1.0), "delta must lie strictly between 0 and 1, got 1.0"),
    "delta_infinite": (Privacy(1.0, math.inf), "delta must be a finite number, got inf"),
    "noise_mode": (Privacy(1.0, noise="central"), "noise must be one of joint, local, got 'central'"),
}


def test_the_coordinator_refuses_bad_privacy_before_asking_any_node(env: Env, bad_inputs: None) -> None:
    audits = {n: env.audit_size(n) for n in TRIO}
    before_peer = env.lc.recorder.counts()
    before_views = set(env.views.chunks)

    async def go() -> None:
        async with env.coordinator() as c:
            for privacy, words in COORDINATOR_REFUSALS.values():
                with pytest.raises(InputError, match=re.escape(words)):
                    privacy.check()
                for call in (lambda: c.sum("bad", privacy=privacy), lambda: c.average("bad", privacy=privacy),
                             lambda: c.histogram("bad", [0, 10], privacy=privacy),
                             lambda: c.plurality("bad", 3, privacy=privacy)):
                    with pytest.raises(InputError, match=re.escape(words)):
                        await call()
            for edges in ([0, 50, 20], [0, 50, 50], [7]):
                with pytest.raises(InputError, match="histogram"):
                    await c.histogram("bad", edges, privacy=Privacy(1.0))
            with pytest.raises(InputError, match="input 'nobounds' at node alice declares no bounds"):
                await c.sum("nobounds", privacy=Privacy(1.0))
    env.run(go())
    assert {n: env.audit_size(n) for n in TRIO} == audits            # no node was asked for a session
    assert env.lc.recorder.counts() == before_peer
    assert set(env.views.chunks) == before_views


# ==== 6. what every party receives in a DP session ========================================================

VIEW_LENGTH = 128
VIEW_PRIVACY = Privacy(5.0, 1e-3)


def distinctive() -> int:
    """A value in [2^56, 2^62) none of whose 8 bytes is zero: its encoding cannot turn up by accident in a
    header, a length or a small number."""
    while True:
        v = (1 << 56) + secrets.randbelow((1 << 62) - (1 << 56))
        if all(v >> (8 * k) & 0xFF for k in range(8)):
            return v


def expected_view(receiver: str, parties: Sequence[str], dabits: int, keyed: bool = False) -> dict[tuple[str, str], int]:
    """(sender, step) -> payload bytes of every message `receiver` gets in a joint-noise DP sum whose OT
    setups already exist (mpc/protocols/compute.py; PROTOCOLS.md §1, §8, §10), hellos aside: the digest of
    the session description from every peer; a seed from every earlier party (the masked sum of the
    contributions); the IKNP message of every peer that chooses OTs (all but the first party: one per
    daBit); from every peer the corrections of the receiver's own fold (all but the first party: one word
    per daBit). No triples, and no opening: the noise is never opened. A keyed session (mpc/protocols/pairing.py)
    has no seeds: the rest is the same."""
    me = parties.index(receiver)
    iknp = 16 + KAPPA * (-(-dabits // KAPPA) * KAPPA) // 8
    out = {}
    for k, sender in enumerate(parties):
        if sender == receiver:
            continue
        out[(sender, STEP_DIGEST)] = DIGEST_BYTES
        if k < me and not keyed:
            out[(sender, STEP_SEED)] = 24
        if k >= 1:
            out[(sender, ARITH_U)] = iknp
        if me >= 1:
            out[(sender, fold_step(me))] = 8 * dabits
    return out


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_a_dp_session_shows_each_party_only_what_the_protocol_fixes(env: Env, keyed: bool) -> None:
    secret = {n: [distinctive() for _ in range(VIEW_LENGTH)] for n in TRIO}
    bounds = (0, (1 << 62) - 1)
    secret_name, warm_name = f"secret_{'keyed' if keyed else 'unkeyed'}", f"warm_{'keyed' if keyed else 'unkeyed'}"
    put_everywhere(env, secret_name, secret, bounds=bounds)
    put_everywhere(env, warm_name, {n: [1] for n in TRIO}, scalar=True, bounds=(0, 1))
    e, sens = sum_unit([bounds])
    assert (e, sens) == (58, 16)
    coins = dp.calibrate(VIEW_PRIVACY.epsilon, VIEW_PRIVACY.delta, sens)

    async def go() -> Any:
        async with env.coordinator(keyed=keyed) as c:
            await c.sum(warm_name, privacy=VIEW_PRIVACY)   # OT setups and pair keys for every pair, if none are left
            return await c.sum(secret_name, privacy=VIEW_PRIVACY)
    r = env.run(go())
    session = r.session_id
    assert r.noise == expected_report(VIEW_PRIVACY.epsilon, VIEW_PRIVACY.delta, "joint", sens, 2.0 ** e)
    needles = {(owner, i): v.to_bytes(8, "little") for owner, vs in secret.items() for i, v in enumerate(vs)}

    # What the nodes received: exactly the protocol's messages, none holding any input's encoding.
    digests = set()
    for node in TRIO:
        got = env.received(node, session)
        hellos = [(s, p) for s, st, p in got if st == STEP_HELLO]
        assert sorted(s for s, _ in hellos) == sorted(set(TRIO) - {node}), hellos
        for _, p in hellos:   # setup ids (reused: some), and no pool: this module's nodes keep none
            hello = parse_session_hello(p, "hello")
            assert hello.setups and not hello.reserved and not hello.holdings, hellos
        rest = {(s, st): len(p) for s, st, p in got if st != STEP_HELLO}
        assert len(rest) == len(got) - len(hellos), "a message came twice"
        assert rest == expected_view(node, TRIO, coins * VIEW_LENGTH, keyed), (node, sorted(rest.items()))
        digests |= {p for _, st, p in got if st == STEP_DIGEST}
        for sender, step, payload in got:
            for (owner, i), needle in needles.items():
                assert needle not in payload, f"{owner}'s value {i} in {step} from {sender} to {node}"
    assert len(digests) == 1                              # the public session description, the same everywhere

    # What the coordinator received: one share per node, each uniform alone, none holding an input;
    # their sum is the noisy output and nothing else.
    shares = {n: env.views.share(session, n) for n in TRIO}
    assert set(env.views.chunks[session]) == set(TRIO)
    total = np.zeros(VIEW_LENGTH, dtype=np.uint64)
    for node, share in shares.items():
        assert len(share) == 8 * VIEW_LENGTH, node
        for (owner, i), needle in needles.items():
            assert needle not in share, f"{owner}'s value {i} in {node}'s output share"
        words = words_of(share)
        assert int(words.min()) >= 1 << 20, f"{node}'s share holds a small word"   # P < 3 * 128 * 2^-44 if uniform
        bits = bits_of(share)
        band = hoeffding_band(bits.size, BALANCE_ALPHA)
        assert abs(int(bits.sum()) - bits.size / 2) < band, f"{node}'s share: {int(bits.sum())} ones of {bits.size}"
        total += words
    assert [int(w) << e for w in to_signed(total)] == r.value       # only the noisy output is reconstructed
    for i in range(VIEW_LENGTH):
        noise_within(r.value[i], sum(secret[n][i] for n in TRIO), coins, 2.0 ** e, records=3, what=f"secret [{i}]")


# ==== 7. the command line ==================================================================================

NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def noise_line(text: str) -> re.Match[str]:
    found = re.search(rf"differentially private: epsilon (?P<eps>{NUMBER}), delta (?P<delta>{NUMBER}); "
                      rf"(?P<mode>joint|local) binomial noise with std (?P<std>{NUMBER}) \(a trusted curator's: "
                      rf"(?P<central>{NUMBER})\); 95% of the noise within \+-(?P<interval>{NUMBER})", text)
    assert found, text
    return found


def test_the_cli_prints_noisy_results_their_noise_and_the_budget(env: Env) -> None:
    cli_ages = {n: [secrets.randbelow(101) for _ in range(k)] for n, k in zip(TRIO, (8, 5, 11))}
    put_everywhere(env, "cli_ages", cli_ages, bounds=(0, 100))
    cli_budget = {n: [secrets.randbelow(2)] for n in TRIO}
    put_everywhere(env, "cli_budget", cli_budget, scalar=True, bounds=(0, 1))
    poll = {n: [secrets.randbelow(3) for _ in range(5)] for n in TRIO}
    put_everywhere(env, "cli_poll", poll, kind="options", bounds=(0, 2))
    put_everywhere(env, "dponly", {n: [1] for n in TRIO}, scalar=True, bounds=(0, 100), overwrite=True)
    f = env.cluster_file
    counts_coins = dp.calibrate(0.5, DELTA / 2, 1)      # a histogram's or a vote's counts (two move per record)
    sum_coins = dp.calibrate(1.0, DELTA, 1)             # cli_budget's sum: 0..1, sensitivity 1

    # mpc histogram --epsilon: one line per bin, then the noise.
    run = env.run(mpc("histogram", "cli_ages", "--bins", "0,50,100", "--epsilon", "1", "--cluster", f))
    assert run.code == 0 and "Traceback" not in run.stderr, str(run)
    exact = plain_histogram([v for vs in cli_ages.values() for v in vs], [0, 50, 100])
    lines = run.stdout.splitlines()
    for line, label, count in zip(lines, ("[0, 50)", "[50, 100]"), exact):
        assert line.startswith(f"{label}: "), run.stdout
        noise_within(int(line.split(": ")[1]), count, counts_coins, 1.0, what=f"cli bin {label}")
    report = expected_count_report(1.0, DELTA, "joint")
    shown = noise_line(run.stdout)
    assert (shown["eps"], shown["delta"], shown["mode"]) == ("1", "1e-08", "joint"), run.stdout
    assert float(shown["std"]) == pytest.approx(report.std, rel=1e-3)
    assert float(shown["central"]) == pytest.approx(report.central_std, rel=1e-3)
    assert float(shown["interval"]) == report.interval

    # mpc sum --epsilon: the value with its 95% interval, then the noise; --json has the report.
    run = env.run(mpc("sum", "cli_budget", "--epsilon", "1", "--cluster", f))
    assert run.code == 0, str(run)
    first = run.stdout.splitlines()[0]
    found = re.fullmatch(rf"(?P<value>{NUMBER}) \+- (?P<interval>{NUMBER}) \(95%\)", first)
    assert found, run.stdout
    noise_within(float(found["value"]), sum(v[0] for v in cli_budget.values()), sum_coins, 1.0, what="cli sum")
    assert noise_line(run.stdout)["mode"] == "joint"
    run = env.run(mpc("sum", "cli_budget", "--epsilon", "1", "--noise", "local", "--json", "--cluster", f))
    assert run.code == 0, str(run)
    out = json.loads(run.stdout)
    assert out["noise"] == json.loads(json.dumps(expected_report(1.0, DELTA, "local", 1, 1.0).as_dict())), out
    noise_within(out["sum"], sum(v[0] for v in cli_budget.values()), 3 * sum_coins, 1.0, what="cli local sum")

    # mpc vote --options --epsilon: noisy counts per option.
    run = env.run(mpc("vote", "cli_poll", "--options", "A,B,C", "--epsilon", "1", "--cluster", f))
    assert run.code == 0, str(run)
    for option, k in zip("ABC", range(3)):
        found = re.search(rf"^{option}: (-?\d+)$", run.stdout, re.M)
        assert found, run.stdout
        noise_within(int(found[1]), sum(1 for vs in poll.values() for b in vs if b == k), counts_coins, 1.0,
                     what=f"cli option {option}")
    noise_line(run.stdout)

    # mpc budget --node: what cli_budget's two releases of epsilon 1 spent of its 3, and dponly's rule.
    run = env.run(mpc("budget", "--node", "carlos", "--cluster", f))
    assert run.code == 0, str(run)
    assert re.search(r"input\s+epsilon spent\s+left\s+delta spent\s+left\s+exact releases", run.stdout), run.stdout
    assert re.search(r"^cli_budget\s+2\.0\s+1\.0\s+2E-8\s+0\.49999998\s+allowed$", run.stdout, re.M), run.stdout
    assert re.search(r"^dponly\s+.*refused \(DP only\)$", run.stdout, re.M), run.stdout
    run = env.run(mpc("budget", "--node", "carlos", "--json", "--cluster", f))
    budget = json.loads(run.stdout)
    assert budget["node"] == "carlos"
    assert (Decimal(budget["inputs"]["cli_budget"]["epsilon_spent"]),
            Decimal(budget["inputs"]["cli_budget"]["epsilon_left"])) == (Decimal(2), Decimal(1)), budget

    # mpc status: what is left, per input.
    run = env.run(mpc("status", "--cluster", f))
    assert run.code == 0, str(run)
    for node in TRIO:
        line = next(x for x in run.stdout.splitlines() if x.startswith(node))
        assert re.search(r"cli_budget v\d+ \(0\.\.1, epsilon left 1\.0\)", line), line
        assert re.search(r"cli_poll\[options\] v\d+ \(epsilon left 999\.0\)", line), line

    # mpc sum --epsilon 0: refused before any node is asked, naming epsilon.
    audits = {n: env.audit_size(n) for n in TRIO}
    run = env.run(mpc("sum", "cli_budget", "--epsilon", "0", "--cluster", f))
    assert run.code != 0 and "Traceback" not in run.stderr, str(run)
    assert "epsilon must lie in (0, 10], got 0.0" in run.stderr and not run.stdout, str(run)
    run = env.run(mpc("sum", "cli_budget", "--delta", "1e-9", "--cluster", f))
    assert run.code != 0 and "--delta and --noise need --epsilon" in run.stderr, str(run)
    assert {n: env.audit_size(n) for n in TRIO} == audits
