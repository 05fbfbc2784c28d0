"""`mpc input put|put-set|list|rm`: manage this node's private inputs, on the node's own machine."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mpc.cli.helptext import when_shown
from mpc.errors import ConfigError

# The store, the encoding and mpc.inputs (numpy) are imported by the commands that use them
# (see mpc/cli/app.py).
if TYPE_CHECKING:
    from mpc.store import InputInfo, Store


def open_store(args: argparse.Namespace, *, must_exist: bool = False) -> Store:
    """The store of the node named by --node (with --cluster) or --data-dir.

    Args:
        must_exist: refuse to create a missing store (a reader given a mistyped directory
            must not report an empty one).
    Raises: ConfigError if neither is given, the node has no data_dir, or (must_exist) there
    is no store there; StoreError.
    """
    from mpc.config import load_cluster
    from mpc.store import FILE_NAME, Store

    if args.data_dir is not None and args.node is not None:   # which one was meant? never another node's store
        raise ConfigError(f"say which node's store to use either with --node ({args.node}) or with --data-dir "
                          f"({args.data_dir}), not both")
    if args.data_dir is not None:
        data_dir = args.data_dir
    elif args.node is None:
        raise ConfigError("say which node's store to use: --node NAME (with --cluster FILE) or --data-dir DIR")
    else:
        cluster = load_cluster(args.cluster)
        data_dir = cluster.node(args.node).data_dir
        if data_dir is None:
            raise ConfigError(f"{cluster.path}: node {args.node!r} has no data_dir")
    if must_exist and not (Path(data_dir) / FILE_NAME).is_file():
        raise ConfigError(f"no node store at {Path(data_dir) / FILE_NAME} (is the data directory right?)")
    return Store.open_dir(data_dir)


# What argparse should read as a (negative) value rather than an option: "-5", "-1000,1000", "-5,0,5",
# "-1e5", "-1e6,1e6"; and "-inf", "-nan", so that the value's own check names them.
NEGATIVE_NUMBERS = re.compile(r"^-([0-9.][0-9.,eE+-]*|inf|infinity|nan)$", re.IGNORECASE)


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """Add --cluster/--node/--data-dir: which node's local store a command opens."""
    p.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    p.add_argument("--node", help="this machine's node name in the cluster file")
    p.add_argument("--data-dir", type=Path, default=None, help="the node's data directory (instead of --node)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `input` command group."""
    p = sub.add_parser("input", help="store or list this node's private inputs (local only, no network)")
    isub = p.add_subparsers(dest="input_command", required=True, metavar="ACTION")
    put = isub.add_parser("put", help="store a private scalar or vector in this node's local store",
                          description="One VALUE makes a scalar, several make a vector; --csv reads a column. "
                                      "Integers stay exact; any real switches to fixed point with "
                                      "--frac-bits fractional bits (default 16).")
    put.add_argument("name", help="input name, e.g. raise")
    put.add_argument("values", nargs="*", metavar="VALUE",
                     help="decimal values; a lone - reads them from standard input (whitespace-separated), which "
                          "keeps them out of the process list and the shell's history")
    put.add_argument("--csv", type=Path, help="read the values from this CSV file (with a header row)")
    put.add_argument("--column", help="CSV column name or 1-based number")
    put.add_argument("--frac-bits", type=int, default=None, help="fixed-point fractional bits (0..32)")
    put.add_argument("--vector", action="store_true", help="store a single VALUE as a vector of length 1")
    put.add_argument("--overwrite", action="store_true",
                     help="replace an existing input of that name (a new version, with a fresh release budget)")
    put.add_argument("--bounds", metavar="LO,HI", default=None,
                     help="declared public bounds of every value (default -2147483647,2147483647); sessions are "
                          "checked against them, never against the values")
    # Values and bounds may start below zero ("--bounds -1000,1000", "VALUE... -5 -30"): let argparse
    # read them as values, not as options.
    put._negative_number_matcher = NEGATIVE_NUMBERS
    kind = put.add_mutually_exclusive_group()
    kind.add_argument("--ballots", action="store_true",
                      help="the values are ballots (0 or 1) for `mpc vote`: only a vote may use them unless the "
                           "node's policy says otherwise, and their number is never shown")
    kind.add_argument("--options", type=int, default=None, metavar="K",
                      help="the values are ballots for a plurality vote over K options, each an index 0..K-1 "
                           "(`mpc vote NAME --options A,B,...`); no node shows their number to anyone")
    kind.add_argument("--curve", action="store_true",
                      help="the values are a net-demand curve over a price grid for `mpc clearing-price` (demand "
                           "positive, supply negative); refused if it ever increases")
    kind.add_argument("--bids", action="store_true",
                      help="the values are sealed bids (integers) for `mpc auction`")
    add_store_arguments(put)
    put.set_defaults(run=run_put)
    ps = isub.add_parser(
        "put-set", help="store a set of identifiers (with optional integer values) for `mpc intersect`")

    def put_set_description() -> None:
        from mpc.inputs import IDENTIFIER_RULES
        ps.description = (
            "Reads the identifiers of one CSV column, each optionally with an integer value from another. "
            f"Identifiers are normalised by one rule, which every node of an intersection must use: by "
            f"default {IDENTIFIER_RULES['exact']}; with --casefold, {IDENTIFIER_RULES['casefold']}. "
            f"Blank cells, identifiers empty after normalisation, longer than 256 bytes or containing a "
            f"control character, and duplicates (unless merged) are refused, naming the line. The set's "
            f"size is public, as an input's length is; its identifiers are never shown.")

    when_shown(ps, put_set_description)
    ps.add_argument("name", help="input name, e.g. patients")
    ps.add_argument("--csv", type=Path, required=True, help="the CSV file (with a header row)")
    ps.add_argument("--column", required=True, help="the identifiers' column: header name or 1-based number")
    ps.add_argument("--value-column", default=None,
                    help="a column of integer values, one per identifier (for `--reveal sum`); default: none")
    ps.add_argument("--casefold", action="store_true",
                    help="normalise identifiers: NFKC, strip surrounding whitespace, case-fold (default: exact bytes)")
    ps.add_argument("--merge-duplicates", action="store_true",
                    help="keep the first occurrence of a repeated identifier and add the values (default: refuse)")
    ps.add_argument("--bounds", metavar="LO,HI", default=None,
                    help="declared public bounds of every value (integers; default -2147483647,2147483647); "
                         "needs --value-column")
    ps.add_argument("--overwrite", action="store_true",
                    help="replace an existing input of that name (a new version, with a fresh release budget)")
    ps._negative_number_matcher = NEGATIVE_NUMBERS
    add_store_arguments(ps)
    ps.set_defaults(run=run_put_set)
    ls = isub.add_parser("list", help="list input names and shapes (never values)")
    ls.add_argument("--json", action="store_true")
    add_store_arguments(ls)
    ls.set_defaults(run=run_list)
    rm = isub.add_parser("rm", help="delete an input")
    rm.add_argument("name")
    add_store_arguments(rm)
    rm.set_defaults(run=run_rm)


def run_put(args: argparse.Namespace) -> int:
    """Store the values."""
    from mpc.inputs import parse_bounds, put_csv, put_values

    if args.csv is not None:
        if args.values:
            raise ConfigError("give values either on the command line (or -) or with --csv, not both")
        if not args.column:
            raise ConfigError("--csv needs --column NAME")
    elif args.values == ["-"]:
        args.values = values_from_stdin(f"input {args.name!r}")
    elif not args.values:
        raise ConfigError(f"no values for input {args.name!r}: give VALUE..., - (standard input) or --csv FILE "
                          f"--column NAME")
    bounds = None if args.bounds is None else parse_bounds(args.bounds)
    kind = "ballots" if args.ballots else "curve" if args.curve else "bids" if args.bids else "number"
    if args.options is not None:
        if bounds is not None:
            raise ConfigError("--options K declares the bounds 0,K-1 itself; leave out --bounds")
        kind, bounds = "options", ("0", str(args.options - 1))
    scalar = args.csv is None and len(args.values) == 1 and not args.vector and kind == "number"
    with open_store(args) as store:
        if args.csv is not None:
            count, bits = put_csv(store, args.name, args.csv, args.column, frac_bits=args.frac_bits,
                                           overwrite=args.overwrite, bounds=bounds, kind=kind)
        else:
            count, bits = put_values(store, args.name, args.values, frac_bits=args.frac_bits,
                                              scalar=scalar, overwrite=args.overwrite, bounds=bounds, kind=kind)
        info = next(i for i in store.list_inputs() if i.name == args.name)
    shape = kind if kind != "number" else ("scalar" if scalar else "vector")
    shape += f" of {count}" if not scalar else ""
    scale = "exact integers" if bits == 0 else f"fixed point, {bits} fractional bits"
    print(f"stored {args.name!r} version {info.version}: {shape} ({scale}; bounds {_bounds_text(info)})")
    return 0


def values_from_stdin(what: str) -> list[str]:
    """The whitespace-separated values on standard input (`-` in place of VALUE...: a private value on
    the command line is in the process list, where any local user can read it, and in the shell's
    history). Raises: ConfigError if there are none."""
    values = sys.stdin.read().split()
    if not values:
        raise ConfigError(f"no values for {what} on standard input")
    return values


def run_put_set(args: argparse.Namespace) -> int:
    """Store the set."""
    from mpc.inputs import parse_bounds, put_set_csv

    if args.bounds is not None and args.value_column is None:
        raise ConfigError("--bounds declares the bounds of the values: it needs --value-column")
    bounds = None if args.bounds is None else parse_bounds(args.bounds)
    with open_store(args) as store:
        version = put_set_csv(store, args.name, args.csv, args.column, value_column=args.value_column,
                              normalise="casefold" if args.casefold else "exact",
                              duplicates="merge" if args.merge_duplicates else "refuse",
                              bounds=bounds, overwrite=args.overwrite)
        info = next(i for i in store.list_inputs() if i.name == args.name)
    rule = "case-folded: NFKC, trimmed, casefold" if args.casefold else "exact bytes"
    print(f"stored set {args.name!r} v{version}: {info.length} identifiers ({rule}), {_set_values_text(info)}")
    return 0


def _set_values_text(i: InputInfo) -> str:
    if not i.has_values or i.bounds is None:
        return "no values"
    return f"values declared within {i.bounds[0]}..{i.bounds[1]}"


def run_list(args: argparse.Namespace) -> int:
    """Print the inputs' metadata (a set's size and declared bounds, never its identifiers)."""
    from mpc.encoding import decode_value

    with open_store(args, must_exist=True) as store:   # a mistyped directory is not an empty store
        inputs = store.list_inputs()
    if args.json:
        print(json.dumps([{"name": i.name, "length": i.length, "frac_bits": i.frac_bits, "scalar": i.is_scalar,
                           "updated_at": i.updated_at, "version": i.version, "kind": i.kind,
                           "bounds": None if i.bounds is None else [decode_value(b, i.frac_bits) for b in i.bounds],
                           **({"has_values": i.has_values} if i.kind == "set" else {})}
                          for i in inputs]))
        return 0
    for i in inputs:
        if i.kind == "set":
            print(f"{i.name}\tv{i.version}\tset[{i.length}]\t{i.length} identifiers\t{_set_values_text(i)}\t"
                  f"{i.updated_at}")
            continue
        shape = i.kind if i.kind != "number" else ("scalar" if i.is_scalar else "vector")
        shape += "" if i.is_scalar else f"[{i.length}]"
        print(f"{i.name}\tv{i.version}\t{shape}\tfrac_bits={i.frac_bits}\tbounds {_bounds_text(i)}\t{i.updated_at}")
    return 0


def _bounds_text(i: InputInfo) -> str:
    from mpc.encoding import decode_value

    if i.bounds is None:
        return "undeclared (store again with --bounds)"
    return ",".join(str(decode_value(b, i.frac_bits)) for b in i.bounds)


def run_rm(args: argparse.Namespace) -> int:
    """Delete one input."""
    with open_store(args, must_exist=True) as store:
        store.delete_input(args.name)
    print(f"deleted {args.name!r}")
    return 0
