"""This checkout against another, the same vote interleaved vote by vote (README "Performance").

This machine's speed drifts by a fifth or more within minutes, so two versions timed one after
the other cannot resolve a change of 10%. Here two clusters of 3 nodes run side by side, each node
its own `mpc node` process with TLS: one cluster on this checkout, one on `--old DIR` (another
checkout of mpc, e.g. `git worktree add /tmp/old <commit>`; its nodes run with PYTHONPATH=DIR from
a working directory that holds no mpc, which the script checks). One coordinator, this
checkout's, runs votes over `--ballots` ballots on the two in turn, alternating which goes
first; each vote starts once its cluster's triple pools are full, as in `make bench`, and only one
cluster is busy at a time: before each vote both clusters' pools are full (a vote's refill would
otherwise overlap the other cluster's next vote). The two versions must speak the same wire protocol.

Reported, for each: the median and mean wall time per vote, and the CPU of its 3 nodes together
per vote (utime + stime from /proc, in 10 ms clock ticks summed over all votes), as JSON lines.

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/ab_vote.py --old /tmp/old [--votes 300] [--ballots 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpc import aio  # noqa: E402
from mpc.coordinator.client import Coordinator  # noqa: E402
from mpc.protocols.compare import triple_words  # noqa: E402
from mpc.protocols.contribution import COMPARE_BITS  # noqa: E402

from benchmarks.mpc_runner import _clock_tick, _cpu_ticks, _running, _Running, node_names, vote_ballots, \
    wait_for_pools  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
PARTIES = 3


def _mpc_seen(env: dict[str, str], cwd: str) -> Path:
    """Where a node process started with this environment and working directory imports mpc from."""
    out = subprocess.run([sys.executable, "-c", "import mpc; print(mpc.__file__)"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=60, check=True)
    return Path(out.stdout.strip()).resolve().parent.parent


async def _alternate(runs: dict[str, _Running], votes: int, ballots: int) -> dict[str, dict[str, float | None]]:
    names = node_names(PARTIES)
    words = triple_words(PARTIES, COMPARE_BITS, 1)
    expected = 2 * sum(int(b.sum()) for b in vote_ballots(ballots, PARTIES)) >= ballots
    times: dict[str, list[float]] = {k: [] for k in runs}
    ticks: dict[str, int | None] = {k: 0 for k in runs}   # None: /proc could not be read
    coordinators = {k: Coordinator(r.cluster) for k, r in runs.items()}
    try:
        for k, c in coordinators.items():   # the first vote of each: base OTs, TLS, pools made after it
            if (await c.vote("ballots")).passed != expected:
                raise RuntimeError(f"the {k} cluster's vote is wrong")
        for i in range(votes):
            for k in (("old", "new") if i % 2 else ("new", "old")):
                run = runs[k]
                for other in runs.values():
                    await wait_for_pools(other.cluster, names, words)
                before = _cpu_ticks(run.nodes)
                start = time.perf_counter()
                passed = (await coordinators[k].vote("ballots")).passed
                times[k].append(time.perf_counter() - start)
                after = _cpu_ticks(run.nodes)
                if passed != expected:
                    raise RuntimeError(f"the {k} cluster's vote {i + 1} is wrong")
                counted = ticks[k]
                ticks[k] = None if before is None or after is None or counted is None else \
                    counted + sum(after.values()) - sum(before.values())
    finally:
        for c in coordinators.values():
            await c.close()
    tick = _clock_tick()
    return {k: {"median_ms": 1000 * statistics.median(t), "mean_ms": 1000 * statistics.mean(t),
                "node_cpu_ms_per_vote": None if (n := ticks[k]) is None else 1000 * n / tick / votes, "votes": votes}
            for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="another checkout of mpc (its root directory)")
    parser.add_argument("--votes", type=int, default=300, help="votes on each cluster (default 300)")
    parser.add_argument("--ballots", type=int, default=1000, help="ballots per vote, split among 3 nodes")
    args = parser.parse_args()
    old = args.old.resolve()
    if not (old / "mpc" / "__init__.py").is_file():
        parser.error(f"--old {args.old}: no mpc package there (give the root of a checkout)")
    if old == HERE:
        parser.error(f"--old {args.old} is this checkout: give another one")
    if args.votes < 1:
        parser.error(f"--votes {args.votes}: at least 1")
    if args.ballots < PARTIES:
        parser.error(f"--ballots {args.ballots}: at least one per node ({PARTIES})")
    names = node_names(PARTIES)
    split = vote_ballots(args.ballots, PARTIES)
    paths = {"old": str(old), "new": None}   # each cluster's PYTHONPATH (None: none)
    saved, cwd = os.environ.pop("PYTHONPATH", None), os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mpc-ab-") as neutral, ExitStack() as stack:
        os.chdir(neutral)   # `python -m mpc` puts its working directory first on sys.path
        try:
            runs: dict[str, _Running] = {}
            for label, path in paths.items():
                if path is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = path   # the node processes inherit it
                seen, want = _mpc_seen(dict(os.environ), neutral), (old if label == "old" else HERE)
                if seen != want:
                    raise SystemExit(f"the {label} nodes would import mpc from {seen}, not {want}")
                runs[label] = stack.enter_context(_running(names, {"ballots": split}))
        finally:
            os.environ.pop("PYTHONPATH", None)
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
        try:
            results = aio.run(_alternate(runs, args.votes, args.ballots))
        finally:
            os.chdir(cwd)
    for label in ("old", "new"):
        print(json.dumps({"version": label, "checkout": str(old if label == "old" else HERE), **results[label]}))
    old_ms, new_ms = results["old"]["median_ms"], results["new"]["median_ms"]
    assert old_ms is not None and new_ms is not None   # every vote is timed
    ratio = old_ms / new_ms
    cpu = {k: "unknown" if (ms := results[k]["node_cpu_ms_per_vote"]) is None else f"{ms:.1f} ms" for k in results}
    print(f"median vote: old {results['old']['median_ms']:.2f} ms, new {results['new']['median_ms']:.2f} ms "
          f"(old/new {ratio:.2f}x); nodes' CPU per vote: old {cpu['old']}, new {cpu['new']}")


if __name__ == "__main__":
    main()
