"""Privacy across sessions (issue 10): a lone coordinator must not learn a node's input from a
series of sessions that are each valid on their own.

Written from the issue's "Why", as an independent tester would: one attack class per test, each
run with a valid coordinator certificate, no colluding node and the default policy, asserting that
the attack FAILS and that NOTHING is opened (no output share reaches the coordinator: a CLI run
exits 1 with an empty stdout; a raw Compute stream yields no ShareChunk with words). Next to each,
what an owner can loosen, and what that then reveals.

One module-scoped cluster: certificates and a four-node cluster file from
mpc.localcluster.write_local_cluster, four real `mpc node` processes (mpc.localcluster.NodeProcesses,
loopback, mutual TLS, each its own SQLite store). Coordinators are real `python -m mpc` CLI processes
(with coordinator-owned cluster files listing only some of the nodes) or raw gRPC Control stubs with
the cluster's coordinator certificate. Every process started here is stopped by its PID; every wait
has a deadline.

The owner policies: the defaults, except per-input tables (see `policy`) that loosen raise_any,
referendum2, raise_trio and the inputs of the stepping tests (wide_*, pwide_*, thr_*). Each test
uses inputs of its own, so that one test's releases do not spend another's budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mpc.config import ClusterConfig, load_cluster
from mpc.localcluster import NodeProcesses, write_local_cluster
from mpc.pki import Identity, issue
from mpc.store import Store
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import WireParam, prepare_request

pytestmark = pytest.mark.slow

T = TypeVar("T")

ALL4 = ("alice", "bob", "carlos", "david")
RAISES = {"alice": 3800, "bob": 2514, "carlos": 2982, "david": 3390}       # sum 12686
CLI_TIMEOUT = 60.0
CALL_TIMEOUT = 20.0          # any one raw gRPC call
SESSION_MS = 20_000          # the raw sessions' deadline at the nodes
ENV = {k: v for k, v in os.environ.items() if k != "MPC_CLUSTER"} | {"PYTHONUNBUFFERED": "1"}

# The default referendum: ballot counts and yes-counts all above 65535, so that no port number and
# no millisecond can look like one of them in a log line. T = 265_250 of N = 356_038: YES.
REFERENDUM = {"alice": (90_007, 66_103), "bob": (88_001, 67_009), "carlos": (91_019, 66_601),
              "david": (87_011, 65_537)}
# The loosened referendum (thresholds "half" and 7, two releases): T = 6 of N = 9.
REFERENDUM2 = {"alice": [1, 0, 1], "bob": [1, 1], "carlos": [0, 0, 1], "david": [1]}

SALARY = 7_340_211                     # the victim's (alice's) salary, for the mixed-names attack
WIDE_HI = 3 * 10**18                   # a sum of 3 such values fits in int64, of 4 does not
THR_HI = 300_000_000                   # a threshold over 3 parties accepts this bound, over 4 does not


def _per_input(node: str, name: str, **rules: object) -> str:
    lines = [f"[nodes.{node}.policy.per_input.{name}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in rules.items()]
    return "\n".join(lines)


def policy(node: str) -> str:
    """Each owner's policy: the defaults, loosened for a few inputs only."""
    return "\n".join([
        _per_input(node, "raise_any", participants="any", max_releases=5),
        _per_input(node, "referendum2", thresholds=["half", 7], max_releases=2),
        _per_input(node, "wide_small", participants="any"),
        _per_input(node, "wide_big", participants="any"),
        *([_per_input(node, "raise_trio", participants=["alice", "bob", "carlos"])] if node != "david" else []),
        _per_input(node, "pwide_small", participants="any"),
        _per_input(node, "pwide_big", participants="any"),
        _per_input(node, "thr_small", participants="any"),
        _per_input(node, "thr_big", participants="any"),
    ])


# ---- the CLI ----------------------------------------------------------------------------------------

TRANSCRIPT: list[subprocess.CompletedProcess[str]] = []   # every CLI call of the module (test 5 scans it)


def mpc(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m mpc ARGS...` to completion (with a deadline), capturing its output."""
    proc = subprocess.run([sys.executable, "-m", "mpc", *map(str, args)], cwd=cwd, env=ENV, text=True,
                          capture_output=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    TRANSCRIPT.append(proc)
    return proc


def show(proc: subprocess.CompletedProcess[str]) -> str:
    args = " ".join(str(a) if len(str(a)) < 200 else f"<{len(str(a))} chars>" for a in proc.args)
    return f"$ {args}\nexit {proc.returncode}\nstdout: {proc.stdout[:3000]}\nstderr: {proc.stderr[:3000]}"


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, show(proc)
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The attack failed and nothing was opened: exit 1, an error, an empty stdout. Returns stderr."""
    assert proc.returncode == 1, show(proc)
    assert proc.stdout == "", show(proc)
    assert "mpc: error:" in proc.stderr and "Traceback" not in proc.stderr, show(proc)
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in the error\n{show(proc)}"
    return proc.stderr


def number(text: str) -> float:
    return float(text.strip().split()[0])


def shows(text: str, value: int) -> bool:
    """`value` appears in `text` as a number of its own."""
    return re.search(rf"(?<![\w.]){value}(?![\w]|\.\d)", text) is not None


# ---- the module's cluster ---------------------------------------------------------------------------


@dataclass
class Env:
    dir: Path
    cluster_file: Path
    cluster: ClusterConfig
    nodes: NodeProcesses
    log_dir: Path
    subsets: dict[str, Path] = field(default_factory=dict)   # left-out node -> a coordinator's 3-node file
    mallory: Path = Path()                                     # all four nodes, another coordinator's certificate

    def data_dir(self, node: str) -> Path:
        d = self.cluster.node(node).data_dir
        assert d is not None
        return d

    def put(self, node: str, name: str, values: Sequence[int], *, scalar: bool = False,
            bounds: tuple[int, int] | None = None, ballots: bool = False) -> int:
        with Store.open_dir(self.data_dir(node)) as store:
            return store.put_input(name, np.asarray(values, dtype=np.int64), 0, scalar, bounds=bounds,
                                   ballots=ballots)

    def audit(self, node: str) -> list[dict[str, Any]]:
        """`mpc audit --json` on the node's machine."""
        return json.loads(ok(mpc("audit", "--node", node, "--cluster", self.cluster_file, "--json")))

    def node_log(self, node: str) -> str:
        return (self.log_dir / f"{node}.log").read_text(errors="replace")


def write_coordinator_file(path: Path, cluster: ClusterConfig, names: Sequence[str]) -> Path:
    """A coordinator's OWN cluster file: the same CA and coordinator certificate, only `names`."""
    me = cluster.require_coordinator()
    lines = ["[cluster]", f'ca = "{cluster.ca}"', "", "[coordinator]", f'name = "{me.name}"',
             f'cert = "{me.cert}"', f'key = "{me.key}"']
    for name in names:
        node = cluster.node(name)
        lines += ["", f"[nodes.{name}]", f'address = "{node.address}"', f'host = "{node.host}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("across")
    path = write_local_cluster(d, ALL4, policies={n: policy(n) for n in ALL4})
    cluster = load_cluster(path)
    log_dir = d / "logs"
    nodes = NodeProcesses(path, log_dir)
    e = Env(d, path, cluster, nodes, log_dir)
    for left_out in ALL4:
        e.subsets[left_out] = write_coordinator_file(d / f"without-{left_out}.toml", cluster,
                                                     [n for n in ALL4 if n != left_out])

    # A second coordinator identity under the same CA (the same attacker, or another one).
    cert, key = issue(d / "certs", d / "certs", Identity("coordinator", "mallory"))
    e.mallory = d / "mallory.toml"
    text = path.read_text(encoding="utf-8").replace('name = "coordinator"', 'name = "mallory"')
    text = text.replace("certs/coordinator-coordinator.pem", f"certs/{cert.name}")
    text = text.replace("certs/coordinator-coordinator.key", f"certs/{key.name}")
    e.mallory.write_text(text, encoding="utf-8")

    def at_node(node: str) -> list[subprocess.CompletedProcess[str]]:
        """What each owner types on their own machine (the four at once)."""
        count, yes = REFERENDUM[node]
        ballots = ["1"] * yes + ["0"] * (count - yes)
        return [mpc("input", "put", "raise", str(RAISES[node]), "--cluster", path, "--node", node),
                mpc("input", "put", "raise_any", str(RAISES[node]), "--cluster", path, "--node", node),
                mpc("input", "put", "referendum", *ballots, "--ballots", "--cluster", path, "--node", node),
                mpc("input", "put", "referendum2", *map(str, REFERENDUM2[node]), "--ballots",
                    "--cluster", path, "--node", node)]

    with ThreadPoolExecutor(len(ALL4)) as pool:
        for procs in pool.map(at_node, ALL4):
            for proc in procs:
                ok(proc)
    # Inputs for the raw-stub tests, stored as `mpc input put` would (the store's own API).
    for node in ALL4:
        e.put(node, "salary", [SALARY if node == "alice" else 4_000_000], scalar=True)
        e.put(node, "zeros", [0], scalar=True)
        for name in ("lie", "lie2", "lie3"):
            e.put(node, name, [11], scalar=True)
        e.put(node, "race", [1, 2, 3], bounds=(0, 100))
        e.put(node, "race2", [1, 2, 3], bounds=(0, 100))
        e.put(node, "abortme", [5], scalar=True, bounds=(0, 100))
        e.put(node, "partial", [9], scalar=True, bounds=(0, 100))
        other = 5
        e.put(node, "mag_small", [1 if node == "alice" else other], scalar=True, bounds=(0, 2147483647))
        e.put(node, "mag_big", [2_000_000_000 if node == "alice" else other], scalar=True, bounds=(0, 2147483647))
        e.put(node, "wide_small", [1 if node == "alice" else 7], scalar=True, bounds=(0, WIDE_HI))
        e.put(node, "wide_big", [WIDE_HI - 1 if node == "alice" else 7], scalar=True, bounds=(0, WIDE_HI))
        e.put(node, "pwide_small", [1 if node == "alice" else 7], scalar=True, bounds=(0, WIDE_HI))
        e.put(node, "pwide_big", [WIDE_HI - 1 if node == "alice" else 7], scalar=True, bounds=(0, WIDE_HI))
        e.put(node, "thr_small", [1, 0] if node == "alice" else [3, 3], bounds=(0, THR_HI))
        e.put(node, "thr_big", [THR_HI - 1] * 2 if node == "alice" else [3, 3], bounds=(0, THR_HI))
        e.put(node, "budget", [1, 2], bounds=(0, 1000))
        e.put(node, "raise_trio", [RAISES[node]], scalar=True)
        e.put(node, "dos1", [21], scalar=True)
        e.put(node, "dos2", [22], scalar=True, bounds=(0, 1000))
        e.put(node, "score", [{"alice": 400, "bob": 150, "carlos": 220, "david": 90}[node]], scalar=True,
              bounds=(0, 1000))
        e.put(node, "ballots_victim", [1, 1, 0], ballots=True)
        e.put(node, "ballots_zero", [0, 0, 0], ballots=True)
    try:
        nodes.start_all(ALL4)
        yield e
    finally:
        nodes.stop_all()


# ---- raw Control stubs (a coordinator that does what it likes) ---------------------------------------


def new_id() -> str:
    return secrets.token_hex(16)


@dataclass
class Outcome:
    """One node's answer to one call: ok (code None) or refused, and every share word it sent us."""

    node: str
    code: grpc.StatusCode | None
    details: str = ""
    words: list[bytes] = field(default_factory=list)
    reply: mpc_pb2.PrepareReply | None = None

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def prepared(self) -> mpc_pb2.PrepareReply:
        assert self.reply is not None, self
        return self.reply


class Raw:
    """Control stubs to every node with the cluster's coordinator certificate."""

    def __init__(self, cluster: ClusterConfig) -> None:
        me = cluster.require_coordinator()
        creds = TlsMaterial.load(cluster.ca, me.cert, me.key).channel_credentials()
        self.channels = {n: grpc.aio.secure_channel(cluster.node(n).address, creds, options=channel_options(n))
                         for n in cluster.nodes}

    async def __aenter__(self) -> Raw:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ch in self.channels.values():
            await ch.close()

    def stub(self, node: str) -> mpc_pb2_grpc.ControlStub:
        return mpc_pb2_grpc.ControlStub(self.channels[node])

    async def prepare(self, node: str, sid: str, input_name: str, participants: Sequence[str], *,
                      protocol: str = "sum", params: Mapping[str, WireParam | None] | None = None,
                      timeout_ms: int = SESSION_MS) -> Outcome:
        request = prepare_request(sid, protocol, input_name, participants, timeout_ms=timeout_ms, params=params)
        try:
            reply = await self.stub(node).Prepare(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return Outcome(node, exc.code(), exc.details() or "")
        return Outcome(node, None, reply=reply)

    async def compute(self, node: str, sid: str, frac_bits: int, length: int, versions: Mapping[str, int],
                      lengths: Mapping[str, int] | None = None) -> Outcome:
        """lengths: every participant's length at prepare (None: an empty map, which a node takes as
        "all equal to mine" for the protocols whose lengths must be equal)."""
        out = Outcome(node, None)
        call = self.stub(node).Compute(mpc_pb2.ComputeRequest(session_id=sid, frac_bits=frac_bits, length=length,
                                                              input_versions=dict(versions),
                                                              lengths=dict(lengths or {})),
                                       timeout=CALL_TIMEOUT)
        try:
            async for chunk in call:
                if chunk.words:
                    out.words.append(bytes(chunk.words))
        except grpc.aio.AioRpcError as exc:
            out.code, out.details = exc.code(), exc.details() or ""
        return out

    async def abort(self, nodes: Sequence[str], sid: str) -> None:
        for node in nodes:
            try:
                await self.stub(node).Abort(mpc_pb2.AbortRequest(session_id=sid, reason="test"), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError:
                pass   # never prepared there

    async def status(self, node: str) -> mpc_pb2.StatusReply:
        return await self.stub(node).Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)

    async def compute_all(self, sid: str, calls: Mapping[str, tuple[int, int, Mapping[str, int]]], *,
                          lengths: Mapping[str, int] | None = None, abort_early: bool = True) -> dict[str, Outcome]:
        """Compute at every node of `calls` at once (node -> frac_bits, length, versions; every node is told
        the same `lengths`); as soon as one fails, abort the session everywhere (as the real coordinator
        does; unless not `abort_early`: then only once every node has answered), then collect every answer."""
        tasks = {n: asyncio.ensure_future(self.compute(n, sid, *args, lengths)) for n, args in calls.items()}
        pending = set(tasks.values())
        aborted = False
        while pending:
            done, pending = await asyncio.wait(pending, timeout=CALL_TIMEOUT + 5,
                                               return_when=asyncio.FIRST_COMPLETED)
            assert done, f"session {sid}: computes still running after {CALL_TIMEOUT + 5} s"
            if abort_early and not aborted and any(not t.result().ok for t in done):
                aborted = True
                await self.abort(list(calls), sid)
        if not abort_early:
            await self.abort(list(calls), sid)
        return {n: t.result() for n, t in tasks.items()}

    async def session(self, inputs: Mapping[str, str], *, protocol: str = "sum",
                      params: Mapping[str, WireParam | None] | None = None,
                      frac_bits: int | Callable[[str], int] | None = None,
                      versions: Callable[[str, dict[str, int]], Mapping[str, int]] | None = None,
                      only: Sequence[str] | None = None, abort_early: bool = True,
                      timeout_ms: int = SESSION_MS) -> tuple[str, dict[str, Outcome], dict[str, Outcome]]:
        """Prepare node -> input at each node (participants: the keys, in order), then compute, telling
        every node the lengths all reported (as the real coordinator does).

        only: compute at these nodes only (then abort the session everywhere).
        Returns: (session id, prepare outcomes, compute outcomes; empty if a prepare failed).
        """
        sid, parties = new_id(), list(inputs)
        prepared = dict(zip(parties, await asyncio.gather(*(
            self.prepare(n, sid, inputs[n], parties, protocol=protocol, params=params, timeout_ms=timeout_ms)
            for n in parties))))
        if not all(o.ok for o in prepared.values()):
            await self.abort(parties, sid)
            return sid, prepared, {}
        true_versions = {n: o.prepared.input_version for n, o in prepared.items()}
        length = next(iter(prepared.values())).prepared.length
        bits = max(o.prepared.frac_bits for o in prepared.values())
        calls = {n: (bits if frac_bits is None else frac_bits if isinstance(frac_bits, int) else frac_bits(n),
                     length, true_versions if versions is None else versions(n, dict(true_versions)))
                 for n in parties if only is None or n in only}
        lengths = {n: o.prepared.length for n, o in prepared.items()}
        outcomes = await self.compute_all(sid, calls, lengths=lengths, abort_early=abort_early)
        if only is not None:
            await self.abort(parties, sid)
        return sid, prepared, outcomes


def raw(env: Env, coro_fn: Callable[[Raw], Awaitable[T]]) -> T:
    """Run one coordinator's script against the cluster (bounded)."""
    async def go() -> T:
        async with Raw(env.cluster) as r:
            return await asyncio.wait_for(coro_fn(r), 120)
    return asyncio.run(go())


async def until(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait for a condition (polled), with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def nothing_opened(outcomes: Mapping[str, Outcome]) -> None:
    leaked = {n: len(o.words) for n, o in outcomes.items() if o.words}
    assert not leaked, f"share chunks with words reached the coordinator from {leaked}: {outcomes}"


# ==== 1. differencing over subsets (real CLI processes) ==================================================


def test_differencing_over_3_node_subsets_fails_and_the_full_sum_works(env: Env) -> None:
    """Four `mpc sum raise` runs, each from a coordinator's own file listing 3 of the 4 nodes: every
    one is refused by the nodes it asks (their owner pins the participants to their whole cluster)."""
    for left_out, path in env.subsets.items():
        err = refused(mpc("sum", "raise", "--cluster", path), "(participants)")
        asked = [n for n in ALL4 if n != left_out]
        named = [n for n in asked if f"node {n}" in err]
        assert named, f"no asked node named in the refusal without {left_out}:\n{err}"
        for n in ALL4:
            assert not shows(err, RAISES[n]), err
    assert number(ok(mpc("sum", "raise", "--cluster", env.cluster_file))) == sum(RAISES.values())
    # The identical query on the identical data may repeat; an average of a scalar says nothing new.
    assert number(ok(mpc("sum", "raise", "--cluster", env.cluster_file))) == 12686
    assert number(ok(mpc("average", "raise", "--cluster", env.cluster_file))) == 3171.5
    # And after the full sum, the subsets are still refused.
    refused(mpc("sum", "raise", "--cluster", env.subsets["alice"]), "(participants)")


def test_loosened_participants_any_and_5_releases_the_differencing_recovers_every_raise(env: Env) -> None:
    """What loosening reveals: with participants = "any" and max_releases = 5 for `raise_any`, the
    four 3-subset sums and the full sum give every raise exactly."""
    full = number(ok(mpc("sum", "raise_any", "--cluster", env.cluster_file)))
    assert full == 12686
    recovered = {}
    for left_out, path in env.subsets.items():
        recovered[left_out] = full - number(ok(mpc("sum", "raise_any", "--cluster", path)))
    assert recovered == {n: float(v) for n, v in RAISES.items()}


def test_loosened_pinned_participant_list_allows_exactly_that_set(env: Env) -> None:
    """An owner may pin an input to a named set instead of the whole cluster: then only that set works."""
    assert number(ok(mpc("sum", "raise_trio", "--cluster", env.subsets["david"]))) == 3800 + 2514 + 2982
    err = refused(mpc("sum", "raise_trio", "--cluster", env.cluster_file), "(participants)")
    assert "node alice" in err or "node bob" in err or "node carlos" in err, err
    refused(mpc("sum", "raise_trio", "--cluster", env.subsets["carlos"]), "(participants)")


BALLOTS_ONLY = "ballots are the integers 0 and 1 (no other bounds or scale; option indices for a plurality vote " \
               "are stored with --options K)"
OPTIONS_ONLY = "options are ballots 0..K-1 for K from 2 to 256 (--options K); no other bounds or scale"


def test_input_put_refuses_values_outside_the_declared_bounds_without_echoing_them(env: Env) -> None:
    where = ("--cluster", env.cluster_file, "--node", "alice")
    # Ballots are 0/1 only; option indices 0..K-1 are stored with --options K (K from 2 to 256),
    # which declares its own bounds; bids are integers; a curve never rises.
    for args, needle in (
            (["bx", "5", "77777", "--bounds", "0,1000"], "value 2 lies outside the declared bounds"),
            (["bx", "3000000001"], "value 1 lies outside the declared bounds (the default"),
            (["bx", "1", "0", "2", "--ballots"], "value 3 is not a ballot (0..1)"),
            (["bx", "1", "0", "6", "--ballots", "--bounds", "0,5"], BALLOTS_ONLY),
            (["bx", "1", "0", "2", "--ballots", "--bounds", "0,2"], BALLOTS_ONLY),   # options are not ballots
            (["bx", "1", "0", "--ballots", "--bounds", "1,5"], BALLOTS_ONLY),
            (["bx", "1", "0", "--ballots", "--bounds", "0,256"], BALLOTS_ONLY),
            (["bx", "1", "0", "6", "--options", "6"], "value 3 is not a ballot (0..5)"),
            (["bx", "1", "0", "--options", "1"], OPTIONS_ONLY),
            (["bx", "1", "0", "--options", "0"], OPTIONS_ONLY),
            (["bx", "1", "0", "--options", "257"], OPTIONS_ONLY),
            (["bx", "1", "0.5", "--options", "3"], OPTIONS_ONLY),
            (["bx", "1", "0", "--options", "3", "--bounds", "0,2"], "--options K declares the bounds 0,K-1 itself"),
            (["bx", "5", "77777.5", "--bids"], "bids are integers (no fractional bits)"),
            (["bx", "5", "7", "--bids", "--frac-bits", "2"], "bids are integers (no fractional bits)"),
            (["bx", "5", "77777", "--bids", "--bounds", "0,1000"], "value 2 lies outside the declared bounds"),
            (["bx", "77777", "9", "77777", "--curve"], "value 3 is above value 2; a net-demand curve never increases")):
        proc = mpc("input", "put", *args, *where)
        assert proc.returncode == 1 and "mpc: error:" in proc.stderr, show(proc)
        assert needle in proc.stderr, (needle, show(proc))
        for value in ("77777", "3000000001"):
            assert not shows(proc.stderr, int(value)), show(proc)
    # One kind per input: --ballots, --options K, --curve and --bids exclude each other.
    for kinds in (["--ballots", "--options", "3"], ["--curve", "--bids"], ["--options", "2", "--bids"]):
        proc = mpc("input", "put", "bx", "1", "0", *kinds, *where)
        assert proc.returncode == 2 and "not allowed with argument" in proc.stderr, show(proc)
    assert "bx" not in ok(mpc("input", "list", *where))


def test_node_level_loosening_is_the_default_of_every_input(tmp_path: Path) -> None:
    """The owner policy of the loosened tests, written for the whole node instead of per input:
    every input then gets it, and a per-input table still overrides it."""
    path = write_local_cluster(tmp_path, ALL4[:3], policies={
        "alice": 'participants = "any"\nmax_releases = 5\nthresholds = ["half", 7]\n'
                 + _per_input("alice", "strict", participants="cluster", max_releases=1)})
    cluster = load_cluster(path)
    alice, bob = cluster.node("alice").policy, cluster.node("bob").policy
    loose = alice.rules("anything")
    assert (loose.max_releases, loose.participants, loose.thresholds) == (5, "any", frozenset({"half", 7}))
    assert loose.pinned(list(cluster.nodes)) is None
    strict = alice.rules("strict")
    assert (strict.max_releases, strict.pinned(list(cluster.nodes))) == (1, frozenset(ALL4[:3]))
    default = bob.rules("anything")
    assert (default.max_releases, default.pinned(list(cluster.nodes)), default.thresholds) == (
        1, frozenset(ALL4[:3]), None)
    assert (bob.min_participants, bob.max_sessions, bob.max_sessions_per_coordinator) == (3, 64, 16)


# ==== 2. binary search on vote thresholds (real CLI processes) ============================================


def test_threshold_binary_search_learns_at_most_one_bit_and_ballots_are_never_summed(env: Env) -> None:
    f = env.cluster_file
    first = ok(mpc("vote", "referendum", "--cluster", f)).strip()
    assert first == "YES"                                     # 2 * 265_250 >= 356_038
    # A binary search on K: every further threshold is another query on the same ballots.
    for k in (219_018, 300_000, 250_000, 1):
        err = refused(mpc("vote", "referendum", "--threshold", str(k), "--cluster", f), "(max_releases)",
                      "'referendum'")
        assert re.search(r"node (alice|bob|carlos|david)", err), err
    # ... also without alice (the issue's second half of the search): her owner pins the participants.
    refused(mpc("vote", "referendum", "--cluster", env.subsets["alice"]), "(participants)")
    refused(mpc("vote", "referendum", "--threshold", "5", "--cluster", env.subsets["alice"]), "(participants)")
    # The identical vote may repeat (nothing new), with the same answer.
    assert ok(mpc("vote", "referendum", "--cluster", f)).strip() == first
    # Ballots are only for votes: an average or a sum would open the tally (and the ballot count).
    refused(mpc("average", "referendum", "--cluster", f), "holds ballots, which only vote may use",
            "allow.average may name it")
    refused(mpc("sum", "referendum", "--cluster", f), "holds ballots, which only vote may use",
            "allow.sum may name it")
    refused(mpc("threshold", "referendum", "--at-least", "1", "--cluster", f), "holds ballots, which only vote may use",
            "allow.threshold may name it")


def test_loosened_thresholds_allow_exactly_the_owners_two_rules(env: Env) -> None:
    """per_input thresholds = ["half", 7], max_releases = 2: those two votes work (two bits), a third K is refused."""
    f = env.cluster_file
    assert ok(mpc("vote", "referendum2", "--cluster", f)).strip() == "YES"            # 12 >= 9
    assert ok(mpc("vote", "referendum2", "--threshold", "7", "--cluster", f)).strip() == "NO"   # T = 6
    for k in (6, 5, 8):
        err = refused(mpc("vote", "referendum2", "--threshold", str(k), "--cluster", f), "(thresholds)",
                      "'referendum2'")
        assert re.search(r"node (alice|bob|carlos|david)", err), err
    # Both allowed rules may be repeated.
    assert ok(mpc("vote", "referendum2", "--threshold", "7", "--cluster", f)).strip() == "NO"
    assert ok(mpc("vote", "referendum2", "--cluster", f)).strip() == "YES"


def test_threshold_binary_search_on_a_number_input_learns_at_most_one_bit(env: Env) -> None:
    """`mpc threshold NAME --at-least K` is the same search on a number: one K, then nothing more
    (a sum after a threshold is another query too; a threshold after a sum would not be)."""
    f = env.cluster_file
    assert ok(mpc("threshold", "score", "--at-least", "500", "--cluster", f)).strip() == "1"   # 860 >= 500
    for k in (1000, 750, 860, 861):
        refused(mpc("threshold", "score", "--at-least", str(k), "--cluster", f), "(max_releases)", "'score'")
    refused(mpc("sum", "score", "--cluster", f), "(max_releases)")
    refused(mpc("threshold", "score", "--at-least", "500", "--cluster", env.subsets["david"]), "(participants)")
    assert ok(mpc("threshold", "score", "--at-least", "500", "--cluster", f)).strip() == "1"   # a repeat


def test_another_coordinator_identity_gets_no_fresh_budget(env: Env) -> None:
    """The budget belongs to the input version, not to a coordinator: a second coordinator certificate
    continues the binary search no further than the first."""
    assert ok(mpc("vote", "referendum", "--cluster", env.mallory)).strip() == "YES"     # a repeat
    refused(mpc("vote", "referendum", "--threshold", "5", "--cluster", env.mallory), "(max_releases)")
    refused(mpc("threshold", "score", "--at-least", "700", "--cluster", env.mallory), "(max_releases)")


# ==== 3. mixed input names in one session (raw stubs) =====================================================


def test_mixed_input_names_fail_everywhere_and_open_nothing(env: Env) -> None:
    """The victim prepares `salary`, the others an all-zero input, same session id: the sum would be
    the victim's salary. The nodes compare session descriptions and fail before any share leaves."""
    inputs = {"alice": "salary", "bob": "zeros", "carlos": "zeros", "david": "zeros"}
    # Every node must fail on its own: the session is aborted only once all have answered.
    sid, prepared, outcomes = raw(env, lambda r: r.session(inputs, abort_early=False))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    assert all(not o.ok for o in outcomes.values()), outcomes
    for node, o in outcomes.items():
        assert "prepared a different session description" in o.details, (node, o)
    assert not shows(" ".join(o.details for o in outcomes.values()), SALARY)
    # The victim's audit log says so.
    [entry] = [e for e in env.audit("alice") if e["session"] == sid]
    assert entry["outcome"] == "failed", entry
    assert "different session description" in str(entry["reason"]), entry
    assert "salary" in entry["inputs"], entry
    assert not any(t["to"].startswith("spiffe://mpc/coordinator") for t in entry["sent"]), entry


def test_mixed_ballot_inputs_in_one_vote_fail_everywhere_and_open_nothing(env: Env) -> None:
    """The same attack on a vote: the victim's ballots, all-zero ballots elsewhere."""
    inputs = {"alice": "ballots_victim", "bob": "ballots_zero", "carlos": "ballots_zero", "david": "ballots_zero"}
    _, prepared, outcomes = raw(env, lambda r: r.session(
        inputs, protocol="vote", params={"threshold": 2}, abort_early=False))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    for node, o in outcomes.items():
        assert not o.ok and "prepared a different session description" in o.details, (node, o)


def test_mixed_scale_or_party_order_in_one_session_fails_and_opens_nothing(env: Env) -> None:
    """The same input everywhere but another scale at one node, or another party order: no agreement."""
    inputs = {n: "lie2" for n in ALL4}
    _, prepared, outcomes = raw(env, lambda r: r.session(inputs, frac_bits=lambda n: 1 if n == "bob" else 0))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    assert all(not o.ok for o in outcomes.values()), outcomes

    async def reordered(r: Raw) -> dict[str, Outcome]:
        sid = new_id()
        orders = {n: list(ALL4) if n != "david" else ["david", "carlos", "bob", "alice"] for n in ALL4}
        prepared = {n: await r.prepare(n, sid, "lie2", orders[n]) for n in ALL4}
        assert all(o.ok for o in prepared.values()), prepared
        versions = {n: o.prepared.input_version for n, o in prepared.items()}
        return await r.compute_all(sid, {n: (0, 1, versions) for n in ALL4})

    outcomes = raw(env, reordered)
    nothing_opened(outcomes)
    assert all(not o.ok for o in outcomes.values()), outcomes


def test_a_coordinator_that_lies_about_input_versions_is_refused(env: Env) -> None:
    inputs = {n: "lie" for n in ALL4}
    # About another node, told to one node only: that node cannot check it, but the descriptions
    # differ, so every node fails and nothing is opened.
    _, prepared, outcomes = raw(env, lambda r: r.session(
        inputs, versions=lambda n, v: {**v, "bob": v["bob"] + 7} if n == "alice" else v, abort_early=False))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    assert all(not o.ok for o in outcomes.values()), outcomes
    assert all("different session description" in o.details for o in outcomes.values()), outcomes
    # About the callee's own version: refused by that node (before anything is shared), nothing opened.
    _, prepared, outcomes = raw(env, lambda r: r.session(
        inputs, versions=lambda n, v: {**v, "carlos": v["carlos"] + 1}, only=["carlos"]))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    assert outcomes["carlos"].code == grpc.StatusCode.INVALID_ARGUMENT, outcomes["carlos"]
    assert "version" in outcomes["carlos"].details, outcomes["carlos"]
    # A map missing a participant, or naming a stranger: refused.
    for lie in (lambda n, v: {k: x for k, x in v.items() if k != "david"},
                lambda n, v: {**v, "mallory": 1}):
        _, _, outcomes = raw(env, lambda r: r.session(inputs, versions=lie))
        nothing_opened(outcomes)
        assert all(not o.ok for o in outcomes.values()), outcomes


def test_a_lie_about_versions_cannot_pass_new_data_off_as_a_repeat(env: Env) -> None:
    """A sum over the data; then bob's owner stores a new value. The sum over the new data is another
    query for alice, carlos and david (their single release is spent); a coordinator that tells them
    bob's old version, to make it look like a repeat, is found out and nothing is opened."""
    inputs = {n: "lie3" for n in ALL4}
    _, prepared, outcomes = raw(env, lambda r: r.session(inputs))
    assert all(o.ok for o in outcomes.values()), outcomes
    old = {n: o.prepared.input_version for n, o in prepared.items()}
    with Store.open_dir(env.data_dir("bob")) as store:
        new_version = store.put_input("lie3", np.array([12], dtype=np.int64), 0, True, overwrite=True)
    assert new_version == old["bob"] + 1
    # The honest sum over the new data: refused (max_releases) by the three others, nothing opened.
    _, prepared, outcomes = raw(env, lambda r: r.session(inputs))
    every = {**prepared, **outcomes}
    nothing_opened(outcomes)
    text = " ".join(o.details for o in every.values())
    assert "(max_releases)" in text, every
    # Everyone told bob's old version: bob refuses his own; bob told the truth, the others the old
    # version: the descriptions differ. Nothing opened either way.
    for lie in (lambda n, v: old, lambda n, v: v if n == "bob" else old):
        _, prepared, outcomes = raw(env, lambda r: r.session(inputs, versions=lie))
        assert all(o.ok for o in prepared.values()), prepared
        nothing_opened(outcomes)
        assert all(not o.ok for o in outcomes.values()), outcomes


def test_when_one_node_refuses_the_release_no_other_share_reaches_the_coordinator(env: Env) -> None:
    """A sum over the data; then bob, carlos and david store new values (fresh budgets), alice keeps
    hers (budget spent). The sum over the new data is a new query for alice, who refuses; the
    coordinator does not abort (it just waits, a few seconds at most). No output share of that
    session may reach it: the nodes must not count and release independently of one another."""
    inputs = {n: "partial" for n in ALL4}
    _, _, outcomes = raw(env, lambda r: r.session(inputs))
    assert all(o.ok and o.words for o in outcomes.values()), outcomes
    for node in ("bob", "carlos", "david"):
        with Store.open_dir(env.data_dir(node)) as store:
            assert store.put_input("partial", np.array([10], dtype=np.int64), 0, True, overwrite=True,
                                   bounds=(0, 100)) == 2
    _, prepared, outcomes = raw(env, lambda r: r.session(inputs, abort_early=False, timeout_ms=5000))
    assert all(o.ok for o in prepared.values()), prepared
    assert "(max_releases)" in outcomes["alice"].details, outcomes["alice"]
    nothing_opened(outcomes)


def test_preparing_many_distinct_queries_before_computing_any_opens_only_one(env: Env) -> None:
    """The budget is checked again at compute: sessions prepared while the budget was unspent are
    refused once another distinct query has used it (average, then an elementwise average, then a sum)."""
    async def attack(r: Raw) -> list[dict[str, Outcome]]:
        sids = [new_id() for _ in range(3)]
        kinds = [("average", {"elementwise": False}), ("average", {"elementwise": True}), ("sum", {})]
        replies = []
        for sid, (protocol, params) in zip(sids, kinds):
            prepared = {n: await r.prepare(n, sid, "race", ALL4, protocol=protocol, params=params) for n in ALL4}
            assert all(o.ok for o in prepared.values()), prepared
            replies.append(prepared)
        results = []
        for sid, prepared in zip(sids, replies):
            versions = {n: o.prepared.input_version for n, o in prepared.items()}
            length = prepared["alice"].prepared.length
            results.append(await r.compute_all(sid, {n: (0, length, versions) for n in ALL4}))
        return results

    first, second, third = raw(env, attack)
    assert all(o.ok and o.words for o in first.values()), first
    for later in (second, third):
        nothing_opened(later)
        assert all(not o.ok for o in later.values()), later
        assert any("(max_releases)" in o.details for o in later.values()), later


def test_a_session_that_never_reaches_agreement_spends_no_release(env: Env) -> None:
    """Availability, not privacy: a session that fails before the nodes agree has released nothing,
    so it should not spend the input version's budget. Otherwise one coordinator can make the
    owners' own query fail for good, without anything being opened: (a) by telling one node a
    forged version of another's input; (b) by sending Compute for another query to one node only."""
    inputs = {n: "dos1" for n in ALL4}
    _, prepared, outcomes = raw(env, lambda r: r.session(
        inputs, versions=lambda n, v: {**v, "bob": v["bob"] + 1} if n == "alice" else v, abort_early=False))
    assert all(o.ok for o in prepared.values()), prepared
    nothing_opened(outcomes)
    assert all(not o.ok for o in outcomes.values()), outcomes
    # (b): a threshold prepared everywhere, computed at alice only, aborted once alice has counted it.
    async def lone_compute(r: Raw) -> Outcome:
        sid = new_id()
        prepared = {n: await r.prepare(n, sid, "dos2", ALL4, protocol="threshold", params={"threshold": 3})
                    for n in ALL4}
        assert all(o.ok for o in prepared.values()), prepared
        versions = {n: o.prepared.input_version for n, o in prepared.items()}
        task = asyncio.ensure_future(r.compute("alice", sid, 0, 1, versions))

        def started() -> bool:
            record = store.get_session(sid)
            return task.done() or (record is not None and record.status != "prepared")

        # Abort once alice has begun computing (whatever she counts before she waits for her peers).
        with Store.open_dir(env.data_dir("alice")) as store:
            await until(started, "alice to start computing")
        await r.abort(ALL4, sid)
        return await task

    outcome = raw(env, lone_compute)
    assert not outcome.ok and not outcome.words, outcome
    results = {name: mpc("sum", name, "--cluster", env.cluster_file) for name in ("dos1", "dos2")}
    failed = {name: p.stderr.strip()[:400] for name, p in results.items() if p.returncode != 0}
    assert not failed, f"the owners' own first sum is refused after a session that opened nothing: {failed}"
    assert number(results["dos1"].stdout) == 84 and number(results["dos2"].stdout) == 88


def test_two_distinct_queries_computed_at_once_open_at_most_one(env: Env) -> None:
    """The same, with both sessions computing at the same time at every node: the check and the
    record of a release are one transaction, so at most one of two distinct queries opens."""
    async def attack(r: Raw) -> list[dict[str, Outcome]]:
        sids = [new_id(), new_id()]
        prepared = []
        for sid, elementwise in zip(sids, (False, True)):
            p = {n: await r.prepare(n, sid, "race2", ALL4, protocol="average", params={"elementwise": elementwise})
                 for n in ALL4}
            assert all(o.ok for o in p.values()), p
            prepared.append(p)
        calls = [{n: (0, p[n].prepared.length, {m: o.prepared.input_version for m, o in p.items()})
                  for n in ALL4} for p in prepared]
        return list(await asyncio.gather(*(r.compute_all(sid, c) for sid, c in zip(sids, calls))))

    results = raw(env, attack)
    complete = [i for i, outcomes in enumerate(results) if all(o.words for o in outcomes.values())]
    assert len(complete) <= 1, f"two distinct queries opened: {results}"
    partial = [i for i, outcomes in enumerate(results) if i not in complete and any(o.words for o in outcomes.values())]
    assert not partial, f"a session that did not open sent some output shares: {[results[i] for i in partial]}"


def _ballots(env: Env, name: str) -> None:
    for node, ballots in REFERENDUM2.items():
        env.put(node, name, ballots, ballots=True)


def _counted(env: Env, name: str) -> dict[str, list[bool]]:
    out = {}
    for node in ALL4:
        with Store.open_dir(env.data_dir(node)) as store:
            out[node] = [r.counted for r in store.releases(name)]
    return out


def _vote(r: Raw, name: str, k: int) -> Awaitable[tuple[str, dict[str, Outcome], dict[str, Outcome]]]:
    return r.session({n: name for n in ALL4}, protocol="vote", params={"threshold": k})


def test_identical_sessions_computed_at_once_leave_no_second_query_free(env: Env) -> None:
    """Two identical vote sessions computed at the same time: neither may count as "a repeat" of the
    other before either has released anything, so the next threshold is still refused (found in review:
    a reservation once made a concurrent identical release free, and a binary search went through)."""
    _ballots(env, "dup")

    async def attack(r: Raw) -> tuple[list[Any], tuple[str, dict[str, Outcome], dict[str, Outcome]]]:
        first = await asyncio.gather(_vote(r, "dup", 5), _vote(r, "dup", 5))
        return list(first), await _vote(r, "dup", 7)

    first, (_, prepared, computed) = raw(env, attack)
    assert any(all(o.words for o in c.values()) for _, _, c in first), first      # the allowed query opens
    assert not all(o.ok for o in prepared.values()) or not computed or not all(o.ok for o in computed.values())
    nothing_opened(computed)
    refusals = [o.details for o in [*prepared.values(), *computed.values()] if not o.ok]
    assert refusals and all("(max_releases)" in d or "nothing" in d or "aborted" in d for d in refusals), refusals
    for node, counted in _counted(env, "dup").items():
        assert counted.count(True) == 1, (node, counted)


def test_decoy_sessions_that_never_agree_make_no_release_free(env: Env) -> None:
    """Decoys: two sessions of the same query left hanging (each missing one node, so they can never
    agree) while a third runs. The third is counted: a release that never happened frees nothing."""
    _ballots(env, "decoy")

    async def attack(r: Raw) -> tuple[dict[str, Outcome], tuple[str, dict[str, Outcome], dict[str, Outcome]]]:
        decoys = [new_id(), new_id()]
        hanging = []
        for sid, missing in zip(decoys, ("alice", "bob")):
            p = {n: await r.prepare(n, sid, "decoy", ALL4, protocol="vote", params={"threshold": 5}) for n in ALL4}
            assert all(o.ok for o in p.values()), p
            versions = {n: o.prepared.input_version for n, o in p.items()}
            hanging += [asyncio.ensure_future(r.compute(n, sid, 0, 1, versions)) for n in ALL4 if n != missing]
        await asyncio.sleep(0)
        _, _, allowed = await _vote(r, "decoy", 5)
        await r.abort(ALL4, decoys[0])
        await r.abort(ALL4, decoys[1])
        for outcome in await asyncio.gather(*hanging):
            assert not outcome.words, outcome          # a decoy never opens anything
        return allowed, await _vote(r, "decoy", 7)

    allowed, (_, prepared, computed) = raw(env, attack)
    assert all(o.words for o in allowed.values()), allowed
    refusals = [o.details for o in prepared.values() if not o.ok]
    assert refusals and all("(max_releases)" in d for d in refusals), prepared
    assert computed == {}
    for node, counted in _counted(env, "decoy").items():
        assert counted == [True], (node, counted)


def test_a_share_that_left_a_node_is_in_its_audit_log_even_if_the_coordinator_aborts(env: Env) -> None:
    """A coordinator that aborts a session as soon as the first output share arrives (the identical
    query, repeated: allowed): every node whose share reached the coordinator must say so in its
    audit log (outcome done, an output share sent). Otherwise a coordinator can open a sum while
    the audit logs say "aborted, nothing sent to the coordinator"."""
    async def once(r: Raw) -> tuple[str, dict[str, Outcome]]:
        sid = new_id()
        prepared = {n: await r.prepare(n, sid, "abortme", ALL4) for n in ALL4}
        assert all(o.ok for o in prepared.values()), prepared
        versions = {n: o.prepared.input_version for n, o in prepared.items()}
        tasks = {n: asyncio.ensure_future(r.compute(n, sid, 0, 1, versions)) for n in ALL4}
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED, timeout=CALL_TIMEOUT)
        await r.abort(ALL4, sid)
        return sid, {n: await t for n, t in tasks.items()}

    runs = [raw(env, once) for _ in range(12)]
    audits = {n: {e["session"]: e for e in env.audit(n)} for n in ALL4}
    hidden = []
    for sid, outcomes in runs:
        for node, o in outcomes.items():
            if o.words:
                entry = audits[node][sid]
                to_coordinator = [t for t in entry["sent"] if t["kind"] == "output share"]
                if entry["outcome"] != "done" or not to_coordinator:
                    hidden.append((node, sid[:8], entry["outcome"], entry["reason"][:60], entry["release"][:40]))
    assert not hidden, f"output shares the coordinator received but the node's audit log does not show: {hidden}"


# ==== 4. scale and participant-count stepping (raw stubs) ================================================


def normalized(o: Outcome, sid: str, name: str) -> tuple[str, str]:
    text = o.details.replace(sid, "<session>").replace(name, "<input>")
    text = re.sub(r"[0-9a-f]{32}", "<id>", text)
    return ("OK" if o.code is None else o.code.name, text)


def test_stepping_the_scale_in_compute_reveals_nothing_about_the_value(env: Env) -> None:
    """Same declared bounds, stored values 1 and 2_000_000_000: stepping frac_bits 0..33 in Compute
    (a fresh prepared session each time) gives the same accept/refuse pattern and the same errors."""
    async def step(r: Raw, name: str, parties: Sequence[str]) -> list[dict[str, tuple[str, str]]]:
        pattern = []
        for f in range(34):
            # Every node holds the same declared bounds: all accept or all refuse, so the session is
            # aborted only after every node has answered (each answer is then its own).
            sid, prepared, outcomes = await r.session({n: name for n in parties}, frac_bits=f, abort_early=False)
            assert all(o.ok for o in prepared.values()), prepared
            pattern.append({n: normalized(o, sid, name) for n, o in outcomes.items()})
        return pattern

    for small, big, parties in (("mag_small", "mag_big", ALL4), ("wide_small", "wide_big", ALL4[:3])):
        a = raw(env, lambda r: step(r, small, parties))
        b = raw(env, lambda r: step(r, big, parties))
        assert a == b, "\n".join(f"frac_bits {f}: {x} != {y}" for f, (x, y) in enumerate(zip(a, b)) if x != y)
        accepted = [f for f, p in enumerate(a) if p["alice"][0] == "OK"]
        assert accepted and len(accepted) < 34, a          # the check did bite somewhere, on public data


def test_stepping_the_participant_count_in_prepare_reveals_nothing_about_the_value(env: Env) -> None:
    """Prepare at the victim with 1..4 participants, for a sum, an average and a threshold, on inputs
    with the same declared bounds and very different stored values: the same answers."""
    cases = [("pwide_small", "pwide_big", "sum", None),
             ("pwide_small", "pwide_big", "average", None),
             ("thr_small", "thr_big", "threshold", 1),
             ("mag_small", "mag_big", "sum", None)]

    async def step(r: Raw, name: str, protocol: str, threshold: int | None) -> list[tuple[str, str]]:
        pattern = []
        for k in range(1, 5):
            sid = new_id()
            o = await r.prepare("alice", sid, name, ALL4[:k], protocol=protocol, params={"threshold": threshold})
            if o.ok:
                await r.abort(["alice"], sid)
            pattern.append(normalized(o, sid, name))
        return pattern

    for small, big, protocol, threshold in cases:
        a = raw(env, lambda r: step(r, small, protocol, threshold))
        b = raw(env, lambda r: step(r, big, protocol, threshold))
        assert a == b, f"{small}/{big} protocol {protocol}:\n{a}\n{b}"
    # The declared bounds did bite at 4 parties (public data): 3 accepted, 4 refused.
    for name, protocol, threshold in (("pwide_big", "sum", None), ("thr_big", "threshold", 1)):
        codes = [p[0] for p in raw(env, lambda r: step(r, name, protocol, threshold))]
        assert codes == ["PERMISSION_DENIED", "PERMISSION_DENIED", "OK", "FAILED_PRECONDITION"], (name, codes)


# ==== 5. status, errors and logs hide a vote's ballot count ============================================


def secrets_of_the_referendum() -> list[int]:
    counts = [c for c, _ in REFERENDUM.values()]
    yes = [y for _, y in REFERENDUM.values()]
    return counts + yes + [sum(counts), sum(yes)]


def test_status_hides_the_ballot_count(env: Env) -> None:
    async def look(r: Raw) -> tuple[dict[str, mpc_pb2.StatusReply], dict[str, Outcome]]:
        statuses = {n: await r.status(n) for n in ALL4}
        sid = new_id()
        prepared = {n: await r.prepare(n, sid, "referendum", ALL4, protocol="vote") for n in ALL4}
        await r.abort(ALL4, sid)
        return statuses, prepared

    statuses, prepared = raw(env, look)
    for node, reply in statuses.items():
        infos = {i.name: i for i in reply.inputs}
        for name in ("referendum", "referendum2"):
            assert infos[name].kind == "ballots" and infos[name].length == 0, (node, infos[name])
        assert infos["raise"].length == 1 and infos["race"].length == 3, infos
    for node, o in prepared.items():   # a vote's shape is one word, whatever the ballot count
        assert o.ok and o.prepared.length == 1, (node, o)
    nodes = json.loads(ok(mpc("status", "--json", "--cluster", env.cluster_file)))
    for n in nodes:
        inputs = {i["name"]: i for i in n["inputs"]}
        assert inputs["referendum"]["length"] is None and inputs["referendum"]["kind"] == "ballots", n
        assert inputs["race"]["length"] == 3, n
    text = ok(mpc("status", "--cluster", env.cluster_file))
    for value in secrets_of_the_referendum():
        assert not shows(text, value), (value, text)


def test_no_error_or_log_of_a_vote_carries_the_ballot_count(env: Env) -> None:
    # Refusals of votes (a spent budget, a pinned participant set, the wrong protocol), once more.
    refused(mpc("vote", "referendum", "--threshold", "3", "--cluster", env.cluster_file))
    refused(mpc("vote", "referendum", "--cluster", env.subsets["bob"]))
    refused(mpc("average", "referendum", "--elementwise", "--cluster", env.cluster_file))
    ok(mpc("vote", "referendum", "--json", "--cluster", env.cluster_file))
    places = {f"log of {n}": env.node_log(n) for n in ALL4}
    places |= {f"audit of {n}": json.dumps(env.audit(n)) for n in ALL4}
    places |= {f"CLI call {i} ({' '.join(map(str, p.args[3:5]))})": p.stdout + p.stderr
               for i, p in enumerate(TRANSCRIPT) if p.args[3] != "input"}   # not the owners' own local commands
    found = [(where, v) for where, text in places.items() for v in secrets_of_the_referendum() if shows(text, v)]
    assert not found, found


# ==== 6. the budget survives a restart; --overwrite is a new version; the audit shows each release ======


def test_budget_survives_restart_and_overwrite_makes_a_fresh_version(env: Env) -> None:
    f = env.cluster_file
    assert ok(mpc("average", "budget", "--cluster", f)).startswith("1.5")
    # A sum of a vector is another query after its average (it opens each element's sum).
    err = refused(mpc("sum", "budget", "--cluster", f), "(max_releases)", "'budget'")
    assert "node alice" in err or "node bob" in err, err
    env.nodes.stop_all()
    env.nodes.start_all(ALL4)
    err = refused(mpc("sum", "budget", "--cluster", f), "(max_releases)", "'budget'")
    assert ok(mpc("average", "budget", "--cluster", f)).startswith("1.5")        # a repeat: free
    # alice stores a new version: her budget is fresh, the others' is still spent.
    out = ok(mpc("input", "put", "budget", "5", "6", "--bounds", "0,1000", "--overwrite",
                 "--cluster", f, "--node", "alice"))
    assert "version 2" in out, out
    err = refused(mpc("sum", "budget", "--cluster", f), "(max_releases)")
    assert not re.search(r"node alice\b[^;]*max_releases", err), err
    for node in ("bob", "carlos", "david"):
        assert "version 2" in ok(mpc("input", "put", "budget", "5", "6", "--bounds", "0,1000", "--overwrite",
                                     "--cluster", f, "--node", node))
    assert ok(mpc("sum", "budget", "--cluster", f, "--json"))
    assert json.loads(TRANSCRIPT[-1].stdout)["sum"] == [20, 24]
    # rm, then put: the version is not reused (3, not 1), so no old release applies to new data.
    ok(mpc("input", "rm", "budget", "--cluster", f, "--node", "alice"))
    out = ok(mpc("input", "put", "budget", "1", "2", "--bounds", "0,1000", "--cluster", f, "--node", "alice"))
    assert "version 3" in out, out
    # The audit log shows each release, and which did not count.
    entries = [e for e in env.audit("alice") if "budget" in e["inputs"]]
    done = [e for e in entries if e["outcome"] == "done"]
    releases = [str(e["release"]) for e in done]
    assert len(done) == 3, entries
    assert "release 1 of at most 1" in releases[0] and "v1" in releases[0], releases
    assert "not counted" in releases[1], releases
    assert "release 1 of at most 1" in releases[2] and "v2" in releases[2], releases
    refusals = [e for e in entries if e["outcome"] == "refused"]
    assert len(refusals) >= 2 and all("(max_releases)" in str(e["reason"]) for e in refusals), refusals
    with Store.open_dir(env.data_dir("alice")) as store:
        assert [r.counted for r in store.releases("budget")] == [True, False, True]


# ==== 7. bounded by the caller ============================================================================


def test_a_20kb_input_name_is_invalid_argument_with_a_short_message(env: Env) -> None:
    """The issue's case: a 20 KB input name came back as a gRPC metadata-size failure."""
    long_name = "x" * 20_000
    sid = new_id()
    o = raw(env, lambda r: r.prepare("alice", sid, long_name, ALL4))
    assert o.code == grpc.StatusCode.INVALID_ARGUMENT, o
    assert len(o.details) < 1024, (len(o.details), o.details[:300])
    assert "metadata" not in o.details.lower(), o.details[:300]
    err = refused(mpc("sum", long_name, "--cluster", env.cluster_file))
    assert len(err) < 2048, (len(err), err[:500])
    assert "metadata" not in err.lower(), err[:500]
    [entry] = [e for e in env.audit("alice") if e["session"] == sid]
    assert entry["outcome"] == "refused" and len(json.dumps(entry)) < 4096, len(json.dumps(entry))


def test_every_long_caller_string_is_quoted_short(env: Env) -> None:
    """Any string a caller sends, 20 KB long, in any Control call: the error quotes about 200
    characters of it, and no node log line grows with it."""
    calls: dict[str, Callable[[Raw], Awaitable[Outcome]]] = {
        "Prepare participant": lambda r: r.prepare("alice", new_id(), "raise", [*ALL4[1:], "a" * 20_000, "alice"]),
        "Prepare session id": lambda r: r.prepare("alice", "f" * 20_000, "raise", ALL4),
        "Compute session id": lambda r: r.compute("alice", "d" * 20_000, 0, 1, {"alice": 1}),
        "Compute version map": lambda r: r.compute("alice", new_id(), 0, 1, {"b" * 20_000: 1}),
        "Abort session id": lambda r: abort_call(r, "e" * 20_000, "r"),
    }
    long = {}
    for what, call in calls.items():
        o = raw(env, call)
        assert o.code is not None, (what, o)
        if len(o.details) >= 1024:
            long[what] = (o.code.name, len(o.details), o.details[:80] + "...")
    lines = {n: max(map(len, env.node_log(n).splitlines()), default=0) for n in ALL4}
    assert not long, f"errors quoting more than 1 KB of what the caller sent: {long}"
    assert all(v < 4000 for v in lines.values()), f"longest node log lines: {lines}"


async def abort_call(r: Raw, sid: str, reason: str) -> Outcome:
    try:
        await r.stub("alice").Abort(mpc_pb2.AbortRequest(session_id=sid, reason=reason), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return Outcome("alice", exc.code(), exc.details() or "")
    return Outcome("alice", None)


def test_many_concurrent_prepares_from_one_coordinator_are_resource_exhausted_and_the_node_keeps_serving(
        env: Env) -> None:
    async def flood(r: Raw) -> tuple[int, list[Outcome], mpc_pb2.StatusReply, Outcome]:
        before = (await r.status("alice")).active_sessions
        sids = [new_id() for _ in range(40)]
        outcomes = await asyncio.gather(*(r.prepare("alice", sid, "raise", ALL4) for sid in sids))
        status = await r.status("alice")
        for sid, o in zip(sids, outcomes):
            if o.ok:
                await r.abort(["alice"], sid)
        again = await r.prepare("alice", sid := new_id(), "raise", ALL4)
        await r.abort(["alice"], sid)
        return before, list(outcomes), status, again

    before, outcomes, status, again = raw(env, flood)
    accepted = [o for o in outcomes if o.ok]
    busy = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(accepted) == 16 - before, (before, [(o.code, o.details[:100]) for o in outcomes])
    assert len(accepted) + len(busy) == 40, [(o.code, o.details[:100]) for o in outcomes if not o.ok and o not in busy]
    assert all("max_sessions_per_coordinator" in o.details for o in busy), busy[:2]
    assert status.active_sessions == 16, status
    assert again.ok, again
