"""`mpc demo`: four engineers compare raises without telling each other, then a referendum
(DESIGN.md §1).

Starts four local node daemons over mutual TLS on loopback, has each engineer store their
raise (and each node its voters' ballots and its bidders' sealed bids) at their own node, runs
the secure sum, average (exact, and differentially private with epsilon 1), threshold votes and a
first- and second-price auction, prints them, and stops every process it started.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RAISES = {"alice": "3800", "bob": "2514", "carlos": "2982", "david": "3390"}
# A referendum: each node holds the ballots of its own voters (1 = for).
REFERENDUM = {"alice": ["1", "0", "1"], "bob": ["1", "1"], "carlos": ["0", "0", "1"], "david": ["1"]}
# Each owner's policy: by default an input version takes part in one distinct query, over every
# node of the cluster. The referendum is asked two questions (at least half? at least 7?), so its
# owners allow exactly those two thresholds; any other threshold would be refused.
REFERENDUM_POLICY = """[nodes.{name}.policy.per_input.referendum]
max_releases = 2
thresholds = ["half", 7]
[nodes.{name}.policy.per_input.bids]
max_releases = 2"""
# A sealed-bid auction for a contract: each node holds its bidders' sealed bids. The bids are run
# as a first-price and as a second-price auction, two distinct releases, which the owners allow.
BIDS = {"alice": ["410", "385"], "bob": ["450"], "carlos": ["395", "440", "300"], "david": ["420"]}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` command."""
    p = sub.add_parser("demo", help="run the raises, referendum and auction examples on four local nodes over "
                                    "mutual TLS")
    p.add_argument("--dir", type=Path, default=None, help="work directory to use and keep (default: a temporary one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end."""
    import shutil
    import tempfile

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mpc-demo-"))
    try:
        return _demo(workdir)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(workdir: Path) -> int:
    # Imported here, not at the top, as they are slow to import (see mpc/cli/app.py).
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.coordinator.client import Coordinator, Privacy
    from mpc.inputs import put_values
    from mpc.localcluster import NodeProcesses, write_local_cluster
    from mpc.store import Store

    names = list(RAISES)
    cluster_file = write_local_cluster(workdir, names,
                                       policies={n: REFERENDUM_POLICY.format(name=n) for n in names})
    cluster = load_cluster(cluster_file)
    print(f"cluster: {cluster_file} (private CA and one certificate per node in {workdir / 'certs'})")
    for name, value in RAISES.items():
        # What `mpc input put raise VALUE --cluster ... --node NAME` does, on NAME's own machine.
        data_dir = cluster.node(name).data_dir
        if data_dir is None:  # write_local_cluster always sets it
            raise RuntimeError(f"node {name} has no data_dir")
        with Store.open_dir(data_dir) as store:
            put_values(store, "raise", [value], scalar=True, overwrite=True, bounds=("0", "10000"))
            put_values(store, "referendum", REFERENDUM[name], overwrite=True, ballots=True)
            put_values(store, "unanimous", ["1"] * len(REFERENDUM[name]), overwrite=True, ballots=True)
            put_values(store, "bids", BIDS[name], overwrite=True, bounds=("0", "1000000"), kind="bids")
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
                private = await coordinator.average("raise", privacy=Privacy(1.0))
                assert private.noise is not None
                print(f"average raise, differentially private (epsilon 1, noise made inside MPC): "
                      f"{private.average:.0f} +- {private.noise.error_interval:.0f} (95%), next to the exact {avg.average}")
                print("  (the noise hides any one raise within the declared bounds 0..10000: over four engineers\n"
                      "  it swamps the average; DP pays off over many records. Its first session also set up\n"
                      "  oblivious transfer between every pair of nodes, kept for the votes and auctions below)")
                print("referendum, each node holding its own voters' ballots:")
                vote = await coordinator.vote("referendum")
                print(f"  at least half voted for?  {'YES' if vote.passed else 'NO'}   (nothing else is revealed)")
                vote = await coordinator.vote("referendum", threshold=7)
                print(f"  at least 7 voted for?     {'YES' if vote.passed else 'NO'}")
                vote = await coordinator.vote("unanimous")
                print(f"  a unanimous referendum:   {'YES' if vote.passed else 'NO'}   "
                      "(its tally would have revealed every ballot; the bit does not)")
                print("sealed-bid auction, each node holding its bidders' bids (no losing bid is opened):")
                first = await coordinator.auction("bids")
                print(f"  first price:  bid {first.winner_index} at node {first.winner_node} wins, pays {first.price}")
                second = await coordinator.auction("bids", second_price=True)
                print(f"  second price: bid {second.winner_index} at node {second.winner_node} wins, pays "
                      f"{second.price} (the second-highest bid; the winner's own bid stays secret)")

        aio.run(compute())
    finally:
        codes = nodes.stop_all()
        print(f"stopped {len(codes)} node daemons (exit codes {sorted(set(codes.values()), key=str)})")
    return 0
