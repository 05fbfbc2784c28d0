"""Sessions over a collection of contributors' submissions (DESIGN.md §12): the nodes agree on the
complete submissions, check every one inside MPC, and add up the valid ones.

Each node holds, per submission, its additive share (mod 2^64) of the contributor's values
(mpc/client.py). Three things stand between that and a release:

1. **Which submissions.** A submission counts only if every node stores it with the same nonce
   (the contributor sent every node a share of the same split). Each node sends every peer the
   sorted list of the (credential id, nonce) pairs it holds, step "coll/keys"; every node takes
   the pairs present in all lists. The lists are the same everywhere, so the set is too, and the
   coordinator has no say in it: it cannot leave a submission out to difference a contributor
   away. (The list is public among the nodes: credential ids are pseudonyms, and the count is
   public by design.) A collection with fewer complete submissions than its minimum batch, or
   fewer *valid* ones once they are checked (step 2), releases nothing: every node refuses, from
   the same count, before anything of the sum is opened.

2. **Validity.** A malicious contributor may send shares of any v in Z_2^64. A test that b(b-1) = 0
   by a random linear combination is unsound in Z_2^64 (zero divisors: it passes b = 2^63 with
   probability 1/2). So each value is range-checked by secure comparison on all 64 bits
   (mpc/protocols/circuit.py `sign_bit`): valid iff (v - lo) and (hi - v), as signed 64-bit
   integers, are both non-negative. That is exact for every v in Z_2^64 when |lo|, |hi| < 2^62:
   the two wrap-free differences add up to hi - lo < 2^63, so neither can have wrapped, and
   lo <= v <= hi as integers. An option collection's submission is one-hot: each value in [0, 1]
   and their sum in [1, 1], checked the same way. (Bit-decomposed submissions, where any XOR
   sharing is a valid bit, would make a ballot's check free; they change what a contributor sends,
   and range checks cover ballots, options and ranges alike.) A submission is valid when all its
   values are. The validity bits are opened among the nodes, and only they: which submissions were
   invalid is revealed, nothing about the valid ones.

3. **What is released** (a `Finish`): the sum of the valid submissions with the valid and complete
   counts, optionally with joint binomial noise on the sum (`finish_sum`); only [yes >= half] of
   valid ballots (`finish_vote`); [sum >= K] per element (`finish_threshold`); the winning option
   alone (`finish_winner`); or a sealed-bid auction's winning credential and price
   (`finish_auction`). Each node's shares of the valid submissions add up to a sharing of their
   sum with no interaction: only the comparisons cost rounds.

So a malicious contributor moves the output no further than an honest one could: by at most
hi - lo per value, or not at all (its submission is dropped).

`CollectionParty` is the node's engine: the key exchange, then a `ComputeParty`
(mpc/protocols/compute.py, summed=False: a node's shares are already an additive sharing) running
`validated` under the step prefix "coll/run".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.ot.triples import OtSetups
from mpc.prg import Rng
from mpc.protocols import auction
from mpc.protocols.circuit import Context, Program, and_gates, at_least, open_words, public
from mpc.protocols.compute import ComputeParty
from mpc.protocols.noise import joint_noise
from mpc.ring import RING_BITS, Words

STEP_KEYS = "coll/keys"
PREFIX = "coll/run"
KEY_BYTES = 32                  # a credential id (16 bytes) and its nonce (16 bytes)
MAX_SUBMISSIONS = 1 << 22
VOTE_BITS = 24                  # |yes - ceil(valid / 2)| < 2^22 < 2^23: exact on 24 bits
BOUND_LIMIT = 1 << 62
COUNT_BITS = MAX_SUBMISSIONS.bit_length()   # a count of valid submissions: below 2^COUNT_BITS
ID_WORDS = 2                    # a credential id (16 bytes) as words
MAX_AUCTION = 1 << 16           # an auction's tournament runs in one program: its triples stay under the limit
CHUNK_VALUES = 1 << 13           # values one program range-checks: its IKNP matrices stay a few hundred MiB

Key = tuple[bytes, bytes]       # (credential id, nonce)
ShareLoader = Callable[[Sequence[Key]], Words]   # the node's shares for these keys: shape (len(keys), length)


@dataclass(frozen=True, slots=True, eq=False)
class CollectionSource:
    """What a node gives a collection session (mpc/protocols/catalogue.py EngineArgs): the public
    rule of the collection, and the keys and shares it stores."""

    lo: int
    hi: int
    length: int
    min_batch: int
    keys: Sequence[Key] = field(repr=False)
    load: ShareLoader = field(repr=False)
    one_hot: bool = False           # an option collection: a submission's values add up to 1


def check_bounds(lo: int, hi: int) -> None:
    """Raises: LocalProtocolError unless -2^62 < lo <= hi < 2^62 (what makes the range check exact)."""
    if not -BOUND_LIMIT < lo <= hi < BOUND_LIMIT:
        raise LocalProtocolError(f"a collection's range [{lo}, {hi}] must lie within +-2^62, lo <= hi")


@dataclass(frozen=True, slots=True, eq=False)
class Valid:
    """What a release is computed from once the submissions are checked: this party's shares."""

    total: Words                              # of the sum of the valid submissions, elementwise (length words)
    keep: npt.NDArray[np.bool_] = field(repr=False)   # which complete submissions are valid (public)
    keys: Sequence[Key] = field(repr=False)           # the complete submissions' (credential id, nonce), in order
    rows: Words | None = field(default=None, repr=False)   # every complete submission, (complete, length), if needed

    @property
    def counts(self) -> tuple[int, int]:
        """(valid, complete): public once the validity bits are."""
        return int(self.keep.sum()), self.keep.size


Finish = Callable[[Context, Valid], Program[Words]]
"""What a session computes once the submissions are checked: this party's output share."""


def validated(lo: int, hi: int, length: int, complete: int, finish: Finish, keys: Sequence[Key] = (),
              on_validity: Callable[[Words], None] | None = None, *, one_hot: bool = False) \
        -> Callable[[Context, Words], Program[Words]]:
    """The program: range-check every value of every submission, open which submissions are valid,
    and `finish` with the valid ones.

    Args:
        length: values per submission; the input is `complete * length` words, submission-major.
        keys: the agreed submissions' keys, handed to `finish` (an auction names its winner by them).
        on_validity: told the opened validity bits (one word, 0 or 1, per submission) at each party
            (also by `plan`'s dry run, on zeros, before the real run).
        one_hot: an option collection's: the values of a submission must also add up to exactly 1
            (one option chosen), checked as one more value in [1, 1].
    Returns: a program factory whose output share is `finish`'s.
    """
    check_bounds(lo, hi)
    if length < 1:
        raise LocalProtocolError(f"a submission has at least one value, got {length}")
    los, his = [lo] * length + [1] * one_hot, [hi] * length + [1] * one_hot
    lo_row = np.array([v % (1 << RING_BITS) for v in los], dtype=np.uint64)
    hi_row = np.array([v % (1 << RING_BITS) for v in his], dtype=np.uint64)

    def program(ctx: Context, x: Words) -> Program[Words]:
        if x.shape != (complete * length,):
            raise LocalProtocolError(f"{complete} submissions of {length} values need {complete * length} words, "
                                     f"got {x.shape}")
        rows = x.reshape(complete, length)
        checked = np.concatenate((rows, rows.sum(axis=1, dtype=np.uint64)[:, None]), axis=1) if one_hot else rows
        flat = checked.reshape(-1)
        # [v - lo >= 0] and [hi - v >= 0] as signed 64-bit integers, in one batch (XOR shares of the bits).
        differences = np.concatenate((flat - public(ctx, np.tile(lo_row, complete)),
                                      public(ctx, np.tile(hi_row, complete)) - flat))
        ok = (yield from at_least(ctx, "range", differences, 0, RING_BITS)).astype(bool)
        valid = yield from and_gates(ctx, "both", ok[:flat.size], ok[flat.size:])
        valid = valid.reshape(complete, checked.shape[1])
        width, level = valid.shape[1], 0
        while width > 1:   # a submission is valid when all its values are: a tree of AND gates
            half = width // 2
            merged = yield from and_gates(ctx, f"all/{level}", valid[:, :half], valid[:, half:2 * half])
            valid = np.concatenate((merged, valid[:, 2 * half:]), axis=1)
            width, level = valid.shape[1], level + 1
        bits = (yield from open_words("valid", valid[:, 0].astype(np.uint64), "xor")) & np.uint64(1)
        if on_validity is not None:
            on_validity(bits)
        keep = bits.astype(bool)
        return (yield from finish(ctx, Valid(_total(rows, keep), keep, keys, rows)))

    return program


def _total(rows: Words, keep: npt.NDArray[np.bool_]) -> Words:
    """This party's share of the elementwise sum of the valid submissions."""
    return np.asarray(rows[keep].sum(axis=0, dtype=np.uint64), dtype=np.uint64).reshape(rows.shape[1])


def _counts(ctx: Context, v: Valid) -> Words:
    """The public valid and complete counts, as P_0 adds them to the output."""
    return public(ctx, np.array(v.counts, dtype=np.uint64))


def finish_sum(coins: int = 0) -> Finish:
    """The sum of the valid submissions, then the valid and the complete count; with `coins`, joint
    binomial noise on the sum's words (mpc/protocols/noise.py), never on the public counts."""
    def finish(ctx: Context, v: Valid) -> Program[Words]:
        out = np.concatenate((v.total, _counts(ctx, v)))
        if coins:
            out = yield from joint_noise(coins, v.total.size)(ctx, out)
        return out
    return finish


def finish_vote(ctx: Context, v: Valid) -> Program[Words]:
    """Ballots: only [yes >= half of the valid ballots] (the valid count is public once the validity
    bits are): 2 * yes >= valid, i.e. yes >= ceil(valid / 2), a comparison on VOTE_BITS bits."""
    passed = yield from at_least(ctx, "vote", v.total, (v.counts[0] + 1) // 2, VOTE_BITS)
    return np.asarray(passed, dtype=np.uint64)


def finish_threshold(threshold: int) -> Finish:
    """Only [sum >= threshold] for each element: 64-bit comparisons (the sum and the threshold lie
    within +-2^62, see `check_sum_fits`)."""
    def finish(ctx: Context, v: Valid) -> Program[Words]:
        passed = yield from at_least(ctx, "threshold", v.total, threshold, RING_BITS)
        return np.asarray(passed, dtype=np.uint64)
    return finish


def finish_winner(ctx: Context, v: Valid) -> Program[Words]:
    """One-hot options: only the option with the most valid votes (the lowest index on a tie)."""
    return (yield from auction.winner(ctx, v.total, COUNT_BITS))


def finish_auction(second_price: bool) -> Finish:
    """Sealed bids (one value per submission, within int32): the winner's credential id, and the
    highest valid bid (first price) or the second-highest (second price), by mpc/protocols/auction.py's
    tournament over every complete submission, the invalid ones' keys and values set to 0 so that
    they lose to every valid bid. Keys are (v + 2^31) * 2^I + (m - 1 - g) for the submission's
    place g among the m complete ones: the earliest credential id wins a tie.

    Output share: first price [max key, valid, complete, id words]; second price [winner's place,
    second value + 2^31 + 1, valid, complete, id words].
    """
    def finish(ctx: Context, v: Valid) -> Program[Words]:
        rows, keys = v.rows, v.keys
        if rows is None or rows.shape[1] != 1 or len(keys) != rows.shape[0]:
            raise LocalProtocolError("an auction over a collection takes one bid per submission, every one loaded")
        m = rows.shape[0]
        bids, mask = rows[:, 0], v.keep.astype(np.uint64)
        shift = np.uint64(auction.index_bits(m))
        place = np.uint64(m - 1) - np.arange(m, dtype=np.uint64)
        key = ((bids << shift) + public(ctx, (np.uint64(auction.VALUE_OFFSET) << shift) + place)) * mask
        ids = np.frombuffer(b"".join(cid for cid, _ in keys), dtype="<u8").astype(np.uint64).reshape(m, ID_WORDS).T
        labels = public(ctx, np.ascontiguousarray(ids))
        values = (bids + public(ctx, np.full(m, auction.VALUE_OFFSET + 1, dtype=np.uint64))) * mask \
            if second_price else None
        won = yield from auction.tournament(ctx, key, auction.key_ell(m), values, labels=labels)
        return np.concatenate((won[:-ID_WORDS], _counts(ctx, v), won[-ID_WORDS:]))
    return finish


def check_sum_fits(lo: int, hi: int, complete: int, where: str) -> None:
    """Raises: LocalProtocolError if `complete` values in [lo, hi] could add up beyond +-2^62 (the
    sum is opened, or compared, as a signed 64-bit integer)."""
    if complete * max(abs(lo), abs(hi)) >= BOUND_LIMIT:
        raise LocalProtocolError(f"{where}: {complete} values in [{lo}, {hi}] could add up beyond 2^62; the "
                                 f"collection's range is too wide for so many submissions")


def keys_to_bytes(keys: Sequence[Key]) -> bytes:
    """A node's (credential id, nonce) list as "coll/keys" carries it: sorted, 32 bytes each."""
    return b"".join(cid + nonce for cid, nonce in sorted(keys))


def keys_from_bytes(payload: bytes, where: str) -> set[Key]:
    """Parse a peer's list. Raises: RemoteProtocolError naming `where` for a malformed or unsorted one."""
    if len(payload) % KEY_BYTES or len(payload) > KEY_BYTES * MAX_SUBMISSIONS:
        raise RemoteProtocolError(f"{where}: a key list of {len(payload)} bytes")
    keys = [(payload[i:i + 16], payload[i + 16:i + KEY_BYTES]) for i in range(0, len(payload), KEY_BYTES)]
    if any(a[0] >= b[0] for a, b in zip(keys, keys[1:])):
        raise RemoteProtocolError(f"{where}: a key list not sorted by credential, or with a credential twice")
    return set(keys)


def _chunk_total(ctx: Context, v: Valid) -> Program[Words]:
    """A chunk's finish: its valid submissions' sum, this party's share, as its output (opens nothing)."""
    return v.total
    yield  # a generator without openings   # noqa: unreachable


class CollectionParty:
    """One node's engine for a session over a collection's complete submissions.

    Up to CHUNK_VALUES checked values, one program checks the submissions and finishes (the fewest
    rounds). Beyond, the range checks run chunk after chunk, each a program of its own with its own
    preprocessing, so that no chunk's triples (one IKNP extension per pair) pass the peer message
    limit or hold more than a bounded amount of memory; a last program then finishes over every
    valid submission. A chunk's messages are named "coll/c<i>/<step>", the last program's
    "coll/f/<step>"; a peer is never more than one program ahead, and its early messages wait.
    """

    def __init__(self, session_id: str, me: str, parties: Sequence[str], own: Sequence[Key], shares: ShareLoader,
                 lo: int, hi: int, length: int, min_batch: int, rng: Rng, setups: OtSetups, *,
                 finish: Finish | None = None, one_hot: bool = False, min_valid: int = 1,
                 max_complete: int = MAX_SUBMISSIONS, rows: bool = False, chunk_values: int | None = None) -> None:
        """Args:
            own: the (credential id, nonce) pairs this node stores.
            shares: loads this node's shares of the given keys, in that order.
            min_batch: refuse (every node alike) below this many complete submissions, and valid ones.
            finish: what the session computes from the valid submissions (default `finish_sum()`).
            one_hot: an option collection's rule (`validated`).
            min_valid: the least the session's output needs (an auction: two bids), on top of min_batch.
            max_complete: the most complete submissions it takes (an auction: MAX_AUCTION).
            rows: the finish needs every submission's shares (an auction), not only the valid ones' sum.
            chunk_values: the most values one program range-checks (every node must use the same;
                default CHUNK_VALUES, read when the party is made).
        """
        if me not in parties or len(set(parties)) != len(parties) or len(parties) < 2:
            raise LocalProtocolError(f"session {session_id}: {me!r} among parties {list(parties)}: a collection "
                                     f"session needs at least two distinct nodes including this one")
        check_bounds(lo, hi)
        self.session_id = session_id
        self.me = me
        self.parties = tuple(parties)
        self.peers = tuple(p for p in self.parties if p != me)
        self._own = list(own)
        self._shares = shares
        self._lo, self._hi, self._length, self._min_batch = lo, hi, length, min_batch
        self._finish, self._one_hot, self._min_valid = finish or finish_sum(), one_hot, max(min_batch, min_valid)
        self._max_complete, self._with_rows = max_complete, rows
        self._chunk_values = CHUNK_VALUES if chunk_values is None else chunk_values
        self.length = length
        self._rng = rng
        self._setups = setups
        self._lists: dict[str, set[Key]] = {}
        self._early: list[tuple[str, str, bytes]] = []
        self._inner: ComputeParty | None = None
        self._wrap = ""                              # the running program's step prefix ("" for one program)
        self._chunks: list[tuple[int, int]] = []     # the chunks still to run, as submission ranges
        self._keep: npt.NDArray[np.bool_] | None = None   # chunked: the validity of each complete submission
        self._total = np.zeros(length, dtype=np.uint64)   # chunked: our share of the sum of the valid ones so far
        self._planning = False
        self._counted = (0, 0)                       # the finished programs' triples (made, used)
        self._started = False
        self.complete: tuple[Key, ...] = ()
        self.invalid: tuple[bytes, ...] = ()        # credential ids found invalid (public among the nodes)
        self.value_free_steps: tuple[str, ...] = (STEP_KEYS, "mpc/hello", "ot/", "triples/", "arith/")

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers whose key list or next message has not come."""
        if self._inner is not None:
            return self._inner.waiting_for
        return tuple(p for p in self.peers if p not in self._lists)

    @property
    def triple_counts(self) -> tuple[int, int]:
        """Bit triples made and used (for metrics)."""
        made, used = (0, 0) if self._inner is None else self._inner.triple_counts
        return self._counted[0] + made, self._counted[1] + used

    def is_slow(self, step: str) -> bool:
        """Loading the shares (at start or on the last key list), base OTs, and a chunk's last opening
        (it starts the next program: its plan and preprocessing) run outside the event loop."""
        inner = step[len(self._wrap):] if self._wrap and step.startswith(self._wrap) else step
        if self._wrap.startswith("coll/c") and inner.endswith("/valid"):
            return True
        return step in ("start", STEP_KEYS) or (self._inner is not None and self._inner.is_slow(inner))

    def start(self, contribution: Words | None = None) -> list[Send | Output]:
        """Send our key list to every peer (the contribution is loaded once the set is agreed).

        Raises: LocalProtocolError if started twice.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: already started")
        self._started = True
        payload = keys_to_bytes(self._own)
        events: list[Send | Output] = [Send(p, STEP_KEYS, payload) for p in self.peers]
        return events + self._maybe_run()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """A peer's key list, or a message for the running program (kept if it is for the next).

        Raises: RemoteProtocolError/RoundMismatch for a malformed, repeated or unexpected message.
        """
        if sender not in self.peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        if step == STEP_KEYS:
            if sender in self._lists:
                raise RoundMismatch(f"session {self.session_id}: a second key list from {sender!r}")
            self._lists[sender] = keys_from_bytes(payload, f"session {self.session_id}: key list from {sender!r}")
            return self._maybe_run() if self._started else []
        if self._inner is None or (self._wrap and not step.startswith(self._wrap)):
            if self._inner is not None and not step.startswith(self._next_wrap()):
                raise RoundMismatch(f"session {self.session_id}: step {step[:60]!r} from {sender!r} is for no "
                                    f"program of this one or the next")
            if len(self._early) >= 16 * len(self.peers) + 64:
                raise RemoteProtocolError(f"session {self.session_id}: too many early messages")
            self._early.append((sender, step, payload))
            return []
        return self._from_inner(self._inner.receive(sender, step[len(self._wrap):], payload))

    def _least(self) -> str:
        """What the least count is, for messages."""
        if self._min_valid > self._min_batch:
            return f"the {self._min_valid} this session needs"
        return f"the collection's minimum batch of {self._min_batch}"

    def _next_wrap(self) -> str:
        """The step prefix of the program after the running one."""
        if self._chunks:
            return f"coll/c{self._chunks[0][0]}/"
        return "coll/f/" if self._keep is not None else "\0"   # after the last chunk, the finish; then none

    def _maybe_run(self) -> list[Send | Output]:
        if self._inner is not None or len(self._lists) < len(self.peers):
            return []
        common = set(self._own)
        for keys in self._lists.values():
            common &= keys
        self.complete = tuple(sorted(common))
        n = len(self.complete)
        if n < self._min_valid:
            raise LocalProtocolError(f"session {self.session_id}: the collection has {n} complete submission(s) "
                                     f"at nodes {', '.join(sorted(self.parties))}, fewer than {self._least()}; "
                                     f"nothing is released")
        check_sum_fits(self._lo, self._hi, n, f"session {self.session_id}")
        if n > self._max_complete:
            raise LocalProtocolError(f"session {self.session_id}: {n} complete submissions, more than this session "
                                     f"takes ({self._max_complete})")
        per = max(1, self._chunk_values // (self._length + self._one_hot))
        if n <= per:   # one program checks and finishes
            factory = validated(self._lo, self._hi, self._length, n, self._finish, self.complete, self._note,
                                one_hot=self._one_hot)
            return self._begin("", factory, self._load(0, n), PREFIX)
        self._keep = np.zeros(n, dtype=bool)
        self._chunks = [(a, min(a + per, n)) for a in range(0, n, per)]
        return self._next()

    def _note(self, bits: Words) -> None:
        """All validity bits are open: record which submissions were invalid, and refuse below the least."""
        if self._planning:   # the plan's dry run, on zeros (inside ComputeParty's constructor)
            return
        n = len(self.complete)
        self.invalid = tuple(self.complete[i][0] for i in np.flatnonzero(bits == 0))
        valid = n - len(self.invalid)
        # Every node sees the same bits: all refuse alike, before anything of the output is opened. Counting
        # complete submissions alone would let invalid ones (a Sybil's, or shares split over other nodes)
        # pad a batch around one honest submission. The reason reaches the coordinator, so it does not say
        # how many were valid: a vote's or a winner's output hides that count (the complete one is public).
        if valid < self._min_valid:
            raise LocalProtocolError(f"session {self.session_id}: of the {n} complete submissions, fewer than "
                                     f"{self._least()} are valid; nothing is released")

    def _next(self) -> list[Send | Output]:
        """Start the next chunk's range checks, or, after the last, the program that finishes: over our
        share of the valid submissions' sum (added up chunk by chunk), or every submission (`rows`)."""
        assert self._keep is not None
        if self._inner is not None:
            made, used = self._inner.triple_counts
            self._counted = (self._counted[0] + made, self._counted[1] + used)
        if self._chunks:
            a, b = self._chunks.pop(0)
            keep = self._keep

            def store(bits: Words, a: int = a, b: int = b) -> None:
                if not self._planning:
                    keep[a:b] = bits.astype(bool)
            factory = validated(self._lo, self._hi, self._length, b - a, _chunk_total, (), store,
                                one_hot=self._one_hot)
            return self._begin(f"coll/c{a}/", factory, self._load(a, b), "run")
        self._note(self._keep.astype(np.uint64))
        keep, keys, finish, length = self._keep, self.complete, self._finish, self._length

        def finishing(ctx: Context, x: Words) -> Program[Words]:
            if not self._with_rows:
                return (yield from finish(ctx, Valid(x, keep, keys)))
            rows = x.reshape(len(keys), length)
            return (yield from finish(ctx, Valid(_total(rows, keep), keep, keys, rows)))
        self._keep = None   # no program after this one
        return self._begin("coll/f/", finishing, self._load(0, len(keys)) if self._with_rows else self._total, "run")

    def _load(self, a: int, b: int) -> Words:
        """Our shares of the agreed submissions a..b-1, flat."""
        return np.asarray(self._shares(self.complete[a:b]), dtype=np.uint64).reshape((b - a) * self._length)

    def _begin(self, wrap: str, factory: Callable[[Context, Words], Program[Words]], share: Words,
               prefix: str) -> list[Send | Output]:
        """Run one program under the step prefix `wrap`, and hand it the messages kept for it."""
        self._planning = True
        try:
            self._inner = ComputeParty(self.session_id, self.me, self.parties, share.size, factory, self._rng,
                                       self._setups, summed=False, prefix=prefix)
        finally:
            self._planning = False
        self._wrap = wrap
        # What the agreement may send before the nodes agree: the preprocessing of any program, never an opening.
        self.value_free_steps = (STEP_KEYS, *(wrap + p for p in ("mpc/hello", "ot/", "triples/", "arith/")))
        events = self._from_inner(self._inner.start(share))
        early = [m for m in self._early if m[1].startswith(wrap)]
        self._early = [m for m in self._early if not m[1].startswith(wrap)]
        for sender, step, payload in early:
            events += self._from_inner(self._inner.receive(sender, step[len(wrap):], payload))
        return events

    def _from_inner(self, events: list[Send | Output]) -> list[Send | Output]:
        """Name the running program's messages; a chunk's end starts the next program."""
        out: list[Send | Output] = []
        for e in events:
            if isinstance(e, Send):
                out.append(Send(e.to, self._wrap + e.step, e.payload) if self._wrap else e)
            elif self._wrap.startswith("coll/c"):   # a chunk's output: its share of its valid submissions' sum
                self._total += e.words
                out += self._next()
            else:
                out.append(e)
        return out


__all__ = ["CollectionParty", "CollectionSource", "Finish", "Valid", "Key", "PREFIX", "STEP_KEYS", "finish_auction", "finish_sum",
           "finish_threshold", "finish_vote", "finish_winner", "keys_from_bytes", "keys_to_bytes", "validated"]
