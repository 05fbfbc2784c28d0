"""Arithmetic Beaver triples and daBits mod 2^64 without a dealer, from IKNP random OT
(PROTOCOLS.md §8; semi-honest, any n - 1 of the n parties may collude).

**Triples.** Every party P_i draws a_i, b_i; a = Σ a_i, b = Σ b_i and
    ab = Σ_i a_i b_i + Σ_{i≠j} a_i b_j   (mod 2^64).
Each cross term a_i b_j becomes additive shares of P_i and P_j by Gilboa's OT-based product
sharing (Gilboa, "Two Party RSA Key Generation", CRYPTO 1999: one OT per bit of the
multiplier), run over random OT as correlated OT, as in the pairwise "Multiply" step of the
n-party triple generation Π_Triple of Keller, Orsini, Scholl, "MASCOT: Faster Malicious
Arithmetic Secure Computation with Oblivious Transfer", CCS 2016, here without its MACs,
combining and sacrifice (semi-honest only). For t < 64, P_j is the OT receiver with choice
b_j[t] and gets m_{b_j[t]}; P_i holds (m0_t, m1_t) (the low 64 bits of the 128-bit IKNP
outputs, little-endian), sends
    τ_t = m0_t − m1_t + 2^t·a_i
and keeps −Σ_t m0_t; P_j sets Σ_t (m_{b_j[t]} + b_j[t]·τ_t) = Σ_t m0_t + b_j·a_i.

**daBits** (Rotaru, Wood, "MArBled Circuits: Mixing Arithmetic and Boolean Circuits with
Active Security", INDOCRYPT 2019: their daBit generation, XOR of the parties' bits computed in
the arithmetic domain, here semi-honest, without the checks, each product by OT): a random bit r
as ⟨r⟩ (XOR shares) and [r] (additive shares). Each P_k draws r_k; ⟨r⟩ = (r_k). For [r], fold
in party order: u = r_0 (P_0 holds r_0, the others 0), then for k = 1..n−1
    u ← u ⊕ r_k = u + r_k − 2·u·r_k,
where u·r_k = u_k·r_k (local at P_k) + Σ_{j≠k} u_j·r_k, each from one correlated OT: P_j sends
τ = m0 − m1 + u_j and keeps −m0, P_k with choice r_k gets m_{r_k} + r_k·τ = m0 + r_k·u_j.

**Messages** (step labels; every party sends each peer at most one of each):
    "arith/u"        the IKNP message (mpc/ot/extension.py) of ONE extension per ordered pair
                     and session, m = 64·triples OTs with choice bits b (triple e's bit s is
                     OT 64e + s), then, from P_k with k >= 1, `dabits` OTs with choices r_k:
                     16 + 16·⌈m/128⌉·128 bytes. Not sent when m = 0 (P_0 without triples).
    "arith/t"        the Gilboa corrections τ: 64·triples little-endian uint64 words.
    "arith/fold/k"   the corrections of fold k, to P_k only: `dabits` little-endian uint64 words.
All random OTs are extended up front, so the later messages carry only corrections. P_j can
send fold k's correction once it knows its share of u after fold k − 1: at once for j = 0 and
for j > k (their share changes locally, by 2·m0 a fold), after its own fold j for 1 <= j < k.

**Costs.** Per triple and ordered pair: 64 random OTs and 64 correction words. Per daBit and
fold k: one random OT and one correction word from each other party to P_k, so (n − 1)^2 OTs
and words per daBit in all. Rounds: "arith/u"; then "arith/t" together with fold 1; then one
round for each further fold: max(2, n) with daBits (within the 2 + (n − 1) of a design where
the folds start after the triples' round), 2 without.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch, quoted
from mpc.ot.extension import KAPPA, Blocks
from mpc.ot.triples import PairwiseOt
from mpc.prg import Rng, random_words
from mpc.events import Send
from mpc.ring import WORD, Words, words_from_bytes, words_to_bytes

STEP_U = "arith/u"
STEP_T = "arith/t"
FOLD_PREFIX = "arith/fold/"
_IKNP_HEADER = 16
_MAX_OTS = 1 << 32  # one IKNP extension (mpc/ot/extension.py)
_SHIFTS = np.arange(64, dtype=np.uint64)


def fold_step(k: int) -> str:
    """The step label of fold k's corrections (sent to P_k).

    Returns: "arith/fold/<k>".
    """
    return f"{FOLD_PREFIX}{k}"


def _check_words(kind: str, **arrays: Words) -> None:
    for name, words in arrays.items():
        if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.ndim != 1:
            raise LocalProtocolError(f"{kind} share {name} must be a 1-D uint64 array")
    if len({w.shape for w in arrays.values()}) != 1:
        sizes = ", ".join(f"{name} {w.size}" for name, w in arrays.items())
        raise LocalProtocolError(f"{kind} shares differ in length: {sizes}")


@dataclass(frozen=True, slots=True, eq=False)
class ArithTriples:
    """One party's additive shares mod 2^64 of triples: Σ c = (Σ a)·(Σ b) elementwise."""

    a: Words
    b: Words
    c: Words

    def __post_init__(self) -> None:
        _check_words("arithmetic triple", a=self.a, b=self.b, c=self.c)

    @property
    def count(self) -> int:
        """The number of triples.

        Returns: len(a) == len(b) == len(c).
        """
        return int(self.a.size)

    def __repr__(self) -> str:
        return f"ArithTriples({self.count} triples, <shares redacted>)"

    def __bool__(self) -> bool:
        raise TypeError("triple shares have no truth value")


@dataclass(frozen=True, slots=True, eq=False)
class DaBits:
    """One party's shares of random bits r: `bits` XOR-shares r (0/1 words), `arith` adds to r mod 2^64."""

    bits: Words
    arith: Words

    def __post_init__(self) -> None:
        _check_words("daBit", bits=self.bits, arith=self.arith)
        if self.bits.size and int(self.bits.max()) > 1:
            raise LocalProtocolError("daBit share bits must hold 0 or 1 in every word")

    @property
    def count(self) -> int:
        """The number of daBits.

        Returns: len(bits) == len(arith).
        """
        return int(self.bits.size)

    def __repr__(self) -> str:
        return f"DaBits({self.count} daBits, <shares redacted>)"

    def __bool__(self) -> bool:
        raise TypeError("daBit shares have no truth value")


# --- the gadgets (pure functions on one party's OT outputs) ------------------------------------

def low_words(blocks: Blocks) -> Words:
    """The first 8 bytes of each 128-bit random-OT output, as a little-endian uint64.

    Returns: a new uint64 array of len(blocks) words.
    """
    low: Words = np.ascontiguousarray(blocks[:, :8]).view(WORD).reshape(-1).astype(np.uint64)
    return low


def cot_send(m0: Words, m1: Words, x: Words) -> tuple[Words, Words]:
    """Correlated OT from random OT, sender side: the correction τ = m0 − m1 + x and our share −m0.

    Returns: (τ to send, −m0 to keep), both mod 2^64.
    """
    return m0 - m1 + x, np.negative(m0)


def cot_receive(chosen: Words, choice: Words, tau: Words) -> Words:
    """Correlated OT, receiver side with 0/1 choices: m_c + c·τ = m0 + c·x.

    Returns: our share of c·x mod 2^64 (the sender's −m0 completes it).
    """
    return chosen + choice * tau


def gilboa_send(m0: Words, m1: Words, a: Words) -> tuple[Words, Words]:
    """Gilboa's product sharing, multiplicand side, for len(a) products over 64·len(a) OTs.

    τ_t = m0_t − m1_t + 2^t·a for the 64 OTs of each product (OT 64e + t for product e).
    Returns: (τ, 64·len(a) words to send; −Σ_t m0_t, one word per product to keep).
    """
    tau, keep = cot_send(m0, m1, (a[:, None] << _SHIFTS).reshape(-1))
    return tau, keep.reshape(a.size, 64).sum(axis=1, dtype=np.uint64)


def gilboa_receive(chosen: Words, b: Words, tau: Words) -> Words:
    """Gilboa's product sharing, multiplier side: OT 64e + t chose bit t of b[e].

    Returns: Σ_t (m_{b[t]} + b[t]·τ_t) = Σ_t m0_t + a·b, one word per product.
    """
    bits: Words = ((b[:, None] >> _SHIFTS) & np.uint64(1)).reshape(-1)
    share: Words = cot_receive(chosen, bits, tau).reshape(b.size, 64).sum(axis=1, dtype=np.uint64)
    return share


# --- the engine --------------------------------------------------------------------------------

class ArithDealerless:
    """One party's engine for `triples` arithmetic Beaver triples and `dabits` daBits (PROTOCOLS.md §8).

    `parties` is the session order (the daBits fold in it); every party passes the same.
    Messages from peers may arrive before `start` (only "arith/u" can: one per peer, kept).
    """

    def __init__(self, me: str, parties: Sequence[str], triples: int, dabits: int, rng: Rng,
                 ot: Mapping[str, PairwiseOt], session_id: str = "") -> None:
        self.me = me
        self.session_id = session_id
        self.parties = tuple(parties)
        what = f"arith {quoted(session_id)}"
        if me not in self.parties or len(set(self.parties)) != len(self.parties) or len(self.parties) < 2:
            raise LocalProtocolError(f"{what}: need {me!r} among two or more distinct parties, "
                                     f"got {list(self.parties)}")
        self.peers = tuple(p for p in self.parties if p != me)
        missing = [p for p in self.peers if p not in ot]
        if missing:
            raise LocalProtocolError(f"{what}: no OT setup with {missing}")
        if triples < 0 or dabits < 0 or triples + dabits == 0:
            raise LocalProtocolError(f"{what}: need triples, dabits >= 0, not both 0; got {triples}, {dabits}")
        if 64 * triples + dabits > _MAX_OTS:
            raise LocalProtocolError(f"{what}: {triples} triples and {dabits} daBits exceed one "
                                     f"extension of {_MAX_OTS} OTs")
        self.triples = triples
        self.dabits = dabits
        self._k = self.parties.index(me)
        self._ot = {p: ot[p] for p in self.peers}
        self._rng = rng
        self._started = False
        self._received: dict[str, set[str]] = {p: set() for p in self.peers}
        self._early: dict[str, bytes] = {}         # "arith/u" messages that came before start
        self._abc: tuple[Words, Words, Words] | None = None  # a_i, b_i and the running c_i
        self._r = np.zeros(0, dtype=np.uint64)       # our bits r_k, one 0/1 word each
        self._chosen: dict[str, tuple[Words, Words]] = {}  # our m_choice per peer: (triple part, fold part)
        self._fold_ot: dict[str, tuple[Words, Words]] = {}  # (m0, m1) of fold index(p), until its τ goes
        self._fold_sum = np.zeros(dabits, dtype=np.uint64)  # Σ_j (m_{r_k} + r_k·τ_j) of our own fold
        self._share = np.zeros(dabits, dtype=np.uint64)     # our share of u after fold `_level`
        self._level = 0
        self._triples_done = triples == 0
        self._dabits_done = dabits == 0

    def _ots_chosen_by(self, party: str) -> int:
        """How many OTs `party` chooses in its extension with each peer."""
        return 64 * self.triples + (self.dabits if self.parties.index(party) else 0)

    def _expected_from(self, peer: str) -> set[str]:
        steps = {STEP_U} if self._ots_chosen_by(peer) else set()
        if self.triples:
            steps.add(STEP_T)
        if self.dabits and self._k:
            steps.add(fold_step(self._k))
        return steps

    @property
    def finished(self) -> bool:
        """Whether every output event (ArithTriples, DaBits) of this party has been emitted."""
        return self._triples_done and self._dabits_done

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The peers from which an expected message has not arrived yet.

        Returns: their names in session order; () once finished.
        """
        if self.finished:
            return ()
        return tuple(p for p in self.peers if self._expected_from(p) - self._received[p])

    def start(self) -> list[Send | ArithTriples | DaBits]:
        """Draw a_i, b_i and r_k and send each peer the IKNP message of the OTs where we choose.

        Returns: one "arith/u" Send per peer (none if we choose no OTs), plus the answers to
        "arith/u" messages that came early.
        Raises: LocalProtocolError if started twice; as `receive` for messages kept from before.
        """
        if self._started:
            raise LocalProtocolError(f"arith {quoted(self.session_id)}: already started")
        self._started = True
        t, d = self.triples, self.dabits
        a = random_words(self._rng, t) if t else np.zeros(0, dtype=np.uint64)
        b = random_words(self._rng, t) if t else np.zeros(0, dtype=np.uint64)
        self._abc = (a, b, a * b)
        packed = random_words(self._rng, -(-d // 64)) if d else np.zeros(0, dtype=np.uint64)
        if d % 64:
            packed[-1] &= np.uint64((1 << (d % 64)) - 1)
        self._r = ((packed[:, None] >> _SHIFTS) & np.uint64(1)).reshape(-1)[:d].copy()
        if self._k == 0:
            self._share = self._r.copy()  # u = r_0 before fold 1
        events: list[Send | ArithTriples | DaBits] = []
        m = self._ots_chosen_by(self.me)
        if m:
            choices = np.concatenate([b, packed]) if self._k else b
            for p in self.peers:
                message, blocks = self._ot[p].as_receiver.extend_strings(choices, m)
                mine = low_words(blocks)
                self._chosen[p] = (mine[:64 * t], mine[64 * t:])
                events.append(Send(p, STEP_U, message))
        early, self._early = self._early, {}
        for p, payload in early.items():
            events += self._answer(p, payload)
        return events + self._advance()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | ArithTriples | DaBits]:
        """Answer a peer's IKNP message with our corrections, or take a peer's corrections.

        Returns: the Sends this allows ("arith/t", "arith/fold/k") and ArithTriples / DaBits
        once complete.
        Raises: RemoteProtocolError for a sender that is not a peer or a payload of the wrong
        length; RoundMismatch for an unknown or repeated step, a correction before our
        "arith/u" went out, or an IKNP window already used.
        """
        where = f"arith {quoted(self.session_id)}: {quoted(step)} from {quoted(sender)} to {self.me!r}"
        if sender not in self._ot:
            raise RemoteProtocolError(f"{where}: not a peer of this session")
        expected = self._expected_from(sender)
        if step not in expected:
            raise RoundMismatch(f"{where}: not a step this peer sends here (expected {sorted(expected)})")
        if step in self._received[sender]:
            raise RoundMismatch(f"{where}: received twice")
        if step == STEP_U:
            m = self._ots_chosen_by(sender)
            size = _IKNP_HEADER + KAPPA * (-(-m // KAPPA) * KAPPA) // 8
            if len(payload) != size:
                raise RemoteProtocolError(f"{where}: {len(payload)} bytes, expected {size} for {m} OTs")
            self._received[sender].add(STEP_U)
            if not self._started:
                self._early[sender] = payload
                return []
            return self._answer(sender, payload) + self._advance()
        if not self._started:
            raise RoundMismatch(f"{where}: a correction before our {STEP_U!r} went out")
        words = 64 * self.triples if step == STEP_T else self.dabits
        try:
            tau = words_from_bytes(payload, words)
        except ValueError as exc:
            raise RemoteProtocolError(f"{where}: {exc}") from None
        self._received[sender].add(step)
        mine_t, mine_f = self._chosen[sender]
        if step == STEP_T:
            if self._abc is None:
                raise LocalProtocolError(f"{where}: triple shares already handed over")
            _, b, c = self._abc
            c += gilboa_receive(mine_t, b, tau)
        else:
            self._fold_sum += cot_receive(mine_f, self._r, tau)
        return self._advance()

    def _answer(self, peer: str, payload: bytes) -> list[Send | ArithTriples | DaBits]:
        """Our side as the OT sender of `peer`'s extension: Gilboa τ now, fold τ when our share is known."""
        where = f"arith {quoted(self.session_id)}: {STEP_U!r} from {quoted(peer)} to {self.me!r}"
        try:
            h0, h1 = self._ot[peer].as_sender.extend_strings(self._ots_chosen_by(peer), payload)
        except RemoteProtocolError as exc:  # RoundMismatch included: a window used before
            raise type(exc)(f"{where}: {exc}") from None
        m0, m1 = low_words(h0), low_words(h1)
        cut = 64 * self.triples
        events: list[Send | ArithTriples | DaBits] = []
        if self.triples and self._abc is not None:
            a, _, c = self._abc
            tau, keep = gilboa_send(m0[:cut], m1[:cut], a)
            c += keep
            events.append(Send(peer, STEP_T, words_to_bytes(tau)))
        if m0.size > cut:
            self._fold_ot[peer] = (m0[cut:], m1[cut:])
        return events

    def _advance(self) -> list[Send | ArithTriples | DaBits]:
        """Fold as far as the OTs and corrections in hand allow; emit what is complete."""
        events: list[Send | ArithTriples | DaBits] = []
        if not self._started:
            return events
        n = len(self.parties)
        while not self._dabits_done and self._level < n - 1:
            k = self._level + 1
            if k == self._k:  # our fold: u_k + r_k − 2(u_k·r_k + Σ_j (m0_j + r_k·u_j))
                if any(fold_step(k) not in self._received[p] for p in self.peers):
                    break
                s, r = self._share, self._r
                self._share = s + r - np.uint64(2) * (s * r + self._fold_sum)
            else:  # P_k's fold: send τ = m0 − m1 + u_j, keep −m0, so our share gains 2·m0
                peer = self.parties[k]
                if peer not in self._fold_ot:
                    break
                m0, m1 = self._fold_ot.pop(peer)
                tau, keep = cot_send(m0, m1, self._share)
                events.append(Send(peer, fold_step(k), words_to_bytes(tau)))
                self._share = self._share - np.uint64(2) * keep
            self._level = k
        if not self._dabits_done and self._level == n - 1:
            self._dabits_done = True
            bits, self._r = self._r, np.zeros(0, dtype=np.uint64)
            arith, self._share = self._share, np.zeros(0, dtype=np.uint64)
            events.append(DaBits(bits, arith))
        if not self._triples_done and self._abc is not None and all(
                {STEP_U, STEP_T} <= self._received[p] for p in self.peers):
            self._triples_done = True
            (a, b, c), self._abc = self._abc, None
            events.append(ArithTriples(a, b, c))
        return events


# --- pools ------------------------------------------------------------------------------------

_Batch = TypeVar("_Batch", ArithTriples, DaBits)


class _SharePool(Generic[_Batch]):
    """One party's shares of a session's correlated randomness; `take` hands each out once, in order."""

    __slots__ = ("_parts", "_next", "handed_out")
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    _NOUN: ClassVar[str] = ""

    def __init__(self, batch: _Batch | None = None) -> None:
        self._parts = [np.zeros(0, dtype=np.uint64) for _ in self._FIELDS]
        self._next = 0
        self.handed_out = 0  # items handed out over the pool's life (for metrics)
        if batch is not None:
            self.add(batch)

    def _build(self, parts: list[Words]) -> _Batch:
        raise NotImplementedError

    @property
    def remaining(self) -> int:
        """Items not handed out yet."""
        return int(self._parts[0].size) - self._next

    def add(self, batch: _Batch) -> None:
        """Append a batch (copied) after the items still in the pool.

        Returns: None.
        """
        self._parts = [np.concatenate([part[self._next:], getattr(batch, name)]).astype(np.uint64)
                       for part, name in zip(self._parts, self._FIELDS)]
        self._next = 0

    def take(self, n: int) -> _Batch:
        """Hand out the next n items; the pool zeroes its copy and never hands them out again.

        Returns: read-only shares of n items.
        Raises: LocalProtocolError ("... reuse refused") if fewer are left; also if n < 1.
        """
        if n < 1:
            raise LocalProtocolError(f"a {self._NOUN} take needs at least one, got {n}")
        if n > self.remaining:
            raise LocalProtocolError(f"{self._NOUN} reuse refused: asked for {n}, {self.remaining} left")
        span = slice(self._next, self._next + n)
        taken = []
        for arr in self._parts:
            part = arr[span].copy()
            arr[span] = 0  # the pool keeps nothing it has handed out
            part.flags.writeable = False
            taken.append(part)
        self._next += n
        self.handed_out += n
        return self._build(taken)


class ArithPool(_SharePool[ArithTriples]):
    """One party's arithmetic triples; `take(n)` hands out the next n triples, each exactly once."""

    __slots__ = ()
    _FIELDS = ("a", "b", "c")
    _NOUN = "triple"

    def _build(self, parts: list[Words]) -> ArithTriples:
        return ArithTriples(parts[0], parts[1], parts[2])


class DaBitPool(_SharePool[DaBits]):
    """One party's daBits; `take(n)` hands out the next n daBits, each exactly once."""

    __slots__ = ()
    _FIELDS = ("bits", "arith")
    _NOUN = "daBit"

    def _build(self, parts: list[Words]) -> DaBits:
        return DaBits(parts[0], parts[1])
