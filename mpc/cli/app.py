"""`mpc` entry point: builds the parser from the subcommand modules, maps errors to exit codes.

Every command, `mpc --version` included, imports all the subcommand modules to build the parser.
So they import only the standard library and light mpc modules at the top, and each command
imports what it runs (asyncio, grpc, numpy, cryptography, the coordinator, the node) in its own
function: `mpc --version` and `mpc --help` load none of these, `mpc health` no numpy (checked by
tests/unit/test_startup.py). Help text that needs a heavy module is filled in when shown
(mpc/cli/helptext.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mpc import __version__, logs
from mpc.cli import audit, certs, collections, compute, demo, inputs, node
from mpc.cli.output import whole_stdout
from mpc.cli.helptext import MpcParser
from mpc.errors import MpcError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The full `mpc` argument parser."""
    parser = MpcParser(
        prog="mpc", description="Secure multiparty computation: party daemons and a coordinator CLI.")
    parser.add_argument("--version", action="version", version=f"mpc {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="log verbosity on stderr (default: warning)")
    parser.add_argument("--log-format", default="text", choices=list(logs.FORMATS),
                        help="text, or json: one JSON object per line with the session id (default: text)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, certs, node, inputs, collections, compute, audit):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `mpc` command.

    Returns: the process exit code (0 ok, 1 error with a message on stderr, 2 usage).
    """
    # gRPC's core writes lines of its own to stderr, at INFO unless told (e.g. "Got goaway" when a peer
    # stops): they would break --log-format json's one object per line and clutter a terminal. Its
    # errors still show; a GRPC_VERBOSITY of the user's wins. Set before any command imports grpc.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    whole_stdout()   # a result longer than a pipe holds is not cut short (mpc/cli/output.py)
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        code: int = args.run(args)
        return code
    except MpcError as exc:
        print(f"mpc: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`mpc audit | head`): not an error. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("mpc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
