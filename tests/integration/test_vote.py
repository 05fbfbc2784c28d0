"""Threshold votes and batched [sum >= k] over real node daemons (grpc.aio, mutual TLS, SQLite,
loopback only): results, refusals, concurrency, what every party sees, replays.

The first vote between in-process nodes runs Chou-Orlandi base OTs for every pair (seconds of
CPU); later votes reuse them. So the module starts ONE four-node cluster (alice, bob, carlos,
david; default policy, min_participants = 3) and keeps it, on one event loop, for every test
(`Env.run` drives a coroutine to completion on that loop, as asyncio.run would on a fresh
one); most tests use the alice-bob-carlos subset. A two-node cluster with min_participants = 2
is started for the tests that need it. Every server is stopped at module teardown.

Statistics (PROTOCOLS.md §6): the balanced-bit assertions use Hoeffding's bound,
P(|ones - N/2| >= t) <= 2 exp(-2 t^2 / N), with the file's false-failure probability 1e-6
split evenly over its BALANCE_TESTS assertions. The "no position is constant" checks add a
probability below 2^-180 and are not counted.
"""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mpc.coordinator.client import Coordinator
from mpc.errors import InputError, SessionFailed
from mpc.node.core import NodeCore
from mpc.protocols.catalogue import ThresholdParams, VoteParams, entry
from mpc.ot.triples import parse_session_hello
from mpc.protocols.compute import STEP_HELLO
from mpc.protocols.contribution import COMPARE_BITS, check_threshold, compare_contribution
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import ANY_QUERIES, LocalCluster, running_cluster

T = TypeVar("T")
ALL4 = ("alice", "bob", "carlos", "david")
TRIO = ("alice", "bob", "carlos")
CALL_TIMEOUT = 10.0
FAMILY_ALPHA = 1e-6
# Balanced-bit assertions: 3 nodes' output bits + 3 nodes' received cmp openings.
BALANCE_TESTS = 6
# triples/r: a pooled direction's derandomisation (mpc/ot/pool.py); pool/fill: a pool fill between sessions
ALLOWED_STEPS = {"agree/digest", STEP_HELLO, "sum/seed", "ot/base/a", "ot/base/b", "triples/u", "triples/t",
                 "triples/r", "pool/fill"}

# The referendum: T = 6 yes out of N = 9 ballots.
REFERENDUM = {"alice": [1, 0, 1], "bob": [1, 1], "carlos": [0, 0, 1], "david": [1]}
BALLOTS: dict[str, dict[str, list[int]]] = {
    "ballot": REFERENDUM,
    "unanimous": {"alice": [1, 1, 1], "bob": [1, 1], "carlos": [1], "david": [1, 1, 1, 1]},
    "none": {"alice": [0, 0, 0], "bob": [0, 0], "carlos": [0], "david": [0, 0, 0, 0]},
    "half": {"alice": [1, 0], "bob": [1, 0, 0, 1], "carlos": [0], "david": [1]},       # T = 4 = N/2
    "below": {"alice": [1, 0], "bob": [1, 0, 0, 1], "carlos": [0], "david": [0]},      # T = 3, N = 8
    "odd_below": {"alice": [1, 0, 0], "bob": [1, 0, 0, 1], "carlos": [1], "david": [0]},  # T = 4, N = 9
    # for the trio (privacy): T = 6, N = 9, 2T - N = 3: none of them is 0 or 1
    "poll": {"alice": [1, 0, 0, 1], "bob": [1, 1, 1], "carlos": [0, 1]},
}
GOOD = {"alice": [1, 0], "bob": [1], "carlos": [0, 1], "david": [1]}
# A ballot other than 0/1 cannot be stored as ballots (tests/unit/test_store.py); these are stored at
# the bad node as plain numbers, which a vote refuses at prepare, naming the node, on the declaration.
BAD_BALLOTS = {  # input name -> (bad node, stored values, frac_bits, words the error must name)
    "bad_two": ("bob", [1, 2, 0], 0, ["not declared as ballots", "--ballots"]),
    "bad_minus": ("carlos", [-1, 1], 0, ["not declared as ballots"]),
    "bad_fixed": ("david", [256], 8, ["not declared as ballots"]),          # 1.0 with 8 fractional bits
    "bad_big": ("alice", [987654321, 1], 0, ["not declared as ballots"]),
    # ... or as another kind: a yes/no vote takes 0/1 ballots alone, not a plurality's options (it
    # would count every option but 0 as yes), nor bids or a curve that happen to be 0 and 1.
    "bad_options": ("bob", [1, 2, 0], 0, ["not declared as ballots (it holds options)", "--ballots"]),
    "bad_bids": ("carlos", [1, 0], 0, ["not declared as ballots (it holds bids)"]),
    "bad_curve": ("david", [1, 0], 0, ["not declared as ballots (it holds curve)"]),
}
BAD_KINDS = {"bad_options": {"kind": "options", "bounds": (0, 2)}, "bad_bids": {"kind": "bids"},
             "bad_curve": {"kind": "curve"}}   # how the bad node stores them (default: a number)


def tally(name: str, nodes: Sequence[str]) -> tuple[int, int]:
    ballots = [b for n in nodes for b in BALLOTS[name][n]]
    return sum(ballots), len(ballots)


def hoeffding_band(trials: int, alpha: float) -> float:
    """t with P(|Binomial(trials, 1/2) - trials/2| >= t) <= alpha."""
    return math.sqrt(trials * math.log(2 / alpha) / 2)


def assert_balanced(ones: int, trials: int, what: str) -> None:
    band = hoeffding_band(trials, FAMILY_ALPHA / BALANCE_TESTS)
    assert abs(ones - trials / 2) < band, f"{what}: {ones} ones in {trials} bits, allowed ±{band:.0f}"


def word(value: int) -> bytes:
    return value.to_bytes(8, "little", signed=True)


def vector(values: Sequence[int]) -> bytes:
    return b"".join(word(v) for v in values)


def _accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except InputError:
        return False
    return True


def _largest(accepts: Callable[[int], bool]) -> int:
    """The largest x >= 0 with accepts(x) (bisection; accepts is true up to it, false after)."""
    lo, hi = 0, 1 << 62
    assert accepts(lo) and not accepts(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepts(mid) else (lo, mid)
    return lo


@functools.cache
def limit(n: int) -> int:
    """The largest |value| a node accepts for an n-party threshold (the node's own check)."""
    return _largest(lambda v: _accepts(lambda: compare_contribution(
        np.array([v, -v], dtype=np.int64), 0, n, "x")))


# The thresholds a node accepts (check_threshold): K_LO..K_HI; totals must stay decidable.
K_HI = _largest(lambda k: _accepts(lambda: check_threshold(k)))
K_LO = -_largest(lambda k: _accepts(lambda: check_threshold(-k)))
HALF_RING = 1 << (COMPARE_BITS - 1)


def split(total: int, n: int) -> list[int]:
    """A CSPRNG split of `total` into n values, each within the node's +-limit(n)."""
    lim = limit(n)
    parts, rest = [], total
    for i in range(n - 1):
        slack = (n - 1 - i) * lim
        lo, hi = max(-lim, rest - slack), min(lim, rest + slack)
        parts.append(lo + secrets.randbelow(hi - lo + 1))
        rest -= parts[-1]
    parts.append(rest)
    assert sum(parts) == total and all(abs(p) <= lim for p in parts)
    return parts


# ---- the module's cluster ----------------------------------------------------------------------


class Views:
    """What coordinators received: (session, node) -> chunks, in arrival order."""

    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))

    def observe(self, session: str, node: str, words: bytes) -> None:
        self.chunks[session][node].append(bytes(words))


@dataclass
class Env:
    """The running cluster and the event loop it lives on."""

    loop: asyncio.AbstractEventLoop
    lc: LocalCluster
    views: Views
    warmup: str = ""
    privacy: list[str] = field(default_factory=list)

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        """Run one scenario on the cluster's loop (bounded)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def coordinator(self, nodes: Sequence[str] | None = TRIO, *, keyed: bool = True) -> Coordinator:
        return Coordinator(self.lc.cluster, observer=self.views.observe, nodes=nodes, keyed=keyed)

    def received(self, node: str, session: str) -> list[tuple[str, str, bytes]]:
        return [(s, st, p) for sid, s, st, p in self.lc.recorder.received.get(node, []) if sid == session]

    def core(self, node: str) -> NodeCore:
        return self.lc.servers[node].core


def start_cluster(loop: asyncio.AbstractEventLoop, path: Path, n: int,
                  **kw: Any) -> tuple[LocalCluster, AsyncExitStack]:
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(running_cluster(path, n, **kw)))
    return lc, stack


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    lc, stack = start_cluster(loop, tmp_path_factory.mktemp("vote4"), 4, every_policy=ANY_QUERIES)
    try:
        for name, ballots in BALLOTS.items():
            for node, values in ballots.items():
                lc.put(node, name, values, ballots=True)
        for name, (bad_node, values, frac_bits, _) in BAD_BALLOTS.items():
            for node in ALL4:
                if node == bad_node:
                    lc.put(node, name, values, frac_bits=frac_bits, **BAD_KINDS.get(name, {}))  # type: ignore[arg-type]
                else:
                    lc.put(node, name, GOOD[node], ballots=True)
        e = Env(loop, lc, Views())

        async def warm() -> str:
            async with e.coordinator(ALL4) as c:   # base OTs for all six pairs, once
                result = await c.vote("ballot")
            assert result.passed
            return result.session_id
        e.warmup = e.run(warm())
        yield e
    finally:
        loop.run_until_complete(stack.aclose())


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two nodes, alice and bob, whose policy allows two-party sessions."""
    lc, stack = start_cluster(loop, tmp_path_factory.mktemp("vote2"), 2, min_participants=2, every_policy=ANY_QUERIES)
    try:
        yield lc
    finally:
        loop.run_until_complete(stack.aclose())


# ---- raw peer calls (as tests/integration/test_mtls.py does) ------------------------------------


def node_creds(lc: LocalCluster, name: str) -> grpc.ChannelCredentials:
    node = lc.cluster.node(name)
    return TlsMaterial.load(lc.cluster.ca, node.cert, node.key).channel_credentials()


def coordinator_creds(lc: LocalCluster) -> grpc.ChannelCredentials:
    me = lc.cluster.require_coordinator()
    return TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()


@asynccontextmanager
async def dial(lc: LocalCluster, node: str, creds: grpc.ChannelCredentials) -> AsyncIterator[grpc.aio.Channel]:
    target = lc.cluster.node(node)
    channel = grpc.aio.secure_channel(target.address, creds, options=channel_options(target.name))
    try:
        yield channel
    finally:
        await channel.close()


async def replay(lc: LocalCluster, to: str, sender: str, session: str, step: str,
                 payload: bytes) -> grpc.aio.AioRpcError | None:
    """Send one peer message to `to` with `sender`'s own certificate; the error, if refused."""
    header = mpc_pb2.PeerHeader(session_id=session, step=step, sender=sender, payload_bytes=len(payload))
    async with dial(lc, to, node_creds(lc, sender)) as ch:
        try:
            await mpc_pb2_grpc.PeerStub(ch).Send(iter([mpc_pb2.PeerFrame(header=header, chunk=payload)]),
                                                 timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def abort(lc: LocalCluster, session: str, nodes: Sequence[str]) -> None:
    for name in nodes:
        async with dial(lc, name, coordinator_creds(lc)) as ch:
            await mpc_pb2_grpc.ControlStub(ch).Abort(mpc_pb2.AbortRequest(session_id=session, reason="test"),
                                                     timeout=CALL_TIMEOUT)


async def active_sessions(lc: LocalCluster, nodes: Sequence[str]) -> dict[str, int]:
    async with Coordinator(lc.cluster, nodes=nodes) as c:
        return {s.name: s.active_sessions for s in await c.status()}


# ---- the referendum ------------------------------------------------------------------------------


def test_warmup_ran_the_base_ots_once(env: Env) -> None:
    """The first vote set up every pair; every later session reuses those setups."""
    steps = {st for node in ALL4 for _, st, _ in env.received(node, env.warmup)}
    assert {"ot/base/a", "ot/base/b"} <= steps
    for node in ALL4:
        setups = env.core(node).ot_setups
        assert {p for p in ALL4 if setups.known(p)} == set(ALL4) - {node}
        assert all(len(setups.known(p)) == 1 for p in set(ALL4) - {node})


@pytest.mark.parametrize("name,threshold,passed", [
    ("ballot", None, True),        # 2T = 12 >= N = 9
    ("ballot", 6, True),
    ("ballot", 7, False),
    ("ballot", 0, True),
    ("unanimous", None, True),
    ("none", None, False),
    ("half", None, True),          # T = N/2 exactly
    ("below", None, False),        # one below half
    ("odd_below", None, False),    # T = (N - 1)/2
])
def test_referendum(env: Env, name: str, threshold: int | None, passed: bool) -> None:
    big_t, big_n = tally(name, ALL4)
    assert (big_t >= threshold if threshold is not None else 2 * big_t >= big_n) == passed

    async def go() -> None:
        async with env.coordinator(ALL4) as c:
            result = await c.vote(name, threshold=threshold)
        assert result.passed is passed
        assert result.as_dict()["result"] == ("YES" if passed else "NO")
        assert result.nodes == ALL4
        rule = "at least half of the ballots cast" if threshold is None else f"at least {threshold} yes ballots"
        assert result.rule == rule
        # no new setup: every pair reused the warm-up's
        for node in ALL4:
            assert not any(st.startswith("ot/") for _, st, _ in env.received(node, result.session_id))
        # exactly one 8-byte 0/1 word from each node, XOR = the result
        chunks = env.views.chunks[result.session_id]
        assert sorted(chunks) == sorted(ALL4)
        bits = [int.from_bytes(b"".join(chunks[n]), "little") for n in ALL4]
        assert all(len(b"".join(chunks[n])) == 8 for n in ALL4) and set(bits) <= {0, 1}
        assert bits[0] ^ bits[1] ^ bits[2] ^ bits[3] == int(passed)
    env.run(go())


# ---- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_BALLOTS))
def test_a_ballot_that_is_not_0_or_1_is_refused_before_anything_is_sent(env: Env, name: str) -> None:
    bad_node, values, _, needles = BAD_BALLOTS[name]
    before_peer = env.lc.recorder.counts()
    before_sessions = set(env.views.chunks)

    async def go() -> None:
        async with env.coordinator(ALL4) as c:
            with pytest.raises(SessionFailed) as err:
                await c.vote(name)
        message = str(err.value)
        assert f"node {bad_node}" in message and repr(name) in message, message
        assert "nothing was revealed" in message
        for needle in needles:
            assert needle in message, message
        assert "987654321" not in message                 # never an input value
        # the other nodes' sessions were aborted: nothing is left running
        assert set((await active_sessions(env.lc, ALL4)).values()) == {0}
    env.run(go())
    assert set(env.views.chunks) == before_sessions       # the coordinator received nothing
    assert env.lc.recorder.counts() == before_peer   # nor did any peer


def test_out_of_range_threshold_and_too_few_parties_are_refused(env: Env) -> None:
    before = env.lc.recorder.counts()

    async def go() -> None:
        async with env.coordinator(ALL4) as c:
            # The coordinator refuses them itself, before it asks any node ...
            with pytest.raises(InputError, match="out of range"):
                await c.vote("ballot", threshold=K_HI + 1)
            with pytest.raises(InputError, match="out of range"):
                await c.at_least("ballot", K_LO - 1)
            # ... and so does every node, to a coordinator that sends them anyway.
            for protocol, params in (("vote", VoteParams(K_HI + 1)), ("threshold", ThresholdParams(K_LO - 1))):
                with pytest.raises(SessionFailed, match=rf"protocol {protocol}: threshold .* is out of range") as err:
                    await c.open(entry(protocol), params, "ballot")
                assert "[INVALID_ARGUMENT]" in str(err.value) and "nothing was revealed" in str(err.value)
        async with env.coordinator(("alice", "bob")) as c:     # the cluster's policy wants 3 parties
            with pytest.raises(SessionFailed, match="at least 3 participants"):
                await c.vote("ballot")
    env.run(go())
    assert env.lc.recorder.counts() == before


# ---- at_least: batched [sum >= k] ------------------------------------------------------------------


def test_at_least_on_random_vectors(env: Env) -> None:
    length = 1000
    vectors: dict[int, dict[str, list[int]]] = {}
    for n in (3, 4):
        lim = limit(n)
        vectors[n] = {node: [secrets.randbelow(2 * lim + 1) - lim for _ in range(length)] for node in ALL4[:n]}
        for node, values in vectors[n].items():
            env.lc.put(node, f"rand{n}", values, bounds=(-lim, lim))

    async def go() -> None:
        for n, nodes in ((3, TRIO), (4, ALL4)):
            totals = [sum(col) for col in zip(*vectors[n].values())]
            async with env.coordinator(nodes) as c:
                for k in (0, K_LO + 1 + secrets.randbelow(K_HI - K_LO), totals[17]):
                    result = await c.at_least(f"rand{n}", k)
                    assert result.bits == [t >= k for t in totals], (n, k)
                    assert len(env.views.chunks[result.session_id]["alice"][0]) == 8 * length
    env.run(go())


def test_at_least_at_the_edges(env: Env) -> None:
    top = 3 * limit(3)                     # the largest total three nodes can contribute (2^30 - 1)
    k_random = secrets.randbelow(2 * top + 1) - top
    totals = [-top, -top + 1, -2, -1, 0, 1, 2, top - 1, top, k_random - 1, k_random, k_random + 1]
    columns = [split(t, 3) for t in totals]
    for i, node in enumerate(TRIO):
        env.lc.put(node, "edges", [col[i] for col in columns], bounds=(-limit(3), limit(3)))
    ks = [0, 1, -1, 2, -2, top, top + 1, -top, -top + 1, K_HI, K_LO, k_random]
    assert all(-HALF_RING <= t - k < HALF_RING for t in totals for k in ks)   # decidable at ell = 32

    async def go() -> None:
        async with env.coordinator(TRIO) as c:
            results = await asyncio.gather(*(c.at_least("edges", k) for k in ks), return_exceptions=True)
        for k, result in zip(ks, results):
            assert not isinstance(result, BaseException), (k, result)
            assert result.bits == [t >= k for t in totals], k
            assert result.threshold == k
    env.run(go())


# ---- concurrency ------------------------------------------------------------------------------------


def test_concurrent_votes_and_thresholds_from_two_coordinators(env: Env) -> None:
    """10 sessions at once over the same per-pair OT state (concurrent IKNP extensions)."""
    values = {node: [secrets.randbelow(2001) - 1000 for _ in range(50)] for node in TRIO}
    for node, v in values.items():
        env.lc.put(node, "conc", v, bounds=(-1000, 1000))
    totals = [sum(col) for col in zip(*values.values())]
    big_t, big_n = tally("poll", TRIO)
    before = {node: {p: env.core(node).ot_setups.known(p) for p in ALL4} for node in TRIO}

    async def go() -> None:
        async with env.coordinator(TRIO) as c1, env.coordinator(TRIO) as c2:
            calls: list[Awaitable[Any]] = []
            for i in range(5):
                c = (c1, c2)[i % 2]
                calls.append(c.vote("poll", threshold=None if i % 2 else big_t + i - 2))
                calls.append((c2, c1)[i % 2].at_least("conc", (i - 2) * 300))
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)], results
        for i in range(5):
            vote, at = results[2 * i], results[2 * i + 1]
            assert vote.passed is (2 * big_t >= big_n if i % 2 else big_t >= big_t + i - 2), i
            assert at.bits == [t >= (i - 2) * 300 for t in totals], i
        assert len({r.session_id for r in results}) == 10
    env.run(go())
    after = {node: {p: env.core(node).ot_setups.known(p) for p in ALL4} for node in TRIO}
    assert after == before      # no fresh setup was needed


# ---- what everyone sees -----------------------------------------------------------------------------


def test_privacy_of_200_votes(env: Env) -> None:
    sessions = 200
    big_t, big_n = tally("poll", TRIO)
    assert (big_t, big_n) == (6, 9)

    async def go() -> tuple[list[str], set[str]]:
        # Every other session keyed (mpc/protocols/pairing.py: no digest, no seed between the nodes).
        ids, keyed = [], set()
        async with env.coordinator(TRIO) as c, env.coordinator(TRIO, keyed=False) as unkeyed:
            for i in range(sessions):
                result = await (c if i % 2 else unkeyed).vote("poll")
                assert result.passed
                ids.append(result.session_id)
                if i % 2:
                    keyed.add(result.session_id)
        return ids, keyed
    env.privacy, keyed = env.run(go(), timeout=300)
    assert len(set(env.privacy)) == sessions

    raw = {node: vector(BALLOTS["poll"][node]) for node in TRIO}
    tallies = [word(v) for v in (big_t, big_n, 2 * big_t - big_n)]
    ones = dict.fromkeys(TRIO, 0)
    for session in env.privacy:
        chunks = env.views.chunks[session]
        assert sorted(chunks) == sorted(TRIO)
        bits = {}
        for node in TRIO:
            # the coordinator receives exactly one 8-byte word per node, 0 or 1
            assert len(chunks[node]) == 1 and len(chunks[node][0]) == 8
            payload = chunks[node][0]
            bits[node] = int.from_bytes(payload, "little")
            assert bits[node] in (0, 1)
            for secret in [*raw.values(), *tallies]:
                assert secret not in payload
            ones[node] += bits[node]
        assert bits["alice"] ^ bits["bob"] ^ bits["carlos"] == 1
    for node in TRIO:
        assert_balanced(ones[node], sessions, f"{node}'s output bit")

    # what the nodes received: only the vote's steps, and openings that are fair coins
    openings: dict[str, dict[tuple[str, str], list[bytes]]] = {n: defaultdict(list) for n in TRIO}
    derandomised: dict[str, list[bytes]] = {n: [] for n in TRIO}
    for session in env.privacy:
        for node in TRIO:
            got = env.received(node, session)
            steps = [st for _, st, _ in got]
            assert set(steps) <= ALLOWED_STEPS | {s for s in steps if s.startswith("cmp/")}, set(steps)
            assert not any(s.startswith("ot/") for s in steps)       # setups reused
            for peer in set(TRIO) - {node}:
                # one hello per peer; for each direction of the pair, IKNP (its message u where the peer
                # chooses, its correction t where we do) or the pool (one "triples/r" for both directions);
                # or, a repeated vote on the pool tickets of the one before, no hello and the pool both ways
                mine = [st for s, st, _ in got if s == peer]
                counts = {x: mine.count(x) for x in (STEP_HELLO, "triples/u", "triples/t", "triples/r")}
                assert counts[STEP_HELLO] <= 1 and max(counts.values()) == 1, mine
                assert counts[STEP_HELLO] or counts == {STEP_HELLO: 0, "triples/u": 0, "triples/t": 0,
                                                        "triples/r": 1}, mine
                assert counts["triples/u"] + counts["triples/r"] >= 1 <= counts["triples/t"] + counts["triples/r"]
                assert any(st.startswith("cmp/") for st in mine)
            # sum seeds come from the earlier parties only (PROTOCOLS.md §1), none in a keyed session; a
            # digest from every peer either way
            unkeyed = session not in keyed
            assert sorted(s for s, st, _ in got if st == "sum/seed") == sorted(TRIO[:TRIO.index(node)] if unkeyed
                                                                               else ())
            assert sorted(s for s, st, _ in got if st == "agree/digest") == sorted(set(TRIO) - {node})
            for sender, step, payload in got:
                for owner, encoding in raw.items():
                    if owner != node:
                        assert encoding not in payload, f"{owner}'s ballots appear in {step} to {node}"
                if step == STEP_HELLO:
                    assert parse_session_hello(payload, "hello").setups   # setups reused: some advertised
                elif step == "triples/r":
                    derandomised[node].append(payload)
                elif step == "sum/seed":
                    assert len(payload) == 24
                elif step.startswith("cmp/"):
                    openings[node][sender, step].append(payload)
    for node in TRIO:
        stacked = {key: np.unpackbits(np.frombuffer(b"".join(p), dtype=np.uint8)).reshape(len(p), -1)
                   for key, p in openings[node].items()}
        assert all(a.shape[0] == sessions for a in stacked.values())
        every = np.concatenate([a.reshape(-1) for a in stacked.values()])
        assert_balanced(int(every.sum()), every.size, f"cmp openings {node} received")
        for key, a in stacked.items():      # no bit position of an opening is fixed across sessions
            column_ones = a.sum(axis=0)
            assert np.all((column_ones > 0) & (column_ones < sessions)), (node, key)
        pooled = np.unpackbits(np.frombuffer(b"".join(derandomised[node]), dtype=np.uint8))
        if pooled.size:                     # d = a ⊕ c and t = b ⊕ m0 ⊕ m1: fair coins too
            assert_balanced(int(pooled.sum()), pooled.size, f"triples/r {node} received")
    # the fills between sessions made the later votes pooled
    assert any(derandomised.values())
    # and every message any node received in this module so far had an allowed step
    every_step = {st for msgs in env.lc.recorder.received.values() for _, _, st, _ in msgs}
    assert every_step <= ALLOWED_STEPS | {s for s in every_step if s.startswith("cmp/")}, every_step


# ---- replays and duplicates ------------------------------------------------------------------------


def test_replays_after_the_session_are_failed_precondition(env: Env) -> None:
    async def go() -> None:
        async with env.coordinator(TRIO) as c:
            session = (await c.vote("poll")).session_id
        got = env.received("alice", session)
        # bob's triple message: IKNP's u, or the derandomisation of pooled OTs
        triple = next((st, p) for s, st, p in got if s == "bob" and st in ("triples/u", "triples/r"))
        cmp_msgs = [(st, p) for s, st, p in got if s == "bob" and st.startswith("cmp/")]
        before = env.lc.recorder.counts()
        for step, payload in [triple, cmp_msgs[0], cmp_msgs[-1]]:
            err = await replay(env.lc, "alice", "bob", session, step, payload)
            assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION, (step, err)
            assert session in (err.details() or "") and "is done" in (err.details() or ""), err.details()
        assert env.lc.recorder.counts() == before
        async with env.coordinator(TRIO) as c:
            assert (await c.vote("poll")).passed
    env.run(go())


class HoldingSender:
    """Wraps a node's PeerSender: holds its comparison messages to `to` in the first vote session
    that reaches the comparison, until released (bounded)."""

    def __init__(self, inner: Any, core: NodeCore, to: str) -> None:
        self.inner = inner
        self.core = core
        self.to = to
        self.session = ""
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.tasks: set[asyncio.Future[None]] = set()   # the held messages' (kept from the collector)

    def post(self, to: str, session_id: str, step: str, payload: bytes, deadline: float, done: Any,
             adopt: Any = None) -> None:
        session = self.core.sessions.get(session_id)
        if not (to == self.to and step.startswith("cmp/") and self.session in ("", session_id)
                and session is not None and session.protocol.name == "vote"):
            self.inner.post(to, session_id, step, payload, deadline, done, adopt)
            return
        self.session = session_id
        self.holding.set()

        async def held() -> None:
            try:
                await asyncio.wait_for(self.release.wait(), 20)
            except TimeoutError:
                pass
            self.inner.post(to, session_id, step, payload, deadline, done, adopt)
        self.tasks.add(asyncio.ensure_future(held()))

    async def send(self, to: str, session_id: str, step: str, payload: bytes, timeout: float) -> None:
        await self.inner.send(to, session_id, step, payload, timeout)


async def wait_until(predicate: Any, what: str, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_duplicate_cmp_step_during_a_live_session_fails_it_and_nothing_opens(env: Env) -> None:
    """carlos's openings to alice are held, so alice's session is live at its first comparison
    round when bob's opening for that round comes again (bob's certificate, bob's bytes)."""
    carlos = env.core("carlos")
    held = HoldingSender(carlos.peers, carlos, "alice")

    async def go() -> None:
        carlos.peers = held
        task: asyncio.Future[Any] | None = None
        try:
            async with env.coordinator(TRIO) as c:
                task = asyncio.ensure_future(c.vote("poll"))
                await asyncio.wait_for(held.holding.wait(), 20)
                session = held.session
                # alice waits for carlos's first opening; bob's has arrived
                await wait_until(lambda: any(s == "bob" and st.startswith("cmp/")
                                             for s, st, _ in env.received("alice", session)), "bob's opening")
                step, payload = next((st, p) for s, st, p in env.received("alice", session)
                                     if s == "bob" and st.startswith("cmp/"))
                err = await replay(env.lc, "alice", "bob", session, step, payload)
                assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                assert "already received" in (err.details() or ""), err.details()
                # the session failed at alice: any later message is refused
                err = await replay(env.lc, "alice", "bob", session, step, payload)
                assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION
                details = err.details() or ""
                assert "is failed" in details and "bad message from bob" in details, details
                held.release.set()
                await abort(env.lc, session, ("bob",))    # bob would otherwise wait for its deadline
                with pytest.raises(SessionFailed) as failed:
                    await task
                assert "node alice" in str(failed.value) and "nothing was revealed" in str(failed.value)
        finally:
            carlos.peers = held.inner
            held.release.set()
            if task is not None and not task.done():     # a failed assertion above: end the session
                await abort(env.lc, held.session, TRIO)
                await asyncio.wait([task], timeout=20)
        assert session not in env.views.chunks       # nothing was opened, not even one share
        assert set((await active_sessions(env.lc, TRIO)).values()) == {0}
        # the OT state survived the failed session: the next votes reuse it and are right
        async with env.coordinator(TRIO) as c:
            for _ in range(2):
                result = await c.vote("poll")
                assert result.passed
                assert not any(st.startswith("ot/") for _, st, _ in env.received("alice", result.session_id))
    env.run(go())


# ---- two nodes ----------------------------------------------------------------------------------------


def test_two_node_vote(loop: asyncio.AbstractEventLoop, pair: LocalCluster) -> None:
    lim = limit(2)
    pair.put("alice", "b2", [1, 0, 0], ballots=True)
    pair.put("bob", "b2", [1, 1], ballots=True)        # T = 3, N = 5
    pair.put("alice", "v2", [5, -lim, lim, 7], bounds=(-lim, lim))
    pair.put("bob", "v2", [-5, -lim, lim, -8], bounds=(-lim, lim))
    totals = [0, -2 * lim, 2 * lim, -1]

    async def go() -> None:
        async with Coordinator(pair.cluster) as c:
            assert (await c.vote("b2")).passed                      # fresh setup for the pair
            assert (await c.vote("b2", threshold=3)).passed         # reused
            assert not (await c.vote("b2", threshold=4)).passed
            assert not (await c.vote("b2", threshold=K_HI)).passed
            for k in [k for k in (0, -1, 1, 2 * lim, -2 * lim, K_HI, K_LO + 1, K_LO) if K_LO <= k <= K_HI]:
                r = await c.at_least("v2", k)
                expected = [t >= k for t in totals]
                decidable = [-HALF_RING <= t - k < HALF_RING for t in totals]
                # (2 lim, K_LO) may be undecidable: test_two_node_lowest_threshold_with_highest_total
                assert [b for b, d in zip(r.bits, decidable) if d] == [e for e, d in zip(expected, decidable) if d], k
    loop.run_until_complete(asyncio.wait_for(go(), 120))


def test_two_node_lowest_threshold_with_highest_total(loop: asyncio.AbstractEventLoop, pair: LocalCluster) -> None:
    """Both nodes store the largest value they accept; k is the lowest threshold they accept."""
    pair.put("alice", "top2", [limit(2)], overwrite=True, bounds=(-limit(2), limit(2)))
    pair.put("bob", "top2", [limit(2)], overwrite=True, bounds=(-limit(2), limit(2)))

    async def go() -> list[bool]:
        async with Coordinator(pair.cluster) as c:
            return (await c.at_least("top2", K_LO)).bits
    assert loop.run_until_complete(asyncio.wait_for(go(), 120)) == [True]
