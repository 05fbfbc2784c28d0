"""A node's sessions: policy checks, the protocol engine, deadlines and clean-up.

This is the part of the daemon that knows nothing of gRPC: the servicers in
mpc/node/servicer.py decode a request, check the caller's role, and call in here with the
caller's certificate identity. Peer messages leave through a `PeerSender`.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mpc import MAX_SESSION_TIMEOUT_S, __version__, aio
from mpc.config import INPUT_NAME, NODE_NAME, ClusterConfig, NodeConfig
from mpc.errors import (
    AuthError,
    Busy,
    InputError,
    LocalProtocolError,
    MpcError,
    PeerUnavailable,
    PolicyError,
    RemoteProtocolError,
    RoundMismatch,
    SessionClosed,
    SessionFailed,
    StaleShape,
    StoreError,
    UnknownSession,
    quoted,
)
from mpc.node.metrics import NodeMetrics
from mpc.node.releases import Query, ReleaseBook
from mpc.pki import Identity
from mpc.prg import Rng, SystemRng
from mpc.events import Keep, Output, Send
from mpc.ot.pool import POOL_CHANNEL, STEP_FILL, TICKET_ID_BYTES, Reservation, RotPools, Segment, \
    segments_from_bytes, segments_to_bytes
from mpc.ot.triples import OtSetups
from mpc.protocols.agreement import STEP_DIGEST, AgreedParty, session_digest, session_digests
from mpc.protocols.pairing import KEYED_REPEATS_ONLY, Evidence, PairKey, PairKeys, check_evidence
from mpc.protocols.compute import ComputeParty, Pooled
from mpc.protocols.sum import SecureSumParty, keyed_share, keyed_word
from mpc.protocols.catalogue import NAMES, Contributing, Declared, EngineArgs, Entry, describe_params, users
from mpc.protocols.collection import CollectionSource
from mpc.ring import Words, words_to_bytes
from mpc.store import COUNTS_HIDDEN, InputInfo, NewSession, RepeatRecords, Store, StoredInput, Transfer

log = logging.getLogger("mpc.node")

_SESSION_ID = re.compile(r"[0-9a-f]{32}\Z")
MAX_PARTICIPANTS = 256
# Observer of what this node receives from peers: (session, sender, step, payload). Tests
# use it to check that nothing a node receives reveals another party's input.
PeerObserver = Callable[[str, str, str, bytes], None]


MAX_OT_SETUPS_PER_PEER = 4
FILL_TIMEOUT_S = 60.0   # one pool fill's delivery to a peer (mpc/ot/pool.py): 16 MiB at most
FILL_BACKOFF_S = 300.0  # after a failed or refused fill, no fill with that peer and setup for this long
# Peer messages kept, per peer, for a session whose compute has not begun here: a peer that has
# begun sends its digest, hello and sum seed, then waits for our hello.
MAX_EARLY_PER_PEER = 8
_ROUND_SUFFIX = re.compile(r"(/\d+)+\Z")
OUTPUT_SHARE = "output share"
MAX_AUDITED_PARTICIPANTS = 64   # a refused request's participant list is cut to this length
REFUSALS_REMEMBERED = 1024      # refused session ids kept in memory, to refuse their peers' messages at once
TICKETED_QUERIES = 256   # (coordinator, input, query) whose latest pool tickets this node keeps track of
# A one-round session starts at each node when its Run arrives, so a peer's first messages may come
# before this node knows the session: they wait this long for it, at most this many per peer.
SESSION_WAIT_S = 10.0
MAX_WAITING_PER_PEER = 64
# A repeat's records that the store defers (mpc/store/releases.py) are written this soon after the first.
DEFERRED_WRITE_S = 0.05
DEFERRED_RETRY_MAX_S = 5.0   # a failing write of them is tried again at most this far apart
SMALL_INPUT = 4096   # values whose exact contribution is made on the event loop
MAX_REPEAT_PLANS = 64   # statements of keyed one-round sums kept to run their repeats at once (`NodeCore.repeat`)
MAX_PLANS_PER_COORDINATOR = 16   # of them, for one coordinator (its oldest goes first)
MAX_PLAN_STATEMENT = 64 * 1024   # bytes of a statement kept as a plan's key (256 nodes' take about 20 KiB)


def traffic_kind(step: str) -> str:
    """The audit log's kind of a protocol step: its label without round numbers ("ks/3" -> "ks")."""
    return _ROUND_SUFFIX.sub("", step)


class PeerSender(Protocol):
    """Delivers protocol messages to other nodes (mpc/transport/peers.py PeerClient)."""

    def post(self, to: str, session_id: str, step: str, payload: bytes, deadline: float,
             done: Callable[[MpcError | None], None],
             adopt: Callable[[asyncio.Task[None]], None] | None = None) -> None:
        """Queue payload for node `to`, to be delivered before `deadline` (loop time); `done` is later
        told, once, None or PeerUnavailable or SessionFailed naming it. Every call of its own that
        carries the message is given to `adopt` (cancelling it withdraws the message)."""
        ...

    async def send(self, to: str, session_id: str, step: str, payload: bytes, timeout: float) -> None:
        """Send payload to node `to` and wait until it is delivered; raise PeerUnavailable or
        SessionFailed naming it."""
        ...


@dataclass(frozen=True, slots=True)
class Shape:
    """A node's public shape for a session: what it reports at prepare, and what a one-round
    session states for every participant (mpc/coordinator/client.py)."""

    length: int
    frac_bits: int
    is_scalar: bool
    input_version: int

    def __str__(self) -> str:
        kind = "a scalar" if self.is_scalar else f"{self.length} words"
        return f"version {self.input_version}, {kind} at {self.frac_bits} fractional bits"


@dataclass(frozen=True, slots=True)
class Prepared:
    """The public shape a node reports for a prepared session."""

    session_id: str
    node: str
    length: int
    frac_bits: int
    is_scalar: bool
    input_version: int
    evidence: Evidence | None = None     # tags for the keyed path (mpc/protocols/pairing.py)

    @property
    def shape(self) -> Shape:
        """The shape alone."""
        return Shape(self.length, self.frac_bits, self.is_scalar, self.input_version)


@dataclass(frozen=True)
class Ticket:
    """A pool ticket as a one-round request states it or a reply hands it out (mpc/ot/pool.py "Tickets")."""

    receiver: str
    sender: str
    id: bytes
    segments: tuple[Segment, ...]

    @classmethod
    def from_wire(cls, ticket: Any, where: str) -> "Ticket":
        """Parse a PoolTicket. Raises: RemoteProtocolError naming `where` for a malformed one."""
        ident = bytes(ticket.id)
        if len(ident) != TICKET_ID_BYTES:
            raise RemoteProtocolError(f"{where}: a pool ticket id has {TICKET_ID_BYTES} bytes, not {len(ident)}")
        segments, end = segments_from_bytes(bytes(ticket.segments), 0, where)
        if end != len(ticket.segments) or not segments:
            raise RemoteProtocolError(f"{where}: a pool ticket's ranges are malformed")
        return cls(str(ticket.receiver), str(ticket.sender), ident, segments)


@dataclass(eq=False)
class Session:
    """A live session at this node; dropped (and its memory freed) when it ends."""

    session_id: str
    protocol: Entry[Any]                 # the catalogue entry
    params: Any                          # its typed parameters
    parties: tuple[str, ...]
    coordinator: Identity
    stored: StoredInput                  # values and a ballot tally are never in its repr
    declared: Declared
    length: int                          # what this node reported at prepare
    deadline: float                      # loop.time() after which the session is dropped
    # The output share never appears in a repr (tracebacks, debuggers).
    output: asyncio.Future[Words] = field(repr=False)
    engine: AgreedParty | None = None    # made at compute, when every length and the scale are known
    early: list[tuple[str, str, bytes]] = field(default_factory=list, repr=False)   # peer messages before it
    query: Query | None = None           # what this session releases, once compute knows every version
    released: str = ""                   # its release as recorded (the end's log line says it)
    ended: bool = False                  # its end was recorded with its release (`_release`)
    timer: asyncio.TimerHandle | None = None
    running: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)   # messages on calls of their own
    digests: set[asyncio.Task[None]] = field(default_factory=set)   # those of them carrying our session digest
    unsent: dict[str, int] = field(default_factory=dict)   # peer -> messages posted, not yet handed over
    all_sent: asyncio.Event | None = None   # set once `unsent` empties, while compute waits for that
    send_errors: list[MpcError] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # What left this node in the session, by (kind, recipient): [messages, bytes]. Sizes only.
    sent: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    received_bytes: int = 0
    identifiers: tuple[bytes, ...] = field(default=(), repr=False)   # a set's, read with its values
    spend: tuple[Decimal, Decimal] | None = None   # a DP release's (epsilon, delta) from the input's budget
    described: dict[str, object] = field(default_factory=dict)   # the description's common part, at prepare
    evidence: Evidence | None = None     # what this node reported at prepare for the keyed path
    pair_keys: dict[str, PairKey] = field(default_factory=dict, repr=False)   # the keys it named, by peer
    # A one-round session is recorded with its release, or with its end if it never gets that far:
    # until then this is what its record will be (None: recorded at prepare).
    unrecorded: NewSession | None = None
    one_round: bool = False              # prepared and computed at once (its peers' messages may come first)
    repeat: bool = False                 # its release repeats what a recorded one released (`_record_release`)
    # What compute made its share from (`RepeatPlan`): the description its digest is of, and its contribution's
    # arguments.
    digested: dict[str, object] = field(default_factory=dict)
    contributing: Contributing | None = field(default=None, repr=False)

    def count_sent(self, kind: str, to: str, size: int) -> None:
        """Add one message of `size` bytes to the session's traffic record."""
        tally = self.sent.setdefault((kind, to), [0, 0])
        tally[0] += 1
        tally[1] += size

    def progress(self) -> tuple[int, int, int]:
        """Returns: (peer bytes sent, peer bytes received, peer messages sent) so far; sizes only."""
        peers = [tally for (kind, _), tally in self.sent.items() if kind != OUTPUT_SHARE]
        return sum(b for _, b in peers), self.received_bytes, sum(n for n, _ in peers)

    def transfers(self) -> tuple[Transfer, ...]:
        """The traffic record as the audit log stores it."""
        return tuple(Transfer(kind, to, n, size) for (kind, to), (n, size) in self.sent.items())

    def remaining(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds left before the session's deadline (never negative)."""
        return max(0.0, self.deadline - loop.time())


@dataclass(frozen=True, eq=False)
class RepeatPlan:
    """What a keyed one-round sum whose release repeated a recorded query checked and made its share
    from, kept under its statement (its Run request but the session id) so that the next session of the
    same statement runs at once (`NodeCore.repeat`).

    Everything `run` checks depends on the statement, on what is fixed for the node's lifetime (its
    cluster, its owner's policy), and on what `repeat` looks at again each time: the input's version
    (whose values never change), the pair keys held, the session id and the node's load. The version's
    releases only grow, so a repeat stays one, and deciding on it says the same each time. A share from
    the plan is the one `run` would make: the same description but the id, so the same digest and masks
    (mpc/protocols/pairing.py), and the same contribution (an exact release's takes no randomness),
    masked as the engine masks it (mpc/protocols/sum.py `keyed_share`).
    """

    protocol: Entry[Any]
    stored: StoredInput                     # values of `stored.version`
    parties: tuple[str, ...]
    keys: Mapping[str, PairKey] = field(repr=False)   # the pair key with each peer, as the statement names them
    digest: Callable[[str], bytes] = field(repr=False)   # the session description's digest, by session id
    contribution: Words = field(repr=False)   # an exact release's takes no randomness (read-only)
    scalar: int | None = field(repr=False)    # its one word, if it has one word
    records: RepeatRecords = field(repr=False)   # its records, made once: the release's query and description
    shape: Shape
    done: Any = field(repr=False)           # the metric of sessions done, labelled for its protocol


class NodeCore:
    """Everything a node does for coordinators and peers, minus the transport."""

    def __init__(self, cluster: ClusterConfig, me: NodeConfig, store: Store, peers: PeerSender,
                 *, rng: Rng | None = None, observer: PeerObserver | None = None,
                 cert_not_after: str = "", metrics: NodeMetrics | None = None) -> None:
        self.cluster = cluster
        self.me = me
        self.store = store
        self.peers = peers
        self.metrics = metrics or NodeMetrics(me.name)
        self.metrics.active.set_function(lambda: len(self.sessions))
        self.rng: Rng = rng or SystemRng()
        self.observer = observer
        self.cert_not_after = cert_not_after
        self.sessions: dict[str, Session] = {}
        self.releases = ReleaseBook(store, me.name, me.policy)
        # Random OTs made ahead of time with each peer (mpc/ot/pool.py), in memory only.
        self.pools = RotPools(me.triple_pool)
        # OT setups with each peer, kept for the node's lifetime (newest last), by setup id.
        self.ot_setups = OtSetups(MAX_OT_SETUPS_PER_PEER, pools=self.pools)
        others = sorted(set(cluster.nodes) - {me.name})
        self.metrics.watch_pools(lambda: [(p, role, level(p)) for p in others for role, level in
                                          (("receiver", self.pools.level), ("sender", self.pools.sending_level))])
        self._idle = asyncio.Event()        # set while no session is live: pool fills wait for it
        self._idle.set()
        self._pool_wake = asyncio.Event()   # a session ended: pools may want a fill
        self._filler: asyncio.Task[None] | None = None
        # peer -> (setup id, monotonic time): no fill with that setup before then (a new setup may fill at once)
        self._fill_backoff: dict[str, tuple[bytes, float]] = {}
        self._fills_arriving: set[str] = set()   # peers whose pool fill a Send is reading now
        self._fill_work: set[str] = set()   # peers whose fill is being taken (its worker thread runs)
        # Pair keys with each peer, from the seeds of earlier sums (mpc/protocols/pairing.py).
        self.pair_keys = PairKeys()
        # Sessions that peers' messages wait for (one-round sessions): id -> (event, waiting messages).
        self._awaited: dict[str, tuple[asyncio.Event, int]] = {}
        self._waiting: dict[str, int] = {}   # peer -> its messages waiting
        # The latest refused requests, id -> reason: they leave no session row, and a one-round
        # session's peers may already be sending (their messages are refused at once, not parked).
        self._refusals: dict[str, str] = {}
        # The tickets this node issued last for each (coordinator, input, query), (peer, id) pairs:
        # a new set drops the one before (mpc/ot/pool.py "Tickets"), oldest query first.
        self._ticketed: dict[tuple[str, str, str], list[tuple[str, bytes]]] = {}
        self._deferred_write: asyncio.TimerHandle | None = None   # writes the store's deferred records
        self._deferred_retry_s = DEFERRED_WRITE_S   # grows while writing them fails
        # Keyed one-round sums that repeated a recorded query, by (coordinator, statement): run again at once.
        self._plans: dict[tuple[Identity, bytes], RepeatPlan] = {}

    # ---- coordinator side -------------------------------------------------------------

    def prepare(self, caller: Identity, session_id: str, protocol: Entry[Any], params: Any, input_name: str,
                participants: list[str], timeout_s: float, *, one_round: bool = False) -> Prepared:
        """Register a session after checking the policy, the parties and the input; a refusal
        goes to the audit log with its reason.

        Returns: the input's public shape.
        Raises: RemoteProtocolError for a malformed request, PolicyError when the owner's
        policy refuses, StoreError when the input is missing, RoundMismatch for a reused id.
        """
        try:
            return self._prepare(caller, session_id, protocol, params, input_name, participants, timeout_s, one_round)
        except MpcError as exc:
            self.refused(caller, session_id, protocol.name, input_name, participants, exc)
            raise

    def refused(self, caller: Identity, session_id: str, protocol: str, input_name: str,
                participants: list[str], error: MpcError) -> None:
        """Record a refused request: in the audit log with its reason, in the metrics and the log.

        A store that cannot be written is logged, and the refusal itself still reaches the caller.
        """
        self.metrics.sessions.labels(protocol if protocol in NAMES else "unknown", "refused").inc()
        # The id comes from the caller: quote it unless well-formed, so it cannot forge log lines.
        shown = session_id if _SESSION_ID.match(session_id) else repr(session_id[:64])
        if shown == session_id:
            self._refusals[session_id] = str(error)
            if len(self._refusals) > REFUSALS_REMEMBERED:
                del self._refusals[next(iter(self._refusals))]
            self._wake_waiting(session_id)   # peers' messages that came first: refused now, not after their wait
        try:
            self.store.append_audit("refused", session_id, caller.uri(), protocol, [input_name],
                                    participants[:MAX_AUDITED_PARTICIPANTS], reason=str(error))
        except MpcError as exc:
            log.error("session %s: cannot write its refusal to the audit log: %s", shown, exc, extra={"session": shown})
        log.warning("session %s refused: %s", shown, error, extra={"session": shown})

    def _prepare(self, caller: Identity, session_id: str, protocol: Entry[Any], params: Any, input_name: str,
                 participants: list[str], timeout_s: float, one_round: bool) -> Prepared:
        name = self.me.name
        if not _SESSION_ID.match(session_id):
            raise RemoteProtocolError("session id must be 32 lowercase hex characters")
        # What a caller sent is checked for shape before any message quotes it (bounded by the caller).
        if not INPUT_NAME.match(input_name):
            raise RemoteProtocolError(f"session {session_id}: input name {quoted(input_name, 60)} is not valid")
        if len(participants) > MAX_PARTICIPANTS or not all(NODE_NAME.match(p) for p in participants):
            raise RemoteProtocolError(f"session {session_id}: participants must be at most {MAX_PARTICIPANTS} "
                                      f"node names, got {quoted(','.join(participants), 120)}")
        policy = self.me.policy
        refusal = policy.refusal(name, protocol.name, input_name)
        if refusal is not None:
            raise PolicyError(refusal)
        if len(set(participants)) != len(participants):
            raise RemoteProtocolError(f"session {session_id}: participants repeat: {participants}")
        unknown = [p for p in participants if p not in self.cluster.nodes]
        if unknown:
            raise RemoteProtocolError(f"session {session_id}: participants not in node {name}'s cluster: {unknown}")
        if name not in participants:
            raise RemoteProtocolError(f"session {session_id}: node {name} is not among the participants")
        if len(participants) < policy.min_participants:
            raise PolicyError(f"node {name}: policy requires at least {policy.min_participants} participants, "
                              f"session {session_id} has {len(participants)}")
        self._check_load(caller)
        if session_id in self.sessions or self.store.has_session(session_id):
            raise RoundMismatch(f"session {session_id} already exists at node {name}")
        # Every refusal is decided on the declaration alone, before any value is read: neither what a
        # refusal says nor how long it takes depends on the values (or on how many ballots there are).
        # A vote never reads its ballots at all, only the tally kept beside them.
        # A collection is looked up only for a protocol made for collections, or a name no input has:
        # an ordinary session's prepare reads the store no more than before collections existed.
        collection = self._collection_view(input_name, protocol, participants) \
            if "collection" in protocol.kinds else None
        if collection is not None:
            stored, declared, _ = collection
        else:
            try:
                stored, _, records = self.store.get_declared(input_name)
            except StoreError:   # not an input: if it names a collection, say what takes one
                self._collection_view(input_name, protocol, participants)
                raise
            declared = Declared(input_name, name, stored.kind, stored.bounds, records, stored.frac_bits,
                                stored.is_scalar)
        spend, may_repeat = self._check_rules(protocol, params, stored, declared, participants,
                                              precheck=not one_round)
        protocol.admit(params, declared, len(participants), stored.frac_bits)
        identifiers: tuple[bytes, ...] = ()
        if collection is None and not protocol.kinds & set(COUNTS_HIDDEN):   # a vote never reads its ballots
            version, stored = stored.version, self.store.get_input(input_name)
            if stored.kind == "set":   # its identifiers, of the same version (read after its values)
                members = self.store.get_set(input_name)
                identifiers = members.identifiers
                if members.version != stored.version:
                    version = -1
            if stored.version != version:
                raise RoundMismatch(f"session {session_id}: input {input_name!r} at node {name} was replaced "
                                    f"during prepare; try again")
        length = protocol.length(params, declared)
        frac_bits = 0 if protocol.on_integers(params) else stored.frac_bits
        loop = asyncio.get_running_loop()
        timeout_s = min(timeout_s or self.cluster.session_timeout_s, MAX_SESSION_TIMEOUT_S)
        session = Session(session_id, protocol, params, tuple(participants), caller, stored, declared, length,
                          loop.time() + timeout_s, loop.create_future(), identifiers=identifiers, spend=spend)
        session.described = {"session": session_id, "coordinator": caller.uri(), "protocol": protocol.name,
                             "params": describe_params(params), "input": stored.name,
                             "participants": list(participants)}
        if collection is not None:
            session.described["collection"] = collection[2]
        new = NewSession(session_id, protocol.name, input_name, tuple(participants), caller.uri())
        if one_round:   # it computes at once: recorded with its release (or its end), one write fewer
            new.check()
            session.unrecorded, session.one_round = new, True
        else:
            if may_repeat or not protocol.sums(params):   # a sum keyed: repeats only (mpc/protocols/pairing.py)
                self._tag(session, frac_bits)
            self.store.record_session(new.session_id, new.protocol, new.input_name, new.participants, new.coordinator)
        session.timer = loop.call_at(session.deadline, self._expire, session)
        self.sessions[session_id] = session
        self._idle.clear()
        self._wake_waiting(session_id)   # peers' messages that came first
        level = logging.DEBUG if one_round else logging.INFO
        if log.isEnabledFor(level):   # a repeated query's line is at debug: not even formatted unless shown
            log.log(level, "session %s prepared: %s %s of %r (v%d) with %s", session_id, protocol.name,
                    json.dumps(session.described["params"]), input_name, stored.version, ",".join(participants),
                    extra={"session": session_id})
        return Prepared(session_id, name, length, frac_bits, stored.is_scalar or stored.kind in COUNTS_HIDDEN,
                        stored.version, session.evidence)

    def _tag(self, session: Session, frac_bits: int) -> None:
        """Tag what we prepared for every peer we hold a pair key with (the keyed path's evidence)."""
        me = self.me.name
        for peer in session.parties:
            key = None if peer == me else self.pair_keys.newest(peer)
            if key is not None:
                session.pair_keys[peer] = key
        shape = Evidence(session.length, frac_bits, session.stored.version, {})
        prepared = {**session.described, **shape.shape()}
        session.evidence = replace(shape, tags={peer: (key.key_id, key.tag(me, peer, prepared))
                                                for peer, key in session.pair_keys.items()})

    def _collection_view(self, input_name: str, protocol: Entry[Any],
                         participants: list[str]) -> tuple[StoredInput, Declared, dict[str, object]] | None:
        """A collection named `input_name` as a session's input (None: it names no collection here).

        Its public rule stands in for an input's declaration: kind "collection", bounds [lo, hi],
        `length` values per submission, version 1 (a closed collection never changes); its spec goes
        into the session description, so that every node checks the others computed with the same.
        Raises: PolicyError for an open collection or participants other than its nodes; InputError
        for a protocol not made for collections.
        """
        try:
            spec = self.store.get_collection(input_name)
        except InputError:
            return None
        name = self.me.name
        if "collection" not in protocol.kinds:
            raise InputError(f"{input_name!r} at node {name} is a collection of contributors' submissions; "
                             f"{protocol.name} takes {protocol.takes}, and a collection takes "
                             f"{' or '.join(users('collection'))}")
        if spec.kind not in protocol.collection_kinds:
            raise InputError(f"collection {input_name!r} at node {name} holds {spec.kind} submissions; "
                             f"{protocol.name} takes a collection of {' or '.join(sorted(protocol.collection_kinds))} "
                             f"submissions")
        if set(participants) != set(spec.nodes):
            raise PolicyError(f"node {name}: collection {input_name!r} is held by {', '.join(spec.nodes) or 'no nodes'}; "
                              f"a session over it takes exactly these nodes, this one has "
                              f"{', '.join(sorted(participants))}")
        if not self.store.is_closed(input_name):
            raise PolicyError(f"node {name}: collection {input_name!r} is open; sessions run over closed "
                              f"collections only (`mpc collection close`), so that no two releases differ by "
                              f"one contributor's submission")
        stored = StoredInput(input_name, np.zeros(spec.length, dtype=np.int64), 0, spec.length == 1, "", "",
                             version=1, kind="collection", bounds=(spec.lo, spec.hi))
        declared = Declared(input_name, name, "collection", (spec.lo, spec.hi), spec.length, 0, spec.length == 1)
        return stored, declared, spec.describe()

    def _collection_source(self, session: Session) -> CollectionSource | None:
        """What a collection session's engine loads: the keys and shares this node stores (None otherwise)."""
        if session.stored.kind != "collection":
            return None
        name, store = session.stored.name, self.store
        spec = store.get_collection(name)
        return CollectionSource(spec.lo, spec.hi, spec.length, spec.min_batch, store.submission_keys(name),
                                lambda keys: store.submission_shares(name, keys), one_hot=spec.kind == "option")

    def _check_load(self, caller: Identity) -> None:
        """Refuse a new session beyond the owner's limits on live sessions (in total, per coordinator)."""
        policy = self.me.policy
        if len(self.sessions) >= policy.max_sessions:
            raise Busy(f"node {self.me.name} has {len(self.sessions)} live sessions, its limit (max_sessions); "
                       f"try again when some have ended")
        mine = sum(1 for s in self.sessions.values() if s.coordinator == caller)
        if mine >= policy.max_sessions_per_coordinator:
            raise Busy(f"node {self.me.name} has {mine} live sessions for {caller.uri()}, its limit "
                       f"(max_sessions_per_coordinator); try again when some have ended")

    def _check_rules(self, protocol: Entry[Any], params: Any, stored: StoredInput, declared: Declared,
                     participants: list[str], precheck: bool = True) -> tuple[tuple[Decimal, Decimal] | None, bool]:
        """The owner's rules across sessions (DESIGN.md §9), checked at prepare, before anything is shared.

        Returns: what a DP release spends of the input's budget (None for an exact release), and (precheck)
        whether an earlier release of the input version may imply this one (ReleaseBook.precheck).
        Raises: PolicyError naming this node, the input and the rule; InputError for an input
        of a kind the protocol does not take.
        """
        name, policy, input_name = self.me.name, self.me.policy, stored.name
        if stored.kind not in protocol.kinds:
            # An input made for one protocol (ballots, options, a curve, bids) serves a protocol on
            # numbers only where the owner's policy names it; the protocols made for a kind never
            # take another (a vote on numbers, or a plurality on yes/no ballots, would open a tally).
            if stored.kind != "number" and "number" in protocol.kinds:
                if input_name not in policy.allow.get(protocol.name, ()):
                    raise PolicyError(f"node {name}: input {input_name!r} holds {stored.kind}, which only "
                                      f"{' or '.join(users(stored.kind))} may use (the policy's "
                                      f"allow.{protocol.name} may name it)")
            else:
                raise InputError(f"input {input_name!r} at node {name} is not declared as "
                                 f"{' or '.join(sorted(protocol.kinds))} (it holds {stored.kind}); "
                                 f"{protocol.name} takes {protocol.takes}")
        rules = policy.rules(input_name)
        pinned = rules.pinned(list(self.cluster.nodes))
        if stored.kind == "collection" and rules.participants == "cluster":
            # By default a collection's sessions take the nodes it names (`_collection_view` holds them to
            # exactly those), which this node's operator gave it: the whole cluster would refuse them all.
            pinned = None
        if pinned is not None and set(participants) != pinned:
            raise PolicyError(f"node {name}: policy pins the participants of {input_name!r} to "
                              f"{', '.join(sorted(pinned))} (participants); this session has "
                              f"{', '.join(sorted(participants))}")
        rule = protocol.thresholds(params)
        if rule is not None and rules.thresholds is not None and rule not in rules.thresholds:
            allowed = ", ".join(sorted(map(str, rules.thresholds))) or "none"
            raise PolicyError(f"node {name}: policy allows {protocol.name}s on {input_name!r} only with the "
                              f"thresholds {allowed} (thresholds), not {rule}")
        spend = protocol.spend(params)
        if spend is None and not rules.exact:
            raise PolicyError(f"node {name}: policy allows only differentially private releases of {input_name!r} "
                              f"(exact = false): run it with --epsilon")
        if spend is None and protocol.name == "histogram" and not rules.exact_histograms:
            raise PolicyError(f"node {name}: an exact histogram of {input_name!r} opens how many records fall in "
                              f"each bin, and fine bins open the values themselves; policy allows differentially "
                              f"private histograms only (run it with --epsilon, or the owner sets exact_histograms)")
        if spend is not None and not rules.dp_per_element:
            units = protocol.privacy_units(params, declared)   # one record may move every element of a vector
            if units is None:
                raise PolicyError(f"node {name}: a differentially private {protocol.name} of {input_name!r} adds "
                                  f"its values up in one noised value, calibrated for one record, and policy says "
                                  f"one person may hold them all (dp_per_element = false), who could move it by "
                                  f"many times that; the owner sets dp_per_element if each value is a different "
                                  f"person's record (a sum, or an elementwise average, spends epsilon per value)")
            spend = (spend[0] * units, spend[1] * units)
        mode = protocol.reveal_mode(params)
        if mode is not None and mode not in rules.reveal:
            raise PolicyError(f"node {name}: policy allows {protocol.name} on {input_name!r} to reveal only "
                              f"{', '.join(sorted(rules.reveal)) or 'nothing'} (reveal), not {mode}")
        recipients = protocol.recipients(params, participants)
        outside = sorted(set(recipients or ()) - rules.members_to) if rules.members_to is not None else []
        if outside:
            raise PolicyError(f"node {name}: policy lets the members of an intersection of {input_name!r} go only "
                              f"to {', '.join(sorted(rules.members_to or ()))} (members_to), not to "
                              f"{', '.join(outside)}")
        if not precheck:   # a one-round session reserves its release at once: the same check, moments later
            return spend, False
        variant, parameter = protocol.release(params)
        return spend, self.releases.precheck(stored, variant, parameter, participants, spend)

    async def compute(self, caller: Identity, session_id: str, frac_bits: int, length: int,
                      versions: Mapping[str, int], lengths: Mapping[str, int],
                      evidence: Mapping[str, Evidence] | None = None,
                      keys: Mapping[str, PairKey] | None = None, one_round: bool = False,
                      pooled: Pooled | None = None) -> Words:
        """Run a prepared session and return this node's output share.

        The release is reserved in the input version's budget before this node's session digest
        goes out (or the session fails here, and no peer ever agrees). Nothing that depends on the
        input leaves until every peer has shown it prepared the identical session description
        (mpc/protocols/agreement.py); at that moment the release is recorded.

        Args:
            length: words of each node's output share.
            versions: every participant's input version, as the nodes reported them at prepare.
            lengths: every participant's length, as the nodes reported them at prepare.
            evidence: every participant's evidence from prepare, for the keyed path (agreement from
                the relayed tags, masks from the pair keys: no seed goes peer to peer, and a sum sends
                nothing); empty or None: digests and seeds are exchanged.
            keys: a one-round session's pair key with every peer, as the coordinator named them and
                this node found them held (`run`): masks from them, as on the keyed path.
            one_round: called by `run`: the session goes from prepared to its end (no "running" record
                in between, which would only say the same).
            pooled: the pool ranges of a one-round session's tickets (`run`): a program then sends no hello.
        Returns: the output share (uniformly random on its own).
        Raises: UnknownSession/SessionClosed, AuthError if another coordinator asks,
        RoundMismatch if already running, InputError if the declared bounds could overflow at
        this scale, PolicyError when the input's release budget is spent,
        PeerUnavailable/SessionFailed naming the peer when the exchange fails or a peer's
        session description differs.
        """
        session = self._live(session_id)
        if caller != session.coordinator:
            raise AuthError(f"session {session_id} belongs to another coordinator")
        if session.running:
            raise RoundMismatch(f"session {session_id} is already computing at node {self.me.name}")
        protocol, params, stored = session.protocol, session.params, session.stored
        me = self.me.name
        if not lengths and protocol.lengths == "equal":
            # A coordinator that sends no lengths (an older mpc) means "equal": each node assumes its
            # own everywhere, and the session digest, which holds the lengths, catches a difference.
            lengths = {p: session.length for p in session.parties}
        if set(lengths) != set(session.parties) or lengths.get(me) != session.length:
            raise RemoteProtocolError(f"session {session_id}: the coordinator's lengths "
                                      f"{quoted(str(dict(lengths)), 200)} do not match the participants, or node "
                                      f"{me}'s length {session.length}")
        if protocol.lengths == "equal" and len(set(lengths.values())) != 1:
            raise RemoteProtocolError(f"session {session_id}: the nodes' lengths differ: "
                                      f"{quoted(str(dict(lengths)), 200)}")
        ordered = {p: int(lengths[p]) for p in session.parties}
        try:
            words = protocol.contribution_length(params, ordered)
            out = protocol.output_length(params, ordered)
        except InputError as exc:
            raise RemoteProtocolError(f"session {session_id}: node {me}, input {stored.name!r}: {exc}") from None
        if length != out:
            raise RemoteProtocolError(f"session {session_id}: coordinator expects {length} output words, "
                                      f"node {me} sends {out}")
        own_bits = session.declared.frac_bits
        if protocol.on_integers(params) and frac_bits != 0:
            raise RemoteProtocolError(f"session {session_id}: a {protocol.name} takes integers, got a scale of "
                                      f"{frac_bits} fractional bits")
        if not protocol.on_integers(params) and not own_bits <= frac_bits <= 32:   # integers: each entry rescales
            raise RemoteProtocolError(f"session {session_id}: scale of {frac_bits} fractional bits is below "
                                      f"node {me}'s {own_bits} or above 32")
        if set(versions) != set(session.parties) or versions.get(me) != stored.version:
            raise RemoteProtocolError(f"session {session_id}: the coordinator's input versions "
                                      f"{quoted(str(dict(versions)), 200)} do not match the participants, or "
                                      f"node {me}'s input {stored.name!r} version {stored.version}")
        session.running = True
        if not one_round:
            self.store.set_session_status(session_id, "running")
        loop = asyncio.get_running_loop()
        try:
            protocol.admit(params, session.declared, len(session.parties), frac_bits)
            if evidence:
                self._check_keyed(session, frac_bits, ordered, versions, evidence)
                keys = session.pair_keys
            session.digested = {**session.described, "frac_bits": frac_bits, "lengths": ordered,
                                "versions": dict(sorted(versions.items()))}
            digest = session_digest(session.digested)
            variant, parameter = protocol.release(params)
            session.query = Query.of(variant, parameter, versions)
            # Reserve the release now, before our digest goes out: a node whose budget refuses
            # never sends one, so no peer reaches agreement and no output share leaves any node.
            try:
                self.releases.reserve(session_id, stored, session.query, session.spend)
            except PolicyError as exc:
                if one_round:   # where a two-round session's prepare refuses: audited as that refusal
                    self._finish(session, "refused", str(exc))
                raise
            layout = sorted(session.parties)   # by name: the output may not depend on the session's order
            offset = sum(ordered[p] for p in layout[:layout.index(me)])
            # In a worker thread: hashing a set's identifiers or drawing local noise can take seconds (a
            # few exact values take microseconds: a thread's hand-over would cost more than they do).
            session.contributing = contributing = Contributing(
                session.declared, stored.values, stored.tally, frac_bits, len(session.parties), offset,
                sum(ordered.values()), self.rng, session.identifiers)
            if stored.values.size <= SMALL_INPUT and not session.identifiers and session.spend is None:
                contribution = protocol.contribution(params, contributing)
            else:
                contribution = await asyncio.to_thread(protocol.contribution, params, contributing)
            masks = None if keys is None else {p: k.mask_key(session_id, digest) for p, k in keys.items()}
            source = None if stored.kind != "collection" else await asyncio.to_thread(self._collection_source, session)
            inner = protocol.engine(params, EngineArgs(session_id, me, session.parties, words, self.rng,
                                                       self.ot_setups, ordered, mask_seeds=masks,
                                                       on_seed=self._keep_pair_key, collection=source,
                                                       pooled=pooled))
            if pooled is not None and not (isinstance(inner, ComputeParty) and inner.pooled_at_start):
                raise RemoteProtocolError(f"session {session_id}: pool tickets for a {protocol.name}, which takes none")
            async with session.lock:
                if self.sessions.get(session_id) is not session:   # aborted while we waited for the lock
                    raise SessionClosed(f"session {session_id} ended at node {me} before it started")
                # A keyed sum sends nothing at all: its agreement is the tags checked above (two rounds) or,
                # in one round, the session digest in its masks alone: a node that was told, or computed
                # with, another description gets shares whose masks do not cancel (mpc/protocols/pairing.py).
                # Every engine that sends messages anyway still sends its digest with its first ones (no
                # extra round), so each node also checks what every other computed with (DESIGN.md §9).
                # Agreed at start (a keyed sum, which is why it runs only as a repeat: below), its release is
                # recorded here, once start has said what it sends and before any of it leaves. A program's
                # (ComputeParty) only when its output share is ready, just before that leaves: everything
                # else it sends the peers is an opening masked by this node's one-time preprocessing
                # (mpc/protocols/circuit.py), from which no set of other parties learns anything without
                # our share, so a session that fails on the way
                # releases nothing and spends nothing. Any other engine's when every digest has come.
                agreed = keys is not None and isinstance(inner, SecureSumParty)
                if agreed and not self.releases.is_repeat(session_id):   # it would record before the others reserve
                    described = "spends epsilon" if session.spend is not None else "counts against its budget"
                    raise StaleShape(f"session {session_id}: node {me}'s release of {stored.name!r} {described}, and "
                                     f"{KEYED_REPEATS_ONLY}; run it unkeyed (digests and seeds between the nodes); "
                                     f"nothing was shared")
                at_output = not agreed and isinstance(inner, ComputeParty)
                engine = AgreedParty(inner, session_id, me, session.parties,
                                     None if agreed or at_output else lambda: self._release(session), agreed=agreed)
                session.engine = engine
                if engine.is_slow("start"):   # e.g. hashing a set to the curve: off the event loop
                    events = await asyncio.to_thread(engine.start, contribution, digest)
                    self._still_live(session)
                else:
                    events = engine.start(contribution, digest)
                if agreed:
                    self._release(session, events)
                self._dispatch(session, events)
                if session.early:
                    # Let our first messages (the digest, value-free openers) start out before the peers'
                    # early ones are taken: one of those may complete the agreement, whose release record
                    # is committed to disk (mpc/node/releases.py) before anything else can go.
                    await asyncio.sleep(0)
                    self._still_live(session)
                early, session.early = session.early, []
                for sender, step, payload in early if engine.failure is None else ():
                    try:
                        events = await self._run_engine(engine, sender, step, payload)
                    except MpcError as exc:
                        raise type(exc)(f"bad message from {sender}: {exc}") from None
                    self._dispatch(session, events)
            if engine.failure is not None:   # a peer's early digest differs; ours still went out
                raise engine.failure
            if session.output.done():   # e.g. a keyed sum: its share is there when it starts
                share = session.output.result()
            else:
                try:
                    share = await asyncio.wait_for(asyncio.shield(session.output), session.remaining(loop))
                except TimeoutError:
                    waiting = ", ".join(engine.waiting_for) or "nobody"
                    raise PeerUnavailable(f"session {session_id}: node {self.me.name} timed out waiting for "
                                          f"{waiting}") from None
            # Our own messages must have arrived before we call the session done.
            if session.unsent:
                session.all_sent = asyncio.Event()
                try:
                    await asyncio.wait_for(session.all_sent.wait(), session.remaining(loop))
                except TimeoutError:
                    peers = ", ".join(sorted(session.unsent))
                    raise PeerUnavailable(f"session {session_id}: node {self.me.name} could not deliver to {peers} "
                                          f"in time") from None
            if self.sessions.get(session_id) is not session:   # aborted or expired while we waited
                raise SessionClosed(f"session {session_id} ended at node {self.me.name} before its output share "
                                    f"was sent")
            if session.send_errors:
                raise session.send_errors[0]
            # What the coordinator gets: exactly this share, as the servicer streams it next.
            session.count_sent(OUTPUT_SHARE, caller.uri(), int(share.nbytes))
            if at_output:   # nothing sent is waiting or failed, and the session is live: it ends with its release
                self._record_release(session, session.transfers())
            self.metrics.output_bytes.inc(int(share.nbytes))
        except MpcError as exc:
            self._finish(session, "failed", str(exc))
            raise
        except asyncio.CancelledError:
            self._finish(session, "aborted", "the coordinator went away during the computation")
            raise
        self._finish(session, "done", "")
        return share

    def _still_live(self, session: Session) -> None:
        """After a wait inside compute: the session may have been aborted or expired meanwhile, and then
        nothing more of it may run (its engine would record a release and send).

        Raises: SessionClosed.
        """
        if self.sessions.get(session.session_id) is not session:
            raise SessionClosed(f"session {session.session_id} ended at node {self.me.name} while it started")

    def _check_keyed(self, session: Session, frac_bits: int, lengths: Mapping[str, int], versions: Mapping[str, int],
                     evidence: Mapping[str, Evidence]) -> None:
        """The keyed path's agreement: every peer's tag matches our description and its reported
        shape, and the coordinator's lengths, versions and scale are the ones the nodes reported.

        Raises: RemoteProtocolError naming the peer or the quantity that differs.
        """
        sid, me = session.session_id, self.me.name
        if set(evidence) != set(session.parties):
            raise RemoteProtocolError(f"session {sid}: the coordinator's evidence is not from exactly the participants")
        missing = sorted(set(session.parties) - {me} - set(session.pair_keys))
        if missing:
            raise RemoteProtocolError(f"session {sid}: node {me} named no pair key with {', '.join(missing)} at "
                                      f"prepare; this session cannot be keyed")
        mine = session.evidence
        if mine is None or evidence[me].shape() != mine.shape():
            raise RemoteProtocolError(f"session {sid}: the coordinator's evidence misstates what node {me} prepared")
        for p, e in evidence.items():
            if e.length != lengths.get(p) or e.input_version != versions.get(p):
                raise RemoteProtocolError(f"session {sid}: the coordinator's length or input version for node {p} "
                                          f"is not the one node {p} reported")
        if frac_bits != max(e.frac_bits for e in evidence.values()):
            raise RemoteProtocolError(f"session {sid}: scale of {frac_bits} fractional bits is not the largest "
                                      f"the nodes reported")
        check_evidence(me, session.pair_keys, session.described, evidence, sid)

    async def run(self, caller: Identity, session_id: str, protocol: Entry[Any], params: Any, input_name: str,
                  participants: list[str], timeout_s: float, shapes: Mapping[str, Shape], frac_bits: int,
                  length: int, key_ids: Mapping[str, bytes],
                  tickets: Sequence[Ticket] = (), statement: bytes = b"") -> tuple[Words, Shape, list[Ticket]]:
        """Prepare and compute a session at once (the one-round path): the coordinator states every
        participant's shape, as the nodes reported it for the same query before, the pair key each
        pair holds (if every pair holds one), and every ordered pair's pool ticket (if it holds them
        all: mpc/ot/pool.py "Tickets"; a program of bit triples alone then sends no hello).

        This node checks its own entry and that it holds each named key before anything is shared;
        the whole statement enters the session description, so the nodes agree on it exactly as on
        what they report at prepare (mpc/protocols/agreement.py; a keyed sum: its masks,
        mpc/protocols/pairing.py).

        statement: the request but its session id, in bytes that say it unambiguously: a keyed sum
        that repeated a recorded query leaves a plan under it (`repeat`).
        Returns: (the output share, this node's shape, its tickets for the next session of the query:
        one per peer, or none).
        Raises: StaleShape if the stated shape, a named key or a ticket is not this node's now (nothing
        was shared: the coordinator runs the session again without tickets, or prepares it in two
        rounds); as `prepare` and `compute` otherwise.
        """
        me = self.me.name
        prepared = self.prepare(caller, session_id, protocol, params, input_name, participants, timeout_s,
                                one_round=True)
        session = self.sessions[session_id]
        try:
            keys = self._stated_keys(session, key_ids)
            if set(shapes) != set(session.parties):
                raise RemoteProtocolError(f"session {session_id}: the coordinator states the shapes of "
                                          f"{quoted(','.join(sorted(shapes)), 200)}, not of exactly the participants")
            if shapes[me] != prepared.shape:
                raise StaleShape(f"session {session_id}: node {me}'s input {input_name!r} is {prepared.shape}, not "
                                 f"{shapes[me]} as the coordinator states (it was replaced since); nothing was shared")
            if frac_bits != max(s.frac_bits for s in shapes.values()):
                raise RemoteProtocolError(f"session {session_id}: scale of {frac_bits} fractional bits is not the "
                                          f"largest of the stated shapes")
            pooled = self._stated_tickets(session, tickets)
        except MpcError as exc:
            self._finish(session, "failed", str(exc))
            raise
        try:
            share = await self.compute(caller, session_id, frac_bits, length,
                                       {p: s.input_version for p, s in shapes.items()},
                                       {p: s.length for p, s in shapes.items()}, keys=keys, one_round=True,
                                       pooled=pooled)
        except MpcError as exc:   # refused before it ran: no coordinator will come back to abort it
            if self.sessions.get(session_id) is session:
                self._finish(session, "failed", str(exc))
            raise
        if statement and keys is not None and pooled is None:
            self._keep_plan(caller, statement, session, keys, prepared.shape, share)
        return share, prepared.shape, self._issue_tickets(session)

    def _keep_plan(self, caller: Identity, statement: bytes, session: Session, keys: Mapping[str, PairKey],
                   shape: Shape, share: Words) -> None:
        """Keep a RepeatPlan of a keyed sum that ended with the release of a repeat (else nothing)."""
        inner = None if session.engine is None else session.engine.inner
        stored = session.stored
        if not (session.ended and session.repeat and isinstance(inner, SecureSumParty) and inner.keyed and
                session.query is not None and session.contributing is not None and session.spend is None and
                not session.identifiers and stored.kind != "collection" and stored.values.size <= SMALL_INPUT and
                len(statement) <= MAX_PLAN_STATEMENT):
            return
        digest = session_digests({k: v for k, v in session.digested.items() if k != "session"})
        contribution = session.protocol.contribution(session.params, session.contributing)
        contribution.flags.writeable = False
        done = (Transfer(OUTPUT_SHARE, caller.uri(), 1, int(share.nbytes)),)
        new = NewSession(session.session_id, session.protocol.name, stored.name, session.parties, caller.uri())
        records = RepeatRecords.of(new, stored.name, stored.version, session.query.to_json(), session.released, done)
        self._plans.pop((caller, statement), None)
        mine = [key for key in self._plans if key[0] == caller]   # oldest first
        for key in mine[:max(0, len(mine) + 1 - MAX_PLANS_PER_COORDINATOR)]:
            del self._plans[key]
        self._plans[(caller, statement)] = RepeatPlan(session.protocol, stored, session.parties, dict(keys), digest,
                                                      contribution,
                                                      int(contribution[0]) if contribution.size == 1 else None,
                                                      records, shape,
                                                      self.metrics.sessions.labels(session.protocol.name, "done"))
        while len(self._plans) > MAX_REPEAT_PLANS:
            del self._plans[next(iter(self._plans))]

    def repeat(self, caller: Identity, session_id: str, statement: bytes) -> tuple[bytes, Shape] | None:
        """Run a one-round session from the RepeatPlan its statement left (see there): with the same
        checks that can come out otherwise than last time, the same share and the same records as
        `run`, at a fraction of its cost.

        Returns: (the output share as its words' little-endian bytes, this node's shape); None, having
        done and recorded nothing, when there is no plan, or what it rests on changed (it is dropped), or
        the session id is malformed or taken, or the node is at its limits: `run` then does it all, and
        says what is wrong.
        """
        plan = self._plans.get((caller, statement))
        if plan is None or not _SESSION_ID.match(session_id) or session_id in self.sessions:
            return None
        try:
            self._check_load(caller)
        except Busy:
            return None
        if any(self.pair_keys.find(peer, key.key_id) is not key for peer, key in plan.keys.items()):
            self._plans.pop((caller, statement), None)
            return None
        digest = plan.digest(session_id)
        masks = {p: k.mask_key(session_id, digest) for p, k in plan.keys.items()}
        mine = plan.parties.index(self.me.name)
        before, after = plan.parties[:mine], plan.parties[mine + 1:]
        if plan.scalar is not None:   # no array made for one word
            share = keyed_word(plan.scalar, before, after, masks).to_bytes(8, "little")
        else:
            share = words_to_bytes(keyed_share(np.array(plan.contribution, dtype=np.uint64), before, after, masks))
        try:
            recorded = self.releases.defer_repeat(plan.records, session_id)
        except MpcError as exc:   # nothing recorded: `run` tries again, and fails the session if it must
            log.warning("session %s: could not record a repeat's release at once: %s", session_id, exc,
                        extra={"session": session_id})
            return None
        if not recorded:   # the session is known (`run` refuses it), or the input was replaced (the plan goes)
            if not self.store.has_session(session_id):
                self._plans.pop((caller, statement), None)
            return None
        self._write_deferred_soon()
        plan.done.inc()
        self.metrics.output_bytes.inc(len(share))
        # A peer's messages for this id are refused now (it has ended). (A full run would take them as early
        # messages and fail the session after its release; a keyed sum's peers send it nothing.)
        self._wake_waiting(session_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %s done from the plan of a repeat: %s of %r (v%d) with %s; released %s", session_id,
                      plan.protocol.name, plan.stored.name, plan.stored.version, ",".join(plan.parties),
                      plan.records.description,
                      extra={"session": session_id})
        return share, plan.shape

    def _stated_tickets(self, session: Session, tickets: Sequence[Ticket]) -> Pooled | None:
        """Take the pool ranges a one-round session's tickets name (None: it names none): our
        reservation back where we are the receiver, our (m0, m1) of the peer's where we are the
        sender, each once. The statement enters the session description (so the digests compare it).

        Raises: RemoteProtocolError unless exactly one ticket names each ordered pair of participants;
        StaleShape for a ticket this node does not hold, or ranges it holds no longer or took before.
        """
        if not tickets:
            return None
        sid, me = session.session_id, self.me.name
        pairs = {(t.receiver, t.sender) for t in tickets}
        wanted = {(a, b) for a in session.parties for b in session.parties if a != b}
        if len(tickets) != len(wanted) or pairs != wanted:
            raise RemoteProtocolError(f"session {sid}: the coordinator states {len(tickets)} pool tickets, not one "
                                      f"for each ordered pair of the {len(session.parties)} participants")
        # First, with nothing taken yet: each ticket where we are the sender is one its receiver issued
        # (its id a MAC under a key the receiver gave us, which no coordinator sees), so a coordinator
        # cannot make us claim, and spoil, ranges another coordinator's tickets hold.
        for t in tickets:
            if t.sender == me and not self.pools.authentic(t.receiver, t.id, t.segments):
                raise StaleShape(f"session {sid}: node {me} holds no pool ticket {t.id.hex()[:8]}… of {t.receiver} "
                                 f"for the ranges stated (used, dropped, forgotten in a restart, or not issued by "
                                 f"{t.receiver}); nothing was shared")
        recv: dict[str, Reservation] = {}
        send: dict[str, tuple[Words, Words]] = {}
        for t in tickets:
            if t.receiver == me:
                reservation = self.pools.redeem(t.sender, t.id, t.segments)
                if reservation is None:
                    raise StaleShape(f"session {sid}: node {me} holds no pool ticket {t.id.hex()[:8]}… with "
                                     f"{t.sender} (used, dropped, or forgotten in a restart); nothing was shared")
                recv[t.sender] = reservation
            elif t.sender == me:
                try:
                    send[t.receiver] = self.pools.claim(t.receiver, t.segments, f"session {sid}: ticket of "
                                                        f"{t.receiver!r}")
                except RoundMismatch as exc:
                    raise StaleShape(f"{exc}; nothing was shared") from None
        session.described["tickets"] = sorted([t.receiver, t.sender, t.id.hex(), segments_to_bytes(t.segments).hex()]
                                              for t in tickets)
        return recv, send

    def _issue_tickets(self, session: Session) -> list[Ticket]:
        """Reserve pool ranges with every peer for the next one-round session of this query, if it is
        a program that could then run without a hello (mpc/ot/pool.py "Tickets"); else none.

        The tickets this node issued before for the same query and coordinator are dropped first: a
        coordinator keeps only the latest set of a query, so the ones before would only hold OTs
        (and the batches they are in) until evicted, e.g. after sessions of one query run side by side.
        """
        inner = None if session.engine is None else session.engine.inner
        words = inner.ticket_words if isinstance(inner, ComputeParty) else {}
        if not (words and self.pools.enabled and session.query is not None):
            return []
        key = (session.coordinator.name, session.stored.name, session.query.to_json())
        for peer, ticket in self._ticketed.pop(key, ()):
            self.pools.drop(peer, ticket)
        issued = self.pools.issue(words)
        if issued is None:
            return []
        self._ticketed[key] = [(peer, ticket) for peer, (ticket, _) in issued.items()]
        while len(self._ticketed) > TICKETED_QUERIES:
            for peer, ticket in self._ticketed.pop(next(iter(self._ticketed))):
                self.pools.drop(peer, ticket)
        return [Ticket(self.me.name, peer, ticket, reservation.segments)
                for peer, (ticket, reservation) in issued.items()]

    def _stated_keys(self, session: Session, key_ids: Mapping[str, bytes]) -> dict[str, PairKey] | None:
        """The pair keys a one-round session names, each held with its peer (None: none named).

        Raises: RemoteProtocolError unless exactly every peer is named; StaleShape for a key not held.
        """
        if not key_ids:
            return None
        sid, me = session.session_id, self.me.name
        peers = set(session.parties) - {me}
        if set(key_ids) != peers:
            raise RemoteProtocolError(f"session {sid}: the coordinator names pair keys with "
                                      f"{quoted(','.join(sorted(key_ids)), 200)}, not with exactly node {me}'s peers")
        keys: dict[str, PairKey] = {}
        for peer in sorted(peers):
            key = self.pair_keys.find(peer, key_ids[peer])
            if key is None:
                raise StaleShape(f"session {sid}: node {me} holds no pair key {bytes(key_ids[peer]).hex()[:8]}… with "
                                 f"{peer} (a restart forgets them); nothing was shared")
            keys[peer] = key
        return keys

    def _keep_pair_key(self, peer: str, seed: bytes) -> None:
        """Keep the pair key of a seed a sum sent to or took from `peer` (engines may call from a worker thread)."""
        self.pair_keys.add(PairKey.from_seed(peer, seed))

    def _release(self, session: Session, events: Sequence[Send | Output] = ()) -> None:
        """Record this session's release: called once every peer has agreed on the session (so every
        peer has reserved its own), just before anything value-dependent leaves this node. (A program's
        is recorded when its output share is ready, by compute: see there.)

        events: what the session's engine has just put out, none of it gone yet. If that is its output
        share alone (a keyed sum) and no peer's message waits to be taken, the session ends here: nothing
        after this can fail or wait before its share goes to the coordinator (compute awaits nothing
        more), so its end ("done", having sent that share) is recorded in the release's transaction.

        Raises: PolicyError if the budget is spent after all (only if the store was changed under us).
        """
        done = None
        output = events[0] if len(events) == 1 and isinstance(events[0], Output) else None
        if output is not None and not (session.output.done() or session.early or session.unsent or
                                       session.send_errors) and self.sessions.get(session.session_id) is session:
            share = Transfer(OUTPUT_SHARE, session.coordinator.uri(), 1, int(output.words.nbytes))
            done = (*session.transfers(), share)
        self._record_release(session, done)

    def _record_release(self, session: Session, done: tuple[Transfer, ...] | None) -> None:
        """Record the session's release; done: what it sent, if it ends ("done") in the same transaction.

        Raises: PolicyError if the budget is spent after all (only if the store was changed under us).
        """
        if session.query is None:   # agreement needs our digest, which compute sends after setting it
            raise LocalProtocolError(f"session {session.session_id}: released before compute")
        repeat = self.releases.is_repeat(session.session_id)
        described = self.releases.record(session.session_id, session.stored, session.query, session.spend,
                                         session.unrecorded, done)
        session.unrecorded, session.released, session.ended, session.repeat = None, described, done is not None, repeat
        self._write_deferred_soon()
        # The end line says it too. A release that may take from the budget is also said at once (a session
        # may hang, or the node stop, before it ends); a repeat, which takes nothing, only there.
        log.log(logging.DEBUG if repeat else logging.INFO, "session %s: released %s", session.session_id,
                described, extra={"session": session.session_id})

    def _write_deferred_soon(self) -> None:
        """Have the records the store defers (a repeat's, mpc/store/releases.py) written within
        DEFERRED_WRITE_S: by a timer on the event loop, or at once on a worker thread."""
        if self._deferred_write is not None or not self.store.deferred:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # a worker thread's release: written at once (if that fails, by the next release)
            self._write_deferred(retry=False)
            return
        self._deferred_write = loop.call_later(DEFERRED_WRITE_S, self._write_deferred)

    def _write_deferred(self, retry: bool = True) -> None:
        self._deferred_write = None
        try:
            self.store.write_deferred()
        except MpcError as exc:   # they still wait, no repeat defers more: the next write, read or timer tries again
            log.error("cannot write %d deferred session records to the store: %s", self.store.deferred, exc)
            if retry:   # less often while it fails (a full disk): at most every DEFERRED_RETRY_MAX_S
                self._deferred_retry_s = min(2 * self._deferred_retry_s, DEFERRED_RETRY_MAX_S)
                self._deferred_write = asyncio.get_running_loop().call_later(self._deferred_retry_s,
                                                                             self._write_deferred)
            return
        self._deferred_retry_s = DEFERRED_WRITE_S

    def is_one_round(self, session_id: str) -> bool:
        """Whether a live session was prepared and computed at once (mpc/transport/peers.py tells its peers)."""
        session = self.sessions.get(session_id)
        return session is not None and session.one_round

    def peer_refused(self, session_id: str, peer: str, message: str, unavailable: bool = False) -> None:
        """A peer refused a message this node sent it on its stream, or the stream ended with the
        session's messages in flight (unavailable; mpc/transport/peers.py): the session fails as if
        the send had (it never waits for the peer, which has dropped it or may never get them).
        Only a participant of the session can end it so."""
        session = self.sessions.get(session_id)
        if session is None or peer not in session.parties or peer == self.me.name:
            return
        failure = PeerUnavailable(message) if unavailable else SessionFailed(message)
        session.send_errors.append(failure)
        if not session.output.done():
            session.output.set_exception(failure)

    def progress(self, session_id: str) -> tuple[int, int, int]:
        """How far a live session has got (see Session.progress); zeros once it has ended."""
        session = self.sessions.get(session_id)
        return (0, 0, 0) if session is None else session.progress()

    def abort(self, caller: Identity, session_id: str, reason: str) -> None:
        """Drop a session at the coordinator's request (idempotent for finished sessions).

        Raises: UnknownSession for an id never seen; AuthError for another coordinator's session.
        """
        session = self.sessions.get(session_id)
        if session is None:
            if not _SESSION_ID.match(session_id) or self.store.get_session(session_id) is None:
                raise UnknownSession(f"unknown session {quoted(session_id, 40)} at node {self.me.name}")
            return
        if caller != session.coordinator:
            raise AuthError(f"session {session_id} belongs to another coordinator")
        self._finish(session, "aborted", f"aborted by the coordinator: {quoted(reason, 200)}")

    def status(self) -> tuple[str, str, list[InputInfo], int, str]:
        """This node's public status.

        Returns: (name, version, inputs' metadata, live session count, certificate expiry).
        """
        inputs = self.store.list_inputs()
        allowed = self.me.policy.inputs
        if allowed is not None:
            inputs = [i for i in inputs if i.name in allowed]
        # A vote hides its ballot count: the number of ballots a node holds is shown to no other party.
        inputs = [replace(i, length=0) if i.kind in COUNTS_HIDDEN else i for i in inputs]
        return self.me.name, __version__, inputs, len(self.sessions), self.cert_not_after

    # ---- peer side --------------------------------------------------------------------

    def admit(self, caller: Identity, session_id: str, sender: str) -> Session | None:
        """Check a peer message's header before reading its payload.

        Returns: the live session (None for a pool fill, which belongs to no session).
        Raises: AuthError if the claimed sender is not the caller or not a party;
        UnknownSession/SessionClosed.
        """
        if sender != caller.name or caller.role != "node":
            raise AuthError(f"message claims sender {sender!r} but the caller's certificate is {caller.uri()}")
        if session_id == POOL_CHANNEL:
            if sender not in self.cluster.nodes or sender == self.me.name:
                raise AuthError(f"node {sender!r} is not a peer of node {self.me.name}")
            return None
        session = self._live(session_id)
        if sender not in session.parties or sender == self.me.name:
            raise AuthError(f"node {sender!r} is not a peer in session {session_id}")
        return session

    def deliverable_now(self, session_id: str, step: str) -> bool:
        """Whether a message for this session and step would be handled without waiting (its session
        is live here and not busy, and the step is not one its engine runs in a worker thread)."""
        session = self.sessions.get(session_id)
        return session is not None and not session.lock.locked() and (
            session.engine is None or not session.engine.is_slow(step))

    def _wake_waiting(self, session_id: str) -> None:
        """Let the peers' messages waiting for this session (admit_waiting) look again now."""
        awaited = self._awaited.get(session_id)
        if awaited is not None:
            awaited[0].set()

    async def admit_waiting(self, caller: Identity, session_id: str, sender: str, may_wait: bool) -> Session | None:
        """As `admit`, but a message of a one-round session (may_wait: the sender says so) for a session
        this node has not heard of yet (its Run reached the peer first) waits up to SESSION_WAIT_S for
        it, at most MAX_WAITING_PER_PEER messages per peer at a time.

        Raises: as `admit` (UnknownSession at once, or once the wait is over, or when too many wait).
        """
        try:
            return self.admit(caller, session_id, sender)
        except UnknownSession:
            if not may_wait or not _SESSION_ID.match(session_id) or \
                    self._waiting.get(sender, 0) >= MAX_WAITING_PER_PEER:
                raise
        event, count = self._awaited.get(session_id, (None, 0))
        if event is None:
            event = asyncio.Event()
        self._awaited[session_id] = (event, count + 1)
        self._waiting[sender] = self._waiting.get(sender, 0) + 1
        try:
            async with asyncio.timeout(SESSION_WAIT_S):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting[sender] -= 1
            left = self._awaited[session_id][1] - 1
            if left:
                self._awaited[session_id] = (event, left)
            else:
                del self._awaited[session_id]
        return self.admit(caller, session_id, sender)

    async def deliver(self, caller: Identity, session_id: str, sender: str, step: str, payload: bytes,
                      may_wait: bool = False) -> None:
        """Feed one peer message to its session.

        Base-OT steps are modular exponentiations for about a second: they run in a worker
        thread so that the node keeps answering other sessions and health checks meanwhile.
        The session's lock keeps its engine to one message at a time either way.

        Raises: AuthError if the claimed sender is not the caller or not a party;
        UnknownSession/SessionClosed; RoundMismatch/RemoteProtocolError from the engine (the
        session then fails: a node that misbehaves ends the session, nothing is opened).
        """
        session = await self.admit_waiting(caller, session_id, sender, may_wait)
        if self.observer is not None:
            self.observer(session_id, sender, step, payload)
        if session is None:
            await self._accept_fill(sender, step, payload)
            return
        session.received_bytes += len(payload)
        peer = self.metrics.peer(sender)
        peer.received_bytes.inc(len(payload))
        peer.received_messages.inc()
        log.debug("session %s: %r from %s, %d bytes", session_id, step, sender, len(payload),
                  extra={"session": session_id})
        try:
            async with session.lock:
                engine = session.engine
                if engine is None:   # a peer started before our compute: keep it until the engine exists
                    if sum(1 for s, _, _ in session.early if s == sender) >= MAX_EARLY_PER_PEER:
                        raise RemoteProtocolError(f"session {session_id}: too many messages from peers before "
                                                  f"node {self.me.name} started computing")
                    session.early.append((sender, step, payload))
                    return
                events = await self._run_engine(engine, sender, step, payload)
        except MpcError as exc:
            self._finish(session, "failed", f"bad message from {sender}: {exc}")
            raise
        if self.sessions.get(session_id) is session:  # it may have ended while we computed
            self._dispatch(session, events)

    @staticmethod
    async def _run_engine(engine: AgreedParty, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Feed the engine one message; steps it calls slow (base OTs) run in a worker thread."""
        if engine.is_slow(step):
            return await asyncio.to_thread(engine.receive, sender, step, payload)
        return engine.receive(sender, step, payload)

    def close(self) -> None:
        """Drop every live session without touching the store (the node is stopping; its next
        start marks them interrupted), so that no deadline fires after the store is closed."""
        if self._filler is not None:
            self._filler.cancel()
            self._filler = None
        if self._deferred_write is not None:   # the store writes them when it closes
            self._deferred_write.cancel()
            self._deferred_write = None
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            self.releases.drop(session.session_id)
            if session.unrecorded is not None:   # a one-round session the next start could not mark
                try:
                    self.store.set_session_status(session.session_id, "interrupted", "node stopped during the "
                                                  "session", session.transfers(), session.unrecorded)
                except MpcError as exc:
                    log.error("session %s: cannot record it: %s", session.session_id, exc)
            if session.timer is not None:
                session.timer.cancel()
            for task in session.tasks:
                task.cancel()
            if not session.output.done():
                session.output.set_exception(SessionFailed(f"session {session.session_id}: node {self.me.name} "
                                                           f"is stopping"))
            session.output.add_done_callback(lambda f: f.cancelled() or f.exception())

    # ---- triple pools (mpc/ot/pool.py) --------------------------------------------------

    def start_pool_filler(self) -> None:
        """Begin filling this node's pools between sessions (the daemon calls it once serving)."""
        if self._filler is None and self.pools.enabled:
            self._filler = asyncio.get_running_loop().create_task(self._fill_pools(), name="pool-filler")

    async def stop_pool_filler(self) -> None:
        """Stop filling pools and wait until the filler has ended (the daemon is stopping: a fill in
        flight must not outlive the peer channels, nor the event loop)."""
        filler, self._filler = self._filler, None
        if filler is not None:
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)

    async def _fill_pools(self) -> None:
        """After each session, top up every pool a session drew from (or found short), one batch at
        a time and only while no session is live, so that fills never slow a session down."""
        while True:
            await self._pool_wake.wait()
            self._pool_wake.clear()
            for peer in sorted(self.cluster.nodes):
                if peer != self.me.name:
                    try:
                        await self._fill_peer(peer)
                    except Exception:   # a bug must not end the filler for the node's lifetime
                        log.exception("node %s: triple pool fill with %s failed", self.me.name, peer)

    async def _fill_peer(self, peer: str) -> None:
        while True:
            await self._idle.wait()
            words = self.pools.next_fill_words(peer)
            common = self.ot_setups.common(peer)
            if not words or common is None:
                return
            setup_id, pair = common
            paused = self._fill_backoff.get(peer)
            if paused is not None and paused[0] == setup_id and time.monotonic() < paused[1]:
                return
            held = self.pools.held(peer)   # now, on the loop, while no session is live (mpc/ot/pool.py)
            try:
                fill = await asyncio.to_thread(self.pools.make_fill, peer, setup_id, pair.as_receiver, words,
                                               self.rng, held)
                await self.peers.send(peer, POOL_CHANNEL, STEP_FILL, fill.payload, FILL_TIMEOUT_S)
            except MpcError as exc:   # the next sessions' triples come from IKNP; fills retry after a pause
                log.warning("node %s: triple pool fill with %s failed: %s", self.me.name, peer, exc)
                self._fill_backoff[peer] = (setup_id, time.monotonic() + FILL_BACKOFF_S)
                return
            self.pools.commit(fill)
            self.metrics.pool_sent_bytes.labels(peer).inc(len(fill.payload))
            log.debug("node %s: %d random OTs with %s made ahead", self.me.name, 64 * fill.words, peer)

    def fill_arriving(self, peer: str) -> None:
        """A pool fill from `peer` is about to be read whole (a Send, up to MAX_FILL_BYTES): one fill at a
        time per peer, read or taken, as a peer's filler sends them (`fill_read` once it is read).

        Raises: Busy if one from `peer` is still being read or taken.
        """
        self._check_one_fill(peer)
        self._fills_arriving.add(peer)

    def fill_read(self, peer: str) -> None:
        """The fill `fill_arriving` let in from `peer` is read (and goes on to be taken), or refused."""
        self._fills_arriving.discard(peer)

    def _check_one_fill(self, peer: str) -> None:
        """Raises: Busy if a fill from `peer` is being read (a Send) or taken (its worker thread runs on,
        whatever became of the call that brought it)."""
        if peer in self._fills_arriving or peer in self._fill_work:
            raise Busy(f"node {self.me.name} is still taking a triple pool fill from {peer}: one at a time")

    async def _accept_fill(self, sender: str, step: str, payload: bytes) -> None:
        """Store our side of a peer's pool fill (its IKNP extension, in a worker thread).

        Raises: RemoteProtocolError/RoundMismatch for a malformed, unknown-setup or replayed fill.
        """
        where = f"triple pool fill from {sender} to node {self.me.name}"
        if step != STEP_FILL:
            raise RemoteProtocolError(f"{where}: unknown step {quoted(step, 40)}")
        if not self.pools.enabled:
            raise PolicyError(f"{where}: this node keeps no triple pools (triple_pool = 0)")
        self._check_one_fill(sender)   # a fill comes by Deliver or a stream too: one at a time all the same
        setup = self.ot_setups.known(sender).get(payload[:16])
        # The extension runs to its end in its thread even if the call goes away: the peer's next fill
        # waits for it (`_check_one_fill`).
        self._fill_work.add(sender)
        await aio.in_thread_to_end(lambda: self._fill_work.discard(sender), self.pools.accept_fill, sender, payload,
                                   None if setup is None else setup.as_sender, where)
        self.metrics.pool_received_bytes.labels(sender).inc(len(payload))

    # ---- internals --------------------------------------------------------------------

    def _live(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is not None:
            return session
        record = self.store.get_session(session_id) if _SESSION_ID.match(session_id) else None
        if record is None:
            refusal = self._refusals.get(session_id)
            if refusal is not None:
                raise SessionClosed(f"session {session_id} was refused at node {self.me.name}: {refusal}")
            raise UnknownSession(f"unknown session {session_id[:40]!r} at node {self.me.name}")
        detail = f": {record.reason}" if record.reason else ""
        raise SessionClosed(f"session {session_id} is {record.status} at node {self.me.name}{detail}")

    def _dispatch(self, session: Session, events: list[Send | Output]) -> None:
        for event in events:
            if isinstance(event, Keep):
                try:
                    self._keep(session, event.words)
                except (OSError, UnicodeError, LocalProtocolError) as exc:
                    log.error("session %s: cannot deliver its result to this node's owner: %s", session.session_id,
                              exc, extra={"session": session.session_id})
                    self._finish(session, "failed", f"node {self.me.name} could not deliver its result: {exc}")
                    return
            elif isinstance(event, Output):
                if not session.output.done():
                    session.output.set_result(event.words)
            else:
                self._post(session, event)

    def _keep(self, session: Session, indices: Words) -> None:
        """Deliver a result meant for this node's owner alone (an intersection's common identifiers):
        written to a file in its data directory, readable by the owner only; it goes to no one."""
        data_dir = self.me.data_dir
        if data_dir is None:
            raise LocalProtocolError(f"node {self.me.name} has no data_dir to deliver a result to")
        folder = Path(data_dir) / "intersections"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{session.stored.name}-{session.session_id}.csv"
        rows = [session.identifiers[int(i)].decode("utf-8", "surrogateescape") for i in sorted(indices.tolist())]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["id"])
            writer.writerows([r] for r in rows)
        log.info("session %s: %d common identifiers of %r delivered to %s", session.session_id, len(rows),
                 session.stored.name, path, extra={"session": session.session_id})

    def _post(self, session: Session, event: Send) -> None:
        """Hand one message to the peer transport; it goes out without a task or timer of its own
        (mpc/transport/peers.py), and a failure to deliver it fails the session."""
        # Counted as it leaves: the audit log and the metrics agree on what was sent.
        session.count_sent(traffic_kind(event.step), event.to, len(event.payload))
        peer = self.metrics.peer(event.to)
        peer.sent_bytes.inc(len(event.payload))
        peer.sent_messages.inc()
        log.debug("session %s: %s to %s, %d bytes", session.session_id, event.step, event.to, len(event.payload),
                  extra={"session": session.session_id})
        to, unsent = event.to, session.unsent
        started = time.perf_counter()

        def done(failure: MpcError | None) -> None:
            left = unsent[to] - 1
            if left:
                unsent[to] = left
            else:
                del unsent[to]
                if not unsent and session.all_sent is not None:
                    session.all_sent.set()
            if failure is None:
                peer.round_seconds.observe(time.perf_counter() - started)
                return
            session.send_errors.append(failure)
            if not session.output.done():
                session.output.set_exception(failure)

        def adopt(task: asyncio.Task[None]) -> None:   # a call of its own: cancelled if the session ends
            session.tasks.add(task)
            task.add_done_callback(session.tasks.discard)
            if event.step == STEP_DIGEST:
                session.digests.add(task)
                task.add_done_callback(session.digests.discard)

        self.peers.post(to, session.session_id, event.step, event.payload, session.deadline, done, adopt)
        unsent[to] = unsent.get(to, 0) + 1   # `done` never runs before post returns

    def _expire(self, session: Session) -> None:
        if self.sessions.get(session.session_id) is session:
            waiting = "" if session.engine is None else ", ".join(session.engine.waiting_for)
            reason = "session timed out" + (f" waiting for {waiting}" if waiting else "")
            log.warning("session %s: %s", session.session_id, reason, extra={"session": session.session_id})
            self._finish(session, "failed", reason)

    def _finish(self, session: Session, status: str, reason: str) -> None:
        """End a session: its status and audit entry, metrics and log line. status "refused": a
        one-round session its owner's policy refused before anything was shared, recorded as a
        refused request (`refused`: no session row), as its prepare would have in two rounds."""
        if self.sessions.pop(session.session_id, None) is None:
            return
        if not self.sessions:
            self._idle.set()
        self._pool_wake.set()
        self.releases.drop(session.session_id)
        if session.timer is not None:
            session.timer.cancel()
        if not session.output.done():
            session.output.set_exception(SessionFailed(f"session {session.session_id} {status} at node "
                                                       f"{self.me.name}: {reason}"))
        # The output future may never be awaited (e.g. expired before compute); mark its
        # exception retrieved so asyncio does not log it as lost.
        session.output.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Our session digests still go out (each bounded by the session's deadline): a peer then
        # learns at once that the descriptions differ instead of waiting for ours until then.
        for task in session.tasks - session.digests:
            task.cancel()
        if status == "refused":
            if session.unrecorded is not None:
                self.refused(session.coordinator, session.session_id, session.protocol.name, session.stored.name,
                             list(session.parties), PolicyError(reason))
                return
            status = "failed"   # recorded already: it ends as a failed session
        self.metrics.sessions.labels(session.protocol.name, status).inc()
        counts = None if session.engine is None else session.engine.triple_counts
        if counts is not None:
            self.metrics.triples_generated.inc(counts[0])
            self.metrics.triples_consumed.inc(counts[1])
        if session.ended:   # recorded "done" with its release, and nothing could fail after that
            if status != "done":   # pragma: no cover - compute neither waits nor fails after such a release
                log.error("session %s %s after its end was recorded as done with its release", session.session_id,
                          status, extra={"session": session.session_id})
        else:
            try:
                self.store.set_session_status(session.session_id, status, reason, session.transfers(),
                                              session.unrecorded)
            except MpcError as exc:  # pragma: no cover - the store refuses only impossible transitions
                raise LocalProtocolError(str(exc)) from exc
        extra = {"session": session.session_id}
        released = f"; released {session.released}" if session.released else ""
        if status == "done":
            # A repeated query in one round, at debug as its prepare is (the audit log has every session).
            level = logging.DEBUG if session.one_round and session.repeat else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "session %s done, %d bytes sent%s", session.session_id,
                        sum(n for _, n in session.sent.values()), released, extra=extra)
        else:
            log.warning("session %s %s: %s%s", session.session_id, status, reason, released, extra=extra)
