"""What the simulation tests share: CSPRNGs per test case, additive shares, the in-memory router
that joins N engines (h11 `tests/helpers.py` ConnectionPair, CrypTen InProcessCommunicator), the
balance check for what a party receives, and the runner of programs on `CircuitParty` engines
with the trusted dealer's preprocessing (tests/sim/dealer.py) sized by `plan`.

The router delivers messages in a CSPRNG-chosen order with the starts interleaved: a message can
reach a party before it has started, and a peer's message for round r + 1 can overtake its
message for round r, as over the node's transport (one asyncio task and RPC per Send). It can
also keep each link first-in first-out. Its loop is bounded.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mpc.events import Output, Send
from mpc.ot.arith import ArithTriples, DaBits
from mpc.ot.extension import KAPPA, IknpReceiver, IknpSender
from mpc.ot.triples import ALL, Holders, PairwiseOt
from mpc.prg import AesCtrRng, Rng, SystemRng, random_words
from mpc.protocols.beaver import BitTriples
from mpc.protocols.circuit import CircuitParty, Context, Plan, ProgramFactory, plan
from mpc.ring import Words
from tests.sim.dealer import TrustedDealer

NAMES = ("alice", "bob", "carlos", "david", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj")
FALSE_ALARM = 1e-6
Received = tuple[str, str, bytes]   # (sender, step, payload)
Views = dict[str, list[Received]]


def names(n: int) -> list[str]:
    """The first n party names."""
    return list(NAMES[:n])


def rng(label: str) -> AesCtrRng:
    """A reproducible CSPRNG per test case."""
    return AesCtrRng(label.encode().ljust(16, b".")[:16])


def pick(order: Rng, size: int) -> int:
    """An index below size drawn from the CSPRNG (bias below 2^-40 for the sizes used here)."""
    return int.from_bytes(order.random_bytes(8), "little") % size


def additive_shares(values: Words, n: int, r: Rng) -> list[Words]:
    """n uniform additive shares mod 2^64 of values."""
    shares = [random_words(r, values.size) for _ in range(n - 1)]
    first = values.copy()
    for s in shares:
        first -= s
    return [first, *shares]


# --------------------------------------------------------------------------- the router

class Engine(Protocol):
    """A sans-I/O engine: Sends and other events out of `start` and `receive`."""

    def start(self) -> Sequence[object]: ...

    def receive(self, sender: str, step: str, payload: bytes) -> Sequence[object]: ...


@dataclass
class Router:
    """Starts every engine and delivers every Send in a CSPRNG-chosen order, the starts interleaved.

    overtaking: any pending message may go next; else only the oldest pending one of each link.
    Keeps what each party received (sender, step, payload) and its other events, in order.
    """

    engines: Mapping[str, Engine]
    order: Rng = field(default_factory=SystemRng)
    overtaking: bool = True
    limit: int = 1_000_000
    received: Views = field(init=False)
    results: dict[str, list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.received = {name: [] for name in self.engines}
        self.results = {}

    def run(self) -> dict[str, list[Any]]:
        """Deliver until nothing is pending.

        Returns: each party's events other than Sends, in order (a party with none is absent).
        Raises: AssertionError if the engines still send after `limit` deliveries.
        """
        pending: list[tuple[str, str, Send] | str] = list(self.engines)   # (sender, to, send), or a start
        for _ in range(self.limit):
            if not pending:
                return self.results
            item = pending.pop(self._next(pending))
            if isinstance(item, str):
                me, events = item, self.engines[item].start()
            else:
                sender, me, send = item
                self.received[me].append((sender, send.step, send.payload))
                events = self.engines[me].receive(sender, send.step, send.payload)
            for event in events:
                if isinstance(event, Send):
                    pending.append((me, event.to, event))
                else:
                    self.results.setdefault(me, []).append(event)
        raise AssertionError(f"router did not settle after {self.limit} deliveries")

    def single(self) -> dict[str, Any]:
        """Each party's one result (after `run`).

        Raises: AssertionError if a party has none or more than one.
        """
        missing = set(self.engines) - set(self.results)
        assert not missing, f"no result from {sorted(missing)}"
        for me, events in self.results.items():
            assert len(events) == 1, f"{me} finished {len(events)} times"
        return {me: events[0] for me, events in self.results.items()}

    def _next(self, pending: Sequence[tuple[str, str, Send] | str]) -> int:
        if self.overtaking:
            return pick(self.order, len(pending))
        seen: set[tuple[str, str]] = set()
        heads = []
        for i, item in enumerate(pending):
            link = ("", item) if isinstance(item, str) else (item[0], item[1])
            if link not in seen:
                seen.add(link)
                heads.append(i)
        return heads[pick(self.order, len(heads))]


def route(engines: Mapping[str, CircuitParty], order: Rng, *,
          overtaking: bool = True) -> tuple[dict[str, Words], Views]:
    """Run CircuitParty engines to the end through a Router.

    Returns: each party's output words (exactly one Output each), and what each party received.
    """
    router = Router(engines, order, overtaking)
    router.run()
    outputs = {}
    for me, result in router.single().items():
        assert isinstance(result, Output), result
        outputs[me] = result.words
    return outputs, router.received


def sends_to(events: Sequence[Send | Output], to: str) -> Send:
    """The one Send to `to` among events."""
    [send] = [e for e in events if isinstance(e, Send) and e.to == to]
    return send


def deliver(party: CircuitParty, messages: Sequence[tuple[str, Send]]) -> list[Send | Output]:
    """Hand party each (sender, message) in turn. Returns: what it answered, in order."""
    out: list[Send | Output] = []
    for sender, msg in messages:
        out += party.receive(sender, msg.step, msg.payload)
    return out


# --------------------------------------------------------------------------- fair coins

@functools.cache
def two_sided_z(alpha: float) -> float:
    """z with P(|N(0, 1)| > z) = alpha, by bisection."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid / math.sqrt(2)) > alpha else (lo, mid)
    return hi


def _ones(data: bytes | npt.NDArray[Any], alpha: float) -> tuple[int, int, float]:
    raw = np.frombuffer(data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    n = raw.size * 8
    return int(np.unpackbits(raw).sum()), n, two_sided_z(alpha) * math.sqrt(n) / 2


def balanced(data: bytes | npt.NDArray[Any], alpha: float = FALSE_ALARM) -> bool:
    """Whether the bits' count of ones lies in the two-sided alpha band of Binomial(n, 1/2).

    data: bytes, or an array whose raw bytes are the bits (packed bits as uint8, or words).
    """
    ones, n, bound = _ones(data, alpha)
    return abs(ones - n / 2) <= bound


def assert_balanced(data: bytes | npt.NDArray[Any], alpha: float = FALSE_ALARM) -> None:
    """The bits' count of ones lies in the two-sided alpha band of Binomial(n, 1/2)."""
    ones, n, bound = _ones(data, alpha)
    assert abs(ones - n / 2) <= bound, f"{ones} ones in {n} bits, allowed ±{bound:.0f} around {n / 2}"


# --------------------------------------------------------------------------- OT state

def ideal_setup(parties: Sequence[str]) -> dict[str, dict[str, PairwiseOt]]:
    """The pairwise OT state from an ideal base-OT functionality (a fast test double)."""
    receivers: dict[tuple[str, str], IknpReceiver] = {}
    senders: dict[tuple[str, str], IknpSender] = {}
    for i in parties:
        for j in parties:
            if i == j:
                continue
            pairs = [(os.urandom(16), os.urandom(16)) for _ in range(KAPPA)]
            s = os.urandom(KAPPA // 8)
            bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8), bitorder="little")
            receivers[i, j] = IknpReceiver(pairs)  # i chooses, j sends
            senders[j, i] = IknpSender(s, [pairs[k][bits[k]] for k in range(KAPPA)])
    return {p: {q: PairwiseOt(q, receivers[p, q], senders[p, q]) for q in parties if q != p} for p in parties}


# --------------------------------------------------------------------------- programs on CircuitParty

class Dealt:
    """Preprocessing for n parties, from the trusted dealer, exactly as much as a plan draws."""

    coins: Rng = SystemRng()   # every party's own coins

    def __init__(self, p: Plan, n: int, r: Rng) -> None:
        dealer = TrustedDealer(n, r)
        self.bits: list[Any] = dealer.pools(p.bit_words, p.layout)
        self.arith: list[Any] = dealer.arith_pools(p.arith_triples)
        self.dabits: list[Any] = dealer.dabit_pools(p.dabits)

    def context(self, i: int, n: int) -> Context:
        """Party i's view of the preprocessing."""
        return Context(i, n, self.bits[i], self.arith[i], self.dabits[i], self.coins)


class ZeroCoins:
    """An Rng that returns zeros: the negative control for a party's own coins."""

    def random_bytes(self, n: int) -> bytes:
        """n zero bytes."""
        return bytes(n)


class ZeroSource:
    """a = b = c = 0 and r = 0: valid preprocessing that masks nothing (the negative control)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.remaining = 0

    def take(self, n: int, holders: Holders = ALL) -> BitTriples | ArithTriples | DaBits:
        """n zero items of this source's kind (holders: bit triples' holders, as TripleSource.take)."""
        z = np.zeros(n, np.uint64)
        if self.kind == "bits":
            return BitTriples(z, z.copy(), z.copy())
        return ArithTriples(z, z.copy(), z.copy()) if self.kind == "arith" else DaBits(z, z.copy())


class ZeroDealt(Dealt):
    """Zero preprocessing, and zero coins, for every party."""

    coins = ZeroCoins()

    def __init__(self, p: Plan, n: int) -> None:
        self.bits = [ZeroSource("bits")] * n
        self.arith = [ZeroSource("arith")] * n
        self.dabits = [ZeroSource("dabits")] * n


@dataclass
class Run:
    """One run of a program: the parties' outputs in party order, their views, its plan and engines."""

    outputs: list[Words]
    views: Views
    plan: Plan
    engines: list[CircuitParty]
    pools: list[list[Any]]

    def added(self) -> Words:
        """The output shares added mod 2^64."""
        total = np.zeros_like(self.outputs[0])
        for o in self.outputs:
            total += o
        return total

    def xored(self) -> Words:
        """The output shares XORed."""
        total = np.zeros_like(self.outputs[0])
        for o in self.outputs:
            total ^= o
        return total


_PLANS: dict[tuple[ProgramFactory, int, int], Plan] = {}


def planned(factory: ProgramFactory, n: int, size: int) -> Plan:
    """plan(), once per program and shape (every run checks that it drew exactly this)."""
    key = (factory, n, size)
    if key not in _PLANS:
        _PLANS[key] = plan(factory, n, size)
    return _PLANS[key]


def run_program(factory: ProgramFactory, shares: Sequence[Words], label: str, *, prefix: str = "t",
                overtaking: bool = True, dealt: Callable[[Plan, int], Dealt] | None = None,
                order: Rng | None = None, labels: bool = False) -> Run:
    """Run factory's program at len(shares) parties, party i on input shares[i].

    labels: give each engine the plan's round labels (as the node does), so that it refuses a
    message for neither this round nor the next on arrival.
    """
    n = len(shares)
    r = rng(label)
    p = planned(factory, n, int(shares[0].size))
    pre = dealt(p, n) if dealt is not None else Dealt(p, n, r)
    steps = [step for step, _ in p.rounds] if labels else None
    engines = {me: CircuitParty(f"s-{label}", me, NAMES[:n], factory(pre.context(i, n), shares[i]), prefix, steps)
               for i, me in enumerate(NAMES[:n])}
    outputs, views = route(engines, order if order is not None else r, overtaking=overtaking)
    return Run([outputs[me] for me in NAMES[:n]], views, p, [engines[me] for me in NAMES[:n]],
               [[pre.bits[i], pre.arith[i], pre.dabits[i]] for i in range(n)])


def exact_draw(run: Run) -> None:
    """Every party used exactly what the plan said: all dealt items, the planned rounds and sizes."""
    parties = NAMES[:len(run.outputs)]
    for i, me in enumerate(parties):
        assert [pool.remaining for pool in run.pools[i]] == [0, 0, 0]
        assert run.engines[i].rounds == len(run.plan.rounds) and run.engines[i].finished
        assert run.engines[i].waiting_for == ()
        assert run.outputs[i].size == run.plan.output_words
        for j, peer in enumerate(parties):
            if peer == me:
                continue
            got = [(step, len(payload)) for sender, step, payload in run.views[me] if sender == peer]
            expected = [(f"{run.engines[i].prefix}/{label}", 8 * run.plan.words_between(k, j, i))
                        for k, (label, _) in enumerate(run.plan.rounds)]
            assert sorted(got) == sorted(expected)   # messages may overtake each other
