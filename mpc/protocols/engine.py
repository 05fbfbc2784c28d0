"""The interface between a node and a protocol engine (DESIGN.md §10).

A node (mpc/node/core.py) drives any protocol through this: it feeds the engine peer messages,
sends what the engine emits, and takes the engine's Output as its share. The engine says
which of its steps may leave before the parties agree on the session (mpc/protocols/agreement.py)
and which are slow enough to run outside the event loop.
"""

from __future__ import annotations

from typing import Protocol

from mpc.events import Output, Send
from mpc.ring import Words


class Engine(Protocol):
    """What a node needs of a sans-I/O protocol engine (mpc/node/core.py wraps it in an AgreedParty)."""

    length: int
    value_free_steps: tuple[str, ...]

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Peers the engine is waiting on."""
        ...

    @property
    def triple_counts(self) -> tuple[int, int] | None:
        """Bit triples (generated, consumed) so far, for engines that use them."""
        ...

    def is_slow(self, step: str) -> bool:
        """Whether handling `step` should run outside the event loop (seconds of arithmetic)."""
        ...

    def start(self, contribution: Words) -> list[Send | Output]:
        """Begin with this node's contribution."""
        ...

    def receive(self, sender: str, step: str, payload: bytes) -> list[Send | Output]:
        """Take one peer message."""
        ...
