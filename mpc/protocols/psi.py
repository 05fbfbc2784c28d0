"""Private set intersection among n nodes: DH-style masking on Curve25519 (PROTOCOLS.md §11, DESIGN.md §14).

**Hashing.** An identifier x becomes h(x) = the X25519 u-coordinate of
`crypto_core_ed25519_from_uniform`(SHA-512("mpc/v1/psi\\0" ‖ x)[:32]) (libsodium, through PyNaCl):
a point of Curve25519's prime-order subgroup, never of its twist, so no curve/twist bit of a
hash can leak. u = (1 + y)/(1 − y) mod p from the Edwards y (RFC 7748 §4.1).

**Masking** (Huberman, Franklin, Hogg, "Enhancing Privacy and Trust in Electronic Communities",
EC 1999; Meadows 1986; De Cristofaro & Tsudik, FC 2010 for PSI-CA). Each node draws a fresh key
k_i per session. X25519 scalar multiplication commutes, so the fully masked tag
h(x)^(k_1⋯k_n) is the same for equal x whatever the order, and pseudo-random otherwise (DDH). The
nodes are taken in name order P_0..P_(n−1) and form a ring. P_i masks its own points with k_i,
puts them in an order only it knows (a CSPRNG permutation), and sends the list to P_(i+1). Every
node masks each list it receives with its key and passes it on; after n − 1 hops a list is fully
masked and goes from its last hop to its comparer: P_0, except for the members, where it is the
first node in name order that receives none (the lead, `PsiParty.lead`). Every received point is
validated: 32 bytes, a canonical u < p, not of small order, and no point twice in one list.
Curve25519 is twist-secure (Bernstein, PKC 2006 §3), so a twist point from a misbehaving peer
teaches it nothing about a key.

**Shuffles.** Whoever can map a fully masked list's positions back to its owner's records, and
knows which positions are common, knows which records are in the intersection. So:
- size: every hop reshuffles every list it passes on (a fresh permutation each), so the positions
  at the comparer are unlinkable for anyone, even for all nodes but one together;
- members: the lists of the recipients keep their owner's order at every hop, so that each
  recipient maps the common positions of its own list back to its records; every other list is
  reshuffled at every hop. The comparer is no recipient: holding its own list in its own order and
  every other list, it could match the two and learn which of its records are in each other node's
  set, not only in all of them. So with three nodes or more at most n − 1 of them are recipients;
  with two, what either could learn that way is the output itself;
- sum: no hop reshuffles (a list's values stay in its owner's order). Each list has a comparer
  other than its owner: P_0 compares lists 1..n−1, and P_1 compares P_0's own list. A list's last
  hop sends it, in its owner's order, to its comparer, and a copy it reshuffles to the other
  comparer as a reference. So no comparer ever holds its own list in its own order.

**What each party learns.** The comparing node(s) see the n fully masked lists, each labelled with
its origin: they learn the size of the intersection of every subset of the nodes' sets (for n = 2
that is just the output). A list's last hop holds that one list fully masked, with nothing to
compare it with alone. For the members, a recipient colluding with the comparer maps its own list,
which kept its order, against each other list: together they learn which of the recipient's records
are in each other node's set. In a sum each comparer also learns which positions of the lists it
compares are common, positions that only the lists' owners could map to records; but there lists
keep their owner's order all along, so an owner colluding with a node that holds its list fully
masked (its comparer, or its last hop) learns which of its records lie in what that node can
intersect it with. The size has no such collusion: every hop reshuffles every list. Every other node sees only pseudo-random points.
The coordinator learns only the declared output. Set sizes are public (as every input's length is).
No identifier and no unmasked hash of one ever leaves its node.

**Outputs** (combined by addition at the coordinator):
- size: P_0 outputs [|∩|], the others [0];
- members: the lead outputs [|∩|] and sends each named recipient the common positions of its own
  list (or, with two nodes both recipients, maps its own too); the recipient maps them to its
  records (a `Keep`, never sent) and its owner gets them (node core writes them to the data
  directory). The coordinator gets the size;
- sum: Σ over the common identifiers of every node's associated value. For each list, its comparer
  and its owner compute Σ_p e_p·v_p, with e_p = [position p is common] known to the comparer only
  and v_p known to the owner only, by one correlated OT per position: the comparer is the receiver
  with choices e_p, the owner sends τ_p = m0_p − m1_p + v_p and keeps −Σ m0_p (Gilboa, CRYPTO 1999,
  with a 1-bit multiplier; the IKNP random OTs of mpc/ot/extension.py). The owner learns nothing of
  e (OT receiver privacy), the comparer nothing of v: their output words are additive shares of the
  sum. Every pair of nodes then adds a zero-sharing (one random word each way, "psi/zero"), so that
  each output share alone is uniform: without it an owner's share, −Σ m0, would let its comparer and
  the coordinator subtract out that owner's own sum. The output is [|∩|, sum]: the size is opened
  with the sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import nacl.bindings
import nacl.exceptions
import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Keep, Output, Send
from mpc.ot.arith import cot_receive, cot_send, low_words
from mpc.ot.extension import KAPPA
from mpc.ot.triples import (OtReady, OtSetups, PairwiseOt, PairwiseOtSetup, choose_setups, hello_payload,
                            keep_ready, parse_hello)
from mpc.prg import Rng
from mpc.ring import Words, words_from_bytes, words_to_bytes

MODES = ("size", "members", "sum")
MAX_SET_SIZE = 1_000_000                # identifiers per node (the store refuses more at put)
POINT = 32
DIGEST_WORDS = 4                        # an identifier's SHA-512 prefix, 32 bytes, in a contribution
ELEMENT_WORDS = DIGEST_WORDS + 1        # and its associated value
_P = 2**255 - 19
_DOMAIN = b"mpc/v1/psi\0"
STEP_HELLO = "psi/hello"
STEP_LIST = "psi/list/"                 # + origin index: a list on its way round the ring
STEP_FULL = "psi/full/"                 # + origin index: a fully masked list, to its comparer
STEP_REF = "psi/ref/"                   # + origin index: sum: the same, reshuffled, to the other comparer
STEP_MEMBERS = "psi/members"            # the lead -> a recipient: the common positions of its own list
STEP_COT_U = "psi/cot/u"                # comparer -> owner: the IKNP message of the comparer's choices
STEP_COT_T = "psi/cot/t"                # owner -> comparer: the corrections
STEP_ZERO = "psi/zero"                  # sum: a random word to each peer, for a zero-sharing of the output
_IKNP_HEADER = 16


def identifier_digest(identifier: bytes) -> bytes:
    """The 32 bytes an identifier is hashed to the curve from (domain-separated SHA-512)."""
    return hashlib.sha512(_DOMAIN + identifier).digest()[:POINT]


def hash_to_curve(digest: bytes) -> bytes:
    """h(x): the X25519 u-coordinate of libsodium's Elligator 2 map of `digest` onto Ed25519's
    prime-order subgroup (never the twist)."""
    return hash_to_curve_many([digest])[0]


def hash_to_curve_many(digests: Sequence[bytes]) -> list[bytes]:
    """hash_to_curve of every digest, with one modular inversion for all of them (Montgomery's
    batch inversion: the (1 − y)^-1 of u = (1 + y)/(1 − y) cost most of the time one at a time)."""
    ys = [int.from_bytes(nacl.bindings.crypto_core_ed25519_from_uniform(d), "little") & ((1 << 255) - 1)
          for d in digests]
    denominators = [(1 - y) % _P for y in ys]   # never 0: y = 1 is the identity, outside the map's image
    prefix = []
    running = 1
    for a in denominators:
        prefix.append(running)
        running = running * a % _P
    inverse = pow(running, -1, _P)
    out: list[bytes] = [b""] * len(ys)
    for j in range(len(ys) - 1, -1, -1):
        out[j] = ((1 + ys[j]) * inverse * prefix[j] % _P).to_bytes(POINT, "little")
        inverse = inverse * denominators[j] % _P
    return out


# The canonical u-coordinates of Curve25519's points of small order (libsodium's blocklist in
# crypto_scalarmult_curve25519; Bernstein, "Curve25519", §4): 0, 1, two of order 8, and p − 1.
_SMALL_ORDER = frozenset({0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
                          39382357235489614581723060781553021112529911719440698176882885853963445705823, _P - 1})


def check_point(point: bytes, where: str) -> None:
    """Refuse a u-coordinate that is not canonical (u < p, top bit clear) or of small order.

    Raises: RemoteProtocolError naming `where`.
    """
    if len(point) != POINT:
        raise RemoteProtocolError(f"{where}: a point has {POINT} bytes, got {len(point)}")
    u = int.from_bytes(point, "little")
    if u >= _P:
        raise RemoteProtocolError(f"{where}: not a canonical Curve25519 point")
    if u in _SMALL_ORDER:
        raise RemoteProtocolError(f"{where}: a point of small order")


def mask(key: bytes, points: Sequence[bytes], where: str) -> list[bytes]:
    """X25519(key, u) for every point, each validated first.

    Raises: RemoteProtocolError naming `where` for a non-canonical or small-order point.
    """
    out = []
    for point in points:
        check_point(point, where)
        try:
            out.append(nacl.bindings.crypto_scalarmult(key, point))
        except nacl.exceptions.RuntimeError:
            raise RemoteProtocolError(f"{where}: a point of small order") from None
    return out


def _split(payload: bytes, count: int, where: str) -> list[bytes]:
    """A list's points. Raises: RemoteProtocolError for a wrong length or a repeated point (distinct
    identifiers stay distinct under every key: a repeat could only inflate the intersection)."""
    if len(payload) != POINT * count:
        raise RemoteProtocolError(f"{where}: {len(payload)} bytes, expected {POINT * count} for {count} points")
    points = [payload[j:j + POINT] for j in range(0, len(payload), POINT)]
    if len(set(points)) != count:
        raise RemoteProtocolError(f"{where}: a point appears twice in one list")
    return points


def _permutation(rng: Rng, n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) (Fisher–Yates; 64-bit draws, bias below 2^-40)."""
    order = np.arange(n, dtype=np.int64)
    draws = np.frombuffer(rng.random_bytes(8 * max(n, 1)), dtype=np.uint64)
    for j in range(n - 1, 0, -1):
        k = int(draws[j] % np.uint64(j + 1))
        order[j], order[k] = order[k], order[j]
    return order


def _pack_bits(bits: np.ndarray) -> Words:
    packed = np.packbits(bits.astype(np.uint8), bitorder="little")
    padded = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    padded[:packed.size] = packed
    return padded.view(np.uint64).copy()


class PsiParty:
    """One node's engine for an intersection: the ring of masked lists, then the chosen output."""

    def __init__(self, session_id: str, me: str, parties: Sequence[str], sizes: Mapping[str, int], mode: str,
                 recipients: Sequence[str], rng: Rng, setups: OtSetups) -> None:
        """Args:
            sizes: every participant's set size (public, from prepare).
            mode: "size", "members" or "sum".
            recipients: the nodes that receive the common members (mode "members").
        """
        if mode not in MODES:
            raise LocalProtocolError(f"session {session_id}: unknown intersection output {mode!r}")
        if me not in parties or len(set(parties)) != len(parties) or len(parties) < 2:
            raise LocalProtocolError(f"session {session_id}: {me!r} among parties {list(parties)}: an intersection "
                                     f"needs at least two distinct parties including this one")
        self.session_id = session_id
        self.me = me
        self.order = tuple(sorted(parties))
        self.n = len(self.order)
        self.index = self.order.index(me)
        self.next = self.order[(self.index + 1) % self.n]
        self.sizes = {p: int(sizes[p]) for p in self.order}
        self.mode = mode
        self.recipients = frozenset(recipients)
        self.lead = self._lead()
        self.length = ELEMENT_WORDS * self.sizes[me]
        self.peers = tuple(p for p in self.order if p != me)
        self.value_free_steps: tuple[str, ...] = (STEP_HELLO, "ot/", STEP_ZERO)
        self._rng = rng
        self._setups = setups
        self._key = b""
        self._perm = np.zeros(0, dtype=np.int64)
        self._values = np.zeros(0, dtype=np.uint64)     # our associated values, in our list's order
        self._forwarded: set[int] = set()               # origins whose list we have handled
        self._full: dict[int, list[bytes]] = {}         # fully masked lists we compare, by origin
        self._ref: dict[int, list[bytes]] = {}          # sum: the other lists, shuffled by their last hop
        self._early: list[tuple[str, str, bytes]] = []
        self._started = False
        self._done = False
        self._compared = False
        self._size = 0
        self._share = 0                                 # our additive share of the sum
        self._ot_peers = (self.peers if self.index == 0 else (self.order[0],)) if mode == "sum" else ()
        self._hellos: dict[str, set[bytes]] = {}
        self._known = {p: setups.known(p) for p in self._ot_peers}
        self._chosen: dict[str, PairwiseOt] = {}
        self._setup: PairwiseOtSetup | None = None
        self._choices: dict[str, tuple[Words, Words]] = {}   # comparer: per owner, (choices, chosen OT outputs)
        self._cot_pending: set[str] = set()
        self._owner_done = mode != "sum"                # an owner's side of the sum's OT is done
        self._early_cot: list[tuple[str, str, bytes]] = []   # OT messages that came before their setup
        self._members_due = mode == "members" and me in self.recipients and self.index != self.lead
        self._zeros_from: set[str] = set()             # sum: peers whose zero-sharing word has come

    # ---- who does what ------------------------------------------------------------------------

    def _lead(self) -> int:
        """The index of the node that compares the lists and outputs the size: P_0, but for the members the
        first node that receives none. A recipient's own list keeps its order, so as the comparer it could
        match it against each other list and learn which of its records are in each other node's set.

        Raises: LocalProtocolError if every one of three or more nodes is a recipient.
        """
        if self.mode != "members":
            return 0
        free = [j for j, p in enumerate(self.order) if p not in self.recipients]
        if not free and self.n > 2:
            raise LocalProtocolError(f"session {self.session_id}: the members go to at most {self.n - 1} of the "
                                     f"{self.n} nodes (one that receives none compares the lists)")
        return free[0] if free else 0

    def comparer_of(self, origin: int) -> str:
        """Who compares list `origin`: the lead, except in a sum, where P_1 compares P_0's own list."""
        return self.order[1] if self.mode == "sum" and origin == 0 else self.order[self.lead]

    def _reference_to(self, origin: int) -> str | None:
        """Sum: the comparer that gets list `origin` shuffled, as a reference (never its owner's comparer)."""
        if self.mode != "sum":
            return None
        return self.order[0] if origin == 0 else self.order[1]

    def _hops_shuffle(self, origin: int) -> bool:
        """Whether every hop reshuffles list `origin`: always for the size, and for the members the lists
        of nodes that receive none (a recipient's list keeps its owner's order so that it can map the
        common positions back); never in a sum, whose values stay in their owner's order (its comparer
        alone, not the owner, knows which positions are common)."""
        return self.mode == "size" or (self.mode == "members" and self.order[origin] not in self.recipients)

    def _shuffled(self, points: list[bytes]) -> list[bytes]:
        return [points[int(j)] for j in _permutation(self._rng, len(points))]

    # ---- the engine interface ---------------------------------------------------------------

    @property
    def triple_counts(self) -> tuple[int, int] | None:
        """No bit triples."""
        return None

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Who this node waits for (for timeout messages)."""
        if self._done:
            return ()
        if len(self._hellos) < len(self._ot_peers):
            return tuple(p for p in self._ot_peers if p not in self._hellos)
        if len(self._forwarded) < self.n - 1:
            return (self.order[self.index - 1],)
        if self._cot_pending:
            return tuple(sorted(self._cot_pending))
        missing = [self.order[o - 1] for o in range(self.n) if o not in self._full and o not in self._ref]
        if self._compares() and missing:
            return tuple(sorted(set(missing) - {self.me})) or (self.me,)
        if not self._owner_done:   # a sum: our list's comparer has yet to send its choices
            return (self.comparer_of(self.index),)
        if self.mode == "sum" and len(self._zeros_from) < len(self.peers):
            return tuple(p for p in self.peers if p not in self._zeros_from)
        if self._members_due:
            return (self.order[self.lead],)
        return ()

    def is_slow(self, step: str) -> bool:
        """Hashing and masking take tens of microseconds a point: the start, every list and base OTs."""
        return step == "start" or step.startswith((STEP_LIST, STEP_FULL, STEP_REF, "ot/base/"))

    def start(self, contribution: Words) -> list[Send | Output]:
        """Hash our identifiers to the curve, mask and shuffle them, and send the list round the ring.

        Args:
            contribution: ELEMENT_WORDS words per record: its identifier digest, then its value.
        Raises: LocalProtocolError if started twice or with the wrong shape.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: already started")
        if contribution.shape != (self.length,):
            raise LocalProtocolError(f"session {self.session_id}: contribution has shape {contribution.shape}, "
                                     f"expected ({self.length},)")
        self._started = True
        rows = np.asarray(contribution, dtype=np.uint64).reshape(-1, ELEMENT_WORDS)
        self._key = self._rng.random_bytes(POINT)
        self._perm = _permutation(self._rng, rows.shape[0])
        ordered = rows[self._perm]
        self._values = ordered[:, DIGEST_WORDS].copy()
        digests = np.ascontiguousarray(ordered[:, :DIGEST_WORDS]).view(np.uint8).reshape(-1, POINT)
        points = mask(self._key, hash_to_curve_many([d.tobytes() for d in digests]), f"session {self.session_id}")
        events: list[Send | Output] = [Send(p, STEP_HELLO, hello_payload(self._known[p])) for p in self._ot_peers]
        if self.mode == "sum":
            # Re-randomise the output shares: an owner's share is otherwise −Σ m0 of its OTs, which its
            # comparer could subtract from its own to learn that owner's sum alone (with the coordinator).
            # Each pair's words cancel in the total (a zero-sharing).
            for peer in self.peers:
                word = self._rng.random_bytes(8)
                self._share -= int.from_bytes(word, "little")
                events.append(Send(peer, STEP_ZERO, word))
        events += self._pass_on(self.index, points, 1)
        early, self._early = self._early, []
        for sender, step, payload in early:
            events += self.receive(sender, step, payload)
        return events + self._advance()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a list, a hello, base-OT or OT-extension traffic, or the common positions.

        Raises: RemoteProtocolError for a sender, size or point that is wrong; RoundMismatch for
        a repeated or unexpected step.
        """
        where = f"session {self.session_id}: {step!r} from {sender!r}"
        if sender not in self.peers:
            raise RemoteProtocolError(f"{where}: not a peer of {self.me!r}")
        if self._done:
            raise RoundMismatch(f"{where}: after the end")
        if step == STEP_HELLO:
            return self._hello(sender, payload, where)
        if step.startswith("ot/"):
            if self._setup is None:
                if any(s == sender and st == step for s, st, _ in self._early) or sender not in self._ot_peers:
                    raise RoundMismatch(f"{where}: unexpected")
                self._early.append((sender, step, payload))
                return []
            return self._route(self._setup.receive(sender, step, payload))
        if not self._started:
            if any(s == sender and st == step for s, st, _ in self._early) or len(self._early) > 4 * self.n + 16:
                raise RoundMismatch(f"{where}: repeated, or too many messages before this node started")
            self._early.append((sender, step, payload))
            return []
        if step.startswith((STEP_LIST, STEP_FULL, STEP_REF)):
            return self._take_list(sender, step, payload, where)
        if step == STEP_MEMBERS:
            return self._take_members(sender, payload, where)
        if step == STEP_ZERO:
            if self.mode != "sum" or sender in self._zeros_from:
                raise RoundMismatch(f"{where}: unexpected or repeated")
            if len(payload) != 8:
                raise RemoteProtocolError(f"{where}: {len(payload)} bytes, expected 8")
            self._zeros_from.add(sender)
            self._share += int.from_bytes(payload, "little")
            return self._advance()
        if step in (STEP_COT_U, STEP_COT_T):
            return self._take_cot(sender, step, payload, where)
        raise RoundMismatch(f"{where}: unknown step")

    # ---- the ring -----------------------------------------------------------------------------

    def _origin(self, step: str, prefix: str, where: str) -> int:
        try:
            origin = int(step[len(prefix):])
        except ValueError:
            raise RoundMismatch(f"{where}: unknown step") from None
        if not 0 <= origin < self.n or step != f"{prefix}{origin}":
            raise RoundMismatch(f"{where}: unknown step")
        return origin

    def _pass_on(self, origin: int, points: list[bytes], hops: int) -> list[Send | Output]:
        """A list masked by `hops` keys: on to the next node; once fully masked, to its comparer (and in
        a sum, reshuffled, to the other comparer as a reference); kept where that is this node."""
        if hops < self.n:
            return [Send(self.next, f"{STEP_LIST}{origin}", b"".join(points))]
        events: list[Send | Output] = []
        comparer = self.comparer_of(origin)
        if comparer == self.me:
            self._full[origin] = points
        else:
            events.append(Send(comparer, f"{STEP_FULL}{origin}", b"".join(points)))
        reference = self._reference_to(origin)
        if reference is not None:
            shuffled = self._shuffled(points)
            if reference == self.me:
                self._ref[origin] = shuffled
            else:
                events.append(Send(reference, f"{STEP_REF}{origin}", b"".join(shuffled)))
        return events

    def _take_list(self, sender: str, step: str, payload: bytes, where: str) -> list[Send | Output]:
        prefix = next(p for p in (STEP_FULL, STEP_REF, STEP_LIST) if step.startswith(p))
        origin = self._origin(step, prefix, where)
        points = _split(payload, self.sizes[self.order[origin]], where)
        if prefix == STEP_LIST:
            if origin == self.index or origin in self._forwarded or sender != self.order[self.index - 1]:
                raise RoundMismatch(f"{where}: each list comes once, from the previous node in the ring")
            self._forwarded.add(origin)
            hops = (self.index - origin) % self.n + 1
            masked = mask(self._key, points, where)
            if self._hops_shuffle(origin):
                masked = self._shuffled(masked)
            return self._pass_on(origin, masked, hops) + self._advance()
        kept, owner = (self._full, self.comparer_of(origin)) if prefix == STEP_FULL else (self._ref,
                                                                                          self._reference_to(origin))
        if owner != self.me or origin in kept or sender != self.order[origin - 1]:
            raise RoundMismatch(f"{where}: a fully masked list goes once to its comparer, from its last hop")
        for j, point in enumerate(points):
            check_point(point, f"{where}, point {j}")
        kept[origin] = points
        return self._advance()

    # ---- the outputs --------------------------------------------------------------------------

    def _compares(self) -> bool:
        return self.index == self.lead or (self.mode == "sum" and self.index == 1)

    def _advance(self) -> list[Send | Output]:
        events: list[Send | Output] = []
        ready = [m for m in self._early_cot if m[0] in self._chosen]
        if ready and self._started:
            self._early_cot = [m for m in self._early_cot if m[0] not in self._chosen]
            for sender, step, payload in ready:
                events += self._take_cot(sender, step, payload, f"session {self.session_id}: {step!r} from {sender!r}")
        if self._done or not self._started or len(self._forwarded) < self.n - 1:
            return events
        if self.mode == "sum" and len(self._chosen) < len(self._ot_peers):
            return events
        if self._compares() and not self._compared:
            if len(self._full) + len(self._ref) < self.n:
                return events
            events += self._compare()
        if self._members_due or self._cot_pending or not self._owner_done:
            return events
        if self.mode == "sum" and len(self._zeros_from) < len(self.peers):
            return events
        self._done = True
        words = [self._size] if self.mode != "sum" else [self._size, self._share % (1 << 64)]
        return events + [Output(np.array(words, dtype=np.uint64))]

    def _compare(self) -> list[Send | Output]:
        """Find the tags common to every list; then the members or the sum's OTs for the lists we compare."""
        self._compared = True
        lists = {**self._ref, **self._full}
        common = set(lists[0])
        for points in lists.values():
            common &= set(points)
        if self.index == self.lead:
            self._size = len(common)
        events: list[Send | Output] = []
        for origin, points in sorted(self._full.items()):
            owner = self.order[origin]
            hits = np.array([p in common for p in points], dtype=bool)
            if self.mode == "members" and owner in self.recipients:
                if owner == self.me:   # our own list kept our order: map the positions back to our records
                    events.append(Keep(self._perm[hits].astype(np.uint64)))
                else:
                    events.append(Send(owner, STEP_MEMBERS, words_to_bytes(np.flatnonzero(hits).astype(np.uint64))))
            if self.mode == "sum":
                message, blocks = self._chosen[owner].as_receiver.extend_strings(_pack_bits(hits), int(hits.size))
                self._choices[owner] = (hits.astype(np.uint64), low_words(blocks))
                self._cot_pending.add(owner)
                events.append(Send(owner, STEP_COT_U, message))
        return events

    def _take_members(self, sender: str, payload: bytes, where: str) -> list[Send | Output]:
        if sender != self.order[self.lead] or not self._members_due:
            raise RoundMismatch(f"{where}: common positions come once, from {self.order[self.lead]}, to a recipient")
        count = len(payload) // 8
        try:
            positions = words_from_bytes(payload, count)
        except ValueError as exc:
            raise RemoteProtocolError(f"{where}: {exc}") from None
        size = self.sizes[self.me]
        if positions.size and (int(positions.max()) >= size or np.unique(positions).size != positions.size):
            raise RemoteProtocolError(f"{where}: positions outside this node's {size} records, or repeated")
        self._members_due = False
        return [Keep(self._perm[positions.astype(np.int64)].astype(np.uint64))] + self._advance()

    def _take_cot(self, sender: str, step: str, payload: bytes, where: str) -> list[Send | Output]:
        if self.mode != "sum" or sender not in self._ot_peers:
            raise RoundMismatch(f"{where}: unexpected")
        if step == STEP_COT_U:   # we own a list and `sender` compares it
            if sender != self.comparer_of(self.index) or self._owner_done:
                raise RoundMismatch(f"{where}: unexpected")
            if sender not in self._chosen:   # it overtook the hello or the last base-OT message: kept until then
                if self._early_cot:
                    raise RoundMismatch(f"{where}: repeated")
                self._early_cot.append((sender, step, payload))
                return []
            m = self.sizes[self.me]
            if len(payload) != _IKNP_HEADER + KAPPA * (-(-m // KAPPA) * KAPPA) // 8:
                raise RemoteProtocolError(f"{where}: {len(payload)} bytes for {m} OTs")
            try:
                h0, h1 = self._chosen[sender].as_sender.extend_strings(m, payload)
            except RemoteProtocolError as exc:
                raise type(exc)(f"{where}: {exc}") from None
            tau, keep = cot_send(low_words(h0), low_words(h1), self._values)
            self._share += int(keep.sum(dtype=np.uint64))
            self._owner_done = True
            return [Send(sender, STEP_COT_T, words_to_bytes(tau))] + self._advance()
        if sender not in self._cot_pending:
            raise RoundMismatch(f"{where}: unexpected")
        choices, chosen = self._choices.pop(sender)
        try:
            tau = words_from_bytes(payload, int(choices.size))
        except ValueError as exc:
            raise RemoteProtocolError(f"{where}: {exc}") from None
        self._share += int(cot_receive(chosen, choices, tau).sum(dtype=np.uint64))
        self._cot_pending.discard(sender)
        return self._advance()

    # ---- OT setups for the sum (as mpc/protocols/compute.py's hello) -----------------------

    def _hello(self, sender: str, payload: bytes, where: str) -> list[Send | Output]:
        if sender not in self._ot_peers or sender in self._hellos:
            raise RoundMismatch(f"{where}: unexpected or repeated")
        self._hellos[sender] = parse_hello(payload, where)
        if len(self._hellos) < len(self._ot_peers):
            return []
        fresh = choose_setups(self._hellos, self._known, self._chosen)
        if not fresh:
            return self._advance() if self._started else []
        self._setup = PairwiseOtSetup(self.me, [self.me, *fresh], self._rng, self.session_id)
        events = self._route(self._setup.start())
        early = [m for m in self._early if m[1].startswith("ot/")]
        self._early = [m for m in self._early if not m[1].startswith("ot/")]
        for s, st, p in early:
            events += self._route(self._setup.receive(s, st, p))
        return events

    def _route(self, events: Sequence[object]) -> list[Send | Output]:
        out: list[Send | Output] = []
        for e in events:
            if isinstance(e, Send):
                out.append(e)
            elif isinstance(e, OtReady):
                keep_ready(self._setups, self.session_id, e, self._chosen)
                out += self._advance() if self._started else []
        return out
