"""Beaver bit triples without a dealer, from random OT (PROTOCOLS.md §3): the multiplication
triples of Demmler, Schneider, Zohner, "ABY", NDSS 2015, §III, over the random OTs of Asharov,
Lindell, Schneider, Zohner, "More Efficient Oblivious Transfer and Extensions for Faster
Secure Computation", CCS 2013 (§5: IKNP with a correlation-robust hash), for n parties.

Every party P_i draws its own a_i, b_i. For every ordered pair (P_i receiver, P_j sender) one
batch of 1-bit random OTs (IKNP, mpc/ot/extension.py) gives P_j (m0, m1) and P_i m_{a_i}; P_j
sends t = m0 ⊕ m1 ⊕ b_j and keeps v = m0; P_i sets u = m_{a_i} ⊕ (a_i ∧ t) = m0 ⊕ (a_i ∧ b_j).
Then c_i = (a_i ∧ b_i) ⊕ ⊕_{j≠i} (u_{i←j} ⊕ v_{i→j}) and ⊕ c_i = (⊕ a_i) ∧ (⊕ b_i).

Three sans-I/O pieces, all per party (Send events from mpc/events.py):
- `PairwiseOtSetup(me, parties, rng)`: the one-off base OTs (Chou-Orlandi, mpc/ot/base.py) in
  both directions with every peer: steps "ot/base/a" then "ot/base/b". It ends with an
  `OtReady` event whose `pairs[peer]` is a `PairwiseOt`, to keep for the node's lifetime.
- `TripleDealerless(me, parties, words, rng, ot)`: one triple session of 64 * words AND gates
  over IKNP extensions only: steps "triples/u" (IKNP message) then "triples/t" (corrections).
  It ends with a `BitTriples(a, b, c)` event (defined here; the Beaver AND gates of
  mpc/protocols/beaver.py consume it): this party's XOR shares, packed uint64 words. With a
  `layout`, the words come in runs each among its own holders (a bit mask of party indices, ALL for
  every party): a party holds the runs it is among, and each pair makes (and spends the OTs of)
  only the runs both are among; c is then correct among each run's holders, zero elsewhere.
  Sessions over the same `PairwiseOt`s may run concurrently (each IKNP extension reserves
  its own PRG window; a window used twice raises RoundMismatch).
- `TriplePool`: one party's triples, handed out as disjoint word ranges, each exactly once
  (a `TripleSource`).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Send
from mpc.ot.base import ChouOrlandiReceiver, ChouOrlandiSender
from mpc.ot.extension import KAPPA, IknpReceiver, IknpSender
from mpc.ot.pool import (
    SETUP_ID_BYTES,
    Reservation,
    RotPools,
    Segment,
    ids_from_bytes,
    ids_to_bytes,
    segments_from_bytes,
    segments_to_bytes,
)
from mpc.prg import Rng, random_words
from mpc.ring import Words, words_from_bytes, words_to_bytes

STEP_BASE_A = "ot/base/a"
STEP_BASE_B = "ot/base/b"
STEP_U = "triples/u"
STEP_T = "triples/t"
STEP_R = "triples/r"

# Who takes part in a group of AND gates: a bit mask over the session's party indices (bit i: party
# i). ALL (-1, every bit set) is every party, whatever their number. A gate whose inputs only some
# parties hold shares of runs among them alone, on triples made among them alone: each pair makes
# the words of the holder sets it is in (mpc/protocols/compare.py's carry-save adders).
Holders = int
ALL: Holders = -1
# A session's triple words by holders, in the order every party lays them out (by mask, ALL first).
Layout = tuple[tuple[Holders, int], ...]


def holds(holders: Holders, index: int) -> bool:
    """Whether party `index` is among `holders`."""
    return bool(holders >> index & 1)


def first_holder(holders: Holders, index: int) -> bool:
    """Whether party `index` is the lowest-indexed of `holders` (the one that adds public constants)."""
    return holders & -holders == 1 << index


def held_runs(layout: Layout, index: int) -> list[tuple[Holders, int, int]]:
    """The runs of a layout party `index` holds, laid out one after another: (holders, start, words)."""
    runs, start = [], 0
    for holders, words in layout:
        if holds(holders, index):
            runs.append((holders, start, words))
            start += words
    return runs


@dataclass(frozen=True, slots=True, eq=False)
class BitTriples:
    """One party's XOR shares of packed AND-gate triples: bitwise c = a & b after reconstruction."""

    a: Words
    b: Words
    c: Words

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            words = getattr(self, name)
            if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.ndim != 1:
                raise LocalProtocolError(f"triple share {name} must be a 1-D uint64 array")
        if not self.a.shape == self.b.shape == self.c.shape:
            raise LocalProtocolError(f"triple shares differ in length: a {self.a.size}, "
                                     f"b {self.b.size}, c {self.c.size} words")

    @property
    def words(self) -> int:
        """The number of packed triple words (64 AND gates each).

        Returns: len(a) == len(b) == len(c).
        """
        return int(self.a.size)

    def __repr__(self) -> str:
        return f"BitTriples({self.words} words, <shares redacted>)"

    def __bool__(self) -> bool:
        raise TypeError("triple shares have no truth value")


class TripleSource(Protocol):
    """Where one party draws its triple shares; every party draws in the same order."""

    def take(self, words: int, holders: Holders = ALL) -> BitTriples:
        """Hand out the next `words` triple words among `holders`, disjoint from every earlier take.

        Returns: this party's shares of `words` fresh triples (zeros where it is not among `holders`).
        Raises: LocalProtocolError when exhausted, or when asked for words already handed out.
        """
        ...


def _check_parties(me: str, parties: Sequence[str]) -> tuple[str, ...]:
    if me not in parties:
        raise LocalProtocolError(f"{me!r} is not among the parties {list(parties)}")
    if len(set(parties)) != len(parties):
        raise LocalProtocolError(f"parties repeat: {list(parties)}")
    if len(parties) < 2:
        raise LocalProtocolError(f"OT needs at least two parties, got {list(parties)}")
    return tuple(p for p in parties if p != me)


def _base_context(session_id: str, base_sender: str, base_receiver: str) -> bytes:
    """Binds each base OT batch to the setup and the direction (length-prefixed UTF-8)."""
    parts = [session_id.encode(), base_sender.encode(), base_receiver.encode()]
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


@dataclass(frozen=True, slots=True)
class PairwiseOt:
    """The lifetime OT state of this party with one peer: an IKNP instance for each direction."""

    peer: str
    as_receiver: IknpReceiver  # we were the base-OT sender: P_i with choices a_i, peer is P_j
    as_sender: IknpSender      # we were the base-OT receiver: P_j, peer is P_i

    def __repr__(self) -> str:
        return f"PairwiseOt(peer={self.peer!r}, <keys redacted>)"


@dataclass(frozen=True, slots=True)
class OtReady:
    """The setup is complete: `pairs[peer]` is this party's OT state with each peer."""

    pairs: Mapping[str, PairwiseOt]

    def __repr__(self) -> str:
        return f"OtReady(peers={sorted(self.pairs)!r})"


class OtSetups:
    """The OT setups a node keeps with each peer for its lifetime, by setup id, newest last.

    Sessions reuse a setup both ends still hold (the "hello" of mpc/protocols/compute.py) and
    add the ones they make; at most `per_peer` are kept per peer, the oldest dropped first.
    """

    def __init__(self, per_peer: int = 4, pools: RotPools | None = None) -> None:
        """Args:
            pools: the node's random OTs made ahead of time with each peer (mpc/ot/pool.py), if any.
        """
        if per_peer < 1:
            raise LocalProtocolError(f"an OT setup registry keeps at least one setup per peer, got {per_peer}")
        self.per_peer = per_peer
        self.pools = pools
        self._common: dict[str, bytes] = {}
        self._by_peer: dict[str, dict[bytes, PairwiseOt]] = {}
        # Sessions add setups from the worker thread that runs base OTs, and read them on the event loop.
        self._lock = threading.Lock()

    def known(self, peer: str) -> dict[bytes, PairwiseOt]:
        """The setups kept with `peer`, oldest first (a copy).

        Returns: setup id -> PairwiseOt.
        """
        with self._lock:
            return dict(self._by_peer.get(peer, {}))

    def common(self, peer: str) -> tuple[bytes, PairwiseOt] | None:
        """The setup with `peer` that the last session with it used (so both ends held it then),
        with its id, if this node still keeps it (None: none)."""
        with self._lock:
            setup_id = self._common.get(peer)
            pair = self._by_peer.get(peer, {}).get(setup_id) if setup_id is not None else None
            return None if setup_id is None or pair is None else (setup_id, pair)

    def used(self, peer: str, setup_id: bytes) -> None:
        """A session with `peer` used this setup (both ends hold it): the one pool fills use."""
        with self._lock:
            self._common[peer] = setup_id

    def add(self, peer: str, setup_id: bytes, pair: PairwiseOt) -> None:
        """Keep a new setup with `peer`, dropping the oldest beyond `per_peer`."""
        with self._lock:
            setups = self._by_peer.setdefault(peer, {})
            setups[setup_id] = pair
            while len(setups) > self.per_peer:
                del setups[next(iter(setups))]

    def __repr__(self) -> str:
        return f"OtSetups({ {p: len(s) for p, s in self._by_peer.items()} }, <keys redacted>)"


# A session's "hello" to a peer (mpc/protocols/compute.py, mpc/protocols/psi.py): the ids of the
# setups it still holds with that peer, so that both ends agree, without a round of their own, on
# reusing one (the newest they share) or making a fresh one.
MAX_SETUPS_ADVERTISED = 8


def hello_payload(known: Mapping[bytes, PairwiseOt]) -> bytes:
    """The ids this party advertises to a peer: the newest MAX_SETUPS_ADVERTISED it holds with it."""
    return b"".join(sorted(known)[-MAX_SETUPS_ADVERTISED:])


def parse_hello(payload: bytes, where: str) -> set[bytes]:
    """A peer's advertised setup ids. Raises: RemoteProtocolError naming `where` for a malformed payload."""
    if len(payload) % SETUP_ID_BYTES or len(payload) > SETUP_ID_BYTES * MAX_SETUPS_ADVERTISED:
        raise RemoteProtocolError(f"{where} has {len(payload)} bytes")
    return {payload[i:i + SETUP_ID_BYTES] for i in range(0, len(payload), SETUP_ID_BYTES)}


@dataclass(frozen=True, slots=True)
class Hello:
    """A peer's hello in a program session: its setup ids with us, the range of its pool with us it
    reserved for this session (it chooses), and the batches of ours it holds (it sends)."""

    setups: frozenset[bytes]
    reserved: tuple[Segment, ...]
    holdings: frozenset[bytes]


def session_hello(known: Mapping[bytes, PairwiseOt], reserved: Reservation | None, holdings: Sequence[bytes]) -> bytes:
    """The hello of a program session to one peer (mpc/protocols/compute.py): a count byte and the
    setup ids (as hello_payload), then the pool reservation and holdings (mpc/ot/pool.py)."""
    ids = hello_payload(known)
    segments = () if reserved is None else reserved.segments
    return bytes([len(ids) // SETUP_ID_BYTES]) + ids + segments_to_bytes(segments) + ids_to_bytes(holdings)


def parse_session_hello(payload: bytes, where: str) -> Hello:
    """A peer's session hello. Raises: RemoteProtocolError naming `where` for a malformed payload."""
    if not payload:
        raise RemoteProtocolError(f"{where} is empty")
    end = 1 + payload[0] * SETUP_ID_BYTES
    setups = parse_hello(payload[1:end], where)
    if end > len(payload):
        raise RemoteProtocolError(f"{where} has {len(payload)} bytes, too few for its setup ids")
    reserved, end = segments_from_bytes(payload, end, where)
    holdings, end = ids_from_bytes(payload, end, where)
    if end != len(payload):
        raise RemoteProtocolError(f"{where} has {len(payload) - end} bytes after its end")
    return Hello(frozenset(setups), reserved, frozenset(holdings))


def choose_setups(hellos: Mapping[str, set[bytes]], known: Mapping[str, Mapping[bytes, PairwiseOt]],
                  chosen: dict[str, PairwiseOt]) -> list[str]:
    """Reuse, for every peer, the newest setup both ends hold (into `chosen`).

    Returns: the peers with none in common, for whom a fresh PairwiseOtSetup is needed.
    """
    fresh = []
    for peer, advertised in hellos.items():
        common = advertised & set(known[peer])
        if common:
            chosen[peer] = known[peer][max(common)]
        else:
            fresh.append(peer)
    return fresh


def keep_ready(setups: OtSetups, session_id: str, ready: OtReady, chosen: dict[str, PairwiseOt]) -> None:
    """A fresh setup is complete: use it in this session and keep it, under an id from the session's."""
    setup_id = bytes.fromhex(session_id)[:SETUP_ID_BYTES]
    for peer, pair in ready.pairs.items():
        chosen[peer] = pair
        setups.add(peer, setup_id, pair)
        setups.used(peer, setup_id)


class PairwiseOtSetup:
    """Base OTs in both directions between this party and each peer (PROTOCOLS.md §4).

    Towards each peer we are the base-OT sender (and so the IKNP receiver) once, and the
    base-OT receiver with a fresh random s (and so the IKNP sender) once.
    """

    def __init__(self, me: str, parties: Sequence[str], rng: Rng, session_id: str = "ot-setup") -> None:
        self.me = me
        self.session_id = session_id
        self.peers = _check_parties(me, parties)
        self._senders = {p: ChouOrlandiSender(rng, KAPPA, _base_context(session_id, me, p)) for p in self.peers}
        self._receivers: dict[str, tuple[bytes, ChouOrlandiReceiver]] = {}
        for p in self.peers:
            s = rng.random_bytes(KAPPA // 8)
            bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8), bitorder="little").tolist()
            self._receivers[p] = (s, ChouOrlandiReceiver(bits, rng, _base_context(session_id, p, me)))
        self._as_receiver: dict[str, IknpReceiver] = {}
        self._as_sender: dict[str, IknpSender] = {}
        self._started = False
        self._done = False

    def start(self) -> list[Send | OtReady]:
        """Send our A to every peer.

        Returns: one Send per peer.
        Raises: LocalProtocolError if started twice.
        """
        if self._started:
            raise LocalProtocolError(f"OT setup {self.session_id}: already started")
        self._started = True
        return [Send(p, STEP_BASE_A, self._senders[p].first_message()) for p in self.peers]

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | OtReady]:
        """Answer a peer's A with our B's, or finish our batch with a peer's B's.

        Returns: a Send of our B's for an A; OtReady once every batch of both directions is done.
        Raises: RemoteProtocolError for an unknown sender or a malformed or invalid message;
        RoundMismatch for a wrong step, a repeated message or B's before our A went out.
        """
        where = f"OT setup {self.session_id}: from {sender!r} to {self.me!r}"
        if sender not in self.peers:
            raise RemoteProtocolError(f"{where}: not a peer of this setup")
        events: list[Send | OtReady] = []
        if step == STEP_BASE_A:
            if sender in self._as_sender:
                raise RoundMismatch(f"{where}: {STEP_BASE_A!r} received twice")
            s, receiver = self._receivers[sender]
            reply = receiver.respond(payload)
            self._as_sender[sender] = IknpSender(s, receiver.keys())
            events.append(Send(sender, STEP_BASE_B, reply))
        elif step == STEP_BASE_B:
            if sender in self._as_receiver or not self._started:
                raise RoundMismatch(f"{where}: {STEP_BASE_B!r} unexpected (repeated, or before our A)")
            self._as_receiver[sender] = IknpReceiver(self._senders[sender].finish(payload))
        else:
            raise RoundMismatch(f"{where}: expected {STEP_BASE_A!r} or {STEP_BASE_B!r}, got {step!r}")
        if not self._done and len(self._as_sender) == len(self._as_receiver) == len(self.peers):
            self._done = True
            events.append(OtReady({p: PairwiseOt(p, self._as_receiver[p], self._as_sender[p]) for p in self.peers}))
        return events


class TripleDealerless:
    """One party of a dealerless bit-triple session: 64 * words triples (PROTOCOLS.md §3).

    Each direction of each pair (we choose a_i, the peer's b_j; and the reverse) runs either an
    IKNP extension now ("triples/u" then "triples/t") or, when both ends hold random OTs made ahead
    of time for it (mpc/ot/pool.py), one derandomisation message "triples/r" that carries, for
    the peer, d = a_i ⊕ c where we are the receiver and t = b_i ⊕ m0 ⊕ m1 where we are the sender.
    Messages from peers may arrive before `start`; they are kept until it runs.
    """

    def __init__(self, me: str, parties: Sequence[str], words: int, rng: Rng,
                 ot: Mapping[str, PairwiseOt], session_id: str = "", *,
                 pooled_recv: Mapping[str, Reservation] | None = None,
                 pooled_send: Mapping[str, tuple[Words, Words]] | None = None, pipelined: bool = False,
                 layout: Layout | None = None) -> None:
        """Args:
            words: the session's triple words over every holder set.
            ot: the OT setup with every peer that has a direction left for IKNP.
            pooled_recv: per peer, our reservation of its pool where we choose (its words: the pair's).
            pooled_send: per peer, our (m0, m1) of the range it reserved where it chooses.
            pipelined: `start` also hands out the PendingTriples, so that a program may open its first
                AND layer while the triples are made.
            layout: the words by holders (indices into `parties`), in the order of Layout; None: all
                `words` among every party. We hold the runs we are among, one after another, and
                make with each peer the words of the runs it is among too (none: no message).
        """
        self.me = me
        self.session_id = session_id
        self.peers = _check_parties(me, parties)
        layout = ((ALL, words),) if layout is None else tuple(layout)
        if words < 1 or sum(n for _, n in layout) != words or any(n < 1 for _, n in layout):
            raise LocalProtocolError(f"triples {session_id}: need at least one word, in runs of at least one, got "
                                     f"{words} words in runs {[n for _, n in layout]}")
        index = list(parties).index(me)
        runs = held_runs(layout, index)
        self.words = sum(n for _, _, n in runs)   # the words we hold shares of
        self._rows: dict[str, npt.NDArray[np.intp] | None] = {}   # per peer, our words it makes with us
        for j, p in enumerate(parties):
            if p == me:
                continue
            shared = [(start, n) for holders, start, n in runs if holds(holders, j)]
            if sum(n for _, n in shared) == self.words:
                self._rows[p] = None
            elif shared:
                self._rows[p] = np.concatenate([np.arange(a, a + n, dtype=np.intp) for a, n in shared])
        self._pair = {p: self.words if r is None else int(r.size) for p, r in self._rows.items()}
        self._pooled_recv = dict(pooled_recv or {})
        self._pooled_send = dict(pooled_send or {})
        needs_ot = [p for p in self._pair if p not in self._pooled_recv or p not in self._pooled_send]
        missing = [p for p in needs_ot if p not in ot]
        if missing:
            raise LocalProtocolError(f"triples {session_id}: no OT setup with {missing}")
        if any(p not in self._pair or r.words != self._pair[p] for p, r in self._pooled_recv.items()) or \
                any(p not in self._pair or m0.shape != (self._pair[p],) or m1.shape != (self._pair[p],)
                    for p, (m0, m1) in self._pooled_send.items()):
            raise LocalProtocolError(f"triples {session_id}: pooled OTs of another size than the pairs' "
                                     f"{self._pair} words")
        self._pipelined = pipelined
        self._ot = {p: ot[p] for p in needs_ot}
        self._rng = rng
        self._shares: tuple[Words, Words, Words] | None = None  # a_i, b_i and the running c_i
        self._chosen: dict[str, Words] = {}   # m_{a_i} from each peer's OTs, until its t comes
        self._early: dict[tuple[str, str], bytes] = {}    # (peer, step) received before start
        self._answered: set[str] = set()      # peers whose u we answered with t
        self._derandomised: set[str] = set()  # peers whose "triples/r" we took
        self.pooled = len(self._pooled_recv) + len(self._pooled_send)   # directions served from pools
        self._pending = len(self._pair) * 2   # directions left: one per peer as receiver, one as sender
        self._done = False

    def pair_words(self, peer: str) -> int:
        """The words we make with `peer` in each direction (0: it shares no gate with us)."""
        return self._pair.get(peer, 0)

    def _part(self, words: Words, peer: str) -> Words:
        rows = self._rows[peer]
        return words if rows is None else words[rows]

    def _fold(self, c: Words, peer: str, value: Words) -> None:
        rows = self._rows[peer]
        if rows is None:
            c ^= value
        else:
            c[rows] ^= value

    def start(self) -> list[Send | BitTriples | PendingTriples]:
        """Draw a_i, b_i; send each peer the IKNP message of the OTs where we choose a_i, or the
        derandomisation of its pooled directions.

        Returns: (pipelined only) PendingTriples first: a_i, b_i, and c_i as it is completed in place;
        the Sends, plus answers to messages that came early.
        Raises: LocalProtocolError if started twice; as `receive` for messages kept from before.
        """
        if self._shares is not None or self._done:
            raise LocalProtocolError(f"triples {self.session_id}: already started")
        a = random_words(self._rng, self.words)
        b = random_words(self._rng, self.words)
        self._shares = (a, b, a & b)
        events: list[Send | BitTriples | PendingTriples] = []
        if self._pipelined:
            events.append(PendingTriples(BitTriples(*self._shares)))
        for p in self._pair:
            parts = []
            a_p = self._part(a, p)
            if p in self._pooled_recv:
                parts.append(a_p ^ self._pooled_recv[p].choices)     # d = a_i ⊕ c
            else:
                message, chosen = self._ot[p].as_receiver.extend(a_p, 64 * self._pair[p])
                self._chosen[p] = chosen
                events.append(Send(p, STEP_U, message))
            if p in self._pooled_send:
                m0, m1 = self._pooled_send[p]
                parts.append(self._part(b, p) ^ m0 ^ m1)              # t = b_i ⊕ m0 ⊕ m1
            if parts:
                events.append(Send(p, STEP_R, words_to_bytes(np.concatenate(parts))))
        early, self._early = self._early, {}
        for (p, step), payload in early.items():
            events += self.receive(p, step, payload)
        return events + self._maybe_done()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | BitTriples]:
        """Answer a peer's IKNP message with the correction t, or take a peer's correction or
        derandomisation.

        Returns: a Send of t for an IKNP message; BitTriples once every direction is done.
        Raises: RemoteProtocolError for an unknown sender or a malformed message; RoundMismatch
        for a wrong step, a repeated message, or a t before our IKNP message went out.
        """
        where = f"triples {self.session_id}: from {sender!r} to {self.me!r}"
        if sender not in self.peers:
            raise RemoteProtocolError(f"{where}: not a party of this session")
        if sender not in self._pair:
            raise RoundMismatch(f"{where}: {step!r}, but this session's gates need no triples between them")
        if step not in (STEP_U, STEP_T, STEP_R):
            raise RoundMismatch(f"{where}: expected {STEP_U!r}, {STEP_T!r} or {STEP_R!r}, got {step!r}")
        if step == STEP_U and sender in self._pooled_send or step == STEP_R and sender not in self._pooled_send \
                and sender not in self._pooled_recv:
            raise RoundMismatch(f"{where}: {step!r} but the hellos chose otherwise for this pair")
        if self._done:
            raise RoundMismatch(f"{where}: {step!r} after the triples were made")
        if step == STEP_U and sender in self._answered or step == STEP_R and sender in self._derandomised:
            raise RoundMismatch(f"{where}: {step!r} received twice")
        if self._shares is None:
            if step == STEP_T or (sender, step) in self._early:
                raise RoundMismatch(f"{where}: {step!r} unexpected (repeated, or before our {STEP_U!r})")
            self._early[(sender, step)] = payload
            return []
        if step == STEP_U:
            return self._answer(sender, payload)
        if step == STEP_R:
            return self._derandomise(sender, payload, where)
        if sender not in self._chosen:
            raise RoundMismatch(f"{where}: {STEP_T!r} unexpected (repeated, or before our {STEP_U!r})")
        try:
            t = words_from_bytes(payload, self._pair[sender])
        except ValueError as exc:
            raise RemoteProtocolError(f"{where}: correction: {exc}") from None
        a, _, c = self._shares
        self._fold(c, sender, self._chosen.pop(sender) ^ (self._part(a, sender) & t))  # u = m_{a_i} ⊕ (a_i ∧ t)
        self._pending -= 1
        return self._maybe_done()

    def _derandomise(self, sender: str, payload: bytes, where: str) -> list[Send | BitTriples]:
        assert self._shares is not None
        parts = (sender in self._pooled_send) + (sender in self._pooled_recv)
        n = self._pair[sender]
        try:
            words = words_from_bytes(payload, parts * n)
        except ValueError as exc:
            raise RemoteProtocolError(f"{where}: derandomisation: {exc}") from None
        self._derandomised.add(sender)
        a, _, c = self._shares
        rest = words
        if sender in self._pooled_send:       # it chose: d = a_j ⊕ c_j; v = m0 ⊕ (d ∧ (m0 ⊕ m1))
            m0, m1 = self._pooled_send[sender]
            self._fold(c, sender, m0 ^ (rest[:n] & (m0 ^ m1)))
            rest = rest[n:]
        if sender in self._pooled_recv:       # it sent t = b_j ⊕ m0 ⊕ m1; u = m_c ⊕ (a_i ∧ t)
            self._fold(c, sender, self._pooled_recv[sender].chosen ^ (self._part(a, sender) & rest))
        self._pending -= parts
        return self._maybe_done()

    def _answer(self, peer: str, payload: bytes) -> list[Send | BitTriples]:
        if self._shares is None:
            raise LocalProtocolError(f"triples {self.session_id}: answering before start")
        _, b, c = self._shares
        m0, m1 = self._ot[peer].as_sender.extend(64 * self._pair[peer], payload)
        self._answered.add(peer)
        self._fold(c, peer, m0)  # v_{i->j} = m0
        self._pending -= 1
        t = m0 ^ m1 ^ self._part(b, peer)
        return [Send(peer, STEP_T, words_to_bytes(t)), *self._maybe_done()]

    def _maybe_done(self) -> list[Send | BitTriples]:
        if self._pending or self._done or self._shares is None:
            return []
        self._done = True
        (a, b, c), self._shares = self._shares, None
        self._pooled_recv, self._pooled_send = {}, {}   # spent: nothing of them is kept
        return [BitTriples(a, b, c)]


@dataclass(frozen=True, slots=True, eq=False)
class PendingTriples:
    """A dealerless session's triples as soon as it starts: a_i and b_i are drawn, c_i is still
    being completed in place as the pairs' OTs come in (BitTriples follows with the same arrays).

    A Beaver opening needs only a_i and b_i, so a program's first AND layer may open while the
    triples are made; only finishing it needs c_i (mpc/protocols/compute.py waits for that).
    """

    triples: BitTriples

    def __repr__(self) -> str:
        return f"PendingTriples({self.triples.words} words, <shares redacted>)"


class TriplePool:
    """One party's triples for a session; `take` hands out each word range once, in order per holder set.

    The pool holds the runs of its session's layout this party is among, one after another
    (TripleDealerless's order); a take among holders it is not among gets zeros.
    """

    __slots__ = ("_a", "_b", "_c", "_runs", "_index", "handed_out", "_live")

    def __init__(self, triples: BitTriples | None = None, layout: Layout | None = None, index: int = 0) -> None:
        """Args:
            layout: the session's layout (None: every word among every party); index: this party's.
        """
        empty = np.zeros(0, dtype=np.uint64)
        self._a, self._b, self._c = empty, empty.copy(), empty.copy()
        self._runs: dict[Holders, list[int]] = {ALL: [0, 0]}   # holders -> [next word, end]
        self._index = index
        self.handed_out = 0  # words handed out over the pool's life (for metrics)
        self._live = False   # the arrays are a session's still being completed (`pending`)
        if triples is not None:
            self.add(triples, layout)

    @classmethod
    def pending(cls, triples: BitTriples, layout: Layout | None = None, index: int = 0) -> TriplePool:
        """A pool over triples whose c is still being completed in place (PendingTriples): `take`
        hands out views, which see c complete once the session has made it, and zeroes nothing
        (the arrays are the triple session's own until then). Whoever takes must not read c before.
        """
        pool = cls(None, None, index)
        pool._a, pool._b, pool._c = triples.a, triples.b, triples.c
        pool._runs = cls._layout_runs(triples, layout, index)
        pool._live = True
        return pool

    @staticmethod
    def _layout_runs(triples: BitTriples, layout: Layout | None, index: int) -> dict[Holders, list[int]]:
        runs = {h: [start, start + n] for h, start, n in held_runs(((ALL, triples.words),) if layout is None
                                                                   else layout, index)}
        if sum(end - start for start, end in runs.values()) != triples.words:
            raise LocalProtocolError(f"{triples.words} triple words for a layout whose runs party {index} holds "
                                     f"are {sum(end - start for start, end in runs.values())} words")
        return runs

    @property
    def remaining(self) -> int:
        """Words not handed out yet."""
        return sum(end - start for start, end in self._runs.values())

    def add(self, triples: BitTriples, layout: Layout | None = None) -> None:
        """Keep a session's triples: appended after the words still in the pool (copied), if both are
        among every party; else into an empty pool, by `layout`.

        Returns: None.
        Raises: LocalProtocolError for a layout on a pool that still holds words, or words that do not fit it.
        """
        if layout is not None and any(h != ALL for h, _ in layout):
            if self.remaining:
                raise LocalProtocolError(f"a triple pool with {self.remaining} words left takes no layout of holders")
            self._a, self._b, self._c = (np.array(x, dtype=np.uint64) for x in (triples.a, triples.b, triples.c))
            self._runs = self._layout_runs(triples, layout, self._index)
            return
        if set(self._runs) != {ALL}:
            raise LocalProtocolError("a triple pool of holder sets takes no more triples")
        start, end = self._runs[ALL]
        self._a = np.concatenate([self._a[start:end], triples.a]).astype(np.uint64)
        self._b = np.concatenate([self._b[start:end], triples.b]).astype(np.uint64)
        self._c = np.concatenate([self._c[start:end], triples.c]).astype(np.uint64)
        self._runs = {ALL: [0, int(self._a.size)]}

    def take(self, words: int, holders: Holders = ALL) -> BitTriples:
        """Hand out the next `words` words of triples among `holders`; the pool forgets them.

        Returns: read-only BitTriples of that many words (zeros for holders this party is not among).
        Raises: LocalProtocolError ("triple reuse refused") if fewer are left; also if words < 1.
        """
        if words < 1:
            raise LocalProtocolError(f"a triple take needs at least one word, got {words}")
        if not holds(holders, self._index):
            zero = np.zeros(words, dtype=np.uint64)
            zero.flags.writeable = False
            return BitTriples(zero, zero, zero)
        run = self._runs.get(holders)
        left = 0 if run is None else run[1] - run[0]
        if run is None or words > left:
            raise LocalProtocolError(f"triple reuse refused: asked for {words} words among holders {holders:#x}, "
                                     f"{left} left")
        span = slice(run[0], run[0] + words)
        parts = []
        for arr in (self._a, self._b, self._c):
            if self._live:
                part = arr[span]
            else:
                part = arr[span].copy()
                arr[span] = 0  # the pool keeps nothing it has handed out
            part.flags.writeable = False
            parts.append(part)
        run[0] += words
        self.handed_out += words
        return BitTriples(parts[0], parts[1], parts[2])
