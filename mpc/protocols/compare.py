"""Sign bit and comparison on additive shares mod 2^ell, for n parties and a dishonest majority
(PROTOCOLS.md §5; DESIGN.md §4, "Threshold vote").

Arithmetic to boolean as in CrypTen (Knott et al., NeurIPS 2021, "CrypTen: Secure Multi-Party
Computation Meets Machine Learning", its arithmetic-to-binary conversion): P_i's additive share
x_i is already an XOR sharing of the summand x_i in which every other party holds 0. Carry-save
adders in a Wallace tree (Wallace, IEEE Trans. Electronic Computers 1964, "A Suggestion for a
Fast Multiplier") reduce the n summands to two, three at a time (S = A ^ B ^ C, carry = MAJ << 1 with
MAJ = ((A ^ C) & (B ^ C)) ^ C, one AND layer per level, every CSA of a level in one round);
then g = A & B, p = A ^ B and a Kogge-Stone prefix (Kogge & Stone, IEEE Trans. Computers
1973) G <- G ^ (P & (G << d)), P <- P & (P << d) for d = 1, 2, 4, ..., both ANDs of a level
in one round, give MSB(A + B) = p_{ell-1} ^ G_{ell-2}. Every AND is a Beaver gate
(mpc.protocols.beaver, PROTOCOLS.md §2); shifts and XORs are local.

Layout (documented choice): bits live in bit planes, a bool array of shape (ell, batch) whose
row j holds bit j of every value, so that a gate layer is one numpy operation for the whole
batch. The gates of one round, every bit and every value, are packed densely into uint64
words (np.packbits, little-endian, zero padding) just for the Beaver opening, so one triple
word buys 64 real gates whatever ell and the batch size are, and one round is one message per
peer: d words then e words, little-endian uint64.

Only gates that reach the output bit are evaluated: carries are computed for bits
0..ell-2 (the top carry falls off the ring), g only where the prefix reads it, and the
Kogge-Stone levels only on the (G, P) positions that feed G_{ell-2}; the last level has a
single gate. Costs, per compared value (batch B takes ceil(gates * B / 64) words per round):

    rounds = CSA depth(n) + 1 + ceil(log2(ell - 1))      (CSA depth: 0, 1, 2, 3, 3 for n = 2..6)
    gates  = (n - 2) * (ell - 1) + prefix gates(ell)       (g and Kogge-Stone together)

    ell            2   8   12   32   64
    prefix gates   1  17   29   87  182     e.g. n = 3, ell = 32: 118 gates (1.84 triple
    rounds, n = 3  2   5    6    7    8     words) per value, 7 rounds for any batch

`SignBitParty.rounds` and `SignBitParty.triple_words` compute both exactly from the same
circuit the engine runs. Output: this party's XOR share of each MSB, one uint64 word (0 or 1)
per value. The shares of the input are reduced mod 2^ell here, which keeps them a sharing of
x mod 2^ell (DESIGN.md §3).
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Sequence

import numpy as np
import numpy.typing as npt

from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.protocols.beaver import BitTriples, TripleSource, beaver_finish, beaver_open_message
from mpc.events import Output, Send
from mpc.ring import RING_BITS, WORD, Words, reduce_bits, words_from_bytes, words_to_bytes

Bits = npt.NDArray[np.bool_]
# One AND layer of the circuit: (step label, left inputs, right inputs), each (gates, batch);
# the engine sends back this party's shares of left & right, same shape.
_Layer = tuple[str, Bits, Bits]
_Circuit = Generator[_Layer, Bits, Bits]


@functools.lru_cache(maxsize=128)
def _kogge_stone_plan(ell: int) -> tuple[tuple[int, ...], tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]]:
    """Which positions of the Kogge-Stone prefix reach G_{ell-2}, found backwards from it.

    Returns: (the rows of g that are read, and per level t (d = 2^t) the rows j >= d whose
    G_j resp. P_j gets an AND gate).
    """
    levels = (ell - 2).bit_length()  # 2^levels >= ell - 1 bits of carry prefix
    need_g: set[int] = {ell - 2}
    need_p: set[int] = set()
    gates: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for t in reversed(range(levels)):
        d = 1 << t
        g_gates = tuple(sorted(j for j in need_g if j >= d))
        p_gates = tuple(sorted(j for j in need_p if j >= d))
        gates.append((g_gates, p_gates))
        # G_j needs G_j, and if j >= d also P_j and G_{j-d}; P_j needs P_j and, if j >= d, P_{j-d}.
        need_p = need_p | set(g_gates) | {j - d for j in p_gates}
        need_g = need_g | {j - d for j in g_gates}
    return tuple(sorted(need_g)), tuple(reversed(gates))


def sign_bit_circuit(own: Bits, me: int, parties: int) -> _Circuit:
    """The MSB circuit on XOR shares, as a coroutine that yields one AND layer per round.

    Returns (as the generator's value): this party's shares of MSB, shape (batch,).
    """
    ell = own.shape[0]
    zero = np.zeros_like(own)
    summands = [own if i == me else zero for i in range(parties)]
    level = 0
    while len(summands) > 2:  # carry-save adders, a Wallace tree of depth CSA depth(n)
        groups = [summands[3 * q:3 * q + 3] for q in range(len(summands) // 3)]
        left = np.concatenate([a[:-1] ^ c[:-1] for a, _, c in groups])
        right = np.concatenate([b[:-1] ^ c[:-1] for _, b, c in groups])
        maj = yield (f"csa/{level}", left, right)
        reduced: list[Bits] = []
        for q, (a, b, c) in enumerate(groups):
            carry = np.zeros_like(own)
            carry[1:] = maj[q * (ell - 1):(q + 1) * (ell - 1)] ^ c[:-1]  # carry = MAJ << 1
            reduced += [a ^ b ^ c, carry]
        summands = reduced + summands[3 * len(groups):]
        level += 1
    a, b = summands
    p = a ^ b
    g_rows, levels = _kogge_stone_plan(ell)
    rows = np.array(g_rows, dtype=np.intp)
    big_g = np.zeros_like(own)
    big_g[rows] = yield ("gen", a[rows], b[rows])
    big_p = p.copy()
    for t, (g_gates, p_gates) in enumerate(levels):
        d = 1 << t
        gi = np.array(g_gates, dtype=np.intp)
        pi = np.array(p_gates, dtype=np.intp)
        z = yield (f"ks/{t}", np.concatenate((big_p[gi], big_p[pi])),
                   np.concatenate((big_g[gi - d], big_p[pi - d])))
        big_g[gi] ^= z[:gi.size]
        big_p[pi] = z[gi.size:]
    msb: Bits = p[ell - 1] ^ big_g[ell - 2]  # MSB(A + B) = p_{ell-1} ^ carry into bit ell-1
    return msb


@functools.lru_cache(maxsize=128)
def _layer_plan(parties: int, ell: int) -> tuple[tuple[str, int], ...]:
    """Dry-run the circuit on one value to list its rounds.

    Returns: (step label, AND gates per value) for every round, in order.
    """
    circuit = sign_bit_circuit(np.zeros((ell, 1), dtype=np.bool_), 0, parties)
    plan: list[tuple[str, int]] = []
    try:
        label, left, _ = next(circuit)
        while True:
            plan.append((label, left.shape[0]))
            label, left, _ = circuit.send(np.zeros_like(left))
    except StopIteration:
        return tuple(plan)


def _words_for(gates: int, batch: int) -> int:
    return -(-gates * batch // 64)


def to_bit_planes(words: Words, ell: int) -> Bits:
    """Bit planes of words: row j holds bit j of every word (shape (ell, len(words)))."""
    shifts = np.arange(ell, dtype=np.uint64)[:, None]
    return ((words[None, :] >> shifts) & np.uint64(1)).astype(np.bool_)


def pack_bits(bits: Bits) -> Words:
    """Pack bits of any shape densely into uint64 words, little-endian, zero padded."""
    # The zero padding of the last word opens as bits of a (resp. b) that no gate ever uses.
    flat = np.packbits(bits.reshape(-1), bitorder="little")
    buf = np.zeros(8 * _words_for(bits.size, 1), dtype=np.uint8)
    buf[:flat.size] = flat
    return buf.view(WORD).astype(np.uint64, copy=False)


def unpack_bits(words: Words, shape: tuple[int, ...]) -> Bits:
    """The inverse of pack_bits for bits of the given shape."""
    raw = np.ascontiguousarray(words, dtype=WORD).view(np.uint8)
    bits: Bits = np.unpackbits(raw, count=int(np.prod(shape)), bitorder="little").reshape(shape).astype(np.bool_)
    return bits


def _check_sizes(where: str, parties: int, ell: int, batch: int) -> None:
    if parties < 2:
        raise LocalProtocolError(f"{where}: a comparison needs at least 2 parties, got {parties}")
    if not 2 <= ell <= RING_BITS:
        raise LocalProtocolError(f"{where}: ell must be in 2..{RING_BITS}, got {ell}")
    if batch < 1:
        raise LocalProtocolError(f"{where}: a comparison needs at least one value, got {batch}")


def _check_shares(where: str, shares: Words, batch: int) -> None:
    if not isinstance(shares, np.ndarray) or shares.dtype != np.uint64 or shares.shape != (batch,):
        raise LocalProtocolError(f"{where}: shares must be a uint64 array of shape ({batch},)")


class SignBitParty:
    """One party of the n-party sign-bit (MSB) extraction from additive shares mod 2^ell.

    Messages may arrive before `start` and up to one round ahead; they are buffered.
    Every party must draw its triples from its source in the same order as the others.
    """

    def __init__(self, session_id: str, me: str, parties: Sequence[str], ell: int, batch: int,
                 triples: TripleSource, step_prefix: str = "cmp") -> None:
        if me not in parties:
            raise LocalProtocolError(f"session {session_id}: {me!r} is not among the parties {list(parties)}")
        if len(set(parties)) != len(parties):
            raise LocalProtocolError(f"session {session_id}: parties repeat: {list(parties)}")
        _check_sizes(f"session {session_id}", len(parties), ell, batch)
        self.session_id = session_id
        self.me = me
        self.parties = tuple(parties)
        self.ell = ell
        self.batch = batch
        self._source = triples
        self._index = self.parties.index(me)
        self._peers = tuple(p for p in self.parties if p != me)
        plan = _layer_plan(len(self.parties), ell)
        self.steps = tuple(f"{step_prefix}/{label}" for label, _ in plan)
        self._step_index = {step: i for i, step in enumerate(self.steps)}
        self._words = tuple(_words_for(gates, batch) for _, gates in plan)
        self._inbox: list[dict[str, Words]] = [{} for _ in self.steps]
        self._round = 0
        self._circuit: _Circuit | None = None
        self._triples: BitTriples | None = None
        self._offset = 0
        self._opened: tuple[Words, Words, BitTriples, tuple[int, ...]] | None = None
        self._started = False
        self._done = False

    @staticmethod
    def rounds(parties: int, ell: int) -> int:
        """The number of communication rounds (AND layers), whatever the batch size.

        Returns: CSA depth(parties) + 1 + ceil(log2(ell - 1)).
        Raises: LocalProtocolError for fewer than 2 parties or ell outside 2..64.
        """
        _check_sizes("sign bit", parties, ell, 1)
        return len(_layer_plan(parties, ell))

    @staticmethod
    def triple_words(parties: int, ell: int, batch: int) -> int:
        """The number of packed triple words one run takes from each party's TripleSource.

        Returns: the sum over rounds of ceil(gates per value * batch / 64).
        Raises: LocalProtocolError for fewer than 2 parties, ell outside 2..64 or batch < 1.
        """
        _check_sizes("sign bit", parties, ell, batch)
        return sum(_words_for(gates, batch) for _, gates in _layer_plan(parties, ell))

    @property
    def finished(self) -> bool:
        """Whether this party has emitted its output share."""
        return self._done

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The peers whose message for the current round has not arrived yet.

        Returns: their names in session order (empty once finished).
        """
        if self._done:
            return ()
        return tuple(p for p in self._peers if p not in self._inbox[self._round])

    def start(self, shares: Words) -> list[Send | Output]:
        """Take this party's additive shares (one uint64 per value) and open the first AND layer.

        Returns: one Send per peer, and whatever buffered messages already allow.
        Raises: LocalProtocolError if started twice, for a wrong shape or dtype, or when the
        triple source cannot give SignBitParty.triple_words(n, ell, batch) fresh words.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: comparison already started")
        _check_shares(f"session {self.session_id}", shares, self.batch)
        total = sum(self._words)
        triples = self._source.take(total)
        if triples.words != total:
            raise LocalProtocolError(f"session {self.session_id}: asked for {total} triple words, "
                                     f"got {triples.words}")
        self._started = True
        self._triples = triples
        self._circuit = sign_bit_circuit(to_bit_planes(reduce_bits(shares, self.ell), self.ell),
                                          self._index, len(self.parties))
        _, left, right = next(self._circuit)
        return [*self._open(left, right), *self._advance()]

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a peer's masked openings (d then e words) for one round.

        Returns: the next round's Sends, or the Output after the last round, or [].
        Raises: RemoteProtocolError for a sender that is not a peer or a payload of the wrong
        length; RoundMismatch for an unknown, finished, too early or repeated step.
        """
        if sender not in self._peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        expected = self.steps[self._round] if not self._done else "(finished)"
        index = self._step_index.get(step)
        if self._done or index is None or index < self._round:
            raise RoundMismatch(f"session {self.session_id}: expected step {expected!r}, "
                                f"got {step!r} from {sender!r}")
        if index > self._round + (1 if self._started else 0):
            raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} is ahead of "
                                f"{expected!r} by more than a peer can be")
        if sender in self._inbox[index]:
            raise RoundMismatch(f"session {self.session_id}: step {step!r} from {sender!r} already received")
        words = self._words[index]
        try:
            self._inbox[index][sender] = words_from_bytes(payload, 2 * words)
        except ValueError as exc:
            raise RemoteProtocolError(f"session {self.session_id}: step {step!r} from {sender!r}: {exc}") from None
        return self._advance()

    def _open(self, left: Bits, right: Bits) -> list[Send | Output]:
        if self._triples is None:
            raise LocalProtocolError(f"session {self.session_id}: comparison not started")
        words = self._words[self._round]
        cut = slice(self._offset, self._offset + words)
        self._offset += words
        t = BitTriples(self._triples.a[cut], self._triples.b[cut], self._triples.c[cut])
        d_i, e_i = beaver_open_message(pack_bits(left), pack_bits(right), t)
        self._opened = (d_i, e_i, t, left.shape)
        payload = words_to_bytes(np.concatenate((d_i, e_i)))
        return [Send(peer, self.steps[self._round], payload) for peer in self._peers]

    def _advance(self) -> list[Send | Output]:
        events: list[Send | Output] = []
        while (self._circuit is not None and self._opened is not None
               and len(self._inbox[self._round]) == len(self._peers)):
            d_i, e_i, t, shape = self._opened
            words = self._words[self._round]
            d, e = d_i.copy(), e_i.copy()
            for opening in self._inbox[self._round].values():
                d ^= opening[:words]
                e ^= opening[words:]
            self._inbox[self._round] = {}
            z = unpack_bits(beaver_finish(self._index == 0, d, e, t), shape)
            try:
                _, left, right = self._circuit.send(z)
            except StopIteration as stop:
                self._done = True
                self._circuit = self._triples = self._opened = None
                events.append(Output(np.asarray(stop.value, dtype=np.uint64)))
                break
            self._round += 1
            events += self._open(left, right)
        return events


class _DerivedComparison:
    """Shared plumbing of the comparisons built on SignBitParty (they only pre- and post-process)."""

    def __init__(self, inner: SignBitParty, flip: bool) -> None:
        self._inner = inner
        self._flip = flip

    rounds = staticmethod(SignBitParty.rounds)
    triple_words = staticmethod(SignBitParty.triple_words)

    @property
    def steps(self) -> tuple[str, ...]:
        """The step labels of every round, in order."""
        return self._inner.steps

    @property
    def finished(self) -> bool:
        """Whether this party has emitted its output share."""
        return self._inner.finished

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The peers whose message for the current round has not arrived yet."""
        return self._inner.waiting_for

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a peer's masked openings for one round (see SignBitParty.receive).

        Returns: the next round's Sends, or the Output after the last round, or [].
        Raises: RemoteProtocolError / RoundMismatch as SignBitParty.receive.
        """
        return self._post(self._inner.receive(sender, step, payload))

    def _post(self, events: list[Send | Output]) -> list[Send | Output]:
        if not self._flip:
            return events
        return [Output(e.words ^ np.uint64(1)) if isinstance(e, Output) else e for e in events]


class AtLeastPublicParty(_DerivedComparison):
    """One party of [x >= k] for shared x and public k: 1 ^ MSB(x - k), PROTOCOLS.md §5.

    P_0 subtracts k from its share and flips its output share. Correct when
    -2^(ell-1) <= x - k < 2^(ell-1) for every value (see `ell_for_tally`).
    """

    def __init__(self, session_id: str, me: str, parties: Sequence[str], ell: int, batch: int,
                 threshold: int | Words, triples: TripleSource, step_prefix: str = "cmp") -> None:
        inner = SignBitParty(session_id, me, parties, ell, batch, triples, step_prefix)
        super().__init__(inner, flip=inner.parties.index(me) == 0)
        if isinstance(threshold, int):
            k = np.full(batch, threshold % (1 << ell), dtype=np.uint64)
        elif isinstance(threshold, np.ndarray) and threshold.dtype == np.uint64 and threshold.shape == (batch,):
            k = reduce_bits(threshold, ell)
        else:
            raise LocalProtocolError(f"session {session_id}: threshold must be an int or uint64 of shape ({batch},)")
        self._k = k

    def start(self, shares: Words) -> list[Send | Output]:
        """Start on this party's additive shares of x (P_0 subtracts k first).

        Returns: one Send per peer, and whatever buffered messages already allow.
        Raises: LocalProtocolError as SignBitParty.start.
        """
        _check_shares(f"session {self._inner.session_id}", shares, self._inner.batch)
        return self._post(self._inner.start(shares - self._k if self._flip else shares))


class LessThanParty(_DerivedComparison):
    """One party of [x < y] for shared x and y: MSB(x - y), PROTOCOLS.md §5.

    Correct when -2^(ell-1) <= x - y < 2^(ell-1) for every pair.
    """

    def __init__(self, session_id: str, me: str, parties: Sequence[str], ell: int, batch: int,
                 triples: TripleSource, step_prefix: str = "cmp") -> None:
        super().__init__(SignBitParty(session_id, me, parties, ell, batch, triples, step_prefix), flip=False)

    def start(self, x_shares: Words, y_shares: Words) -> list[Send | Output]:
        """Start on this party's additive shares of x and of y (the difference is local).

        Returns: one Send per peer, and whatever buffered messages already allow.
        Raises: LocalProtocolError for a wrong shape or dtype, or as SignBitParty.start.
        """
        where = f"session {self._inner.session_id}"
        _check_shares(where, x_shares, self._inner.batch)
        _check_shares(where, y_shares, self._inner.batch)
        return self._post(self._inner.start(x_shares - y_shares))


def ell_for_tally(ballots: int) -> int:
    """The ring width for comparing a tally of `ballots` 0/1 votes with a threshold (PROTOCOLS.md §5).

    ell = ceil(log2(N + 1)) + 2, so that T - k stays in [-2^(ell-1), 2^(ell-1)) for every
    tally 0 <= T <= N and every public threshold 0 <= k <= 2(N + 1).
    Returns: ell, at least 2 and at most 64.
    Raises: InputError for a negative count or one too large for a 64-bit ring.
    """
    if ballots < 0:
        raise InputError(f"a tally needs a non-negative number of ballots, got {ballots}")
    ell = max(2, ballots.bit_length() + 2)  # bit_length(N) == ceil(log2(N + 1))
    if ell > RING_BITS:
        raise InputError(f"{ballots} ballots need a {ell}-bit ring; at most {RING_BITS} bits are supported")
    return ell
