"""`mpc sum`, `mpc average`, `mpc status`: the coordinator's commands."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from mpc.cli.inputs import NEGATIVE_NUMBERS
from mpc.cli.progress import TerminalProgress
from mpc.config import load_cluster
from mpc.coordinator.client import (
    AuctionResult,
    AverageResult,
    ClearingResult,
    Coordinator,
    InputStatus,
    NodeStatus,
    PluralityResult,
    SumResult,
    ThresholdResult,
    VoteResult,
)

T = TypeVar("T")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the coordinator commands."""
    s = sub.add_parser("sum", help="secure sum of an input over all nodes (elementwise for vectors)")
    s.add_argument("name", help="input name, stored at every node")
    s.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(s)
    s.set_defaults(run=run_sum)
    a = sub.add_parser("average", help="secure average; reveals the sum and the record count",
                       description="By default the mean over every record at every node (a node's vector "
                                   "is its records). --elementwise averages equal-length vectors across nodes.")
    a.add_argument("name")
    a.add_argument("--elementwise", action="store_true", help="elementwise mean of one vector per node")
    a.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(a)
    a.set_defaults(run=run_average)
    v = sub.add_parser("vote", help="threshold vote on stored ballots (0/1): prints only YES or NO; or with "
                                    "--options a plurality vote",
                       description="Default rule: YES if at least half of the ballots cast are 1. Neither the "
                                   "tally nor the number of ballots is revealed, only YES/NO. --threshold K: "
                                   "YES if at least K ballots are 1. --options A,B,C: each ballot is an option "
                                   "index 0, 1, 2 (stored with --bounds 0,2); prints the count per option, or "
                                   "with --winner-only the winning option alone (ties: the first option).")
    v.add_argument("name", help="ballot input name, stored at every node")
    v.add_argument("--threshold", type=int, default=None, metavar="K", help="YES if at least K yes-ballots")
    v.add_argument("--options", type=_names, default=None, metavar="A,B,...", help="plurality vote over these options")
    v.add_argument("--winner-only", action="store_true", dest="winner_only",
                   help="with --options: open the winning option alone, not the counts")
    v.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(v)
    v.set_defaults(run=run_vote)
    t = sub.add_parser("threshold", help="for each element of a vector input: is the sum over nodes >= K?",
                       description="Batched secure comparison: prints one 0/1 per element; the sums stay secret.")
    t.add_argument("name")
    t.add_argument("--at-least", type=int, required=True, metavar="K", dest="at_least")
    t.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(t)
    t.set_defaults(run=run_threshold)
    au = sub.add_parser("auction", help="sealed-bid auction over every node's bids: prints the winner and the price",
                        description="Each node's input is a vector of integer bids. Prints the winning node, the "
                                    "bid's index there and the price: the highest bid, or with --second-price the "
                                    "second-highest (Vickrey). Nothing about a losing bid is opened. Ties: the "
                                    "bid that comes first (node order of the cluster, then index) wins.")
    au.add_argument("name", help="bid input name, stored at every node")
    au.add_argument("--second-price", action="store_true", dest="second_price", help="Vickrey: pay the second bid")
    au.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(au)
    au.set_defaults(run=run_auction)
    cp = sub.add_parser("clearing-price", help="market-clearing price of a double auction on a public price grid",
                        description="Each node's input is its net demand at each grid price (demand positive, "
                                    "supply negative, not increasing with the price). Prints the first price where "
                                    "total net demand is at most 0, or that there is none. Nothing else is opened.")
    cp.add_argument("name", help="net-demand input name, stored at every node (one value per price)")
    cp.add_argument("--prices", type=_integers, required=True, metavar="P1,P2,...", help="the price grid, increasing")
    # A grid may start below zero ("--prices -5,0,5"): let argparse read "-5,0,5" as a value, not an option.
    cp._negative_number_matcher = NEGATIVE_NUMBERS
    cp.add_argument("--timeout", type=float, default=None, help="session deadline in seconds")
    _common(cp)
    cp.set_defaults(run=run_clearing_price)
    st = sub.add_parser("status", help="health, version and offered inputs (names and shapes) of every node")
    _common(st)
    st.set_defaults(run=run_status)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"need at least two distinct, non-empty option names, got {text!r}")
    return names


def _integers(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated integers, got {text!r}") from None


def _with_coordinator(args: argparse.Namespace, job: Callable[[Coordinator], Awaitable[T]]) -> T:
    cluster = load_cluster(args.cluster)
    show = None
    if args.command != "status" and TerminalProgress.wanted(args.json):
        show = TerminalProgress(f"mpc {args.command} {args.name}")

    async def go() -> T:
        async with Coordinator(cluster, progress=show) as coordinator:
            return await job(coordinator)

    try:
        return asyncio.run(go())
    finally:
        if show is not None:
            show.close()


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def run_sum(args: argparse.Namespace) -> int:
    """Print the secure sum."""
    result: SumResult = _with_coordinator(args, lambda c: c.sum(args.name, timeout_s=args.timeout))
    print(json.dumps(result.as_dict()) if args.json else _fmt(result.value))
    return 0


def run_average(args: argparse.Namespace) -> int:
    """Print the secure average and what it revealed."""
    result: AverageResult = _with_coordinator(
        args, lambda c: c.average(args.name, elementwise=args.elementwise, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{_fmt(result.average)}  (revealed: sum {_fmt(result.total)}, count {result.count})")
    return 0


def run_vote(args: argparse.Namespace) -> int:
    """Print YES or NO, or a plurality vote's counts or winner."""
    if args.options is not None:
        return _run_plurality(args)
    if args.winner_only:
        raise SystemExit("mpc vote: --winner-only needs --options")
    result: VoteResult = _with_coordinator(
        args, lambda c: c.vote(args.name, threshold=args.threshold, timeout_s=args.timeout))
    print(json.dumps(result.as_dict()) if args.json else ("YES" if result.passed else "NO"))
    return 0


def run_threshold(args: argparse.Namespace) -> int:
    """Print one 0/1 per element."""
    result: ThresholdResult = _with_coordinator(
        args, lambda c: c.at_least(args.name, args.at_least, timeout_s=args.timeout))
    print(json.dumps(result.as_dict()) if args.json else " ".join(str(int(b)) for b in result.bits))
    return 0


def _run_plurality(args: argparse.Namespace) -> int:
    if args.threshold is not None:
        raise SystemExit("mpc vote: --threshold and --options do not go together")
    options: list[str] = args.options
    result: PluralityResult = _with_coordinator(
        args, lambda c: c.plurality(args.name, len(options), winner_only=args.winner_only, timeout_s=args.timeout))
    if args.json:
        out = result.as_dict()
        out["option_names"] = options
        out["winner_name"] = options[result.winner]
        print(json.dumps(out))
    elif result.counts is None:
        print(options[result.winner])
    else:
        for name, count in zip(options, result.counts):
            print(f"{name}: {count}")
    return 0


def run_auction(args: argparse.Namespace) -> int:
    """Print the winner and the price."""
    result: AuctionResult = _with_coordinator(
        args, lambda c: c.auction(args.name, second_price=args.second_price, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        what = "second-highest bid" if result.pricing == "second" else "highest bid"
        print(f"winner: node {result.winner_node}, bid {result.winner_index}; price {result.price} ({what})")
    return 0


def run_clearing_price(args: argparse.Namespace) -> int:
    """Print the clearing price, or that there is none."""
    result: ClearingResult = _with_coordinator(
        args, lambda c: c.clearing_price(args.name, args.prices, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
    elif result.price is None:
        print("no clearing price: demand exceeds supply at every price of the grid")
    else:
        print(result.price)
    return 0


def _shape(i: InputStatus) -> str:
    if i.length is None:   # ballots or options: their number is shown nowhere
        return f"{i.name}[{i.kind}] v{i.version}"
    shape = i.name if i.scalar else f"{i.name}[{i.length}]"
    if i.kind != "number":
        shape += f"[{i.kind}]"
    bounds = "bounds undeclared" if i.bounds is None else f"{_fmt(i.bounds[0])}..{_fmt(i.bounds[1])}"
    return f"{shape} v{i.version} ({bounds})"


def run_status(args: argparse.Namespace) -> int:
    """Print each node's status; exit 1 if any node is down."""
    nodes: list[NodeStatus] = _with_coordinator(args, lambda c: c.status())
    if args.json:
        print(json.dumps([n.as_dict() for n in nodes]))
    else:
        for n in nodes:
            if not n.healthy:
                print(f"{n.name:<12} {n.address:<22} DOWN  {n.error}")
                continue
            offered = ", ".join(_shape(i) for i in n.inputs)
            print(f"{n.name:<12} {n.address:<22} up    v{n.version}  sessions={n.active_sessions}  "
                  f"cert until {n.cert_not_after[:10]}  inputs: {offered or '-'}")
    return 0 if all(n.healthy for n in nodes) else 1
