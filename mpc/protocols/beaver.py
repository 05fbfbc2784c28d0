"""Beaver AND gates on XOR-shared packed bits (Beaver, CRYPTO 1991, "Efficient Multiparty
Protocols Using Circuit Randomization"; PROTOCOLS.md §2).

Given XOR sharings <x>, <y> and a triple <a>, <b>, <c> with c = a AND b, every party P_i
broadcasts d_i = x_i ^ a_i and e_i = y_i ^ b_i to the other nodes (never to the coordinator);
with d = XOR_i d_i and e = XOR_i e_i, P_i sets

    z_i = c_i ^ (d & b_i) ^ (e & a_i)      and P_0 also ^ (d & e),

so XOR_i z_i = x & y. Words are packed: one uint64 is 64 independent AND gates. d and e are
uniform because a and b are; a triple used twice would leak x ^ x', so a `TripleSource`
hands out every word once. Where triples come from is not this module's business: the
nodes make them with oblivious transfer (mpc/ot/, PROTOCOLS.md §3); tests use a dealer
double that never ships under mpc/.
"""

from __future__ import annotations

from mpc.errors import LocalProtocolError
from mpc.ot.triples import BitTriples, TripleSource
from mpc.ring import Words

__all__ = ["BitTriples", "TripleSource", "beaver_finish", "beaver_open_message"]


def beaver_open_message(x: Words, y: Words, t: BitTriples) -> tuple[Words, Words]:
    """This party's masked openings for the AND gates x & y: d_i = x_i ^ a_i, e_i = y_i ^ b_i.

    Returns: (d_i, e_i), to be broadcast to the other nodes.
    Raises: LocalProtocolError if x, y and the triples differ in length.
    """
    if not x.shape == y.shape == t.a.shape:
        raise LocalProtocolError(f"AND gates on {x.size} and {y.size} words with {t.words} triple words")
    return x ^ t.a, y ^ t.b


def beaver_finish(first: bool, d: Words, e: Words, t: BitTriples) -> Words:
    """This party's share of x & y from the opened d = XOR d_i and e = XOR e_i.

    z_i = c_i ^ (d & b_i) ^ (e & a_i), and the first party (P_0) also XORs d & e.
    Returns: z_i, a new uint64 array.
    Raises: LocalProtocolError if d, e and the triples differ in length.
    """
    if not d.shape == e.shape == t.a.shape:
        raise LocalProtocolError(f"opened {d.size} and {e.size} words for {t.words} triple words")
    z: Words = t.c ^ (d & t.b) ^ (e & t.a)
    if first:
        z ^= d & e
    return z
