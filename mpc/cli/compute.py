"""`mpc sum`, `mpc average`, `mpc status`: the coordinator's commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mpc.cli.helptext import seconds, when_shown
from mpc.cli.inputs import NEGATIVE_NUMBERS
from mpc.cli.progress import TerminalProgress
from mpc.errors import InputError

# The coordinator (grpc, numpy) is imported by the commands that run it (see mpc/cli/app.py).
if TYPE_CHECKING:
    from mpc.coordinator.client import (
        AuctionResult,
        AverageResult,
        ClearingResult,
        Coordinator,
        HistogramResult,
        InputStatus,
        IntersectionResult,
        NodeStatus,
        PluralityResult,
        Privacy,
        SumResult,
        ThresholdResult,
        VoteResult,
    )
    from mpc.dp import NoiseReport

T = TypeVar("T")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_privacy_arguments(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("differential privacy", f"release {what} with binomial noise made inside MPC; it "
                                                     f"spends from each owner's budget of the input (mpc budget)")
    g.add_argument("--epsilon", type=_real, default=None, metavar="E", help="privacy loss per release, 0 < E <= 10")
    delta = g.add_argument("--delta", type=_real, default=None, metavar="D")

    def delta_help() -> None:
        from mpc.coordinator.client import DEFAULT_DELTA
        delta.help = f"failure probability, 0 < D < 1 (default {DEFAULT_DELTA:g})"

    when_shown(p, delta_help)
    g.add_argument("--noise", choices=("joint", "local"), default="joint",
                   help="joint (default): one noise made by all nodes together, as a trusted curator's; local: "
                        "each node adds its own full noise (faster for long vectors, n times the variance)")


def privacy_from(args: argparse.Namespace) -> Privacy | None:
    if args.epsilon is None:
        if args.delta is not None or args.noise != "joint":
            raise SystemExit(f"mpc {args.command}: --delta and --noise need --epsilon")
        return None
    from mpc.coordinator.client import DEFAULT_DELTA, Privacy

    privacy = Privacy(args.epsilon, DEFAULT_DELTA if args.delta is None else args.delta, args.noise)
    try:
        privacy.check()
    except InputError as exc:
        raise SystemExit(f"mpc {args.command}: {exc}") from None
    return privacy


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number, got {text!r}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the coordinator commands."""
    s = sub.add_parser("sum", help="secure sum of an input over all nodes (elementwise for vectors)")
    s.add_argument("name", help="input name, stored at every node")
    s.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    add_privacy_arguments(s, "the sum")
    _common(s)
    s.set_defaults(run=run_sum)
    a = sub.add_parser("average", help="secure average; reveals the sum and the record count",
                       description="By default the mean over every record at every node (a node's vector "
                                   "is its records). --elementwise averages equal-length vectors across nodes.")
    a.add_argument("name")
    a.add_argument("--elementwise", action="store_true", help="elementwise mean of one vector per node")
    a.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    add_privacy_arguments(a, "the sum(s) (the record count stays exact)")
    _common(a)
    a.set_defaults(run=run_average)
    v = sub.add_parser("vote", help="threshold vote on stored ballots (0/1): prints only YES or NO; or with "
                                    "--options a plurality vote",
                       description="Default rule: YES if at least half of the ballots cast are 1. Neither the "
                                   "tally nor the number of ballots is revealed, only YES/NO. --threshold K: "
                                   "YES if at least K ballots are 1. --options A,B,C: each ballot is an option "
                                   "index 0, 1, 2 (stored with mpc input put --options 3); prints the count per "
                                   "option, or with --winner-only the winning option alone (ties: the first "
                                   "option).")
    v.add_argument("name", help="ballot input name, stored at every node")
    v.add_argument("--threshold", type=int, default=None, metavar="K", help="YES if at least K yes-ballots")
    v.add_argument("--options", type=option_names, default=None, metavar="A,B,...",
                   help="plurality vote over these options")
    v.add_argument("--winner-only", action="store_true", dest="winner_only",
                   help="with --options: open the winning option alone, not the counts")
    v.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    add_privacy_arguments(v, "a plurality vote's counts (with --options)")
    _common(v)
    v.set_defaults(run=run_vote)
    t = sub.add_parser("threshold", help="for each element of a vector input: is the sum over nodes >= K?",
                       description="Batched secure comparison: prints one 0/1 per element; the sums stay secret.")
    t.add_argument("name")
    t.add_argument("--at-least", type=int, required=True, metavar="K", dest="at_least")
    t.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    _common(t)
    t.set_defaults(run=run_threshold)
    au = sub.add_parser("auction", help="sealed-bid auction over every node's bids: prints the winner and the price",
                        description="Each node's input is a vector of integer bids. Prints the winning node, the "
                                    "bid's index there and the price: the highest bid, or with --second-price the "
                                    "second-highest (Vickrey). Nothing about a losing bid is opened. Ties: the "
                                    "bid that comes first (by node name, then index) wins.")
    au.add_argument("name", help="bid input name, stored at every node")
    au.add_argument("--second-price", action="store_true", dest="second_price", help="Vickrey: pay the second bid")
    au.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
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
    cp.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    _common(cp)
    cp.set_defaults(run=run_clearing_price)
    h = sub.add_parser("histogram", help="records per public bin over every node (with --epsilon: noisy counts)",
                       description="Bins are given by their integer edges E1 < E2 < ... < Ek+1: [E1,E2), ..., "
                                   "[Ek,Ek+1]. Records below E1 count in the first bin and above Ek+1 in the last. "
                                   "With --epsilon every count gets binomial noise made inside MPC (one record "
                                   "moving to another bin moves two counts by 1: each is noised for epsilon/2), "
                                   "over inputs whose owners set dp_per_element (each record a different "
                                   "person's). Without it the exact counts, only where every owner's policy sets "
                                   "exact_histograms (fine bins would open the values).")
    h.add_argument("name", help="input name, stored at every node with declared bounds")
    h.add_argument("--bins", type=_integers, required=True, metavar="E1,E2,...", help="bin edges, increasing")
    h._negative_number_matcher = NEGATIVE_NUMBERS
    h.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    add_privacy_arguments(h, "the counts")
    _common(h)
    h.set_defaults(run=run_histogram)
    i = sub.add_parser("intersect", help="private set intersection of every node's set: its size (default), the "
                                         "common members to named nodes, or a sum over it",
                       description="Each node's input is a set of identifiers (mpc input put-set). --reveal size "
                                   "prints how many identifiers every node has in common; --reveal members delivers "
                                   "the common identifiers to the nodes named by --to only (each writes them to "
                                   "DATA_DIR/intersections/), never to the coordinator; --reveal sum prints the "
                                   "size and the sum of the associated values over the intersection. Each owner's "
                                   "policy says which it allows (reveal; default: size only).")
    i.add_argument("name", help="set input name, stored at every node")
    i.add_argument("--reveal", choices=("size", "members", "sum"), default="size")
    i.add_argument("--to", type=_node_names, default=[], metavar="NODE,...",
                   help="with --reveal members: the nodes that receive the common identifiers (of three nodes or "
                        "more, not all: one that receives none compares the masked lists)")
    i.add_argument("--timeout", type=seconds, default=None, help="session deadline in seconds")
    _common(i)
    i.set_defaults(run=run_intersect)
    st = sub.add_parser("status", help="health, version and offered inputs (names and shapes) of every node")
    _common(st)
    st.set_defaults(run=run_status)
    b = sub.add_parser("budget", help="each input's differential-privacy budget at a node: spent and left",
                       description="What the node's DP releases have spent of each input's (epsilon, delta) budget "
                                   "(all its versions), what is left, and whether its owner allows exact releases.")
    b.add_argument("--node", required=True, help="the node to ask")
    _common(b)
    b.set_defaults(run=run_budget)


def option_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"need at least two distinct, non-empty option names, got {text!r}")
    return names


def _node_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"need distinct, comma-separated node names, got {text!r}")
    return names


def _integers(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated integers, got {text!r}") from None


def _with_coordinator(args: argparse.Namespace, job: Callable[[Coordinator], Awaitable[T]]) -> T:
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.coordinator.client import Coordinator

    cluster = load_cluster(args.cluster)
    show = None
    if args.command != "status" and TerminalProgress.wanted(args.json):
        show = TerminalProgress(f"mpc {args.command} {args.name}")

    async def go() -> T:
        async with Coordinator(cluster, progress=show) as coordinator:
            return await job(coordinator)

    try:
        return aio.run(go())
    finally:
        if show is not None:
            show.close()


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _noise_line(noise: NoiseReport) -> str:
    rounding = f"; the nodes' rounding to its unit, std at most {noise.rounding_std:.4g}" if noise.rounding_std else ""
    return (f"differentially private: epsilon {noise.epsilon:g}, delta {noise.delta:g}; {noise.mode} binomial noise "
            f"with std {noise.std:.4g} (a trusted curator's: {noise.central_std:.4g}); 95% of the noise within "
            f"+-{noise.interval:.4g}{rounding}")


def _fmt_noisy(value: object, noise: NoiseReport | None) -> str:
    if noise is None:
        return _fmt(value)
    return f"{_fmt(value)} +- {noise.error_interval:.4g} (95%)"


def run_sum(args: argparse.Namespace) -> int:
    """Print the secure sum (and its noise, for a DP release)."""
    privacy = privacy_from(args)
    result: SumResult = _with_coordinator(args, lambda c: c.sum(args.name, privacy=privacy, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(_fmt_noisy(result.value, result.noise))
    if result.noise is not None:
        print(_noise_line(result.noise))
    return 0


def run_average(args: argparse.Namespace) -> int:
    """Print the secure average and what it revealed (and its noise, for a DP release)."""
    privacy = privacy_from(args)
    result: AverageResult = _with_coordinator(
        args, lambda c: c.average(args.name, elementwise=args.elementwise, privacy=privacy, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
    elif result.noise is None:
        print(f"{_fmt(result.average)}  (revealed: sum {_fmt(result.total)}, count {result.count})")
    else:
        print(f"{_fmt_noisy(result.average, result.noise)}  (revealed: noisy sum {_fmt(result.total)}, exact count "
              f"{result.count})")
        print(_noise_line(result.noise))
    return 0


def run_histogram(args: argparse.Namespace) -> int:
    """Print the count per bin (and its noise, for a DP release)."""
    privacy = privacy_from(args)
    result: HistogramResult = _with_coordinator(
        args, lambda c: c.histogram(args.name, args.bins, privacy=privacy, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    edges = result.edges
    for i, count in enumerate(result.counts):
        close = "]" if i == len(result.counts) - 1 else ")"
        print(f"[{edges[i]}, {edges[i + 1]}{close}: {count}")
    if result.noise is not None:
        print(_noise_line(result.noise))
    return 0


def run_vote(args: argparse.Namespace) -> int:
    """Print YES or NO, or a plurality vote's counts or winner."""
    if args.options is not None:
        return _run_plurality(args)
    if args.winner_only:
        raise SystemExit("mpc vote: --winner-only needs --options")
    if args.epsilon is not None:
        raise SystemExit("mpc vote: --epsilon needs --options (a yes/no vote opens one bit, not a count)")
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
    privacy = privacy_from(args)
    result: PluralityResult = _with_coordinator(
        args, lambda c: c.plurality(args.name, len(options), winner_only=args.winner_only, privacy=privacy,
                                    timeout_s=args.timeout))
    print_plurality(result, options, args.json)
    return 0


def print_plurality(result: PluralityResult, options: list[str], as_json: bool) -> None:
    """Print a plurality vote's counts per option (or its winner alone), named."""
    if as_json:
        out = result.as_dict()
        out["option_names"] = options
        out["winner_name"] = options[result.winner]
        print(json.dumps(out))
    elif result.counts is None:
        print(options[result.winner])
    else:
        for name, count in zip(options, result.counts):
            print(f"{name}: {count}")
        if result.noise is not None:
            print(_noise_line(result.noise))


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


def run_intersect(args: argparse.Namespace) -> int:
    """Print the intersection's size (and sum), or where its members went."""
    if (args.reveal == "members") != bool(args.to):
        raise SystemExit("mpc intersect: --reveal members needs --to NODE,..., and --to needs --reveal members")
    result: IntersectionResult = _with_coordinator(
        args, lambda c: c.intersect(args.name, reveal=args.reveal, to=args.to, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(result.as_dict()))
    elif result.reveal == "sum":
        print(f"{result.size} in common; sum over them: {result.total}")
    elif result.reveal == "members":
        print(f"{result.size} in common; the common identifiers went to {', '.join(result.delivered_to or [])} "
              f"only (each in its data directory, intersections/)")
    else:
        print(result.size)
    return 0


def _shape(i: InputStatus) -> str:
    if i.length is None:   # ballots or options: their number is shown to no other party
        left = "" if i.budget is None else f" (epsilon left {i.budget['epsilon_left']})"
        return f"{i.name}[{i.kind}] v{i.version}{left}"
    shape = i.name if i.scalar else f"{i.name}[{i.length}]"
    if i.kind != "number":
        shape += f"[{i.kind}]"
    bounds = "bounds undeclared" if i.bounds is None else f"{_fmt(i.bounds[0])}..{_fmt(i.bounds[1])}"
    left = "" if i.budget is None else f", epsilon left {i.budget['epsilon_left']}"
    return f"{shape} v{i.version} ({bounds}{left})"


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
            for c in n.collections:   # how many submissions a node stores is public by design
                print(f"{'':<12} collection {c.name}: {c.submissions} submissions stored "
                      f"({c.kind}, minimum batch {c.min_batch}, {'closed' if c.closed else 'open'})")
    return 0 if all(n.healthy for n in nodes) else 1


def run_budget(args: argparse.Namespace) -> int:
    """Print one node's DP budget per input; exit 1 if the node is down or unknown."""
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.coordinator.client import Coordinator

    cluster = load_cluster(args.cluster)
    if args.node not in cluster.nodes:
        raise SystemExit(f"mpc budget: no node {args.node!r} in the cluster file (nodes: {', '.join(cluster.nodes)})")

    async def go() -> list[NodeStatus]:
        async with Coordinator(cluster) as coordinator:
            return await coordinator.status(nodes=[args.node])

    node = aio.run(go())[0]
    if not node.healthy:
        print(f"mpc budget: node {node.name} is down: {node.error}", file=sys.stderr)
        return 1
    rows = [(i.name, i.budget) for i in node.inputs if i.budget is not None]
    if args.json:
        print(json.dumps({"node": node.name, "inputs": {name: budget for name, budget in rows}}))
        return 0
    print(f"{'input':<24} {'epsilon spent':>14} {'left':>10} {'delta spent':>12} {'left':>10}  exact releases")
    for name, b in rows:
        print(f"{name:<24} {b['epsilon_spent']:>14} {b['epsilon_left']:>10} {b['delta_spent']:>12} "
              f"{b['delta_left']:>10}  {'allowed' if b['exact_allowed'] else 'refused (DP only)'}")
    return 0
