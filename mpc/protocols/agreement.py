"""Agreement on the session before anything value-dependent leaves a node (DESIGN.md §9).

A coordinator could prepare different nodes with different descriptions of "the same" session:
another input name at the victim and an all-zero input elsewhere opens the victim's value in one
valid-looking session. So every party sends every other party a digest of the session
description it prepared (protocol, parameters, input name, ordered participants, scale, length,
each node's input version, session id and coordinator), and holds back everything that depends
on its input, i.e. its output share and every message but those its engine declares
value-free (fresh seeds, OT and triple traffic), until the digests of *all* peers have arrived
and equal its own. An engine may also name `early_steps`: openings masked by one-time pads of
this party's own, fresh for the session (mpc/protocols/compute.py "Without a hello"), which are
uniformly random whatever the peers prepared and so leave with the digest. A mismatch ends the
session at this node, naming the peer, and nothing value-dependent has left. All parties of a protocol instance must share its session
identifier and the description of its inputs, as in Canetti's UC framework ("Universally
Composable Security", FOCS 2001: the session id every party of an instance agrees on); here the
check is explicit because the coordinator that hands out the description is not trusted.

When every pair of nodes holds a pair key, a keyed *sum* makes the check before it starts, from
tags the coordinator relays (mpc/protocols/pairing.py), and binds the digest into its masks: the
node then builds this wrapper with `agreed=True`, and no digest is exchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.protocols.engine import Engine
from mpc.ring import Words

STEP_DIGEST = "agree/digest"
DIGEST_BYTES = 32


_DIGEST_DOMAIN = b"mpc/v1/session-description\0"


def _canonical(description: Mapping[str, object]) -> str:
    return json.dumps(description, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def session_digest(description: Mapping[str, object]) -> bytes:
    """SHA-256 over the canonical JSON of a session description (sorted keys, no spaces).

    Returns: 32 bytes.
    """
    return hashlib.sha256(_DIGEST_DOMAIN + _canonical(description).encode()).digest()


def session_digests(description: Mapping[str, object], varying: str = "session") -> Callable[[str], bytes]:
    """The session digest of `description` with its entry `varying` set to each text given, for
    descriptions that differ in that alone (a repeat's, in its session id): the canonical JSON is made
    once, around a place for the text, and each digest costs the hash.

    Returns: text -> session_digest({**description, varying: text}).
    """
    mark = "\0"   # written "\u0000": in no other place of the text, or each digest is made in full
    text, slot = _canonical({**description, varying: mark}), json.dumps(mark)
    if text.count(slot) != 1:
        return lambda value: session_digest({**description, varying: value})
    before, after = text.split(slot)
    head, tail = _DIGEST_DOMAIN + before.encode(), after.encode()
    return lambda value: hashlib.sha256(head + json.dumps(value, ensure_ascii=True).encode() + tail).digest()


class AgreedParty:
    """Wraps an engine: exchanges description digests and holds value-dependent events until all agree."""

    def __init__(self, inner: Engine, session_id: str, me: str, parties: Sequence[str],
                 on_agreed: Callable[[], None] | None = None, *, agreed: bool = False) -> None:
        """Args:
            on_agreed: called once, when every digest has arrived and matched, just before what was
                held is released; if it raises, the error propagates and nothing is released (the
                node counts the release against its owner's budget here, or, for a program, whose
                openings reveal nothing without its output share, when that share is ready: None).
            agreed: the caller has already checked every peer's description (from the tags the
                coordinator relayed): no digest is sent or accepted, and on_agreed is called at start.
        """
        self.inner = inner
        self._on_agreed = on_agreed
        self.session_id = session_id
        self.me = me
        self.peers = tuple(p for p in parties if p != me)
        self._digest: bytes | None = None
        self._theirs: dict[str, bytes] = {}
        self._held: list[Send | Output] = []
        self._agreed = False
        self.failure: RemoteProtocolError | None = None   # set by start when an early digest differs
        self._checked = agreed
        self._early_steps: frozenset[str] = getattr(inner, "early_steps", frozenset())

    @property
    def length(self) -> int:
        """The contribution length of the inner engine."""
        return self.inner.length

    @property
    def triple_counts(self) -> tuple[int, int] | None:
        """The inner engine's (generated, consumed) bit triples, if it uses any (for the node's metrics)."""
        return self.inner.triple_counts

    def is_slow(self, step: str) -> bool:
        """Whether the inner engine handles `step` slowly (digests are quick)."""
        return step != STEP_DIGEST and self.inner.is_slow(step)

    @property
    def agreed(self) -> bool:
        """Whether every peer's digest has arrived and equals ours."""
        return self._agreed

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers whose digest is missing, else whoever the inner engine waits on."""
        missing = tuple(p for p in self.peers if p not in self._theirs)
        return missing if missing or self._digest is None else self.inner.waiting_for

    def start(self, contribution: Words, digest: bytes) -> list[Send | Output]:
        """Send our digest to every peer and start the inner engine, holding what depends on the input.

        If a digest that came early differs from ours, only our digests go out (so that every peer
        learns of the disagreement too, instead of waiting for ours until its deadline) and
        `failure` is set: the caller sends them, then ends the session with it.

        Returns: the events that may leave now.
        Raises: LocalProtocolError if started twice or with a malformed digest.
        """
        if self._digest is not None:
            raise LocalProtocolError(f"session {self.session_id}: agreement already started")
        if len(digest) != DIGEST_BYTES:
            raise LocalProtocolError(f"session {self.session_id}: a digest has {DIGEST_BYTES} bytes")
        self._digest = digest
        if self._checked:   # agreed at prepare: no digest goes out, none is awaited
            self._theirs = {p: digest for p in self.peers}
            return self._filter(self.inner.start(contribution))
        events: list[Send | Output] = [Send(p, STEP_DIGEST, digest) for p in self.peers]
        for peer, theirs in self._theirs.items():
            try:
                self._check(peer, theirs)
            except RemoteProtocolError as exc:
                self.failure = exc
                return events
        return events + self._filter(self.inner.start(contribution))

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take a peer's digest, or pass a message to the inner engine.

        Returns: the events that may leave now (everything held, once all digests agree).
        Raises: RemoteProtocolError naming the peer whose description differs; RoundMismatch for
        a second digest; whatever the inner engine raises.
        """
        if step != STEP_DIGEST:
            return self._filter(self.inner.receive(sender, step, payload))
        if sender not in self.peers:
            raise RemoteProtocolError(f"session {self.session_id}: {sender!r} is not a peer of {self.me!r}")
        if self._checked:
            raise RoundMismatch(f"session {self.session_id}: a session digest from {sender!r}, but this session's "
                                f"descriptions were checked from the coordinator's relayed tags")
        if sender in self._theirs:
            raise RoundMismatch(f"session {self.session_id}: second session digest from {sender!r}")
        if len(payload) != DIGEST_BYTES:
            raise RemoteProtocolError(f"session {self.session_id}: digest from {sender!r} has {len(payload)} bytes")
        self._theirs[sender] = payload
        if self._digest is None:
            return []
        self._check(sender, payload)
        return self._filter([])

    def _check(self, peer: str, theirs: bytes) -> None:
        assert self._digest is not None
        if not hmac.compare_digest(theirs, self._digest):
            raise RemoteProtocolError(
                f"session {self.session_id}: node {peer} prepared a different session description than node "
                f"{self.me} (protocol, parameters, input name, participants, scale or input versions differ); "
                f"nothing that depends on an input was sent")

    def _filter(self, events: Sequence[Send | Output]) -> list[Send | Output]:
        if not self._agreed and self._digest is not None and len(self._theirs) == len(self.peers):
            if self._on_agreed is not None:
                self._on_agreed()
            self._agreed = True
        out: list[Send | Output] = []
        if self._agreed and self._held:
            out, self._held = self._held, []
        for event in events:
            if self._agreed:
                out.append(event)
            elif isinstance(event, Output) or (isinstance(event, Send) and event.step not in self._early_steps and
                                               not event.step.startswith(self.inner.value_free_steps)):
                self._held.append(event)
            else:
                out.append(event)
        return out
