"""A trusted dealer of Beaver bit triples, arithmetic triples and daBits: a TEST DOUBLE ONLY
(DESIGN.md §4: "A trusted dealer may exist only as a test double, never as a shipped mode").

The nodes make their preprocessing without a dealer, by oblivious transfer (mpc/ot/,
PROTOCOLS.md §3, §8). This dealer sees every item in the clear and so would break the security
model; it lives under tests/ so that nothing under mpc/ can import it. Everything it deals comes
from a CSPRNG (AES-CTR keystream, mpc.prg.random_words):
- bit triples: a, b uniform words, c = a & b, all three XOR-shared among n parties (§2); each
  party gets a `DealerPool` (mpc.protocols.beaver.TripleSource);
- arithmetic triples: a, b uniform mod 2^64, c = a*b mod 2^64, all three additively shared
  (§8); each party gets an `ArithDealerPool` (circuit.ArithSource);
- daBits: a uniform bit r, XOR-shared as 0/1 words and additively shared mod 2^64 (§8); each
  party gets a `DaBitDealerPool` (circuit.DaBitSource).
Every pool hands each item out at most once and wipes its own copy.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import LocalProtocolError
from mpc.ot.arith import ArithTriples, DaBits
from mpc.ot.triples import ALL, Holders, Layout, holds
from mpc.prg import Rng, random_words
from mpc.protocols.beaver import BitTriples
from mpc.ring import Words


class DealerPool:
    """One party's triple shares from the dealer; hands out every word at most once, in order per
    holder set (its shares of a set it is not among are zeros)."""

    def __init__(self, party: int, a: Words, b: Words, c: Words, layout: Layout | None = None) -> None:
        self.party = party
        self._a, self._b, self._c = a.copy(), b.copy(), c.copy()
        self._used = np.zeros(a.size, dtype=np.bool_)
        self._runs: dict[Holders, list[int]] = {}   # holders -> [next word, end]
        start = 0
        for holders, n in ((ALL, a.size),) if layout is None else layout:
            self._runs[holders] = [start, start + n]
            start += n

    @property
    def size(self) -> int:
        """The number of triple words dealt to this party."""
        return int(self._used.size)

    @property
    def remaining(self) -> int:
        """The number of words never handed out."""
        return int(self._used.size - np.count_nonzero(self._used))

    def take(self, words: int, holders: Holders = ALL) -> BitTriples:
        """The next `words` triple words among `holders` (TripleSource.take).

        Returns: this party's shares of them.
        Raises: LocalProtocolError when fewer than `words` are left.
        """
        run = self._runs.get(holders)
        if run is None or run[0] + words > run[1]:
            raise LocalProtocolError(f"triple pool of party {self.party} exhausted: asked for {words} words among "
                                     f"holders {holders:#x}")
        triples = self.take_range(run[0], words)
        run[0] += words
        return triples

    def take_range(self, start: int, words: int) -> BitTriples:
        """Words start .. start + words - 1, refused if any of them was handed out before.

        Returns: this party's shares of them (the pool wipes its own copy).
        Raises: LocalProtocolError for a range outside the pool or one that reuses a word.
        """
        if words < 0 or start < 0 or start + words > self.size:
            raise LocalProtocolError(f"triple pool of party {self.party} exhausted: asked for words "
                                     f"{start}..{start + words - 1} of {self.size}")
        cut = slice(start, start + words)
        if self._used[cut].any():
            raise LocalProtocolError(f"triple pool of party {self.party}: words {start}..{start + words - 1} "
                                     f"were already handed out; a triple is used once")
        self._used[cut] = True
        out = BitTriples(self._a[cut].copy(), self._b[cut].copy(), self._c[cut].copy())
        for share in (self._a, self._b, self._c):
            share[cut] = 0
        return out


class _ItemPool:
    """One party's shares of dealt items (parallel arrays), handed out in order, each at most once."""

    noun = "item"

    def __init__(self, party: int, *fields: Words) -> None:
        self.party = party
        self._fields = [f.copy() for f in fields]
        self._cursor = 0

    @property
    def size(self) -> int:
        """The number of items dealt to this party."""
        return int(self._fields[0].size)

    @property
    def remaining(self) -> int:
        """The number of items never handed out."""
        return self.size - self._cursor

    def _take(self, n: int) -> list[Words]:
        if n < 1:
            raise LocalProtocolError(f"{self.noun} pool of party {self.party}: a take needs at least one, got {n}")
        if n > self.remaining:
            raise LocalProtocolError(f"{self.noun} pool of party {self.party} exhausted: asked for {n}, "
                                     f"{self.remaining} of {self.size} left")
        cut = slice(self._cursor, self._cursor + n)
        out = [f[cut].copy() for f in self._fields]
        for f in self._fields:
            f[cut] = 0
        self._cursor += n
        return out


class ArithDealerPool(_ItemPool):
    """One party's additive shares of dealt arithmetic triples (circuit.ArithSource)."""

    noun = "arithmetic triple"

    def take(self, n: int) -> ArithTriples:
        """The next n triples, never handed out before.

        Returns: this party's additive shares of a, b and c = a*b mod 2^64.
        Raises: LocalProtocolError when fewer than n are left, or n < 1.
        """
        a, b, c = self._take(n)
        return ArithTriples(a, b, c)


class DaBitDealerPool(_ItemPool):
    """One party's shares of dealt daBits (circuit.DaBitSource)."""

    noun = "daBit"

    def take(self, n: int) -> DaBits:
        """The next n daBits, never handed out before.

        Returns: this party's XOR shares (0/1 words) and additive shares of the same bits.
        Raises: LocalProtocolError when fewer than n are left, or n < 1.
        """
        bits, arith = self._take(n)
        return DaBits(bits, arith)


class TrustedDealer:
    """Deals correct bit triples, arithmetic triples and daBits to `parties` parties from a CSPRNG (tests only)."""

    def __init__(self, parties: int, rng: Rng) -> None:
        if parties < 2:
            raise ValueError(f"a dealer needs at least 2 parties, got {parties}")
        self.parties = parties
        self._rng = rng

    def _add_share(self, value: Words) -> list[Words]:
        shares = [random_words(self._rng, value.size) for _ in range(self.parties - 1)]
        first = value.copy()
        for s in shares:
            first -= s
        return [first, *shares]

    def _share(self, value: Words) -> list[Words]:
        shares = [random_words(self._rng, value.size) for _ in range(self.parties - 1)]
        first = value.copy()
        for s in shares:
            first ^= s
        return [first, *shares]

    def pools(self, words: int, layout: Layout | None = None) -> list[DealerPool]:
        """Deal `words` fresh triple words (64 AND-gate triples each), each run of `layout` shared
        among its holders only (None: all of them among every party).

        Returns: one pool per party, in party order; party i's pool holds its XOR shares.
        """
        runs = ((ALL, words),) if layout is None else layout
        if sum(n for _, n in runs) != words:
            raise ValueError(f"a layout of {sum(n for _, n in runs)} words for {words} words")
        a = random_words(self._rng, words)
        b = random_words(self._rng, words)
        shared = [self._share(a), self._share(b), self._share(a & b)]
        start = 0
        for holders, n in runs:   # re-share each run among its holders: zeros elsewhere
            cut = slice(start, start + n)
            inside = [i for i in range(self.parties) if holds(holders, i)]
            for share in shared:
                total = np.bitwise_xor.reduce([s[cut] for s in share])
                for i in range(self.parties):
                    share[i][cut] = 0
                for i in inside[1:]:
                    share[i][cut] = random_words(self._rng, n)
                    total ^= share[i][cut]
                share[inside[0]][cut] = total
            start += n
        return [DealerPool(i, sa, sb, sc, layout) for i, (sa, sb, sc) in enumerate(zip(*shared))]

    def arith_pools(self, count: int) -> list[ArithDealerPool]:
        """Deal `count` fresh arithmetic triples: a, b uniform mod 2^64, c = a*b mod 2^64.

        Returns: one pool per party, in party order; party i's pool holds its additive shares.
        """
        a = random_words(self._rng, count)
        b = random_words(self._rng, count)
        shares = zip(self._add_share(a), self._add_share(b), self._add_share(a * b))
        return [ArithDealerPool(i, sa, sb, sc) for i, (sa, sb, sc) in enumerate(shares)]

    def dabit_pools(self, count: int) -> list[DaBitDealerPool]:
        """Deal `count` fresh daBits: a uniform bit r, XOR-shared (0/1 words) and additively shared.

        Returns: one pool per party, in party order.
        """
        r = random_words(self._rng, count) & np.uint64(1)
        bit_shares = [random_words(self._rng, count) & np.uint64(1) for _ in range(self.parties - 1)]
        first = r.copy()
        for s in bit_shares:
            first ^= s
        return [DaBitDealerPool(i, sb, sa)
                for i, (sb, sa) in enumerate(zip([first, *bit_shares], self._add_share(r)))]
