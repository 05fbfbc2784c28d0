"""The coordinator: prepare a session on every node, collect one output share from each, add.

The coordinator holds nothing persistent but its certificate. It never sees an input, an
input share or a seed: each node sends it exactly one output share, uniformly random on its
own (PROTOCOLS.md §1), and only the sum of all of them means anything.

A query's first run takes two rounds (Prepare, then Compute). The coordinator keeps, in memory,
what the nodes reported for it (each node's shape, and the newest pair key each holds with each
peer); a later run of the same query is one message per node on a long-lived Control.Run stream
(`one_round`, mpc/protocols/pairing.py). A node whose input or keys changed refuses it as stale
before anything is shared, and the query is prepared anew in two rounds, in a new session.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mpc import MAX_SESSION_TIMEOUT_S
from mpc.config import COUNTS_HIDDEN, ClusterConfig
from mpc.errors import ConfigError, InputError, MpcError, PeerUnavailable, SessionFailed, StaleShape, quoted
from mpc.fixedpoint import decode_value
from mpc.results import (
    AuctionResult,
    AverageResult,
    ClearingResult,
    CollectionAuctionResult,
    CollectionSumResult,
    HistogramResult,
    IntersectionResult,
    PluralityResult,
    Result,
    SumResult,
    ThresholdResult,
    VoteResult,
)
from mpc.transport.peers import Channels, LongCall, describe_rpc_error, is_name_mismatch, is_unreachable
from mpc.transport.tls import TlsMaterial
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

# numpy, the ring, DP calibration and the protocol catalogue are imported where a computation needs
# them: `mpc status` and `mpc health` do without (tests/unit/test_startup.py).
if TYPE_CHECKING:
    from mpc.protocols.catalogue import Entry, Opened
    from mpc.ring import Words

RUN_METHOD = "/mpc.v1.Control/Run"   # as mpc_pb2_grpc.ControlStub names it
# How long after the session deadline the coordinator still waits for a node's own answer
# (which names the peer it waited for) before it gives up on the node itself.
COMPUTE_GRACE_S = 1.0
# Observer of what the coordinator receives: (session, node, share bytes of one chunk).
ShareObserver = Callable[[str, str, bytes], None]
Number = int | float
__all__ = ["AuctionResult", "AverageResult", "ClearingResult", "Coordinator", "HistogramResult", "InputStatus",
           "IntersectionResult", "NodeStatus", "PluralityResult", "Privacy", "ProgressReport", "SumResult", "ThresholdResult", "VoteResult"]
DEFAULT_DELTA = 1e-8   # a DP release's delta when none is given (the default budget holds 100 of them)


@dataclass(frozen=True, slots=True)
class Privacy:
    """Ask for a differentially private release: epsilon, delta, and where the noise is made.

    noise: "joint" (default): one binomial noise made inside MPC from every node's random bits;
    "local": every node adds its own full noise (cheaper for long vectors, n times the variance).
    """

    epsilon: float
    delta: float = DEFAULT_DELTA
    noise: str = "joint"

    def check(self) -> None:
        """Raises: InputError naming epsilon, delta or the noise mode at fault."""
        from mpc import dp
        dp.check_epsilon(self.epsilon)
        dp.check_delta(self.delta)
        if self.noise not in dp.NOISE_MODES:
            raise InputError(f"noise must be one of {', '.join(dp.NOISE_MODES)}, got {self.noise!r}")
# After the first failed call of a session phase, how long the other calls may still end on
# their own (so that the error names every node at fault) before they are cancelled.
FAILURE_GRACE_S = 0.5


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """How far a session has got, as the coordinator sees it: sizes and counts only."""

    session_id: str
    phase: str                # "prepare" or "compute"
    nodes: int
    nodes_done: int           # nodes whose whole output share has arrived
    share_bytes: int          # output-share bytes received so far
    share_bytes_total: int
    peer_bytes: int           # bytes the nodes have sent each other so far (their latest reports)
    peer_messages: int        # messages the nodes have sent and received so far


ProgressCallback = Callable[[ProgressReport], None]


@dataclass(eq=False)
class _Tracker:
    """Collects progress from the nodes of one session and reports it."""

    session_id: str
    nodes: int
    report: ProgressCallback
    share_bytes_total: int = 0
    phase: str = "prepare"
    done: set[str] = field(default_factory=set)
    share_bytes: int = 0
    peers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def emit(self) -> None:
        self.report(ProgressReport(self.session_id, self.phase, self.nodes, len(self.done), self.share_bytes,
                                   self.share_bytes_total, sum(b for b, _ in self.peers.values()),
                                   sum(m for _, m in self.peers.values())))


@dataclass(frozen=True, slots=True)
class InputStatus:
    """What a node shows of one input: public metadata only (a ballot input's length is hidden)."""

    name: str
    length: int | None        # None: secret (ballots)
    frac_bits: int
    scalar: bool
    version: int
    kind: str
    bounds: tuple[Number, Number] | None   # decoded; None: declared by no one (an older mpc's input)
    encoded: tuple[int, int] | None = None # the same, encoded at frac_bits
    budget: dict[str, Any] | None = None   # the owner's DP budget: spent and left (exact decimals as strings)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "length": self.length, "frac_bits": self.frac_bits, "scalar": self.scalar,
                "version": self.version, "kind": self.kind,
                "bounds": None if self.bounds is None else list(self.bounds), "budget": self.budget}


@dataclass(frozen=True, slots=True)
class CollectionStatus:
    """What a node shows of one collection: its rule and how many submissions it stores (public by design)."""

    name: str
    kind: str
    length: int
    min_batch: int
    submissions: int
    closed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "kind": self.kind, "length": self.length, "min_batch": self.min_batch,
                "submissions": self.submissions, "closed": self.closed}


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's answer to Status, or why it gave none."""

    name: str
    address: str
    healthy: bool
    version: str = ""
    inputs: tuple[InputStatus, ...] = ()
    active_sessions: int = 0
    cert_not_after: str = ""
    error: str = ""
    health: str = ""          # the gRPC health service's answer: SERVING, NOT_SERVING, or UNREACHABLE
    collections: tuple[CollectionStatus, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"node": self.name, "address": self.address, "healthy": self.healthy, "health": self.health,
                "version": self.version,
                "inputs": [i.as_dict() for i in self.inputs],
                "active_sessions": self.active_sessions, "cert_not_after": self.cert_not_after, "error": self.error,
                "collections": [c.as_dict() for c in self.collections]}


def _budget(info: mpc_pb2.InputInfo) -> dict[str, Any] | None:
    """An input's DP budget from Status, as exact decimals in strings (None from a node that shows none)."""
    if not info.epsilon_budget:
        return None
    try:
        spent, budget = Decimal(info.epsilon_spent), Decimal(info.epsilon_budget)
        d_spent, d_budget = Decimal(info.delta_spent), Decimal(info.delta_budget)
    except ArithmeticError:
        return None
    return {"epsilon_spent": str(spent), "epsilon_left": str(max(Decimal(0), budget - spent)),
            "epsilon": str(budget), "delta_spent": str(d_spent), "delta_left": str(max(Decimal(0), d_budget - d_spent)),
            "delta": str(d_budget), "exact_allowed": info.exact_allowed}


def _relayed_evidence(prepared: dict[str, mpc_pb2.PrepareReply], nodes: Sequence[str]) -> dict[str, mpc_pb2.Evidence]:
    """Every node's evidence, to relay untouched, when every pair of nodes named the same pair key
    (the keyed path, mpc/protocols/pairing.py: no seed between the nodes, and a sum sends nothing); else nothing."""
    from mpc.errors import RemoteProtocolError
    from mpc.protocols.pairing import keyed
    from mpc.transport.evidence import evidence_from_wire
    if not all(prepared[n].HasField("evidence") for n in nodes):
        return {}
    try:
        parsed = {n: evidence_from_wire(prepared[n].evidence, f"node {n}") for n in nodes}
    except RemoteProtocolError:
        return {}   # a node that sends malformed evidence gets the unkeyed path (and checks digests itself)
    return {n: prepared[n].evidence for n in nodes} if keyed(parsed, list(nodes)) else {}


@dataclass(frozen=True, slots=True)
class _Known:
    """What the nodes reported for one query the last time it ran: each node's shape, and the id of
    the newest pair key each holds with each peer (the one-round path states them back)."""

    shapes: dict[str, mpc_pb2.Shape]
    keys: dict[str, dict[str, bytes]]
    # Every ordered pair's pool ticket for the next session, as the receivers handed them out (all or
    # none): stated back once, so that the session's bit triples need no hello (mpc/ot/pool.py).
    tickets: tuple[mpc_pb2.PoolTicket, ...] = ()
    # Each node's RunRequest but for the session's own fields (prepare, tickets), serialized, by the
    # arguments of `requests`; shared with the _Known made for the same shapes and keys (`after`).
    _requests: dict[tuple[Any, ...], dict[str, bytes]] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def complete_tickets(replies: Mapping[str, mpc_pb2.RunReply],
                         nodes: Sequence[str]) -> tuple[mpc_pb2.PoolTicket, ...]:
        """The tickets of the nodes' last replies if they name each ordered pair once, each by its
        receiver; else none (the next session then sends hellos)."""
        if not any(replies[n].tickets for n in nodes):   # a sum's: none
            return ()
        tickets = [t for n in nodes for t in replies[n].tickets if t.receiver == n]
        pairs = {(t.receiver, t.sender) for t in tickets}
        wanted = {(a, b) for a in nodes for b in nodes if a != b}
        return tuple(tickets) if len(tickets) == len(wanted) and pairs == wanted else ()

    def after(self, replies: Mapping[str, mpc_pb2.RunReply], nodes: Sequence[str]) -> "_Known":
        """What the nodes' last replies to a one-round session of this query report: their shapes, keys
        and tickets; with the requests made for this one, if the shapes and keys are as stated in it."""
        shapes = {n: replies[n].shape for n in nodes}
        keys = {n: dict(replies[n].key_ids) for n in nodes}
        tickets = _Known.complete_tickets(replies, nodes)
        if shapes == self.shapes and keys == self.keys:
            return _Known(self.shapes, self.keys, tickets, self._requests)
        return _Known(shapes, keys, tickets)

    def requests(self, nodes: Sequence[str], frac_bits: int, length: int, keyed: bool) -> dict[str, bytes]:
        """Each node's RunRequest for this query without its session's fields (prepare and tickets, to be
        appended serialized: protobuf merges the two): the shapes, the scale, the output length and, keyed,
        the pair keys to use. Made once.

        Returns: bytes by node.
        """
        made = self._requests.get((tuple(nodes), frac_bits, length, keyed))
        if made is None:
            key_ids = self.key_ids(nodes) if keyed else {}
            made = self._requests[(tuple(nodes), frac_bits, length, keyed)] = {
                n: mpc_pb2.RunRequest(shapes=self.shapes, frac_bits=frac_bits, length=length,
                                      key_ids=key_ids.get(n, {})).SerializeToString() for n in nodes}
        return made

    def key_ids(self, nodes: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """Per node, the key to use with each peer, if every pair holds the same newest key; else {}."""
        for a in nodes:
            for b in nodes:
                if a != b and (not self.keys.get(a, {}).get(b) or self.keys[a][b] != self.keys.get(b, {}).get(a)):
                    return {}
        return {a: {b: self.keys[a][b] for b in nodes if b != a} for a in nodes}


class _RunStream(LongCall):
    """The long-lived Control.Run stream to one node. Requests, serialized, are queued (`send`) and written
    in order by one writer task; each reply goes to the handler of its session (by session id), and a
    stream that ends, or a request that cannot be written, is told to the handlers (the exception)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sessions: dict[str, Callable[[mpc_pb2.RunReply | BaseException], None]] = {}
        self.unanswered: set[str] = set()   # sessions sent whose last reply has not come (they may run there)
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._closed = False
        # Requests go as bytes, made by the one-round path from a query's cached parts (_Known.requests).
        # Registered, as the generated stub registers it.
        super().__init__(channel.stream_stream(RUN_METHOD, request_serializer=None,
                                               response_deserializer=mpc_pb2.RunReply.FromString,
                                               _registered_method=True)())
        self.writer = asyncio.ensure_future(self._write_queued())

    def send(self, session_id: str, request: bytes) -> None:
        """Queue one serialized RunRequest of `session_id`, to be written after those queued before it."""
        self._outbox.append((session_id, request))
        self.unanswered.add(session_id)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _write_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            while self._outbox and not self._closed:
                session_id, request = self._outbox.popleft()
                if session_id not in self.sessions:   # its session was given up while this waited: never sent
                    self.unanswered.discard(session_id)
                    continue
                try:
                    await self.write(request)
                except Exception as exc:   # the stream ended (its reader tells every session so too)
                    handler = self.sessions.get(session_id)
                    if handler is not None:
                        handler(exc)
            if not self._closed:
                self._wake = loop.create_future()
                await self._wake

    def route(self, message: Any) -> None:
        if message.code or message.HasField("shape"):   # a refusal, or a share's last chunk
            self.unanswered.discard(message.session_id)
        handler = self.sessions.get(message.session_id)
        if handler is not None:
            handler(message)

    def fail(self, failure: BaseException) -> None:
        for handler in list(self.sessions.values()):
            handler(failure)

    def close(self) -> None:
        """End the call: its reader stops, and its writer once a write in progress has ended (it ends at
        once, the call being over). Cancelled mid-write, the writer would leave gRPC an operation to
        complete after its event loop may have closed ("Event loop is closed" from gRPC's poller)."""
        super().close()
        self._stop_writing()

    def _stop_writing(self) -> None:
        self._closed = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def end(self, timeout: float) -> None:
        """End the stream: once the node has answered every session sent on it, as gRPC ends a call
        (LongCall.end: the node's handler returns, and gRPC has answered every operation of the call when
        this does); else at once (`close`: the node aborts the sessions it still runs). Its writer has
        ended when this returns."""
        if self.sessions or self.unanswered:
            self.close()
        else:
            self._stop_writing()
            await super().end(timeout)   # after the writer's write in progress, if any (it holds the turn)
        await asyncio.wait([self.writer], timeout=timeout)   # ends at once: the call is over
        self.writer.cancel()
        await asyncio.gather(self.reader, self.writer, return_exceptions=True)


class _Round:
    """The wait for one one-round session's output shares: every node's replies, handed in by its Run
    stream (`handler`), are checked and added into `total` as they come. Over when every node has sent its
    share, or, after a node failed, when the others have too or FAILURE_GRACE_S has passed (`wait`); at
    `timeout` a node that has not answered fails (PeerUnavailable, "did not answer in time")."""

    def __init__(self, coordinator: "Coordinator", session_id: str, length: int, total: "Words", xor: bool) -> None:
        self.coordinator = coordinator
        self.session_id = session_id
        self.length = length
        self.total = total
        self.xor = xor
        self.received: dict[str, int] = {}   # node -> share words added so far
        self.ended: dict[str, mpc_pb2.RunReply | BaseException] = {}   # the last chunk, or why the node failed
        self.stale: set[str] = set()   # nodes that refused the session as stale (StaleShape)
        loop = asyncio.get_running_loop()
        self._first: asyncio.Future[None] = loop.create_future()   # a node failed, or all are done
        self._all: asyncio.Future[None] = loop.create_future()

    def handler(self, name: str) -> Callable[[mpc_pb2.RunReply | BaseException], None]:
        """What node `name`'s Run stream hands this session's replies (or its failure) to."""
        self.received[name] = 0
        return lambda item: self._take(name, item)

    def _take(self, name: str, item: mpc_pb2.RunReply | BaseException) -> None:
        if name in self.ended:
            return
        try:
            if isinstance(item, (grpc.aio.AioRpcError, MpcError)):   # already says which node and why
                raise item
            if isinstance(item, BaseException):
                raise PeerUnavailable(f"node {name} at {self.coordinator.cluster.node(name).address}: {item}")
            if item.code or item.error:   # a refusal (an error without its code is one too, not a share)
                if item.stale:
                    self.stale.add(name)
                    raise StaleShape(f"node {name}: {item.error}")
                raise SessionFailed(f"node {name} refused: {item.error} [{item.code or 'no code'}]")
            received = self.received[name] = self.coordinator._add_chunk(self.session_id, name, item, self.length,
                                                                         self.received[name], self.total, self.xor)
            if received < self.length:
                return
            if not item.HasField("shape"):   # the next session of the query is stated from it
                raise SessionFailed(f"node {name} sent the last chunk of its share without its shape")
            self.ended[name] = item
        except Exception as exc:
            self.ended[name] = exc
        if len(self.ended) == len(self.received) and not self._all.done():
            self._all.set_result(None)
        if (self._all.done() or not isinstance(self.ended[name], mpc_pb2.RunReply)) and not self._first.done():
            self._first.set_result(None)

    def _expire(self) -> None:
        for name in self.received:
            if name not in self.ended:
                address = self.coordinator.cluster.node(name).address
                self._take(name, PeerUnavailable(f"node {name} at {address} did not answer in time"))

    async def wait(self, timeout: float) -> dict[str, mpc_pb2.RunReply | BaseException]:
        """Returns: by node, its share's last chunk or why it failed (a node still silent when the wait
        ended after a failure is left out)."""
        deadline = asyncio.get_running_loop().call_later(timeout, self._expire)
        try:
            await self._first
            if not self._all.done():   # a node failed: failures with one cause come together
                await asyncio.wait((self._all,), timeout=FAILURE_GRACE_S)
        finally:
            deadline.cancel()
        return dict(self.ended)


class _Stale(Exception):
    """A one-round session was refused as stale by some node: prepare in two rounds instead."""


def _evidence_for(evidence: dict[str, mpc_pb2.Evidence], recipient: str) -> dict[str, mpc_pb2.Evidence]:
    """What one node needs of the relayed evidence: every node's shape and its tag for `recipient`
    (n entries of one tag each, not n(n-1) tags: the request stays small for many nodes)."""
    return {n: mpc_pb2.Evidence(length=e.length, frac_bits=e.frac_bits, input_version=e.input_version,
                                tags={recipient: e.tags[recipient]} if recipient in e.tags else {})
            for n, e in evidence.items()}


class Coordinator:
    """Runs computations over the nodes of a cluster file (use as an async context manager)."""

    def __init__(self, cluster: ClusterConfig, *, observer: ShareObserver | None = None,
                 nodes: Sequence[str] | None = None, progress: ProgressCallback | None = None,
                 keyed: bool = True, one_round: bool = True) -> None:
        """Args:
            observer: sees every share chunk received (tests).
            nodes: the participants (default: every node of the cluster file, in order).
            progress: called as a session advances (the nodes then also report how much they
                have exchanged, about every 0.25 s).
            keyed: take the keyed path (mpc/protocols/pairing.py) whenever every pair of nodes holds
                the same pair key; False: always let the nodes exchange digests and seeds (benchmarks
                compare the two; both are equally private).
            one_round: once a query has run, run it again in one message per node (Control.Run: the
                shapes the nodes reported stated back, prepare and compute at once; a node whose input
                changed refuses before anything is shared, and the query is prepared in two rounds again).
                False: always two rounds (Prepare, then Compute).
        """
        me = cluster.require_coordinator()
        self.cluster = cluster
        self.nodes = tuple(nodes) if nodes is not None else tuple(cluster.nodes)
        for name in self.nodes:
            cluster.node(name)
        self._tls = TlsMaterial.load(cluster.ca, me.cert, me.key)
        self.channels = Channels(cluster, self._tls)
        self.observer = observer
        self.progress = progress
        self.keyed = keyed
        self.one_round = one_round
        self._known: dict[tuple[Any, ...], _Known] = {}
        self._runs: dict[str, _RunStream] = {}

    async def __aenter__(self) -> "Coordinator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the Run streams and the channels to the nodes."""
        runs, self._runs = list(self._runs.values()), {}
        await asyncio.gather(*(run.end(self.cluster.connect_timeout_s) for run in runs))
        await self.channels.close()

    def _check_own_tls(self, reasons: str) -> None:
        """Every node was unreachable: perhaps because the coordinator's own key is not its certificate's
        (gRPC says only "unreachable"). Checked here, not at start, so that `mpc status` and `mpc health`
        stay light (tests/unit/test_startup.py).

        Raises: ConfigError naming the files, if so.
        """
        me = self.cluster.require_coordinator()
        try:
            self._tls.check_pair(me.cert, me.key)
        except ConfigError as exc:
            raise ConfigError(f"coordinator: {exc}, so no node can be reached ({reasons})") from None

    def _stub(self, name: str) -> mpc_pb2_grpc.ControlStub:
        return self.channels.stub(name, mpc_pb2_grpc.ControlStub)

    def _explain(self, name: str, exc: BaseException) -> str:
        if isinstance(exc, grpc.aio.AioRpcError):
            return describe_rpc_error(self.cluster.node(name), exc)
        if isinstance(exc, MpcError):
            return str(exc)
        return f"node {name}: {type(exc).__name__}: {exc}"

    async def _abort_all(self, session_id: str, reason: str, skip: frozenset[str] = frozenset()) -> None:
        async def abort(name: str) -> None:
            try:
                await self._stub(name).Abort(mpc_pb2.AbortRequest(session_id=session_id, reason=reason),
                                             timeout=self.cluster.connect_timeout_s)
            except grpc.aio.AioRpcError:
                pass  # the node is down or never had the session; its deadline drops it anyway
        await asyncio.gather(*(abort(n) for n in self.nodes if n not in skip))

    async def _gather(self, session_id: str, calls: dict[str, Any]) -> dict[str, Any]:
        """Await one call per node; on any failure abort the session everywhere and raise (as `_failed`)."""
        tasks = {n: asyncio.ensure_future(c) for n, c in calls.items()}
        try:
            _, pending = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
            if pending:
                # Failures with one cause come together: give them a moment, to name them all.
                await asyncio.wait(pending, timeout=FAILURE_GRACE_S)
        finally:
            # Calls still running are cancelled: a node drops a session whose Compute call goes
            # away at once, instead of waiting for a lost peer until the session's deadline.
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        failures = [(n, t.exception()) for n, t in tasks.items() if not t.cancelled() and t.exception() is not None]
        if not failures:
            return {n: t.result() for n, t in tasks.items()}
        # A node whose call was cancelled has dropped the session already (or is hung).
        await self._failed(session_id, failures, len(tasks), frozenset(n for n, t in tasks.items() if t.cancelled()))

    async def _failed(self, session_id: str, failures: Sequence[tuple[str, BaseException | None]], calls: int,
                      silent: frozenset[str]) -> NoReturn:
        """A session failed at the nodes named (of `calls`): abort it at every node but the `silent` ones
        and those that could not be reached, and raise.

        Raises: PeerUnavailable if every failure is a node that could not be reached (having checked the
        coordinator's own key if no node could), else SessionFailed, each naming every node's reason;
        a failure that is none of ours (a bug) as it is.
        """
        for _, r in failures:
            if not isinstance(r, (grpc.aio.AioRpcError, MpcError, asyncio.TimeoutError)):
                raise r  # type: ignore[misc]  # None is not among failures
        reasons = "; ".join(self._explain(n, r) for n, r in failures if r is not None)
        # A node that did not answer would not answer an Abort either: do not wait for it twice.
        silent = silent | frozenset(n for n, r in failures if is_unreachable(r))
        await self._abort_all(session_id, reasons, skip=silent)
        unreachable = all(is_unreachable(r) or isinstance(r, PeerUnavailable) for _, r in failures)
        if unreachable and len(failures) == calls:
            self._check_own_tls(reasons)
        cls = PeerUnavailable if unreachable else SessionFailed
        raise cls(f"session {session_id} failed, nothing was revealed: {reasons}")

    async def _collect(self, session_id: str, name: str, frac_bits: int, length: int, versions: dict[str, int],
                       lengths: dict[str, int], total: Words, timeout: float, xor: bool,
                       tracker: _Tracker | None, evidence: dict[str, mpc_pb2.Evidence]) -> None:
        """Stream one node's output share and add (or, for bit shares, XOR) it into `total`."""
        call = self._stub(name).Compute(mpc_pb2.ComputeRequest(session_id=session_id, frac_bits=frac_bits,
                                                               length=length, progress=tracker is not None,
                                                               input_versions=versions, lengths=lengths,
                                                               evidence=_evidence_for(evidence, name)),
                                        timeout=timeout)
        expected = 0
        async for chunk in call:
            if chunk.HasField("progress"):
                if chunk.session_id != session_id or chunk.node != name or chunk.words or expected:
                    raise SessionFailed(f"node {name} sent a malformed progress report")
                if tracker is not None:
                    p = chunk.progress
                    tracker.peers[name] = (p.peer_bytes_sent, p.peer_messages)
                    tracker.emit()
                continue
            expected = self._add_chunk(session_id, name, chunk, length, expected, total, xor)
            if tracker is not None:
                tracker.share_bytes += len(chunk.words)
                if expected == length:
                    tracker.done.add(name)
                tracker.emit()
        if expected != length:
            raise SessionFailed(f"node {name} sent {expected} share words, expected {length}")

    def _add_chunk(self, session_id: str, name: str, chunk: mpc_pb2.ShareChunk | mpc_pb2.RunReply, length: int,
                   expected: int, total: Words, xor: bool) -> int:
        """Check one chunk of a node's output share and add (or, for bit shares, XOR) it into `total`.

        Returns: the words received so far. Raises: SessionFailed naming the node for a malformed chunk.
        """
        from mpc.ring import words_from_bytes
        if chunk.session_id != session_id or chunk.node != name or chunk.total_length != length:
            raise SessionFailed(f"node {name} sent a share chunk for another session, node or length")
        if chunk.offset != expected:
            raise SessionFailed(f"node {name} sent share words from {chunk.offset}, expected {expected}")
        data = chunk.words
        try:
            words = words_from_bytes(data) if len(data) != 8 else None   # one word (a scalar's): no array
        except ValueError as exc:
            raise SessionFailed(f"node {name} sent a malformed share chunk: {exc}") from None
        size = len(data) // 8
        if size == 0 or expected + size > length:
            raise SessionFailed(f"node {name} sent {expected + size} share words, expected {length}")
        if self.observer is not None:
            self.observer(session_id, name, data)
        if words is None:
            word = int.from_bytes(data, "little")
            total[expected] = int(total[expected]) ^ word if xor else (int(total[expected]) + word) % (1 << 64)
        elif xor:
            total[expected:expected + size] ^= words
        else:
            total[expected:expected + size] += words
        return expected + size

    def _run_stream(self, name: str) -> _RunStream:
        stream = self._runs.get(name)
        if stream is None or stream.failure is not None:
            if stream is not None:
                stream.close()
            stream = self._runs[name] = _RunStream(self.channels.channel(name))
        return stream

    async def _open_one_round(self, protocol: Entry[Any], params: Any, input_name: str, request: mpc_pb2.PrepareRequest,
                              timeout: float, query: tuple[Any, ...], known: _Known) -> tuple[Opened, _Known]:
        """The one-round path: every node prepares and computes at once, told every node's shape as
        they reported it for this query before (and their pair keys). Raises: _Stale if a node's
        shape or key is not as stated (every node has aborted then); as `open` otherwise."""
        import numpy as np

        from mpc.protocols.catalogue import Opened
        session_id = request.session_id
        lengths = {n: int(known.shapes[n].length) for n in self.nodes}
        length = protocol.output_length(params, lengths)
        frac_bits = max(int(known.shapes[n].frac_bits) for n in self.nodes)
        total = np.zeros(length, dtype=np.uint64)
        # Each ticket is stated once: a session running alongside this one of the same query sends hellos.
        tickets, self._known[query] = known.tickets, _Known(known.shapes, known.keys, (), known._requests)
        # Each node's request: its part that is the same every time (cached), then this session's.
        # A DP release is never a repeat, and a keyed sum runs only as one (mpc/protocols/pairing.py).
        own = known.requests(self.nodes, frac_bits, length, self.keyed and protocol.spend(params) is None)
        this = mpc_pb2.RunRequest(prepare=request, tickets=tickets).SerializeToString()
        waiting = _Round(self, session_id, length, total, protocol.combine == "xor")
        streams = {n: self._run_stream(n) for n in self.nodes}
        try:
            for name, stream in streams.items():
                stream.sessions[session_id] = waiting.handler(name)
                stream.send(session_id, own[name] + this)
            ended = await waiting.wait(timeout + COMPUTE_GRACE_S)
        finally:
            for stream in streams.values():
                stream.sessions.pop(session_id, None)
        failures = [(n, r) for n, r in ended.items() if isinstance(r, BaseException)]
        if failures:
            # A node still silent when the grace ran out is sent an Abort too: a one-round session goes on
            # at a node when our wait for it ends (a Compute call that goes away ends it there).
            try:
                await self._failed(session_id, failures, len(self.nodes), frozenset())
            except SessionFailed:
                if waiting.stale:
                    raise _Stale() from None
                raise
        last = {n: r for n, r in ended.items() if isinstance(r, mpc_pb2.RunReply)}
        now = known.after(last, self.nodes)
        opened = Opened(session_id, input_name, self.nodes, {n: int(now.shapes[n].length) for n in self.nodes},
                        total, frac_bits, all(now.shapes[n].is_scalar for n in self.nodes))
        return opened, now

    async def run(self, protocol: Entry[Any], params: Any, input_name: str, *,
                  timeout_s: float | None = None) -> Result:
        """Run one session of a catalogue protocol over all nodes and decode its output.

        Returns: the protocol's result.
        Raises: PeerUnavailable naming the nodes that could not be reached; SessionFailed
        naming the node and cause otherwise (input missing, lengths differ, policy, ...).
        In every failure the session is aborted at every node before anything is opened.
        """
        protocol.check_params(params)
        opened = await self.open(protocol, params, input_name, timeout_s=timeout_s)
        return protocol.decode(params, opened)

    async def open(self, protocol: Entry[Any], params: Any, input_name: str, *,
                   timeout_s: float | None = None) -> Opened:
        """Prepare a session on every node, collect one output share from each and combine them.

        Returns: the combined output, before decoding. Raises: as `run`.
        """
        from mpc.protocols.catalogue import params_to_wire
        session_id = secrets.token_hex(16)
        if timeout_s is not None and not 0 < timeout_s <= MAX_SESSION_TIMEOUT_S:   # NaN fails this too
            raise InputError(f"session timeout must be above 0 and at most {MAX_SESSION_TIMEOUT_S:.0f} seconds, "
                             f"got {timeout_s!r}")
        timeout = timeout_s or self.cluster.session_timeout_s
        wire = {}
        for name, value in params_to_wire(params).items():
            if isinstance(value, bool):
                wire[name] = mpc_pb2.Param(flag=value)
            elif isinstance(value, float):
                wire[name] = mpc_pb2.Param(real=value)
            elif isinstance(value, int):
                wire[name] = mpc_pb2.Param(integer=value)
            else:
                wire[name] = mpc_pb2.Param(integers=mpc_pb2.IntegerList(values=list(value or ())))
        request = mpc_pb2.PrepareRequest(session_id=session_id, protocol=protocol.wire_id, input_name=input_name,
                                         participants=self.nodes, timeout_ms=max(1, int(timeout * 1000)), params=wire)
        query = (protocol.wire_id, tuple(sorted((k, v.SerializeToString(deterministic=True)) for k, v in wire.items())),
                 input_name, self.nodes)
        known = self._known.get(query) if self.one_round and self.progress is None else None
        while known is not None:
            try:
                opened, self._known[query] = await self._open_one_round(protocol, params, input_name, request,
                                                                        timeout, query, known)
                return opened
            except _Stale:   # an input was replaced, a node restarted, or a pool ticket is gone
                session_id = request.session_id = secrets.token_hex(16)
                if known.tickets:   # once more in one round, with hellos, before preparing anew
                    known = replace(known, tickets=())
                    continue
                self._known.pop(query, None)   # sessions of the query side by side: the first to find it stale drops it
                known = None
        return await self._two_rounds(protocol, params, input_name, request, timeout, query, keyed=self.keyed)

    async def _two_rounds(self, protocol: Entry[Any], params: Any, input_name: str, request: mpc_pb2.PrepareRequest,
                          timeout: float, query: tuple[Any, ...], *, keyed: bool) -> Opened:
        """The two-round path: prepare at every node, then compute (keyed: with every node's evidence,
        if every pair named a key). Raises: as `open`."""
        import numpy as np

        from mpc.protocols.catalogue import Opened
        session_id = request.session_id
        connect = self.cluster.connect_timeout_s
        tracker = None if self.progress is None else _Tracker(session_id, len(self.nodes), self.progress)
        if tracker is not None:
            tracker.emit()
        prepared: dict[str, mpc_pb2.PrepareReply] = await self._gather(
            session_id, {n: self._stub(n).Prepare(request, timeout=connect) for n in self.nodes})
        wrong = [n for n in self.nodes if prepared[n].session_id != session_id or prepared[n].node != n]
        if wrong:
            await self._abort_all(session_id, "a prepare reply for another session or node")
            raise SessionFailed(f"session {session_id}: node {wrong[0]} answered its prepare for session "
                                f"{quoted(prepared[wrong[0]].session_id, 40)} as node "
                                f"{quoted(prepared[wrong[0]].node, 40)}; nothing was shared")
        lengths = {n: int(prepared[n].length) for n in self.nodes}
        if protocol.lengths == "equal" and len(set(lengths.values())) != 1:
            await self._abort_all(session_id, "input lengths differ")
            shown = ", ".join(f"{n} {ln}" for n, ln in lengths.items())
            raise SessionFailed(f"session {session_id}: input {input_name!r} has different lengths at the nodes "
                                f"({shown} words); nothing was shared")
        scalars = sorted(n for n, r in prepared.items() if r.is_scalar)
        if protocol.shapes_match and scalars and len(scalars) != len(prepared):
            await self._abort_all(session_id, "scalar and vector inputs mixed")
            vectors = sorted(set(prepared) - set(scalars))
            raise SessionFailed(f"session {session_id}: input {input_name!r} is a scalar at {', '.join(scalars)} "
                                f"but a vector at {', '.join(vectors)}; nothing was shared")
        try:
            length = protocol.output_length(params, lengths)
        except InputError as exc:
            await self._abort_all(session_id, str(exc))
            raise SessionFailed(f"session {session_id}: {exc}; nothing was shared") from None
        frac_bits = max(r.frac_bits for r in prepared.values())
        versions = {n: r.input_version for n, r in prepared.items()}
        total = np.zeros(length, dtype=np.uint64)
        if tracker is not None:
            tracker.phase, tracker.share_bytes_total = "compute", 8 * length * len(self.nodes)
            tracker.emit()
        # The nodes end the session at `timeout` themselves and say whom they waited for; our own
        # deadline comes a little later, so that their answer is what the caller sees.
        evidence = _relayed_evidence(prepared, self.nodes) if keyed else {}
        try:
            await self._gather(session_id, {n: self._collect(session_id, n, frac_bits, length, versions, lengths,
                                                             total, timeout + COMPUTE_GRACE_S,
                                                             protocol.combine == "xor", tracker, evidence)
                                            for n in self.nodes})
        except SessionFailed as exc:
            # A node whose release would count or spend refuses the keyed path (every node has aborted
            # then, nothing was revealed): the session runs again unkeyed, recorded only once all agree.
            from mpc.protocols.pairing import KEYED_REPEATS_ONLY
            if evidence and KEYED_REPEATS_ONLY in str(exc):
                request.session_id = secrets.token_hex(16)
                return await self._two_rounds(protocol, params, input_name, request, timeout, query, keyed=False)
            raise
        self._known[query] = _Known(
            {n: mpc_pb2.Shape(length=r.length, frac_bits=r.frac_bits, is_scalar=r.is_scalar,
                              input_version=r.input_version) for n, r in prepared.items()},
            {n: {peer: tag.key_id for peer, tag in e.tags.items()} for n, e in evidence.items()})
        return Opened(session_id, input_name, self.nodes, lengths, total, frac_bits,
                      all(r.is_scalar for r in prepared.values()))

    async def noise(self, protocol: Entry[Any], input_name: str, privacy: Privacy | None) -> dict[str, Any]:
        """The parameters of a DP release's noise (mpc/dp.py): from (epsilon, delta) and, for a sum,
        every node's declared bounds (public: Status), the unit, sensitivity and coins.

        Returns: keyword arguments for the protocol's parameters ({} for an exact release).
        Raises: InputError naming the node and input (missing, no bounds) or the parameter at fault;
        PeerUnavailable if a node cannot be asked. Nothing has been shared when it raises.
        """
        from mpc import dp
        from mpc.protocols.catalogue import count_budget
        if privacy is None:
            return {}
        privacy.check()
        fields: dict[str, Any] = {"epsilon": float(privacy.epsilon), "delta": float(privacy.delta),
                                  "local_noise": privacy.noise == "local"}
        if protocol.counts:
            return fields | {"sensitivity": 1, "coins": dp.calibrate(*count_budget(fields["epsilon"], fields["delta"]), 1)}
        lows: list[Fraction] = []
        highs: list[Fraction] = []
        finest = 0
        for node in await self.status():
            if not node.healthy:
                raise PeerUnavailable(f"node {node.name} cannot be asked for the bounds of {input_name!r}: "
                                      f"{node.error}")
            found = next((i for i in node.inputs if i.name == input_name), None)
            if found is None:
                raise InputError(f"input {input_name!r} is not stored at node {node.name} (or its policy does not "
                                 f"offer it); nothing was shared")
            if found.encoded is None:
                raise InputError(f"input {input_name!r} at node {node.name} declares no bounds: a differentially "
                                 f"private release clips to them (store it again with --bounds LO,HI)")
            lows.append(Fraction(found.encoded[0], 1 << found.frac_bits))
            highs.append(Fraction(found.encoded[1], 1 << found.frac_bits))
            finest = min(finest, -found.frac_bits)
        unit, sensitivity = dp.choose_unit((min(lows), max(highs)), finest)
        coins = dp.calibrate(fields["epsilon"], fields["delta"], sensitivity)
        return fields | {"unit": unit, "sensitivity": sensitivity, "coins": coins}

    async def sum(self, input_name: str, *, privacy: Privacy | None = None,
                  timeout_s: float | None = None) -> SumResult:
        """Secure sum of `input_name` over all nodes (elementwise for vectors); with `privacy` a
        differentially private one. Raises: as `run`."""
        from mpc.protocols.catalogue import SumParams, entry
        protocol = entry("sum")
        params = SumParams(**await self.noise(protocol, input_name, privacy))
        result = await self.run(protocol, params, input_name, timeout_s=timeout_s)
        assert isinstance(result, SumResult)
        return result

    async def average(self, input_name: str, *, elementwise: bool = False, privacy: Privacy | None = None,
                      timeout_s: float | None = None) -> AverageResult:
        """Secure average: sum of values and of record counts, opened together (both revealed); with
        `privacy` the sums are noised. Raises: as `run`."""
        from mpc.protocols.catalogue import AverageParams, entry
        protocol = entry("average")
        params = AverageParams(elementwise, **await self.noise(protocol, input_name, privacy))
        result = await self.run(protocol, params, input_name, timeout_s=timeout_s)
        assert isinstance(result, AverageResult)
        return result

    async def histogram(self, input_name: str, edges: Sequence[int], *, privacy: Privacy | None = None,
                        timeout_s: float | None = None) -> HistogramResult:
        """Records per public bin [e0, e1), ..., [e(k-1), ek] over every node; with `privacy` noisy counts.

        Raises: as `run`; InputError for bins that are unsorted, overlap, or too many.
        """
        from mpc.protocols.catalogue import HistogramParams, entry
        protocol = entry("histogram")
        params = HistogramParams(tuple(int(e) for e in edges), **await self.noise(protocol, input_name, privacy))
        result = await self.run(protocol, params, input_name, timeout_s=timeout_s)
        assert isinstance(result, HistogramResult)
        return result

    async def vote(self, input_name: str, *, threshold: int | None = None,
                   timeout_s: float | None = None) -> VoteResult:
        """Threshold vote over the ballots stored as `input_name`: only YES/NO is opened.

        Without a threshold the rule is "at least half of the ballots cast" (2T >= N, neither T
        nor N is opened); with one it is T >= threshold. Raises: as `run`.
        """
        from mpc.protocols.catalogue import VoteParams, entry
        result = await self.run(entry("vote"), VoteParams(threshold), input_name, timeout_s=timeout_s)
        assert isinstance(result, VoteResult)
        return result

    async def collection_sum(self, collection: str, *, timeout_s: float | None = None) -> CollectionSumResult:
        """The sum of a closed collection's valid submissions (mpc/protocols/collection.py), and how many
        were complete and valid. Raises: as `run`."""
        from mpc.protocols.catalogue import NoParams, entry
        result = await self.run(entry("collection-sum"), NoParams(), collection, timeout_s=timeout_s)
        assert isinstance(result, CollectionSumResult)
        return result

    async def collection_vote(self, collection: str, *, timeout_s: float | None = None) -> VoteResult:
        """A vote over a closed ballot collection: only whether at least half of the valid ballots are yes."""
        from mpc.protocols.catalogue import NoParams, entry
        result = await self.run(entry("collection-vote"), NoParams(), collection, timeout_s=timeout_s)
        assert isinstance(result, VoteResult)
        return result

    async def collection_at_least(self, collection: str, threshold: int, *,
                                  timeout_s: float | None = None) -> ThresholdResult:
        """[sum of a closed collection's valid submissions >= threshold], element by element."""
        from mpc.protocols.catalogue import ThresholdParams, entry
        result = await self.run(entry("collection-threshold"), ThresholdParams(threshold), collection,
                                timeout_s=timeout_s)
        assert isinstance(result, ThresholdResult)
        return result

    async def collection_plurality(self, collection: str, options: int, *, winner_only: bool = False,
                                   privacy: Privacy | None = None, timeout_s: float | None = None) -> PluralityResult:
        """A plurality vote over a closed option collection: the valid votes per option (noisy with
        `privacy`, its noise made jointly), or the winning option alone. Raises: as `run`."""
        from mpc.protocols.catalogue import PluralityParams, entry
        protocol = entry("collection-plurality")
        params = PluralityParams(options, winner_only, **await self.noise(protocol, collection, privacy))
        result = await self.run(protocol, params, collection, timeout_s=timeout_s)
        assert isinstance(result, PluralityResult)
        return result

    async def collection_auction(self, collection: str, *, second_price: bool = False,
                                 timeout_s: float | None = None) -> CollectionAuctionResult:
        """A sealed-bid auction over a closed range collection of bids: the winning credential id and
        the highest (or second-highest) valid bid. Raises: as `run`."""
        from mpc.protocols.catalogue import AuctionParams, entry
        result = await self.run(entry("collection-auction"), AuctionParams(second_price), collection,
                                timeout_s=timeout_s)
        assert isinstance(result, CollectionAuctionResult)
        return result

    async def at_least(self, input_name: str, threshold: int, *, timeout_s: float | None = None) -> ThresholdResult:
        """Batched [sum over nodes >= threshold] for every element of a vector input. Raises: as `run`."""
        from mpc.protocols.catalogue import ThresholdParams, entry
        result = await self.run(entry("threshold"), ThresholdParams(threshold), input_name, timeout_s=timeout_s)
        assert isinstance(result, ThresholdResult)
        return result

    async def auction(self, input_name: str, *, second_price: bool = False,
                      timeout_s: float | None = None) -> AuctionResult:
        """Sealed-bid auction over every node's bids: the winner and the highest (or second-highest) bid.

        Raises: as `run`.
        """
        from mpc.protocols.catalogue import AuctionParams, entry
        result = await self.run(entry("auction"), AuctionParams(second_price), input_name, timeout_s=timeout_s)
        assert isinstance(result, AuctionResult)
        return result

    async def clearing_price(self, input_name: str, prices: list[int], *,
                             timeout_s: float | None = None) -> ClearingResult:
        """The first price of the grid where total net demand is at most 0 (or none). Raises: as `run`."""
        from mpc.protocols.catalogue import ClearingParams, entry
        result = await self.run(entry("clearing-price"), ClearingParams(tuple(prices)), input_name,
                                timeout_s=timeout_s)
        assert isinstance(result, ClearingResult)
        return result

    async def plurality(self, input_name: str, options: int, *, winner_only: bool = False,
                        privacy: Privacy | None = None, timeout_s: float | None = None) -> PluralityResult:
        """Plurality vote over option indices: the count per option (noisy with `privacy`), or the
        winner alone. Raises: as `run`."""
        from mpc.protocols.catalogue import PluralityParams, entry
        protocol = entry("plurality")
        params = PluralityParams(options, winner_only, **await self.noise(protocol, input_name, privacy))
        result = await self.run(protocol, params, input_name, timeout_s=timeout_s)
        assert isinstance(result, PluralityResult)
        return result

    async def intersect(self, input_name: str, *, reveal: str = "size", to: Sequence[str] = (),
                        timeout_s: float | None = None) -> IntersectionResult:
        """Private set intersection of the sets stored as `input_name` at every node.

        reveal: "size" (default), "members" (the common identifiers go to the nodes named in `to`,
        never to the coordinator) or "sum" (the size and the sum of the associated values over
        the intersection). Raises: as `run`; InputError for an unknown reveal or recipient.
        """
        from mpc.protocols.catalogue import IntersectEntry, IntersectParams, entry
        modes = ("size", "members", "sum")
        if reveal not in modes:
            raise InputError(f"reveal must be one of {', '.join(modes)}, got {reveal!r}")
        order = sorted(self.nodes)
        unknown = [n for n in to if n not in order]
        if unknown:
            raise InputError(f"--to names {', '.join(unknown)}, not nodes of this session ({', '.join(order)})")
        params = IntersectParams(modes.index(reveal), tuple(order.index(n) for n in to))
        intersect = entry("intersect")
        assert isinstance(intersect, IntersectEntry)
        intersect.validate(params)
        intersect.check_recipients(params, len(order))
        result = await self.run(intersect, params, input_name, timeout_s=timeout_s)
        assert isinstance(result, IntersectionResult)
        return result

    async def status(self, nodes: Sequence[str] | None = None) -> list[NodeStatus]:
        """Ask every node (or those named) for its status (a down node is reported, not raised).

        Returns: one NodeStatus per node, in cluster order.
        """
        async def one(name: str) -> NodeStatus:
            node = self.cluster.node(name)
            timeout = self.cluster.connect_timeout_s
            try:
                health = await self.channels.stub(name, health_pb2_grpc.HealthStub).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout)
                serving = health.status == health_pb2.HealthCheckResponse.SERVING
                if not serving:  # e.g. shutting down: it answers, but takes no new sessions
                    return NodeStatus(name, node.address, False, health=health_pb2.HealthCheckResponse.ServingStatus
                                      .Name(health.status), error=f"node {name} at {node.address} is not serving")
                r = await self._stub(name).Status(mpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                health = "WRONG IDENTITY" if is_name_mismatch(exc) else "UNREACHABLE"
                return NodeStatus(name, node.address, False, health=health, error=describe_rpc_error(node, exc))
            inputs = tuple(InputStatus(i.name, None if i.kind in COUNTS_HIDDEN else i.length, i.frac_bits, i.is_scalar,
                                       i.version, i.kind or "number",
                                       (decode_value(i.lo, i.frac_bits), decode_value(i.hi, i.frac_bits))
                                       if i.bounded else None, (i.lo, i.hi) if i.bounded else None, _budget(i))
                           for i in r.inputs)
            collections = tuple(CollectionStatus(c.name, c.kind, c.length, c.min_batch, c.submissions, c.closed)
                                for c in r.collections)
            return NodeStatus(name, node.address, True, r.version, inputs, r.active_sessions, r.cert_not_after,
                              health="SERVING", collections=collections)
        return list(await asyncio.gather(*(one(n) for n in (self.nodes if nodes is None else nodes))))
