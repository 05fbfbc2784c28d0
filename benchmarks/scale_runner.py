"""Scale in the number of nodes: the same sessions at several party counts, with each node's CPU.

Every node is a separate `mpc node` process on 127.0.0.1 with mutual TLS, the coordinator in this
process (as benchmarks/mpc_runner.py, whose helpers this reuses). For each party count n one
cluster of n fresh nodes (mpc_runner.node_names(n)) holds three inputs per node, and runs through
one coordinator per kind, in this order:

  * compare: M batched 32-bit comparisons [sum over nodes >= 0] (`Coordinator.at_least`, the
    inputs of mpc_runner.compare_inputs, as run_mpc_compare), repeats + 1 sessions. The first
    session on the fresh nodes also runs the base OTs between every pair (n(n-1)/2 pairs, 128
    Chou-Orlandi OTs each way) and the TLS handshakes; setup = that first session minus the later
    ones (wall: minus their median; CPU: each node's first-session CPU minus its mean later one);
  * sum: one value per node (below 2^32, as run_mpc_sum's inputs with L = 1), opened as the
    plain `sum` protocol, sum_repeats + 1 sessions, the first (new coordinator channels) dropped;
  * vote: a vote over `ballots` 0/1 ballots split across the nodes (mpc_runner.vote_ballots, as
    run_mpc_vote without the CLI part), repeats + 1 sessions, the first dropped. The base OTs are
    already set up by then (the nodes keep them for their lifetime).

The nodes keep no triple pools (`triple_pool = 0`): every session makes its triples by IKNP while
it runs, so that each session's CPU is all of its cost (with pools, sessions back to back would
each find the pools full or not depending on the fills' timing).

Per kind: compute_s, the median wall time of the later sessions; and each node's CPU (utime +
stime of its process, /proc/<pid>/stat, mpc_runner._timed_sessions) per later session, as that
node's mean over the later sessions (CPU time is counted in clock ticks, usually 10 ms, which is
coarse beside a scalar sum: the mean over k sessions resolves 10/k ms). Reported over the nodes:
the median and the max of those per-node figures, and the same divided by n - 1 ("per pair"): if
per-node work grows at most linearly in the number of peers, the per-pair figures do not grow
with n. Wall times are not that measure here: all n nodes share this machine's cores. CPU time
is not immune to other work on the machine either (caches, context switches): each row records
the CPU that other processes used meanwhile (the machine's busy time from /proc/stat, from before
the nodes start until before they stop, minus these nodes' and this process's CPU), as a share of
all cores over that time, to compare rows run under like load; and the 1-minute load average before
the nodes start and after they stop (which counts these nodes too).

The comparison circuit itself grows with n: its arithmetic-to-boolean conversion adds the n shares
in a Wallace tree, (n - 2)(ell - 1) AND gates per value beside the 87 of the 32-bit prefix
(mpc/protocols/compare.py). A carry-save gate runs among the parties holding its three summands only,
its triple one IKNP correlation per pair of them, and the prefix's among all. So per-node CPU of the
comparisons is expected to grow like a node's triple words summed over its peers (node_pair_words:
mpc.protocols.compare.node_words of triple_layout, the median node), about linearly in n - 1;
the compare figures include it, the circuit's triple_words over every holder set, and the per-node
CPU per triple word per peer, which is the figure that should not grow with n.

MPyC (optional, mpyc_runner): the scalar sum (a one-element SecInt(64) array per party) and the
same vote at the same party count, compute time measured inside party 0 after mpc.start(): as
many in one run as mpc's sessions, each after a barrier, and the median of those after the first
(mpc's is the median of its sessions after the first). MPyC runs after the mpc nodes stopped, so the
two never share the cores. Its processes' CPU is not measured.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc import aio
from mpc.coordinator.client import Coordinator
from mpc.localcluster import NodeProcesses
from mpc.protocols.catalogue import SumParams, entry
from mpc.protocols.compare import node_words, triple_layout, triple_words
from mpc.protocols.contribution import COMPARE_BITS, COMPARE_BOUND

from benchmarks.mpc_runner import (
    _clock_tick, _cpu_s, _inputs, _running, _timed_sessions, compare_inputs, node_names, vote_ballots)
from benchmarks.mpyc_runner import run_mpyc_sum, run_mpyc_vote

KINDS = ("sum", "compare", "setup", "vote")
LABELS = {"sum": "scalar sum", "compare": "comparisons", "setup": "first-session setup", "vote": "vote"}



def node_pair_words(parties: int, ell: int, batch: int) -> int:
    """The median node's triple words of one comparison session, summed over its peers (its random OTs)."""
    return int(statistics.median(node_words(triple_layout(parties, ell, batch), parties)))


def _per_node_mean(by_node: Sequence[dict[str, float] | None], names: Sequence[str]) -> dict[str, float] | None:
    """Each node's mean CPU seconds over the given sessions, or None if any session has none."""
    if not by_node or any(b is None for b in by_node):
        return None
    return {name: statistics.fmean(b[name] for b in by_node if b is not None) for name in names}


def _cpu_figures(per_node: Mapping[str, float] | None, parties: int) -> dict[str, Any]:
    """Median and max over the nodes of per-node CPU seconds, and both divided by parties - 1."""
    if per_node is None:
        return {"cpu_by_node_s": None, "cpu_node_median_s": None, "cpu_node_max_s": None,
                "cpu_pair_median_s": None, "cpu_pair_max_s": None}
    median, top = statistics.median(per_node.values()), max(per_node.values())
    return {"cpu_by_node_s": dict(per_node), "cpu_node_median_s": median, "cpu_node_max_s": top,
            "cpu_pair_median_s": median / (parties - 1), "cpu_pair_max_s": top / (parties - 1)}


def _summary(times: Sequence[float], by_node: Sequence[dict[str, float] | None], ok: bool,
             names: Sequence[str]) -> dict[str, Any]:
    """One kind's figures from _timed_sessions' output: the first session dropped, the later ones
    summarised (wall: median; CPU: each node's mean). Keeps the raw per-session figures too."""
    later = _per_node_mean(by_node[1:], names)
    return {"compute_s": statistics.median(times[1:]), "first_s": times[0], "ok": ok, "sessions": len(times) - 1,
            **_cpu_figures(later, len(names)), "wall_per_session_s": list(times),
            "cpu_by_node_per_session_s": list(by_node)}


def _setup(compare: Mapping[str, Any], by_node: Sequence[dict[str, float] | None],
           names: Sequence[str]) -> dict[str, Any]:
    """The first comparison session minus the later ones: wall (minus their median) and each
    node's CPU (its first-session CPU minus its mean in the later sessions)."""
    first, later = by_node[0], compare["cpu_by_node_s"]
    extra = None if first is None or later is None else {name: first[name] - later[name] for name in names}
    return {"compute_s": compare["first_s"] - compare["compute_s"], "first_s": compare["first_s"],
            "ok": compare["ok"], "pairs": len(names) * (len(names) - 1) // 2, **_cpu_figures(extra, len(names))}


def run_scale_one(parties: int, comparisons: int = 1000, ballots: int = 1000, repeats: int = 5,
                  sum_repeats: int = 9, mpyc: bool = True, mpyc_timeout: float = 600) -> dict[str, Any]:
    """The sessions of the module docstring among `parties` fresh nodes (then MPyC if `mpyc`).

    Returns: {"parties", "pairs", "comparisons", "ballots", "repeats", "sum_repeats", "names", "ok",
    "sum" / "compare" / "setup" / "vote": {"compute_s", "first_s", "ok", "cpu_by_node_s",
    "cpu_node_median_s", "cpu_node_max_s", "cpu_pair_median_s", "cpu_pair_max_s", ...} (compare also
    "triple_words", "node_pair_words", "cpu_word_pair_median_us": median per-node CPU / node_pair_words),
    "mpyc": {"sum": {...}, "vote": {...}} or None, "load_start", "load_end": the 1-minute load
    average before the nodes start and after they stop, or None, "others_cpu_share": the share of
    all cores other processes used meanwhile (see the module docstring), or None}; CPU figures are
    None without /proc.
    """
    if parties < 3:
        raise ValueError("the nodes' default policy needs at least 3 participants")
    if comparisons < 1 or ballots < parties or repeats < 1 or sum_repeats < 1:
        raise ValueError("need a comparison, a ballot per node and a repeat of each kind")
    names = node_names(parties)
    values = compare_inputs(parties, comparisons)
    expected_bits = (np.sum(values, axis=0) >= 0).tolist()
    scalars = _inputs(parties, 1, False)  # one value below 2^32 per node
    expected_sum = np.sum(scalars, axis=0)
    split = vote_ballots(ballots, parties)
    expected_vote = 2 * int(sum(int(b.sum()) for b in split)) >= ballots

    async def compare(coordinator: Coordinator) -> bool:
        return bool((await coordinator.at_least("x", 0)).bits == expected_bits)

    async def add(coordinator: Coordinator) -> bool:
        opened = await coordinator.open(entry("sum"), SumParams(), "s")
        return bool(np.array_equal(opened.words.view(np.int64), expected_sum))

    async def vote(coordinator: Coordinator) -> bool:
        return (await coordinator.vote("ballots")).passed == expected_vote

    limit = (COMPARE_BOUND - 1) // parties
    inputs = {"x": values, "s": scalars, "ballots": split}
    bounds: dict[str, tuple[int, int] | None] = {"x": (-limit, limit), "s": (0, 1 << 32), "ballots": None}
    load_start = _load1()
    machine_before, own_before, wall_before = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    with _running(names, inputs, input_bounds=bounds, pool=False) as run:
        times, _, ok, by_node = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, compare))
        result: dict[str, Any] = {"compare": _summary(times, by_node, ok, names)}
        words = node_pair_words(parties, COMPARE_BITS, comparisons)
        median = result["compare"]["cpu_node_median_s"]
        result["compare"]["triple_words"] = triple_words(parties, COMPARE_BITS, comparisons)
        result["compare"]["node_pair_words"] = words
        result["compare"]["cpu_word_pair_median_us"] = None if median is None else median / words * 1e6
        result["setup"] = _setup(result["compare"], by_node, names)
        times, _, ok, sum_by_node = aio.run(_timed_sessions(run.cluster, run.nodes, sum_repeats, add))
        result["sum"] = _summary(times, sum_by_node, ok, names)
        times, _, ok, vote_by_node = aio.run(_timed_sessions(run.cluster, run.nodes, repeats, vote))
        result["vote"] = _summary(times, vote_by_node, ok, names)
        others = _others_share(machine_before, own_before, wall_before, run.nodes)
    load_end = _load1()
    theirs = None
    if mpyc:
        theirs = {"sum": run_mpyc_sum(1, parties, repeats=sum_repeats + 1, timeout=mpyc_timeout),
                  "vote": run_mpyc_vote(ballots, parties, repeats=repeats + 1, timeout=mpyc_timeout)}
    everything_ok = all(result[k]["ok"] for k in KINDS) and all(bool(t["ok"]) for t in (theirs or {}).values())
    return {"parties": parties, "pairs": parties * (parties - 1) // 2, "comparisons": comparisons,
            "ballots": ballots, "repeats": repeats, "sum_repeats": sum_repeats, "names": list(names),
            "ok": everything_ok, **result, "mpyc": theirs, "load_start": load_start, "load_end": load_end,
            "others_cpu_share": others}


def _machine_busy_s() -> float | None:
    """CPU seconds all cores have run processes since boot (/proc/stat: user, nice, system, irq,
    softirq; not idle, iowait, or steal, the hypervisor's), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if fields[:1] != ["cpu"] or len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / _clock_tick()


def _own_cpu_s() -> float:
    """CPU seconds this process (the coordinator, and the MPyC launcher) has used so far."""
    t = os.times()
    return t.user + t.system


def _others_share(machine_before: float | None, own_before: float, wall_before: float,
                  nodes: NodeProcesses) -> float | None:
    """The share of all cores that processes other than `nodes` and this one used since the
    `*_before` readings (the nodes' CPU counted from their start, which is after them)."""
    machine_after, nodes_cpu = _machine_busy_s(), _cpu_s(nodes)
    cores, wall = os.cpu_count() or 1, time.perf_counter() - wall_before
    if machine_before is None or machine_after is None or nodes_cpu is None or wall <= 0:
        return None
    others = machine_after - machine_before - nodes_cpu - (_own_cpu_s() - own_before)
    return max(0.0, others) / (cores * wall)


def _load1() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run_scale(parties: Sequence[int], comparisons: int = 1000, ballots: int = 1000, repeats: int = 5,
              sum_repeats: int = 9, mpyc: bool = True) -> dict[str, Any]:
    """run_scale_one at each party count (ascending, each once), and the growth of per-node CPU
    from the smallest to the largest count (scale_growth).

    Returns: {"rows": [run_scale_one(...), ...], "growth": scale_growth(rows)}.
    """
    counts = sorted(set(parties))
    if not counts:
        raise ValueError("need a party count")
    rows = [run_scale_one(n, comparisons, ballots, repeats, sum_repeats, mpyc) for n in counts]
    return {"rows": rows, "growth": scale_growth(rows)}


def scale_growth(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per-node CPU at the largest party count over that at the smallest, for each kind (of the
    median node and of the busiest), beside (n_max - 1) / (n_min - 1), the growth if per-node work
    were linear in the number of peers. None with fewer than two party counts.

    Returns: {"from", "to", "linear", "median": {kind: ratio}, "max": {kind: ratio},
    "within_linear": {kind: bool}, "compare_work": the growth of the comparisons' triple words
    x (n - 1), "compare_per_word_pair": that of the median node's CPU per triple word per peer}
    (a ratio is None where CPU was not measured or was 0).
    """
    if len(rows) < 2:
        return None
    low, high = rows[0], rows[-1]

    def ratio(kind: str, key: str) -> float | None:
        a, b = low[kind][key], high[kind][key]
        return None if a is None or b is None or a <= 0 else float(b / a)

    linear = (high["parties"] - 1) / (low["parties"] - 1)
    median = {k: ratio(k, "cpu_node_median_s") for k in KINDS}
    top = {k: ratio(k, "cpu_node_max_s") for k in KINDS}
    within = {k: median[k] is not None and top[k] is not None and max(median[k] or 0, top[k] or 0) <= linear
              for k in KINDS}
    work = high["compare"]["node_pair_words"] / low["compare"]["node_pair_words"]
    return {"from": low["parties"], "to": high["parties"], "linear": linear, "median": median, "max": top,
            "within_linear": within, "compare_work": work,
            "compare_per_word_pair": ratio("compare", "cpu_word_pair_median_us")}


def _s(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def scale_table(results: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The Markdown rows and the notes lines of the scale benchmark. Returns: (header + rows, notes)."""
    rows = results["rows"]
    mpyc = any(r["mpyc"] for r in rows)
    head = ["n", "pairs"]
    for kind in KINDS:
        name = LABELS[kind]
        head += [f"{name} wall (s)", f"{name} CPU/node med, max (ms)", f"{name} CPU/node/(n-1) med, max (ms)"]
    if mpyc:
        head += ["MPyC scalar sum (s)", "MPyC vote (s)"]
    head += ["others' CPU (% of cores)", "correct"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["parties"]), str(r["pairs"])]
        for kind in KINDS:
            k = r[kind]
            cells += [_s(k["compute_s"], 2 if kind == "setup" else 3),
                      f"{_ms(k['cpu_node_median_s'])}, {_ms(k['cpu_node_max_s'])}",
                      f"{_ms(k['cpu_pair_median_s'])}, {_ms(k['cpu_pair_max_s'])}"]
        if mpyc:
            theirs = r["mpyc"] or {}
            cells += [_s(theirs["sum"]["compute_s"]) if "sum" in theirs else "-",
                      _s(theirs["vote"]["compute_s"]) if "vote" in theirs else "-"]
        share = r.get("others_cpu_share")
        cells += ["-" if share is None else f"{100 * share:.0f}", "yes" if r["ok"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")

    first = rows[0]
    notes = [f"- scale rows: n nodes, each a separate `mpc node` process with TLS on loopback, all on this "
             f"machine's cores, so wall time grows with n by sharing them; CPU is each node process's utime + "
             f"stime (/proc) per session, each node's mean over the later sessions, then the median and the max "
             f"over the n nodes, and both / (n - 1). Sessions per party count on fresh nodes: "
             f"{first['repeats'] + 1} x {first['comparisons']:,} comparisons (the first also sets up the base "
             f"OTs of every pair and TLS: 'first-session setup' = first - later), {first['sum_repeats'] + 1} x "
             f"the scalar sum, {first['repeats'] + 1} x the vote over {first['ballots']:,} ballots; the first "
             f"of each kind dropped. Others' CPU: what other processes used of all "
             f"{os.cpu_count()} cores while the row's nodes ran (machine busy time minus the nodes' and the "
             f"coordinator's); CPU time too is inflated on a busy machine, so compare rows run under like "
             f"load. " + ("MPyC: compute time in party 0 after mpc.start(), as many of each kind in "
                          "one run as mpc's, each after a barrier, the median of those after the first (its "
                          "CPU not measured), run after the mpc nodes stopped."
                          if mpyc else "MPyC not run (--scale-no-mpyc).")]
    growth = results.get("growth")
    if growth:
        def fmt(kind: str) -> str:
            m, t = growth["median"][kind], growth["max"][kind]
            return f"{LABELS[kind]} {_s(m, 2)}x ({_s(t, 2)}x)"
        verdict = [LABELS[k] for k in KINDS if not growth["within_linear"][k]]
        notes.append(f"- per-node CPU growth from {growth['from']} to {growth['to']} nodes, median node (busiest "
                     f"node): {', '.join(fmt(k) for k in KINDS)}; linear in the peers would be "
                     f"({growth['to']} - 1) / ({growth['from']} - 1) = {growth['linear']:.2f}x: "
                     + ("every kind within it." if not verdict else f"above it: {', '.join(verdict)}."))
        notes.append("- the comparison circuit grows with n ((n - 2) * 31 + 87 AND gates per 32-bit value, "
                     "mpc/protocols/compare.py), each gate's triple one IKNP correlation per pair of its holders (the "
                     "carry-save gates among the parties holding their summands): triple words per node, summed over "
                     "its peers (median node), per session "
                     + ", ".join(f"{r['compare']['node_pair_words']:,} at n = {r['parties']}" for r in rows)
                     + f", {growth['compare_work']:.2f}x; per-node CPU per triple "
                     f"word per peer (median node): "
                     + ", ".join(f"{_s(r['compare']['cpu_word_pair_median_us'], 1)} us at n = {r['parties']}"
                                 for r in rows)
                     + f" ({_s(growth['compare_per_word_pair'], 2)}x).")
    return lines, notes
