"""One party's engine for any protocol that runs a program on shared values (DESIGN.md §4, §10).

The engine composes sans-I/O pieces, each behind its own step prefix:

1. "mpc/hello": each party tells each peer which OT setups it still holds with it, so that
   both ends agree, without a round of their own, on reusing one or making a fresh one; and
   which random OTs made ahead of time (mpc/ot/pool.py) it reserved for this session where it
   chooses, and holds where the peer chooses, so that both ends agree on which directions the
   pools serve;
2. the input: either the pairwise-masked secure sum of the contributions ("sum/…",
   mpc/protocols/sum.py), whose output y_i is kept as this party's additive share of the total,
   or (`summed=False`) the contribution itself as this party's additive share (a node's own
   values, held by it alone: the sealed bids of an auction);
3. "ot/base/…" (only for pairs with no common setup: base OTs, mpc/ot/base.py), then
   preprocessing in parallel: Beaver bit triples ("triples/…", mpc/ot/triples.py: one
   "triples/r" per peer for pooled directions, IKNP's "triples/u" and "triples/t" for others) and
   arithmetic triples and daBits ("arith/…", mpc/ot/arith.py), exactly as many as the
   program draws (mpc/protocols/circuit.py `plan`);
4. the program itself (`prefix/…`, mpc/protocols/circuit.py) on the input share; its result
   is this party's Output.

Steps 1 and 3, and the seeds of 2, do not depend on any input (`value_free_steps`); the
program's openings and the output do (mpc/protocols/agreement.py holds them until the parties
agree on the session). Messages for a piece that does not exist yet are kept until it does.

**Without a hello** (`pooled`): when the coordinator states a pool ticket for every ordered pair
(mpc/ot/pool.py "Tickets") and the program needs bit triples only, every direction is served from
the pools and both ends know the ranges before the session starts. Nothing is left for a hello to
settle: the first message to each peer carries the digest, the derandomisation and the program's
first openings together, and the program takes one round fewer. Those first openings leave before
the digests have been compared (`early_steps`): each is a party's share masked by its own fresh
triple shares a_i, b_i (or its own coins), drawn for this session and never used again, so it is
uniformly random whatever the other parties prepared; the output share still waits for agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.ot.arith import STEP_T as ARITH_T
from mpc.ot.arith import STEP_U as ARITH_U
from mpc.ot.arith import ArithDealerless, ArithPool, ArithTriples, DaBitPool, DaBits, fold_step
from mpc.ot.triples import (
    STEP_BASE_A,
    STEP_BASE_B,
    STEP_R,
    STEP_T,
    STEP_U,
    BitTriples,
    Hello,
    OtReady,
    OtSetups,
    PairwiseOt,
    PendingTriples,
    PairwiseOtSetup,
    TripleDealerless,
    TriplePool,
    choose_setups,
    keep_ready,
    parse_session_hello,
    session_hello,
)
from mpc.ot.pool import Reservation
from mpc.prg import Rng
from mpc.protocols.circuit import CircuitParty, Context, Plan, ProgramFactory, plan
from mpc.protocols.sum import SecureSumParty
from mpc.ring import Words

STEP_HELLO = "mpc/hello"
_PLANS: dict[tuple[Hashable, int, int], Plan] = {}
MAX_PLANS = 256


def _planned(factory: ProgramFactory, parties: int, length: int, shape: Hashable | None) -> Plan:
    """The program's plan, from the dry run of an earlier session of the same shape where one is known."""
    if shape is None:
        return plan(factory, parties, length)
    key = (shape, parties, length)
    found = _PLANS.get(key)
    if found is None:
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        found = _PLANS[key] = plan(factory, parties, length)
    return found
_SLOW_STEPS = ("ot/base/",)

Piece = PairwiseOtSetup | TripleDealerless | ArithDealerless | CircuitParty
# A session's pool directions settled before it starts (tickets): our reservation with each peer where
# we choose, and our (m0, m1) of each peer's reservation where it chooses.
Pooled = tuple[Mapping[str, Reservation], Mapping[str, tuple[Words, Words]]]


class ComputeParty:
    """One party of a program over the nodes' inputs, with dealer-free preprocessing."""

    def __init__(self, session_id: str, me: str, parties: Sequence[str], length: int, factory: ProgramFactory,
                 rng: Rng, setups: OtSetups, *, summed: bool = True, prefix: str = "run",
                 hello: str = STEP_HELLO, mask_seeds: Mapping[str, bytes] | None = None,
                 on_seed: Callable[[str, bytes], None] | None = None, shape: Hashable | None = None,
                 pooled: Pooled | None = None) -> None:
        """Args:
            length: words of this party's contribution (the same at every party).
            factory: builds the program from a Context and this party's input share.
            setups: the node's lifetime OT setups; new ones are added to it.
            summed: the input is the secure sum of the contributions (else each contribution
                is its owner's additive share as it is).
            prefix: the program's step prefix.
            mask_seeds, on_seed: for the secure sum of the inputs (mpc/protocols/sum.py): a keyed
                session's mask seed with each peer; told of each seed sent or received.
            shape: a key that, with the party count and `length`, determines the program's shape (its
                rounds and preprocessing): sessions with the same key reuse one dry run (`plan`).
                None: the program is dry-run for this session.
            pooled: every direction's pooled OTs, from tickets (see above): no hello is sent or taken.
                Only for a program that needs bit triples alone, with both directions of every pair.
        """
        if me not in parties or len(set(parties)) != len(parties) or len(parties) < 2:
            raise LocalProtocolError(f"session {session_id}: {me!r} among parties {list(parties)}: a program needs "
                                     f"at least two distinct parties including this one")
        self.session_id = session_id
        self.me = me
        self.parties = tuple(parties)
        self.length = length
        self.peers = tuple(p for p in self.parties if p != me)
        self.prefix = prefix
        self._hello = hello
        self._factory = factory
        self._rng = rng
        self._setups = setups
        self.plan: Plan = _planned(factory, len(self.parties), length,
                                   None if shape is None else (type(self).__qualname__, prefix, shape))
        self._index = self.parties.index(me)
        # The triple words we make with each peer (each direction): those of the gates we both take part in.
        self.pair_words = {peer: self.plan.pair_words(self._index, self.parties.index(peer)) for peer in self.peers}
        self.value_free_steps: tuple[str, ...] = (hello, "sum/", "ot/", "triples/", "arith/")
        self._pooled_at_start: Pooled | None = None
        self.early_steps: frozenset[str] = frozenset()   # steps whose messages may leave before agreement
        if pooled is not None:
            recv, send = pooled
            p = self.plan
            paired = {peer for peer, n in self.pair_words.items() if n}
            if not p.bit_words or p.arith_triples or p.dabits or set(recv) != paired or set(send) != paired or \
                    any(r.words != self.pair_words[peer] for peer, r in recv.items()) or \
                    any(m0.shape != (self.pair_words[peer],) for peer, (m0, _) in send.items()):
                raise LocalProtocolError(f"session {session_id}: pooled OTs of {self.pair_words} words with each peer "
                                         f"both ways serve a program of bit triples only")
            self._pooled_at_start = pooled
            self.early_steps = frozenset({f"{prefix}/{p.rounds[0][0]}"})
        # Every step this session can see, known up front: anything else is refused on arrival.
        self._triple_steps = frozenset({STEP_U, STEP_T, STEP_R} if self.plan.bit_words else ())
        self._arith_steps = frozenset({ARITH_U, ARITH_T, *(fold_step(k) for k in range(1, len(self.parties)))}
                                      if self.plan.arith_triples or self.plan.dabits else ())
        self._program_steps = frozenset(f"{prefix}/{label}" for label, _ in self.plan.rounds)
        self._known = {p: setups.known(p) for p in self.peers}
        self._sum = SecureSumParty(session_id, me, parties, length, rng, mask_seeds=mask_seeds,
                                   on_seed=on_seed) if summed else None
        self._hellos: dict[str, Hello] = {}
        self._pools = setups.pools if setups.pools is not None and setups.pools.enabled else None
        self._reserved: dict[str, Reservation | None] = {}   # our pool ranges with each peer, at start
        self._advertised: dict[str, frozenset[bytes]] = {}   # the batches of each peer's we said we hold
        self._chosen: dict[str, PairwiseOt] = {}
        self._setup: PairwiseOtSetup | None = None
        self._triples: TripleDealerless | None = None
        self._arith: ArithDealerless | None = None
        self._bit_pool: TriplePool | None = None if self.plan.bit_words else TriplePool()
        self._bits_complete = True   # False while the bit pool's c is still being made (PendingTriples)
        self._arith_pool: ArithPool | None = None if self.plan.arith_triples else ArithPool()
        self._dabit_pool: DaBitPool | None = None if self.plan.dabits else DaBitPool()
        self._circuit: CircuitParty | None = None
        self._share: Words | None = None
        self._early: list[tuple[str, str, bytes]] = []
        self._started = False
        self._done = False
        self._preprocessing = False
        self._generated_words = 0

    # ---- the engine interface of the node (mpc/node/core.py) ---------------------------

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers this party is waiting on in its current phase (for timeout messages)."""
        if self._done:
            return ()
        if len(self._hellos) < len(self.peers) and self._pooled_at_start is None:
            return tuple(p for p in self.peers if p not in self._hellos)
        if self._sum is not None and not self._sum.finished:
            return self._sum.waiting_for
        if self._circuit is not None:
            return self._circuit.waiting_for
        return self.peers  # OT setup or preprocessing: every pair takes part

    @property
    def pooled_at_start(self) -> bool:
        """Whether tickets settled this session's pools (no hello)."""
        return self._pooled_at_start is not None

    @property
    def ticket_words(self) -> dict[str, int]:
        """Pool words a later session of this shape takes with each peer it makes triples with, if it
        could run without a hello (a program of bit triples alone); else none."""
        p = self.plan
        if not p.bit_words or p.arith_triples or p.dabits:
            return {}
        return {peer: n for peer, n in self.pair_words.items() if n}

    @property
    def triple_counts(self) -> tuple[int, int]:
        """Bit triples (AND gates) this session made and used so far: (generated, consumed)."""
        used = 0 if self._bit_pool is None else self._bit_pool.handed_out
        return 64 * self._generated_words, 64 * used

    def is_slow(self, step: str) -> bool:
        """Whether handling `step` takes long enough (base OTs) to run outside the event loop."""
        return step.startswith(_SLOW_STEPS)

    def start(self, contribution: Words) -> list[Send | Output]:
        """Greet every peer with our OT setup ids and bring in our contribution.

        Returns: the first messages.
        Raises: LocalProtocolError if started twice or with the wrong shape.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: already started")
        if contribution.shape != (self.length,):
            raise LocalProtocolError(f"session {self.session_id}: contribution has shape {contribution.shape}, "
                                     f"expected ({self.length},)")
        self._started = True
        events: list[Send | Output] = []
        for peer in self.peers if self._pooled_at_start is None else ():
            # Our pool with the peer (we choose) for this session's triples, and what we hold of its.
            pools, words = self._pools, self.pair_words[peer]
            self._reserved[peer] = pools.reserve(peer, words) if pools is not None and words else None
            self._advertised[peer] = frozenset(pools.holdings(peer)) if pools is not None and words else frozenset()
            events.append(Send(peer, self._hello, session_hello(self._known[peer], self._reserved[peer],
                                                                  sorted(self._advertised[peer]))))
        if self._sum is None:
            self._share = np.array(contribution, dtype=np.uint64, copy=True)
        else:
            events += self._from_sum(self._sum.start(contribution))
        return events + self._advance()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Route one peer message to its piece (or keep it until that piece exists).

        Returns: the messages and outputs it causes.
        Raises: RemoteProtocolError/RoundMismatch for a malformed, repeated or unexpected message.
        """
        if sender not in self.peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        if step == self._hello:
            if self._pooled_at_start is not None:
                raise RoundMismatch(f"session {self.session_id}: a hello from {sender!r}, but the tickets settled "
                                    f"this session's pools")
            if sender in self._hellos:
                raise RoundMismatch(f"session {self.session_id}: second hello from {sender!r}")
            hello = parse_session_hello(payload, f"session {self.session_id}: hello from {sender!r}")
            reserved = sum(s.count for s in hello.reserved)
            if reserved not in (0, self.pair_words[sender]):
                raise RemoteProtocolError(f"session {self.session_id}: {sender!r} reserved {reserved} pool words for "
                                          f"a session of {self.pair_words[sender]} triple words with it")
            self._hellos[sender] = hello
            return self._advance() if self._started else []
        if step.startswith("sum/"):
            if self._sum is None:
                raise RoundMismatch(f"session {self.session_id}: {step!r} from {sender!r} but this session sums nothing")
            return self._from_sum(self._sum.receive(sender, step, payload)) + self._advance()
        piece = self._piece_for(sender, step)
        if piece is None:
            if any(s == sender and st == step for s, st, _ in self._early):
                raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} already received")
            self._early.append((sender, step, payload))
            if len(self._early) > 16 * len(self.peers) + 64:
                raise RemoteProtocolError(f"session {self.session_id}: too many early messages")
            return []
        return self._route(piece.receive(sender, step, payload))

    # ---- internals --------------------------------------------------------------------

    def _piece_for(self, sender: str, step: str) -> Piece | None:
        if step in (STEP_BASE_A, STEP_BASE_B):
            if self._setup is None and self._preprocessing:
                raise RoundMismatch(f"session {self.session_id}: {step!r} from {sender!r} but this session makes no OT setup")
            return self._setup
        if step in self._triple_steps:
            return self._triples
        if step in self._arith_steps:
            return self._arith
        if step in self._program_steps:
            return self._circuit
        raise RoundMismatch(f"session {self.session_id}: unknown step {step!r} from {sender!r}")

    def _from_sum(self, events: list[Send | Output]) -> list[Send | Output]:
        out: list[Send | Output] = []
        for e in events:
            if isinstance(e, Output):
                self._share = e.words   # kept: the additive share of the total
            else:
                out.append(e)
        return out

    def _route(self, events: Sequence[object]) -> list[Send | Output]:
        out: list[Send | Output] = []
        for e in events:
            if isinstance(e, Send):
                out.append(e)
            elif isinstance(e, OtReady):
                keep_ready(self._setups, self.session_id, e, self._chosen)
                out += self._advance()
            elif isinstance(e, PendingTriples):   # the program may open its first layer meanwhile
                self._bit_pool = TriplePool.pending(e.triples, self.plan.layout, self._index)
                self._bits_complete = False
                out += self._advance()
            elif isinstance(e, BitTriples):
                self._generated_words += e.words
                if self._bits_complete:
                    self._bit_pool = TriplePool(e, self.plan.layout, self._index)
                else:   # the same arrays as the pending pool's, now complete
                    self._bits_complete = True
                    if self._circuit is not None:
                        out += self._route(self._circuit.resume())
                out += self._advance()
            elif isinstance(e, ArithTriples):
                self._arith_pool = ArithPool(e)
                out += self._advance()
            elif isinstance(e, DaBits):
                self._dabit_pool = DaBitPool(e)
                out += self._advance()
            elif isinstance(e, Output):
                self._done = True
                out.append(e)
        return out

    def _create(self, piece: Piece, events: list[Send | Output], prefix: str) -> list[Send | Output]:
        """Replay the messages kept for a piece that now exists."""
        kept = [m for m in self._early if m[1].startswith(prefix)]
        self._early = [m for m in self._early if not m[1].startswith(prefix)]
        for sender, step, payload in kept:
            events += self._route(piece.receive(sender, step, payload))
        return events

    def _pooled(self) -> tuple[dict[str, Reservation], dict[str, tuple[Words, Words]]]:
        """Which directions the pools serve, decided alike at both ends from the two hellos: the
        receiver's reservation, all of it in batches the sender said it holds (mpc/ot/pool.py).

        Returns: (our reservations by peer, our (m0, m1) for each peer's reservation, claimed now).
        Raises: RoundMismatch if a peer's range was answered before (a replayed hello).
        """
        recv: dict[str, Reservation] = {}
        send: dict[str, tuple[Words, Words]] = {}
        for peer, hello in self._hellos.items():
            ours = self._reserved.get(peer)
            if ours is not None and all(s.batch in hello.holdings for s in ours.segments):
                recv[peer] = ours
            elif ours is not None and self._pools is not None:   # it lost them (a restart): they are no use
                self._pools.forget_missing(peer, hello.holdings)
            theirs = hello.reserved
            if theirs and self._pools is not None and all(s.batch in self._advertised[peer] for s in theirs):
                send[peer] = self._pools.claim(peer, theirs, f"session {self.session_id}: pool of {peer!r}")
        return recv, send

    def _advance(self) -> list[Send | Output]:
        events: list[Send | Output] = []
        if not self._started:
            return events
        if self._pooled_at_start is not None and not self._preprocessing:
            self._preprocessing = True
            recv, send = self._pooled_at_start
            self._triples = TripleDealerless(self.me, self.parties, self.plan.bit_words, self._rng, {},
                                             self.session_id, pooled_recv=recv, pooled_send=send, pipelined=True,
                                             layout=self.plan.layout)
            events += self._route(self._triples.start())
            return self._create(self._triples, events, "triples/") + self._advance()
        if self._pooled_at_start is None and len(self._hellos) < len(self.peers):
            return events
        if self._setup is None and not self._preprocessing and not self._chosen and self._pooled_at_start is None:
            fresh = choose_setups({p: set(h.setups) for p, h in self._hellos.items()}, self._known, self._chosen)
            for peer, hello in self._hellos.items():
                if peer not in fresh:
                    self._setups.used(peer, max(hello.setups & set(self._known[peer])))
            if fresh:
                self._setup = PairwiseOtSetup(self.me, [self.me, *fresh], self._rng, self.session_id)
                events += self._route(self._setup.start())
                return self._create(self._setup, events, "ot/")
            stray = next((m for m in self._early if m[1].startswith("ot/")), None)
            if stray is not None:
                raise RoundMismatch(f"session {self.session_id}: {stray[1]!r} from {stray[0]!r} but this session "
                                    f"makes no OT setup")
        if not self._preprocessing and len(self._chosen) == len(self.peers):
            self._preprocessing = True
            p = self.plan
            if p.bit_words:
                pooled_recv, pooled_send = self._pooled()
                self._triples = TripleDealerless(self.me, self.parties, p.bit_words, self._rng, self._chosen,
                                                 self.session_id, pooled_recv=pooled_recv, pooled_send=pooled_send,
                                                 pipelined=True, layout=p.layout)
                events += self._route(self._triples.start())
                events = self._create(self._triples, events, "triples/")
            if p.arith_triples or p.dabits:
                self._arith = ArithDealerless(self.me, self.parties, p.arith_triples, p.dabits, self._rng,
                                              self._chosen, self.session_id)
                events += self._route(self._arith.start())
                events = self._create(self._arith, events, "arith/")
            return events + self._advance()
        ready = self._bit_pool is not None and self._arith_pool is not None and self._dabit_pool is not None
        if self._circuit is None and ready and self._share is not None:
            assert self._bit_pool is not None and self._arith_pool is not None and self._dabit_pool is not None
            ctx = Context(self._index, len(self.parties), self._bit_pool, self._arith_pool,
                          self._dabit_pool, self._rng)
            share, self._share = self._share, None
            self._circuit = CircuitParty(self.session_id, self.me, self.parties, self._factory(ctx, share),
                                         self.prefix, [label for label, _ in self.plan.rounds],
                                         gate=lambda: self._bits_complete)
            events += self._route(self._circuit.start())
            return self._create(self._circuit, events, self.prefix + "/")
        return events
