"""Threshold of a secure sum, revealing only bits: votes and batched [sum >= k] (DESIGN.md §4).

One party's engine composes four sans-I/O pieces, each behind its own step prefix:

1. "vote/hello": each party tells each peer which OT setups it still holds with it, so that
   both ends agree, without a round of their own, on reusing one or making a fresh one;
2. "sum/…": the pairwise-masked secure sum (mpc/protocols/sum.py) of the contributions. Its
   output y_i is *not* sent anywhere: the y_i are an additive sharing of the total;
3. "ot/base/…" (only for pairs with no common setup: Chou-Orlandi base OTs, mpc/ot/base.py)
   then "triples/…": dealer-free Beaver bit triples from IKNP random OTs (mpc/ot/triples.py);
4. "cmp/…": the sign-bit circuit (mpc/protocols/compare.py) on y_i mod 2^ell gives each party
   an XOR share of [total >= k] per element; that share is the party's Output.

For a vote on "at least half of the ballots cast", a node holding t_i yes-ballots out of n_i
contributes 2 t_i - n_i and k = 0: 2T >= N needs neither T nor N opened. With an explicit
threshold K a node contributes t_i and k = K.
Messages for a piece that does not exist yet are kept until it does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot.triples import (
    STEP_BASE_A,
    STEP_BASE_B,
    STEP_T,
    STEP_U,
    OtReady,
    PairwiseOt,
    PairwiseOtSetup,
    TripleDealerless,
    TriplePool,
)
from mpc.prg import Rng
from mpc.protocols.beaver import BitTriples
from mpc.protocols.compare import AtLeastPublicParty, SignBitParty
from mpc.protocols.events import Output, Send
from mpc.protocols.sum import SecureSumParty
from mpc.ring import Words, reduce_bits

STEP_HELLO = "vote/hello"
SETUP_ID_BYTES = 16
MAX_SETUPS_ADVERTISED = 8
DEFAULT_ELL = 32


@dataclass(frozen=True, slots=True)
class NewOtSetup:
    """A fresh OT setup with `peer`, for the node to keep (and advertise) for its lifetime."""

    peer: str
    setup_id: bytes
    pair: PairwiseOt

    def __repr__(self) -> str:
        return f"NewOtSetup(peer={self.peer!r}, setup={self.setup_id.hex()}, <keys redacted>)"


Event = Send | Output | NewOtSetup


class ThresholdParty:
    """One party of [sum of contributions >= k], elementwise over `length` values."""

    # Hellos, seeds, base OTs and triples do not depend on the input; the comparison's openings do.
    value_free_steps: tuple[str, ...] = ("vote/hello", "sum/", "ot/", "triples/")

    def __init__(self, session_id: str, me: str, parties: Sequence[str], length: int, threshold: int,
                 rng: Rng, ot_setups: Mapping[str, Mapping[bytes, PairwiseOt]], ell: int = DEFAULT_ELL) -> None:
        self.session_id = session_id
        self.me = me
        self.parties = tuple(parties)
        self.length = length
        self.ell = ell
        self._threshold = threshold
        self._rng = rng
        self.peers = tuple(p for p in self.parties if p != me)
        self._known = {p: dict(ot_setups.get(p, {})) for p in self.peers}
        self._sum = SecureSumParty(session_id, me, parties, length, rng)
        self._hellos: dict[str, set[bytes]] = {}
        self._chosen: dict[str, PairwiseOt] = {}
        self._setup: PairwiseOtSetup | None = None
        self._triples: TripleDealerless | None = None
        self._compare: AtLeastPublicParty | None = None
        self._share: Words | None = None
        self._pool: TriplePool | None = None
        self._early: list[tuple[str, str, bytes]] = []
        # The comparison's step labels, known up front so a bogus "cmp/..." is refused on arrival.
        self._cmp_steps = frozenset(SignBitParty(session_id, me, parties, ell, length, TriplePool()).steps)
        self._started = False
        self._done = False
        self._generated_words = 0

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers this party is waiting on in its current phase (for timeout messages)."""
        if self._done:
            return ()
        if len(self._hellos) < len(self.peers):
            return tuple(p for p in self.peers if p not in self._hellos)
        if not self._sum.finished:
            return self._sum.waiting_for
        if self._compare is not None:
            return self._compare.waiting_for
        return self.peers  # OT setup or triples: every pair takes part

    @property
    def triple_counts(self) -> tuple[int, int]:
        """Bit triples (AND gates) this session made and used so far: (generated, consumed)."""
        used = 0 if self._pool is None else self._pool.handed_out
        return 64 * self._generated_words, 64 * used

    @staticmethod
    def triple_words(parties: int, ell: int, length: int) -> int:
        """Triple words one session consumes (from the comparison circuit's own plan)."""
        return SignBitParty.triple_words(parties, ell, length)

    def start(self, contribution: Words) -> list[Event]:
        """Mask our contribution, greet every peer with our OT setup ids.

        Returns: the first messages.
        Raises: LocalProtocolError if started twice or with the wrong shape.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: threshold already started")
        self._started = True
        events: list[Event] = []
        for peer in self.peers:
            ids = sorted(self._known[peer])[-MAX_SETUPS_ADVERTISED:]
            events.append(Send(peer, STEP_HELLO, b"".join(ids)))
        events += self._from_sum(self._sum.start(contribution))
        return events + self._advance()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Event]:
        """Route one peer message to its piece (or keep it until that piece exists).

        Returns: the messages and outputs it causes.
        Raises: RemoteProtocolError/RoundMismatch for a malformed, repeated or unexpected message.
        """
        if sender not in self.peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        if step == STEP_HELLO:
            if sender in self._hellos:
                raise RoundMismatch(f"session {self.session_id}: second hello from {sender!r}")
            if len(payload) % SETUP_ID_BYTES or len(payload) > SETUP_ID_BYTES * MAX_SETUPS_ADVERTISED:
                raise RemoteProtocolError(f"session {self.session_id}: hello from {sender!r} has {len(payload)} bytes")
            self._hellos[sender] = {payload[i:i + SETUP_ID_BYTES] for i in range(0, len(payload), SETUP_ID_BYTES)}
            return self._advance() if self._started else []
        if step.startswith("sum/"):
            return self._from_sum(self._sum.receive(sender, step, payload)) + self._advance()
        engine = self._engine_for(step)
        if engine is None:
            if any(s == sender and st == step for s, st, _ in self._early):
                raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} already received")
            self._early.append((sender, step, payload))
            if len(self._early) > 16 * len(self.peers) + 64:
                raise RemoteProtocolError(f"session {self.session_id}: too many early messages")
            return []
        return self._route(engine.receive(sender, step, payload))

    # ---- internals --------------------------------------------------------------------

    def _engine_for(self, step: str) -> PairwiseOtSetup | TripleDealerless | AtLeastPublicParty | None:
        if step in (STEP_BASE_A, STEP_BASE_B):
            if self._setup is None and self._triples is not None:
                raise RoundMismatch(f"session {self.session_id}: {step!r} but this session makes no OT setup")
            return self._setup
        if step in (STEP_U, STEP_T):
            return self._triples
        if step in self._cmp_steps:
            return self._compare
        raise RoundMismatch(f"session {self.session_id}: unknown step {step!r}")

    def _from_sum(self, events: list[Send | Output]) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if isinstance(e, Output):
                self._share = reduce_bits(e.words, self.ell)   # kept: the additive share of the total
            else:
                out.append(e)
        return out

    def _route(self, events: Sequence[object]) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if isinstance(e, Send):
                out.append(e)
            elif isinstance(e, OtReady):
                setup_id = bytes.fromhex(self.session_id)[:SETUP_ID_BYTES]
                for peer, pair in e.pairs.items():
                    self._chosen[peer] = pair
                    out.append(NewOtSetup(peer, setup_id, pair))
                out += self._advance()
            elif isinstance(e, BitTriples):
                self._generated_words += int(e.a.size)
                self._pool = TriplePool(e)
                out += self._advance()
            elif isinstance(e, Output):
                self._done = True
                out.append(e)
        return out

    def _create(self, engine: PairwiseOtSetup | TripleDealerless | AtLeastPublicParty, events: list[Event],
                prefix: str) -> list[Event]:
        """Replay the messages kept for a piece that now exists."""
        kept = [m for m in self._early if m[1].startswith(prefix)]
        self._early = [m for m in self._early if not m[1].startswith(prefix)]
        for sender, step, payload in kept:
            events += self._route(engine.receive(sender, step, payload))
        return events

    def _advance(self) -> list[Event]:
        events: list[Event] = []
        if not self._started or len(self._hellos) < len(self.peers):
            return events
        if self._setup is None and self._triples is None and not self._chosen:
            fresh = []
            for peer in self.peers:
                common = self._hellos[peer] & set(self._known[peer])
                if common:
                    self._chosen[peer] = self._known[peer][max(common)]
                else:
                    fresh.append(peer)
            if fresh:
                self._setup = PairwiseOtSetup(self.me, [self.me, *fresh], self._rng, self.session_id)
                events += self._route(self._setup.start())
                return self._create(self._setup, events, "ot/")
            stray = next((m for m in self._early if m[1].startswith("ot/")), None)
            if stray is not None:
                raise RoundMismatch(f"session {self.session_id}: {stray[1]!r} from {stray[0]!r} but this session "
                                    f"makes no OT setup")
        if self._triples is None and len(self._chosen) == len(self.peers):
            words = self.triple_words(len(self.parties), self.ell, self.length)
            self._triples = TripleDealerless(self.me, self.parties, words, self._rng, self._chosen, self.session_id)
            events += self._route(self._triples.start())
            return self._create(self._triples, events, "triples/")
        if self._compare is None and self._pool is not None and self._share is not None:
            self._compare = AtLeastPublicParty(self.session_id, self.me, self.parties, self.ell, self.length,
                                               self._threshold, self._pool)
            share, self._share = self._share, None
            events += self._route(self._compare.start(np.asarray(share, dtype=np.uint64)))
            return self._create(self._compare, events, "cmp/")
        return events
