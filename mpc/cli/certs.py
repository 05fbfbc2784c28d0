"""`mpc certs init`: a private CA and one certificate per node and coordinator."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpc.errors import ConfigError


def _node_spec(text: str) -> tuple[str, list[str]]:
    name, _, hosts = text.partition("=")
    return name, [h for h in hosts.split(",") if h] if hosts else [name]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `certs` command group."""
    p = sub.add_parser("certs", help="make a private CA and the cluster's certificates")
    csub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = csub.add_parser("init", help="create the CA (if absent) and issue node and coordinator certificates",
                           description="Keys are written with mode 0600. Each node certificate carries a DNS "
                                       "SAN per host name, the URI SAN spiffe://mpc/node/NAME and its "
                                       "identity as the DNS SAN NAME.node.mpc.invalid (which clients check: "
                                       "certificates issued before it was added must be reissued); the "
                                       "coordinator's carries spiffe://mpc/coordinator/NAME. With an existing "
                                       "CA in --dir, only the named parties' certificates are (re)issued.")
    init.add_argument("--dir", type=Path, required=True, help="directory for ca.pem/ca.key and the certificates")
    init.add_argument("--node", action="append", default=[], metavar="NAME[=HOST[,HOST...]]",
                      help="a node and the host names (or IPs) it is reached by; default host: NAME")
    init.add_argument("--coordinator", action="append", default=[], metavar="NAME",
                      help="a coordinator identity (default: one named 'coordinator')")
    init.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    """Issue the certificates and list what was written."""
    from mpc.pki import init_cluster_certs   # here: it loads cryptography (see mpc/cli/app.py)

    if not args.node:
        raise ConfigError("name at least one node with --node NAME[=HOST,...]")
    nodes = dict(_node_spec(s) for s in args.node)
    written = init_cluster_certs(args.dir, nodes, args.coordinator or ["coordinator"])
    print(f"CA: {args.dir / 'ca.pem'} (key {args.dir / 'ca.key'}, keep it offline)")
    for name, (cert, key) in written.items():
        print(f"{name}: {cert}  {key}")
    return 0
