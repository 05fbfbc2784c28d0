"""Events shared by every sans-I/O engine, in mpc/ot/ and mpc/protocols/ alike (STYLE.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

from mpc.ring import Words


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver `payload` to party `to` under the step label `step` (within this engine's session)."""

    to: str
    step: str
    payload: bytes

    def __repr__(self) -> str:
        return f"Send(to={self.to!r}, step={self.step!r}, {len(self.payload)} bytes)"


@dataclass(frozen=True, slots=True)
class Output:
    """This party's share of the session's output, ready to go to the coordinator."""

    words: Words

    def __repr__(self) -> str:
        return f"Output({self.words.size} words, <share redacted>)"

    def __bool__(self) -> bool:
        raise TypeError("an output share has no truth value; it is meaningless on its own")


@dataclass(frozen=True, slots=True)
class Keep(Output):
    """A result that stays at this node and goes to no one (e.g. which of its own records an
    intersection found common, delivered to its owner); the coordinator gets nothing from it."""

    def __repr__(self) -> str:
        return f"Keep({self.words.size} words, <result redacted>)"
