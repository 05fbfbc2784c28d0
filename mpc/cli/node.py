"""`mpc node`: run a party daemon until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpc import logs
from mpc.cli.helptext import seconds

# asyncio, grpc and the node are imported by the commands that run them (see mpc/cli/app.py).


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `node` command."""
    p = sub.add_parser("node", help="run this machine's party daemon (mutual TLS required)")
    p.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    p.add_argument("--name", required=True, help="which node of the cluster file this is")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics over HTTP here (default: the node's `metrics` key; off)")
    p.set_defaults(run=run)

    h = sub.add_parser("health", help="exit 0 if this node's daemon answers the gRPC health check (for healthchecks)")
    h.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    h.add_argument("--name", required=True, help="the node to check, calling with that node's own certificate")
    h.add_argument("--timeout", type=seconds, default=3.0, help="seconds to wait for SERVING (default: 3)")
    h.set_defaults(run=run_health)


def run(args: argparse.Namespace) -> int:
    """Serve until asked to stop."""
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.node.daemon import NodeServer

    cluster = load_cluster(args.cluster)

    async def serve() -> None:
        server = NodeServer(cluster, args.name, metrics_address=args.metrics)
        address = server.config.listen

        def ready(port: int) -> None:
            logs.announce(f"node {args.name} serving on {address} (mutual TLS); stop with Ctrl-C or SIGTERM",
                          args.log_format, "mpc.node")

        await server.serve_forever(ready)

    aio.run(serve())
    return 0


def run_health(args: argparse.Namespace) -> int:
    """Check a node over mutual TLS with its own certificate, as a container healthcheck does.

    Returns: 0 when the node answers SERVING; otherwise PeerUnavailable names it (exit 1).
    """
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.localcluster import wait_healthy
    from mpc.transport.tls import TlsMaterial

    cluster = load_cluster(args.cluster)
    node = cluster.node(args.name)
    aio.run(wait_healthy(cluster, [args.name], args.timeout, TlsMaterial.load(cluster.ca, node.cert, node.key)))
    print(f"node {args.name} at {node.address}: serving")
    return 0
