"""`mpc demo`: four engineers compare raises without telling each other (DESIGN.md §1).

Starts four local node daemons over mutual TLS on loopback, has each engineer store their
raise at their own node, runs the secure sum and average, prints them, and stops every
process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from mpc.config import load_cluster
from mpc.coordinator.client import Coordinator
from mpc.inputs import put_values
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.store import Store

RAISES = {"alice": "3800", "bob": "2514", "carlos": "2982", "david": "3390"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` command."""
    p = sub.add_parser("demo", help="run the raises example on four local nodes over mutual TLS")
    p.add_argument("--dir", type=Path, default=None, help="work directory to use and keep (default: a temporary one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end."""
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mpc-demo-"))
    try:
        return _demo(workdir)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(workdir: Path) -> int:
    names = list(RAISES)
    cluster_file = write_local_cluster(workdir, names)
    cluster = load_cluster(cluster_file)
    print(f"cluster: {cluster_file} (private CA and one certificate per node in {workdir / 'certs'})")
    for name, value in RAISES.items():
        # What `mpc input put raise VALUE --cluster ... --node NAME` does, on NAME's own machine.
        data_dir = cluster.node(name).data_dir
        if data_dir is None:  # write_local_cluster always sets it
            raise RuntimeError(f"node {name} has no data_dir")
        with Store.open_dir(data_dir) as store:
            put_values(store, "raise", [value], scalar=True, overwrite=True)
        print(f"  {name:<7} stores their raise in their own node's store (it never leaves in the clear)")
    nodes = NodeProcesses(cluster_file, workdir / "logs")
    try:
        nodes.start_all(names)
        print("four node daemons up: " + ", ".join(f"{n} {cluster.node(n).address}" for n in names))

        async def compute() -> None:
            async with Coordinator(cluster) as coordinator:
                total = await coordinator.sum("raise")
                print(f"secure sum of the raises: {total.value}")
                avg = await coordinator.average("raise")
                print(f"average raise: {avg.average}  (revealed: sum {avg.total} over {avg.count} engineers)")

        asyncio.run(compute())
    finally:
        codes = nodes.stop_all()
        print(f"stopped {len(codes)} node daemons (exit codes {sorted(set(codes.values()), key=str)})")
    return 0
