"""`mpc node`: run a party daemon until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mpc.config import load_cluster
from mpc.node.daemon import NodeServer


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `node` command."""
    p = sub.add_parser("node", help="run this machine's party daemon (mutual TLS required)")
    p.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    p.add_argument("--name", required=True, help="which node of the cluster file this is")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until asked to stop."""
    cluster = load_cluster(args.cluster)

    async def serve() -> None:
        server = NodeServer(cluster, args.name)
        address = server.config.listen

        def ready(port: int) -> None:
            print(f"node {args.name} serving on {address} (mutual TLS); stop with Ctrl-C or SIGTERM",
                  file=sys.stderr, flush=True)

        await server.serve_forever(ready)

    asyncio.run(serve())
    return 0
