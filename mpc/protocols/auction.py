"""Sealed-bid auctions: the highest bid and who made it, or (Vickrey) the winner and the second-highest
bid, by a tournament on secret shares (PROTOCOLS.md §9; the seed's first example).

Every bid is an integer within int32 (the node refuses others on their declared bounds). Bids
are laid out in one public order: the participants in session order, then each node's bids in
their stored order; g is a bid's position and m the number of bids. The owner of bid v at
position g contributes its key

    key = (v + 2^31) * 2^I + (m - 1 - g),      I = max(1, bit_length(m - 1))

and every other node contributes 0 there, an additive sharing of the key that the owner alone
could open. Keys are distinct, so the maximum key is unique: it is the highest bid, and among
equal highest bids the one that comes first (lowest g) wins. That is the documented tie rule.

Tournament: in each of ceil(log2 m) rounds, pair neighbours (an odd one out waits a round),
compare the pair's keys ([k_left >= k_right] by the sign bit of the difference, ell = 33 + I),
convert the bit with a daBit and select the larger key with one multiplication; the
comparisons and selections of a round are batched. First price opens the final key only.

Second price carries, for each surviving bid, its position and value and the best value among
the bids it has beaten (the runner-up "second", 0 at the start): after the keys' comparison
selects (key, position, value, second) of the winner, the loser's value comes out locally
(v_left + v_right - v_winner), a second comparison on values ([second >= loser value], ell =
34) and selection keep the larger of the two as the new second. It opens the winner's
position and the final second only, never a key: the winner's own bid stays secret. Values are
carried as v + 2^31 + 1, so that 0 means "no bid" and every real value exceeds it.

Per round of the tournament (first price): sign-bit rounds (PROTOCOLS.md §5) + 1 (B2A) + 1
(select); second price doubles that.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import InputError, LocalProtocolError
from mpc.protocols.circuit import Context, Program, at_least, bit_to_arith, public, select
from mpc.ring import Signed, Words

VALUE_BITS = 32
VALUE_OFFSET = 1 << (VALUE_BITS - 1)
MAX_BIDS = 1 << 20
VALUE_ELL = VALUE_BITS + 2       # values v + 2^31 + 1 in [0, 2^32]: differences need 34 bits


def index_bits(m: int) -> int:
    """Bits of the position part of a key for m bids."""
    return max(1, (m - 1).bit_length())


def key_ell(m: int) -> int:
    """The comparison width for keys of m bids: keys lie in [0, 2^(32 + I))."""
    return VALUE_BITS + index_bits(m) + 1


def check_bid_count(m: int) -> None:
    """Refuse an auction with fewer than two bids or more than MAX_BIDS (public: every node's count).

    Raises: InputError naming the count.
    """
    if m < 2:
        raise InputError(f"an auction needs at least two bids in all, got {m}: with one bid the price would be "
                         f"that bid itself, and a second price does not exist")
    if m > MAX_BIDS:
        raise InputError(f"an auction takes at most {MAX_BIDS} bids in all, got {m}")


def bid_keys(bids: Signed, offset: int, m: int) -> Words:
    """This node's contribution: its bids' keys at their positions, zeros elsewhere.

    Returns: m words.
    """
    keys = np.zeros(m, dtype=np.uint64)
    g = np.arange(offset, offset + bids.size, dtype=np.uint64)
    value = (bids.astype(np.int64) + VALUE_OFFSET).astype(np.uint64)
    keys[offset:offset + bids.size] = (value << np.uint64(index_bits(m))) | (np.uint64(m - 1) - g)
    return keys


def bid_values(bids: Signed, offset: int, m: int) -> Words:
    """This node's values for a second-price auction: v + 2^31 + 1 at its positions, zeros elsewhere.

    Returns: m words.
    """
    values = np.zeros(m, dtype=np.uint64)
    values[offset:offset + bids.size] = (bids.astype(np.int64) + VALUE_OFFSET + 1).astype(np.uint64)
    return values


def decode_key(key: int, m: int) -> tuple[int, int]:
    """(position, bid) from an opened key."""
    bits = index_bits(m)
    return m - 1 - (key & ((1 << bits) - 1)), (key >> bits) - VALUE_OFFSET


def tournament(ctx: Context, keys: Words, ell: int, values: Words | None = None,
               positions: bool = False, labels: Words | None = None) -> Program[Words]:
    """The maximum of the shared keys, by ceil(log2 m) batched rounds of compare, convert, select.

    Args:
        values: also carry each bid's value and the runner-up's (second price).
        positions: also carry each bid's position (implied by `values`).
        labels: also carry these shared words of each bid, shape (c, m) (a collection's credential
            ids), and return the winner's after the rest.
    Returns: this party's share of [max key]; with positions, of [winner's position]; with
    values, of [winner's position, second value]; then, with labels, of the winner's c labels.
    """
    carried = [keys]
    if positions or values is not None:
        carried.append(public(ctx, np.arange(keys.size, dtype=np.uint64)))
    if values is not None:
        carried += [values, np.zeros_like(values)]
    tagged = 0 if labels is None else labels.shape[0]
    if labels is not None:
        if labels.shape[1:] != keys.shape:
            raise LocalProtocolError(f"{labels.shape[1:]} labels for {keys.size} keys")
        carried += list(labels)
    level = 0
    while carried[0].size > 1:
        key = carried[0]
        half = key.size // 2
        left, right, rest = slice(0, 2 * half, 2), slice(1, 2 * half, 2), slice(2 * half, None)
        b = yield from at_least(ctx, f"r{level}/cmp", key[left] - key[right], 0, ell)
        b = yield from bit_to_arith(ctx, f"r{level}/b2a", b)
        chosen = yield from select(ctx, f"r{level}/sel", np.tile(b, len(carried)),
                                   np.concatenate([x[left] for x in carried]),
                                   np.concatenate([x[right] for x in carried]))
        won = np.split(chosen, len(carried))
        if values is not None:
            value = carried[2]
            beaten = value[left] + value[right] - won[2]       # the loser's value
            c = yield from at_least(ctx, f"r{level}/cmp2", won[3] - beaten, 0, VALUE_ELL)
            c = yield from bit_to_arith(ctx, f"r{level}/b2a2", c)
            won[3] = yield from select(ctx, f"r{level}/sel2", c, won[3], beaten)
        carried = [np.concatenate((w, x[rest])) for w, x in zip(won, carried)]
        level += 1
    tags = [carried[i] for i in range(len(carried) - tagged, len(carried))]
    if values is not None:
        return np.concatenate((carried[1], carried[3], *tags))
    return np.concatenate((carried[1] if positions else carried[0], *tags))


def winner(ctx: Context, counts: Words, count_bits: int) -> Program[Words]:
    """Argmax of shared counts below 2^count_bits, opening the winning option only: keys
    count * 2^I + (options - 1 - option) are made from the shares locally, so the lowest option
    index wins a tie.

    Returns: this party's share of the winning option's index.
    """
    options = counts.size
    bits = index_bits(options)
    order = np.uint64(options - 1) - np.arange(options, dtype=np.uint64)
    keys = (counts << np.uint64(bits)) + public(ctx, order)
    return (yield from tournament(ctx, keys, count_bits + bits + 1, positions=True))


def first_price(ctx: Context, keys: Words) -> Program[Words]:
    """The program of a first-price auction on this party's key shares: opens the maximum key."""
    return (yield from tournament(ctx, keys, key_ell(keys.size)))


def second_price(ctx: Context, contribution: Words) -> Program[Words]:
    """The program of a second-price auction on [keys | values]: opens the winner's position and
    the second-highest value."""
    m = contribution.size // 2
    return (yield from tournament(ctx, contribution[:m], key_ell(m), contribution[m:]))
