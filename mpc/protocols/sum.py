"""Secure sum with pairwise one-time-pad masks (Bonawitz et al., CCS 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", §3-4: masking with pairwise PRG seeds;
PROTOCOLS.md §1).

For parties P_0..P_{n-1} in the session's order, every pair i < j holds a fresh 16-byte seed
s_ij that P_i draws from a CSPRNG and sends to P_j over the mutually authenticated channel.
Party i's output share is

    y_i = x_i + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ji)   (mod 2^64)

so sum_i y_i = sum_i x_i, and the y_i of any set that misses at least one honest party are
uniform given the sum. The y_i form an additive sharing of the total held by the nodes, which
is where a vote's comparison starts. Each seed serves one session and one purpose (the PRG
key is HKDF(seed, "sum/mask/" + session id)); the coordinator never sees a seed.

Both ends also keep a pair key derived from the seed (`on_seed`, mpc/protocols/pairing.py). A
later session between them may then be *keyed*: `mask_seeds` gives, per peer, a seed both derive
from their pair key, the session id and the session digest for these masks alone (so it is the PRG
key itself), and the sum sends no message at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.prg import SEED_BYTES, Rng, keystream_word, keystream_words, prg_words
from mpc.events import Output, Send
from mpc.ring import Words

STEP_SEED = "sum/seed"
_SEED_MSG = struct.Struct("<16sQ")  # seed, contribution length in words (cross-checked)


class SecureSumParty:
    """One party of a pairwise-masked secure sum over vectors of `length` ring words.

    Messages may arrive before `start`; they are kept until the contribution is known.
    """

    # Steps whose messages do not depend on the input (fresh seeds): they may leave before the
    # parties have agreed on the session (mpc/protocols/agreement.py); the output share may not.
    value_free_steps: tuple[str, ...] = ("sum/",)

    def __init__(self, session_id: str, me: str, parties: Sequence[str], length: int, rng: Rng, *,
                 mask_seeds: Mapping[str, bytes] | None = None,
                 on_seed: Callable[[str, bytes], None] | None = None) -> None:
        """Args:
            mask_seeds: keyed sessions: the 16-byte mask seed shared with each peer (every peer), made
                for this session's masks alone: the masks are its AES-CTR keystream. No seed is sent or
                expected then.
            on_seed: told (peer, seed) of every seed this party sends or receives, so that the
                node may keep the pair key derived from it.
        """
        if me not in parties:
            raise LocalProtocolError(f"session {session_id}: {me!r} is not among the parties {list(parties)}")
        if len(set(parties)) != len(parties):
            raise LocalProtocolError(f"session {session_id}: parties repeat: {list(parties)}")
        if length < 1:
            raise LocalProtocolError(f"session {session_id}: a sum needs at least one word, got {length}")
        self.session_id = session_id
        self.me = me
        self.parties = tuple(parties)
        self.length = length
        self._rng = rng
        index = self.parties.index(me)
        self._mask_seeds = dict(mask_seeds) if mask_seeds is not None else None
        if self._mask_seeds is not None:
            missing = [p for p in self.parties if p != me and len(self._mask_seeds.get(p, b"")) != SEED_BYTES]
            if missing:
                raise LocalProtocolError(f"session {session_id}: a keyed sum needs a {SEED_BYTES}-byte mask seed "
                                         f"with every peer; none for {missing}")
        self._on_seed = on_seed
        self.keyed = keyed = self._mask_seeds is not None
        self._lower = frozenset(() if keyed else self.parties[:index])   # they send us seeds
        self._higher = () if keyed else self.parties[index + 1:]         # we send them seeds
        self._before = self.parties[:index]
        self._after = self.parties[index + 1:]
        self._purpose = b"sum/mask/" + session_id.encode()
        self._seeds: dict[str, bytes] = {}
        self._masked: Words | None = None
        self._started = False
        self._done = False

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The parties whose seed has not arrived yet.

        Returns: their names in session order.
        """
        if self._done:
            return ()
        return tuple(p for p in self.parties if p in self._lower and p not in self._seeds)

    @property
    def finished(self) -> bool:
        """Whether this party has emitted its output share."""
        return self._done

    def start(self, contribution: Words) -> list[Send | Output]:
        """Mask our contribution and send a fresh seed to every later party.

        Returns: one Send per later party, and the Output if no seed is awaited.
        Raises: LocalProtocolError if started twice or with the wrong length.
        """
        if self._started:
            raise LocalProtocolError(f"session {self.session_id}: sum already started")
        if contribution.shape != (self.length,):
            raise LocalProtocolError(f"session {self.session_id}: contribution has shape {contribution.shape}, "
                                     f"expected ({self.length},)")
        self._started = True
        y = np.array(contribution, dtype=np.uint64, copy=True)
        events: list[Send | Output] = []
        if self._mask_seeds is not None:   # keyed: masks from the pair keys, nothing to send
            y = keyed_share(y, self._before, self._after, self._mask_seeds)
            self._mask_seeds = None
        for peer in self._higher:
            seed = self._rng.random_bytes(SEED_BYTES)
            y += prg_words(seed, self.length, self._purpose)
            events.append(Send(peer, STEP_SEED, _SEED_MSG.pack(seed, self.length)))
            if self._on_seed is not None:
                self._on_seed(peer, seed)
        for seed in self._seeds.values():
            y -= prg_words(seed, self.length, self._purpose)
        self._masked = y
        return events + self._maybe_output()

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a seed from an earlier party.

        Returns: the Output once every seed is in and the contribution is masked, else [].
        Raises: RoundMismatch for a wrong step or a second seed from the same party;
        RemoteProtocolError for a sender that owes us no seed, a malformed payload, or a
        length that differs from ours.
        """
        if step != STEP_SEED:
            raise RoundMismatch(f"session {self.session_id}: expected step {STEP_SEED!r}, got {step!r} from {sender!r}")
        if sender not in self._lower:
            why = " (a keyed session sends no seeds)" if self.keyed else ""
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} does not send a seed to {self.me!r}{why}")
        if sender in self._seeds or self._done:
            raise RoundMismatch(f"session {self.session_id}: seed from {sender!r} already received (replay?)")
        if len(payload) != _SEED_MSG.size:
            raise RemoteProtocolError(f"session {self.session_id}: seed message from {sender!r} has "
                                      f"{len(payload)} bytes, expected {_SEED_MSG.size}")
        seed, length = _SEED_MSG.unpack(payload)
        if length != self.length:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} contributes {length} words, "
                                      f"{self.me!r} contributes {self.length}")
        self._seeds[sender] = seed
        if self._on_seed is not None:
            self._on_seed(sender, seed)
        if self._masked is not None:
            self._masked -= prg_words(seed, self.length, self._purpose)
        return self._maybe_output()

    def _maybe_output(self) -> list[Send | Output]:
        if self._done or self._masked is None or len(self._seeds) < len(self._lower):
            return []
        self._done = True
        share, self._masked = self._masked, None
        self._seeds.clear()
        return [Output(share)]


def keyed_word(y: int, before: Sequence[str], after: Sequence[str], mask_seeds: Mapping[str, bytes]) -> int:
    """keyed_share of a one-word contribution, as Python ints: y + sum_{j after} PRG(s_j)[0] - sum_{j before}
    PRG(s_j)[0] mod 2^64."""
    total = y + sum(keystream_word(mask_seeds[peer]) for peer in after)
    return (total - sum(keystream_word(mask_seeds[peer]) for peer in before)) % (1 << 64)


def keyed_share(y: Words, before: Sequence[str], after: Sequence[str], mask_seeds: Mapping[str, bytes]) -> Words:
    """A keyed sum's masking of a contribution, in place: y + sum_{j after} PRG(s_j) - sum_{j before} PRG(s_j),
    the PRG the AES-CTR keystream under each peer's mask seed (made for these masks alone).

    Returns: y (a writable uint64 array, changed in place).
    """
    if y.size == 1:   # a scalar's: added up as Python ints, with no array op per peer
        y[0] = keyed_word(int(y[0]), before, after, mask_seeds)
        return y
    for peer in after:
        y += keystream_words(mask_seeds[peer], y.size)
    for peer in before:
        y -= keystream_words(mask_seeds[peer], y.size)
    return y
