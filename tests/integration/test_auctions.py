"""Sealed-bid auctions, market-clearing prices and plurality votes over real node daemons (grpc.aio,
mutual TLS, SQLite, loopback only): results against plaintext through the Coordinator API and the
`mpc` command, what every party receives, refusals, audit entries and the release budget
(DESIGN.md §9, §10, §13; mpc/protocols/catalogue.py).

The first program session between in-process nodes runs Chou-Orlandi base OTs for every pair
(seconds of CPU); later sessions reuse them. So the module starts ONE four-node cluster (alice,
bob, carlos, david) and keeps it, on one event loop, for every test. Every owner lets any
participant set run any number of distinct queries (harness.ANY_QUERIES), except:
- alice, bob and carlos keep the default budget of one distinct query for the inputs named in
  BUDGET_INPUTS (per_input tables): the release-budget tests use only those;
- alice, bob and carlos name the curves in SUMMABLE_CURVES in `allow.sum`: a sum takes a curve only
  where the owner's policy names it, and naming any input there limits sums to those named;
- david's policy does not allow "auction" (every other protocol of the catalogue) and names
  nothing in `allow`: an auction over all four nodes is refused by him, and so is a sum of a curve.
  Every session that computes runs over alice, bob and carlos.
Inputs are stored as the kind each protocol takes (mpc/store/inputs.py KINDS), and each of these
protocols takes only its own kind: bids with kind="bids" (`mpc input put ... --bids`), net-demand
curves with kind="curve" (`--curve`: checked never to increase when stored) and plurality ballots
with kind="options", bounds=(0, K-1) (`--options K`: a vote reads only the tally per option kept
beside them, and no node shows how many it holds). An auction lays the bids out in the
participants' name order, whatever order the session lists them in.
The `mpc` command runs as `.venv/bin/mpc` in subprocesses (asyncio, so the nodes in this loop keep
serving) with a coordinator's own cluster file that lists those three nodes.

Statistics (PROTOCOLS.md §6): the balanced-bit assertions use Hoeffding's bound,
P(|ones - N/2| >= t) <= 2 exp(-2 t^2 / N), with the file's false-failure probability 1e-6 split
evenly over its BALANCE_TESTS assertions. The "no bit position is constant" checks add at most
(positions) * 2^(1 - sessions) and are asserted below 1e-9 where they are made.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mpc.config import ClusterConfig
from mpc.coordinator.client import Coordinator
from mpc.errors import InputError, SessionFailed
from mpc.protocols import auction
from mpc.protocols.catalogue import NAMES, entry
from mpc.protocols.circuit import plan
from mpc.store import Store
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import ANY_QUERIES, LocalCluster, running_cluster

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
MPC_BIN = REPO / ".venv" / "bin" / "mpc"
ENV = {k: v for k, v in os.environ.items() if k != "MPC_CLUSTER"} | {"PYTHONUNBUFFERED": "1"}
ALL4 = ("alice", "bob", "carlos", "david")
TRIO = ("alice", "bob", "carlos")
CLI_TIMEOUT = 60.0
CALL_TIMEOUT = 10.0
INT32 = (1 << 31) - 1                  # bids are integers within +-INT32
WORD = (1 << 64) - 1

BUDGET_INPUTS = ("budget_bids", "budget_votes", "budget_votes2", "budget_curve", "budget_curve2", "reorder_bids")
SUMMABLE_CURVES = ("budget_curve", "budget_curve2", "curve_summed_allowed")
# The steps that depend on no input (mpc/protocols/compute.py, agreement.py) and an auction's program.
VALUE_FREE = ("agree/digest", "mpc/hello", "sum/", "ot/", "triples/", "arith/")
AUCTION, CLEARING, PLURALITY = (entry(n).wire_id for n in ("auction", "clearing-price", "plurality"))
AUCTION_STEP = re.compile(r"auc/r\d+/(cmp2?/(csa/\d+|gen|ks/\d+|fan/\d+)|b2a2?|sel2?)\Z")


def policy(node: str) -> str:
    """Each owner's policy (added to harness.ANY_QUERIES): see the module docstring."""
    lines = []
    if node == "david":
        lines.append(f"protocols = {json.dumps([n for n in NAMES if n != 'auction'])}")
    else:
        lines.append(f"allow = {{ sum = {json.dumps(list(SUMMABLE_CURVES))} }}")
    for name in BUDGET_INPUTS:
        lines += [f"[nodes.{node}.policy.per_input.{name}]", "max_releases = 1"]
    return "\n".join(lines)


# ---- plaintext ---------------------------------------------------------------------------------------


def layout(bids: Mapping[str, Sequence[int]], nodes: Sequence[str]) -> list[tuple[int, str, int]]:
    """Every bid in the documented public order: (value, node, index there), the participants by name
    (whatever order the session lists them in)."""
    return [(v, node, i) for node in sorted(nodes) for i, v in enumerate(bids[node])]


def plain_auction(bids: Mapping[str, Sequence[int]], nodes: Sequence[str],
                  second: bool) -> tuple[str, int, int]:
    """(winner node, index, price): highest bid wins, ties to the first node by name, then index."""
    flat = layout(bids, nodes)
    g = max(range(len(flat)), key=lambda k: (flat[k][0], -k))
    price = max(v for k, (v, _, _) in enumerate(flat) if k != g) if second else flat[g][0]
    return flat[g][1], flat[g][2], price


def plain_clearing(curves: Mapping[str, Sequence[int]], prices: Sequence[int],
                   nodes: Sequence[str]) -> tuple[int | None, int | None]:
    """(price, index) of the first grid price where total net demand is <= 0, or (None, None)."""
    totals = [sum(curves[n][g] for n in nodes) for g in range(len(prices))]
    index = next((g for g, t in enumerate(totals) if t <= 0), None)
    return (None, None) if index is None else (prices[index], index)


def plain_plurality(ballots: Mapping[str, Sequence[int]], options: int,
                    nodes: Sequence[str]) -> tuple[list[int], int]:
    """(count per option, winner): ties go to the lowest option."""
    counts = [sum(1 for n in nodes for b in ballots[n] if b == k) for k in range(options)]
    return counts, max(range(options), key=lambda k: (counts[k], -k))


# ---- the data ----------------------------------------------------------------------------------------


def random_bids(lengths: Sequence[int], lo: int = -INT32, hi: int = INT32) -> dict[str, list[int]]:
    return {n: [lo + secrets.randbelow(hi - lo + 1) for _ in range(k)] for n, k in zip(TRIO, lengths)}


AUCTIONS: dict[str, dict[str, list[int]]] = {
    "bids_random": random_bids((3, 1, 4)),
    "bids_many": random_bids((11, 16, 6), -1000, 1000),             # 33 bids: 6 rounds, odd ones out
    "bids_tie_nodes": {"alice": [5, 9], "bob": [9], "carlos": [9, 1]},          # alice's 2nd wins
    "bids_tie_index": {"alice": [1], "bob": [7, 7, 3], "carlos": [7]},          # bob's 1st wins
    "bids_extremes": {"alice": [-INT32], "bob": [INT32, -INT32], "carlos": [INT32 - 1]},
    "bids_all_equal": {"alice": [-4, -4], "bob": [-4], "carlos": [-4]},
    "bids_last_wins": {"alice": [0, 0, 0], "bob": [-1], "carlos": [3, 2, 4]},
}


def monotone_curve(length: int, start: int) -> list[int]:
    """A random net-demand curve, not increasing (flat steps allowed)."""
    out, value = [], start
    for _ in range(length):
        out.append(value)
        value -= secrets.randbelow(4)
    return out


CURVE_BOUNDS = (-10_000, 10_000)
CLEARINGS: dict[str, tuple[dict[str, list[int]], list[int]]] = {
    "curve_random": ({"alice": monotone_curve(8, 9), "bob": monotone_curve(8, 2), "carlos": monotone_curve(8, -3)},
                     sorted(secrets.SystemRandom().sample(range(1, 1000), 8))),
    "curve_first": ({"alice": [0, -1], "bob": [0, -5], "carlos": [0, 0]}, [10, 20]),            # total 0 at once
    "curve_exact": ({"alice": [6, 3, 2, 0], "bob": [-1, -1, -2, -2], "carlos": [0, 0, 0, -1]}, [1, 2, 3, 4]),  # 5,2,0,-3
    "curve_never": ({"alice": [50, 40, 30], "bob": [5, 4, 3], "carlos": [-1, -2, -3]}, [-5, 0, 5]),
    "curve_single": ({"alice": [3], "bob": [-2], "carlos": [-1]}, [100]),
    "curve_last": ({"alice": [9, 9, 9, 9, 9], "bob": [0, 0, 0, 0, -9], "carlos": [1, 1, 1, 1, 0]},
                   [-20, -10, 0, 10, 20]),
}

PLURALITIES: dict[str, tuple[dict[str, list[int]], int, int]] = {   # name -> (ballots, options, declared hi)
    "poll_random": ({n: [secrets.randbelow(3) for _ in range(5 + secrets.randbelow(6))] for n in TRIO}, 3, 2),
    "poll_tie": ({"alice": [1, 2], "bob": [2, 0], "carlos": [1]}, 3, 2),          # 1 and 2 tie: 1 wins
    "poll_all_tie": ({"alice": [0, 1], "bob": [2, 3], "carlos": [4]}, 5, 4),      # all 1: option 0
    "poll_unanimous": ({"alice": [1, 1], "bob": [1], "carlos": [1, 1, 1]}, 2, 1),
    "poll_narrow": ({"alice": [0, 2], "bob": [2], "carlos": [1, 2]}, 4, 2),       # declared 0..2 of 4 options
}

# The privacy runs: fixed distinctive bids (every byte of each int32 is non-zero), a unique maximum.
PRIVACY_FIRST = 48
PRIVACY_SECOND = 24


def distinctive_bid() -> int:
    while True:
        v = secrets.randbelow(2 * INT32 + 1) - INT32
        if all((v & 0xFFFFFFFF) >> (8 * k) & 0xFF for k in range(4)):
            return v


def sealed_bids() -> dict[str, list[int]]:
    while True:
        bids = {n: [distinctive_bid() for _ in range(k)] for n, k in zip(TRIO, (3, 2, 2))}
        flat = sorted(v for vs in bids.values() for v in vs)
        if len(set(flat)) == len(flat):
            return bids


SEALED = sealed_bids()


def word(value: int) -> bytes:
    """The 8-byte little-endian two's complement word of an int64/uint64 value."""
    return (value & WORD).to_bytes(8, "little")


def key_of(value: int, position: int, m: int) -> int:
    """A bid's key as mpc/protocols/auction.py documents it: (v + 2^31) * 2^I + (m - 1 - g)."""
    bits = max(1, (m - 1).bit_length())
    return ((value + (1 << 31)) << bits) + (m - 1 - position)


# ---- statistics -----------------------------------------------------------------------------------

FAMILY_ALPHA = 1e-6
# Balanced-bit assertions: the payloads each of 3 nodes sends (comparison, multiplication, B2A low
# bits: 9), the coordinator's shares from each of 3 nodes (first and second price: 6), the values
# opened among the nodes (comparison, multiplication, B2A: 3). Keep in step with the code.
BALANCE_TESTS = 18


def hoeffding_band(trials: int, alpha: float) -> float:
    """t with P(|Binomial(trials, 1/2) - trials/2| >= t) <= alpha."""
    return math.sqrt(trials * math.log(2 / alpha) / 2)


def balanced(ones: int, trials: int) -> bool:
    return abs(ones - trials / 2) < hoeffding_band(trials, FAMILY_ALPHA / BALANCE_TESTS)


def assert_balanced(bits: np.ndarray, what: str) -> None:
    ones, trials = int(bits.sum()), int(bits.size)
    assert trials >= 256, f"{what}: only {trials} bits"
    band = hoeffding_band(trials, FAMILY_ALPHA / BALANCE_TESTS)
    assert balanced(ones, trials), f"{what}: {ones} ones in {trials} bits, allowed ±{band:.0f}"


def bits_of(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def words_of(data: bytes) -> np.ndarray:
    assert len(data) % 8 == 0, len(data)
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def test_the_balance_test_has_power() -> None:
    """Uniform bytes pass; the bids' keys, or a 5% bias, fail (the checks below can fail)."""
    m = sum(map(len, SEALED.values()))
    keys = [key_of(v, g, m) for g, (v, _, _) in enumerate(layout(SEALED, TRIO))]
    assert not balanced(int(bits_of(b"".join(map(word, keys * 400))).sum()), 64 * len(keys) * 400)
    # The bids themselves (their magnitudes: random signs can balance the high halves of a few words).
    assert not balanced(int(bits_of(b"".join(map(word, [abs(v) for vs in SEALED.values() for v in vs] * 400))).sum()),
                        64 * m * 400)
    biased = (np.frombuffer(secrets.token_bytes(4096), dtype=np.uint8) < 243).astype(np.uint8)  # P(1) = 0.95
    assert not balanced(int(biased.sum()), biased.size)
    even = bits_of(bytes(range(256)) * 16)          # exactly half ones (deterministic: no false alarm)
    assert balanced(int(even.sum()), even.size)


# ---- the module's cluster ----------------------------------------------------------------------------


class Views:
    """What coordinators received: session -> node -> share chunks, in arrival order."""

    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))

    def observe(self, session: str, node: str, words: bytes) -> None:
        self.chunks[session][node].append(bytes(words))

    def share(self, session: str, node: str) -> bytes:
        return b"".join(self.chunks[session][node])


@dataclass
class Env:
    """The running cluster, the event loop it lives on, and a coordinator's 3-node cluster file."""

    loop: asyncio.AbstractEventLoop
    lc: LocalCluster
    views: Views
    trio_file: Path
    warmup: str = ""
    privacy: dict[str, list[str]] = field(default_factory=dict)

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        """Run one scenario on the cluster's loop (bounded)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def coordinator(self, nodes: Sequence[str] = TRIO) -> Coordinator:
        return Coordinator(self.lc.cluster, observer=self.views.observe, nodes=nodes)

    def received(self, node: str, session: str) -> list[tuple[str, str, bytes]]:
        """(sender, step, payload) of every peer message `node` accepted in `session`."""
        return [(s, st, p) for sid, s, st, p in self.lc.recorder.received.get(node, []) if sid == session]

    def openings_by(self, sender: str, session: str, prefix: str = "auc/") -> dict[str, bytes]:
        """step -> payload of every program opening `sender` sent in `session`, as its peers received
        it (an opening goes to every peer alike: asserted; OT and triple traffic is per pair)."""
        out: dict[str, bytes] = {}
        for node in TRIO:
            for s, step, payload in self.received(node, session):
                if s == sender and step.startswith(prefix):
                    assert out.setdefault(step, payload) == payload, f"{sender} sent {step} differently to {node}"
        return out

    def audit(self, node: str, session: str | None = None, input_name: str | None = None) -> list[Any]:
        with self.lc.store(node) as store:
            entries = store.audit_log(input_name=input_name, limit=100_000)
        return [e for e in entries if session is None or e.session_id == session]

    def releases(self, node: str, input_name: str) -> list[Any]:
        with self.lc.store(node) as store:
            return store.releases(input_name)


def write_coordinator_file(path: Path, cluster: ClusterConfig, names: Sequence[str]) -> Path:
    """A coordinator's own cluster file: the same CA and coordinator certificate, only `names`."""
    me = cluster.require_coordinator()
    lines = ["[cluster]", f'ca = "{cluster.ca.resolve()}"', "", "[coordinator]", f'name = "{me.name}"',
             f'cert = "{me.cert.resolve()}"', f'key = "{me.key.resolve()}"']
    for name in names:
        node = cluster.node(name)
        lines += ["", f"[nodes.{name}]", f'address = "{node.address}"', f'host = "{node.host}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("auctions")
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        running_cluster(tmp, 4, every_policy=ANY_QUERIES, policies={n: policy(n) for n in ALL4})))
    try:
        for name, bids in AUCTIONS.items():
            for node, values in bids.items():
                lc.put(node, name, values, kind="bids")      # default bounds: +-INT32, what an auction takes
        for name, (curves, _) in CLEARINGS.items():
            for node, values in curves.items():
                lc.put(node, name, values, bounds=CURVE_BOUNDS, kind="curve")
        for name, (ballots, _, hi) in PLURALITIES.items():
            for node, values in ballots.items():
                lc.put(node, name, values, kind="options", bounds=(0, hi))
        for node, values in SEALED.items():
            lc.put(node, "sealed", values, kind="bids")
        e = Env(loop, lc, Views(), write_coordinator_file(tmp / "trio.toml", lc.cluster, TRIO))

        async def warm() -> str:
            async with e.coordinator() as c:      # base OTs for the trio's three pairs, once
                return (await c.auction("bids_tie_nodes")).session_id
        e.warmup = e.run(warm())
        yield e
    finally:
        loop.run_until_complete(stack.aclose())


# ---- raw calls (as tests/integration/test_mtls.py does) ------------------------------------------


@asynccontextmanager
async def control(lc: LocalCluster, node: str) -> AsyncIterator[mpc_pb2_grpc.ControlStub]:
    """A Control stub to `node` with the cluster's coordinator certificate."""
    me = lc.cluster.require_coordinator()
    creds = TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()
    target = lc.cluster.node(node)
    channel = grpc.aio.secure_channel(target.address, creds, options=channel_options(target.name))
    try:
        yield mpc_pb2_grpc.ControlStub(channel)
    finally:
        await channel.close()


def param(value: bool | int | Sequence[int]) -> mpc_pb2.Param:
    if isinstance(value, bool):
        return mpc_pb2.Param(flag=value)
    if isinstance(value, int):
        return mpc_pb2.Param(integer=value)
    return mpc_pb2.Param(integers=mpc_pb2.IntegerList(values=list(value)))


async def active_sessions(lc: LocalCluster, nodes: Sequence[str] = ALL4) -> dict[str, int]:
    async with Coordinator(lc.cluster, nodes=nodes) as c:
        return {s.name: s.active_sessions for s in await c.status()}


# ---- the CLI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ mpc {' '.join(self.args)}\nexit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


async def mpc(*args: str | Path) -> Run:
    """Run `.venv/bin/mpc ARGS...` to completion (bounded) while this loop keeps serving the nodes."""
    proc = await asyncio.create_subprocess_exec(str(MPC_BIN), *map(str, args), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=ENV)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()           # the process this test started, by its handle
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(tuple(map(str, args)), proc.returncode, out.decode(), err.decode())


def json_of(run: Run) -> dict[str, Any]:
    assert run.code == 0 and "Traceback" not in run.stderr, str(run)
    out: dict[str, Any] = json.loads(run.stdout)
    return out


# ---- results against plaintext ---------------------------------------------------------------------


def test_warmup_set_up_the_trio_once_and_david_has_none(env: Env) -> None:
    for node in ALL4:
        setups = env.lc.servers[node].core.ot_setups
        for peer in set(ALL4) - {node}:
            expected = 1 if {node, peer} <= set(TRIO) else 0
            assert len(setups.known(peer)) == expected, (node, peer)


@pytest.mark.parametrize("name", sorted(AUCTIONS))
def test_auction_matches_plaintext(env: Env, name: str) -> None:
    bids = AUCTIONS[name]
    m = sum(map(len, bids.values()))

    async def go() -> None:
        async with env.coordinator() as c:
            for second in (False, True):
                result = await c.auction(name, second_price=second)
                node, index, price = plain_auction(bids, TRIO, second)
                assert (result.winner_node, result.winner_index, result.price) == (node, index, price), (second, bids)
                assert result.pricing == ("second" if second else "first") and result.bids == m
                assert result.nodes == TRIO and result.input_name == name
                # no fresh OT setup: the warm-up's is reused
                assert not any(st.startswith("ot/") for n in TRIO for _, st, _ in env.received(n, result.session_id))
    env.run(go())


@pytest.mark.parametrize("name", sorted(CLEARINGS))
def test_clearing_price_matches_plaintext(env: Env, name: str) -> None:
    curves, prices = CLEARINGS[name]
    for node, curve in curves.items():      # the data really are net-demand curves
        assert all(b <= a for a, b in zip(curve, curve[1:])), (node, curve)

    async def go() -> None:
        async with env.coordinator() as c:
            result = await c.clearing_price(name, prices)
        assert (result.price, result.index) == plain_clearing(curves, prices, TRIO), (curves, prices)
        assert result.prices == prices and result.nodes == TRIO
        # an XOR sharing of a one-hot vector (or of zeros): one 0/1 word per price from every node
        assert all(len(env.views.share(result.session_id, n)) == 8 * len(prices) for n in TRIO)
    env.run(go())


@pytest.mark.parametrize("name", sorted(PLURALITIES))
def test_plurality_matches_plaintext(env: Env, name: str) -> None:
    ballots, options, _ = PLURALITIES[name]
    counts, winner = plain_plurality(ballots, options, TRIO)

    async def go() -> None:
        async with env.coordinator() as c:
            full = await c.plurality(name, options)
            alone = await c.plurality(name, options, winner_only=True)
        assert (full.counts, full.winner) == (counts, winner), ballots
        assert (alone.counts, alone.winner) == (None, winner), ballots
        assert full.options == alone.options == options
        # winner-only: one word from each node, nothing of the counts
        assert all(len(env.views.share(alone.session_id, n)) == 8 for n in TRIO)
    env.run(go())


def test_the_cli_matches_plaintext(env: Env) -> None:
    """`.venv/bin/mpc auction|clearing-price|vote --options ... --json` as a coordinator would type them."""
    cluster = ("--cluster", env.trio_file)
    bids = AUCTIONS["bids_random"]
    curves, prices = CLEARINGS["curve_random"]
    never, never_prices = CLEARINGS["curve_never"]
    ballots, options, _ = PLURALITIES["poll_random"]
    names = ["yes", "no", "abstain"][:options]
    for node in TRIO:       # refusals: bids beyond int32 at bob, numbers (not a curve; not bids) at carlos
        env.lc.put(node, "cli_wide", [1], bounds=(0, INT32 + 1) if node == "bob" else None, kind="bids")
        env.lc.put(node, "cli_plain", [0, -1], bounds=CURVE_BOUNDS, kind="number" if node == "carlos" else "curve")
        env.lc.put(node, "cli_raises", [3 + TRIO.index(node)], kind="number" if node == "carlos" else "bids")

    async def go() -> list[Run]:
        return list(await asyncio.gather(
            mpc("auction", "bids_random", *cluster, "--json"),
            mpc("auction", "bids_random", "--second-price", *cluster, "--json"),
            mpc("clearing-price", "curve_random", "--prices", ",".join(map(str, prices)), *cluster, "--json"),
            mpc("vote", "poll_random", "--options", ",".join(names), *cluster, "--json"),
            mpc("vote", "poll_random", "--options", ",".join(names), "--winner-only", *cluster, "--json"),
            mpc("auction", "bids_tie_index", *cluster),
            mpc("clearing-price", "curve_never", f"--prices={','.join(map(str, never_prices))}", *cluster),
            mpc("vote", "poll_tie", "--options", "a,b,c", "--winner-only", *cluster),
            mpc("auction", "cli_wide", *cluster, "--json"),
            mpc("clearing-price", "cli_plain", "--prices", "1,2", *cluster, "--json"),
            mpc("auction", "cli_raises", *cluster, "--json")))
    first, second, clearing, counts, winner, text_auction, text_never, text_winner, wide, plain, raises = \
        env.run(go())
    for run, needle in ((wide, "node bob refused: input 'cli_wide' at node bob declares bounds 0..2147483648, "
                               "outside -2147483647..2147483647: bids must be integers within +-2147483647"),
                        (plain, "node carlos refused: input 'cli_plain' at node carlos is not declared as curve (it "
                                "holds number); clearing-price takes a net-demand curve stored with `mpc input "
                                "put NAME VALUE... --curve`"),
                        (raises, "node carlos refused: input 'cli_raises' at node carlos is not declared as bids (it "
                                 "holds number); auction takes bids stored with `mpc input put NAME BID... --bids`")):
        assert run.code == 1 and run.stdout == "" and "Traceback" not in run.stderr, str(run)
        assert "mpc: error:" in run.stderr and "nothing was revealed" in run.stderr and needle in run.stderr, str(run)

    for run, is_second in ((first, False), (second, True)):
        out = json_of(run)
        node, index, price = plain_auction(bids, TRIO, is_second)
        assert out["winner"] == {"node": node, "index": index} and out["price"] == price, str(run)
        assert out["pricing"] == ("second" if is_second else "first") and out["bids"] == 8
        assert out["nodes"] == list(TRIO) and out["input"] == "bids_random"
    out = json_of(clearing)
    assert (out["clearing_price"], out["index"]) == plain_clearing(curves, prices, TRIO), str(clearing)
    assert out["prices"] == prices
    expected_counts, expected_winner = plain_plurality(ballots, options, TRIO)
    out = json_of(counts)
    assert (out["counts"], out["winner"]) == (expected_counts, expected_winner), str(counts)
    assert out["option_names"] == names and out["winner_name"] == names[expected_winner]
    out = json_of(winner)
    assert (out["counts"], out["winner"], out["winner_name"]) == (None, expected_winner, names[expected_winner])
    # the plain forms
    assert text_auction.code == 0 and text_auction.stdout == \
        "winner: node bob, bid 0; price 7 (highest bid)\n", str(text_auction)
    assert text_never.code == 0 and text_never.stdout.startswith("no clearing price"), str(text_never)
    assert text_winner.code == 0 and text_winner.stdout == "b\n", str(text_winner)


def test_the_cli_takes_a_price_grid_that_starts_below_zero(env: Env) -> None:
    curves, prices = CLEARINGS["curve_never"]
    assert prices[0] < 0
    run = env.run(mpc("clearing-price", "curve_never", "--prices", ",".join(map(str, prices)),
                      "--cluster", env.trio_file, "--json"))
    assert json_of(run)["clearing_price"] is None, str(run)


# ---- what every party receives ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def privacy(env: Env) -> dict[str, list[str]]:
    """PRIVACY_FIRST first-price and PRIVACY_SECOND second-price auctions on the sealed bids."""
    winner = plain_auction(SEALED, TRIO, False)
    runner_up = plain_auction(SEALED, TRIO, True)

    async def go() -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {"first": [], "second": []}
        async with env.coordinator() as c:
            for kind, sessions in (("first", PRIVACY_FIRST), ("second", PRIVACY_SECOND)):
                for _ in range(sessions):
                    r = await c.auction("sealed", second_price=kind == "second")
                    assert (r.winner_node, r.winner_index, r.price) == (runner_up if kind == "second" else winner)
                    ids[kind].append(r.session_id)
        return ids
    env.privacy = env.run(go(), timeout=300)
    return env.privacy


def sealed_words() -> dict[str, dict[str, bytes]]:
    """Per owner, every word that would give one of its bids away: the bid as an int64/uint64 word,
    its key (first price) and its carried value v + 2^31 + 1 (second price)."""
    m = sum(map(len, SEALED.values()))
    out: dict[str, dict[str, bytes]] = defaultdict(dict)
    for g, (v, owner, i) in enumerate(layout(SEALED, TRIO)):
        out[owner][f"bid {i}"] = word(v)
        out[owner][f"key of bid {i}"] = word(key_of(v, g, m))
        out[owner][f"value word of bid {i}"] = word(v + (1 << 31) + 1)
    return out


def test_no_bid_or_key_appears_in_anything_a_node_or_the_coordinator_receives(
        env: Env, privacy: dict[str, list[str]]) -> None:
    needles = sealed_words()
    assert len(set(n for words in needles.values() for n in words.values())) == 3 * 7
    sessions = privacy["first"] + privacy["second"]
    for session in sessions:
        for node in TRIO:
            got = env.received(node, session)
            steps = {st for _, st, _ in got}
            assert all(st.startswith(VALUE_FREE) or AUCTION_STEP.match(st) for st in steps), steps
            assert not any(st.startswith(("ot/", "sum/")) for st in steps), steps   # setups reused; no sum
            for sender, step, payload in got:
                # every owner's words, including the receiver's own: nobody may send them back either
                for owner, words in needles.items():
                    for what, needle in words.items():
                        assert needle not in payload, f"{owner}'s {what} in {step} from {sender} to {node}"
            share = env.views.share(session, node)
            assert len(share) == (8 if session in privacy["first"] else 16)
            for owner, words in needles.items():
                for what, needle in words.items():
                    assert needle not in share, f"{owner}'s {what} in {node}'s output share"


def test_comparison_and_multiplication_payloads_are_uniform(env: Env, privacy: dict[str, list[str]]) -> None:
    """What each node sends in the comparison (AND-gate openings), multiplication (select) and
    B2A rounds, pooled over every auction of the privacy runs: balanced bits; B2A words are 0/1."""
    sessions = privacy["first"] + privacy["second"]
    for sender in TRIO:
        pools: dict[str, list[np.ndarray]] = defaultdict(list)
        for session in sessions:
            program = env.openings_by(sender, session)
            assert program and all(AUCTION_STEP.match(st) for st in program), sorted(program)
            for step, payload in program.items():
                kind = step.split("/")[2]
                if kind.startswith("cmp"):
                    pools["comparison"].append(bits_of(payload))
                elif kind.startswith("sel"):
                    pools["multiplication"].append(bits_of(payload))
                else:                       # b2a: e_i = b_i ^ r_i, one bit per word
                    words = words_of(payload)
                    assert set(words.tolist()) <= {0, 1}, (sender, step)
                    pools["b2a"].append((words & np.uint64(1)).astype(np.uint8))
        assert sorted(pools) == ["b2a", "comparison", "multiplication"]
        for kind, chunks in pools.items():
            assert_balanced(np.concatenate(chunks), f"{kind} payloads {sender} sent")


def test_coordinator_shares_combine_to_the_output_and_each_alone_is_uniform(
        env: Env, privacy: dict[str, list[str]]) -> None:
    m = sum(map(len, SEALED.values()))
    flat = layout(SEALED, TRIO)
    top = max(range(m), key=lambda k: (flat[k][0], -k))
    second = max(v for k, (v, _, _) in enumerate(flat) if k != top)
    expected = {"first": [key_of(flat[top][0], top, m)], "second": [top, second + (1 << 31) + 1]}
    for kind, sessions in privacy.items():
        shares = {n: np.stack([words_of(env.views.share(s, n)) for s in sessions]) for n in TRIO}
        for k, session in enumerate(sessions):
            total = sum(shares[n][k] for n in TRIO)      # uint64: wraps mod 2^64
            assert total.tolist() == expected[kind], (kind, session)
            for n in TRIO:                                # no share is the output itself
                assert shares[n][k].tolist() != expected[kind]
        for n in TRIO:
            assert_balanced(bits_of(shares[n].astype("<u8").tobytes()), f"{kind}-price shares from {n}")
            assert len({row.tobytes() for row in shares[n]}) == len(sessions), f"{n} repeated a {kind}-price share"
    # No bit position of a first-price share is fixed across sessions (P <= 3 * 64 * 2^(1 - 48) if uniform).
    assert 3 * 64 * 2.0 ** (1 - PRIVACY_FIRST) < 1e-9
    for n in TRIO:
        bits = np.stack([bits_of(env.views.share(s, n)) for s in privacy["first"]])
        ones = bits.sum(axis=0)
        assert np.all((ones > 0) & (ones < len(privacy["first"]))), (n, ones)


def test_every_value_opened_among_the_nodes_is_the_output_or_uniform(
        env: Env, privacy: dict[str, list[str]]) -> None:
    """Every opening of an auction's program, as the nodes compute it: the XOR (AND gates, B2A) or the
    sum mod 2^64 (multiplications) of every node's payload for the step. Each opened vector is the
    declared output or joins a pool that must be uniform; over the first-price runs no bit position
    of any opening is fixed."""
    m = sum(map(len, SEALED.values()))
    flat = layout(SEALED, TRIO)
    top = max(range(m), key=lambda k: (flat[k][0], -k))
    second = max(v for k, (v, _, _) in enumerate(flat) if k != top)
    outputs = {"first": [key_of(flat[top][0], top, m)], "second": [top, second + (1 << 31) + 1]}
    # Every opening was recorded: the steps and sizes are exactly the program's public shape.
    shapes = {"first": plan(auction.first_price, len(TRIO), m), "second": plan(auction.second_price, len(TRIO), 2 * m)}
    pools: dict[str, list[np.ndarray]] = defaultdict(list)
    by_position: dict[str, list[np.ndarray]] = defaultdict(list)     # first price: step -> opened bits
    as_output = 0
    for kind, sessions in privacy.items():
        shape = sorted((f"auc/{label}", 8 * words) for label, words in shapes[kind].rounds)
        for session in sessions:
            sent = {n: env.openings_by(n, session) for n in TRIO}
            steps = sorted(sent["alice"])
            for n in TRIO:
                assert sorted((st, len(p)) for st, p in sent[n].items()) == shape, (n, session)
            for step in steps:
                parts = [words_of(sent[n][step]) for n in TRIO]
                op = step.split("/")[2]
                opened = parts[0].copy()
                for p in parts[1:]:
                    if op.startswith("sel"):
                        opened += p                      # additive sharing mod 2^64
                    else:
                        opened ^= p                      # XOR sharing
                if opened.tolist() == outputs[kind]:
                    as_output += 1
                    continue
                if op.startswith("b2a"):
                    assert set(opened.tolist()) <= {0, 1}, step     # e = b ^ r: one bit per word
                    bits = (opened & np.uint64(1)).astype(np.uint8)
                    pools["b2a"].append(bits)
                else:
                    bits = bits_of(opened.astype("<u8").tobytes())
                    pools["comparison" if op.startswith("cmp") else "multiplication"].append(bits)
                if kind == "first":
                    by_position[step].append(bits)
    assert as_output == 0           # the auction opens nothing among the nodes that is its output
    for kind, chunks in pools.items():
        assert_balanced(np.concatenate(chunks), f"opened {kind} values")
    positions = sum(rows[0].size for rows in by_position.values())
    assert positions * 2.0 ** (1 - PRIVACY_FIRST) < 1e-9, positions
    for step, rows in by_position.items():
        assert len(rows) == PRIVACY_FIRST, step
        ones = np.stack(rows).sum(axis=0)
        assert np.all((ones > 0) & (ones < PRIVACY_FIRST)), f"a bit of the opening {step} is fixed"


# ---- refusals --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """An input as one node stores it: its values, declaration and kind."""

    values: list[int]
    bounds: tuple[int, int] | None = None
    frac_bits: int = 0
    kind: str = "number"              # one of mpc.store.KINDS

    def put(self, lc: LocalCluster, node: str, name: str, *, overwrite: bool = False) -> int:
        return lc.put(node, name, self.values, bounds=self.bounds, frac_bits=self.frac_bits, overwrite=overwrite,
                      kind=self.kind)


# name -> (protocol call, participants, {node: what it holds} for the nodes that differ from a good
# input, the refusing nodes, words the error must contain)
GOOD_BIDS = {"alice": [3, 1], "bob": [2], "carlos": [5]}
GOOD_BALLOTS = {"alice": [0, 1], "bob": [2], "carlos": [1, 1]}
INT32_RULE = "outside -2147483647..2147483647: bids must be integers within +-2147483647"
NOT_BIDS = "auction takes bids stored with `mpc input put NAME BID... --bids`"
NOT_OPTIONS = "plurality takes ballots stored with `mpc input put NAME 0 2 1 ... --options K`"
CURVE = Held([4, 3], CURVE_BOUNDS, kind="curve")


def everywhere(held: Held, nodes: Sequence[str] = ALL4) -> dict[str, Held]:
    return dict.fromkeys(nodes, held)


REFUSALS: dict[str, tuple[str, tuple[str, ...], dict[str, Held], tuple[str, ...], tuple[str, ...]]] = {
    "bids_above_int32": ("auction", TRIO, {"bob": Held([2], (0, INT32 + 1), kind="bids")}, ("bob",),
                         (f"declares bounds 0..2147483648, {INT32_RULE}",)),
    "bids_below_int32": ("auction-second", TRIO, {"carlos": Held([-5], (-INT32 - 1, 0), kind="bids")}, ("carlos",),
                         (f"declares bounds -2147483648..0, {INT32_RULE}",)),
    # Each protocol made for a kind takes no other: an auction of numbers (say everyone's raises)
    # would open the highest and whose it is; a plurality of 0/1 ballots would open their tally.
    "bids_as_numbers": ("auction", TRIO, {"alice": Held([4, 7])}, ("alice",),
                        (f"is not declared as bids (it holds number); {NOT_BIDS}",)),
    "bids_fixed_point_numbers": ("auction", TRIO, {"alice": Held([256, 512], None, 8)}, ("alice",),
                                 (f"is not declared as bids (it holds number); {NOT_BIDS}",)),
    "bids_on_a_curve": ("auction", TRIO, {"bob": Held([3, 1], CURVE_BOUNDS, kind="curve")}, ("bob",),
                        (f"is not declared as bids (it holds curve); {NOT_BIDS}",)),
    "bids_as_options": ("auction-second", TRIO, {"carlos": Held([1, 0], (0, 2), kind="options")}, ("carlos",),
                        (f"is not declared as bids (it holds options); {NOT_BIDS}",)),
    "ballots_above_options": ("plurality", TRIO, {"bob": Held([2], (0, 3), kind="options")}, ("bob",),
                              ("declares bounds 0..3, outside 0..2: ballots must be option indices 0..2",
                               "ballots outside the options are refused")),
    "ballots_as_numbers": ("plurality-winner", TRIO, {"carlos": Held([1, 1], (0, 2))}, ("carlos",),
                           (f"is not declared as options (it holds number); {NOT_OPTIONS}",)),
    "yes_no_ballots_in_a_plurality": ("plurality", TRIO, everywhere(Held([1, 0, 1], kind="ballots"), TRIO), TRIO,
                                      (f"is not declared as options (it holds ballots); {NOT_OPTIONS}",)),
    "options_in_a_yes_no_vote": ("vote", TRIO, {"alice": Held([0, 2], (0, 2), kind="options")}, ("alice",),
                                 ("is not declared as ballots (it holds options); vote takes ballots stored with "
                                  "`mpc input put NAME 1 0 ... --ballots`",)),
    "curve_wrong_length": ("clearing-price", TRIO, {}, TRIO,
                           ("has 2 values, the price grid 3 prices: one net demand per price",)),
    # A protocol on numbers takes an input made for another only where the owner's policy names it
    # in allow.<protocol>. alice, bob and carlos name SUMMABLE_CURVES in allow.sum (so a sum takes
    # nothing else there); david names nothing.
    "curve_summed": ("sum", ALL4, everywhere(CURVE), ALL4,
                     ("node david: input 'curve_summed' holds curve, which only clearing-price may use (the "
                      "policy's allow.sum may name it)",
                      f"node alice: policy allows protocol 'sum' only on {', '.join(sorted(SUMMABLE_CURVES))}, "
                      f"not on 'curve_summed'")),
    "curve_thresholded": ("threshold", TRIO, everywhere(CURVE, TRIO), TRIO,
                          ("input 'curve_thresholded' holds curve, which only clearing-price may use (the policy's "
                           "allow.threshold may name it)",)),
    "bids_averaged": ("average", TRIO, everywhere(Held([5, 9], kind="bids"), TRIO), TRIO,
                      ("input 'bids_averaged' holds bids, which only auction may use (the policy's allow.average "
                       "may name it)",)),
    "options_averaged": ("average", TRIO, {"bob": Held([0, 2], (0, 2), kind="options")}, ("bob",),
                         ("node bob: input 'options_averaged' holds options, which only plurality may use (the "
                          "policy's allow.average may name it)",)),
    "ballots_thresholded": ("threshold", TRIO, {"carlos": Held([1, 1, 0], kind="ballots")}, ("carlos",),
                            ("node carlos: input 'ballots_thresholded' holds ballots, which only vote may use (the "
                             "policy's allow.threshold may name it)",)),
    "auction_not_allowed": ("auction", ALL4, {}, ("david",),
                            ("policy does not allow protocol 'auction' (asked for input 'auction_not_allowed'",)),
    "single_bidder": ("auction", ("alice",), {}, ("alice",), ("policy requires at least 3 participants",)),
}
# Refused by the owner's policy: the error names the node and the rule, and the input as a needle
# above where the rule mentions it (the audit entry always names it).
POLICY_REFUSALS = {"auction_not_allowed", "single_bidder", "curve_summed", "curve_thresholded", "bids_averaged",
                   "options_averaged", "ballots_thresholded"}


def good_input(protocol: str, node: str) -> Held:
    """What a node holds that the protocol takes (the bad inputs differ at one node)."""
    if protocol.startswith("plurality"):
        return Held(GOOD_BALLOTS[node], (0, 2), kind="options")
    if protocol == "vote":
        return Held([1, 0, 1], kind="ballots")
    if protocol == "clearing-price":
        return CURVE
    if protocol.startswith("auction"):
        return Held(GOOD_BIDS.get(node, [9]), kind="bids")
    return Held([1, 2])


async def call(c: Coordinator, protocol: str, name: str) -> Any:
    if protocol.startswith("auction"):
        return await c.auction(name, second_price=protocol == "auction-second")
    if protocol.startswith("plurality"):
        return await c.plurality(name, 3, winner_only=protocol == "plurality-winner")
    if protocol == "vote":
        return await c.vote(name)
    if protocol == "sum":
        return await c.sum(name)
    if protocol == "average":
        return await c.average(name)
    if protocol == "threshold":
        return await c.at_least(name, 3)
    return await c.clearing_price(name, [1, 2, 3])


def session_of(error: BaseException) -> str:
    found = re.search(r"session ([0-9a-f]{32})", str(error))
    assert found, str(error)
    return found.group(1)


def assert_refused_with_nothing_shared(env: Env, session: str, name: str, nodes: Sequence[str],
                                       refusing: Sequence[str], needles: Sequence[str]) -> None:
    """Every participant audits the session once, sending nothing; the refusing nodes say why (a
    needle that starts "node X:" is X's reason alone)."""
    for node in nodes:
        entries = env.audit(node, session)
        assert len(entries) == 1, (node, entries)
        entry = entries[0]
        assert entry.inputs == (name,), entry
        assert entry.sent == (), (node, entry.sent)
        if node in refusing:
            mine = [n for n in needles if not n.startswith("node ") or n.startswith(f"node {node}:")]
            assert entry.outcome == "refused" and all(needle in entry.reason for needle in mine), entry
        else:
            assert entry.outcome in ("aborted", "refused"), entry
        assert not env.releases(node, name), node                  # no release spent


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_name_the_node_and_input_and_nothing_is_shared(env: Env, name: str) -> None:
    protocol, nodes, bad, refusing, needles = REFUSALS[name]
    for node in nodes:
        bad.get(node, good_input(protocol, node)).put(env.lc, node, name)
    before_peer = env.lc.recorder.counts()
    before_views = set(env.views.chunks)

    async def go() -> str:
        async with env.coordinator(nodes) as c:
            with pytest.raises(SessionFailed) as err:
                await call(c, protocol, name)
        message = str(err.value)
        assert "nothing was revealed" in message, message
        for node in refusing:
            assert f"node {node} refused" in message, message
            if name not in POLICY_REFUSALS:
                assert f"input {name!r} at node {node}" in message, message
        for needle in needles:
            assert needle in message, message
        assert set((await active_sessions(env.lc)).values()) == {0}
        return session_of(err.value)
    session = env.run(go())
    # nothing shared: no node received a message, the coordinator no share
    assert env.lc.recorder.counts() == before_peer
    assert set(env.views.chunks) == before_views
    assert_refused_with_nothing_shared(env, session, name, nodes, refusing, needles)
    for node in nodes:
        [entry] = env.audit(node, session)
        assert entry.protocol == protocol.split("-second")[0].split("-winner")[0], entry


RISES = "a net-demand curve never increases with the price (demand positive, supply negative); nothing was stored"


def test_a_rising_curve_cannot_be_stored_and_clearing_price_refuses_an_input_not_declared_as_a_curve(
        env: Env) -> None:
    """Monotonicity is a property of the kind, checked when a curve is stored (Store and `mpc input
    put --curve`), naming positions, never values; nothing is stored, and a curve already stored
    stays as it was. A clearing price takes only curves: a number input, rising or not, is refused at
    prepare on its kind alone (the refusal reads the same whatever the values), before anything is
    shared; the refusal is in that node's audit log; no release is spent."""
    alice_dir = env.lc.cluster.node("alice").data_dir
    assert alice_dir is not None
    for values, words in (([9137, 9999, 8455], "value 2 is above value 1"),
                          ([5, 5, 5, 6], "value 4 is above value 3")):
        with pytest.raises(InputError) as err:
            env.lc.put("alice", "curve_up", values, bounds=CURVE_BOUNDS, kind="curve")
        assert str(err.value) == f"input 'curve_up': {words}; {RISES}", str(err.value)
    kept = Held([3, 2, 2], CURVE_BOUNDS, kind="curve").put(env.lc, "alice", "curve_kept")
    with pytest.raises(InputError, match="value 3 is above value 2"):
        env.lc.put("alice", "curve_kept", [3, 2, 9], bounds=CURVE_BOUNDS, kind="curve", overwrite=True)
    with Store.open_dir(alice_dir) as store:
        assert "curve_up" not in {i.name for i in store.list_inputs()}
        declared, _, length = store.get_declared("curve_kept")
        assert (declared.version, declared.kind, length) == (kept, "curve", 3)

    async def cli() -> tuple[Run, Run]:
        return (await mpc("input", "put", "curve_up", "9137", "9999", "8455", "--curve", "--bounds=-10000,10000",
                          "--data-dir", alice_dir),
                await mpc("input", "list", "--data-dir", alice_dir, "--json"))
    put, listed = env.run(cli())
    assert put.code == 1 and put.stdout == "" and "Traceback" not in put.stderr, str(put)
    assert f"mpc: error: input 'curve_up': value 2 is above value 1; {RISES}" in put.stderr, str(put)
    assert not any(v in put.stderr for v in ("9137", "9999", "8455")), str(put)
    assert listed.code == 0 and "curve_up" not in {i["name"] for i in json.loads(listed.stdout)}, str(listed)

    # numbers given to a clearing price: refused on the kind, the same words for a rising vector and a falling one
    for node in TRIO:
        kind = "number" if node == "alice" else "curve"
        env.lc.put(node, "curve_plain_up", [1, 3, 0] if node == "alice" else [0, -1, -2], bounds=CURVE_BOUNDS,
                   kind=kind)
        env.lc.put(node, "curve_plain_down", [3, 1, 0] if node == "alice" else [0, -1, -2], bounds=CURVE_BOUNDS,
                   kind=kind)
    before_peer = env.lc.recorder.counts()
    before_views = set(env.views.chunks)
    needle = ("is not declared as curve (it holds number); clearing-price takes a net-demand curve stored with "
              "`mpc input put NAME VALUE... --curve` (checked never to increase)")

    async def go() -> dict[str, tuple[str, str]]:
        out = {}
        async with env.coordinator() as c:
            for name in ("curve_plain_up", "curve_plain_down"):
                with pytest.raises(SessionFailed) as err:
                    await c.clearing_price(name, [1, 2, 3])
                message = str(err.value)
                assert f"node alice refused: input {name!r} at node alice {needle}" in message, message
                assert "nothing was revealed" in message and "bob refused" not in message, message
                out[name] = (session_of(err.value), message)
        assert set((await active_sessions(env.lc)).values()) == {0}
        return out
    sessions = env.run(go())
    assert env.lc.recorder.counts() == before_peer      # nothing sent
    assert set(env.views.chunks) == before_views                                          # not one share
    reasons = []
    for name, (session, _) in sessions.items():
        assert_refused_with_nothing_shared(env, session, name, TRIO, ("alice",), (needle,))
        [entry] = env.audit("alice", session)
        assert entry.protocol == "clearing-price", entry
        reasons.append(entry.reason.replace(name, "NAME").replace(session, "SESSION"))
    assert reasons[0] == reasons[1], reasons           # nothing in the refusal depends on the values


OPTIONS_RULE = "options are ballots 0..K-1 for K from 2 to 256 (--options K); no other bounds or scale"
BALLOTS_RULE = ("ballots are the integers 0 and 1 (no other bounds or scale; option indices for a plurality vote "
                "are stored with --options K)")


def test_each_kind_is_stored_with_its_own_rule(env: Env, tmp_path: Path) -> None:
    """The store refuses options whose bounds start anywhere but 0, or that declare fewer than 2 or
    more than 256 options, or fixed point, and an option outside its declared 0..K-1 (naming its
    position); 0/1 ballots take no other bounds (pointing at --options K); bids are integers.
    `mpc input put --options K | --bids | --curve` stores each kind (K sets the bounds itself)."""
    for held, words in ((Held([0, 1], (-1, 2), kind="options"), OPTIONS_RULE),
                        (Held([1], (1, 2), kind="options"), OPTIONS_RULE),
                        (Held([0, 0], (0, 0), kind="options"), OPTIONS_RULE),            # K = 1
                        (Held([0, 255], (0, 256), kind="options"), OPTIONS_RULE),        # K = 257
                        (Held([0, 1], None, kind="options"), OPTIONS_RULE),              # K undeclared
                        (Held([256, 512], (0, 512), 8, kind="options"), OPTIONS_RULE),
                        (Held([0, 3, 2], (0, 2), kind="options"), "value 2 is not a ballot (0..2); nothing was stored"),
                        (Held([0, 2], (0, 2), kind="ballots"), BALLOTS_RULE),
                        (Held([0, 1, 2], None, kind="ballots"), "value 3 is not a ballot (0..1); nothing was stored"),
                        (Held([256, 512], None, 8, kind="bids"), "bids are integers (no fractional bits)"),
                        (Held([1], kind="votes"), "unknown kind 'votes'; known: number, ballots, options, curve, "
                                                  "bids, set")):
        with pytest.raises(InputError) as err:
            held.put(env.lc, "bob", "poll_bad")
        assert str(err.value) == f"input 'poll_bad': {words}", (held, str(err.value))
    widest = Held([0, 255], (0, 255), kind="options").put(env.lc, "bob", "poll_widest")      # K = 256
    bob_dir = env.lc.cluster.node("bob").data_dir
    assert bob_dir is not None
    with Store.open_dir(bob_dir) as store:
        assert "poll_bad" not in {i.name for i in store.list_inputs()}
        declared, _, _ = store.get_declared("poll_widest")
        assert (declared.version, declared.kind, declared.bounds) == (widest, "options", (0, 255))
    data_dir = tmp_path / "owner"
    where = ("--data-dir", data_dir)

    async def cli() -> list[Run]:
        runs = [await mpc("input", "put", "poll", "0", "2", "1", "--options", "3", *where),
                await mpc("input", "put", "demand", "40", "25", "-5", "-30", "--curve", "--bounds=-1000,1000", *where),
                await mpc("input", "put", "bids", "17", "-4", "23", "--bids", *where),
                await mpc("input", "put", "one_bid", "5", "--bids", *where),
                await mpc("input", "put", "yes_no", "1", "0", "--ballots", *where),
                await mpc("input", "put", "poll_bounds", "0", "1", "--options", "3", "--bounds", "0,2", *where),
                await mpc("input", "put", "poll_one", "0", "--options", "1", *where),
                await mpc("input", "put", "poll_wide", "0", "1", "--options", "257", *where),
                await mpc("input", "put", "poll_ballots", "0", "2", "--ballots", "--bounds", "0,2", *where),
                await mpc("input", "put", "bids_half", "2.5", "3", "--bids", *where),
                await mpc("input", "put", "bids_curve", "3", "2", "--bids", "--curve", *where)]
        return runs + [await mpc("input", "list", *where, "--json")]
    poll, demand, bids, one_bid, yes_no, with_bounds, one, wide, ballots, half, both, listed = env.run(cli())
    for run, line in ((poll, "stored 'poll' version 1: options of 3 (exact integers; bounds 0,2)"),
                      (demand, "stored 'demand' version 1: curve of 4 (exact integers; bounds -1000,1000)"),
                      (bids, "stored 'bids' version 1: bids of 3 (exact integers; bounds -2147483647,2147483647)"),
                      (one_bid, "stored 'one_bid' version 1: bids of 1 (exact integers; bounds "
                                "-2147483647,2147483647)"),
                      (yes_no, "stored 'yes_no' version 1: ballots of 2 (exact integers; bounds 0,1)")):
        assert run.code == 0 and run.stdout == line + "\n", str(run)
    for run, words in ((with_bounds, "mpc: error: --options K declares the bounds 0,K-1 itself; leave out --bounds"),
                       (one, f"mpc: error: input 'poll_one': {OPTIONS_RULE}"),
                       (wide, f"mpc: error: input 'poll_wide': {OPTIONS_RULE}"),
                       (ballots, f"mpc: error: input 'poll_ballots': {BALLOTS_RULE}"),
                       (half, "mpc: error: input 'bids_half': bids are integers (no fractional bits)")):
        assert run.code == 1 and run.stdout == "" and words in run.stderr and "Traceback" not in run.stderr, str(run)
    assert both.code == 2 and "not allowed with argument" in both.stderr, str(both)     # one kind per input
    kinds = {i["name"]: (i["kind"], i["bounds"]) for i in json.loads(listed.stdout)}
    assert kinds == {"poll": ("options", [0, 2]), "demand": ("curve", [-1000, 1000]),
                     "bids": ("bids", [-INT32, INT32]), "one_bid": ("bids", [-INT32, INT32]),
                     "yes_no": ("ballots", [0, 1])}, str(listed)


def test_the_cli_takes_bounds_that_start_below_zero(env: Env, tmp_path: Path) -> None:
    run = env.run(mpc("input", "put", "demand", "40", "25", "-5", "-30", "--curve", "--bounds", "-1000,1000",
                      "--data-dir", tmp_path / "owner"))
    assert run.code == 0 and run.stdout.startswith("stored 'demand' version 1: curve of 4"), str(run)


def status_views(env: Env) -> tuple[list[dict[str, Any]], str, dict[str, mpc_pb2.InputInfo]]:
    """`mpc status --json` and `mpc status` over the trio, and bob's raw Status reply."""
    async def go() -> tuple[Run, Run, mpc_pb2.StatusReply]:
        cluster = ("--cluster", env.trio_file)
        runs = await asyncio.gather(mpc("status", *cluster, "--json"), mpc("status", *cluster))
        async with control(env.lc, "bob") as stub:
            raw = await stub.Status(mpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
        return runs[0], runs[1], raw
    as_json, as_text, raw = env.run(go())
    assert as_json.code == 0 and "Traceback" not in as_json.stderr, str(as_json)
    assert as_text.code == 0, str(as_text)
    nodes: list[dict[str, Any]] = json.loads(as_json.stdout)
    assert [n["node"] for n in nodes] == list(TRIO), str(as_json)
    return nodes, as_text.stdout, {i.name: i for i in raw.inputs}


def test_status_shows_curves_and_bids_with_their_kind_and_length(env: Env) -> None:
    """`mpc status --json`, `mpc status` and the Status reply: curves and bids with their kind, length
    and bounds (their number is public: an auction reports it at prepare)."""
    nodes, text, wire = status_views(env)
    for name, (_, prices) in CLEARINGS.items():
        assert (wire[name].kind, wire[name].length) == ("curve", len(prices)), wire[name]
    for name, bids in AUCTIONS.items():
        assert (wire[name].kind, wire[name].length) == ("bids", len(bids["bob"])), wire[name]
    for n in nodes:
        node = n["node"]
        inputs = {i["name"]: i for i in n["inputs"]}
        for name, (_, prices) in CLEARINGS.items():
            shown = inputs[name]
            assert (shown["kind"], shown["length"], shown["bounds"]) == ("curve", len(prices), list(CURVE_BOUNDS)), \
                (node, shown)
        for name, bids in AUCTIONS.items():
            shown = inputs[name]
            assert (shown["kind"], shown["length"], shown["bounds"]) == ("bids", len(bids[node]), [-INT32, INT32]), \
                (node, shown)
    for shape in (r"\bbids_random\[\d+\]\[bids\] v1 ", r"\bcurve_random\[8\]\[curve\] v1 "):
        assert re.search(shape, text), (shape, text)


def test_status_shows_options_without_their_number(env: Env) -> None:
    """A plurality's ballots (kind "options") are counted like 0/1 ballots: no node shows how many it
    holds (length 0 in its Status reply), `mpc status --json` has "length": null, the text no count."""
    nodes, text, wire = status_views(env)
    for name in PLURALITIES:
        assert (wire[name].kind, wire[name].length) == ("options", 0), wire[name]
    for n in nodes:
        inputs = {i["name"]: i for i in n["inputs"]}
        for name, (_, _, hi) in PLURALITIES.items():
            shown = inputs[name]
            assert (shown["kind"], shown["length"], shown["bounds"]) == ("options", None, [0, hi]), (n["node"], shown)
    for name in PLURALITIES:
        assert re.search(rf"\b{name}\[options\]", text) and not re.search(rf"\b{name}\[\d", text), text


def test_a_single_bid_in_all_is_refused_and_an_empty_bid_vector_cannot_be_stored(env: Env) -> None:
    """Every node holds at least one bid (the store refuses an empty vector) and every policy needs at
    least two participants, so only a coordinator that lies about the other nodes' lengths can ask
    for an auction of one bid: the node refuses it at compute, before anything leaves it."""
    with pytest.raises(InputError, match="input 'no_bids' is empty"):
        env.lc.put("alice", "no_bids", [], kind="bids")
    for node in TRIO:
        env.lc.put(node, "one_bid", [42 + TRIO.index(node)], kind="bids")
    session = secrets.token_hex(16)

    async def go() -> None:
        request = mpc_pb2.PrepareRequest(session_id=session, protocol=AUCTION, input_name="one_bid",
                                         participants=list(TRIO), timeout_ms=10_000,
                                         params={"second_price": param(True)})
        versions = {}
        for node in TRIO:
            async with control(env.lc, node) as stub:
                reply = await stub.Prepare(request, timeout=CALL_TIMEOUT)
                assert reply.length == 1
                versions[node] = reply.input_version
        for lengths in ({"alice": 1, "bob": 0, "carlos": 0},):
            async with control(env.lc, "alice") as stub:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.Compute(mpc_pb2.ComputeRequest(session_id=session, frac_bits=0, length=2,
                                                                       input_versions=versions, lengths=lengths),
                                                timeout=CALL_TIMEOUT):
                        raise AssertionError("a share chunk left alice")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "node alice, input 'one_bid': an auction needs at least two bids in all, got 1" in \
                (err.value.details() or ""), err.value
        for node in TRIO:
            async with control(env.lc, node) as stub:
                await stub.Abort(mpc_pb2.AbortRequest(session_id=session, reason="test"), timeout=CALL_TIMEOUT)
        assert set((await active_sessions(env.lc)).values()) == {0}
    env.run(go())
    assert not any(env.received(node, session) for node in TRIO)
    assert session not in env.views.chunks


def test_a_price_grid_that_is_empty_or_not_increasing_is_refused(env: Env) -> None:
    """By the coordinator before any node is asked (API and CLI), and by a node that gets one anyway."""
    audit_before = {n: len(env.audit(n)) for n in TRIO}

    async def go() -> list[Run]:
        async with env.coordinator() as c:
            for prices, words in (([], "needs a price grid"), ([3, 2, 4], "price 2 (2) is not above price 1 (3)"),
                                  ([1, 1, 2], "strictly increasing")):
                with pytest.raises(InputError) as err:
                    await c.clearing_price("curve_random", prices)
                assert words in str(err.value), str(err.value)
        assert {n: len(env.audit(n)) for n in TRIO} == audit_before      # no node was asked
        cluster = ("--cluster", env.trio_file)
        return list(await asyncio.gather(mpc("clearing-price", "curve_random", "--prices", "30,20,10", *cluster),
                                         mpc("clearing-price", "curve_random", "--prices", "", *cluster)))
    decreasing, empty = env.run(go())
    assert decreasing.code == 1 and decreasing.stdout == "", str(decreasing)
    assert "mpc: error: the price grid must be strictly increasing: price 2 (20) is not above price 1 (30)" \
        in decreasing.stderr, str(decreasing)
    assert empty.code == 2 and empty.stdout == "" and "need comma-separated integers" in empty.stderr, str(empty)
    assert {n: len(env.audit(n)) for n in TRIO} == audit_before

    async def raw() -> None:
        for prices, words in (([], "needs a price grid"), ([5, 5], "strictly increasing")):
            session = secrets.token_hex(16)
            async with control(env.lc, "bob") as stub:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Prepare(mpc_pb2.PrepareRequest(
                        session_id=session, protocol=CLEARING, input_name="curve_first", participants=list(TRIO),
                        timeout_ms=10_000, params={"prices": param(prices)}), timeout=CALL_TIMEOUT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "protocol clearing-price" in (err.value.details() or "") and words in (err.value.details() or "")
            [entry] = env.audit("bob", session)
            assert entry.outcome == "refused" and words in entry.reason and entry.inputs == ("curve_first",)
        assert set((await active_sessions(env.lc)).values()) == {0}
    env.run(raw())


@pytest.mark.parametrize("wire_id,params,words", [
    (AUCTION, {"second_price": True, "reserve_price": 7}, "protocol auction takes no parameter 'reserve_price' "
                                                          "(it takes: second_price)"),
    (AUCTION, {"second_price": 1}, "protocol auction: parameter 'second_price' must be bool"),
    (PLURALITY, {"options": 3, "winner_only": True, "threshold": 2},
     "protocol plurality takes no parameter 'threshold'"),
    (PLURALITY, {"winner_only": True}, "protocol plurality needs the parameter 'options'"),
    (PLURALITY, {"options": 1}, "a plurality vote takes 2..256 options, got 1"),
    (CLEARING, {"prices": 3}, "protocol clearing-price: parameter 'prices' must be a list of integers"),
    (99, {}, "unknown protocol 99"),
])
def test_an_unknown_or_malformed_protocol_parameter_is_invalid_argument(
        env: Env, wire_id: int, params: dict[str, Any], words: str) -> None:
    session = secrets.token_hex(16)
    before = env.lc.recorder.counts()

    async def go() -> None:
        async with control(env.lc, "carlos") as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Prepare(mpc_pb2.PrepareRequest(
                    session_id=session, protocol=wire_id, input_name="bids_random", participants=list(TRIO),
                    timeout_ms=10_000, params={k: param(v) for k, v in params.items()}), timeout=CALL_TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert words in (err.value.details() or ""), err.value.details()
        assert set((await active_sessions(env.lc)).values()) == {0}
    env.run(go())
    [entry] = env.audit("carlos", session)
    assert entry.outcome == "refused" and words in entry.reason and entry.inputs == ("bids_random",), entry
    assert env.lc.recorder.counts() == before


# ---- audit entries and the release budget ---------------------------------------------------------


@pytest.mark.parametrize("protocol", ["auction", "clearing-price", "plurality"])
def test_each_session_is_audited_under_its_policy_name(env: Env, protocol: str) -> None:
    async def go() -> str:
        async with env.coordinator() as c:
            if protocol == "auction":
                return (await c.auction("bids_random")).session_id
            if protocol == "plurality":
                return (await c.plurality("poll_random", 3)).session_id
            return (await c.clearing_price("curve_random", CLEARINGS["curve_random"][1])).session_id
    session = env.run(go())
    for node in TRIO:
        [entry] = env.audit(node, session)
        assert entry.outcome == "done" and entry.participants == TRIO, entry
        assert entry.protocol == protocol, f"{node} audits a {protocol} session as {entry.protocol!r}"
        assert [t for t in entry.sent if t.kind == "output share"], entry.sent
        assert entry.release, entry


def test_release_budget_auction_first_then_second_price(env: Env) -> None:
    """max_releases = 1 on budget_bids: the first-price auction is its one release, a repeat is free,
    the second-price auction is a distinct query and is refused by every node before anything is shared."""
    bids = {"alice": [17, 4], "bob": [23], "carlos": [8, 23]}
    for node, values in bids.items():
        env.lc.put(node, "budget_bids", values, kind="bids")
    expected = plain_auction(bids, TRIO, False)

    async def go() -> tuple[list[str], str]:
        ids = []
        async with env.coordinator() as c:
            for _ in range(2):                                   # the release, then a repeat
                r = await c.auction("budget_bids")
                assert (r.winner_node, r.winner_index, r.price) == expected
                ids.append(r.session_id)
            with pytest.raises(SessionFailed) as err:
                await c.auction("budget_bids", second_price=True)
            refused = session_of(err.value)
            message = str(err.value)
            assert "nothing was revealed" in message
            for node in TRIO:
                assert f"node {node}: input 'budget_bids' version" in message, message
            assert "(max_releases)" in message and "auction-second" in message, message
            r = await c.auction("budget_bids")                  # still free after the refusal
            assert (r.winner_node, r.winner_index, r.price) == expected
            ids.append(r.session_id)
        return ids, refused
    ids, refused = env.run(go())
    assert refused not in env.views.chunks
    assert not any(env.received(node, refused) for node in TRIO)
    for node in TRIO:
        releases = env.releases(node, "budget_bids")
        assert [r.session_id for r in releases] == ids and [r.counted for r in releases] == [True, False, False]
        [entry] = env.audit(node, refused)
        assert entry.outcome == "refused" and "(max_releases)" in entry.reason and entry.inputs == ("budget_bids",)


def test_a_reordered_session_names_the_same_winner_and_is_a_free_repeat(env: Env) -> None:
    """Bids are laid out in the participants' name order, whatever order the session lists them in:
    with tied top bids at bob and carlos, bob's wins (first by name) in every order of the session,
    the coordinator learns the same output, and each node's release book counts every reordered
    session as a repeat of the first (reorder_bids has max_releases = 1: a new release would be
    refused). A session order that broke the tie the other way would name carlos, a tied losing
    bidder, and spend a second release."""
    bids = {"alice": [3, 8], "bob": [2, 11], "carlos": [11, 5]}
    for node, values in bids.items():
        env.lc.put(node, "reorder_bids", values, kind="bids")
    expected = plain_auction(bids, TRIO, False)
    assert expected == ("bob", 1, 11)
    orders = [TRIO, ("carlos", "bob", "alice"), ("carlos", "alice", "bob"), ("bob", "carlos", "alice")]

    async def go() -> list[Any]:
        results = []
        for nodes in orders:
            async with env.coordinator(nodes) as c:
                results.append(await c.auction("reorder_bids"))
        return results
    results = env.run(go())
    for nodes, r in zip(orders, results):
        assert (r.winner_node, r.winner_index, r.price, r.bids) == (*expected, 6), (nodes, r)
        assert r.nodes == nodes, (nodes, r.nodes)
        # every node's output share, as the coordinator received it, combines to the same key
        total = sum(int(words_of(env.views.share(r.session_id, n))[0]) for n in TRIO) % (1 << 64)
        assert total == key_of(11, 3, 6), nodes           # bob's 2nd bid is the 4th by name: position 3
    ids = [r.session_id for r in results]
    for node in TRIO:
        releases = env.releases(node, "reorder_bids")
        assert [r.session_id for r in releases] == ids, node
        assert [r.counted for r in releases] == [True] + [False] * (len(orders) - 1), (node, releases)
        for r in results:
            [entry] = env.audit(node, r.session_id)
            assert entry.outcome == "done" and entry.participants == r.nodes, entry


def test_a_sum_takes_a_curve_that_allow_sum_names(env: Env) -> None:
    """alice, bob and carlos name curve_summed_allowed in allow.sum: its sum runs (the aggregate
    curve opens) and is audited as a sum; a clearing price after it is implied, free. The same curve
    under a name not in allow.sum is refused by policy (REFUSALS[curve_summed])."""
    curves = {"alice": [7, 2, -1], "bob": [0, -3, -3], "carlos": [4, 4, -9]}
    for node, values in curves.items():
        env.lc.put(node, "curve_summed_allowed", values, bounds=CURVE_BOUNDS, kind="curve")
    total = [sum(col) for col in zip(*curves.values())]

    async def go() -> tuple[Any, Any]:
        async with env.coordinator() as c:
            return (await c.sum("curve_summed_allowed"),
                    await c.clearing_price("curve_summed_allowed", [10, 20, 30]))
    summed, clearing = env.run(go())
    assert total == [11, 3, -13] and summed.value == total and clearing.price == 30, (summed, clearing)
    for node in TRIO:
        [entry] = env.audit(node, summed.session_id)
        assert entry.outcome == "done" and entry.protocol == "sum" and entry.inputs == ("curve_summed_allowed",), entry
        assert [r.counted for r in env.releases(node, "curve_summed_allowed")] == [True, False], node


def test_release_budget_plurality_and_clearing(env: Env) -> None:
    """A winner after the counts is free, the counts after a winner are not; a clearing price after a
    sum of the same curves is free, and so is another grid; after one clearing price a sum is not."""
    ballots = {"alice": [0, 2], "bob": [2], "carlos": [1, 2]}
    curves = {"alice": [4, 1, -3], "bob": [2, 0, -1], "carlos": [0, -1, -1]}
    for node in TRIO:
        for name in ("budget_votes", "budget_votes2"):
            env.lc.put(node, name, ballots[node], kind="options", bounds=(0, 2))
        for name in ("budget_curve", "budget_curve2"):        # named in allow.sum (SUMMABLE_CURVES)
            env.lc.put(node, name, curves[node], bounds=CURVE_BOUNDS, kind="curve")
    counts, winner = plain_plurality(ballots, 3, TRIO)

    async def refused(job: Awaitable[Any], name: str) -> None:
        with pytest.raises(SessionFailed) as err:
            await job
        message = str(err.value)
        assert all(f"node {n}: input {name!r} version" in message for n in TRIO) and "(max_releases)" in message
        assert session_of(err.value) not in env.views.chunks

    async def go() -> None:
        async with env.coordinator() as c:
            assert (await c.plurality("budget_votes", 3)).counts == counts
            assert (await c.plurality("budget_votes", 3, winner_only=True)).winner == winner    # implied
            assert (await c.plurality("budget_votes", 3)).counts == counts                     # a repeat
            await refused(c.plurality("budget_votes", 4), "budget_votes")    # other options: distinct
            assert (await c.plurality("budget_votes2", 3, winner_only=True)).winner == winner
            await refused(c.plurality("budget_votes2", 3), "budget_votes2")  # counts say more than a winner

            total = [sum(col) for col in zip(*curves.values())]
            assert (await c.sum("budget_curve")).value == total
            assert (await c.clearing_price("budget_curve", [1, 2, 3])).price == 2      # implied by the sum
            assert (await c.clearing_price("budget_curve", [5, 6, 7])).price == 6      # so is another grid
            assert (await c.clearing_price("budget_curve2", [1, 2, 3])).price == 2
            await refused(c.clearing_price("budget_curve2", [5, 6, 7]), "budget_curve2")
            await refused(c.sum("budget_curve2"), "budget_curve2")
    env.run(go())
    for node in TRIO:
        assert [r.counted for r in env.releases(node, "budget_votes")] == [True, False, False]
        assert [r.counted for r in env.releases(node, "budget_curve")] == [True, False, False]


def test_a_prepare_from_an_older_mpc_is_refused_not_misread(env: Env) -> None:
    """An older coordinator sent average_mode (field 6) and a vote's threshold (field 7). A node that
    ignored them would run "at least half" where "at least K" was asked: it refuses the request,
    naming the fields, and prepares nothing."""
    session = secrets.token_hex(16)
    request = mpc_pb2.PrepareRequest(session_id=session, protocol=entry("vote").wire_id, input_name="poll_tie",
                                     participants=list(TRIO), timeout_ms=10_000)
    old = mpc_pb2.PrepareRequest.FromString(request.SerializeToString() + bytes([6 << 3, 1, 7 << 3, 5]))

    async def go() -> grpc.aio.AioRpcError:
        async with control(env.lc, "alice") as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Prepare(old, timeout=CALL_TIMEOUT)
        return err.value
    error = env.run(go())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "fields this node does not know [6, 7]" in (error.details() or ""), error.details()
    assert set(env.run(active_sessions(env.lc)).values()) == {0}
