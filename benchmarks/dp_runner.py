"""Differentially private releases against mpc's own exact computation, on the same running nodes.

Every node is a separate `mpc node` process on 127.0.0.1 with mutual TLS, the coordinator in this
process (as benchmarks/mpc_runner.py). MPyC has no DP noise built in, so each DP release is timed
beside the exact release of the same input on the same nodes (`Coordinator.sum/average/histogram`
without `privacy`).

Per row: first_s is the first DP session on fresh nodes (with joint noise it also runs the base OTs
of every pair, which the nodes keep for their lifetime); dp_s and exact_s are medians of `repeats`
later DP and exact sessions, run alternately (exact, DP, exact, DP, ...) after one untimed exact
warm-up, so both see the same machine load. A DP session includes the coordinator's Status round
(the nodes' declared bounds choose a sum's unit and sensitivity) and, with joint noise, the daBits
of m coins per noised word (mpc/protocols/noise.py).

The cluster is written with a generous policy (POLICY) for every input: the default allows one
distinct exact query per input version and an epsilon budget of 1, and a benchmark repeats both.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpc import dp
from mpc import aio
from mpc.coordinator.client import Coordinator, Privacy
from mpc.dp import NoiseReport
from mpc.errors import MpcError
from mpc.localcluster import NodeProcesses, write_local_cluster

from benchmarks.mpc_runner import NAMES, RAISES, _cpu_delta, _cpu_s, _Running, node_stores, running_nodes

EPSILON = 1.0
# The owner's rules for every input of the benchmark cluster: many releases, a large DP budget.
# dp_per_element: the vector rows stand for counters kept per item (a different record in each
# element), so a release spends (epsilon, delta) once, not once per element; exact_histograms: the
# exact histogram the DP one is compared with.
POLICY = ('epsilon = 1000\ndelta = 0.5\nmax_releases = 1000\nparticipants = "any"\ndp_per_element = true\n'
          'exact_histograms = true')
SESSION_TIMEOUT_S = 300.0
# A DP output is accepted when it lies within this many noise standard deviations of the exact one
# (plus the rounding to the session's unit): a binomial's tail beyond 6 std is below 1e-8 per value.
TAIL_STDS = 6.0


@dataclass(frozen=True, slots=True)
class Stored:
    """One input as stored at every node: a value array per node, its declared bounds, scalar or not."""

    per_node: Sequence[np.ndarray]
    bounds: tuple[int, int]
    scalar: bool = False


def _write_cluster(work: Path, names: Sequence[str], inputs: Mapping[str, Stored]) -> Path:
    """A local cluster file with POLICY at every node and `inputs[name].per_node[i]` stored at names[i]."""
    cluster_file = write_local_cluster(work, names, session_timeout_s=SESSION_TIMEOUT_S, every_policy=POLICY)
    for i, store in node_stores(cluster_file, names):
        with store:
            for input_name, stored in inputs.items():
                store.put_input(input_name, np.asarray(stored.per_node[i], dtype=np.int64), 0, stored.scalar,
                                bounds=stored.bounds)
    return cluster_file


def _running(names: Sequence[str], inputs: Mapping[str, Stored]) -> AbstractContextManager[_Running]:
    """Node processes holding `inputs`, in a temporary directory; stopped (by PID) on exit."""
    return running_nodes(names, lambda work: _write_cluster(work, names, inputs))


Values = np.ndarray                     # a release's output as float64, one entry per released value
Exact = Callable[[Coordinator], Awaitable[Values]]
Private = Callable[[Coordinator], Awaitable[tuple[Values, NoiseReport]]]


async def _timed(nodes: NodeProcesses, call: Callable[[], Awaitable[Any]]) -> tuple[float, float | None, Any]:
    before = _cpu_s(nodes)
    start = time.perf_counter()
    out = await call()
    return time.perf_counter() - start, _cpu_delta(before, _cpu_s(nodes)), out


async def _compare(coordinator: Coordinator, nodes: NodeProcesses, exact: Exact, private: Private,
                   expected: Values, rounding: Callable[[NoiseReport], float], repeats: int) -> dict[str, Any]:
    """The first DP session, one exact warm-up, then `repeats` pairs (exact, DP); every output checked.

    ok: every exact output equals `expected`, and every DP output lies within TAIL_STDS noise std
    plus `rounding` of it. measured_std: the standard deviation of DP − exact over every released
    value of every DP session (None below 100 values).
    """
    first_s, first_cpu, (out, report) = await _timed(nodes, lambda: private(coordinator))
    exact_first_s, _, exact_out = await _timed(nodes, lambda: exact(coordinator))
    exact_ok = bool(np.array_equal(exact_out, expected))
    dp_outs = [out]
    exact_times: list[float] = []
    dp_times: list[float] = []
    exact_cpu: list[float] = []
    dp_cpu: list[float] = []
    for _ in range(repeats):
        t, c, exact_out = await _timed(nodes, lambda: exact(coordinator))
        exact_times.append(t)
        exact_cpu += [] if c is None else [c]
        exact_ok &= bool(np.array_equal(exact_out, expected))
        t, c, (out, report) = await _timed(nodes, lambda: private(coordinator))
        dp_times.append(t)
        dp_cpu += [] if c is None else [c]
        dp_outs.append(out)
    errors = np.concatenate([o - expected for o in dp_outs])
    bound = TAIL_STDS * report.std + rounding(report)
    worst = float(np.max(np.abs(errors)))
    return {"first_s": first_s, "first_cpu_s": first_cpu, "exact_first_s": exact_first_s,
            "exact_s": statistics.median(exact_times), "dp_s": statistics.median(dp_times),
            "exact_cpu_s": statistics.median(exact_cpu) if exact_cpu else None,
            "dp_cpu_s": statistics.median(dp_cpu) if dp_cpu else None,
            "exact_times": exact_times, "dp_times": dp_times, "repeats": repeats,
            "coins": report.coins, "sensitivity": report.sensitivity, "unit": report.unit, "mode": report.mode,
            "std": report.std, "central_std": report.central_std, "std_ratio": report.std / report.central_std,
            "interval95": report.interval, "bound": bound, "worst_error": worst,
            "measured_std": float(np.std(errors)) if errors.size >= 100 else None, "samples": int(errors.size),
            "exact_ok": exact_ok, "within_bound": worst <= bound, "ok": exact_ok and worst <= bound}


def _finish(row: dict[str, Any], noised: int, run: _Running) -> dict[str, Any]:
    row["noised"] = noised
    row["extra_per_element_s"] = (row["dp_s"] - row["exact_s"]) / noised
    row["nodes_up_s"] = run.stopped - run.started
    return row


# --------------------------------------------------------------------------- the cases

def average_case(repeats: int = 5) -> dict[str, Any]:
    """A DP average of one value per node (the raises, bounds 0..10000), epsilon 1, joint noise."""
    names = NAMES[:3]
    values = [np.array([r], dtype=np.int64) for r in RAISES[:3]]
    expected = np.array([sum(RAISES[:3]) / 3])

    async def exact(c: Coordinator) -> Values:
        return np.array([(await c.average("raise")).average], dtype=np.float64)

    async def private(c: Coordinator) -> tuple[Values, NoiseReport]:
        r = await c.average("raise", privacy=Privacy(EPSILON))
        assert r.noise is not None
        return np.array([r.average], dtype=np.float64), r.noise

    # Each node's value is rounded to the unit at random (by less than one unit): n units over n records.
    def rounding(report: NoiseReport) -> float:
        return report.unit * len(names) / len(names)

    with _running(names, {"raise": Stored(values, (0, 10_000), scalar=True)}) as run:
        async def go() -> dict[str, Any]:
            async with Coordinator(run.cluster) as c:
                return await _compare(c, run.nodes, exact, private, expected, rounding, repeats)
        row = aio.run(go())
    return _finish(row, 1, run) | {"case": "average", "bounds": (0, 10_000)}


def histogram_records(parties: int, records: int) -> list[np.ndarray]:
    """Deterministic integer records in 0..999, `records` per node."""
    j = np.arange(records, dtype=np.int64)
    return [(j * 7919 + (i + 1) * 104_729 + (j * j) % 97) % 1000 for i in range(parties)]


def histogram_case(records: int = 1000, bins: int = 100, repeats: int = 5) -> dict[str, Any]:
    """A DP histogram of `bins` equal bins over 0..1000 of `records` records per node, epsilon 1, joint noise."""
    names = NAMES[:3]
    split = histogram_records(len(names), records)
    edges = [i * (1000 // bins) for i in range(bins + 1)]
    expected = np.histogram(np.concatenate(split), bins=edges)[0].astype(np.float64)

    async def exact(c: Coordinator) -> Values:
        return np.array((await c.histogram("records", edges)).counts, dtype=np.float64)

    async def private(c: Coordinator) -> tuple[Values, NoiseReport]:
        r = await c.histogram("records", edges, privacy=Privacy(EPSILON))
        assert r.noise is not None
        return np.array(r.counts, dtype=np.float64), r.noise

    with _running(names, {"records": Stored(split, (0, 999))}) as run:
        async def go() -> dict[str, Any]:
            async with Coordinator(run.cluster) as c:
                return await _compare(c, run.nodes, exact, private, expected, lambda _: 0.0, repeats)
        row = aio.run(go())
    return _finish(row, bins, run) | {"case": "histogram", "records": records, "bins": bins}


def vector_values(parties: int, length: int, top: int) -> list[np.ndarray]:
    """Deterministic integers in 0..top, `length` per node."""
    j = np.arange(length, dtype=np.int64)
    return [(j * 2_654_435_761 + (i + 1) * 1_000_003) % (top + 1) for i in range(parties)]


def vector_cases(length: int = 10_000, top: int = 15, joint_top: int = 1, repeats: int = 3) -> dict[str, Any]:
    """A DP sum of a `length`-element vector at epsilon 1, on one set of nodes:

    refused: joint noise with bounds 0..top (expected to exceed dp.MAX_JOINT_COINS; the message);
    joint: joint noise on values in 0..joint_top declared so (the bounds for which joint fits);
    local: local noise on the values in 0..top;
    local-narrow: local noise on the joint row's input (the same m: joint against local at equal coins).
    Each beside the exact sum of the same input.

    Returns: {"refused": {...}, "joint": row, "local": row, "local-narrow": row, "budget_spent": {...}}.
    """
    names = NAMES[:3]
    wide = vector_values(len(names), length, top)
    narrow = vector_values(len(names), length, joint_top)
    inputs = {"wide": Stored(wide, (0, top)), "narrow": Stored(narrow, (0, joint_top))}

    def summer(name: str, noise: str) -> tuple[Exact, Private]:
        async def exact(c: Coordinator) -> Values:
            return np.asarray((await c.sum(name)).value, dtype=np.float64)

        async def private(c: Coordinator) -> tuple[Values, NoiseReport]:
            r = await c.sum(name, privacy=Privacy(EPSILON, noise=noise))
            assert r.noise is not None
            return np.asarray(r.value, dtype=np.float64), r.noise
        return exact, private

    out: dict[str, Any] = {}
    with _running(names, inputs) as run:
        async def go() -> None:
            async with Coordinator(run.cluster) as c:
                # Joint noise at bounds 0..top: what a session would need, and what the nodes say.
                coins = dp.calibrate(EPSILON, 1e-8, dp.choose_unit((0, top), 0)[1])  # type: ignore[arg-type]
                refused: dict[str, Any] = {"bounds": (0, top), "coins": coins, "daBits": coins * length,
                                           "limit": dp.MAX_JOINT_COINS}
                start = time.perf_counter()
                try:
                    await c.sum("wide", privacy=Privacy(EPSILON))
                    refused |= {"refused": False, "error": ""}
                except MpcError as exc:
                    refused |= {"refused": True, "error": f"{type(exc).__name__}: {exc}",
                                "reason": _first_reason(str(exc))}
                refused["s"] = time.perf_counter() - start
                out["refused"] = refused
                # The joint row first: its first session pays the base OTs of every pair.
                for key, name, noise, top_ in (("joint", "narrow", "joint", joint_top), ("local", "wide", "local", top),
                                               ("local-narrow", "narrow", "local", joint_top)):
                    exact, private = summer(name, noise)
                    expected = np.sum([v.astype(np.float64) for v in (narrow if name == "narrow" else wide)], axis=0)
                    # Integers at unit 2^0: no rounding.
                    out[key] = await _compare(c, run.nodes, exact, private, expected, lambda _: 0.0, repeats)
                    out[key] |= {"case": f"sum-{key}", "bounds": (0, top_), "length": length}
                status = await c.status()
                out["budget_spent"] = {n.name: {i.name: (i.budget or {}).get("epsilon_spent") for i in n.inputs}
                                       for n in status}
        aio.run(go())
    for key in ("joint", "local", "local-narrow"):
        _finish(out[key], length, run)
    return out


def _first_reason(message: str) -> str:
    """The first node's reason in a SessionFailed message ("...: node alice refused: REASON; node bob ...")."""
    _, sep, rest = message.partition(" refused: ")
    return rest.split("; node ", 1)[0] if sep else message


def run_dp(repeats: int = 9, vector_repeats: int = 7, length: int = 10_000) -> dict[str, Any]:
    """Every DP case. Returns: {"average", "histogram", "sum-joint", "sum-local", "sum-local-narrow", "refused",
    "budget_spent"}."""
    vector = vector_cases(length, repeats=vector_repeats)
    return {"average": average_case(repeats), "histogram": histogram_case(repeats=repeats),
            "sum-joint": vector["joint"], "sum-local": vector["local"], "sum-local-narrow": vector["local-narrow"],
            "refused": vector["refused"],
            "budget_spent": vector["budget_spent"]}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def _per_coin_ns(r: Mapping[str, Any]) -> float:
    return float((r["dp_s"] - r["exact_s"]) / (r["noised"] * r["coins"]) * 1e9)


def dp_table(results: Mapping[str, Any], parties: int = 3) -> tuple[list[str], list[str]]:
    """The Markdown rows and the notes lines of the DP benchmark.

    Returns: (header + rows, notes).
    """
    rows = ["| case (3 parties, epsilon = 1, delta = 1e-8) | noise | exact compute (s) | DP compute (s) "
            "| DP first session (s) | noised values | coins m per value | (DP - exact) per value (us) "
            "| (DP - exact) per coin (ns) | noise std | central std | ratio | measured std "
            "| max abs(DP - exact) <= bound | correct |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"average": "average of 1 value per node (raises, bounds 0..10000)",
             "histogram": f"histogram, {results['histogram']['records']:,} records per node in 0..999, "
                          f"{results['histogram']['bins']} bins",
             "sum-joint": f"sum of a {results['sum-joint']['length']:,}-element vector, values and bounds "
                          f"{results['sum-joint']['bounds'][0]}..{results['sum-joint']['bounds'][1]}",
             "sum-local": f"sum of a {results['sum-local']['length']:,}-element vector, values and bounds "
                          f"{results['sum-local']['bounds'][0]}..{results['sum-local']['bounds'][1]}",
             "sum-local-narrow": f"sum of a {results['sum-local-narrow']['length']:,}-element vector, values and "
                                 f"bounds {results['sum-local-narrow']['bounds'][0]}.."
                                 f"{results['sum-local-narrow']['bounds'][1]} (extra: local at the joint row's m)"}
    for key, name in names.items():
        r = results[key]
        measured = "-" if r["measured_std"] is None else f"{r['measured_std']:.2f} ({r['samples']:,} values)"
        rows.append(f"| {name} | {r['mode']} | {r['exact_s']:.4f} | {r['dp_s']:.4f} | {r['first_s']:.2f} "
                    f"| {r['noised']:,} | {r['coins']:,} | {_us(r['extra_per_element_s'])} | {_per_coin_ns(r):,.1f} "
                    f"| {r['std']:.3g} | {r['central_std']:.3g} | {r['std_ratio']:.2f} | {measured} "
                    f"| {r['worst_error']:.3g} <= {r['bound']:.3g} | {'ok' if r['ok'] else 'NO'} |")
    refused = results["refused"]
    lo, hi = refused["bounds"]
    rows.append(f"| sum of a {results['sum-local']['length']:,}-element vector, bounds {lo}..{hi} | joint "
                f"| - | {'refused' if refused['refused'] else 'NOT refused'} in {refused['s']:.3f} s | - "
                f"| {results['sum-local']['length']:,} | {refused['coins']:,} | - | - | - | - | - | - | - "
                f"| {'ok (refused, as it must be)' if refused['refused'] else 'NO'} |")

    notes = ["- DP rows: MPyC has no differentially private noise built in, so these rows compare mpc's DP "
             "release against mpc's own exact computation of the same input on the same running nodes, "
             "not against MPyC.",
             f"- times: medians of {results['average']['repeats']} (average, histogram) and "
             f"{results['sum-joint']['repeats']} (vector sums) later sessions, exact and DP alternately, after the "
             "first DP session on fresh nodes (in which joint noise also runs the base OTs of every pair) and one "
             "exact warm-up; a DP session also includes the coordinator's Status round for the bounds.",
             f"- correct: every exact output equals the plaintext, and every DP value lies within "
             f"{TAIL_STDS:g} noise std (+ the rounding to the sum's unit: n units over the count for the average, "
             f"none for integer sums at unit 1 and for counts) of the exact one; measured std: std of DP - exact "
             f"over every released value of every DP session."]
    for key in ("average", "histogram", "sum-joint", "sum-local", "sum-local-narrow"):
        r = results[key]
        cpu = ""
        if r["dp_cpu_s"] is not None and r["exact_cpu_s"] is not None:
            cpu = f"; CPU of the 3 nodes per session: DP {r['dp_cpu_s']:.2f} s, exact {r['exact_cpu_s']:.2f} s"
        notes.append(f"- {key}: sensitivity {r['sensitivity']} unit(s) of {r['unit']:g}, m = {r['coins']:,} "
                     f"coins per value, {r['noised'] * r['coins']:,} coins per session ({r['mode']}); first DP "
                     f"session {r['first_s']:.2f} s, later {r['dp_s']:.4f} s vs exact {r['exact_s']:.4f} s "
                     f"({r['dp_s'] / r['exact_s']:.1f}x){cpu}")
    average = results["average"]
    notes.append(f"- the average's noise std ({average['std']:,.0f}) exceeds the values themselves: one record may move "
                 f"anywhere in 0..10000 and only 3 records are averaged, so at epsilon 1 the release is mostly noise "
                 f"(its std is about 5 x 10000 / 3); the row shows the cost, not a useful accuracy. Small releases "
                 f"(average, histogram) are dominated by the per-session overhead of joint noise (the Status round, "
                 f"the daBits' OT-extension and fold messages), not by their ~10^4 coins.")
    notes.append(f"- joint noise at bounds {lo}..{hi}: sensitivity {hi - lo} units, m = {refused['coins']:,} coins "
                 f"per element, {refused['daBits']:,} daBits for {results['sum-local']['length']:,} elements > "
                 f"MAX_JOINT_COINS = {refused['limit']:,} per session: "
                 + (f"every node refused it at prepare, in {refused['s']:.3f} s, before anything was shared; "
                    f"alice said: \"{refused['reason']}\"" if refused["refused"] else "NOT refused"))
    joint = results["sum-joint"]
    notes.append(f"- so the joint-noise vector row uses values and bounds {joint['bounds'][0]}..{joint['bounds'][1]} "
                 f"(sensitivity 1, m = {joint['coins']} coins, {joint['coins'] * joint['length']:,} daBits per "
                 f"session, {joint['coins'] * joint['length'] / dp.MAX_JOINT_COINS:.0%} of the limit); the "
                 f"local-noise row keeps 0..{hi}, and an extra local row runs on the joint row's input at the same m.")
    n = parties
    examples = ", ".join(f"Δ = {d}: m = {m:,} (σ = {dp.noise_std(m) / d:.2f}·Δ)"
                         for d, m in ((d, dp.calibrate(EPSILON, 1e-8, d)) for d in (1, 10, 15)))
    notes.append(f"- joint-noise cost: each noised value needs m coins, m = 4·σ² with σ the noise std in units "
                 f"(Binomial(m, 1/2) has std sqrt(m)/2); σ ≈ 5·Δ at epsilon 1, delta 1e-8 for a sensitivity of Δ "
                 f"units, so m ≈ 4·(σ/Δ)²·Δ² grows with Δ² and about 1/epsilon² ({examples}). Each coin is a daBit: "
                 f"one correlated OT per ordered pair of nodes, except the pairs into the first node "
                 f"(mpc/ot/arith.py: (n-1)² = {(n - 1) ** 2} OTs and correction words per daBit for n = {n}, of "
                 f"n(n-1) = {n * (n - 1)} ordered pairs), in n - 1 fold rounds, so the work grows as "
                 f"values · m · n² (here {_per_coin_ns(joint):,.0f} ns of wall time per coin on this "
                 f"machine, all pairs together), and one session makes at most {dp.MAX_JOINT_COINS:,} coins.")
    local, narrow = results["sum-local"], results["sum-local-narrow"]
    measured = "-" if local["measured_std"] is None else f"{local['measured_std'] / local['central_std']:.2f}"
    notes.append(f"- local noise needs no OT and no extra message (each node draws its own Binomial(m) - m/2 from its "
                 f"CSPRNG, m random bits per value: {_per_coin_ns(local):,.1f} ns per coin here, against "
                 f"{_per_coin_ns(joint):,.0f} ns for a joint coin; at the same m = {narrow['coins']} it costs "
                 f"{_us(narrow['extra_per_element_s'])} us per value against {_us(joint['extra_per_element_s'])} us "
                 f"joint), but its noise std is sqrt(n) = {math.sqrt(n):.2f} times the central one (measured "
                 f"{measured}), and it grows with n. Choose local noise when values · m exceeds the per-session "
                 f"limit (long vectors, wide bounds, small epsilon) or when the OT time of values · m · (n-1)² "
                 f"OTs matters more than sqrt(n) times the noise; joint noise for scalars, histograms and short "
                 f"vectors, where the central mechanism's accuracy costs well under a second.")
    spent = results.get("budget_spent") or {}
    if spent:
        shown = "; ".join(f"{node}: " + ", ".join(f"{i} {s}" for i, s in inputs.items()) for node, inputs in spent.items())
        notes.append(f"- epsilon spent per input after the vector rows: {shown} ('wide': {local['repeats'] + 1} "
                     f"local releases, the refused joint release spent nothing; 'narrow': {joint['repeats'] + 1} "
                     f"joint + {narrow['repeats'] + 1} local releases; exact releases spend none)")
    return rows, notes
