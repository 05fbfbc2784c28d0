"""Where a node's CPU goes in the 4-party scalar sum of `make bench` (README "Performance").

Four `mpc node` processes with TLS, one coordinator, the sum repeated in one round and keyed, as
in `make bench`. Each node process starts with a sitecustomize (written to a temporary directory
and put first on its PYTHONPATH) that wraps the steps of a session and adds up the CPU time of the
node's event-loop thread (time.thread_time) each takes: reading the request, prepare, the
reservation, the masks' keys, the engine's start, the release record (with the end, for a keyed
sum), the end, and the whole of NodeCore.run around them. A keyed one-round sum waits for nothing
inside run, so its time is the session's own. A repeat whose statement left a plan at the node
runs from it (NodeCore.repeat: "from a plan", with its masks' keys and its record) and not through
run, so the steps above count only the sessions that do. Printed per node and session, with the
nodes' CPU per sum from /proc (everything: gRPC, TLS, the event loop), the median wall time per sum and the
coordinator's CPU per sum.

--profile DIR: each node also runs cProfile on its event-loop thread and writes DIR/<node>.prof
(read with `python -m pstats`); its steps' times then include the profiler's own cost.

--cached-share: every node answers each Run after the first with the share and shape it computed
for the first, doing none of a session's own work. Not a secure computation (the same masked share
every time): an experiment that measures what the coordinator, TLS, the streams and the servicer
cost by themselves.

    .venv/bin/python benchmarks/node_phases.py [--sessions 300] [--cached-share] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpc import aio  # noqa: E402

from benchmarks.mpc_runner import RAISES, _inputs, _running, _timed_sessions, node_names, raises_sum  # noqa: E402

# (label, module, class, method): each wrapped in every node process; "run" holds the others but "request"
# and "from a plan" (a repeat run from its RepeatPlan, without `run`: it holds the mask keys of its session).
STEPS = (
    ("from a plan", "mpc.node.core", "NodeCore", "repeat"),
    ("request", "mpc.node.servicer", "ControlService", "_requested"),
    ("prepare", "mpc.node.core", "NodeCore", "prepare"),
    ("reserve", "mpc.node.releases", "ReleaseBook", "reserve"),
    ("mask keys", "mpc.protocols.pairing", "PairKey", "mask_key"),
    ("engine start", "mpc.protocols.agreement", "AgreedParty", "start"),
    ("release record", "mpc.node.core", "NodeCore", "_release"),
    ("end", "mpc.node.core", "NodeCore", "_finish"),
)

SITECUSTOMIZE = '''
import atexit, functools, importlib, json, os, sys, time
OUT = os.environ.get("MPC_NODE_PHASES")
if OUT and "node" in sys.argv and "--name" in sys.argv:
    totals, calls = {}, {}

    def _add(label, spent):
        totals[label] = totals.get(label, 0.0) + spent
        calls[label] = calls.get(label, 0) + 1

    def _sync(label, f):
        @functools.wraps(f)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                _add(label, time.thread_time() - start)
        return timed

    def _async(label, f):
        @functools.wraps(f)
        async def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return await f(*args, **kwargs)
            finally:
                _add(label, time.thread_time() - start)
        return timed

    for label, module, cls, name in STEPS + (("run", "mpc.node.core", "NodeCore", "run"),):
        owner = getattr(importlib.import_module(module), cls)
        wrap = _async if label == "run" else _sync
        setattr(owner, name, wrap(label, getattr(owner, name)))

    if os.environ.get("MPC_NODE_PHASES_CACHED"):
        servicer = importlib.import_module("mpc.node.servicer").ControlService
        real, kept = servicer._run, []

        async def cached(self, caller, request, statement):
            if not kept:
                kept.append(await real(self, caller, request, statement))
            return kept[0]
        servicer._run = cached
        core = importlib.import_module("mpc.node.core").NodeCore   # no session from a plan either
        core.repeat = lambda self, caller, session_id, statement: None

    profile = None
    if os.environ.get("MPC_NODE_PHASES_PROFILE"):   # the event-loop thread's own calls (this one)
        import cProfile
        profile = cProfile.Profile(time.thread_time)   # CPU: not the waits inside coroutines
        profile.enable()

    @atexit.register
    def _dump():
        node = sys.argv[sys.argv.index("--name") + 1]
        with open(os.path.join(OUT, node + ".json"), "w") as out:
            json.dump({"seconds": totals, "calls": calls}, out)
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.path.join(os.environ["MPC_NODE_PHASES_PROFILE"], node + ".prof"))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=300, help="timed sums after the first (default 300)")
    parser.add_argument("--cached-share", action="store_true",
                        help="nodes answer with their first share, doing no session work (an experiment)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="each node writes a cProfile of its event-loop thread to DIR/<node>.prof")
    args = parser.parse_args()
    if args.sessions < 1:
        parser.error(f"--sessions {args.sessions}: at least 1")
    names = node_names(len(RAISES))

    saved = {k: os.environ.get(k)
             for k in ("PYTHONPATH", "MPC_NODE_PHASES", "MPC_NODE_PHASES_CACHED", "MPC_NODE_PHASES_PROFILE")}
    with tempfile.TemporaryDirectory(prefix="mpc-phases-") as tmp:
        site, out = Path(tmp) / "site", Path(tmp) / "out"
        site.mkdir()
        out.mkdir()
        (site / "sitecustomize.py").write_text(f"STEPS = {STEPS!r}\n" + SITECUSTOMIZE)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), saved["PYTHONPATH"]) if p)
        os.environ["MPC_NODE_PHASES"] = str(out)
        if args.cached_share:
            os.environ["MPC_NODE_PHASES_CACHED"] = "1"
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            os.environ["MPC_NODE_PHASES_PROFILE"] = str(args.profile.resolve())
        own: list[float] = []
        try:
            with _running(names, {"x": _inputs(len(RAISES), 1, True)}, (0, 1 << 32)) as run:
                times, cpu, ok, _ = aio.run(_timed_sessions(run.cluster, run.nodes, args.sessions, raises_sum,
                                                            coordinator_cpu=own))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        found = {n: json.loads((out / f"{n}.json").read_text()) for n in names if (out / f"{n}.json").exists()}
    if len(found) != len(names):
        raise SystemExit(f"the nodes wrote no step times ({sorted(found)} of {names}); did they stop cleanly?")
    node_cpu = [c for c in cpu[1:] if c is not None]
    sessions = args.sessions + 1   # the steps count every session, the first (two rounds, unkeyed) too
    report = {
        "cached_share": args.cached_share, "sessions": args.sessions, "correct": ok,
        "median_ms": 1000 * statistics.median(times[1:]),
        "node_cpu_ms_per_sum_each": None if not node_cpu else 1000 * statistics.mean(node_cpu) / len(names),
        "coordinator_cpu_ms_per_sum": 1000 * statistics.median(own[1:]),
        "node_thread_cpu_us_per_session": {
            label: round(1e6 * statistics.mean(f["seconds"].get(label, 0.0) for f in found.values()) / sessions, 1)
            for label in [s[0] for s in STEPS] + ["run"]},
    }
    print(json.dumps(report))
    steps = report["node_thread_cpu_us_per_session"]
    inside = sum(v for k, v in steps.items() if k not in ("run", "request", "from a plan"))
    print(f"median sum {report['median_ms']:.2f} ms ({'correct' if ok else 'WRONG'}); each node's CPU per sum "
          f"{report['node_cpu_ms_per_sum_each'] or float('nan'):.2f} ms, the coordinator's "
          f"{report['coordinator_cpu_ms_per_sum']:.2f} ms")
    print("a node's event-loop thread per session (mean over the nodes, us): " +
          ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + f"; run beyond its steps {steps['run'] - inside:.0f}")


if __name__ == "__main__":
    main()
