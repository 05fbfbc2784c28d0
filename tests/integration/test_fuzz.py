"""Hypothesis fuzzing of every Control and Peer handler on real in-process node servers.

One 3-node cluster (grpc.aio, mutual TLS, SQLite; tests/integration/harness.py) runs on an
event loop in a background thread for the whole module; every hypothesis example drives it
from the test thread with `LoopThread.run`, which has a deadline of its own on top of each
call's gRPC deadline. Each example sends typed messages with mutated fields (random session
ids, steps, senders, payloads and declared sizes, participants lists, protocol wire ids
including unknown ones, protocol parameters of unknown names, of the wrong type or with no
value, thresholds at the int64 extremes, timeouts, lengths and length maps at their type's
extremes), or raw bytes (identity serializers) for malformed protobuf.

What every call must show (issue 5, "Fuzzing"; DESIGN.md §5):
- it ends within its deadline (DEADLINE_EXCEEDED is never allowed: the node would have hung);
- with a status code from the handler's allowed set, never UNKNOWN (an unhandled exception
  in a handler), and a failure carries a non-empty message;
- a Prepare with an unknown protocol id, or with parameters its protocol does not take (an
  unknown name, the wrong type, no value, a required one missing), is INVALID_ARGUMENT naming
  the protocol (or saying the id is unknown) and the parameter;
- afterwards the node still serves: every node answers Status, a real secure sum among the
  three nodes gives the right total, and no fuzz session is left live at any node.

Every session an example creates is aborted by the example itself, so examples do not pile
up state; the examples are bounded (max_examples) and the whole file runs in well under a
minute.

Bytes that do not parse as the method's request message are answered INVALID_ARGUMENT by
mpc.node.servicer.MalformedRequestInterceptor (without it, grpc.aio's own deserializer
raised before any mpc code ran and the caller saw UNKNOWN).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mpc.aio import settle_grpc
from mpc.coordinator.client import Coordinator
from mpc.ot.extension import KAPPA
from mpc.ot.triples import STEP_BASE_A, STEP_BASE_B, STEP_R, STEP_T, STEP_U
from mpc.pki import Identity
from mpc.protocols.agreement import DIGEST_BYTES, STEP_DIGEST, session_digest
from mpc.protocols.catalogue import NAMES as PROTOCOLS
from mpc.protocols.catalogue import entry
from mpc.protocols.circuit import at_least, plan
from mpc.protocols.clearing import MAX_PRICES
from mpc.protocols.contribution import COMPARE_BITS, COMPARE_BOUND, vote_bits
from mpc.protocols.sum import STEP_SEED
from mpc.protocols.threshold import STEP_HELLO
from mpc.transport.tls import MAX_MESSAGE_BYTES, TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import ANY_QUERIES, LocalCluster, WireParam, prepare_request, running_cluster

T = TypeVar("T")
OK = grpc.StatusCode.OK
CALL_DEADLINE = 5.0              # gRPC deadline of every fuzz call
RUN_SLACK = 5.0                  # the test thread waits this much longer before calling it a hang
NAMES = ("alice", "bob", "carlos")
TARGET = "alice"                 # the node every fuzz call goes to
INPUTS = {"x": [1, 2, 3], "ballot": [1, 0, 1]}   # per node, alice first; "x" is a scalar
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1

# What each handler may answer (mpc/node/servicer.py `_STATUS`). UNKNOWN, INTERNAL and
# DEADLINE_EXCEEDED are never allowed.
CONTROL_ALLOWED = frozenset({OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
                             grpc.StatusCode.ABORTED})
PEER_ALLOWED = frozenset({OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED})
# What gRPC's asyncio client reports when a write of its own fails after the node ended the call
# (grpc/grpc#36066): never a node's message (a node's internal error names the node).
GRPC_CLIENT_LOST_STATUS = "Internal error from Core"

# The rounds of a vote's comparison among the three nodes: the program mpc/protocols/threshold.py
# runs, under the step prefix "cmp/".
CMP_STEPS = tuple(f"cmp/{label}" for label, _ in
                  plan(lambda ctx, x: at_least(ctx, "", x, 0, vote_bits(len(NAMES))), len(NAMES), 1).rounds)
KNOWN_STEPS = (STEP_DIGEST, STEP_SEED, STEP_HELLO, STEP_BASE_A, STEP_BASE_B, STEP_U, STEP_T, STEP_R, *CMP_STEPS,
               "sum/", "ot/base/", "ot/base/c", "triples/", "cmp/", "cmp/ks/99", "vote/open", "agree/", "")

METHODS = {  # full method path -> (kind, request type)
    "/mpc.v1.Control/Prepare": ("unary_unary", mpc_pb2.PrepareRequest),
    "/mpc.v1.Control/Compute": ("unary_stream", mpc_pb2.ComputeRequest),
    "/mpc.v1.Control/Abort": ("unary_unary", mpc_pb2.AbortRequest),
    "/mpc.v1.Control/Status": ("unary_unary", mpc_pb2.StatusRequest),
    "/mpc.v1.Peer/Send": ("stream_unary", mpc_pb2.PeerFrame),
    "/mpc.v1.Peer/Deliver": ("unary_unary", mpc_pb2.PeerMessage),
}


def fuzz_settings(max_examples: int) -> settings:
    """Bounded fuzzing: no per-example deadline (the calls have their own), few examples."""
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# ---- the cluster on a background event loop ------------------------------------------------------


class LoopThread:
    """An asyncio loop running in a daemon thread; `run` submits a coroutine with a deadline."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for it at most `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise AssertionError(f"no answer within {timeout} s: the node or the client hangs") from None

    def close(self) -> None:
        """Let gRPC's core answer the calls that ended (mpc/aio.py), cancel what is left on the loop, stop
        it and join the thread (all bounded)."""
        async def cancel_rest() -> None:
            await settle_grpc()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.run(cancel_rest(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


@dataclass(frozen=True)
class Outcome:
    """How one call ended: its status code, details and (when OK) its value."""

    code: grpc.StatusCode
    details: str
    value: Any = None


async def _unary(call: Awaitable[Any]) -> Outcome:
    try:
        value = await call
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(OK, "", value)


async def _streamed(call: Any) -> Outcome:
    chunks = []
    try:
        async for chunk in call:
            chunks.append(chunk)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(OK, "", chunks)


STATS_WIDTH = int(os.environ.get("MPC_FUZZ_STATS_WIDTH", "70"))


def _label(outcome: Outcome) -> str:
    """The outcome's code and the gist of its message (ids, quoted text and numbers elided)."""
    gist = re.sub(r"[0-9a-f]{32}", "<id>", outcome.details)
    gist = gist if os.environ.get("MPC_FUZZ_STATS_RAW") else re.sub(r"'[^']*'|\"[^\"]*\"", "<q>", gist)
    gist = re.sub(r"\d+", "N", gist)
    return f"{outcome.code.name}: {gist[:STATS_WIDTH]}"


def assert_status(outcome: Outcome, allowed: frozenset[grpc.StatusCode], what: object) -> None:
    """The call ended with an allowed code (never UNKNOWN) and, if it failed, a message."""
    assert outcome.code != grpc.StatusCode.UNKNOWN, f"UNKNOWN (an unhandled exception in a handler): {what}: " \
                                                    f"{outcome.details}"
    assert outcome.code in allowed, (what, outcome)
    if outcome.code != OK:
        assert outcome.details.strip(), f"{outcome.code.name} without a message: {what}"


# How often each outcome was seen, for a look at what the fuzzing reaches:
# MPC_FUZZ_STATS=1 pytest -s tests/integration/test_fuzz.py prints it after each test
# (MPC_FUZZ_STATS_WIDTH=N shows more of each message, MPC_FUZZ_STATS_RAW=1 keeps quoted text).
SEEN: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _show_outcomes() -> Iterator[None]:
    SEEN.clear()
    yield
    if os.environ.get("MPC_FUZZ_STATS"):
        print("\n" + "\n".join(f"{n:6d}  {label}" for label, n in SEEN.most_common()))


def check(outcome: Outcome, allowed: frozenset[grpc.StatusCode], what: object) -> None:
    """assert_status, and record the outcome for --hypothesis-show-statistics (test thread only)."""
    label = _label(outcome)
    event(label)
    SEEN[label] += 1
    assert_status(outcome, allowed, what)


class Env:
    """The running cluster, the channels every fuzz call uses, and helpers around them."""

    def __init__(self, lt: LoopThread, lc: LocalCluster, finished_session: str, shapes: VoteShapes,
                 versions: dict[tuple[str, str], int]) -> None:
        self.lt = lt
        self.lc = lc
        self.finished_session = finished_session
        self.vote_shapes = shapes
        self.versions = versions          # (node, input name) -> the version stored there
        self.channels: dict[tuple[str, str, bool], grpc.aio.Channel] = {}

    # Channels are created on the loop thread (grpc.aio objects belong to their loop).
    async def channel(self, caller: str, node: str = TARGET, *, big: bool = False) -> grpc.aio.Channel:
        """A channel to `node` with `caller`'s certificate ("coordinator" or a node name).

        `big` lifts the client's own 4 MiB send limit, so that only the server can refuse.
        """
        key = (caller, node, big)
        channel = self.channels.get(key)
        if channel is None:
            cluster = self.lc.cluster
            if caller == "coordinator":
                me = cluster.require_coordinator()
                cert, key_path = me.cert, me.key
            else:
                cert, key_path = cluster.node(caller).cert, cluster.node(caller).key
            creds = TlsMaterial.load(cluster.ca, cert, key_path).channel_credentials()
            target = cluster.node(node)
            options = channel_options(target.name)
            if big:
                options = [o for o in options if o[0] != "grpc.max_send_message_length"]
                options += [("grpc.max_send_message_length", -1)]
            channel = grpc.aio.secure_channel(target.address, creds, options=options)
            self.channels[key] = channel
        return channel

    async def control(self, node: str = TARGET) -> mpc_pb2_grpc.ControlStub:
        return mpc_pb2_grpc.ControlStub(await self.channel("coordinator", node))

    async def peer(self, as_node: str, node: str = TARGET) -> mpc_pb2_grpc.PeerStub:
        return mpc_pb2_grpc.PeerStub(await self.channel(as_node, node))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_DEADLINE + RUN_SLACK) -> T:
        return self.lt.run(coro, timeout)

    async def prepare(self, session_id: str, parties: Sequence[str], at: Sequence[str], *,
                      protocol: str = "sum", input_name: str = "x", timeout_ms: int = 10_000,
                      params: Mapping[str, WireParam | None] | None = None) -> dict[str, mpc_pb2.PrepareReply]:
        """Prepare a well-formed session at the nodes `at` (must succeed)."""
        request = prepare_request(session_id, protocol, input_name, parties, timeout_ms=timeout_ms, params=params)
        replies = {}
        for name in at:
            outcome = await _unary((await self.control(name)).Prepare(request, timeout=CALL_DEADLINE))
            assert outcome.code == OK, (name, request, outcome)
            replies[name] = outcome.value
        return replies

    def input_versions(self, parties: Sequence[str], input_name: str) -> dict[str, int]:
        """Every participant's input version, as a coordinator passes them to Compute (1 where a
        node does not hold the input: it never prepares the session anyway)."""
        return {p: self.versions.get((p, input_name), 1) for p in parties}

    async def abort(self, session_id: str, at: Sequence[str] = (TARGET,), reason: str = "fuzz") -> None:
        """Abort a session the example made (OK, or NOT_FOUND where it never got prepared)."""
        for name in at:
            outcome = await _unary((await self.control(name)).Abort(
                mpc_pb2.AbortRequest(session_id=session_id, reason=reason), timeout=CALL_DEADLINE))
            assert_status(outcome, frozenset({OK, grpc.StatusCode.NOT_FOUND}), ("abort", name, session_id))

    async def active(self, node: str) -> int:
        outcome = await _unary((await self.control(node)).Status(mpc_pb2.StatusRequest(), timeout=CALL_DEADLINE))
        assert outcome.code == OK, outcome
        return int(outcome.value.active_sessions)

    def assert_still_serving(self) -> None:
        """Every node answers Status, a real sum is right, and no fuzz session is left live."""
        async def go() -> None:
            async with Coordinator(self.lc.cluster) as c:
                statuses = await c.status()
                assert all(s.healthy for s in statuses), [s.error for s in statuses if not s.healthy]
                assert (await c.sum("x")).value == sum(INPUTS["x"])
            deadline = time.monotonic() + 10
            while True:
                live = {n: await self.active(n) for n in NAMES}
                if not any(live.values()):
                    return
                assert time.monotonic() < deadline, f"fuzz sessions still live: {live}"
                await asyncio.sleep(0.1)
        self.run(go(), 30)

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            await channel.close()


def vote_shapes(lc: LocalCluster, vote_id: str) -> VoteShapes:
    """The shapes of the messages the target received in the real vote `vote_id`."""
    received = [(sender, step, payload) for sid, sender, step, payload in lc.recorder.received[TARGET]
                if sid == vote_id]
    sizes = {step: len(payload) for _, step, payload in received}
    iknp = {}
    for sender, step, payload in received:
        if step == STEP_U and sender not in iknp:
            iknp[sender] = IKNP_HEADER.unpack_from(payload)
    assert set(iknp) == {"bob", "carlos"} and set(CMP_STEPS) <= set(sizes), (sorted(sizes), iknp)
    return VoteShapes(sizes, iknp, bytes.fromhex(vote_id)[:16])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    lt = LoopThread()
    try:
        # The fuzzer tests robustness, not the rules across sessions (test_across_sessions.py):
        # the owners let any participant set run any number of distinct queries.
        # No triple pools: the prefixes drive the IKNP path (tests/sim/test_pool_sim.py and
        # tests/integration/test_pool.py attack the pooled one).
        manager = running_cluster(tmp_path_factory.mktemp("fuzz"), 3, every_policy=ANY_QUERIES, triple_pool=0)
        lc = lt.run(manager.__aenter__(), 60)
        fuzz_env: Env | None = None
        try:
            versions: dict[tuple[str, str], int] = {}

            def put(name: str, input_name: str, values: list[int], **kwargs: Any) -> None:
                versions[(name, input_name)] = lc.put(name, input_name, values, **kwargs)
            for i, name in enumerate(NAMES):
                # Narrow declared bounds: a well-formed sum of "x" fits at every scale up to 32 bits.
                put(name, "x", [INPUTS["x"][i]], scalar=True, bounds=(-8, 8))
                put(name, "ballot", [INPUTS["ballot"][i]], ballots=True)
            put(TARGET, "v", [1, -2, 3], bounds=(-8, 8))             # narrow enough to compare
            put(TARGET, "fixed", [3 << 15, -(1 << 16)], frac_bits=16)
            put(TARGET, "option", [0, 2, 1], bounds=(0, 2), kind="options")   # plurality ballots, 3 options
            put(TARGET, "curve", [5, 0, -3], bounds=(-8, 8), kind="curve")    # a net-demand curve (never rises)
            put(TARGET, "bid", [1, -2, 3], bounds=(-8, 8), kind="bids")       # sealed bids for an auction
            # Declared bounds too wide to sum over 2 or more parties (refused at prepare).
            put(TARGET, "huge", [INT64[1] // 2, INT64[0] // 2], bounds=(INT64[0] // 2, INT64[1] // 2))

            async def first_sessions() -> tuple[str, str]:
                async with Coordinator(lc.cluster) as c:
                    result = await c.sum("x")
                    vote = await c.vote("ballot")
                assert result.value == sum(INPUTS["x"])
                assert vote.passed          # 2 of 3 ballots are yes
                return result.session_id, vote.session_id
            finished, vote_id = lt.run(first_sessions(), 60)
            fuzz_env = Env(lt, lc, finished, vote_shapes(lc, vote_id), versions)
            yield fuzz_env
        finally:
            if fuzz_env is not None:
                lt.run(fuzz_env.close(), 10)
            lt.run(manager.__aexit__(None, None, None), 30)
    finally:
        lt.close()


# ---- strategies ------------------------------------------------------------------------------------

HEX = "0123456789abcdef"
texts = st.text(max_size=60)
bad_session_ids = st.one_of(
    st.text(HEX, min_size=32, max_size=32),           # well-formed but unknown (or, rarely, reused)
    st.text(HEX, min_size=0, max_size=31), st.text(HEX, min_size=33, max_size=40),
    st.text("0123456789ABCDEF", min_size=32, max_size=32).filter(lambda s: s != s.lower()),
    texts, st.just(""), st.just("0" * 32 + "\n"), st.just("../" * 11), st.text(min_size=200, max_size=400),
)
# The catalogue's parameters as the wire carries them (mpc/protocols/catalogue.py), written out
# again as the fuzzer's oracle: protocol -> parameter -> (Param oneof field, required).
# A DP release's parameters (mpc/protocols/catalogue.py `Private`), on every protocol that has one.
PRIVATE: dict[str, tuple[str, bool]] = {"epsilon": ("real", False), "delta": ("real", False),
                                        "coins": ("integer", False), "sensitivity": ("integer", False),
                                        "unit": ("integer", False), "local_noise": ("flag", False)}
PARAMS_OF: dict[str, dict[str, tuple[str, bool]]] = {
    "sum": PRIVATE,
    "average": {**PRIVATE, "elementwise": ("flag", False)},
    "vote": {"threshold": ("integer", False)},
    "threshold": {"threshold": ("integer", True)},
    "auction": {"second_price": ("flag", False)},
    "clearing-price": {"prices": ("integers", True)},
    "plurality": {**PRIVATE, "options": ("integer", True), "winner_only": ("flag", False)},
    "histogram": {**PRIVATE, "edges": ("integers", True)},
    "intersect": {"reveal": ("integer", False), "recipients": ("integers", False)},
    "collection-sum": {},
    "collection-vote": {},
    "collection-threshold": {"threshold": ("integer", True)},
    "collection-plurality": {**PRIVATE, "options": ("integer", True), "winner_only": ("flag", False)},
    "collection-auction": {"second_price": ("flag", False)},
}
WIRE_IDS: dict[int, str] = {entry(name).wire_id: name for name in PARAMS_OF}
PARAM_NAMES = sorted({name for declared in PARAMS_OF.values() for name in declared})
protocols = st.one_of(st.sampled_from([0, *WIRE_IDS, max(WIRE_IDS) + 1, UINT32_MAX]), st.integers(0, UINT32_MAX))
input_names = st.one_of(st.sampled_from(["x", "ballot", "v", "fixed", "huge", "option", "curve", "bid", "nope", "",
                                         "X", "x\0"]), texts)
# What each input at the target is declared as (mpc.store.KINDS): a protocol takes only its own kind,
# and a protocol on numbers an input of another kind only where the policy's allow names it (never here).
KIND_OF = {"x": "number", "ballot": "ballots", "v": "number", "fixed": "number", "huge": "number",
           "option": "options", "curve": "curve", "bid": "bids"}
participant = st.one_of(st.sampled_from([*NAMES, "david", "mallory", "", "ALICE", "alice ", "coordinator"]),
                        st.text(max_size=20))
participants_lists = st.one_of(
    st.permutations(NAMES),
    st.lists(st.sampled_from(NAMES), max_size=6),
    st.lists(participant, max_size=8),
    st.lists(st.sampled_from(NAMES), min_size=200, max_size=300),
)
timeouts_ms = st.one_of(st.sampled_from([0, 1, 50, 3_000, 10_000, UINT32_MAX]), st.integers(0, UINT32_MAX))
thresholds = st.one_of(
    st.none(),
    st.sampled_from([INT64[0], INT64[1], 0, 1, -1, 1 << 30, (1 << 30) + 1, -(1 << 30), -(1 << 30) - 1]),
    st.integers(*INT64),
)
frac_bits_values = st.one_of(st.sampled_from([0, 1, 15, 16, 32, 33, 64, UINT32_MAX]), st.integers(0, UINT32_MAX))
lengths = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 1 << 32, UINT64_MAX]), st.integers(0, UINT64_MAX))
payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=24, max_size=24),                               # a sum seed message's size
    st.integers(0, 8).flatmap(lambda k: st.binary(min_size=16 * k, max_size=16 * k).map(
        lambda ids: bytes([k]) + ids + b"\0\0")),                     # hello: setup ids, no pool
    st.binary(min_size=256, max_size=256),                             # one base-OT group element
    st.integers(0, 40).flatmap(lambda k: st.binary(min_size=8 * k, max_size=8 * k)),    # whole words
    st.binary(min_size=3000, max_size=5000),
)
steps = st.one_of(st.sampled_from(KNOWN_STEPS), texts)
int64s = st.one_of(st.sampled_from([INT64[0], INT64[1], 0, 1, -1, 2, 3, 255, 256, 257, COMPARE_BOUND,
                                    COMPARE_BOUND + 1, -COMPARE_BOUND - 1]), st.integers(*INT64))
param_names = st.one_of(st.sampled_from([*PARAM_NAMES, "", "Threshold", "threshold ", "elementwise\0", "mode",
                                         "average_mode"]), texts)
param_values: st.SearchStrategy[WireParam] = st.one_of(
    st.booleans(), int64s,
    st.lists(int64s, max_size=8),
    st.lists(st.integers(-1000, 1000), unique=True, max_size=20).map(sorted),   # a price grid that may pass
    st.just(list(range(MAX_PRICES + 1))),                                        # one price too many
    st.just(mpc_pb2.Param()),                                                    # no value at all
    st.floats().map(lambda x: mpc_pb2.Param(real=x)),                            # an epsilon or delta, or NaN
)
param_maps = st.dictionaries(param_names, param_values, max_size=4)
# A known aggregate for a well-formed prepare at the target: (protocol, params, input).
AGGREGATES: list[tuple[str, dict[str, WireParam], str]] = [
    ("sum", {}, "x"),
    ("sum", {}, "fixed"),
    ("average", {}, "v"),
    ("average", {"elementwise": False}, "v"),
    ("average", {"elementwise": True}, "fixed"),
    ("vote", {}, "ballot"),
    ("vote", {"threshold": 2}, "ballot"),
    ("threshold", {"threshold": 1}, "v"),
]
# ... and, for Prepare alone, the protocols whose nodes' lengths need not be equal or that take
# list parameters (Compute is fuzzed on the aggregates above).
PREPARE_AGGREGATES = AGGREGATES + [
    ("auction", {}, "bid"),
    ("auction", {"second_price": True}, "bid"),
    ("clearing-price", {"prices": [1, 2, 3]}, "curve"),
    ("plurality", {"options": 3}, "option"),
    ("plurality", {"options": 4, "winner_only": True}, "option"),
]


def test_the_fuzzers_parameter_oracle_lists_every_protocol_of_the_catalogue() -> None:
    assert sorted(PARAMS_OF) == sorted(PROTOCOLS)


def param_faults(protocol: str, params: Mapping[str, mpc_pb2.Param]) -> set[str]:
    """The parameters a node must refuse for `protocol`: unknown to it, without a value, of another
    type than it declares, or required and missing."""
    declared = PARAMS_OF[protocol]
    faults = {name for name, param in params.items()
              if name not in declared or param.WhichOneof("value") != declared[name][0]}
    return faults | {name for name, (_, required) in declared.items() if required and name not in params}


# ---- Control ---------------------------------------------------------------------------------------


FRESH, FINISHED = "<fresh>", "<finished>"   # session ids filled in when the example runs
PREPARE_MUTANTS: dict[str, st.SearchStrategy[Any]] = {
    "session_id": st.one_of(bad_session_ids, st.just(FINISHED)),
    "protocol": protocols,
    "params": param_maps,                             # all of them replaced
    "param": st.tuples(param_names, param_values),    # one set (added, or its value replaced)
    "threshold": thresholds,                          # the parameter "threshold" set (None: removed)
    "input_name": input_names,
    "participants": participants_lists,
    "timeout_ms": timeouts_ms,
}


@st.composite
def prepare_requests(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A well-formed PrepareRequest's fields with 0-3 of them mutated."""
    protocol, params, input_name = draw(st.sampled_from(PREPARE_AGGREGATES))
    fields: dict[str, Any] = {
        "session_id": FRESH, "protocol": protocol, "params": dict(params), "input_name": input_name,
        "participants": list(draw(st.permutations(NAMES))), "timeout_ms": draw(st.sampled_from([0, 3_000, 60_000])),
    }
    mutated = draw(st.lists(st.sampled_from(sorted(PREPARE_MUTANTS)), max_size=3, unique=True))
    for name in mutated:
        value = draw(PREPARE_MUTANTS[name])
        if name == "param":
            fields["params"][value[0]] = value[1]
        elif name == "threshold":
            fields["params"]["threshold"] = value
        else:
            fields[name] = value
    return fields, mutated


@fuzz_settings(200)
@given(case=prepare_requests())
def _fuzz_prepare(env: Env, case: tuple[dict[str, Any], list[str]]) -> None:
    fields, mutated = case
    session_id = {FRESH: secrets.token_hex(16), FINISHED: env.finished_session}.get(fields["session_id"],
                                                                                   fields["session_id"])
    request = prepare_request(session_id, fields["protocol"], fields["input_name"], fields["participants"],
                              timeout_ms=fields["timeout_ms"], params=fields["params"])

    async def go() -> Outcome:
        outcome = await _unary((await env.control()).Prepare(request, timeout=CALL_DEADLINE))
        if outcome.code == OK:
            await env.abort(session_id)
        return outcome
    outcome = env.run(go())
    check(outcome, CONTROL_ALLOWED, (mutated, request))
    protocol = WIRE_IDS.get(request.protocol)
    if request.input_name == "huge" and protocol == "sum" and outcome.code != OK:
        # An input whose sum could overflow is refused at prepare, before anything is shared.
        assert outcome.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), outcome
    if request.input_name == "huge" and protocol == "sum" and len(request.participants) > 1:
        # Its declared bounds could overflow a sum over two or more parties: never prepared.
        assert outcome.code != OK, outcome
    if not mutated:
        assert outcome.code == OK, (request, outcome)      # the unmutated request is well formed
    if outcome.code == OK:
        reply = outcome.value
        assert reply.session_id == session_id and reply.node == TARGET, reply
        assert reply.length >= 1 and reply.frac_bits <= 32, reply
    if protocol is None:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown protocol" in outcome.details, outcome
    elif faults := param_faults(protocol, request.params):
        # Checked before anything else of the request: refused, naming the protocol and a parameter at fault.
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (faults, request, outcome)
        valueless = {name for name, param in request.params.items() if param.WhichOneof("value") is None}
        assert f"protocol {protocol}" in outcome.details, (faults, outcome)
        if valueless:   # a Param without a value is refused first (mpc/node/servicer.py `_params`)
            assert "has no value" in outcome.details, (valueless, outcome)
            faults = valueless
        assert any(repr(name[:40]) in outcome.details for name in faults), (faults, outcome)
    elif protocol in ("vote", "threshold") and "threshold" in request.params and \
            not -COMPARE_BOUND <= request.params["threshold"].integer <= COMPARE_BOUND:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (request.params["threshold"], outcome)
        assert f"protocol {protocol}" in outcome.details and "threshold" in outcome.details, outcome
    if session_id == env.finished_session:
        assert outcome.code != OK, outcome                 # a finished session is never prepared again
    kind = KIND_OF.get(request.input_name)
    if protocol is not None and kind is not None and kind not in entry(protocol).kinds:
        # An input of another kind is never prepared, whatever else the request says ...
        assert outcome.code != OK, (protocol, kind, outcome)
        if mutated == ["input_name"]:   # ... and, the rest being well formed, is refused for its kind
            assert_refused_for_its_kind(protocol, request.input_name, outcome)


def assert_refused_for_its_kind(protocol: str, input_name: str, outcome: Outcome) -> None:
    """A well-formed prepare of `protocol` on the target's `input_name`, of a kind the protocol does
    not take, is refused for that kind: a protocol made for one kind takes no other (an InputError),
    and a protocol on numbers takes another kind only where the policy's allow names the input (a
    PolicyError naming the protocols the kind is for)."""
    kind, what = KIND_OF[input_name], f"input {input_name!r}"
    if kind != "number" and "number" in entry(protocol).kinds:
        users = " or ".join(name for name in PROTOCOLS if kind in entry(name).kinds)
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, (protocol, input_name, outcome)
        assert f"node {TARGET}: {what} holds {kind}, which only {users} may use (the policy's " \
               f"allow.{protocol} may name it)" in outcome.details, (protocol, input_name, outcome)
    else:
        assert outcome.code == grpc.StatusCode.FAILED_PRECONDITION, (protocol, input_name, outcome)
        takes = " or ".join(sorted(entry(protocol).kinds))
        assert f"{what} at node {TARGET} is not declared as {takes} (it holds {kind}); {protocol} takes " \
               f"{entry(protocol).takes}" in outcome.details, (protocol, input_name, outcome)


def test_each_protocol_prepares_only_its_own_kind_of_input(env: Env) -> None:
    """Every well-formed prepare of PREPARE_AGGREGATES, on every input at the target: prepared on its
    own input (then aborted), never refused for its kind on another of the kind the protocol takes
    (though "fixed" may be refused as fixed point), refused for its kind on any other."""
    refused = 0
    for protocol, params, own in PREPARE_AGGREGATES:
        for input_name, kind in KIND_OF.items():
            if input_name == "huge":   # a number whose declared bounds are refused on their own
                continue
            session_id = secrets.token_hex(16)
            request = prepare_request(session_id, protocol, input_name, NAMES, timeout_ms=60_000, params=params)

            async def go() -> Outcome:
                outcome = await _unary((await env.control()).Prepare(request, timeout=CALL_DEADLINE))
                if outcome.code == OK:
                    await env.abort(session_id)
                return outcome
            outcome = env.run(go())
            if input_name == own:
                assert outcome.code == OK, (protocol, params, input_name, outcome)
            elif kind in entry(protocol).kinds:
                assert "not declared as" not in outcome.details and "which only" not in outcome.details, outcome
            else:
                assert_refused_for_its_kind(protocol, input_name, outcome)
                refused += 1
    assert refused >= len(PREPARE_AGGREGATES) * 4
    env.assert_still_serving()


def test_fuzz_prepare(env: Env) -> None:
    _fuzz_prepare(env)
    env.assert_still_serving()


VERSION_MUTATIONS = ("missing", "extra", "own", "peer", "empty", "random")
LENGTH_MUTATIONS = ("missing", "extra", "own", "peer", "empty", "random")


@st.composite
def mutated_versions(draw: st.DrawFn, versions: dict[str, int], mutation: str | None) -> dict[str, int]:
    """The participants' input versions with one mutation (None: as reported at prepare).

    missing: a participant left out; extra: a node that is no participant added; own / peer:
    the target's / another participant's version changed; empty: no versions; random: any map.
    """
    out = dict(versions)
    if mutation == "missing":
        del out[draw(st.sampled_from(sorted(out)))]
    elif mutation == "extra":
        out[draw(participant.filter(lambda p: p not in versions))] = draw(st.integers(0, UINT64_MAX))
    elif mutation == "own":
        out[TARGET] = draw(st.integers(0, UINT64_MAX).filter(lambda v: v != versions[TARGET]))
    elif mutation == "peer":
        peer = draw(st.sampled_from(sorted(set(out) - {TARGET})))
        out[peer] = draw(st.integers(0, UINT64_MAX).filter(lambda v: v != versions[peer]))
    elif mutation == "empty":
        out = {}
    elif mutation == "random":
        out = draw(st.dictionaries(participant, st.integers(0, UINT64_MAX), max_size=5))
    return out


@dataclass(frozen=True)
class LengthsMutation:
    """How Compute's `lengths` map differs from the lengths the nodes reported at prepare (drawn
    before those are known). kind None: as reported; "missing": `node` left out; "extra": `node`
    (no participant) added; "own" / "peer": the target's / `node`'s length set to `value` (or to
    the reported one plus 1 if that is `value`); "empty": no lengths (a node takes its own for
    every participant: allowed for every protocol fuzzed here); "random": `table` instead."""

    kind: str | None
    node: str = ""
    value: int = 0
    table: tuple[tuple[str, int], ...] = ()

    def apply(self, lengths: dict[str, int]) -> dict[str, int]:
        out = dict(lengths)
        if self.kind == "missing":
            del out[self.node]
        elif self.kind == "extra":
            out[self.node] = self.value
        elif self.kind in ("own", "peer"):
            node = TARGET if self.kind == "own" else self.node
            out[node] = self.value if self.value != lengths[node] else (lengths[node] + 1) % (UINT64_MAX + 1)
        elif self.kind == "empty":
            out = {}
        elif self.kind == "random":
            out = dict(self.table)
        return out


@st.composite
def lengths_mutations(draw: st.DrawFn, parties: Sequence[str], kind: str | None) -> LengthsMutation:
    if kind == "missing":
        return LengthsMutation(kind, node=draw(st.sampled_from(sorted(parties))))
    if kind == "extra":
        return LengthsMutation(kind, node=draw(participant.filter(lambda p: p not in parties)), value=draw(lengths))
    if kind in ("own", "peer"):
        return LengthsMutation(kind, node=draw(st.sampled_from(sorted(set(parties) - {TARGET}))), value=draw(lengths))
    if kind == "random":
        return LengthsMutation(kind, table=tuple(draw(st.dictionaries(participant, lengths, max_size=5)).items()))
    return LengthsMutation(kind)


@fuzz_settings(150)
@given(scenario=st.sampled_from(["unknown", "target-first", "target-first", "target-last", "everyone"]),
       aggregate=st.sampled_from(AGGREGATES), mutated_id=bad_session_ids,
       frac_bits=st.one_of(st.integers(0, 32), st.integers(0, 32), frac_bits_values),
       length=st.one_of(st.none(), st.none(), lengths), twice=st.booleans(),
       version_mutation=st.one_of(st.none(), st.none(), st.sampled_from(VERSION_MUTATIONS)),
       length_mutation=st.one_of(st.none(), st.none(), st.sampled_from(LENGTH_MUTATIONS)),
       data=st.data())
def _fuzz_compute(env: Env, scenario: str, aggregate: tuple[str, dict[str, WireParam], str], mutated_id: str,
                  frac_bits: int, length: int | None, twice: bool, version_mutation: str | None,
                  length_mutation: str | None, data: st.DataObject) -> None:
    """Compute with mutated scale, output length, input versions and participants' lengths, on
    unknown, half-prepared and fully prepared sessions.

    target-first: only the target knows the session and is first in the party order: it waits
    for no peer, and its own messages to the unprepared peers are refused at once.
    target-last: it waits for its peers' messages, which never come: its 0.3 s deadline ends it.
    everyone: a sum of "x" prepared and computed at every node with the same (mutated) request:
    if the nodes accept it, the shares must add up to the true sum at that scale.
    """
    protocol, params, input_name = aggregate
    others = [n for n in NAMES if n != TARGET]
    parties = [*others, TARGET] if scenario == "target-last" else [TARGET, *others]
    at = list(NAMES) if scenario == "everyone" else [] if scenario == "unknown" else [TARGET]
    if scenario == "everyone":
        protocol, params, input_name = "sum", {}, "x"
    session_id = mutated_id if scenario == "unknown" else secrets.token_hex(16)
    # The versions the nodes report at prepare (known in advance: nothing overwrites them).
    versions = data.draw(mutated_versions(env.input_versions(parties, input_name), version_mutation),
                         label="input_versions")
    lengths_lie = data.draw(lengths_mutations(parties, length_mutation), label="lengths")

    async def go() -> list[Outcome]:
        want = 1 if length is None else length
        # The lengths the nodes report at prepare (a peer that never prepares is said to have the target's).
        reported = {p: 1 for p in parties}
        if at:
            replies = await env.prepare(session_id, parties, at, protocol=protocol, input_name=input_name,
                                        params=params, timeout_ms=300 if scenario == "target-last" else 4_000)
            if length is None:
                want = replies[TARGET].length
            reported = {p: replies[p].length if p in replies else replies[TARGET].length for p in parties}
            assert all(r.input_version == env.versions[(n, input_name)] for n, r in replies.items()), replies
        request = mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=frac_bits, length=want,
                                         input_versions=versions, lengths=lengths_lie.apply(reported))
        calls = [_streamed((await env.control(name)).Compute(request, timeout=CALL_DEADLINE))
                 for name in (at if scenario == "everyone" else [TARGET]) for _ in range(2 if twice else 1)]
        outcomes = list(await asyncio.gather(*calls))
        if at:
            await env.abort(session_id, at)
        return outcomes

    outcomes = env.run(go(), 2 * CALL_DEADLINE + RUN_SLACK)
    for outcome in outcomes:
        check(outcome, CONTROL_ALLOWED, (scenario, session_id, aggregate, frac_bits, length, versions, lengths_lie))
        if version_mutation in ("missing", "extra", "own", "empty"):
            # Versions that do not match the participants or the target's own input: refused.
            assert outcome.code != OK, (version_mutation, versions, outcome)
        if length_mutation in ("missing", "extra", "own", "peer"):
            # Lengths that do not match the participants or the target's own, or that differ where
            # they must be equal: refused.
            assert outcome.code != OK, (lengths_lie, outcome)
        if outcome.code == OK:   # the session ran: the chunks are consistent
            assert outcome.value and all(c.session_id == session_id for c in outcome.value), outcome
        if scenario == "unknown":
            assert outcome.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION), outcome
        if scenario == "target-last":
            assert outcome.code != OK, outcome
    ok = [o for o in outcomes if o.code == OK]
    if scenario == "everyone" and len(ok) == len(NAMES):
        total = sum(int.from_bytes(c.words, "little") for o in ok for c in o.value) % (1 << 64)
        assert total == (sum(INPUTS["x"]) << frac_bits) % (1 << 64), (frac_bits, total)
    if scenario == "everyone" and length is None and frac_bits <= 32 and not twice and version_mutation is None \
            and length_mutation in (None, "empty"):
        assert len(ok) == len(NAMES), outcomes       # a well-formed compute at every node succeeds
    if scenario == "everyone" and version_mutation == "peer":
        assert not ok, outcomes   # the peer whose version is wrong refuses; nobody opens a share


def test_fuzz_compute(env: Env) -> None:
    _fuzz_compute(env)
    env.assert_still_serving()


@fuzz_settings(100)
@given(which=st.sampled_from(["live", "live", "unknown", "finished"]), mutated_id=bad_session_ids,
       reason=st.one_of(texts, st.text(min_size=1000, max_size=3000)), repeat=st.integers(1, 3))
def _fuzz_abort(env: Env, which: str, mutated_id: str, reason: str, repeat: int) -> None:
    session_id = {"live": secrets.token_hex(16), "unknown": mutated_id, "finished": env.finished_session}[which]

    async def go() -> list[Outcome]:
        if which == "live":
            await env.prepare(session_id, NAMES, [TARGET])
        stub = await env.control()
        return [await _unary(stub.Abort(mpc_pb2.AbortRequest(session_id=session_id, reason=reason),
                                        timeout=CALL_DEADLINE)) for _ in range(repeat)]

    for outcome in env.run(go(), repeat * CALL_DEADLINE + RUN_SLACK):
        check(outcome, frozenset({OK, grpc.StatusCode.NOT_FOUND}), (which, session_id, reason[:40]))
        if which != "unknown":
            assert outcome.code == OK, outcome     # aborting a known session is idempotent


def test_fuzz_abort(env: Env) -> None:
    _fuzz_abort(env)
    env.assert_still_serving()


# ---- Peer ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerCall:
    """One mutated peer message and how it travels."""

    as_node: str                    # whose certificate makes the call
    live_session: bool              # the example's session, or `session_id`
    session_id: str
    sender: str | None              # None: the caller's own name
    step: str
    payload: bytes
    declared: int | None            # None: len(payload)
    via: str                        # "deliver" or "send"
    header: str                     # "ok", "missing" (no header), "repeated" (Send: on a later frame too)
    cuts: tuple[int, ...]           # Send: where the payload is cut into frames


SEED_MSG = struct.Struct("<16sQ")   # mpc/protocols/sum.py: seed, contribution length
IKNP_HEADER = struct.Struct("<QQ")  # mpc/ot/extension.py: PRG offset (blocks), number of OTs


@dataclass(frozen=True)
class VoteShapes:
    """What a real 3-party vote on one ballot looked like at the target, learnt from the recorder.

    sizes: payload size of every step a peer sent the target; iknp: each peer's first IKNP
    header (offset, OT count) to the target; setup_id: the OT setup the nodes now share (its
    id is the first 16 bytes of the session that made it, mpc/protocols/threshold.py).
    """

    sizes: dict[str, int]
    iknp: dict[str, tuple[int, int]]
    setup_id: bytes


def hello_of(*ids: bytes) -> bytes:
    """A session hello (mpc/ot/triples.py session_hello) advertising these setup ids, with no pool
    reservation and no pool holdings (this module's nodes keep no triple pools)."""
    return bytes([len(ids)]) + b"".join(ids) + b"\0\0"


def sized_bytes(size: int) -> st.SearchStrategy[bytes]:
    """Random bytes of an exact size; large ones come from a drawn seed (hypothesis draws stay small)."""
    if size <= 1024:
        return st.binary(min_size=size, max_size=size)
    return st.one_of(st.just(bytes(size)), st.randoms(use_true_random=False).map(lambda r: r.randbytes(size)))


@st.composite
def shaped_payloads(draw: st.DrawFn, step: str, sender: str, shapes: VoteShapes) -> bytes:
    """Random content in the shape the step expects, so that messages get past the size checks."""
    if step == STEP_SEED:
        return SEED_MSG.pack(draw(st.binary(min_size=16, max_size=16)),
                             draw(st.one_of(st.just(1), st.integers(0, UINT64_MAX))))
    if step == STEP_HELLO:
        ids = draw(st.lists(st.one_of(st.just(shapes.setup_id), st.binary(min_size=16, max_size=16)), max_size=9))
        return hello_of(*ids)
    if step == STEP_DIGEST:       # a digest of some other session description
        return draw(st.binary(min_size=DIGEST_BYTES, max_size=DIGEST_BYTES))
    size = shapes.sizes.get(step)
    if size is None:
        return draw(st.integers(0, 64).flatmap(lambda k: st.binary(min_size=8 * k, max_size=8 * k)))
    body = draw(sized_bytes(size))
    if step == STEP_U and sender in shapes.iknp and draw(st.booleans()):
        # A header for a PRG window of the pair that is likely fresh, so the IKNP extension runs.
        body = iknp_header(shapes, sender, draw(st.integers(1 << 20, 1 << 24))) + body[IKNP_HEADER.size:]
    return body


# Windows 1, 2, 3... after the real vote's are for the prefixes that drive a session to the
# comparison (they must not collide); the fuzzed messages take theirs from 2^20 on.
FRESH_WINDOWS = itertools.count(1)


def iknp_header(shapes: VoteShapes, sender: str, window_index: int) -> bytes:
    """The header of an IKNP message from `sender` for the window_index-th window after its first."""
    offset, m = shapes.iknp[sender]
    window = -(-m // KAPPA)          # AES blocks per key that m OTs take (mpc/ot/extension.py)
    return IKNP_HEADER.pack(offset + window * window_index, m)


PEER_MUTATIONS = ("session", "sender", "declared", "header", "step", "payload")


@st.composite
def peer_calls(draw: st.DrawFn, shapes: VoteShapes, likely: tuple[str, ...] = ()) -> PeerCall:
    """A well-formed peer message from bob or carlos in the example's session, with 0-2 mutations.

    Its step is one of `likely` four times in five (when given), else any known step.
    """
    as_node = draw(st.sampled_from(["bob", "carlos"]))
    step = draw(st.sampled_from(likely if likely and draw(st.integers(0, 4)) else KNOWN_STEPS))
    call = PeerCall(as_node=as_node, live_session=True, session_id="", sender=None, step=step,
                    payload=draw(shaped_payloads(step, as_node, shapes)), declared=None,
                    via=draw(st.sampled_from(["deliver", "send"])), header="ok",
                    cuts=tuple(sorted(draw(st.lists(st.integers(0, 5000), max_size=3)))))
    for mutation in draw(st.lists(st.sampled_from(PEER_MUTATIONS), max_size=2, unique=True)):
        if mutation == "session":
            call = replace(call, live_session=False, session_id=draw(bad_session_ids))
        elif mutation == "sender":
            call = replace(call, sender=draw(participant))
        elif mutation == "declared":
            call = replace(call, declared=draw(st.one_of(
                st.sampled_from([0, 1, 23, 24, 25, 1 << 30, (1 << 30) + 1, UINT64_MAX]), st.integers(0, UINT64_MAX))))
        elif mutation == "header":
            call = replace(call, header=draw(st.sampled_from(["missing", "repeated"])))
        elif mutation == "step":
            call = replace(call, step=draw(texts))
        else:
            call = replace(call, payload=draw(payloads))
    return call


def _frames(call: PeerCall, header: mpc_pb2.PeerHeader) -> list[mpc_pb2.PeerFrame]:
    bounds = [0, *(c for c in call.cuts if c <= len(call.payload)), len(call.payload)]
    chunks = [call.payload[a:b] for a, b in zip(bounds, bounds[1:])] or [b""]
    frames = [mpc_pb2.PeerFrame(chunk=chunk) for chunk in chunks]
    if call.header != "missing":
        frames[0].header.CopyFrom(header)
    if call.header == "repeated":
        frames.append(mpc_pb2.PeerFrame(header=header, chunk=b""))
    return frames


async def _peer_call(env: Env, call: PeerCall, live_id: str) -> Outcome:
    header = mpc_pb2.PeerHeader(session_id=live_id if call.live_session else call.session_id, step=call.step,
                                sender=call.as_node if call.sender is None else call.sender,
                                payload_bytes=len(call.payload) if call.declared is None else call.declared)
    stub = await env.peer(call.as_node)
    if call.via == "deliver":
        message = mpc_pb2.PeerMessage(payload=call.payload)
        if call.header != "missing":
            message.header.CopyFrom(header)
        return await _unary(stub.Deliver(message, timeout=CALL_DEADLINE))

    async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
        for frame in _frames(call, header):
            yield frame
    return await _unary(stub.Send(frames(), timeout=CALL_DEADLINE))


@dataclass(frozen=True)
class PeerScenario:
    """The session a peer-fuzz example attacks, and how far the test drives it first."""

    protocol: str                  # a catalogue name, run without parameters
    input_name: str
    at: tuple[str, ...]            # nodes that prepare the session
    computes: bool                 # the target computes (in the background) while the fuzzer sends
    prefix: str = ""               # "": nothing; "agreed": both peers send the session's true digest;
                                   # each of the following starts with those digests too:
                                   # "hello": both peers greet (no common OT setup);
                                   # "hello-shared": greet with the shared setup (straight to triples);
                                   # "triples": that, then well-shaped IKNP messages and corrections
                                   # from both peers, so that the target reaches the comparison rounds
    likely: tuple[str, ...] = ()   # the steps the fuzzer mostly sends
    target_first: bool = False     # the target leads the party order (it then awaits no sum seed)


PEER_SCENARIOS = {
    "unknown": PeerScenario("sum", "x", (), False),
    "prepared-sum": PeerScenario("sum", "x", (TARGET,), False, likely=(STEP_SEED,)),
    "prepared-vote": PeerScenario("vote", "ballot", (TARGET,), False),
    "running-sum": PeerScenario("sum", "x", NAMES, True, likely=(STEP_SEED, STEP_DIGEST)),
    "agreed-sum": PeerScenario("sum", "x", NAMES, True, "agreed", likely=(STEP_SEED,)),
    "running-vote": PeerScenario("vote", "ballot", NAMES, True),
    "fresh-ot-vote": PeerScenario("vote", "ballot", NAMES, True, "hello", likely=(STEP_BASE_A, STEP_BASE_B)),
    "triples-vote": PeerScenario("vote", "ballot", NAMES, True, "hello-shared", likely=(STEP_U, STEP_T)),
    "compare-vote": PeerScenario("vote", "ballot", NAMES, True, "triples", likely=CMP_STEPS,
                                 target_first=True),
}


# A protocol's parameters as the session description holds them when none are sent (mpc/node/core.py).
DESCRIBED_DEFAULTS: dict[str, dict[str, object]] = {
    "sum": {"epsilon": None, "delta": None, "coins": None, "sensitivity": None, "unit": None, "local_noise": False},
    "vote": {"threshold": None}}


def true_digest(scenario: PeerScenario, session_id: str, parties: Sequence[str], versions: dict[str, int]) -> bytes:
    """The digest of the session description every node prepared (mpc/node/core.py, compute):
    what an honest peer sends first. The scenarios compute integers of length 1 at every node."""
    return session_digest({
        "session": session_id, "coordinator": Identity("coordinator", "coordinator").uri(),
        "protocol": scenario.protocol, "params": DESCRIBED_DEFAULTS[scenario.protocol],
        "input": scenario.input_name, "participants": list(parties), "frac_bits": 0,
        "lengths": {p: 1 for p in parties}, "versions": dict(sorted(versions.items()))})


def _prefix(data: st.DataObject, scenario: PeerScenario, shapes: VoteShapes, digest: bytes) -> list[PeerCall]:
    """The well-formed messages that drive the target to the scenario's phase."""
    def honest(as_node: str, step: str, payload: bytes) -> PeerCall:
        return PeerCall(as_node, True, "", None, step, payload, None, "deliver", "ok", ())
    calls = []
    if scenario.prefix:   # the peers agree on the session first (mpc/protocols/agreement.py)
        calls += [honest(peer, STEP_DIGEST, digest) for peer in ("bob", "carlos")]
    if scenario.prefix.startswith("hello") or scenario.prefix == "triples":
        hello = hello_of() if scenario.prefix == "hello" else hello_of(shapes.setup_id)
        calls += [honest(peer, STEP_HELLO, hello) for peer in ("bob", "carlos")]
    if scenario.prefix == "triples":
        for step in (STEP_U, STEP_T):
            for peer in ("bob", "carlos"):
                payload = data.draw(sized_bytes(shapes.sizes[step]))
                if step == STEP_U:   # a PRG window of the pair that no earlier example used
                    payload = iknp_header(shapes, peer, next(FRESH_WINDOWS)) + payload[IKNP_HEADER.size:]
                calls.append(honest(peer, step, payload))
    return calls


@st.composite
def compare_rounds(draw: st.DrawFn, shapes: VoteShapes) -> list[PeerCall]:
    """The comparison's rounds from both peers in order, well shaped, cut short at some point,
    with up to two messages replaced by mutated ones (or by any other peer message)."""
    calls = [PeerCall(peer, True, "", None, step, draw(shaped_payloads(step, peer, shapes)), None,
                      draw(st.sampled_from(["deliver", "send"])), "ok", ())
             for step in CMP_STEPS for peer in ("bob", "carlos")]
    calls = calls[:draw(st.one_of(st.just(len(calls)), st.integers(1, len(calls))))]
    for _ in range(draw(st.integers(0, 2))):
        calls[draw(st.integers(0, len(calls) - 1))] = draw(peer_calls(shapes, CMP_STEPS))
    return calls


PEER_SESSION_S = 8.0
# Sessions driven deep into a vote get more of the examples.
SCENARIO_DRAW = sorted(PEER_SCENARIOS) + ["compare-vote"] * 3 + ["triples-vote", "fresh-ot-vote"]


@fuzz_settings(200)
@given(data=st.data(), name=st.sampled_from(SCENARIO_DRAW), parties=st.permutations(NAMES))
def _fuzz_peer(env: Env, data: st.DataObject, name: str, parties: list[str]) -> None:
    """Mutated Deliver and Send calls from bob's and carlos's certificates to the target.

    "prepared": only the target knows the session. Otherwise every node prepared it and the
    target computes: it waits for messages from its peers, whose certificates the fuzzer holds
    (the real bob and carlos never compute, so they send the target nothing). The test may
    first drive the target to a later phase with well-shaped messages (PeerScenario.prefix).
    """
    scenario = PEER_SCENARIOS[name]
    if scenario.target_first:
        parties = [TARGET, *(p for p in parties if p != TARGET)]
    session_id = secrets.token_hex(16)
    versions = env.input_versions(parties, scenario.input_name)
    prefix = _prefix(data, scenario, env.vote_shapes, true_digest(scenario, session_id, parties, versions))
    if scenario.prefix == "triples":
        messages = data.draw(compare_rounds(env.vote_shapes), label="messages")
    else:
        messages = data.draw(st.lists(peer_calls(env.vote_shapes, scenario.likely), min_size=1, max_size=5),
                             label="messages")

    async def go() -> tuple[list[Outcome], list[Outcome], Outcome | None]:
        if scenario.at:
            await env.prepare(session_id, parties, scenario.at, protocol=scenario.protocol,
                              input_name=scenario.input_name, timeout_ms=int(PEER_SESSION_S * 1000))
        compute: asyncio.Task[Outcome] | None = None
        if scenario.computes:
            # The session's own deadline ends the computation at the latest: the call outlives it.
            request = mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=0, length=1, input_versions=versions,
                                             lengths={p: 1 for p in parties})
            compute = asyncio.ensure_future(_streamed((await env.control()).Compute(
                request, timeout=PEER_SESSION_S + CALL_DEADLINE)))
            # Until the target's engine exists, peer messages wait unread (mpc/node/core.py `early`):
            # the fuzzed ones are to meet the running engine.
            deadline = time.monotonic() + CALL_DEADLINE
            while getattr(env.lc.servers[TARGET].core.sessions.get(session_id), "engine", None) is None:
                assert not compute.done() and time.monotonic() < deadline, (name, "the target did not start")
                await asyncio.sleep(0.005)
        driven = [await _peer_call(env, m, session_id) for m in prefix]
        live = env.lc.servers[TARGET].core.sessions.get(session_id)
        if scenario.prefix and live is not None:   # the true digests made the target agree
            assert getattr(live.engine, "agreed"), (name, parties)
        outcomes = [await _peer_call(env, m, session_id) for m in messages]
        if scenario.at:
            await env.abort(session_id, scenario.at)
        return driven, outcomes, (await compute if compute is not None else None)

    driven, outcomes, computed = env.run(go(), (len(prefix) + len(messages) + 2) * CALL_DEADLINE + PEER_SESSION_S
                                         + RUN_SLACK)
    for message, outcome in zip(prefix, driven):
        assert outcome.code == OK, (name, parties, message.step, message.as_node, outcome)
    for message, outcome in zip(messages, outcomes):
        check(outcome, PEER_ALLOWED, (name, parties, message))
        framed = message.header == "ok" and message.declared in (None, len(message.payload))
        if framed and message.sender not in (None, message.as_node):
            assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, (message, outcome)
        if framed and message.sender in (None, message.as_node) and (not message.live_session or not scenario.at):
            assert outcome.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION), (message, outcome)
    if computed is not None:
        check(computed, CONTROL_ALLOWED, ("compute during peer fuzz", name, parties, messages))


def test_fuzz_peer(env: Env) -> None:
    _fuzz_peer(env)
    env.assert_still_serving()


# ---- malformed protobuf: raw bytes to every method ---------------------------------------------------


def _valid_requests() -> dict[str, list[bytes]]:
    """Well-formed serializations of each method's request, for the byte mutations to start from."""
    sid = "0123456789abcdef" * 2
    header = mpc_pb2.PeerHeader(session_id=sid, step=STEP_SEED, sender="bob", payload_bytes=24)
    return {
        "/mpc.v1.Control/Prepare": [
            prepare_request(sid, "vote", "ballot", NAMES, timeout_ms=1000, params={"threshold": -5}).SerializeToString(),
            prepare_request(sid, "plurality", "option", NAMES, timeout_ms=1000,
                            params={"options": 3, "winner_only": True}).SerializeToString(),
            prepare_request(sid, "clearing-price", "curve", NAMES, timeout_ms=1000,
                            params={"prices": [-(1 << 40), 0, 7]}).SerializeToString()],
        "/mpc.v1.Control/Compute": [mpc_pb2.ComputeRequest(session_id=sid, frac_bits=16,
                                                           length=3).SerializeToString(),
                                    mpc_pb2.ComputeRequest(session_id=sid, frac_bits=0, length=1, progress=True,
                                                           input_versions={n: 1 for n in NAMES},
                                                           lengths={n: 1 for n in NAMES}).SerializeToString()],
        "/mpc.v1.Control/Abort": [mpc_pb2.AbortRequest(session_id=sid, reason="fuzz").SerializeToString()],
        "/mpc.v1.Control/Status": [mpc_pb2.StatusRequest().SerializeToString(), b""],
        "/mpc.v1.Peer/Send": [mpc_pb2.PeerFrame(header=header, chunk=bytes(24)).SerializeToString(),
                              mpc_pb2.PeerFrame(chunk=bytes(range(24))).SerializeToString()],
        "/mpc.v1.Peer/Deliver": [mpc_pb2.PeerMessage(header=header, payload=bytes(24)).SerializeToString()],
    }


VALID_REQUESTS = _valid_requests()


@st.composite
def raw_messages(draw: st.DrawFn, method: str) -> bytes:
    """Random bytes, or a valid request of `method` with bytes flipped, cut, inserted or repeated."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(VALID_REQUESTS[method])))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "append", "double", "set"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= draw(st.integers(1, 255))
        elif op == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x08]))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "double":
            data += bytes(data)
    return bytes(data)


@st.composite
def raw_calls(draw: st.DrawFn) -> tuple[str, str, list[bytes]]:
    method = draw(st.sampled_from(sorted(METHODS)))
    caller = draw(st.sampled_from(["coordinator", "coordinator", "bob"] if "Control" in method
                                  else ["bob", "bob", "coordinator"]))
    count = draw(st.integers(0, 3)) if METHODS[method][0] == "stream_unary" else 1
    return method, caller, [draw(raw_messages(method)) for _ in range(count)]


async def _raw_call(env: Env, method: str, caller: str, messages: list[bytes]) -> Outcome:
    """Call `method` with raw request bytes (identity serializers: the bytes go out unchanged)."""
    channel = await env.channel(caller)
    kind = METHODS[method][0]
    if kind == "unary_unary":
        return await _unary(channel.unary_unary(method)(messages[0], timeout=CALL_DEADLINE))
    if kind == "unary_stream":
        return await _streamed(channel.unary_stream(method)(messages[0], timeout=CALL_DEADLINE))

    async def frames() -> AsyncIterator[bytes]:
        for m in messages:
            yield m
    # gRPC's asyncio client can lose the status of a client-streaming call that the node ends (here:
    # refuses) while the client is still writing: the failed write overwrites it with its own
    # "Internal error from Core" (grpc/grpc#36066). That is the client's view, not the node's answer:
    # the same call is made again, at most twice, to hear the node's.
    for _ in range(3):
        outcome = await _unary(channel.stream_unary(method)(frames(), timeout=CALL_DEADLINE))
        lost = (outcome.code, outcome.details) == (grpc.StatusCode.INTERNAL, GRPC_CLIENT_LOST_STATUS)
        if not lost or len(messages) < 2:
            break
    return outcome


@fuzz_settings(200)
@given(call=raw_calls())
def _fuzz_raw_bytes(env: Env, call: tuple[str, str, list[bytes]]) -> None:
    method, caller, messages = call
    outcome = env.run(_raw_call(env, method, caller, messages))
    allowed = CONTROL_ALLOWED if "Control" in method else PEER_ALLOWED
    check(outcome, allowed, call)
    if outcome.code == OK and method == "/mpc.v1.Control/Prepare":
        # Mutated bytes happened to make a well-formed request for a real input: drop it again.
        session_id = mpc_pb2.PrepareRequest.FromString(messages[0]).session_id
        env.run(env.abort(session_id))


def test_fuzz_raw_bytes_to_every_method(env: Env) -> None:
    _fuzz_raw_bytes(env)
    env.assert_still_serving()


MALFORMED = {
    "wire format": b"\xff\xff\xff",                      # field 0x1fffff..., an unterminated varint
    "truncated": b"\x0a\x20" + b"0" * 10,                # a 32-byte string field cut after 10 bytes
    "bad utf-8": b"\x0a\x02\xff\xfe",                    # field 1 of every request is a string (or a header)
}


def test_malformed_protobuf_is_invalid_argument(env: Env) -> None:
    failures = []
    for method in METHODS:
        caller = "coordinator" if "Control" in method else "bob"
        for what, data in MALFORMED.items():
            if method.endswith("/Status") and what == "bad utf-8":
                continue  # StatusRequest has no fields: field 1 is unknown and skipped, the call is OK
            outcome = env.run(_raw_call(env, method, caller, [data]))
            if outcome.code != grpc.StatusCode.INVALID_ARGUMENT or not outcome.details.strip():
                failures.append((method, what, outcome.code.name, outcome.details))
    env.assert_still_serving()
    assert not failures, "\n".join(map(str, failures))


# ---- an oversize message ---------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def test_oversize_message_is_resource_exhausted(env: Env) -> None:
    """More than the server's 4 MiB max_receive_message_length: refused, and the node serves on."""
    over = MAX_MESSAGE_BYTES + 1024
    session_id = secrets.token_hex(16)

    async def go() -> dict[str, Outcome]:
        await env.prepare(session_id, ["bob", TARGET, "carlos"], [TARGET])   # bob owes alice a seed
        coordinator = await env.channel("coordinator", big=True)
        bob = await env.channel("bob", big=True)
        header = mpc_pb2.PeerHeader(session_id=session_id, step=STEP_SEED, sender="bob", payload_bytes=over)

        async def frames() -> AsyncIterator[mpc_pb2.PeerFrame]:
            yield mpc_pb2.PeerFrame(header=header, chunk=bytes(over))
        outcomes = {
            "Prepare": await _unary(mpc_pb2_grpc.ControlStub(coordinator).Prepare(
                prepare_request(secrets.token_hex(16), "sum", "x" * over, NAMES), timeout=CALL_DEADLINE)),
            "Abort": await _unary(mpc_pb2_grpc.ControlStub(coordinator).Abort(
                mpc_pb2.AbortRequest(session_id=session_id, reason="r" * over), timeout=CALL_DEADLINE)),
            "Deliver": await _unary(mpc_pb2_grpc.PeerStub(bob).Deliver(
                mpc_pb2.PeerMessage(header=header, payload=bytes(over)), timeout=CALL_DEADLINE)),
            "Send": await _unary(mpc_pb2_grpc.PeerStub(bob).Send(frames(), timeout=CALL_DEADLINE)),
            "Compute": await _streamed(mpc_pb2_grpc.ControlStub(coordinator).Compute(
                mpc_pb2.ComputeRequest(session_id="0" * over, frac_bits=0, length=1), timeout=CALL_DEADLINE)),
            # StatusRequest has no fields: an unknown field 15 of `over` bytes makes it oversize.
            "Status": await _unary(coordinator.unary_unary("/mpc.v1.Control/Status")(
                b"\x7a" + _varint(over) + bytes(over), timeout=CALL_DEADLINE)),
        }
        outcomes["live after"] = Outcome(OK, "", await env.active(TARGET))
        await env.abort(session_id)
        return outcomes

    outcomes = env.run(go(), 6 * CALL_DEADLINE + RUN_SLACK)
    for what in ("Prepare", "Abort", "Deliver", "Send", "Compute", "Status"):
        outcome = outcomes[what]
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (what, outcome)
        assert "larger than max" in outcome.details and str(MAX_MESSAGE_BYTES) in outcome.details, (what, outcome)
    # The refused messages never reached the session: it was still live, nothing was delivered.
    assert outcomes["live after"].value == 1
    assert not [m for m in env.lc.recorder.received.get(TARGET, []) if m[0] == session_id]
    env.assert_still_serving()
