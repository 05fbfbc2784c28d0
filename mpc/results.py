"""What the coordinator reports of a session: the decoded output, and nothing else.

One dataclass per kind of result, each with `as_dict` for `--json`; the protocol catalogue
(mpc/protocols/catalogue.py) decodes the opened words into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # mpc.dp imports numpy, which `mpc status` does without
    from mpc.dp import NoiseReport

Number = int | float


def _with_noise(out: dict[str, Any], noise: NoiseReport | None) -> dict[str, Any]:
    """A result's JSON, with its noise when it is a differentially private release."""
    if noise is not None:
        out["noise"] = noise.as_dict()
    return out


@dataclass(frozen=True, slots=True)
class SumResult:
    """A secure sum: a number for scalar inputs, else a list."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    value: Number | list[Number]
    noise: NoiseReport | None = None   # a differentially private release: its noise

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _with_noise({"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                            "sum": self.value}, self.noise)


@dataclass(frozen=True, slots=True)
class AverageResult:
    """A secure average and what it reveals: the sum(s) and the record count."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    mode: str
    average: float | list[float]
    total: Number | list[Number]
    count: int
    noise: NoiseReport | None = None   # a differentially private release: the noise of the average

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _with_noise({"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                            "mode": self.mode, "average": self.average, "sum": self.total, "count": self.count},
                           self.noise)


@dataclass(frozen=True, slots=True)
class CollectionSumResult:
    """A validated sum over a collection's complete submissions (mpc/protocols/collection.py)."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    value: int | list[int]             # the sum of the valid submissions (a list for vectors)
    valid: int                         # how many complete submissions passed the range check
    complete: int                      # how many submissions every node holds

    @property
    def average(self) -> float | list[float] | None:
        """The mean of the valid submissions, elementwise (None without one valid submission)."""
        if not self.valid:
            return None
        if isinstance(self.value, list):
            return [v / self.valid for v in self.value]
        return self.value / self.valid

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "collection": self.input_name, "nodes": list(self.nodes),
                "sum": self.value, "average": self.average, "valid": self.valid, "complete": self.complete,
                "invalid": self.complete - self.valid}


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The outcome of a vote: only whether it passed, and the rule it was judged by."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    passed: bool
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "result": "YES" if self.passed else "NO", "rule": self.rule}


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """[elementwise sum >= k] for every element: the bits, nothing else."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    threshold: int
    bits: list[bool]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "threshold": self.threshold, "at_least": [int(b) for b in self.bits]}


@dataclass(frozen=True, slots=True)
class AuctionResult:
    """A sealed-bid auction: the winner (node, bid index there) and the price, nothing else."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    winner_node: str
    winner_index: int
    price: int
    pricing: str              # "first": the highest bid; "second": the second-highest (Vickrey)
    bids: int                 # bids in the auction (public: every node's count)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "winner": {"node": self.winner_node, "index": self.winner_index}, "price": self.price,
                "pricing": self.pricing, "bids": self.bids}


@dataclass(frozen=True, slots=True)
class CollectionAuctionResult:
    """A sealed-bid auction over a collection: the winning credential and the price, nothing else."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    winner: str               # the winning credential's id, 32 hex digits (the owner knows whose it is)
    price: int
    pricing: str              # "first": the highest valid bid; "second": the second-highest (Vickrey)
    valid: int                # valid bids
    complete: int             # complete submissions

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "collection": self.input_name, "nodes": list(self.nodes),
                "winner": {"credential": self.winner}, "price": self.price, "pricing": self.pricing,
                "valid": self.valid, "complete": self.complete}


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """A market-clearing price on a public grid, or None when demand exceeds supply at every price."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    prices: list[int]
    price: int | None
    index: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                "prices": self.prices, "clearing_price": self.price, "index": self.index}


@dataclass(frozen=True, slots=True)
class PluralityResult:
    """A plurality vote: the count per option (None with winner-only) and the winning option.

    Ties go to the lowest option index.
    """

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    options: int
    counts: list[int] | None
    winner: int
    noise: NoiseReport | None = None   # a differentially private release: the noise of each count
    valid: int | None = None           # over a collection: how many complete submissions were valid
    complete: int | None = None        # over a collection: how many submissions every node holds

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
               "options": self.options, "counts": self.counts, "winner": self.winner}
        if self.complete is not None:
            out |= {"valid": self.valid, "complete": self.complete}
        return _with_noise(out, self.noise)


@dataclass(frozen=True, slots=True)
class HistogramResult:
    """Records per public bin over every node: bins [e0, e1), ..., [e(k-1), ek]."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    edges: list[int]
    counts: list[int]
    noise: NoiseReport | None = None   # a differentially private release: the noise of each count

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _with_noise({"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                            "edges": self.edges, "counts": self.counts}, self.noise)


@dataclass(frozen=True, slots=True)
class IntersectionResult:
    """A private set intersection: its size, and with reveal "sum" the sum of the associated values
    over it; with reveal "members" the nodes that received the common identifiers (not the coordinator)."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    reveal: str
    size: int
    total: int | None = None
    delivered_to: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"session": self.session_id, "input": self.input_name, "nodes": list(self.nodes),
                               "reveal": self.reveal, "size": self.size}
        if self.total is not None:
            out["sum"] = self.total
        if self.delivered_to:
            out["members_delivered_to"] = self.delivered_to
        return out


Result = (SumResult | AverageResult | VoteResult | ThresholdResult | AuctionResult | ClearingResult | PluralityResult
          | HistogramResult | IntersectionResult | CollectionSumResult | CollectionAuctionResult)
