"""Programs on secret-shared values, and the engine that runs one among the nodes (PROTOCOLS.md §2, §5, §8).

A program is a straight-line generator written as if for one party. Whenever it needs a value
opened among the nodes (never to the coordinator) it yields an `Open`: this party's words, a
label, and how the parties' words combine (XOR for bit sharings, addition mod 2^64 for
arithmetic ones); the engine sends the words to every peer, waits for theirs, and sends the
combination back into the generator. Sub-programs compose with `yield from`:

    def program(ctx, x):                          # x: this party's additive shares
        b = yield from at_least(ctx, "cmp", x, 0, 32)           # XOR shares of [x >= 0]
        b = yield from bit_to_arith(ctx, "b2a", b)               # additive shares of the same bits
        return (yield from multiply(ctx, "mul", b, x))           # [x >= 0] * x

An opening may be split into segments of (holders, words) (`Open.segments`): a segment goes only
between its holders, whose shares alone make it up (the carry-save gates of mpc/protocols/compare.py
run among the parties holding their summands, on triples made among them: `ctx.bits.take(words,
holders)`); the others hold zeros there and neither send nor receive it.

Everything a program opens is masked by preprocessing it draws from `ctx` in program order
(bit triples for AND gates, arithmetic triples for products, daBits for conversions), or by
random bits XOR-shared from every party's own coins (`ctx.rng`: the fan-in carry's masks,
mpc/protocols/compare.py), so every opened value is uniform on its own; only the program's return value, this party's share of
the output, leaves for the coordinator. The shape of a program (its rounds, labels and how
much preprocessing it draws) depends on public sizes only, never on values: `plan` runs it
once on zeros to learn the shape, before any preprocessing is made.

Primitives here, each one round or a fixed circuit:
  and_gates     Beaver AND on XOR-shared bits (Beaver, CRYPTO 1991; PROTOCOLS.md §2)
  sign_bit      MSB of an additive sharing mod 2^ell (the circuit of mpc/protocols/compare.py, §5)
  at_least      [x >= k] for public k; less_than [x < y]
  multiply      Beaver multiplication mod 2^64 with arithmetic triples (PROTOCOLS.md §8)
  bit_to_arith  B2A of XOR-shared bits with daBits (Rotaru & Wood, INDOCRYPT 2019; §8)
  select        [c] ? [x] : [y] = [y] + [c]([x] - [y]) (§8)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.ot.arith import ArithTriples, DaBits
from mpc.ot.triples import ALL, BitTriples, Holders, Layout, TripleSource, first_holder, holds
from mpc.prg import Rng, SystemRng
from mpc.protocols.beaver import beaver_finish, beaver_open_message
from mpc.protocols.compare import Bits, Gates, Rows, pack_bits, pair_words, sign_bit_circuit, to_bit_planes, unpack_bits
from mpc.ring import RING_BITS, WORD, Words, reduce_bits, words_from_bytes, words_to_bytes

T = TypeVar("T")
Combine = Literal["xor", "add"]
MAX_LABEL = 48


Segments = tuple[tuple[Holders, int], ...]


@dataclass(frozen=True, slots=True)
class Open:
    """Open `words` among the nodes: every party contributes its words, all learn the combination.

    `segments` (XOR only), if given, splits the words into runs of (holders, count): a run is
    exchanged among its holders only, and is 0 at every other party (whose shares of it are 0).
    """

    label: str
    words: Words
    combine: Combine
    segments: Segments | None = None

    def __repr__(self) -> str:
        return f"Open({self.label!r}, {self.words.size} words, {self.combine})"


Program = Generator[Open, Words, T]


class ArithSource(Protocol):
    """Where a party draws its arithmetic triples; every party draws in the same order."""

    def take(self, n: int) -> ArithTriples:
        """The next n triples, never handed out before."""
        ...


class DaBitSource(Protocol):
    """Where a party draws its daBits; every party draws in the same order."""

    def take(self, n: int) -> DaBits:
        """The next n daBits, never handed out before."""
        ...


@dataclass(eq=False)
class Context:
    """What a program knows of the session: its party index and count, and its preprocessing."""

    index: int
    parties: int
    bits: TripleSource
    arith: ArithSource
    dabits: DaBitSource
    rng: Rng = field(default_factory=SystemRng)   # this party's own coins (the fan-in prefix's masks)

    @property
    def first(self) -> bool:
        """Whether this party is P_0 (the one that adds public constants)."""
        return self.index == 0


def public(ctx: Context, value: Words) -> Words:
    """This party's additive share of a public value: P_0 holds it, the others 0."""
    return value.copy() if ctx.first else np.zeros_like(value)


def open_words(label: str, words: Words, combine: Combine) -> Program[Words]:
    """Open words among the nodes (the masked values of a primitive, never a raw input).

    Returns: the combination over all parties.
    """
    return (yield Open(label, np.ascontiguousarray(words, dtype=np.uint64), combine))


def and_gates(ctx: Context, label: str, left: Bits, right: Bits) -> Program[Bits]:
    """One layer of Beaver AND gates on XOR-shared bits of any shape (one round).

    Returns: this party's XOR shares of left & right, same shape.
    """
    if left.shape != right.shape:
        raise LocalProtocolError(f"{label}: AND of shapes {left.shape} and {right.shape}")
    if left.size == 0:
        return np.zeros_like(left)
    (z,), _ = yield from _and_and_open(ctx, label, [(ALL, left, right)], np.zeros(0, dtype=np.bool_))
    return z


def _and_and_open(ctx: Context, label: str, groups: Sequence[Gates],
                  reveal: Bits) -> Program[tuple[list[Bits], Bits]]:
    """One round: Beaver AND gates on each group's left & right among its holders (any number of
    groups, each holder set once, even none) and an opening of the XOR-shared bits `reveal` (already
    masked by the caller) among every party, in one message per peer.

    A group's triples are the holders' own (`ctx.bits.take(words, holders)`: zeros at the others,
    whose shares of its inputs are 0 too); its d and e go to its holders only, and the lowest-indexed
    holder adds d & e.
    Returns: (this party's shares of each group's left & right, the opened bits), in their shapes.
    """
    xs = [pack_bits(left) for _, left, _ in groups]
    ys = [pack_bits(right) for _, _, right in groups]
    r = pack_bits(reveal)
    if reveal.size % 64:   # the last word's padding opens as coins, like every other bit sent
        coins = np.frombuffer(ctx.rng.random_bytes(8), dtype=WORD)[0]
        r[-1] ^= np.uint64(coins) & ~np.uint64((1 << reveal.size % 64) - 1)
    ts = [ctx.bits.take(int(x.size), h) for x, (h, _, _) in zip(xs, groups, strict=True)]
    ds, es = zip(*(beaver_open_message(x, y, t) for x, y, t in zip(xs, ys, ts, strict=True))) if ts else ((), ())
    sizes = [int(x.size) for x in xs]
    whole = all(h == ALL for h, _, _ in groups)
    runs = tuple((h, n) for (h, _, _), n in zip(groups, sizes, strict=True))
    segments = None if whole else runs * 2 + ((ALL, int(r.size)),)   # d's, e's, then the opened bits
    opened = yield Open(label, np.concatenate((*ds, *es, r)), "xor", segments)
    total = sum(sizes)
    out: list[Bits] = []
    start = 0
    for (h, left, _), t, n in zip(groups, ts, sizes, strict=True):
        d, e = opened[start:start + n], opened[total + start:total + start + n]
        z = beaver_finish(first_holder(h, ctx.index), d, e, t) if holds(h, ctx.index) else np.zeros_like(d)
        out.append(unpack_bits(z, left.shape))
        start += n
    return out, unpack_bits(opened[2 * total:], reveal.shape)


def sign_bit(ctx: Context, label: str, shares: Words, ell: int) -> Program[Words]:
    """MSB of the values additively shared mod 2^ell (the circuit of mpc/protocols/compare.py).

    Returns: XOR shares of each MSB, one uint64 word (0 or 1) per value.
    Raises: LocalProtocolError (when the program starts) for ell outside 2..64 or shares that are
    not a one-dimensional uint64 array.
    """
    if not 2 <= ell <= RING_BITS:
        raise LocalProtocolError(f"{label}: ell must be in 2..{RING_BITS}, got {ell}")
    if not isinstance(shares, np.ndarray) or shares.dtype != np.uint64 or shares.ndim != 1:
        raise LocalProtocolError(f"{label}: shares must be a one-dimensional uint64 array")
    circuit = sign_bit_circuit(to_bit_planes(reduce_bits(shares, ell), ell), ctx.index, ctx.parties,
                               ctx.rng.random_bytes)
    step, groups, reveal = next(circuit)
    while True:
        answer = yield from _and_and_open(ctx, f"{label}/{step}" if label else step, groups, reveal)
        try:
            step, groups, reveal = circuit.send(answer)
        except StopIteration as stop:
            return np.asarray(stop.value, dtype=np.uint64)


def at_least(ctx: Context, label: str, shares: Words, k: int | Words, ell: int) -> Program[Words]:
    """[x >= k] for additively shared x and public k: 1 ^ MSB(x - k) (PROTOCOLS.md §5).

    Correct when -2^(ell-1) <= x - k < 2^(ell-1).
    Returns: XOR shares of the bits, one word (0 or 1) per value.
    """
    kw = np.full(shares.size, k % (1 << RING_BITS), dtype=np.uint64) if isinstance(k, int) else k
    if kw.shape != shares.shape:
        raise LocalProtocolError(f"{label}: {kw.size} thresholds for {shares.size} values")
    msb = yield from sign_bit(ctx, label, shares - public(ctx, kw), ell)
    return msb ^ public(ctx, np.ones_like(msb))


def less_than(ctx: Context, label: str, x: Words, y: Words, ell: int) -> Program[Words]:
    """[x < y] for additively shared x and y: MSB(x - y), correct when x - y fits ell bits signed.

    Returns: XOR shares of the bits.
    """
    return (yield from sign_bit(ctx, label, x - y, ell))


def multiply(ctx: Context, label: str, x: Words, y: Words) -> Program[Words]:
    """Elementwise [x * y] mod 2^64 with Beaver triples (one round; PROTOCOLS.md §8).

    Open d = x - a and e = y - b; [xy] = [c] + d[b] + e[a] + de (P_0 adds de).
    Returns: this party's additive shares of the products.
    """
    if x.shape != y.shape:
        raise LocalProtocolError(f"{label}: product of shapes {x.shape} and {y.shape}")
    if x.size == 0:
        return np.zeros_like(x)
    t = ctx.arith.take(int(x.size))
    opened = yield from open_words(label, np.concatenate((x - t.a, y - t.b)), "add")
    d, e = opened[:x.size], opened[x.size:]
    z: Words = t.c + d * t.b + e * t.a
    if ctx.first:
        z += d * e
    return z


def bit_to_arith(ctx: Context, label: str, bits: Words) -> Program[Words]:
    """Convert XOR-shared bits to additive shares of the same bits with daBits (one round).

    Open e = b ^ r (uniform: r is), then [b] = e + [r] - 2e[r] (PROTOCOLS.md §8).
    Returns: this party's additive shares mod 2^64.
    """
    if bits.size == 0:
        return np.zeros_like(bits)
    r = ctx.dabits.take(int(bits.size))
    e = yield from open_words(label, (bits & np.uint64(1)) ^ r.bits, "xor")
    return public(ctx, e) + r.arith - np.uint64(2) * e * r.arith


def select(ctx: Context, label: str, c: Words, x: Words, y: Words) -> Program[Words]:
    """[c] ? [x] : [y] elementwise, for additively shared bits c (one multiplication).

    Returns: this party's additive shares of the selected values.
    """
    return y + (yield from multiply(ctx, label, c, x - y))


# ---- planning -------------------------------------------------------------------------------

@dataclass(eq=False)
class _Counter:
    """A preprocessing source for the dry run: zeros, and a count of what was drawn (bit triples by holders)."""

    kind: str
    drawn: int = 0
    layout: dict[Holders, int] = field(default_factory=dict)

    def take(self, n: int, holders: Holders = ALL) -> BitTriples | ArithTriples | DaBits:
        if n < 1:
            raise LocalProtocolError(f"a take of {self.kind} needs at least one, got {n}")
        self.drawn += n
        self.layout[holders] = self.layout.get(holders, 0) + n
        zero = np.zeros(n, dtype=np.uint64)
        if self.kind == "bits":
            return BitTriples(zero, zero.copy(), zero.copy())
        if self.kind == "arith":
            return ArithTriples(zero, zero.copy(), zero.copy())
        return DaBits(zero, zero.copy())


def canonical_layout(layout: dict[Holders, int]) -> Layout:
    """A triple layout in the order every party lays its triples out: by holder mask (ALL first)."""
    return tuple(sorted((h, n) for h, n in layout.items() if n))


@dataclass(frozen=True, slots=True)
class Plan:
    """A program's shape: its rounds (label, words this party sends) and the preprocessing it draws.

    `bit_layout` splits the bit triples by the holders of their gates (ALL: every party), and
    `segments` each round's words, where some gates run among fewer parties (both empty where none
    does); each pair of parties makes the triples of the holder sets it is in (`pair_words`).
    """

    rounds: tuple[tuple[str, int], ...]
    bit_words: int
    arith_triples: int
    dabits: int
    output_words: int
    bit_layout: Layout = ()
    segments: tuple[Segments | None, ...] = ()   # per round, its Open's segments (None: every word to every peer)

    def words_between(self, k: int, i: int, j: int) -> int:
        """The words party i sends party j in round k (and j sends i)."""
        segments = self.segments[k] if k < len(self.segments) else None
        rows = None if segments is None else _shared_words(segments, i, j)
        return self.rounds[k][1] if rows is None else int(rows.size)

    @property
    def layout(self) -> Layout:
        """The bit triples by holders, in the order every party lays them out."""
        return self.bit_layout or (((ALL, self.bit_words),) if self.bit_words else ())

    def pair_words(self, i: int, j: int) -> int:
        """The triple words parties i and j make together (the random OTs of each direction)."""
        return pair_words(dict(self.layout), i, j)


ProgramFactory = Callable[[Context, Words], Program[Words]]


def plan(factory: ProgramFactory, parties: int, input_words: int) -> Plan:
    """Run a program once on zeros (as P_0) to learn its shape: it depends on public sizes only.

    Returns: the Plan.
    """
    counters = _Counter("bits"), _Counter("arith"), _Counter("dabits")
    ctx = Context(0, parties, counters[0], counters[1], counters[2])   # type: ignore[arg-type]
    program = factory(ctx, np.zeros(input_words, dtype=np.uint64))
    rounds: list[tuple[str, int]] = []
    segments: list[Segments | None] = []
    try:
        request = next(program)
        while True:
            rounds.append((request.label, int(request.words.size)))
            segments.append(request.segments)
            request = program.send(np.zeros_like(request.words))
    except StopIteration as stop:
        output = np.asarray(stop.value)
    return Plan(tuple(rounds), counters[0].drawn, counters[1].drawn, counters[2].drawn, int(output.size),
                *_if_subsets(canonical_layout(counters[0].layout), tuple(segments)))


def _if_subsets(layout: Layout, segments: tuple[Segments | None, ...]) -> tuple[Layout, tuple[Segments | None, ...]]:
    """A plan's layout and segments, or none where every gate runs among every party."""
    return (layout, segments) if any(h != ALL for h, _ in layout) else ((), ())


# ---- the engine -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _shared_words(segments: Segments, i: int, j: int) -> Rows | None:
    """Which words of an opening with these segments parties i and j exchange: those of the runs
    held by both, in order (None: every word)."""
    if all(h == ALL for h, _ in segments):
        return None
    runs, start = [], 0
    for h, n in segments:
        if holds(h, i) and holds(h, j):
            runs.append(np.arange(start, start + n, dtype=np.intp))
        start += n
    rows = np.concatenate(runs) if runs else np.zeros(0, dtype=np.intp)
    rows.flags.writeable = False   # cached: shared by every round of this shape
    return rows


@dataclass(eq=False)
class _Round:
    label: str
    words: Words
    combine: Combine
    shared: dict[str, Rows | None]   # per peer, the words exchanged with it (None: all)
    inbox: dict[str, Words] = field(default_factory=dict)


class CircuitParty:
    """Runs one program at one party: sends each opening to every peer, combines the peers' answers.

    Step labels are `prefix + "/" + label`. A peer can be at most one round ahead of us (it
    needs our words to finish a round), so at most one message per peer is kept for a later
    round (its calls may overtake each other); it must carry the label we reach next. Every payload
    must have exactly the length of our own words for that round, or of the words we share with that
    peer where the opening has segments (the program's shape is public and the same everywhere).
    """

    def __init__(self, session_id: str, me: str, parties: Sequence[str], program: Program[Words],
                 prefix: str, labels: Sequence[str] | None = None, gate: Callable[[], bool] | None = None) -> None:
        """Args:
            labels: the program's round labels in order (its `plan`), if known: then a message
                for neither this round nor the next is refused on arrival, not when its round comes.
            gate: while it says False, a round whose words are all in is not finished (the program
                is not resumed); `resume` once it says True. A program's first AND layer may so open
                while its triples are still being made (mpc/ot/triples.py PendingTriples).
        Raises: LocalProtocolError if `me` is not among the parties, or they repeat or are fewer than two.
        """
        if me not in parties:
            raise LocalProtocolError(f"session {session_id}: {me!r} is not among the parties {list(parties)}")
        if len(set(parties)) != len(parties) or len(parties) < 2:
            raise LocalProtocolError(f"session {session_id}: a program needs at least two distinct parties, "
                                     f"got {list(parties)}")
        self.session_id = session_id
        self.me = me
        self.peers = tuple(p for p in parties if p != me)
        self._index = {p: i for i, p in enumerate(parties)}
        self.prefix = prefix
        self._program: Program[Words] | None = program
        self._round: _Round | None = None
        self._ahead: dict[str, tuple[str, bytes]] = {}
        self._labels = None if labels is None else tuple(f"{prefix}/{label}" for label in labels)
        self._gate = gate
        self._started = False
        self._done = False
        self.rounds = 0

    @property
    def finished(self) -> bool:
        """Whether this party has emitted its output share."""
        return self._done

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers whose words for the current round have not arrived."""
        if self._done or self._round is None:
            return () if self._done else self.peers
        return tuple(p for p in self.peers if p not in self._round.inbox)

    def start(self) -> list[Send | Output]:
        """Run the program to its first opening.

        Returns: one Send per peer (or the Output of a program that opens nothing).
        Raises: LocalProtocolError if started twice.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: {self.prefix} already started")
        self._started = True
        events = self._step(None)
        return events + self._maybe_advance()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a peer's words for the current round (or keep one for the next).

        Returns: the next round's Sends, the Output after the last round, or [].
        Raises: RemoteProtocolError for a sender that is not a peer or a payload of the wrong
        length; RoundMismatch for a finished session, a repeated or unexpected step.
        """
        if sender not in self.peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        if self._done:
            raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} after the end")
        current = self._round
        if current is not None and step == f"{self.prefix}/{current.label}":
            if sender in current.inbox:
                raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} already received")
            self._accept(current, sender, step, payload)
            return self._maybe_advance()
        upcoming = self.rounds   # the index of the next round (rounds counts the rounds begun)
        if self._labels is not None and (upcoming >= len(self._labels) or step != self._labels[upcoming]):
            expected = self._labels[upcoming] if upcoming < len(self._labels) else "(none: this is the last round)"
            raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} is neither this round's "
                                f"nor the next ({expected!r})")
        # For a later round: peers' calls may overtake each other, so a peer's next-round words can
        # come before its words for this round; it cannot be two rounds ahead (it needs ours).
        if sender in self._ahead:
            raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r}, but a message for a "
                                f"later round ({self._ahead[sender][0]!r}) is already waiting")
        self._ahead[sender] = (step, payload)
        return []

    def _accept(self, current: _Round, sender: str, step: str, payload: bytes) -> None:
        expected = f"{self.prefix}/{current.label}"
        if step != expected:
            raise RoundMismatch(f"session {self.session_id}: expected step {expected!r}, got {step!r} from {sender!r}")
        shared = current.shared[sender]
        try:
            size = current.words.size if shared is None else shared.size
            current.inbox[sender] = words_from_bytes(payload, int(size))
        except ValueError as exc:
            raise RemoteProtocolError(f"session {self.session_id}: step {step!r} from {sender!r}: {exc}") from None

    def resume(self) -> list[Send | Output]:
        """Finish the rounds whose words are all in, once the gate has opened.

        Returns: the next round's Sends, the Output after the last round, or [].
        """
        return self._maybe_advance()

    def _maybe_advance(self) -> list[Send | Output]:
        events: list[Send | Output] = []
        while self._round is not None and len(self._round.inbox) == len(self.peers):
            if self._gate is not None and not self._gate():
                break
            current = self._round
            combined = current.words.copy()
            for peer, words in current.inbox.items():
                shared = current.shared[peer]
                if shared is not None:
                    combined[shared] ^= words
                elif current.combine == "xor":
                    combined ^= words
                else:
                    combined += words
            events += self._step(combined)
        return events

    def _step(self, answer: Words | None) -> list[Send | Output]:
        assert self._program is not None
        try:
            request = next(self._program) if answer is None else self._program.send(answer)
        except StopIteration as stop:
            if self._ahead:   # nothing comes after the last round: a kept message was wrong all along
                sender, (step, _) = next(iter(self._ahead.items()))
                raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} matches no round "
                                    f"of the program")
            self._done = True
            self._program = self._round = None
            return [Output(np.asarray(stop.value, dtype=np.uint64))]
        if len(request.label) > MAX_LABEL:
            raise LocalProtocolError(f"session {self.session_id}: step label {request.label[:60]!r} is too long")
        step = f"{self.prefix}/{request.label}"
        segments = request.segments
        if segments is not None and (request.combine != "xor" or sum(n for _, n in segments) != request.words.size):
            raise LocalProtocolError(f"session {self.session_id}: step {step!r}: segments of "
                                     f"{sum(n for _, n in segments)} words for {request.words.size} "
                                     f"{request.combine} words")
        me = self._index[self.me]
        shared = {p: None if segments is None else _shared_words(segments, me, self._index[p]) for p in self.peers}
        self._round = _Round(request.label, request.words, request.combine, shared)
        self.rounds += 1
        if segments is None or all(v is None for v in shared.values()):
            payload = words_to_bytes(request.words)
            events: list[Send | Output] = [Send(peer, step, payload) for peer in self.peers]
        else:
            events = [Send(p, step, words_to_bytes(request.words if rows is None else request.words[rows]))
                      for p, rows in shared.items()]
        ahead, self._ahead = self._ahead, {}
        for sender, (step, data) in ahead.items():
            self._accept(self._round, sender, step, data)   # it must be for this round
        return events
