"""Which threads of the coordinator and of each node spend the CPU of the 4-party scalar sum of
`make bench` (README "Performance"): the event loop's (the process's main thread), gRPC's
EventEngine threads ("event_engine"), and the rest (gRPC's completion-queue poller, which hands
each completion to the event loop). From /proc/<pid>/task/<tid>/stat (utime + stime, Linux),
read before and after the timed sums; per sum, in ms.

mpc sets GRPC_EXPERIMENTS on import (mpc/__init__.py) for this process and the nodes it starts; to
see what gRPC's own defaults cost, start the script with them named, e.g.

    GRPC_EXPERIMENTS=event_engine_client,event_engine_listener .venv/bin/python benchmarks/grpc_threads.py
    .venv/bin/python benchmarks/grpc_threads.py [--sessions 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpc import aio  # noqa: E402
from mpc.coordinator.client import Coordinator  # noqa: E402

from benchmarks.mpc_runner import RAISES, _clock_tick, _inputs, _running, _Running, node_names, raises_sum  # noqa: E402

WARM_UP = 50   # sums before the timed ones: the first prepares, the next run in one round from plans


def thread_ticks(pid: int) -> dict[tuple[int, str], int]:
    """Clock ticks (user + system) each thread of process `pid` has used, by (thread id, kind)."""
    ticks = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{entry}/stat").read_text()
        except OSError:   # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        tid = int(entry)
        kind = "event loop" if tid == pid else "EventEngine" if name.startswith("event_engine") else "other"
        ticks[(tid, kind)] = int(fields[11]) + int(fields[12])
    return ticks


def by_kind(before: dict[tuple[int, str], int], after: dict[tuple[int, str], int], sums: int) -> dict[str, float]:
    """ms of CPU per sum by thread kind."""
    spent: Counter[str] = Counter()
    for key, ticks in after.items():
        spent[key[1]] += ticks - before.get(key, 0)
    return {kind: round(1000 * spent[kind] / _clock_tick() / sums, 3) for kind in ("event loop", "other", "EventEngine")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000, help="timed sums (default 2000)")
    args = parser.parse_args()
    if args.sessions < 1:
        parser.error(f"--sessions {args.sessions}: at least 1")
    names = node_names(len(RAISES))

    async def timed(run: _Running) -> dict[str, object]:
        async with Coordinator(run.cluster, keyed=True, one_round=True) as coordinator:
            for _ in range(WARM_UP):
                if not await raises_sum(coordinator):
                    raise SystemExit("a warm-up sum opened a wrong result")
            pids = {name: proc.pid for name, proc in run.nodes.procs.items()}
            pids["coordinator"] = os.getpid()
            before = {name: thread_ticks(pid) for name, pid in pids.items()}
            start = time.perf_counter()
            correct = all([await raises_sum(coordinator) for _ in range(args.sessions)])
            wall = time.perf_counter() - start
            after = {name: thread_ticks(pid) for name, pid in pids.items()}
        return {"grpc_experiments": os.environ.get("GRPC_EXPERIMENTS"), "sessions": args.sessions,
                "correct": correct, "mean_ms": round(1000 * wall / args.sessions, 3),
                "cpu_ms_per_sum": {name: by_kind(before[name], after[name], args.sessions) for name in pids}}

    with _running(names, {"x": _inputs(len(RAISES), 1, True)}, (0, 1 << 32)) as run:
        print(json.dumps(aio.run(timed(run))))


if __name__ == "__main__":
    main()
