"""`mpc collection`, `mpc credentials` and `mpc submit`: collections of contributors' shares.

An owner makes a key (`credentials keygen`) and credentials (`credentials issue`), gives one to
each contributor, and has every node's operator create the same collection with the owner's
public key (`collection create`, on the node's machine, like `mpc input put`). A contributor
submits with `mpc submit` (or mpc.client.Contributor): one share per node, never a value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from mpc.cli.compute import add_privacy_arguments, option_names, print_plurality, privacy_from
from mpc.cli.inputs import add_store_arguments, open_store
from mpc.errors import InputError, MpcError, quoted

# The store, the client and the credentials (PyNaCl, numpy, grpc) are imported by the commands that use them.
if TYPE_CHECKING:
    from mpc.client import SubmitReport
    from mpc.store import CollectionSpec

EXIT_NOT_ACCEPTED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `collection`, `credentials` and `submit` commands."""
    p = sub.add_parser("collection", help="create, list or revoke in this node's collections (local only)")
    csub = p.add_subparsers(dest="collection_command", required=True, metavar="ACTION")
    c = csub.add_parser("create", help="create a collection at this node (the same spec at every node)")
    c.add_argument("name")
    c.add_argument("--kind", choices=("ballot", "range", "option"), required=True,
                   help="ballot: each value 0 or 1; range: each value within --lo..--hi; option: one of --options "
                        "K options, submitted as its index 0..K-1")
    c.add_argument("--lo", type=int, default=None, help="smallest value (range)")
    c.add_argument("--hi", type=int, default=None, help="largest value (range)")
    c.add_argument("--options", type=int, default=None, metavar="K", help="how many options (option)")
    c.add_argument("--length", type=int, default=1, help="values per submission (default 1)")
    c.add_argument("--min-batch", type=int, required=True,
                   help="complete submissions needed before anything about the collection is released")
    c.add_argument("--resubmit", choices=("refuse", "replace"), default="refuse",
                   help="a credential's second submission: refused (default) or replaces the first")
    c.add_argument("--owner-pub", type=Path, required=True, help="the collection owner's public key file")
    c.add_argument("--nodes", required=True,
                   help="the nodes that hold its shares, comma-separated (the same at every node); sessions "
                        "over it take exactly these")
    add_store_arguments(c)
    c.set_defaults(run=_create)
    li = csub.add_parser("list", help="this node's collections and how many submissions each holds")
    add_store_arguments(li)
    li.add_argument("--json", action="store_true", help="print JSON")
    li.set_defaults(run=_list)
    k = csub.add_parser("close", help="close a collection at this node: no more submissions; sessions may run")
    k.add_argument("name")
    add_store_arguments(k)
    k.set_defaults(run=_close)
    for action, what in (("sum", "the sum of the valid submissions and how many were valid and complete"),
                         ("average", "the mean of the valid submissions (the same release as the sum: it is "
                                     "the sum over the valid count)"),
                         ("vote", "YES if at least half of the valid ballots are yes, else NO; nothing else; with "
                                  "--options over an option collection, the valid votes per option"),
                         ("threshold", "for each element, whether the valid submissions' sum is at least K"),
                         ("auction", "a sealed-bid auction over a collection of bids: the winning credential and "
                                     "the price")):
        q = csub.add_parser(action, help=f"as the coordinator, over a closed collection: {what}")
        q.add_argument("name")
        if action == "threshold":
            q.add_argument("--at-least", type=int, required=True, metavar="K", help="the public threshold")
        if action == "vote":
            q.add_argument("--options", type=option_names, default=None, metavar="A,B,...",
                           help="name the options of an option collection, in index order: a plurality vote")
            q.add_argument("--winner-only", action="store_true",
                           help="with --options: open the winning option alone, not the counts")
            add_privacy_arguments(q, "the counts per option (with --options; the noise is made jointly)")
        if action == "auction":
            q.add_argument("--second-price", action="store_true",
                           help="the winner pays the second-highest valid bid (Vickrey); the winning bid stays secret")
        q.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
        q.add_argument("--nodes", default=None, metavar="A,B,...",
                       help="the nodes that hold the collection, as it names them (default: every node of the "
                            "cluster file)")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(run=_session, action=action)
    r = csub.add_parser("revoke", help="refuse these credentials from now on and drop what they submitted")
    r.add_argument("name")
    r.add_argument("--credentials", type=Path, required=True, help="a file of credentials, one per line")
    add_store_arguments(r)
    r.set_defaults(run=_revoke)

    p = sub.add_parser("credentials", help="a collection owner's key and the credentials it issues (offline)")
    ksub = p.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    k = ksub.add_parser("keygen", help="make the owner's key: PREFIX.key (private, 0600) and PREFIX.pub")
    k.add_argument("--out", type=Path, required=True, help="path prefix of the two files")
    k.set_defaults(run=_keygen)
    i = ksub.add_parser("issue", help="issue credentials for a collection, one per line, into a new file")
    i.add_argument("--key", type=Path, required=True, help="the owner's private key file")
    i.add_argument("--collection", required=True)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--out", type=Path, required=True, help="the credentials file to create (mode 0600)")
    i.set_defaults(run=_issue)

    s = sub.add_parser("submit", help="submit values to a collection as a contributor: one share per node")
    s.add_argument("collection")
    s.add_argument("values", nargs="*", metavar="VALUE",
                   help="the integer values; a lone - reads them from standard input, which keeps them (a ballot) "
                        "out of the process list and the shell's history")
    s.add_argument("--cluster", type=Path, default=None, help="cluster file (default: $MPC_CLUSTER)")
    s.add_argument("--credential", type=Path, required=True,
                   help="a file of credentials, one per line: the first, or the --index-th, is used; with "
                        "--batch, line i goes with line i of the values")
    s.add_argument("--index", type=int, default=1, help="which credential of the file (default 1)")
    s.add_argument("--batch", type=Path, default=None,
                   help="a file of submissions, one per line (values separated by commas), each with the "
                        "credential on the same line of --credential")
    s.add_argument("--state", type=Path, default=None,
                   help="where the seeds of submissions not yet accepted are kept, so that running the same "
                        "command again completes them (default: the credential file's path + .pending)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=_submit)


def _spec(args: argparse.Namespace) -> CollectionSpec:
    from mpc.credentials import load_owner_public
    from mpc.store import CollectionSpec

    length = args.length
    if args.kind == "option" and args.options is None:
        raise InputError("an option collection needs --options K, how many options there are")
    if args.kind != "option" and args.options is not None:
        raise InputError("--options K goes with --kind option only")
    if args.kind in ("ballot", "option"):
        if args.lo not in (None, 0) or args.hi not in (None, 1):
            raise InputError(f"a{'n' if args.kind == 'option' else ''} {args.kind} collection holds 0 or 1 per "
                             f"value: leave out --lo and --hi")
        lo, hi = 0, 1
        if args.kind == "option":
            if length != 1:
                raise InputError("an option collection takes one option per submission: leave out --length")
            length = args.options
    else:
        if args.lo is None or args.hi is None:
            raise InputError("a range collection needs --lo and --hi")
        lo, hi = args.lo, args.hi
    nodes = _node_names(args.nodes)
    if len(nodes) < 2:   # none would make a collection that no session and no submission could use
        raise InputError(f"--nodes {quoted(args.nodes, 60)}: name at least two nodes that hold its shares, "
                         f"comma-separated")
    return CollectionSpec(args.name, args.kind, lo, hi, length, args.min_batch, args.resubmit,
                          load_owner_public(args.owner_pub), nodes)


def _node_names(text: str) -> tuple[str, ...]:
    """The node names of a comma-separated --nodes, each once, sorted (as a collection's spec keeps them)."""
    return tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))


def _create(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if args.node is not None and args.data_dir is None:   # this node of a cluster file: check the names
        from mpc.config import load_cluster

        cluster = load_cluster(args.cluster)
        unknown = [n for n in spec.nodes if n not in cluster.nodes]
        if unknown:
            raise InputError(f"--nodes: {', '.join(unknown)} not in the cluster file {cluster.path} "
                             f"(its nodes: {', '.join(cluster.nodes)})")
        if args.node not in spec.nodes:
            raise InputError(f"--nodes {','.join(spec.nodes)} leaves out node {args.node}, whose store this is: "
                             f"it would hold a collection it never takes shares of")
    with open_store(args) as store:
        created = store.create_collection(spec)
    print(f"collection {args.name!r} {'created' if created else 'already exists with this spec'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        infos = store.list_collections()
    rows = [{**info.spec.describe(), "submissions": info.submissions} for info in infos]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no collections")
    for info in infos:
        s = info.spec
        what = {"ballot": "ballots (0 or 1), 1", "option": f"one of {s.length} options, 1"}.get(
            s.kind, f"values in [{s.lo}, {s.hi}], {s.length}")
        print(f"{s.name}: {what} per submission, minimum batch {s.min_batch}, resubmit {s.resubmit}; "
              f"{info.submissions} submissions stored here")
    return 0


def _close(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        newly = store.close_collection(args.name)
        count = store.submission_count(args.name)
    print(f"collection {args.name!r} {'closed' if newly else 'was already closed'}: {count} submissions stored here")
    return 0


def _session(args: argparse.Namespace) -> int:
    from mpc import aio
    from mpc.config import load_cluster
    from mpc.coordinator.client import Coordinator
    from mpc.results import CollectionAuctionResult, CollectionSumResult, PluralityResult, ThresholdResult, VoteResult

    cluster = load_cluster(args.cluster)
    options: list[str] | None = getattr(args, "options", None)
    privacy = privacy_from(args) if args.action == "vote" else None
    if args.action == "vote" and options is None and (args.winner_only or privacy is not None):
        raise InputError("--winner-only and --epsilon go with --options (a yes/no vote opens one bit, not a count)")

    nodes = None if args.nodes is None else _node_names(args.nodes)
    unknown = [n for n in nodes or () if n not in cluster.nodes]
    if unknown or nodes == ():
        raise InputError(f"--nodes {quoted(args.nodes, 60)}: name nodes of the cluster file {cluster.path} "
                         f"(its nodes: {', '.join(cluster.nodes)})")

    async def go() -> CollectionSumResult | VoteResult | ThresholdResult | PluralityResult | CollectionAuctionResult:
        async with Coordinator(cluster, nodes=nodes) as coordinator:
            if args.action == "vote" and options is not None:
                return await coordinator.collection_plurality(args.name, len(options), winner_only=args.winner_only,
                                                              privacy=privacy)
            if args.action == "vote":
                return await coordinator.collection_vote(args.name)
            if args.action == "threshold":
                return await coordinator.collection_at_least(args.name, args.at_least)
            if args.action == "auction":
                return await coordinator.collection_auction(args.name, second_price=args.second_price)
            return await coordinator.collection_sum(args.name)
    result = aio.run(go())
    if isinstance(result, PluralityResult):
        assert options is not None
        print_plurality(result, options, args.json)
        if not args.json and result.complete is not None:
            print(f"(valid votes: {result.valid} of {result.complete} complete)")
    elif args.json:
        print(json.dumps(result.as_dict()))
    elif isinstance(result, CollectionAuctionResult):
        print(f"winner: credential {result.winner}; price {result.price} ({result.pricing} price; valid bids: "
              f"{result.valid} of {result.complete} complete)")
    elif isinstance(result, VoteResult):
        print("YES" if result.passed else "NO")
    elif isinstance(result, ThresholdResult):
        print(" ".join("yes" if b else "no" for b in result.bits))
    else:
        shown = result.average if args.action == "average" else result.value
        print(f"{shown} (valid submissions: {result.valid} of {result.complete} complete)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from mpc.credentials import parse_credential, read_credentials, verify

    tokens = [(n, parse_credential(c, f"{args.credentials}:{n}"))
              for n, c in enumerate(read_credentials(args.credentials), 1)]
    with open_store(args, must_exist=True) as store:
        spec = store.get_collection(args.name)
        ids = []
        for n, token in tokens:   # the owner's, for this collection: another's would be counted and do nothing
            try:
                ids.append(verify(spec.owner_key, args.name, token))
            except MpcError as exc:
                raise InputError(f"{args.credentials}:{n}: not a credential of collection {args.name!r} ({exc}); "
                                 f"nothing was revoked") from None
        count = store.revoke(args.name, ids)
    print(f"collection {args.name!r}: {count} credential(s) revoked")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from mpc.credentials import new_owner_key, write_owner_key

    private, public = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    write_owner_key(new_owner_key(), private, public)
    print(f"owner key: {private} (private, keep it offline), {public} (give it to every node's operator)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from mpc.credentials import issue, load_owner_key, write_credentials

    write_credentials(args.out, issue(load_owner_key(args.key), args.collection, args.count))
    print(f"{args.count} credential(s) for collection {args.collection!r} in {args.out}")
    return 0


def _batch_values(path: Path) -> list[list[int]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise InputError(f"--batch {path}: cannot read it ({exc.strerror if isinstance(exc, OSError) else exc})") \
            from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([int(x) for x in line.split(",")])
        except ValueError:
            raise InputError(f"{path}:{n}: values must be integers separated by commas") from None
    return rows


def _load_state(path: Path) -> dict[str, dict[str, object]]:
    """The pending submissions: credential id (hex) -> {"seed": hex, "values": [...]}. Missing file: none."""
    try:
        state = json.loads(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeError) as exc:
        raise InputError(f"{path}: not a state file of `mpc submit` ({exc})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state file of `mpc submit`")
    return state


def _save_state(path: Path, state: dict[str, dict[str, object]]) -> None:
    """Write the pending submissions (mode 0600, replaced whole), or remove the file when none is left."""
    import os

    if not state:
        path.unlink(missing_ok=True)
        return
    # A name of its own for each write (two `mpc submit` runs on one file never share it), made anew
    # (O_EXCL: nothing in the way is written into) and never through a link: mode 0600 whatever was there.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write the pending submissions to {path} ({exc.strerror}); nothing was sent") \
            from None


# A node's answers that another try may change (it was down, busy, or slow); any other refusal is final.
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})


def _may_complete(report: SubmitReport) -> bool:
    """Whether running the same submission again may complete it: every node that did not store it
    could not be asked (down, busy or slow), rather than refused it."""
    missing = [r for r in report.nodes if not r.stored]
    return bool(missing) and all(r.code in _TRANSIENT for r in missing)


def _submit(args: argparse.Namespace) -> int:
    import os

    from mpc import aio
    from mpc.client import Contributor
    from mpc.config import load_cluster
    from mpc.credentials import credential_id, parse_credential, read_credentials

    credentials = read_credentials(args.credential)
    if args.batch is not None:
        if args.values:
            raise InputError("give the values either on the command line or with --batch, not both")
        rows = _batch_values(args.batch)
        if len(rows) > len(credentials):
            raise InputError(f"{args.batch}: {len(rows)} submissions but {len(credentials)} credentials in "
                             f"{args.credential}")
        items = list(zip(credentials, rows))
    else:
        texts = args.values
        if texts == ["-"]:   # off the command line, where the process list and the shell's history show it
            from mpc.cli.inputs import values_from_stdin
            texts = values_from_stdin(f"a submission to collection {args.collection!r}")
        if not texts:
            raise InputError("no values to submit")
        values = []
        for i, text in enumerate(texts, 1):
            try:
                values.append(int(text))
            except ValueError:
                raise InputError(f"value {i} ({quoted(text, 40)}) is not an integer") from None
        if not 1 <= args.index <= len(credentials):
            raise InputError(f"{args.credential} holds {len(credentials)} credential(s); --index {args.index}")
        items = [(credentials[args.index - 1], values)]
    cluster = load_cluster(args.cluster)
    # Each submission's nonce and shares come from a seed kept here until every node has stored its
    # share: running the same command again then sends the very same shares (mpc.client.from_seed).
    state_path = args.state or Path(f"{args.credential}.pending")
    state = _load_state(state_path)
    before = dict(state)
    seeds = []
    for n, (credential, values) in enumerate(items, 1):
        key = credential_id(parse_credential(credential, f"{args.credential}:{n}")).hex()
        pending = state.get(key)
        if pending is not None and pending.get("collection") != args.collection:
            # A credential serves one collection; a fresh seed here would orphan the partial one for good.
            raise InputError(f"{args.credential}:{n}: this credential's submission to collection "
                             f"{quoted(str(pending.get('collection')), 60)} is still partial (kept in {state_path}); "
                             f"a credential serves one collection: run that submission again to complete it, or "
                             f"remove its entry from {state_path} to give it up")
        if pending is not None and pending.get("collection") == args.collection and \
                pending.get("values") != list(values):
            # A fresh seed would orphan the partial one: the nodes that stored it would refuse the new
            # submission (resubmit = refuse) and the others the old one, for good.
            raise InputError(f"{args.credential}:{n}: a submission of other values ({quoted(str(pending.get('values')), 80)}) "
                             f"with this credential is still partial (kept in {state_path}); run the command "
                             f"with those values to complete it, and only then submit new ones (which a "
                             f"collection takes only if its resubmit rule is replace); or remove its entry "
                             f"from {state_path} to give it up")
        if pending is None:
            pending = {"collection": args.collection, "values": list(values), "seed": os.urandom(16).hex()}
            state[key] = pending
        seeds.append(bytes.fromhex(str(pending["seed"])))
    _save_state(state_path, state)

    async def go() -> list[SubmitReport]:
        async with Contributor(cluster) as contributor:
            return list(await contributor.submit_many(args.collection, items, seeds=seeds))
    try:
        reports = aio.run(go())
    except MpcError:   # refused before anything was sent (submit_many): the seeds drawn for it go
        _save_state(state_path, before)
        raise
    retry = False
    for (credential, _), report in zip(items, reports):
        again = _may_complete(report)
        retry |= again
        if report.accepted or not (again or any(r.stored for r in report.nodes)):   # complete, or refused whole
            state.pop(credential_id(parse_credential(credential, "")).hex(), None)
    _save_state(state_path, state)
    accepted = sum(r.accepted for r in reports)
    if args.json:
        print(json.dumps({"collection": args.collection, "submitted": len(reports), "accepted": accepted,
                          "refused": [{"credential": r.credential, "why": r.problem()}
                                      for r in reports if not r.accepted]}))
    else:
        for r in reports:
            if not r.accepted:
                print(f"credential {r.credential}: not accepted: {r.problem()}", file=sys.stderr)
        if retry:
            print(f"run the same command again to complete what a node could not take: its shares are kept in "
                  f"{state_path}", file=sys.stderr)
        if len(reports) == 1 and accepted:
            print("accepted (replaced the earlier submission)" if reports[0].replaced
                  else "accepted: every node stored its share")
        elif len(reports) > 1:
            print(f"{accepted} of {len(reports)} submissions accepted")
    return 0 if accepted == len(reports) else EXIT_NOT_ACCEPTED


__all__ = ["register"]
