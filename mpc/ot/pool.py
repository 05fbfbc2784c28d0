"""Random OTs made ahead of time, per ordered pair of nodes, and spent once each by sessions
(D. Beaver, "Precomputing Oblivious Transfer", CRYPTO 1995; PROTOCOLS.md §3).

Between sessions a node R runs IKNP (mpc/ot/extension.py) with each peer S as the extension
receiver, with uniformly random choice bits c: it keeps (c, m_c) and S keeps (m0, m1). That is a
*fill*: one message R -> S ("pool/fill" on the reserved peer channel POOL_CHANNEL), which S
answers by storing its batch; R keeps its batch only once S has acknowledged the call. The fill
also carries the batch's ticket key, a random key R draws for it, which S keeps with the batch
and no coordinator ever sees (see "Tickets" below).

A session that needs 64 * w bit triples then spends w words of each pair's pool instead of an
IKNP extension. In its hello the receiver names the ranges it reserved (`Reservation`) and the
sender names the batches it holds (`holdings`); both ends decide the same way, from the two
hellos, whether a direction is pooled. The derandomisation (mpc/ot/triples.py) is one round,
both ways at once: R sends d = a ⊕ c and S sends t = b ⊕ (m0 ⊕ m1); then
    R: u = m_c ⊕ (a ∧ t),   S: v = m0 ⊕ (d ∧ (m0 ⊕ m1)),   u ⊕ v = a ∧ b.
d is uniform (c is hidden from S by the OT), t is uniform (m0 ⊕ m1 is hidden from R).

Guarantees, each enforced here and tested:
- a receiver range is handed out once: `reserve` moves a cursor under a lock and zeroes what it
  hands out, so concurrent sessions get disjoint ranges;
- a sender range is answered once: `claim` refuses any range that overlaps one claimed before
  (a replayed or forged hello), and zeroes what it hands out;
- memory is bounded: a receiver holds at most `capacity` OTs per peer, in at most MAX_BATCHES
  batches; a sender holds at most SENDER_SLACK times that capacity, in at most MAX_BATCHES batches
  (what a hello can advertise), and refuses fills beyond it; a fill names the batches its receiver
  still holds, and the sender drops the others (a fill whose acknowledgement was lost);
- pools live in memory only: a restart forgets them, and sessions fall back to IKNP until the
  next fill (the hello shows which batches each end still holds).

Fills are started only while the receiver runs no session (mpc/node/core.py), so that a batch a
live session reserved from is still listed by any fill that could reach the sender before it.

**Tickets: a reservation made one session ahead.** A hello costs a round before any AND gate can
open. So a receiver also reserves ranges for the *next* one-round session of a query when it
answers the one before (`issue`), and gives them to the coordinator as a ticket: an id and the
ranges. The ticket's id is a MAC of its ranges under the ticket key of the batch they start in
(`ticket_id`: HMAC-SHA256, RFC 2104), so the sender can tell a ticket its receiver issued from
one a coordinator made up. The coordinator states every pair's ticket in that next session's
request; the receiver takes its reservation back by id (`redeem`, once), the sender checks the id
(`authentic`) and claims the stated ranges (`claim`, once), and the statement enters the session
digest, so a coordinator that tells the two ends of a
pair different ranges only fails the session's agreement (mpc/protocols/agreement.py). A ticket's
batches stay in `held` until it is redeemed or dropped, so no fill makes the sender drop them. At
most MAX_TICKETS per peer are kept (the oldest is dropped first: its OTs are spent), in memory only;
a node keeps one set per query and coordinator, dropping the set before when it issues the next
(mpc/node/core.py), so tickets a coordinator never states again do not pile up. Without the MAC a
coordinator could state made-up ids with real ranges to a sender alone: it would claim and zero
them, spoiling the tickets another coordinator holds for them; now it refuses such a ticket, and
claims nothing, before anything else of the session.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot.extension import KAPPA, IknpReceiver, IknpSender, merge_windows
from mpc.prg import Rng, random_words
from mpc.ring import Words

POOL_CHANNEL = "triple-pool"       # the peer-message "session id" of fills: never a session's (32 hex digits)
STEP_FILL = "pool/fill"
BATCH_ID_BYTES = 8
SETUP_ID_BYTES = 16
MIN_FILL_WORDS = 512               # 32,768 OTs: a fill's IKNP message is then 512 KiB
MAX_FILL_WORDS = 16_384            # 2^20 OTs: 16 MiB, the largest single fill message
MAX_BATCHES = 32                   # per peer and role
MAX_SEGMENTS = MAX_BATCHES        # ranges one reservation may span: one per batch at most
TICKET_ID_BYTES = 16
TICKET_KEY_BYTES = 32
_TICKET_LABEL = b"mpc pool ticket v1"   # the MAC's domain: a ticket id is no other HMAC of the key
MAX_TICKETS = 32                   # per peer: reservations issued ahead and not redeemed yet
SENDER_SLACK = 2
_FILL_HEAD = struct.Struct(f"<{SETUP_ID_BYTES}s{BATCH_ID_BYTES}s{TICKET_KEY_BYTES}sB")
# The largest fill message: its head, the held batches' ids, and the IKNP message of MAX_FILL_WORDS
# words of OTs (a 16-byte header and one row of 64 * MAX_FILL_WORDS bits per base OT). A node refuses
# a longer one from its header, before buffering it (mpc/node/servicer.py).
MAX_FILL_BYTES = _FILL_HEAD.size + MAX_BATCHES * BATCH_ID_BYTES + 16 + KAPPA * MAX_FILL_WORDS * 8
_SEGMENT = struct.Struct(f"<{BATCH_ID_BYTES}sII")   # batch id, first word, words


@dataclass(frozen=True, slots=True)
class Segment:
    """Words [start, start + count) of one batch."""

    batch: bytes
    start: int
    count: int


@dataclass(frozen=True, slots=True, eq=False)
class Reservation:
    """What a receiver reserved for one session with one peer: the ranges, and its bits of them."""

    segments: tuple[Segment, ...]
    choices: Words = field(repr=False)    # c
    chosen: Words = field(repr=False)     # m_c

    @property
    def words(self) -> int:
        """Words reserved in all (the session's bit-triple words)."""
        return sum(s.count for s in self.segments)


def segments_to_bytes(segments: Sequence[Segment]) -> bytes:
    """A reservation's ranges as the hello carries them: a count byte, then each (id, start, count)."""
    return bytes([len(segments)]) + b"".join(_SEGMENT.pack(s.batch, s.start, s.count) for s in segments)


def segments_from_bytes(data: bytes, offset: int, where: str) -> tuple[tuple[Segment, ...], int]:
    """Parse ranges written by segments_to_bytes at `offset`.

    Returns: (the segments, the offset after them).
    Raises: RemoteProtocolError naming `where` for a truncated, oversized or empty range.
    """
    if offset >= len(data):
        raise RemoteProtocolError(f"{where}: truncated before the pool reservation")
    n = data[offset]
    end = offset + 1 + n * _SEGMENT.size
    if n > MAX_SEGMENTS or end > len(data):
        raise RemoteProtocolError(f"{where}: pool reservation of {n} ranges does not fit its {len(data)} bytes")
    segments = tuple(Segment(*_SEGMENT.unpack_from(data, offset + 1 + i * _SEGMENT.size)) for i in range(n))
    if any(s.count < 1 for s in segments):
        raise RemoteProtocolError(f"{where}: an empty pool range")
    return segments, end


def ticket_id(key: bytes, segments: Sequence[Segment]) -> bytes:
    """The id of a ticket for `segments`: HMAC-SHA256 under the ticket key of the batch the first
    starts in, over the ranges as segments_to_bytes writes them, cut to TICKET_ID_BYTES. Ranges are
    reserved once, so no two tickets have the same id."""
    return hmac.digest(key, _TICKET_LABEL + segments_to_bytes(segments), hashlib.sha256)[:TICKET_ID_BYTES]


def ids_to_bytes(ids: Sequence[bytes]) -> bytes:
    """Batch ids as a count byte and the ids."""
    return bytes([len(ids)]) + b"".join(ids)


def ids_from_bytes(data: bytes, offset: int, where: str) -> tuple[tuple[bytes, ...], int]:
    """Parse ids written by ids_to_bytes. Returns: (ids, offset after). Raises: RemoteProtocolError."""
    if offset >= len(data):
        raise RemoteProtocolError(f"{where}: truncated before the pool batch ids")
    n = data[offset]
    end = offset + 1 + n * BATCH_ID_BYTES
    if n > MAX_BATCHES or end > len(data):
        raise RemoteProtocolError(f"{where}: {n} pool batch ids do not fit its {len(data)} bytes")
    return tuple(data[offset + 1 + i * BATCH_ID_BYTES:offset + 1 + (i + 1) * BATCH_ID_BYTES] for i in range(n)), end


@dataclass(eq=False)
class _ReceiverBatch:
    id: bytes
    key: bytes = field(repr=False)        # its ticket key
    choices: Words = field(repr=False)
    chosen: Words = field(repr=False)
    next: int = 0

    @property
    def left(self) -> int:
        return int(self.choices.size) - self.next


@dataclass(eq=False)
class _SenderBatch:
    id: bytes
    key: bytes = field(repr=False)        # its ticket key, as the receiver's fill gave it
    m0: Words = field(repr=False)
    m1: Words = field(repr=False)
    used: int = 0
    windows: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, eq=False)
class Fill:
    """A fill the receiver has made but the sender has not acknowledged yet."""

    peer: str
    payload: bytes = field(repr=False)
    batch: _ReceiverBatch = field(repr=False)

    @property
    def words(self) -> int:
        """Words of OTs in the fill."""
        return int(self.batch.choices.size)


class RotPools:
    """One node's random-OT pools with every peer, as receiver and as sender (thread-safe)."""

    def __init__(self, capacity_ots: int) -> None:
        """Args:
            capacity_ots: random OTs kept per peer as receiver (a node's `triple_pool`); 0: none.
        """
        if capacity_ots < 0 or capacity_ots % 128:
            raise LocalProtocolError(f"a triple pool holds a multiple of 128 OTs per peer, got {capacity_ots}")
        self.capacity_words = capacity_ots // 64
        self._receiving: dict[str, list[_ReceiverBatch]] = {}
        self._sending: dict[str, list[_SenderBatch]] = {}
        self._want: dict[str, int] = {}
        self._tickets: dict[str, dict[bytes, Reservation]] = {}   # per peer, oldest first
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether this node keeps pools at all (capacity above zero)."""
        return self.capacity_words > 0

    # ---- receiver side ------------------------------------------------------------------

    def level(self, peer: str) -> int:
        """Words of random OTs held as receiver with `peer`, not reserved yet."""
        with self._lock:
            return sum(b.left for b in self._receiving.get(peer, ()))

    def sending_level(self, peer: str) -> int:
        """Words of random OTs held as sender for `peer`, not claimed yet."""
        with self._lock:
            return sum(int(b.m0.size) - b.used for b in self._sending.get(peer, ()))

    def reserve(self, peer: str, words: int) -> Reservation | None:
        """Take `words` words of OTs with `peer` for one session, or nothing if fewer are held.

        Also notes the demand, so that the next fills cover a session of this size.
        Returns: the Reservation (its bits are copies; the pool keeps zeros), or None.
        """
        if words < 1:
            raise LocalProtocolError(f"a pool reservation needs at least one word, got {words}")
        with self._lock:
            self._want[peer] = max(self._want.get(peer, 0), min(words, self.capacity_words))
            return self._take(peer, words)

    def issue(self, words: Mapping[str, int]) -> dict[str, tuple[bytes, Reservation]] | None:
        """Reserve words[peer] words with each peer for a later session, as tickets (see above):
        with every peer or with none.

        Returns: per peer, (the ticket id, its reservation), or None if some pool holds too little.
        """
        if not words or min(words.values()) < 1:
            raise LocalProtocolError(f"a ticket needs at least one word, got {dict(words)}")
        with self._lock:
            for p, n in words.items():   # a demand, as a reservation's: the fills cover the sessions the tickets serve
                self._want[p] = max(self._want.get(p, 0), min(n, self.capacity_words))
            if any(sum(b.left for b in self._receiving.get(p, ())) < n for p, n in words.items()):
                return None
            issued: dict[str, tuple[bytes, Reservation]] = {}
            for peer, n in words.items():
                keys = {b.id: b.key for b in self._receiving.get(peer, ())}
                reservation = self._take(peer, n)
                assert reservation is not None
                tickets = self._tickets.setdefault(peer, {})
                while len(tickets) >= MAX_TICKETS:
                    del tickets[next(iter(tickets))]
                ticket = ticket_id(keys[reservation.segments[0].batch], reservation.segments)
                tickets[ticket] = reservation
                issued[peer] = (ticket, reservation)
            return issued

    def redeem(self, peer: str, ticket: bytes, segments: Sequence[Segment]) -> Reservation | None:
        """Take back, once, the reservation of a ticket issued for `peer`, if its ranges are `segments`.

        Returns: the Reservation, or None if no such ticket is held (redeemed before, dropped, a
        restart) or its ranges differ (then it is held no longer either).
        """
        with self._lock:
            reservation = self._tickets.get(peer, {}).pop(bytes(ticket), None)
        if reservation is None or reservation.segments != tuple(segments):
            return None
        return reservation

    def drop(self, peer: str, ticket: bytes) -> bool:
        """Drop a ticket issued for `peer` and not redeemed (its OTs are spent; its batches leave `held`).

        Returns: whether it was held.
        """
        with self._lock:
            return self._tickets.get(peer, {}).pop(bytes(ticket), None) is not None

    def tickets(self, peer: str) -> int:
        """How many tickets issued for `peer` are held, not redeemed yet."""
        with self._lock:
            return len(self._tickets.get(peer, {}))

    def _take(self, peer: str, words: int) -> Reservation | None:
        """Reserve under the lock (see `reserve`)."""
        batches = self._receiving.get(peer, [])
        if sum(b.left for b in batches) < words:
            return None
        segments, choices, chosen, need = [], [], [], words
        for batch in batches:
            take = min(need, batch.left)
            if take == 0:
                continue
            span = slice(batch.next, batch.next + take)
            segments.append(Segment(batch.id, batch.next, take))
            choices.append(batch.choices[span].copy())
            chosen.append(batch.chosen[span].copy())
            batch.choices[span] = 0
            batch.chosen[span] = 0
            batch.next += take
            need -= take
            if need == 0:
                break
        self._receiving[peer] = [b for b in batches if b.left]
        return Reservation(tuple(segments), np.concatenate(choices), np.concatenate(chosen))

    def forget_missing(self, peer: str, held_by_peer: Iterable[bytes]) -> None:
        """Drop our batches with `peer` that it no longer holds (it restarted): they are of no use."""
        held = set(held_by_peer)
        with self._lock:
            if peer in self._receiving:
                self._receiving[peer] = [b for b in self._receiving[peer] if b.id in held]
            tickets = self._tickets.get(peer, {})
            for ticket in [t for t, r in tickets.items() if any(s.batch not in held for s in r.segments)]:
                del tickets[ticket]

    def next_fill_words(self, peer: str) -> int:
        """How many words the next fill with `peer` should make (0: none needed).

        The target is twice the largest session seen with the peer, within the capacity.
        """
        with self._lock:
            want = self._want.get(peer, 0)
            held = sum(b.left for b in self._receiving.get(peer, ()))
            count = len(self._held_ids(peer))
        target = min(self.capacity_words, 2 * want)
        if not self.enabled or want == 0 or held >= target or count >= MAX_BATCHES:
            return 0
        words = max(MIN_FILL_WORDS, target - held)
        words = min(words, MAX_FILL_WORDS, self.capacity_words - held)
        return words - words % 2   # IKNP works in 128-OT blocks: two words

    def held(self, peer: str) -> tuple[bytes, ...]:
        """Ids of the batches we hold as receiver with `peer`, or that a ticket not redeemed yet
        reserved from (what a fill tells it to keep)."""
        with self._lock:
            return self._held_ids(peer)

    def _held_ids(self, peer: str) -> tuple[bytes, ...]:
        ids = [b.id for b in self._receiving.get(peer, ())]
        for reservation in self._tickets.get(peer, {}).values():
            ids += [s.batch for s in reservation.segments]
        return tuple(dict.fromkeys(ids))

    def make_fill(self, peer: str, setup_id: bytes, iknp: IknpReceiver, words: int, rng: Rng,
                  held: Sequence[bytes]) -> Fill:
        """Run the receiver's side of `64 * words` random OTs with `peer` (CPU-heavy: a worker thread).

        `held` is `self.held(peer)` read while no session was live (see "Fills are started only
        while ..." above): the peer drops every batch of ours it holds that is not named there.
        Returns: the Fill, to send to the peer and then `commit`.
        Raises: LocalProtocolError for a word count that is not a positive even number.
        """
        if words < 2 or words % 2 or len(setup_id) != SETUP_ID_BYTES or len(held) > MAX_BATCHES:
            raise LocalProtocolError(f"a fill makes a positive even number of words, got {words}")
        choices = random_words(rng, words)
        message, chosen = iknp.extend(choices, 64 * words)
        batch = _ReceiverBatch(rng.random_bytes(BATCH_ID_BYTES), rng.random_bytes(TICKET_KEY_BYTES), choices,
                               np.array(chosen, dtype=np.uint64))
        head = _FILL_HEAD.pack(setup_id, batch.id, batch.key, len(held))
        return Fill(peer, head + b"".join(held) + message, batch)

    def commit(self, fill: Fill) -> None:
        """The peer has stored its side of `fill`: keep ours."""
        with self._lock:
            self._receiving.setdefault(fill.peer, []).append(fill.batch)

    # ---- sender side --------------------------------------------------------------------

    def holdings(self, peer: str) -> tuple[bytes, ...]:
        """Ids of the batches we hold as sender for `peer` (what our hello advertises)."""
        with self._lock:
            return tuple(b.id for b in self._sending.get(peer, ()))

    def accept_fill(self, peer: str, payload: bytes, setup: IknpSender | None, where: str) -> int:
        """Run the sender's side of a peer's fill and keep the batch (CPU-heavy: a worker thread).

        `setup` is our IKNP sender of the OT setup the fill names (None: we hold no such setup).
        Returns: the words stored.
        Raises: RemoteProtocolError naming `where` for a malformed fill, an unknown setup, or one
        beyond this node's bound; RoundMismatch for a reused PRG window or batch id.
        """
        if len(payload) < _FILL_HEAD.size:
            raise RemoteProtocolError(f"{where}: a fill of {len(payload)} bytes")
        setup_id, batch_id, key, n_held = _FILL_HEAD.unpack_from(payload)
        if n_held > MAX_BATCHES:
            raise RemoteProtocolError(f"{where}: a fill names {n_held} held batches, at most {MAX_BATCHES}")
        start = _FILL_HEAD.size + n_held * BATCH_ID_BYTES
        held = {payload[i:i + BATCH_ID_BYTES] for i in range(_FILL_HEAD.size, start, BATCH_ID_BYTES)}
        if setup is None:
            raise RemoteProtocolError(f"{where}: the fill names OT setup {setup_id.hex()}, which this node does "
                                      f"not hold")
        message = payload[start:]
        if len(message) < 16:
            raise RemoteProtocolError(f"{where}: a fill without its IKNP message")
        m = int.from_bytes(message[8:16], "little")
        if m < 128 or m % 128 or m // 64 > MAX_FILL_WORDS:
            raise RemoteProtocolError(f"{where}: a fill of {m} OTs (a positive multiple of 128, at most "
                                      f"{MAX_FILL_WORDS * 64})")
        with self._lock:
            self._check_room(peer, batch_id, held, m // 64, where)
        m0, m1 = setup.extend(m, message)   # refuses a PRG window used before: a replayed fill
        with self._lock:   # only now, for a fill that is new: drop what the receiver no longer holds
            self._check_room(peer, batch_id, held, m // 64, where)
            kept = [b for b in self._sending.get(peer, []) if b.id in held]
            self._sending[peer] = [*kept, _SenderBatch(batch_id, key, np.array(m0), np.array(m1))]
        return m // 64

    def _check_room(self, peer: str, batch_id: bytes, held: set[bytes], words: int, where: str) -> None:
        """Raises: RoundMismatch for a batch id seen before; RemoteProtocolError beyond the bound."""
        mine = self._sending.get(peer, [])
        if any(b.id == batch_id for b in mine):
            raise RoundMismatch(f"{where}: batch {batch_id.hex()} was filled before")
        kept = [b for b in mine if b.id in held]
        total = sum(int(b.m0.size) - b.used for b in kept) + words
        # At most MAX_BATCHES batches (what a hello can advertise), and twice our own capacity in words.
        if len(kept) >= MAX_BATCHES or total > SENDER_SLACK * self.capacity_words:
            raise RemoteProtocolError(f"{where}: the fill would take this node's pool for {peer} beyond its bound")

    def authentic(self, peer: str, ticket: bytes, segments: Sequence[Segment]) -> bool:
        """Whether `ticket` is the id `peer` gives a ticket for `segments` (`ticket_id`), under the key of
        a batch we hold for it: a ticket it issued, its ranges as it reserved them. Claims nothing."""
        with self._lock:
            batch = next((b for b in self._sending.get(peer, ()) if segments and b.id == segments[0].batch), None)
        return batch is not None and hmac.compare_digest(ticket_id(batch.key, segments), bytes(ticket))

    def claim(self, peer: str, segments: Sequence[Segment], where: str) -> tuple[Words, Words]:
        """Take the ranges `peer` reserved as receiver, once: our (m0, m1) for them.

        Returns: (m0, m1) as copies, in the order of the segments (the pool keeps zeros).
        Raises: RoundMismatch naming `where` for a range we do not hold or answered before.
        """
        with self._lock:
            batches = {b.id: b for b in self._sending.get(peer, ())}
            for i, s in enumerate(segments):
                batch = batches.get(s.batch)
                if batch is None or s.start + s.count > batch.m0.size:
                    raise RoundMismatch(f"{where}: pool range {s.batch.hex()}[{s.start}:{s.start + s.count}] is not "
                                        f"held here")
                others = [(o.start, o.start + o.count) for o in segments[:i] if o.batch == s.batch]
                if any(s.start < e and b < s.start + s.count for b, e in batch.windows + others):
                    raise RoundMismatch(f"{where}: pool range {s.batch.hex()}[{s.start}:{s.start + s.count}] was "
                                        f"used before (a replayed reservation)")
            m0, m1 = [], []
            for s in segments:
                batch = batches[s.batch]
                span = slice(s.start, s.start + s.count)
                m0.append(batch.m0[span].copy())
                m1.append(batch.m1[span].copy())
                batch.m0[span] = 0
                batch.m1[span] = 0
                batch.windows = merge_windows(batch.windows, (s.start, s.start + s.count))
                batch.used += s.count
            self._sending[peer] = [b for b in self._sending.get(peer, ()) if b.used < b.m0.size]
        return np.concatenate(m0), np.concatenate(m1)

    def __repr__(self) -> str:
        with self._lock:
            recv = {p: sum(b.left for b in bs) for p, bs in self._receiving.items()}
            send = {p: sum(int(b.m0.size) - b.used for b in bs) for p, bs in self._sending.items()}
        return f"RotPools(receiving={recv}, sending={send} words, <bits redacted>)"
