"""Pairwise keys: agreement and masks without a round of peer messages (PROTOCOLS.md §1).

The first secure sum between two nodes sends a fresh seed s from the earlier party to the later
one over their mutually authenticated channel (mpc/protocols/sum.py). Both then keep the pair key
K = HKDF(s, "pair-key") for the nodes' lifetime (in memory: a restart forgets it, and the next
session between them sends a seed again), named by its public id HKDF(s, KEY_ID_LABEL). The label
names how a keyed sum makes its masks from K (below): nodes that make them otherwise (another version
of mpc) name the same key differently, so the coordinator never finds a pair key they share and their
sessions send seeds, whose masks every version makes alike.

A later session uses K twice, without any message between the two nodes:

- **Agreement** (DESIGN.md §9: every participant checks that all others prepared the same session
  description before anything value-dependent leaves). At prepare, node i returns to the
  coordinator, for every peer j, the id of its newest key with j and the tag
  HMAC-SHA256(K_ij', description as i prepared it, from i to j), K_ij' = HKDF(K_ij, "prepared").
  The coordinator forwards every node's evidence to every node with the compute request. Node j
  recomputes each peer's tag from its *own* description and the peer's reported length, scale and
  input version, and refuses on any difference. The coordinator relays the tags but cannot forge
  or alter one without K_ij, which it never holds; the tag names sender and recipient, so it
  cannot be reflected, and the session id, which a node never accepts twice, so it cannot be
  replayed. The coordinator is an untrusted courier: the authenticated-relay pattern of Bonawitz
  et al., CCS 2017, §4 (messages between users go through the server, authenticated). The tags
  show what each peer *prepared*; what each computed with (the scale, lengths and versions of
  every node) is in the session digest. A keyed sum exchanges nothing, so that digest is bound
  into its masks (below): a node that broke the protocol and computed with another description
  than it tagged only makes the masks fail to cancel, and the output is noise. Every other
  engine sends messages anyway and still sends its digest with its first ones (no extra round),
  so each node also checks what every other computed with (mpc/protocols/agreement.py).
- **Masks**: the pairwise one-time pads of the sum are PRG(s_ij), the AES-128-CTR keystream under the
  seed s_ij = HKDF(K_ij, "mask/" + session id + "/" + session digest), which serves that keystream alone,
  instead of a fresh seed (Bonawitz et al. §3: masks from pairwise shared keys; PROTOCOLS.md §1: "both
  derive it with HKDF from a pairwise key and the session id", "PRG(s) = AES-128-CTR keystream under key s").
  A node never takes part in a session id twice (its store refuses a reused one), so a mask is
  never reused; the session digest binds the mask to the description the nodes agreed on.

The coordinator uses the keyed path only when, for every pair, both nodes named the same key;
otherwise the session runs as before (digests and seeds peer to peer) and leaves new keys behind.

**Repeats only.** A keyed sum records its release when it starts, before it could hear whether the
others reserved theirs: if one node then refused (its budget spent, a DP budget run dry), the others
had counted a release, or spent epsilon, on a sum that never opened; a coordinator retrying such a
query drained every other node's budget. So a node offers the keyed path (its tags, at prepare) only
for a release that an earlier one of its input version may imply (never a DP release), and at compute
refuses it (KEYED_REPEATS_ONLY, as stale, nothing shared) for a release that would count or spend;
the coordinator then runs the session unkeyed, where every node records its release only once all have
reserved theirs (mpc/protocols/agreement.py). A repeat counts against nothing, so recording it early
costs nothing.

**One round** (mpc/coordinator/client.py `one_round`, mpc/node/core.py `run`): a repeated query
states every node's shape and, per pair, the id of the key to use (as the nodes reported them
before), and each node prepares and computes at once. There are no tags then: each node checks its
own stated shape and that it holds every named key (refusing as stale otherwise, before anything is
shared), and the statement about every node enters the session digest. Programs still exchange
digests, so a false statement about another node fails agreement. A keyed sum exchanges nothing; the
digest in its masks is its agreement: a node told something else than the others masks with pads
that no other node's cancel, so every share stays uniformly random given all the others, and the sum
of the shares is noise (HKDF and the AES-CTR PRG as pseudorandom functions: masks under keys bound
to different descriptions are independent).
What it could reveal, it reveals only if every node was told the same description, which each has
checked against its policy and budget and recorded before its share left.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from mpc.errors import LocalProtocolError, RemoteProtocolError
from mpc.prg import SEED_BYTES, KeyDeriver, derive_key

KEY_ID_BYTES = 16
# Why a node refuses the keyed path for a release that is not a repeat (the coordinator, which sees this
# in the refusal, runs the session again unkeyed).
KEYED_REPEATS_ONLY = "a keyed sum runs only as a repeat of a recorded release"
# The pair key id's HKDF label; "/2": keyed masks are AES-CTR under HKDF(K, "mask/..."), not PRG(HKDF(K, "session/...")).
KEY_ID_LABEL = b"pair-key-id/2"
TAG_BYTES = 32
# Each unkeyed sum leaves a new key per pair, and a query's first releases are unkeyed (below): a coordinator
# warming up a dozen queries in turn must still find the key it noted for the first of them.
MAX_KEYS_PER_PEER = 16


@dataclass(frozen=True, slots=True)
class PairKey:
    """A key this node shares with one peer: the key itself (secret) and its public id."""

    peer: str
    key: bytes
    key_id: bytes
    tag_key: bytes = field(default=b"", compare=False)   # HKDF(key, "prepared"), derived once
    _masks: KeyDeriver = field(init=False, compare=False, repr=False)   # derive_key(key, ...), quicker

    def __post_init__(self) -> None:
        if not self.tag_key:
            object.__setattr__(self, "tag_key", derive_key(self.key, b"prepared"))
        object.__setattr__(self, "_masks", KeyDeriver(self.key))

    def __repr__(self) -> str:
        return f"PairKey(peer={self.peer!r}, id={self.key_id.hex()[:8]}…, <key redacted>)"

    @classmethod
    def from_seed(cls, peer: str, seed: bytes) -> PairKey:
        """The pair key both ends derive from a seed one of them sent the other.

        Raises: ValueError if the seed is not 16 bytes.
        """
        return cls(peer, derive_key(seed, b"pair-key"), derive_key(seed, KEY_ID_LABEL))

    def mask_key(self, session_id: str, digest: bytes) -> bytes:
        """The 16-byte seed of this pair's masks in one session (its description's digest bound in): the
        key of their AES-CTR keystream (mpc.prg.keystream_words), for that alone.

        Returns: 16 bytes.
        """
        return self._masks.derive(b"mask/" + session_id.encode() + b"/" + digest)

    def tag(self, sender: str, recipient: str, prepared: Mapping[str, object]) -> bytes:
        """HMAC-SHA256 of what `sender` prepared, for `recipient`, under this pair's tag key.

        Returns: 32 bytes.
        """
        text = json.dumps({"from": sender, "to": recipient, "prepared": prepared}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self.tag_key, b"mpc/v1/prepared\0" + text.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one node reports at prepare for the keyed path: its public shape, and per peer the id of
    the key and the tag over its prepared description (see the module docstring)."""

    length: int
    frac_bits: int
    input_version: int
    tags: Mapping[str, tuple[bytes, bytes]]   # peer -> (key id, tag)

    def shape(self) -> dict[str, object]:
        """The node's own part of the tagged description."""
        return {"length": self.length, "frac_bits": self.frac_bits, "version": self.input_version}


def keyed(evidence: Mapping[str, Evidence], parties: tuple[str, ...] | list[str]) -> bool:
    """Whether every pair of `parties` named the same key, so the session may take the keyed path.

    Returns: True only if every party's evidence has a tag for every other party, each under the
    key id its peer used for it.
    """
    for a in parties:
        mine = evidence.get(a)
        if mine is None:
            return False
        for b in parties:
            if b == a:
                continue
            theirs = evidence.get(b)
            if theirs is None or b not in mine.tags or a not in theirs.tags:
                return False
            if mine.tags[b][0] != theirs.tags[a][0]:
                return False
    return True


def check_evidence(me: str, keys: Mapping[str, PairKey], prepared: Mapping[str, object],
                   evidence: Mapping[str, Evidence], session_id: str) -> None:
    """Check every peer's tag for us against our own description and the peer's reported shape.

    Args:
        keys: the pair key we named for each peer at prepare.
        prepared: the common part of the description as we prepared it.
        evidence: every participant's evidence, as the coordinator forwarded it.
    Raises: RemoteProtocolError naming the peer whose description differs (or whose evidence was
    altered on the way), or whose key is not the one we named.
    """
    for peer, key in keys.items():
        theirs = evidence.get(peer)
        entry = None if theirs is None else theirs.tags.get(me)
        if theirs is None or entry is None:
            raise RemoteProtocolError(f"session {session_id}: the coordinator forwarded no evidence from node {peer} "
                                      f"for node {me}; nothing that depends on an input was sent")
        key_id, tag = entry
        if not hmac.compare_digest(key_id, key.key_id):
            raise RemoteProtocolError(f"session {session_id}: node {peer} tagged its description under another pair "
                                      f"key than node {me} holds with it; nothing that depends on an input was sent")
        expected = key.tag(peer, me, {**prepared, **theirs.shape()})
        if len(tag) != TAG_BYTES or not hmac.compare_digest(tag, expected):
            raise RemoteProtocolError(
                f"session {session_id}: node {peer} prepared a different session description than node {me} "
                f"(protocol, parameters, input name, participants, its scale, length or input version differ, or "
                f"the coordinator altered its evidence); nothing that depends on an input was sent")


class PairKeys:
    """The pair keys a node holds with each peer, newest last, at most `per_peer` each (thread-safe:
    engines may run in worker threads)."""

    def __init__(self, per_peer: int = MAX_KEYS_PER_PEER) -> None:
        if per_peer < 1:
            raise LocalProtocolError(f"a pair-key registry keeps at least one key per peer, got {per_peer}")
        self.per_peer = per_peer
        self._keys: dict[str, OrderedDict[bytes, PairKey]] = {}
        self._lock = threading.Lock()

    def add(self, key: PairKey) -> None:
        """Keep a new key with its peer (the oldest beyond `per_peer` is forgotten)."""
        if len(key.key) != SEED_BYTES or len(key.key_id) != KEY_ID_BYTES:
            raise LocalProtocolError("a pair key and its id are 16 bytes each")
        with self._lock:
            held = self._keys.setdefault(key.peer, OrderedDict())
            held.pop(key.key_id, None)
            held[key.key_id] = key
            while len(held) > self.per_peer:
                held.popitem(last=False)

    def newest(self, peer: str) -> PairKey | None:
        """The newest key held with `peer`, if any."""
        with self._lock:
            held = self._keys.get(peer)
            return next(reversed(held.values())) if held else None

    def find(self, peer: str, key_id: bytes) -> PairKey | None:
        """The key held with `peer` under the public id `key_id`, if it is still held."""
        with self._lock:
            held = self._keys.get(peer)
            return None if held is None else held.get(bytes(key_id))

    def newest_ids(self) -> dict[str, bytes]:
        """The public id of the newest key held with each peer."""
        with self._lock:
            return {peer: next(reversed(held)) for peer, held in self._keys.items() if held}
