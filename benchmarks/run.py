"""mpc vs MPyC, same machine, one run, each party its own process on loopback, TLS on for both.

    make bench          # or: .venv/bin/python benchmarks/run.py [--only sum|compare|auction|dp|psi|collection|scale|all]
                        #     [--json FILE]
    make bench ARGS="--parties 3,6,10"   # or: .venv/bin/python benchmarks/run.py --parties 3,6,10 (scale only)

Prints a Markdown table: computation time (after start-up) and end to end, and the ratios
MPyC / mpc (higher is better for mpc); below it the comparisons per second, mpc's one-off
base OT cost, and what gRPC alone costs for the scalar sum's and the vote's messages
(benchmarks/grpc_floor.py --fanout 4 and --mesh 3: the floor under those rows). Cases: the secure
sums (--only sum); 1000 batched 32-bit comparisons and a vote over 1000 ballots among 3 parties
(--only compare); a sealed-bid auction over 1000 bids split among 3 parties, opening the winner
and the highest bid, and the same opening the second-highest bid (--only auction; --bids sets the
number). For the comparison, the vote and the auctions,
mpc's compute time is the median of later sessions on running nodes, which reuse the base OTs
the first session set up (the nodes keep them for their lifetime); its end-to-end time includes
that first session, i.e. spawning the nodes, the base OTs, one session and stopping them. MPyC's
scalar sum and vote are measured alike: the median of its computations after the first in one run
(each after a barrier), its end to end as if the run had made one; its first computation after
start-up, cold, is printed below the table.

--only collection: contributors (benchmarks/collection_runner.py): 10^4 and 10^5 ballots from as
many credentials submitted to 3 nodes (batched), then a validated vote over them (every ballot
range-checked inside MPC), with the nodes' memory before and after; beside it the vote over the
same number of ballots stored at the node daemons.

--only dp: differentially private releases at epsilon = 1 among 3 parties (benchmarks/dp_runner.py),
each beside mpc's exact computation of the same input on the same nodes (MPyC has no DP noise):
an average of one value per node and a 100-bin histogram with joint noise, and a sum of a
10,000-element vector with joint noise (bounds 0..1: at 0..15 joint noise would exceed the
session's coin limit, which the nodes refuse, as the table shows) and with local noise (0..15).
Printed as a second table with the noise std beside the central mechanism's.

--only psi: private set intersection among 3 nodes (benchmarks/psi_runner.py), 10^5 identifiers per
node (--psi-size), revealing the size and the sum of the associated values, each checked exactly
against Python's set intersection (MPyC has no PSI): the first and a later session of each, the
node CPU per element against the floor (the in-process cost of psi.hash_to_curve and X25519 per
call), and a projection to 10^6 per node. Printed as a third table.

--parties 3,6,10 (or --only scale, whose default counts are 3,6,10): scale in the number of nodes
(benchmarks/scale_runner.py). Not part of `all`: given --parties without --only, only this runs; with
--only X and --parties, X and this. For each party count n, on n fresh nodes: 1000 batched 32-bit
comparisons (--comparisons), the first such session minus a later one (the base OTs of all n(n-1)/2
pairs), a scalar sum (one value per node) and a vote over 1000 ballots split across the nodes
(--ballots); each with its median wall time and each node process's CPU per session (median and
max over the nodes, and both / (n - 1), which stays flat if per-node work grows at most linearly in
the peers; on a few cores the n nodes share them, so wall time is not that measure), and MPyC's
compute time for the scalar sum and the vote at the same n (--scale-no-mpyc leaves it out).
Printed as a fourth table with a note of the per-node CPU growth from the smallest to the largest n
against (n_max - 1) / (n_min - 1); --scale-repeats / --scale-sum-repeats set the later sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mpc_runner import (  # noqa: E402
    compile_mpc, run_mpc_auction, run_mpc_base_ot, run_mpc_compare, run_mpc_sum, run_mpc_vote)
from benchmarks.mpyc_runner import run_mpyc_auction, run_mpyc_compare, run_mpyc_sum, run_mpyc_vote  # noqa: E402
from benchmarks.dp_runner import dp_table, run_dp  # noqa: E402
from benchmarks.psi_runner import psi_table, run_psi  # noqa: E402
from benchmarks.scale_runner import run_scale, scale_table  # noqa: E402
from benchmarks.collection_runner import collection_table, run_collection_vote  # noqa: E402
from mpc.protocols.compare import rounds as compare_rounds  # noqa: E402
from mpc.protocols.contribution import vote_bits  # noqa: E402

DEFAULT_SCALE_PARTIES = "3,6,10"
# A repeated vote on its pool tickets: the comparison's rounds, the first with the digests (no hello)
VOTE_ROUNDS = compare_rounds(3, vote_bits(3), 1)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c]
    except ValueError:
        raise argparse.ArgumentTypeError("need comma-separated integers, e.g. 1000,10000") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("need at least one count, each at least 1")
    return counts


def _row(name: str, ours: dict[str, object], theirs: dict[str, object]) -> str:
    oc, tc = float(ours["compute_s"]), float(theirs["compute_s"])  # type: ignore[arg-type]
    oe, te = float(ours["end_to_end_s"]), float(theirs["end_to_end_s"])  # type: ignore[arg-type]
    return (f"| {name} | {oc:.4f} | {tc:.4f} | {tc / oc:.1f}x | {oe:.2f} | {te:.2f} | {te / oe:.1f}x |"
            f" {'yes' if ours['ok'] and theirs['ok'] else 'NO'} |")


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    """Run the comparisons and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000", help="vector lengths for the 3-party sum")
    parser.add_argument("--only", choices=("sum", "compare", "auction", "dp", "psi", "collection", "scale", "all"),
                        default=None,
                        help="sum: the secure sums; compare: comparisons, vote, base OTs; auction: first- and "
                             "second-price auctions; dp: differentially private releases beside the exact ones; "
                             "psi: private set intersection (size and sum); collection: contributors' ballots "
                             "submitted to 3 nodes and a validated vote over them, beside the per-node-daemon vote; "
                             "scale: the scale-in-nodes report; "
                             "all: every one but scale (default, unless --parties is given: then scale only)")
    parser.add_argument("--collection-ballots", type=_counts, default=[10_000, 100_000],
                        help="contributors' ballots in the collection benchmark, comma-separated")
    parser.add_argument("--comparisons", type=_counts, default=[1000, 10_000],
                        help="batched comparisons, comma-separated (3 parties; the first also at each party count "
                             "of the scale report)")
    parser.add_argument("--scalar-repeats", type=int, default=300,
                        help="later sessions of the 4-party scalar sum (each takes milliseconds: a median of many, "
                             "and enough of them for its CPU per session to resolve the 10 ms clock tick)")
    parser.add_argument("--ballots", type=int, default=1000,
                        help="ballots in the vote (3 parties; and at each party count of the scale report)")
    parser.add_argument("--bids", type=int, default=1000, help="bids in the auctions (3 parties)")
    parser.add_argument("--dp-repeats", type=int, default=9,
                        help="timed sessions of each kind for the DP average and histogram")
    parser.add_argument("--dp-vector-repeats", type=int, default=7,
                        help="timed sessions of each kind for the DP vector sums")
    parser.add_argument("--dp-length", type=int, default=10_000, help="elements of the DP vector sums")
    parser.add_argument("--psi-size", type=int, default=100_000, help="identifiers per node in the PSI (3 nodes)")
    parser.add_argument("--psi-repeats", type=int, default=2,
                        help="PSI sessions of each reveal (size, sum): the first and repeats - 1 later ones")
    parser.add_argument("--parties", help="party counts of the scale-in-nodes report, e.g. 3,6,10 (each >= 3; "
                                           f"runs it; default with --only scale: {DEFAULT_SCALE_PARTIES})")
    parser.add_argument("--scale-repeats", type=int, default=5,
                        help="later comparison and vote sessions per party count in the scale report")
    parser.add_argument("--scale-sum-repeats", type=int, default=9,
                        help="later scalar-sum sessions per party count in the scale report")
    parser.add_argument("--scale-no-mpyc", action="store_true", help="leave MPyC out of the scale report")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    only = args.only or ("scale" if args.parties else "all")
    run_scale_report = only == "scale" or args.parties is not None
    try:
        parties = [int(p) for p in (args.parties or DEFAULT_SCALE_PARTIES).split(",") if p.strip()]
    except ValueError:
        parser.error("--parties takes comma-separated integers, e.g. 3,6,10")
    if run_scale_report and (not parties or min(parties) < 3):
        parser.error("--parties needs party counts of at least 3 (the nodes' default policy)")
    compile_mpc()   # before anything is timed: every process started then loads mpc's bytecode
    load_start = _load()
    results: list[dict[str, object]] = []
    rows = []
    notes = []
    dp_rows: list[str] = []
    dp_notes: list[str] = []
    psi_rows: list[str] = []
    psi_notes: list[str] = []
    scale_rows: list[str] = []
    scale_notes: list[str] = []
    if only in ("sum", "all"):
        for length in sizes:
            ours, theirs = run_mpc_sum(length), run_mpyc_sum(length, timeout=900)
            results.append({"case": f"sum3-{length}", "mpc": ours, "mpyc": theirs})
            rows.append(_row(f"3-party sum, L = {length:,}", ours, theirs))
        theirs = _median_run(lambda: run_mpyc_sum(1, scalar_raises=True, repeats=MPYC_SCALAR_REPEATS), MPYC_SMALL_RUNS)
        notes.append(_first_note("4-party scalar sum", theirs))
        for case, label, keyed, one_round in (
                ("raises4", "4-party scalar sum (raises), one round", True, True),
                ("raises4-two-rounds", "4-party scalar sum, two rounds (prepare, then compute)", True, False),
                ("raises4-unkeyed", "4-party scalar sum, unkeyed (digests and seeds between the nodes)", False, True)):
            ours = run_mpc_sum(1, raises=True, repeats=args.scalar_repeats, keyed=keyed, one_round=one_round)
            results.append({"case": case, "mpc": ours, "mpyc": theirs})
            rows.append(_row(label, ours, theirs))
            notes.append(f"- {label}: CPU per session {1000 * _f(ours, 'compute_cpu_mean_s') / 4:.1f} ms per node "
                         f"(mean), {1000 * _f(ours, 'coordinator_cpu_s'):.1f} ms in the coordinator")
        floor = grpc_floor("--fanout", "4", "--messages", "1000", "--pause-ms", "0")
        results.append({"case": "grpc-floor-fanout4", "floor": floor})
        notes.append("- gRPC alone, a one-round 4-node sum's traffic (benchmarks/grpc_floor.py --fanout 4 --pause-ms 0: "
                     "one message to each of 4 echo servers and back, back to back): " + (floor if isinstance(floor, str)
                     else f"{floor['session_us'] / 1000:.2f} ms per session, CPU "
                          f"{floor['client_cpu_per_session_us'] / 1000:.2f} ms in the client and "
                          f"{max(floor['server_cpu_per_session_us']) / 1000:.2f} ms per server at most"))
    if only in ("compare", "all"):
        for m in args.comparisons:
            ours, theirs = run_mpc_compare(m), run_mpyc_compare(m, timeout=900)
            inline = run_mpc_compare(m, pool=False)
            results.append({"case": f"compare3-{m}", "mpc": ours, "mpyc": theirs})
            results.append({"case": f"compare3-{m}-no-pool", "mpc": inline, "mpyc": theirs})
            rows.append(_row(f"{m:,} comparisons (32-bit), 3 parties, triples made ahead", ours, theirs))
            rows.append(_row(f"{m:,} comparisons (32-bit), 3 parties, triples made in the session", inline, theirs))
            ours_rate, theirs_rate = m / _f(ours, "compute_s"), m / _f(theirs, "compute_s")
            ratio = ours_rate / theirs_rate
            target = 20 if m >= 10_000 else 1
            notes.append(f"- {m:,} comparisons per second (compute, triples made ahead): mpc {ours_rate:,.0f}, MPyC "
                         f"{theirs_rate:,.0f}; mpc/MPyC = {ratio:.1f}x (target >= {target}x: "
                         f"{'met' if ratio >= target else 'NOT met'}); with the triples made in the session "
                         f"{m / _f(inline, 'compute_s'):,.0f} per second")
            notes.append(f"- the nodes' CPU per session of {m:,} comparisons: {_f(ours, 'compute_cpu_s'):.2f} s in the "
                         f"session and {_f(ours, 'fill_cpu_s'):.2f} s making its random OTs between sessions, "
                         f"against {_f(inline, 'compute_cpu_s'):.2f} s with no pool")
            notes.append(f"- mpc comparisons, first session on fresh nodes (base OTs of all 3 pairs + TLS + "
                         f"{m:,} comparisons): {_f(ours, 'first_s'):.2f} s, i.e. one-off setup "
                         f"{_f(ours, 'setup_s'):.2f} s; {_cpu_note(ours)}")
        n = args.ballots
        ours = run_mpc_vote(n, repeats=VOTE_REPEATS)
        theirs = _median_run(lambda: run_mpyc_vote(n, repeats=VOTE_REPEATS + 1, timeout=900), MPYC_SMALL_RUNS)
        notes.append(_first_note(f"vote over {n:,} ballots", theirs))
        inline = run_mpc_vote(n, pool=False, cli_repeats=0, repeats=VOTE_REPEATS)
        two = run_mpc_vote(n, cli_repeats=0, one_round=False, repeats=VOTE_REPEATS)
        results.append({"case": f"vote3-{n}", "mpc": ours, "mpyc": theirs})
        results.append({"case": f"vote3-{n}-no-pool", "mpc": inline, "mpyc": theirs})
        results.append({"case": f"vote3-{n}-two-rounds", "mpc": two, "mpyc": theirs})
        rows.append(_row(f"vote over {n:,} ballots, 3 parties, triples made ahead", ours, theirs))
        rows.append(_row(f"vote over {n:,} ballots, 3 parties, triples made in the session", inline, theirs))
        rows.append(_row(f"vote over {n:,} ballots, 3 parties, triples made ahead, two rounds (prepare, then "
                         f"compute)", two, theirs))
        notes.append(f"- vote over {n:,} ballots: the nodes' CPU per vote {1000 * _f(ours, 'compute_cpu_mean_s'):.0f} ms "
                     f"(all three, mean; triples made ahead)")
        floor = grpc_floor("--mesh", "3", "--messages", "200", "--burst", str(VOTE_ROUNDS), "--pause-ms", "20")
        results.append({"case": "grpc-floor-mesh3", "floor": floor})
        notes.append(f"- gRPC alone, a vote's {VOTE_ROUNDS} rounds among 3 processes (benchmarks/grpc_floor.py --mesh 3: every "
                     "process sends one message to each other per round, 20 ms between bursts as between votes): " +
                     (floor if isinstance(floor, str) else f"{floor['burst_us'] / 1000:.1f} ms per burst, CPU "
                      f"{max(floor['cpu_per_burst_us']) / 1000:.1f} ms per process at most"))
        notes.append(f"- mpc vote: first vote on fresh nodes {_f(ours, 'first_s'):.2f} s (one-off setup "
                     f"{_f(ours, 'setup_s'):.2f} s), later votes {_f(ours, 'compute_s'):.3f} s, the `mpc vote` "
                     "command on running nodes (new process, its bytecode cached: start-up, imports, TLS, vote) "
                     f"{_f(ours, 'cli_s'):.2f} s")
        base = run_mpc_base_ot()
        results.append({"case": "base_ot_pair", "mpc": base})
        notes.append(f"- mpc one-off base OT cost per pair (in-process, one core, no network): {base['ots']} "
                     f"Chou-Orlandi OTs one direction {_f(base, 'one_direction_s'):.2f} s, both directions "
                     f"{_f(base, 'both_directions_s'):.2f} s; paid by the first comparison or vote between two "
                     f"nodes, then kept for the nodes' lifetime")
    if only in ("auction", "all"):
        b = args.bids
        for second_price, name in ((False, f"auction max+argmax, {b:,} bids, 3 parties"),
                                   (True, f"second-price auction, {b:,} bids, 3 parties")):
            ours = run_mpc_auction(b, second_price=second_price)
            theirs = run_mpyc_auction(b, second_price=second_price, timeout=900)
            results.append({"case": f"auction{2 if second_price else 1}-3-{b}", "mpc": ours, "mpyc": theirs})
            rows.append(_row(name, ours, theirs))
            notes.append(f"- mpc {'second-price ' if second_price else ''}auction: first auction on fresh nodes "
                         f"{_f(ours, 'first_s'):.2f} s (one-off setup {_f(ours, 'setup_s'):.2f} s), later ones "
                         f"{_f(ours, 'compute_s'):.3f} s; {_cpu_note(ours)}")
    if only in ("dp", "all"):
        dp_results = run_dp(args.dp_repeats, args.dp_vector_repeats, args.dp_length)
        results.append({"case": "dp3", "mpc": dp_results})
        dp_rows, dp_notes = dp_table(dp_results)
    if only in ("psi", "all"):
        psi_results = run_psi(args.psi_size, 3, args.psi_repeats)
        results.append({"case": f"psi3-{args.psi_size}", "mpc": psi_results})
        psi_rows, psi_notes = psi_table(psi_results)
    collection_rows: list[str] = []
    collection_notes: list[str] = []
    if only in ("collection", "all"):
        collection_results = [run_collection_vote(n) for n in args.collection_ballots]
        results += [{"case": f"collection3-{r['ballots']}", "mpc": r} for r in collection_results]
        collection_rows, collection_notes = collection_table(collection_results)
        for n in args.collection_ballots:   # the same number of ballots stored at 3 node daemons
            daemon = run_mpc_vote(n, cli_repeats=0)
            results.append({"case": f"vote3-{n}-stored", "mpc": daemon})
            collection_notes.append(f"- the per-node-daemon vote over {n:,} ballots stored at 3 nodes (their tallies "
                                    f"compared, no validity check needed): {_f(daemon, 'compute_s'):.3f} s")
    if run_scale_report:
        scale_results = run_scale(parties, args.comparisons[0], args.ballots, args.scale_repeats,
                                  args.scale_sum_repeats, mpyc=not args.scale_no_mpyc)
        results.append({"case": "scale-" + "-".join(str(r["parties"]) for r in scale_results["rows"]),
                        "scale": scale_results})
        scale_rows, scale_notes = scale_table(scale_results)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average (1/5/15 min) at start {load_start}, at end {_load()}")
    if rows:
        print("| case | mpc compute (s) | MPyC compute (s) | MPyC/mpc | mpc end to end (s) | MPyC end to end (s) "
              "| MPyC/mpc | both correct |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    if notes:
        print()
        print("\n".join(notes))
    for section_rows, section_notes in ((dp_rows, dp_notes), (psi_rows, psi_notes),
                                        (collection_rows, collection_notes), (scale_rows, scale_notes)):
        if section_rows:
            print()
            print("\n".join(section_rows))
            print()
            print("\n".join(section_notes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


# A vote and a scalar sum take milliseconds, and a single run varies by a third on a shared 2-core
# machine: mpc's figure is the median of VOTE_REPEATS votes (--scalar-repeats sums) after the first,
# through one coordinator on running nodes; MPyC's, measured alike, the median of the votes (sums)
# after the first in one run of its program (VOTE_REPEATS + 1, MPYC_SCALAR_REPEATS), each after a
# barrier, and of MPYC_SMALL_RUNS such runs. (A program's first computation after start-up, cold,
# takes MPyC 1.5-3x as long as its later ones: _first_note prints it.)
VOTE_REPEATS = 15
MPYC_SCALAR_REPEATS = 101
MPYC_SMALL_RUNS = 5


def _first_note(label: str, theirs: dict[str, Any]) -> str:
    """A note of MPyC's first computation after start-up in the median run, beside its later ones'."""
    return (f"- MPyC, {label}: the first computation after start-up took {1000 * _f(theirs, 'first_s'):.1f} ms, the "
            f"later ones {1000 * _f(theirs, 'compute_s'):.1f} ms (median; the table's figure)")


def _median_run(run: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
    """The run with the median compute_s of `times` runs (ok only if every run was), with every time."""
    runs = sorted((run() for _ in range(times)), key=lambda r: float(r["compute_s"]))
    middle = dict(runs[len(runs) // 2])
    middle["ok"] = all(r.get("ok") for r in runs)
    middle["compute_s_all"] = [float(r["compute_s"]) for r in runs]
    return middle


def grpc_floor(*args: str) -> dict[str, Any] | str:
    """One run of benchmarks/grpc_floor.py with `args`: what gRPC alone costs for a message pattern.

    Returns: its JSON row, or why it failed (a note; the benchmark goes on).
    """
    command = f"grpc_floor.py {' '.join(args)}"
    # In a session of its own: on a timeout its servers go too, not only the script.
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "grpc_floor.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"{command} did not finish in 900 s"
    if proc.returncode != 0:
        return f"{command} failed (exit {proc.returncode}): {err.strip()[-300:]}"
    try:
        row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"{command} printed no result: {out.strip()[-300:]!r}"
    return row


def _f(result: dict[str, object], key: str) -> float:
    return float(result[key])  # type: ignore[arg-type]


def _cpu_note(ours: dict[str, object]) -> str:
    if ours.get("first_cpu_s") is None or ours.get("compute_cpu_s") is None:
        return "node CPU time not available"
    return (f"CPU of the 3 nodes together: {_f(ours, 'first_cpu_s'):.2f} s in it, "
            f"{_f(ours, 'compute_cpu_s'):.2f} s in a later session")


if __name__ == "__main__":
    raise SystemExit(main())
