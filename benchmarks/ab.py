"""This checkout against another, the same session interleaved one by one (README "Performance").

This machine's speed drifts by a fifth or more within minutes, so two versions timed one after
the other cannot resolve a change of 10%. Here two clusters run side by side, each node its own
`mpc node` process with TLS: one cluster on this checkout, one on `--old DIR` (another checkout
of mpc, e.g. `git worktree add /tmp/old <commit>`; its nodes run with PYTHONPATH=DIR from a
working directory that holds no mpc, which the script checks; both get the environment the script
was started with, before this checkout's mpc set its gRPC options). One coordinator, this checkout's,
runs the same session on the two in turn, alternating which goes first. The two versions must
speak the same wire protocol. Cases (`--case`):

- vote (default): 3 nodes, a vote over `--ballots` ballots. Each vote starts once its cluster's
  triple pools are full, as in `make bench`, and only one cluster is busy at a time: before each
  vote both clusters' pools are full (a vote's refill would otherwise overlap the other cluster's
  next vote).
- sum: 4 nodes, the scalar sum of `make bench` (one value per node, the raises), keyed and in one
  round after the first session, as there.

Reported, for each: the median and mean wall time per session, and the CPU of its nodes together
per session (utime + stime from /proc, in 10 ms clock ticks summed over all sessions), as JSON lines.

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/ab.py --old /tmp/old [--case vote|sum] [--sessions 300] [--ballots 1000]
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
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# What gRPC settings the script was started with, before this checkout's mpc adds its own
# (mpc/__init__.py): each cluster's nodes start with these and let their own mpc decide.
STARTED_WITH = os.environ.get("GRPC_EXPERIMENTS")

from mpc import aio  # noqa: E402
from mpc.coordinator.client import Coordinator  # noqa: E402
from mpc.protocols.compare import triple_words  # noqa: E402
from mpc.protocols.contribution import vote_bits  # noqa: E402

from benchmarks.mpc_runner import RAISES, _clock_tick, _cpu_ticks, _inputs, _running, _Running, node_names, \
    raises_sum, vote_ballots, wait_for_pools  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class _Case:
    """One kind of session to time: its nodes, what they hold, and the session itself."""

    parties: int
    inputs: dict[str, list[np.ndarray]]
    session: Callable[[Coordinator], Awaitable[bool]]   # runs one session; whether its result is right
    pools: bool   # whether each session waits for both clusters' triple pools to be full
    bounds: tuple[int, int] | None = None   # the inputs' declared bounds (ballots: their own)


def _case(name: str, ballots: int) -> _Case:
    if name == "vote":
        split = vote_ballots(ballots, 3)
        passed = 2 * sum(int(b.sum()) for b in split) >= ballots

        async def vote(coordinator: Coordinator) -> bool:
            return (await coordinator.vote("ballots")).passed == passed
        return _Case(3, {"ballots": split}, vote, True)
    return _Case(len(RAISES), {"x": _inputs(len(RAISES), 1, True)}, raises_sum, False, (0, 1 << 32))


def _mpc_seen(env: dict[str, str], cwd: str) -> Path:
    """Where a node process started with this environment and working directory imports mpc from."""
    out = subprocess.run([sys.executable, "-c", "import mpc; print(mpc.__file__)"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=60, check=True)
    return Path(out.stdout.strip()).resolve().parent.parent


async def _alternate(runs: dict[str, _Running], case: _Case, sessions: int) -> dict[str, dict[str, float | None]]:
    names = node_names(case.parties)
    words = triple_words(case.parties, vote_bits(case.parties), 1)   # the vote's (the sum takes none)
    times: dict[str, list[float]] = {k: [] for k in runs}
    ticks: dict[str, int | None] = {k: 0 for k in runs}   # None: /proc could not be read
    coordinators = {k: Coordinator(r.cluster) for k, r in runs.items()}
    try:
        for k, c in coordinators.items():   # the first session of each: base OTs or pair keys, TLS, pools
            if not await case.session(c):
                raise RuntimeError(f"the {k} cluster's first session is wrong")
        for i in range(sessions):
            for k in (("old", "new") if i % 2 else ("new", "old")):
                run = runs[k]
                if case.pools:
                    for other in runs.values():
                        await wait_for_pools(other.cluster, names, words)
                before = _cpu_ticks(run.nodes)
                start = time.perf_counter()
                right = await case.session(coordinators[k])
                times[k].append(time.perf_counter() - start)
                after = _cpu_ticks(run.nodes)
                if not right:
                    raise RuntimeError(f"the {k} cluster's session {i + 1} is wrong")
                counted = ticks[k]
                ticks[k] = None if before is None or after is None or counted is None else \
                    counted + sum(after.values()) - sum(before.values())
    finally:
        for c in coordinators.values():
            await c.close()
    tick = _clock_tick()
    return {k: {"median_ms": 1000 * statistics.median(t), "mean_ms": 1000 * statistics.mean(t),
                "node_cpu_ms_per_session": None if (n := ticks[k]) is None else 1000 * n / tick / sessions,
                "sessions": sessions}
            for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="another checkout of mpc (its root directory)")
    parser.add_argument("--case", choices=("vote", "sum"), default="vote",
                        help="vote: 3 nodes, a vote over --ballots; sum: 4 nodes, the scalar sum (default vote)")
    parser.add_argument("--sessions", type=int, default=300, help="sessions on each cluster (default 300)")
    parser.add_argument("--ballots", type=int, default=1000, help="ballots per vote, split among 3 nodes")
    args = parser.parse_args()
    old = args.old.resolve()
    if not (old / "mpc" / "__init__.py").is_file():
        parser.error(f"--old {args.old}: no mpc package there (give the root of a checkout)")
    if old == HERE:
        parser.error(f"--old {args.old} is this checkout: give another one")
    if args.sessions < 1:
        parser.error(f"--sessions {args.sessions}: at least 1")
    if args.case == "vote" and args.ballots < 3:
        parser.error(f"--ballots {args.ballots}: at least one per node (3)")
    case = _case(args.case, args.ballots)
    names = node_names(case.parties)
    paths = {"old": str(old), "new": None}   # each cluster's PYTHONPATH (None: none)
    saved, cwd = os.environ.pop("PYTHONPATH", None), os.getcwd()
    ours = os.environ.pop("GRPC_EXPERIMENTS", None)   # what this checkout's mpc set, for the coordinator
    if STARTED_WITH is not None:
        os.environ["GRPC_EXPERIMENTS"] = STARTED_WITH
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
                runs[label] = stack.enter_context(_running(names, case.inputs, case.bounds))
        finally:
            os.environ.pop("PYTHONPATH", None)
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
            os.environ.pop("GRPC_EXPERIMENTS", None)
            if ours is not None:
                os.environ["GRPC_EXPERIMENTS"] = ours
        try:
            results = aio.run(_alternate(runs, case, args.sessions))
        finally:
            os.chdir(cwd)
    for label in ("old", "new"):
        print(json.dumps({"version": label, "case": args.case, "checkout": str(old if label == "old" else HERE),
                          **results[label]}))
    old_ms, new_ms = results["old"]["median_ms"], results["new"]["median_ms"]
    assert old_ms is not None and new_ms is not None   # every session is timed
    ratio = old_ms / new_ms
    cpu = {k: "unknown" if (ms := results[k]["node_cpu_ms_per_session"]) is None else f"{ms:.1f} ms" for k in results}
    print(f"median {args.case}: old {old_ms:.2f} ms, new {new_ms:.2f} ms (old/new {ratio:.2f}x); nodes' CPU per "
          f"session: old {cpu['old']}, new {cpu['new']}")


if __name__ == "__main__":
    main()
