"""A trusted dealer of Beaver bit triples: a TEST DOUBLE ONLY (DESIGN.md §4: "A trusted dealer
may exist only as a test double, never as a shipped mode").

The nodes make triples without a dealer, by oblivious transfer (mpc/ot/, PROTOCOLS.md §3).
This dealer sees every triple in the clear and so would break the security model; it lives
under tests/ so that nothing under mpc/ can import it. It draws a and b from a CSPRNG
(AES-CTR keystream, mpc.prg.random_words), sets c = a & b and XOR-shares all three among n
parties (PROTOCOLS.md §2), handing each party a `DealerPool` that implements
mpc.protocols.beaver.TripleSource.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import LocalProtocolError
from mpc.prg import Rng, random_words
from mpc.protocols.beaver import BitTriples
from mpc.ring import Words


class DealerPool:
    """One party's triple shares from the dealer; hands out every word at most once."""

    def __init__(self, party: int, a: Words, b: Words, c: Words) -> None:
        self.party = party
        self._a, self._b, self._c = a.copy(), b.copy(), c.copy()
        self._used = np.zeros(a.size, dtype=np.bool_)
        self._cursor = 0

    @property
    def size(self) -> int:
        """The number of triple words dealt to this party."""
        return int(self._used.size)

    @property
    def remaining(self) -> int:
        """The number of words never handed out."""
        return int(self._used.size - np.count_nonzero(self._used))

    def take(self, words: int) -> BitTriples:
        """The next `words` triple words (TripleSource.take).

        Returns: this party's shares of them.
        Raises: LocalProtocolError when fewer than `words` are left.
        """
        triples = self.take_range(self._cursor, words)
        self._cursor += words
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


class TrustedDealer:
    """Makes correct XOR-shared bit triples for `parties` parties from a CSPRNG (tests only)."""

    def __init__(self, parties: int, rng: Rng) -> None:
        if parties < 2:
            raise ValueError(f"a dealer needs at least 2 parties, got {parties}")
        self.parties = parties
        self._rng = rng

    def _share(self, value: Words) -> list[Words]:
        shares = [random_words(self._rng, value.size) for _ in range(self.parties - 1)]
        first = value.copy()
        for s in shares:
            first ^= s
        return [first, *shares]

    def pools(self, words: int) -> list[DealerPool]:
        """Deal `words` fresh triple words (64 AND-gate triples each).

        Returns: one pool per party, in party order; party i's pool holds its XOR shares.
        """
        a = random_words(self._rng, words)
        b = random_words(self._rng, words)
        shares = zip(self._share(a), self._share(b), self._share(a & b))
        return [DealerPool(i, sa, sb, sc) for i, (sa, sb, sc) in enumerate(shares)]
